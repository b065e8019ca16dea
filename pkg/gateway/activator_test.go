package gateway_test

import (
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"knative.dev/pkg/websocket"
	asmetrics "knative.dev/serving/pkg/autoscaler/metrics"
	"knative.dev/serving/pkg/autoscaler/statserver"

	"github.com/spright-dev/spright/pkg/eproxy"
	"github.com/spright-dev/spright/pkg/gateway"
)

// startHolding starts the hello chain with the gateway acting as the
// activator (HoldTimeout > 0).
func startHolding(t *testing.T, hold time.Duration, maxHeld int) *env {
	t.Helper()
	return startWith(t, func(g *gateway.Config, c *gateway.ChainConfig) {
		g.Name = "gw-test"
		c.Timeout, c.HoldTimeout, c.MaxHeld = 10*time.Second, hold, maxHeld
	})
}

type answer struct {
	code int
	body string
}

func postAsync(t *testing.T, url, body string) <-chan answer {
	ch := make(chan answer, 1)
	go func() {
		resp, err := http.Post(url, "text/plain", strings.NewReader(body))
		if err != nil {
			ch <- answer{0, err.Error()}
			return
		}
		defer resp.Body.Close()
		buf := make([]byte, 4096)
		n, _ := resp.Body.Read(buf)
		ch <- answer{resp.StatusCode, string(buf[:n])}
	}()
	return ch
}

func waitFor(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestActivatorHoldsUntilAnInstanceJoins: a request to a chain whose entry
// has no instance waits, and is answered once the functions register —
// what a request to a member scaled to zero sees.
func TestActivatorHoldsUntilAnInstanceJoins(t *testing.T) {
	e := startHolding(t, 20*time.Second, 10)
	a := e.c.Activation()
	got := postAsync(t, e.srv.URL, "abc")
	waitFor(t, 5*time.Second, "the request to be held", func() bool { return a.Held.Load() == 1 })
	select {
	case r := <-got:
		t.Fatalf("answered before any instance joined: %d %q", r.code, r.body)
	case <-time.After(200 * time.Millisecond):
	}
	e.fn(t, "reverse", reverse)
	e.fn(t, "upper", upper)
	select {
	case r := <-got:
		if r.code != 200 || r.body != "CBA" {
			t.Fatalf("held request: %d %q, want 200 CBA", r.code, r.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("held request not delivered after the instances joined")
	}
	if a.Activated.Load() != 1 || a.HoldTimeouts.Load() != 0 {
		t.Errorf("activated %d, timeouts %d", a.Activated.Load(), a.HoldTimeouts.Load())
	}
	if free, slots := e.c.Pool().FreeCount(), e.c.Pool().Slots(); free != int(slots) {
		t.Errorf("pool: %d of %d slots free after the request", free, slots)
	}
}

// TestActivatorBounds: the hold times out with 503, and a full hold queue
// refuses at once; neither leaks a slot.
func TestActivatorBounds(t *testing.T) {
	e := startHolding(t, 700*time.Millisecond, 1)
	a := e.c.Activation()
	first := postAsync(t, e.srv.URL, "abc")
	waitFor(t, 5*time.Second, "the first request to be held", func() bool { return a.Held.Load() == 1 })
	start := time.Now()
	code, body := post(t, e.srv.URL, "abc")
	if code != 503 || !strings.Contains(body, "already waiting") {
		t.Errorf("second request with a full hold queue: %d %q", code, body)
	}
	if time.Since(start) > 500*time.Millisecond {
		t.Errorf("a full hold queue took %v to refuse", time.Since(start))
	}
	r := <-first
	if r.code != 503 || !strings.Contains(r.body, `no instance of function "upper" became ready within 700ms`) {
		t.Errorf("held request after the hold timeout: %d %q", r.code, r.body)
	}
	if a.HoldTimeouts.Load() != 1 || a.HoldRejected.Load() != 1 {
		t.Errorf("timeouts %d, rejected %d", a.HoldTimeouts.Load(), a.HoldRejected.Load())
	}
	rec := httptest.NewRecorder()
	e.g.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		`spright_gateway_hold_timeouts_total{chain="hello"} 1`,
		`spright_gateway_hold_rejected_total{chain="hello"} 1`,
		`spright_gateway_held_requests{chain="hello"} 0`,
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("metrics lack %s", want)
		}
	}
	if free, slots := e.c.Pool().FreeCount(), e.c.Pool().Slots(); free != int(slots) {
		t.Errorf("pool: %d of %d slots free", free, slots)
	}
}

// TestActivatorPokesTheAutoscaler: a held request pushes a Stat for the
// member's revision to Knative's real stat server, as the activator does
// for a revision at zero.
func TestActivatorPokesTheAutoscaler(t *testing.T) {
	e := startHolding(t, 2500*time.Millisecond, 10)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	log := testLogger(t).Sugar()
	stats := make(chan asmetrics.StatMessage, 16)
	srv := statserver.New(addr, stats, log, nil)
	go srv.ListenAndServe()
	t.Cleanup(func() { srv.Shutdown(time.Second) })
	conn := websocket.NewDurableSendingConnection("ws://"+addr, log)
	t.Cleanup(func() { conn.Shutdown() })
	waitFor(t, 10*time.Second, "websocket to the stat server", func() bool { return conn.Status() == nil })
	e.g.EnableStatPush(eproxy.NewReporter(conn, testLogger(t)))
	rev := types.NamespacedName{Namespace: "shop", Name: "upper-00002"}
	e.g.SetRevisionChain(rev, gateway.ChainMember{Chain: "hello", Function: "upper", Routed: true})
	// An older revision still a member (its pods drain) but no longer
	// routed: waking it would start pods Knative scales down again.
	old := types.NamespacedName{Namespace: "shop", Name: "upper-00001"}
	e.g.SetRevisionChain(old, gateway.ChainMember{Chain: "hello", Function: "upper"})

	got := postAsync(t, e.srv.URL, "abc")
	// The request waits 2.5 s: a poke at once, then one every second.
	var pokes []asmetrics.StatMessage
	deadline := time.After(2200 * time.Millisecond)
collect:
	for {
		select {
		case sm := <-stats:
			pokes = append(pokes, sm)
		case <-deadline:
			break collect
		}
	}
	if len(pokes) < 2 {
		t.Fatalf("%d Stats reached the autoscaler's stat server while the request was held, want one at once and one a second later", len(pokes))
	}
	for _, sm := range pokes {
		if sm.Key != rev || sm.Stat.RequestCount != 1 || sm.Stat.AverageConcurrentRequests < 1 || sm.Stat.PodName != "gw-test" {
			t.Errorf("poke: %+v (want only the routed revision %s)", sm, rev)
		}
	}
	if r := <-got; r.code != 503 {
		t.Errorf("no instance ever joined, yet %d %q", r.code, r.body)
	}
}

// TestPodRegisteredBeforeItsChain: on the real cluster a chain member's
// EPROXY registers before this gateway has loaded the Chain (the controller
// publishes it after the Services exist), so its welcome names no chain and
// it never joined: every chain request was held, then 503. Now the gateway
// asks such a pod to register again when the revision becomes a member, and
// the new welcome names the chain.
func TestPodRegisteredBeforeItsChain(t *testing.T) {
	e := startHolding(t, 2*time.Second, 10)
	id := eproxy.PodIdentity{Namespace: "shop", Revision: "upper-00001", Pod: "upper-00001-deployment-abc"}
	a, err := eproxy.RegisterPod(e.g.ControlSocketPath(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if a.Chain != "" {
		t.Fatalf("welcome before the chain is known names chain %q", a.Chain)
	}
	closed := make(chan struct{})
	go func() { a.WaitClosed(); close(closed) }()
	rev := types.NamespacedName{Namespace: id.Namespace, Name: id.Revision}
	e.g.SetRevisionChain(rev, gateway.ChainMember{Chain: "hello", Function: "upper"})
	select {
	case <-closed:
	case <-time.After(3 * time.Second):
		t.Fatal("the pod's registration was kept: it would never join the chain")
	}
	b, err := eproxy.RegisterPod(e.g.ControlSocketPath(), id)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	if b.Chain != "hello" || b.Function != "upper" {
		t.Errorf("welcome after the chain is known: chain %q function %q, want hello/upper", b.Chain, b.Function)
	}
	// The same membership again (a resync) leaves the pod alone.
	again := make(chan struct{})
	go func() { b.WaitClosed(); close(again) }()
	e.g.SetRevisionChain(rev, gateway.ChainMember{Chain: "hello", Function: "upper"})
	select {
	case <-again:
		t.Error("a resync with the same membership made the pod register again")
	case <-time.After(500 * time.Millisecond):
	}
}

// TestActivatorHoldsForAMemberDeeperInTheChain: the entry has an instance,
// the next member (reverse) is at zero. Before, the request went in and
// upper failed it at once ("routing: no ready instance for function
// \"reverse\"", 503, seen on the real cluster with reverse at min-scale 0);
// now the gateway holds it until reverse joins, and pokes reverse's
// revisions meanwhile.
func TestActivatorHoldsForAMemberDeeperInTheChain(t *testing.T) {
	e := startHolding(t, 20*time.Second, 10)
	a := e.c.Activation()
	e.fn(t, "upper", upper)
	got := postAsync(t, e.srv.URL, "abc")
	waitFor(t, 5*time.Second, "the request to be held", func() bool { return a.Held.Load() == 1 })
	select {
	case r := <-got:
		t.Fatalf("answered before reverse joined: %d %q", r.code, r.body)
	case <-time.After(200 * time.Millisecond):
	}
	e.fn(t, "reverse", reverse)
	select {
	case r := <-got:
		if r.code != 200 || r.body != "CBA" {
			t.Fatalf("held request: %d %q, want 200 CBA", r.code, r.body)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("held request not delivered after reverse joined")
	}
	if free, slots := e.c.Pool().FreeCount(), e.c.Pool().Slots(); free != int(slots) {
		t.Errorf("pool: %d of %d slots free after the request", free, slots)
	}
}
