package e2e

import (
	"context"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/spright-dev/spright/bpf"
	"github.com/spright-dev/spright/pkg/descriptor"
	"github.com/spright-dev/spright/pkg/function"
	"github.com/spright-dev/spright/pkg/gateway"
	"github.com/spright-dev/spright/pkg/routing"
	"github.com/spright-dev/spright/pkg/shm"
)

const rogueYAML = `
name: hello
timeout: 5s
pool: {slots: 64, slotSize: 4096}
routes: {"*": [upper]}
functions:
  - name: upper
    routes: {"*": [reverse]}
  - name: reverse
  - name: rogue        # a member nothing routes to: the test drives it
    behavior: echo
    instances: 0
`

// serve registers an in-process instance and serves until the test ends.
func serve(t *testing.T, sock, chainName, fn string, h function.Handler) *function.Instance {
	t.Helper()
	in, err := function.Register(function.Options{ControlSocket: sock, Chain: chainName, Function: fn, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { in.Serve(ctx, h); close(done) }()
	t.Cleanup(func() { cancel(); <-done; in.Close() })
	return in
}

// TestBadDescriptors: a chain member sends descriptors with an out-of-range
// slot, an oversize length, for another chain, to another chain's instance,
// and a well-formed one for a slot it does not hold. Each is refused and
// counted (by the kernel program, or by the receiver's own check); the
// chain and its neighbour keep serving and the pool stays whole.
func TestBadDescriptors(t *testing.T) {
	c := startChain(t, rogueYAML)
	other, err := c.Gateway.AddChain(gateway.ChainConfig{
		Name: "other", ID: 2, Pool: shm.Config{Slots: 16, SlotSize: 1024, NoHugePages: true},
		Routing: routing.Spec{Functions: []routing.FunctionSpec{{Name: "echo"}},
			Routes: []routing.Route{{From: routing.GatewayName, Topic: "*", To: []string{"echo"}}}},
	})
	if err != nil {
		t.Fatal(err)
	}
	sock := c.Gateway.ControlSocketPath()
	var otherHandled sync.Map
	otherIn := serve(t, sock, "other", "echo", function.HandlerFunc(func(m *function.Message) error {
		otherHandled.Store(m.RequestID(), true)
		return nil
	}))
	rogue := serve(t, sock, "hello", "rogue", function.HandlerFunc(func(m *function.Message) error {
		t.Errorf("rogue handler called for request %d", m.RequestID())
		return nil
	}))
	upperID := c.Chain.Routes().Instances(1)[0]
	reverseID := c.Chain.Routes().Instances(2)[0]
	free, otherFree := c.Chain.Pool().FreeCount(), other.Pool().FreeCount()

	dp := c.Gateway.Datapath()
	drops0, err := dp.Drops()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name   string
		d      descriptor.Descriptor
		reason bpf.DropReason
	}{
		{"slot out of range", descriptor.Descriptor{Next: upperID, Chain: 1, Slot: 64, Len: 1}, bpf.DropPoolRange},
		{"len beyond slot", descriptor.Descriptor{Next: upperID, Chain: 1, Slot: 0, Len: 4097}, bpf.DropPoolRange},
		{"other chain's pool", descriptor.Descriptor{Next: otherIn.ID, Chain: 2, Slot: 0, Len: 1}, bpf.DropSenderChain},
		{"other chain's instance", descriptor.Descriptor{Next: otherIn.ID, Chain: 1, Slot: 0, Len: 1}, bpf.DropNextChain},
		{"unknown instance", descriptor.Descriptor{Next: 9999, Chain: 1, Slot: 0, Len: 1}, bpf.DropNextChain},
	} {
		if err := rogue.SendRaw(tc.d); err != nil {
			t.Fatalf("%s: send: %v (the kernel should answer with a NACK, not break the socket)", tc.name, err)
		}
		waitFor(t, tc.name, func() bool {
			drops, _ := dp.Drops()
			return drops[tc.reason] == drops0[tc.reason]+1
		})
		drops0, _ = dp.Drops()
	}
	// A well-formed descriptor for a slot the rogue does not hold passes the
	// kernel (it is in range, same chain) but not the receiver.
	if err := rogue.SendRaw(descriptor.Descriptor{Next: reverseID, Chain: 1, Slot: 3, Len: 3}); err != nil {
		t.Fatal(err)
	}
	// And the gateway refuses a forged "result" for a slot it never sent.
	if err := rogue.SendRaw(descriptor.Descriptor{Next: 0, Chain: 1, Slot: 5, Len: 3}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "gateway counts the forged result", func() bool { return c.Chain.Invalid.Load() == 1 })

	// Everyone still serves.
	for i := 0; i < 20; i++ {
		if code, body, err := post(c.url, "abc"); err != nil || code != 200 || body != "CBA" {
			t.Fatalf("after bad descriptors: %d %q %v", code, body, err)
		}
	}
	resp, err := c.Gateway.Invoke(other, "", nil, 0, nil)
	if err != nil {
		t.Fatalf("other chain: %v", err)
	}
	resp.Release()
	if c.Chain.Pool().FreeCount() != free || other.Pool().FreeCount() != otherFree {
		t.Fatalf("pools not whole: %d/%d and %d/%d free", c.Chain.Pool().FreeCount(), free, other.Pool().FreeCount(), otherFree)
	}
	if rogue.Stats.Handled.Load() != 0 {
		t.Fatal("rogue handled requests")
	}
	// The NACKs for the out-of-range slot, the oversize length and the
	// other chain's pool fail the rogue's own validation; the other two come
	// back as rejected and are ignored (the rogue never held those slots).
	if n := rogue.Stats.Invalid.Load(); n != 3 {
		t.Errorf("rogue counted %d invalid NACKs, want 3", n)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	if rev := c.stats(t, "reverse", 0); rev["invalid"] != 1 {
		t.Errorf("reverse counted %d invalid descriptors, want 1 (the forged slot)", rev["invalid"])
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting: %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

const killYAML = `
name: slow
timeout: 20s
pool: {slots: 64, slotSize: 4096}
routes: {"*": [work]}
functions:
  - name: work
    behavior: burn
    serviceTime: 300ms
    instances: 2
    workers: 4
    routes: {"*": [reverse]}
  - name: reverse
`

// TestKillFunctionMidRequest: kill -9 one of two instances while it holds
// requests. Exactly its requests fail with 502 (the gateway learns of the
// death from the control socket and reclaims the slots the instance held);
// everything else completes with 200; the pool's free count returns to its
// start.
func TestKillFunctionMidRequest(t *testing.T) {
	c := startChain(t, killYAML)
	free := c.Chain.Pool().FreeCount()
	var victim *int
	for _, p := range c.Procs() {
		if p.Function == "work" && p.Index == 0 {
			pid := p.Cmd.Process.Pid
			victim = &pid
		}
	}
	const n = 12
	codes := make(chan int, n)
	for i := 0; i < n; i++ {
		go func() {
			code, _, err := post(c.url, "abc")
			if err != nil {
				code = -1
			}
			codes <- code
		}()
	}
	time.Sleep(150 * time.Millisecond) // requests are inside `work` now
	if err := syscall.Kill(*victim, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	got := map[int]int{}
	for i := 0; i < n; i++ {
		got[<-codes]++
	}
	reclaimed := int(c.Chain.Reclaimed.Load())
	t.Logf("status codes %v; slots reclaimed from the killed instance: %d", got, reclaimed)
	if reclaimed == 0 {
		t.Fatal("the killed instance held no slot: the test did not kill mid-request")
	}
	if got[502] != reclaimed || got[200] != n-reclaimed {
		t.Fatalf("codes %v: want %d×502 (the killed instance's requests) and the rest 200", got, reclaimed)
	}
	waitFor(t, "pool free count back", func() bool { return c.Chain.Pool().FreeCount() == free })
	// The surviving instance serves on.
	if code, body, err := post(c.url, "xyz"); err != nil || code != 200 || body != "zyx" {
		t.Fatalf("after the kill: %d %q %v", code, body, err)
	}
}
