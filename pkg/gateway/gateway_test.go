package gateway_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"golang.org/x/sys/unix"

	"github.com/spright-dev/spright/pkg/control"
	"github.com/spright-dev/spright/pkg/function"
	"github.com/spright-dev/spright/pkg/gateway"
	"github.com/spright-dev/spright/pkg/routing"
	"github.com/spright-dev/spright/pkg/shm"
)

func needRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (eBPF, bpffs)")
	}
}

// testLogger logs through t, except under a fuzz target (which forbids
// logging through the F).
func testLogger(t testing.TB) *zap.Logger {
	if _, fuzz := t.(*testing.F); fuzz {
		return zap.NewNop()
	}
	return zaptest.NewLogger(t)
}

type env struct {
	g    *gateway.Gateway
	c    *gateway.Chain
	srv  *httptest.Server
	sock string
}

func start(t testing.TB, mode string, slots uint32, timeout time.Duration) *env {
	t.Helper()
	return startWith(t, func(g *gateway.Config, c *gateway.ChainConfig) {
		c.Mode, c.Timeout, c.Pool.Slots = mode, timeout, slots
	})
}

// startWith starts a gateway with the hello chain (upper → reverse);
// configure adjusts the gateway's and the chain's configuration first.
func startWith(t testing.TB, configure func(*gateway.Config, *gateway.ChainConfig)) *env {
	t.Helper()
	needRoot(t)
	dir := t.TempDir()
	pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("spright-test-%d-%s", os.Getpid(), strings.ReplaceAll(t.Name(), "/", "_")))
	gc := gateway.Config{ControlSocket: filepath.Join(dir, "ctl.sock"), PinDir: pin, Logger: testLogger(t)}
	cc := gateway.ChainConfig{
		Name: "hello", ID: 1,
		Pool: shm.Config{Slots: 16, SlotSize: 4096, NoHugePages: true},
		Routing: routing.Spec{
			Functions: []routing.FunctionSpec{{Name: "upper"}, {Name: "reverse"}},
			Routes: []routing.Route{
				{From: routing.GatewayName, Topic: "*", To: []string{"upper"}},
				{From: "upper", Topic: "*", To: []string{"reverse"}},
			},
		},
	}
	configure(&gc, &cc)
	g, err := gateway.New(gc)
	if err != nil {
		t.Fatal(err)
	}
	c, err := g.AddChain(cc)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(g.Handler(c))
	t.Cleanup(func() {
		srv.Close()
		g.Close()
		g.Unpin()
	})
	return &env{g: g, c: c, srv: srv, sock: gc.ControlSocket}
}

func (e *env) fn(t testing.TB, name string, h function.HandlerFunc) *function.Instance {
	t.Helper()
	in, err := function.Register(function.Options{ControlSocket: e.sock, Chain: "hello", Function: name, Logger: testLogger(t), Workers: 4})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { in.Serve(ctx, h); close(done) }()
	t.Cleanup(func() { cancel(); <-done; in.Close() })
	return in
}

func upper(m *function.Message) error {
	p := m.Payload()
	for i, c := range p {
		if 'a' <= c && c <= 'z' {
			p[i] = c - 32
		}
	}
	return nil
}

func reverse(m *function.Message) error {
	p := m.Payload()
	for i, j := 0, len(p)-1; i < j; i, j = i+1, j-1 {
		p[i], p[j] = p[j], p[i]
	}
	return nil
}

func post(t *testing.T, url, body string) (int, string) {
	t.Helper()
	resp, err := http.Post(url, "text/plain", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func TestHelloInProcess(t *testing.T) {
	for _, mode := range []string{gateway.ModeSkMsg, gateway.ModePoll} {
		t.Run(mode, func(t *testing.T) {
			e := start(t, mode, 64, 5*time.Second)
			e.fn(t, "upper", upper)
			e.fn(t, "reverse", reverse)
			free := e.c.Pool().FreeCount()
			var wg sync.WaitGroup
			for i := 0; i < 8; i++ {
				wg.Add(1)
				go func() {
					defer wg.Done()
					for j := 0; j < 50; j++ {
						code, body := post(t, e.srv.URL, "abc")
						if code != 200 || body != "CBA" {
							t.Errorf("got %d %q", code, body)
							return
						}
					}
				}()
			}
			wg.Wait()
			if got := e.c.Dispatched.Load(); got != 400 {
				t.Errorf("gateway dispatched %d descriptors for 400 requests", got)
			}
			if e.c.Pool().FreeCount() != free {
				t.Errorf("free slots %d, want %d", e.c.Pool().FreeCount(), free)
			}
		})
	}
}

func TestErrors(t *testing.T) {
	e := start(t, gateway.ModeSkMsg, 4, 300*time.Millisecond)
	// No instance yet.
	if code, body := post(t, e.srv.URL, "x"); code != 503 || !strings.Contains(body, "no ready instance") {
		t.Fatalf("no instance: %d %q", code, body)
	}
	block := make(chan struct{})
	e.fn(t, "upper", func(m *function.Message) error {
		if string(m.Payload()) == "block" {
			<-block
		}
		if string(m.Payload()) == "fail" {
			return function.Errorf(422, "cannot upper %q", "fail")
		}
		return upper(m)
	})
	e.fn(t, "reverse", reverse)
	if code, body := post(t, e.srv.URL, "fail"); code != 422 || !strings.Contains(body, "cannot upper") {
		t.Fatalf("handler error: %d %q", code, body)
	}
	if code, _ := post(t, e.srv.URL, strings.Repeat("x", 5000)); code != 413 {
		t.Fatalf("oversize: %d", code)
	}
	// Timeout: the slot comes back when the function finally answers.
	if code, _ := post(t, e.srv.URL, "block"); code != 504 {
		t.Fatalf("timeout: %d", code)
	}
	// Pool full: 4 slots, one is held by the blocked request.
	var wg sync.WaitGroup
	codes := make(chan int, 8)
	for i := 0; i < 3; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c, _ := post(t, e.srv.URL, "block")
			codes <- c
		}()
	}
	time.Sleep(100 * time.Millisecond)
	resp, err := http.Post(e.srv.URL, "text/plain", bytes.NewReader([]byte("x")))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 503 || resp.Header.Get("Retry-After") == "" {
		t.Fatalf("pool full: %d retry-after=%q", resp.StatusCode, resp.Header.Get("Retry-After"))
	}
	close(block)
	wg.Wait()
	deadline := time.Now().Add(2 * time.Second)
	for e.c.Pool().FreeCount() != 4 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := e.c.Pool().FreeCount(); n != 4 {
		t.Fatalf("free slots %d after late answers, want 4", n)
	}
	if code, body := post(t, e.srv.URL, "ok"); code != 200 || body != "KO" {
		t.Fatalf("after recovery: %d %q", code, body)
	}
}

// TestControlRefusals: unknown chain, unknown function, garbage and a join
// without a socket are refused with a clear error; the gateway then
// registers a proper instance as usual.
func TestControlRefusals(t *testing.T) {
	e := start(t, gateway.ModeSkMsg, 8, time.Second)
	for _, tc := range []struct {
		name string
		msgs []control.Message
		want string
	}{
		{"unknown chain", []control.Message{{Type: control.TypeHello, Chain: "nope", Function: "upper"}}, `unknown chain "nope"`},
		{"unknown function", []control.Message{{Type: control.TypeHello, Chain: "hello", Function: "nope"}}, `has no function "nope"`},
		{"gateway name", []control.Message{{Type: control.TypeHello, Chain: "hello", Function: routing.GatewayName}}, "has no function"},
		{"join first", []control.Message{{Type: control.TypeJoin}}, `want "hello"`},
	} {
		c, err := control.Dial(e.sock)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range tc.msgs {
			c.Send(m)
		}
		_, _, err = c.Expect(control.TypeWelcome)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
		c.Close()
	}
	// Hello, then a join with no descriptor socket attached.
	c, err := control.Dial(e.sock)
	if err != nil {
		t.Fatal(err)
	}
	c.Send(control.Message{Type: control.TypeHello, Chain: "hello", Function: "upper"})
	_, fds, err := c.Expect(control.TypeWelcome)
	if err != nil {
		t.Fatal(err)
	}
	for _, fd := range fds {
		unix.Close(fd)
	}
	c.Send(control.Message{Type: control.TypeJoin})
	if _, _, err := c.Expect(control.TypeJoined); err == nil || !strings.Contains(err.Error(), "exactly 1 descriptor socket") {
		t.Fatalf("join without socket: %v", err)
	}
	c.Close()
	if n := e.c.InstanceCount("upper"); n != 0 {
		t.Fatalf("%d upper instances after refused registrations", n)
	}
	e.fn(t, "upper", upper)
	e.fn(t, "reverse", reverse)
	if code, body := post(t, e.srv.URL, "abc"); code != 200 || body != "CBA" {
		t.Fatalf("after refusals: %d %q", code, body)
	}
}
