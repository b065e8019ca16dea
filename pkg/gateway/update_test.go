package gateway_test

import (
	"context"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spright-dev/spright/pkg/function"
	"github.com/spright-dev/spright/pkg/gateway"
	"github.com/spright-dev/spright/pkg/routing"
	"github.com/spright-dev/spright/pkg/shm"
)

func helloSpec(functions []string, routes ...routing.Route) routing.Spec {
	var fs []routing.FunctionSpec
	for _, f := range functions {
		fs = append(fs, routing.FunctionSpec{Name: f})
	}
	return routing.Spec{Functions: fs, Routes: routes}
}

func route(from string, to ...string) routing.Route {
	return routing.Route{From: from, Topic: "*", To: to}
}

// clients runs n goroutines, each calling one in a loop, until the returned
// stop is called (stop waits for them to finish their current call).
func clients(n int, one func()) (stop func()) {
	var quit atomic.Bool
	var wg sync.WaitGroup
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for !quit.Load() {
				one()
			}
		}()
	}
	return func() { quit.Store(true); wg.Wait() }
}

// slow delays a function so requests are in flight across each update.
func slow(h function.HandlerFunc) function.HandlerFunc {
	return func(m *function.Message) error {
		time.Sleep(2 * time.Millisecond)
		return h(m)
	}
}

// TestUpdateChainUnderLoad: while clients keep posting, a function is
// added, the routes are changed to use it, and the old one is removed —
// with no failed request, every answer one of the chain's valid ones, and
// the new routes in force at the end. The removed function may no longer
// register; the update counter says three.
func TestUpdateChainUnderLoad(t *testing.T) {
	e := start(t, gateway.ModeSkMsg, 64, 5*time.Second)
	e.fn(t, "upper", slow(upper))
	e.fn(t, "reverse", slow(reverse))
	cfg := func(spec routing.Spec) gateway.ChainConfig {
		return gateway.ChainConfig{Name: "hello", ID: 1, Timeout: 5 * time.Second,
			Pool: shm.Config{Slots: 64, SlotSize: 4096, NoHugePages: true}, Routing: spec}
	}

	var (
		ok, bad          atomic.Int64
		mu               sync.Mutex
		badAnswers       []string
		answersAfterLast atomic.Int64
		lastDone         atomic.Bool
		oldAfterLast     atomic.Int64
	)
	client := &http.Client{Timeout: 10 * time.Second}
	stop := clients(8, func() {
		after := lastDone.Load()
		resp, err := client.Post(e.srv.URL, "text/plain", strings.NewReader("abc"))
		if err != nil {
			bad.Add(1)
			mu.Lock()
			badAnswers = append(badAnswers, err.Error())
			mu.Unlock()
			return
		}
		buf := make([]byte, 256)
		n, _ := resp.Body.Read(buf)
		resp.Body.Close()
		got := string(buf[:n])
		// Old routes: upper → reverse ("CBA"); new: upper → echo
		// ("ABC"); in between both are valid.
		if resp.StatusCode != 200 || (got != "CBA" && got != "ABC") {
			bad.Add(1)
			mu.Lock()
			badAnswers = append(badAnswers, resp.Status+" "+got)
			mu.Unlock()
			return
		}
		ok.Add(1)
		if after {
			answersAfterLast.Add(1)
			if got == "CBA" {
				oldAfterLast.Add(1)
			}
		}
	})
	waitFor(t, 5*time.Second, "load to start", func() bool { return ok.Load() > 50 })

	// 1: echo joins the chain (routes unchanged), and registers.
	if err := e.g.UpdateChain(cfg(helloSpec([]string{"upper", "reverse", "echo"},
		route(routing.GatewayName, "upper"), route("upper", "reverse")))); err != nil {
		t.Fatal(err)
	}
	e.fn(t, "echo", slow(func(*function.Message) error { return nil }))
	time.Sleep(100 * time.Millisecond)
	// 2: upper now goes to echo.
	if err := e.g.UpdateChain(cfg(helloSpec([]string{"upper", "reverse", "echo"},
		route(routing.GatewayName, "upper"), route("upper", "echo")))); err != nil {
		t.Fatal(err)
	}
	time.Sleep(100 * time.Millisecond)
	// 3: reverse leaves (its instance stays connected: a pod on its way out).
	if err := e.g.UpdateChain(cfg(helloSpec([]string{"upper", "echo"},
		route(routing.GatewayName, "upper"), route("upper", "echo")))); err != nil {
		t.Fatal(err)
	}
	lastDone.Store(true)
	time.Sleep(300 * time.Millisecond)
	stop()

	t.Logf("%d requests answered 200 across three updates, %d after the last (%d with the old routes), %d failed",
		ok.Load(), answersAfterLast.Load(), oldAfterLast.Load(), bad.Load())
	if bad.Load() != 0 {
		t.Errorf("%d requests failed or answered wrong during the updates, e.g. %v", bad.Load(), badAnswers[:min(5, len(badAnswers))])
	}
	if answersAfterLast.Load() == 0 {
		t.Fatal("no request was answered after the last update")
	}
	// Requests sent after the last update was applied started on the new
	// routes; only one in flight across it may still take the old ones.
	if n := oldAfterLast.Load(); n > 8 {
		t.Errorf("%d requests begun after the last update went through reverse", n)
	}
	if got := e.c.Updates.Load(); got != 3 {
		t.Errorf("updates counted %d, want 3", got)
	}
	if code, body := post(t, e.srv.URL, "xyz"); code != 200 || body != "XYZ" {
		t.Errorf("after the updates: %d %q, want 200 XYZ", code, body)
	}
	if _, err := function.Register(function.Options{ControlSocket: e.sock, Chain: "hello", Function: "reverse", Logger: testLogger(t)}); err == nil {
		t.Error("a removed function registered a new instance")
	}
	if free, slots := e.c.Pool().FreeCount(), e.c.Pool().Slots(); free != int(slots) {
		t.Errorf("pool: %d of %d slots free after the load", free, slots)
	}
}

// TestUpdateChainRefusals: what cannot change in place is refused with a
// reason, and the chain keeps serving as before.
func TestUpdateChainRefusals(t *testing.T) {
	e := start(t, gateway.ModeSkMsg, 16, 5*time.Second)
	e.fn(t, "upper", upper)
	e.fn(t, "reverse", reverse)
	base := gateway.ChainConfig{Name: "hello", ID: 1, Pool: shm.Config{Slots: 16, SlotSize: 4096, NoHugePages: true},
		Routing: helloSpec([]string{"upper", "reverse"}, route(routing.GatewayName, "upper"), route("upper", "reverse"))}
	for _, tc := range []struct {
		name   string
		change func(c *gateway.ChainConfig)
		want   string
	}{
		{"pool geometry", func(c *gateway.ChainConfig) { c.Pool.Slots = 32 }, "pool geometry cannot change"},
		{"slot size", func(c *gateway.ChainConfig) { c.Pool.SlotSize = 8192 }, "pool geometry cannot change"},
		{"mode", func(c *gateway.ChainConfig) { c.Mode = gateway.ModePoll }, "delivery mode"},
		{"id", func(c *gateway.ChainConfig) { c.ID = 9 }, "id 1 cannot change"},
		{"unknown chain", func(c *gateway.ChainConfig) { c.Name = "nope" }, "not loaded"},
		{"route to nobody", func(c *gateway.ChainConfig) {
			c.Routing = helloSpec([]string{"upper"}, route(routing.GatewayName, "ghost"))
		}, "ghost"},
	} {
		cfg := base
		tc.change(&cfg)
		err := e.g.UpdateChain(cfg)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want an error containing %q", tc.name, err, tc.want)
		}
	}
	if e.c.Updates.Load() != 0 {
		t.Errorf("refused updates counted: %d", e.c.Updates.Load())
	}
	if code, body := post(t, e.srv.URL, "abc"); code != 200 || body != "CBA" {
		t.Errorf("after refusals: %d %q", code, body)
	}
	// A timeout change applies to the next request.
	cfg := base
	cfg.Timeout = 50 * time.Millisecond
	if err := e.g.UpdateChain(cfg); err != nil {
		t.Fatal(err)
	}
	e.fn(t, "reverse", func(m *function.Message) error { time.Sleep(300 * time.Millisecond); return reverse(m) })
	var timeouts int
	for i := 0; i < 10; i++ {
		if code, _ := post(t, e.srv.URL, "abc"); code == http.StatusGatewayTimeout {
			timeouts++
		}
	}
	if timeouts == 0 {
		t.Error("the 50ms timeout set by the update never applied (no 504 with a 300ms member among the instances)")
	}
}

// TestUpdateChainKeepsInFlightRoutes: a request inside the chain when the
// routes change finishes on the routes it started with. Old routes: upper
// → reverse ("CBA"); new: reverse only ("cba"); the request held in upper
// across the update would answer "ABC" if it took upper's new (empty)
// route.
func TestUpdateChainKeepsInFlightRoutes(t *testing.T) {
	e := start(t, gateway.ModeSkMsg, 16, 5*time.Second)
	entered, release := make(chan struct{}, 1), make(chan struct{})
	e.fn(t, "upper", func(m *function.Message) error {
		if string(m.Payload()) == "held" {
			entered <- struct{}{}
			<-release
		}
		return upper(m)
	})
	e.fn(t, "reverse", reverse)
	got := postAsync(t, e.srv.URL, "held")
	select {
	case <-entered:
	case <-time.After(5 * time.Second):
		t.Fatal("request never reached upper")
	}
	err := e.g.UpdateChain(gateway.ChainConfig{Name: "hello", ID: 1, Timeout: 5 * time.Second,
		Pool:    shm.Config{Slots: 16, SlotSize: 4096, NoHugePages: true},
		Routing: helloSpec([]string{"upper", "reverse"}, route(routing.GatewayName, "reverse"))})
	if err != nil {
		t.Fatal(err)
	}
	if code, body := post(t, e.srv.URL, "abc"); code != 200 || body != "cba" {
		t.Errorf("new request: %d %q, want 200 cba (the new routes)", code, body)
	}
	short, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if err := e.c.WaitDrained(short); err == nil {
		t.Error("WaitDrained returned while a request from before the update was in flight")
	}
	close(release)
	drained, cancel2 := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel2()
	if err := e.c.WaitDrained(drained); err != nil {
		t.Errorf("after the old request finished: %v", err)
	}
	if r := <-got; r.code != 200 || r.body != "DLEH" {
		t.Errorf("request in flight across the update: %d %q, want 200 DLEH (its old routes: upper then reverse)", r.code, r.body)
	}
}

// TestInstanceLeavesUnderLoad: an instance whose Serve context ends (its
// process got SIGTERM, its pod is terminating) asks the gateway to route
// nothing more to it and serves what reached it before closing: under
// load, with a second instance of the function, no request fails.
func TestInstanceLeavesUnderLoad(t *testing.T) {
	e := start(t, gateway.ModeSkMsg, 64, 5*time.Second)
	e.fn(t, "upper", slow(upper))
	e.fn(t, "reverse", slow(reverse))
	leaving, err := function.Register(function.Options{ControlSocket: e.sock, Chain: "hello", Function: "reverse", Logger: testLogger(t), Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- leaving.Serve(ctx, slow(reverse)); leaving.Close() }()
	var ok, bad atomic.Int64
	stop := clients(8, func() {
		if code, body := post(t, e.srv.URL, "abc"); code == 200 && body == "CBA" {
			ok.Add(1)
		} else {
			bad.Add(1)
		}
	})
	waitFor(t, 5*time.Second, "load on both reverse instances", func() bool { return leaving.Stats.Handled.Load() > 20 })
	cancel()
	select {
	case <-served:
	case <-time.After(15 * time.Second):
		t.Fatal("the leaving instance never finished")
	}
	time.Sleep(200 * time.Millisecond)
	stop()
	t.Logf("%d answered, %d failed; the leaving instance handled %d", ok.Load(), bad.Load(), leaving.Stats.Handled.Load())
	if bad.Load() != 0 {
		t.Errorf("%d requests failed while an instance left", bad.Load())
	}
	if n := e.c.InstanceCount("reverse"); n != 1 {
		t.Errorf("reverse has %d instances after one left, want 1", n)
	}
}
