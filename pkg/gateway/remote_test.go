package gateway_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spright-dev/spright/pkg/function"
	"github.com/spright-dev/spright/pkg/gateway"
	"github.com/spright-dev/spright/pkg/peer"
	"github.com/spright-dev/spright/pkg/routing"
	"github.com/spright-dev/spright/pkg/shm"
)

var peerKey = []byte("test-cluster-peer-key-0123456789")

// node is one gateway of a two-node test, in this process: its own pin
// dir (datapath), control socket and pool.
type node struct {
	env
	name string
	addr string
}

func startNode(t *testing.T, name string, key []byte) *node {
	t.Helper()
	needRoot(t)
	dir := t.TempDir()
	pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("spright-test-%d-%s-%s", os.Getpid(), t.Name(), name))
	g, err := gateway.New(gateway.Config{ControlSocket: filepath.Join(dir, "ctl.sock"), PinDir: pin,
		Logger: testLogger(t).Named(name), Node: name, PeerKey: key})
	if err != nil {
		t.Fatal(err)
	}
	c, err := g.AddChain(gateway.ChainConfig{Name: "hello", ID: 1, Timeout: 5 * time.Second,
		Pool: shm.Config{Slots: 64, SlotSize: 4096, NoHugePages: true},
		Routing: routing.Spec{
			Functions: []routing.FunctionSpec{{Name: "upper"}, {Name: "reverse"}},
			Routes: []routing.Route{
				{From: routing.GatewayName, Topic: "*", To: []string{"upper"}},
				{From: "upper", Topic: "*", To: []string{"reverse"}},
			},
		}})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go g.ServePeers(l)
	srv := httptest.NewServer(g.Handler(c))
	n := &node{env: env{g: g, c: c, srv: srv, sock: filepath.Join(dir, "ctl.sock")}, name: name, addr: l.Addr().String()}
	t.Cleanup(func() { n.stop() })
	return n
}

var stopMu sync.Mutex

func (n *node) stop() {
	stopMu.Lock()
	defer stopMu.Unlock()
	n.srv.Close()
	n.g.Close()
	n.g.Unpin()
}

func waitPeerRoute(t *testing.T, n *node, fn string, want int) {
	t.Helper()
	waitFor(t, 10*time.Second, fmt.Sprintf("%s to route %s to a peer", n.name, fn), func() bool {
		idx, _ := n.c.Routes().FunctionIndex(fn)
		remote := 0
		for _, id := range n.c.Routes().Instances(idx) {
			if routing.IsRemote(id) {
				remote++
			}
		}
		return remote == want
	})
}

// TestChainAcrossTwoNodes: upper runs on node a, reverse on node b. A
// request entering a crosses to b for reverse and its answer comes back to
// a; one entering b crosses to a for upper, back to b for reverse. When b
// goes away, a fails only what b held and stops routing there; a local
// reverse then serves.
func TestChainAcrossTwoNodes(t *testing.T) {
	a := startNode(t, "a", peerKey)
	b := startNode(t, "b", peerKey)
	a.g.ConnectPeer("b", b.addr)
	b.g.ConnectPeer("a", a.addr)
	a.fn(t, "upper", upper)
	b.fn(t, "reverse", reverse)
	waitPeerRoute(t, a, "reverse", 1)
	waitPeerRoute(t, b, "upper", 1)

	for _, n := range []*node{a, b} {
		for i := 0; i < 20; i++ {
			in := fmt.Sprintf("abc%d", i)
			if code, body := post(t, n.srv.URL, in); code != 200 || body != helloOf(in) {
				t.Fatalf("request %d entering %s: %d %q", i, n.name, code, body)
			}
		}
	}
	sa, sb := a.g.PeerStats(), b.g.PeerStats()
	t.Logf("a: shipped %d, received %d, results sent %d, answered %d; b: shipped %d, received %d, results sent %d, answered %d",
		sa.Shipped.Load(), sa.Received.Load(), sa.Results.Load(), sa.Answered.Load(),
		sb.Shipped.Load(), sb.Received.Load(), sb.Results.Load(), sb.Answered.Load())
	// Entering a: a→b (reverse), result b→a. Entering b: b→a (upper),
	// a→b (reverse) as a hop, the chain ends on b, its origin.
	if sa.Shipped.Load() != 40 || sb.Shipped.Load() != 20 || sa.Answered.Load() != 20 || sb.Results.Load() != 20 {
		t.Errorf("hop counters do not match the paths")
	}
	// (A node frees a request's slot right after sending it on: give it
	// the moment.)
	for _, n := range []*node{a, b} {
		waitFor(t, 5*time.Second, n.name+"'s slots all free", func() bool { return n.c.Pool().FreeCount() == int(n.c.Pool().Slots()) })
	}

	// Load from a while b goes away: only requests b held fail (502), then
	// a has no reverse (503) until one registers locally.
	var ok, failed, other atomic.Int64
	stop := clients(4, func() {
		switch code, _ := post(t, a.srv.URL, "xyz"); code {
		case 200:
			ok.Add(1)
		case 502:
			failed.Add(1)
		default:
			other.Add(1)
		}
	})
	time.Sleep(300 * time.Millisecond)
	b.stop()
	waitPeerRoute(t, a, "reverse", 0)
	stop()
	t.Logf("load across b's exit: %d ok, %d × 502, %d other (503: no reverse left)", ok.Load(), failed.Load(), other.Load())
	if ok.Load() == 0 {
		t.Error("no request crossed before b went away")
	}
	if failed.Load() > 4 {
		t.Errorf("%d requests failed with 502; at most the 4 in flight may", failed.Load())
	}
	a.fn(t, "reverse", reverse)
	if code, body := post(t, a.srv.URL, "abc"); code != 200 || body != "CBA" {
		t.Errorf("with a local reverse: %d %q", code, body)
	}
	waitFor(t, 5*time.Second, "a's slots all free after b went away", func() bool { return a.c.Pool().FreeCount() == int(a.c.Pool().Slots()) })
}

// TestPeerWithoutTheKey: a node with another key never gets routes.
func TestPeerWithoutTheKey(t *testing.T) {
	a := startNode(t, "a", peerKey)
	b := startNode(t, "b", []byte("not-the-cluster-key-at-all"))
	a.g.ConnectPeer("b", b.addr)
	b.fn(t, "reverse", reverse)
	time.Sleep(500 * time.Millisecond)
	waitPeerRoute(t, a, "reverse", 0)
	if b.g.PeerStats().Refused.Load() == 0 {
		t.Error("b counted no refused peer")
	}
	if code, body := post(t, a.srv.URL, "abc"); code != 503 || !strings.Contains(body, "no ready instance") {
		t.Errorf("a without reverse: %d %q", code, body)
	}
}

var _ = function.Options{}

// helloOf is the hello chain's answer: upper, then reverse.
func helloOf(s string) string {
	b := []byte(strings.ToUpper(s))
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

// TestPeerRefusesBadFrames: a peer that holds the key but sends answers
// for requests that never left, requests for chains or functions the node
// does not have, or bytes that are not frames: each is refused and
// counted, nothing else is touched, and the node keeps serving.
func TestPeerRefusesBadFrames(t *testing.T) {
	a := startNode(t, "a", peerKey)
	a.fn(t, "upper", upper)
	a.fn(t, "reverse", reverse)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	evil, err := peer.Dial(ctx, a.addr, "evil", peerKey)
	if err != nil {
		t.Fatal(err)
	}
	defer evil.Close()
	stats := a.g.PeerStats()
	for _, f := range []*peer.Frame{
		{Type: peer.TypeResult, Chain: "hello", Origin: peer.Origin{Node: "a", Slot: 3, Gen: 1}, Payload: []byte("forged")},
		{Type: peer.TypeResult, Chain: "hello", Origin: peer.Origin{Node: "a", Slot: 1 << 30}, Payload: []byte("x")},
		{Type: peer.TypeFail, Chain: "hello", Origin: peer.Origin{Node: "a", Slot: 0}, Status: 500},
		{Type: peer.TypeRequest, Chain: "nope", Function: "upper", Origin: peer.Origin{Node: "evil"}, Payload: []byte("x")},
		{Type: peer.TypeRequest, Chain: "hello", Function: "ghost", Origin: peer.Origin{Node: "evil"}, Payload: []byte("x")},
		{Type: peer.TypeRequest, Chain: "hello", Function: "upper", Itinerary: []string{"ghost"}, Origin: peer.Origin{Node: "evil"}, Payload: []byte("x")},
		{Type: peer.TypeServe, Chain: "nope", Function: "x", Instances: 3},
	} {
		if err := evil.Send(f); err != nil {
			t.Fatal(err)
		}
	}
	// The refused requests are answered with Fail frames to their origin.
	var fails []string
	for len(fails) < 3 {
		var f peer.Frame
		evil.SetReadDeadline(time.Now().Add(5 * time.Second))
		if err := evil.Recv(&f, nil); err != nil {
			t.Fatalf("after %d fail frames: %v", len(fails), err)
		}
		if f.Type == peer.TypeServe {
			continue // a's advertisements
		}
		if f.Type != peer.TypeFail {
			t.Fatalf("frame type %d, want Fail", f.Type)
		}
		fails = append(fails, fmt.Sprintf("%d %s", f.Status, f.Msg))
	}
	t.Logf("fails sent back: %q", fails)
	waitFor(t, 5*time.Second, "six refusals counted", func() bool { return stats.Refused.Load() >= 6 })
	if code, body := post(t, a.srv.URL, "abc"); code != 200 || body != "CBA" {
		t.Errorf("after the bad frames: %d %q", code, body)
	}
	if free, slots := a.c.Pool().FreeCount(), a.c.Pool().Slots(); free != int(slots) {
		t.Errorf("%d of %d slots free after the bad frames", free, slots)
	}
	// Garbage instead of a handshake, then garbage after one. The count
	// is read before the garbage goes out: a read after it could already
	// include the refusal and then wait for one more that never comes.
	before := stats.Refused.Load()
	nc, err := net.Dial("tcp", a.addr)
	if err != nil {
		t.Fatal(err)
	}
	nc.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	nc.Close()
	waitFor(t, 5*time.Second, "the non-peer refused", func() bool { return stats.Refused.Load() > before })
}

// TestPeerOverflowKeepsFlowing: with upper's concurrency 1 and a's own
// upper slow, a's gateway sends the requests its upper has no room for to
// b's (residual capacity, local first). The proxy's in-flight count must
// fall again when an answer comes back: the eBPF counter of a proxy only
// ever rises (descriptors go to it, none leave it), so a few shipped
// requests used to make b look busier than a's own busy upper for good,
// and a stopped sending b anything.
func TestPeerOverflowKeepsFlowing(t *testing.T) {
	a := startNode(t, "a", peerKey)
	b := startNode(t, "b", peerKey)
	a.g.ConnectPeer("b", b.addr)
	b.g.ConnectPeer("a", a.addr)
	a.fn(t, "upper", func(m *function.Message) error {
		time.Sleep(20 * time.Millisecond)
		return upper(m)
	})
	a.fn(t, "reverse", reverse)
	b.fn(t, "upper", upper)
	b.fn(t, "reverse", reverse)
	waitPeerRoute(t, a, "upper", 1)
	if err := a.g.UpdateChain(gateway.ChainConfig{Name: "hello", ID: 1, Timeout: 5 * time.Second,
		Pool: shm.Config{Slots: 64, SlotSize: 4096, NoHugePages: true},
		Routing: routing.Spec{
			Functions: []routing.FunctionSpec{{Name: "upper", Concurrency: 1}, {Name: "reverse"}},
			Routes: []routing.Route{
				{From: routing.GatewayName, Topic: "*", To: []string{"upper"}},
				{From: "upper", Topic: "*", To: []string{"reverse"}},
			},
		}}); err != nil {
		t.Fatal(err)
	}
	const rounds, parallel = 20, 3
	for r := 0; r < rounds; r++ {
		var wg sync.WaitGroup
		for i := 0; i < parallel; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				in := fmt.Sprintf("r%d-%d", r, i)
				if code, body := post(t, a.srv.URL, in); code != 200 || body != helloOf(in) {
					t.Errorf("%s: %d %q", in, code, body)
				}
			}()
		}
		wg.Wait()
	}
	// Each round, a's upper takes one request and has no room for the
	// others: at least one of them goes to b in every round.
	shipped := a.g.PeerStats().Shipped.Load()
	t.Logf("%d rounds of %d requests entering a: %d shipped to b", rounds, parallel, shipped)
	if shipped < rounds {
		t.Errorf("a shipped %d requests to b in %d rounds with its own upper busy; want at least one per round", shipped, rounds)
	}
}

// TestPeerResetIsNotRefused: a peer whose connection ends with a reset (a
// node killed while its kernel had unread data from us answers with RST)
// has gone away; it did not send a frame that was refused. Counting it as
// refused made spright_peer_requests_total{event="refused"} — meant for
// frames that fail authentication or name what this node does not have —
// rise at every node crash.
func TestPeerResetIsNotRefused(t *testing.T) {
	a := startNode(t, "a", peerKey)
	// A TCP relay between the peer and a, which ends its side toward a
	// with a reset (SO_LINGER 0) when told to.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	reset := make(chan struct{})
	go func() {
		down, err := l.Accept()
		if err != nil {
			return
		}
		defer down.Close()
		up, err := net.Dial("tcp", a.addr)
		if err != nil {
			return
		}
		go io.Copy(up, down)
		go io.Copy(down, up)
		<-reset
		up.(*net.TCPConn).SetLinger(0)
		up.Close()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	evil, err := peer.Dial(ctx, l.Addr().String(), "z", peerKey)
	if err != nil {
		t.Fatal(err)
	}
	defer evil.Close()
	waitFor(t, 5*time.Second, "a to link to z", func() bool { return len(a.g.Peers()) == 1 })
	before := a.g.PeerStats().Refused.Load()
	close(reset)
	waitFor(t, 5*time.Second, "a to drop the link", func() bool { return len(a.g.Peers()) == 0 })
	if n := a.g.PeerStats().Refused.Load(); n != before {
		t.Errorf("a peer connection reset counted as %d refused frame(s)", n-before)
	}
}
