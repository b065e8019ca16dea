package gateway_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spright-dev/spright/pkg/descriptor"
	"github.com/spright-dev/spright/pkg/function"
	"github.com/spright-dev/spright/pkg/gateway"
	"github.com/spright-dev/spright/pkg/routing"
	"github.com/spright-dev/spright/pkg/shm"
)

func helloChain(timeout time.Duration) gateway.ChainConfig {
	return gateway.ChainConfig{
		Name: "hello", ID: 1, Timeout: timeout,
		Pool: shm.Config{Slots: 16, SlotSize: 4096, NoHugePages: true},
		Routing: routing.Spec{
			Functions: []routing.FunctionSpec{{Name: "upper"}, {Name: "reverse"}},
			Routes: []routing.Route{
				{From: routing.GatewayName, Topic: "*", To: []string{"upper"}},
				{From: "upper", Topic: "*", To: []string{"reverse"}},
			},
		},
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	waitFor(t, 10*time.Second, what, cond)
}

// TestRestartKeepsPool: the gateway stops while a request is inside a
// function and another one is being read into a slot; a new gateway on the
// same pins reopens the same pool file, frees the dead gateway's slot at
// once, frees the function's slot when the function (function.Run) has
// registered again naming its old instance, and serves on the same memory.
// Unpin leaves no pin, lock or pool file behind.
func TestRestartKeepsPool(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "ctl.sock")
	pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("spright-test-%d-%s", os.Getpid(), t.Name()))
	newGW := func() (*gateway.Gateway, *gateway.Chain, *httptest.Server) {
		g, err := gateway.New(gateway.Config{ControlSocket: sock, PinDir: pin, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		c, err := g.AddChain(helloChain(time.Second))
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Start(); err != nil {
			t.Fatal(err)
		}
		return g, c, httptest.NewServer(g.Handler(c))
	}
	g1, c1, srv1 := newGW()
	t.Cleanup(func() { srv1.Close(); g1.Close(); g1.Unpin() }) // on failure: no pins or pools left (runs last)
	path := c1.Pool().Path()
	if path == "" {
		t.Fatal("sk_msg chain pool is anonymous: it cannot survive a restart")
	}
	ctx, cancel := context.WithCancel(context.Background())
	hold, held := make(chan struct{}), make(chan struct{}, 1)
	runs := make(chan error, 2)
	run := func(name string, h function.HandlerFunc) {
		go func() {
			runs <- function.Run(ctx, function.Options{ControlSocket: sock, Chain: "hello", Function: name, Logger: testLogger(t), Workers: 2}, h)
		}()
	}
	run("upper", func(m *function.Message) error {
		if string(m.Payload()) == "hold" {
			held <- struct{}{}
			<-hold
		}
		return upper(m)
	})
	run("reverse", reverse)
	t.Cleanup(func() {
		cancel()
		<-runs
		<-runs
	})
	waitUntil(t, "members registered", func() bool { return c1.InstanceCount("upper") == 1 && c1.InstanceCount("reverse") == 1 })
	if code, body := post(t, srv1.URL, "abc"); code != 200 || body != "CBA" {
		t.Fatalf("before the restart: %d %q", code, body)
	}
	oldUpper := c1.Routes().Instances(1)[0]
	go func() { // fails one way or another: its gateway goes away
		if resp, err := http.Post(srv1.URL, "text/plain", strings.NewReader("hold")); err == nil {
			resp.Body.Close()
		}
	}()
	<-held
	if _, err := c1.Pool().Alloc(descriptor.GatewayInstance); err != nil { // a body being read at the crash
		t.Fatal(err)
	}
	free := int(c1.Pool().Slots())
	if n := c1.Pool().FreeCount(); n != free-2 {
		t.Fatalf("free %d before the restart, want %d", n, free-2)
	}

	srv1.CloseClientConnections()
	srv1.Close()
	if err := g1.Close(); err != nil {
		t.Fatal(err)
	}
	g2, c2, srv2 := newGW()
	t.Cleanup(func() {
		srv2.Close()
		g2.Close()
		if err := g2.Unpin(); err != nil {
			t.Errorf("unpin: %v", err)
		}
		for _, p := range []string{pin, path} {
			if _, err := os.Stat(p); !os.IsNotExist(err) {
				t.Errorf("%s left behind: %v", p, err)
			}
		}
	})
	// A second gateway on the same pins is refused before it touches the
	// running one's pool.
	g3, err := gateway.New(gateway.Config{ControlSocket: filepath.Join(dir, "other.sock"), PinDir: pin, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := g3.AddChain(helloChain(time.Second)); err == nil || !strings.Contains(err.Error(), "another gateway") {
		t.Fatalf("second gateway on the same pins: %v", err)
	}
	g3.Close()
	if err := g3.Unpin(); err != nil {
		t.Fatalf("unpin of the refused gateway: %v", err)
	}
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("the refused gateway removed the running one's pool: %v", err)
	}
	if c2.Pool().Path() != path {
		t.Fatalf("restarted gateway uses pool %s, want the kept %s", c2.Pool().Path(), path)
	}
	if n := c2.Pool().FreeCount(); n != free-1 {
		t.Fatalf("free %d after reopen, want %d (the dead gateway's slot back, the member's kept)", n, free-1)
	}
	var owner uint32
	c2.Pool().InUse(func(_, o uint32) { owner = o })
	if owner != oldUpper {
		t.Fatalf("kept slot owned by %d, want the old upper instance %d", owner, oldUpper)
	}
	// The member finishes its message: the slot is not handed to anybody,
	// and comes back once it has registered again.
	close(hold)
	waitUntil(t, "members registered again", func() bool { return c2.InstanceCount("upper") == 1 && c2.InstanceCount("reverse") == 1 })
	waitUntil(t, "the old instance's slot reclaimed", func() bool {
		if c2.Pool().FreeCount() == free {
			return true
		}
		c2.Pool().InUse(func(s, o uint32) { t.Logf("slot %d in use by %d, free %d", s, o, c2.Pool().FreeCount()) })
		return false
	})
	if id := c2.Routes().Instances(1)[0]; id <= oldUpper {
		t.Errorf("new upper instance %d not above the old one %d", id, oldUpper)
	}
	for i := 0; i < 20; i++ {
		if code, body := post(t, srv2.URL, "xyz"); code != 200 || body != "ZYX" {
			t.Fatalf("after the restart: %d %q", code, body)
		}
	}
	if n := c2.Pool().FreeCount(); n != free {
		t.Fatalf("free %d after traffic, want %d", n, free)
	}
}

// TestRestartSweepsDeadMembers: a member holding a slot dies while the
// gateway is away, another hands its slot to the gateway after the reopen
// (it finished a message of the old era); the restarted gateway frees both
// one request timeout after reopening the pool.
func TestRestartSweepsDeadMembers(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "ctl.sock")
	pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("spright-test-%d-%s", os.Getpid(), t.Name()))
	g1, err := gateway.New(gateway.Config{ControlSocket: sock, PinDir: pin, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g1.Close(); g1.Unpin() })
	c1, err := g1.AddChain(helloChain(500 * time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	s, _ := c1.Pool().Alloc(descriptor.GatewayInstance)
	c1.Pool().Handoff(s, descriptor.GatewayInstance, 77) // a member that will never come back
	late, _ := c1.Pool().Alloc(descriptor.GatewayInstance)
	c1.Pool().Handoff(late, descriptor.GatewayInstance, 78)
	g1.Close()
	g2, err := gateway.New(gateway.Config{ControlSocket: sock, PinDir: pin, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g2.Close(); g2.Unpin() })
	c2, err := g2.AddChain(helloChain(500 * time.Millisecond))
	if err != nil {
		t.Fatal(err)
	}
	if n := c2.Pool().FreeCount(); n != 14 {
		t.Fatalf("free %d after reopen, want 14", n)
	}
	if !c2.Pool().Handoff(late, 78, descriptor.GatewayInstance) { // member 78's late result
		t.Fatal("late handoff refused")
	}
	waitUntil(t, "the dead member's slot swept", func() bool { return c2.Pool().FreeCount() == 16 })
	// A chain file with another geometry gets a fresh pool, not the old one.
	g2.Close()
	g3, err := gateway.New(gateway.Config{ControlSocket: sock, PinDir: pin, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g3.Close(); g3.Unpin() })
	cfg := helloChain(time.Second)
	cfg.Pool.Slots = 32
	c3, err := g3.AddChain(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c3.Pool().Slots() != 32 || c3.Pool().FreeCount() != 32 || !strings.HasSuffix(c3.Pool().Path(), "/hello") {
		t.Fatalf("pool after a geometry change: %d slots, %d free, %s", c3.Pool().Slots(), c3.Pool().FreeCount(), c3.Pool().Path())
	}
}
