package scenario

import (
	"net"
	"strings"
	"testing"

	"github.com/spright-dev/spright/pkg/standalone"
)

// TestCrossnodeYAML: both placements are chain files spright run accepts,
// with upper on a and reverse where the placement says.
func TestCrossnodeYAML(t *testing.T) {
	n := newXnodeNet(4242)
	for placement, reverseOn := range map[string]string{"local": "a", "split": "b"} {
		y, err := crossnodeYAML("xbench", "/tmp/key", n, placement)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := standalone.Parse([]byte(y))
		if err != nil {
			t.Fatalf("%s: %v\n%s", placement, err, y)
		}
		got := map[string]string{}
		for _, f := range cf.Functions {
			got[f.Name] = f.Node
		}
		if got["upper"] != "a" || got["reverse"] != reverseOn {
			t.Errorf("%s: functions on %v, want upper on a, reverse on %s", placement, got, reverseOn)
		}
		for i, name := range []string{"a", "b"} {
			nd, ok := cf.Node(name)
			if !ok || nd.Peer != n.IP[i]+":7946" {
				t.Errorf("%s: node %s = %+v", placement, name, nd)
			}
		}
	}
	if _, err := crossnodeYAML("xbench", "/tmp/key", n, "both"); err == nil {
		t.Error("an unknown placement was accepted")
	}
}

// TestXnodeNet: interface names fit IFNAMSIZ, the two nodes share a /24
// and the commands name what they create.
func TestXnodeNet(t *testing.T) {
	for _, pid := range []int{1, 4242, 4194304} {
		n := newXnodeNet(pid)
		for i := range n.Veth {
			if len(n.Veth[i]) > 15 {
				t.Errorf("pid %d: veth name %q longer than 15", pid, n.Veth[i])
			}
		}
		if n.NS[0] == n.NS[1] || n.Veth[0] == n.Veth[1] || n.IP[0] == n.IP[1] {
			t.Errorf("pid %d: the nodes share a name or address: %+v", pid, n)
		}
		_, sub, _ := net.ParseCIDR(n.IP[0] + "/24")
		if !sub.Contains(net.ParseIP(n.IP[1])) {
			t.Errorf("pid %d: %s and %s are not on one /24", pid, n.IP[0], n.IP[1])
		}
		all := ""
		for _, c := range n.setup() {
			all += strings.Join(c, " ") + "\n"
		}
		for _, want := range []string{n.NS[0], n.NS[1], n.Veth[0], n.Veth[1], n.IP[0] + "/24", n.IP[1] + "/24", "lo up"} {
			if !strings.Contains(all, want) {
				t.Errorf("pid %d: setup does not mention %s:\n%s", pid, want, all)
			}
		}
		if len(n.teardown()) != 2 {
			t.Errorf("teardown %v", n.teardown())
		}
	}
}

func TestParsePeerCounters(t *testing.T) {
	text := `# HELP spright_peer_requests_total Cross-node traffic
# TYPE spright_peer_requests_total counter
spright_peer_requests_total{event="answered"} 50
spright_peer_requests_total{event="shipped"} 100
spright_peer_requests_total{event="result_sent"} 0
spright_peer_links 1
spright_pool_free_slots{chain="x"} 1024
`
	m, err := parsePeerCounters(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if len(m) != 3 || m["shipped"] != 100 || m["answered"] != 50 || m["result_sent"] != 0 {
		t.Errorf("counters %v", m)
	}
	if _, err := parsePeerCounters(strings.NewReader(`spright_peer_requests_total{event="shipped"} lots` + "\n")); err == nil {
		t.Error("a counter that is not a number was accepted")
	}
}

func TestCrossingsPerRequest(t *testing.T) {
	before := [2]map[string]float64{{"shipped": 10}, {"result_sent": 5}}
	// 100 requests entering a, split: a ships each to b, b sends each
	// answer back: 2 crossings per request.
	after := [2]map[string]float64{{"shipped": 110, "answered": 100}, {"result_sent": 105, "received": 100}}
	if got := crossingsPerRequest(before, after, 100); got != 2 {
		t.Errorf("split: %v crossings per request, want 2", got)
	}
	if got := crossingsPerRequest(before, before, 100); got != 0 {
		t.Errorf("local: %v, want 0", got)
	}
	if got := crossingsPerRequest(before, after, 0); got != 0 {
		t.Errorf("no requests: %v, want 0", got)
	}
}
