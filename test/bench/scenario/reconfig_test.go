package scenario

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spright-dev/spright/pkg/standalone"
)

// TestReconfigYAML: every variant is a chain file spright run accepts,
// with the functions and upper's route it names, and what the running
// chain cannot change is the same in all of them.
func TestReconfigYAML(t *testing.T) {
	want := map[reconfVariant]struct {
		fns  string
		next string
	}{
		reconfReverse: {"upper,reverse,echo", "reverse"},
		reconfEcho:    {"upper,reverse,echo", "echo"},
		reconfNoEcho:  {"upper,reverse", "reverse"},
	}
	var first *standalone.ChainFile
	for v, w := range want {
		y, err := reconfigYAML("reconfig", "127.0.0.1:18080", v)
		if err != nil {
			t.Fatal(err)
		}
		cf, err := standalone.Parse([]byte(y))
		if err != nil {
			t.Fatalf("variant %d: %v\n%s", v, err, y)
		}
		var names []string
		var next []string
		for _, f := range cf.Functions {
			names = append(names, f.Name)
			if f.Name == "upper" {
				next = f.Routes["*"]
			}
		}
		if got := strings.Join(names, ","); got != w.fns {
			t.Errorf("variant %d: functions %s, want %s", v, got, w.fns)
		}
		if len(next) != 1 || next[0] != w.next {
			t.Errorf("variant %d: upper routes to %v, want [%s]", v, next, w.next)
		}
		if r := cf.Routes["*"]; len(r) != 1 || r[0] != "upper" {
			t.Errorf("variant %d: gateway routes %v", v, cf.Routes)
		}
		if first == nil {
			first = cf
			continue
		}
		if cf.Name != first.Name || cf.Mode != first.Mode || cf.Listen != first.Listen ||
			cf.Pool.Slots != first.Pool.Slots || cf.Pool.SlotSize != first.Pool.SlotSize {
			t.Errorf("variant %d: name/mode/listen/pool differ from another variant: %+v vs %+v", v, cf, first)
		}
	}
	if _, err := reconfigYAML("reconfig", "127.0.0.1:18080", reconfVariant(9)); err == nil {
		t.Error("an unknown variant was accepted")
	}
}

// TestReconfWindows: steady changes nothing and allows only CBA; each
// changing window alternates between two different files, starting from
// the other one, and allows both answers.
func TestReconfWindows(t *testing.T) {
	ws := reconfWindows()
	if len(ws) != 3 || ws[0].System != SysReconfSteady || len(ws[0].Flips) != 0 {
		t.Fatalf("windows %+v", ws)
	}
	if strings.Join(ws[0].Valid, ",") != reconfBodyReverse {
		t.Errorf("steady allows %v", ws[0].Valid)
	}
	for _, w := range ws[1:] {
		if len(w.Flips) != 2 || w.Flips[0] == w.Flips[1] || w.Flips[1] != w.Start {
			t.Errorf("%s: start %d, flips %v: want two files alternating, back to the start", w.System, w.Start, w.Flips)
		}
		if len(w.Valid) != 2 {
			t.Errorf("%s: allows %v", w.System, w.Valid)
		}
	}
	// The members window adds and removes echo at every flip.
	m := ws[2]
	if m.Start != reconfNoEcho || m.Flips[0] != reconfEcho {
		t.Errorf("members: start %d flips %v", m.Start, m.Flips)
	}
}

func TestWriteBodyCountScript(t *testing.T) {
	p := filepath.Join(t.TempDir(), "b.lua")
	if err := writeBodyCountScript(p); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(p)
	s := string(b)
	for _, want := range []string{`wrk.method = "POST"`, `wrk.body = "abc"`, `body == "CBA"`, `body == "ABC"`,
		`"bodies: %d %d other %d\n"`, `th:get("nother")`, "function setup(thread)"} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %s:\n%s", want, s)
		}
	}
}

func TestParseBodyCounts(t *testing.T) {
	out := `Running 3s test @ http://127.0.0.1:1/
  2 threads and 8 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   370.51us  161.26us   5.49ms   84.11%
  40000 requests in 3.00s, 3.36MB read
Requests/sec:  13333.00
Transfer/sec:      1.12MB
bodies: 21000 18990 other 10
`
	b, err := parseBodyCounts(out)
	if err != nil {
		t.Fatal(err)
	}
	if b != (bodyCounts{Reverse: 21000, Echo: 18990, Other: 10}) {
		t.Errorf("counts %+v", b)
	}
	if got := b.wrong([]string{reconfBodyReverse, reconfBodyEcho}); got != 10 {
		t.Errorf("wrong with both allowed = %d, want 10", got)
	}
	if got := b.wrong([]string{reconfBodyReverse}); got != 18990+10 {
		t.Errorf("wrong with only CBA allowed = %d, want %d", got, 18990+10)
	}
	if _, err := parseBodyCounts("Requests/sec: 1\n"); err == nil {
		t.Error("output without the bodies line was accepted")
	}
}

func TestParseReloadReply(t *testing.T) {
	for _, c := range []struct {
		body string
		took time.Duration
		ok   bool
	}{
		{"chain \"reconfig\" reloaded in 5ms:\n- function upper: routes {\"*\":[reverse]} -> {\"*\":[echo]}\n", 5 * time.Millisecond, true},
		{"chain \"reconfig\" reloaded in 1.204s:\n- function echo added\n", 1204 * time.Millisecond, true},
		{"chain \"reconfig\" reloaded in 0s:\n- x\n", 0, true},
		{"chain \"reconfig\": nothing changed\n", 0, false},
	} {
		took, ok, err := parseReloadReply(c.body)
		if err != nil || took != c.took || ok != c.ok {
			t.Errorf("%q: %v %v %v, want %v %v", c.body, took, ok, err, c.took, c.ok)
		}
	}
	if _, _, err := parseReloadReply("chain \"x\" reloaded in soon:\n"); err == nil {
		t.Error("a duration that does not parse was accepted")
	}
}

func TestParseReloadMetrics(t *testing.T) {
	text := `# HELP spright_standalone_reloads_total chain.yaml reloads
# TYPE spright_standalone_reloads_total counter
spright_standalone_reloads_total{chain="reconfig",result="applied"} 12
spright_standalone_reloads_total{chain="reconfig",result="refused"} 1
# TYPE spright_standalone_last_reload_seconds gauge
spright_standalone_last_reload_seconds{chain="reconfig"} 0.0042
spright_gateway_chain_updates_total{chain="reconfig"} 30
`
	m, err := parseReloadMetrics(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	if m != (reloadMetrics{Applied: 12, Refused: 1, LastSeconds: 0.0042}) {
		t.Errorf("metrics %+v", m)
	}
	if _, err := parseReloadMetrics(strings.NewReader("spright_gateway_chain_updates_total{chain=\"x\"} 3\n")); err == nil {
		t.Error("metrics without the reload counter were accepted")
	}
	if _, err := parseReloadMetrics(strings.NewReader(`spright_standalone_reloads_total{chain="x",result="applied"} many` + "\n")); err == nil {
		t.Error("a counter that is not a number was accepted")
	}
}

func TestSummariseReloads(t *testing.T) {
	ms := time.Millisecond
	s := summariseReloads([]reloadRec{
		{Status: 200, Applied: true, Took: 4 * ms, RTT: 5 * ms},
		{Status: 200, Applied: true, Took: 8 * ms, RTT: 9 * ms},
		{Status: 409, Reply: "refused: the pool\n"},
		{Status: 200, Reply: "nothing changed"},
		{Err: errors.New("PUT /chain: connection refused")},
	})
	if s.Puts != 5 || s.Applied != 2 || s.TookMean != 6*ms || s.TookMax != 8*ms || s.RTTMean != 7*ms || s.RTTMax != 9*ms {
		t.Errorf("stats %+v", s)
	}
	if len(s.Failures) != 3 || !strings.Contains(s.Failures[0], "409") {
		t.Errorf("failures %q", s.Failures)
	}
	if z := summariseReloads(nil); z.Puts != 0 || z.TookMean != 0 {
		t.Errorf("no PUTs: %+v", z)
	}
}

// TestReconfFlip: the driver alternates the files, one PUT per period,
// and stops when told.
func TestReconfFlip(t *testing.T) {
	var n atomic.Int32
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || r.URL.Path != "/chain" {
			http.Error(w, "no", http.StatusMethodNotAllowed)
			return
		}
		b, _ := io.ReadAll(r.Body)
		bodies = append(bodies, string(b)) // one PUT at a time
		n.Add(1)
		io.WriteString(w, "chain \"reconfig\" reloaded in 3ms:\n- something\n")
	}))
	defer srv.Close()
	a := reconfAdmin{base: srv.URL, client: srv.Client()}
	stop := make(chan struct{})
	go func() {
		for n.Load() < 3 {
			time.Sleep(5 * time.Millisecond)
		}
		close(stop)
	}()
	recs := a.flip(context.Background(), [][]byte{[]byte("A"), []byte("B")}, 20*time.Millisecond, stop)
	if len(recs) < 3 {
		t.Fatalf("%d PUTs", len(recs))
	}
	for i, r := range recs {
		if r.Status != 200 || !r.Applied || r.Took != 3*time.Millisecond {
			t.Errorf("PUT %d: %+v", i, r)
		}
	}
	if strings.Join(bodies[:3], "") != "ABA" {
		t.Errorf("files PUT in order %v, want A, B, A", bodies)
	}
}
