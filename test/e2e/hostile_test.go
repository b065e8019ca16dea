package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"go.uber.org/zap/zaptest"
	"golang.org/x/sys/unix"

	"github.com/spright-dev/spright/bpf"
	"github.com/spright-dev/spright/pkg/control"
	"github.com/spright-dev/spright/pkg/descriptor"
	"github.com/spright-dev/spright/pkg/function"
	"github.com/spright-dev/spright/pkg/gateway"
	"github.com/spright-dev/spright/pkg/routing"
	"github.com/spright-dev/spright/pkg/shm"
	"github.com/spright-dev/spright/pkg/transport"
)

// allowlist is the gateway's Verify hook for this test: like the
// standalone runner, it admits a process only as the (chain, function) it
// was started as, and counts refusals.
type allowlist struct {
	mu      sync.Mutex
	pids    map[int32]gateway.Member
	refused atomic.Uint64
}

func (a *allowlist) allow(pid int, chain, fn string) {
	a.mu.Lock()
	a.pids[int32(pid)] = gateway.Member{Chain: chain, Function: fn}
	a.mu.Unlock()
}

func (a *allowlist) verify(cred unix.Ucred, m gateway.Member) error {
	deadline := time.Now().Add(time.Second) // the pid is recorded right after fork
	for {
		a.mu.Lock()
		want, ok := a.pids[cred.Pid]
		a.mu.Unlock()
		switch {
		case ok && want == m:
			return nil
		case ok:
			a.refused.Add(1)
			return fmt.Errorf("pid %d was started as %s/%s, not %s/%s%s", cred.Pid, want.Chain, want.Function, m.Chain, m.Function, m.Pod)
		case time.Now().After(deadline):
			a.refused.Add(1)
			return fmt.Errorf("pid %d was not started by this test", cred.Pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func chainCfg(name string, id uint16) gateway.ChainConfig {
	return gateway.ChainConfig{
		Name: name, ID: id, Mode: gateway.ModeSkMsg, Timeout: 10 * time.Second,
		Pool: shm.Config{Slots: 64, SlotSize: 4096, NoHugePages: true},
		Routing: routing.Spec{
			Functions: []routing.FunctionSpec{{Name: "upper"}, {Name: "reverse"}, {Name: "rogue"}},
			Routes: []routing.Route{
				{From: routing.GatewayName, Topic: "*", To: []string{"upper"}},
				{From: "upper", Topic: "*", To: []string{"reverse"}},
			},
		},
	}
}

// startFunction runs `spright function` as chain/fn (host netns) and admits
// its pid.
func startFunction(t *testing.T, al *allowlist, sock, chain, fn string) {
	t.Helper()
	cmd := exec.Command(spright, "function", "--chain", chain, "--function", fn, "--behavior", fn, "--control", sock, "--workers", "2")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatalf("start %s/%s: %v", chain, fn, err)
	}
	al.allow(cmd.Process.Pid, chain, fn)
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
}

func instancesOf(t *testing.T, c *gateway.Chain, fn string) []uint32 {
	t.Helper()
	i, ok := c.Routes().FunctionIndex(fn)
	if !ok {
		t.Fatalf("chain %s has no function %s", c.Name(), fn)
	}
	return c.Routes().Instances(i)
}

func inode(t *testing.T, fd int) uint64 {
	t.Helper()
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		t.Fatal(err)
	}
	return st.Ino
}

// pinnedState is what identifies chain B's instances in the kernel: their
// sockets in sock_hash (by cookie) and their chain in instance_chain.
func pinnedState(t *testing.T, pinDir string, ids []uint32) map[uint32][2]uint64 {
	t.Helper()
	sh, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "sock_hash"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer sh.Close()
	ic, err := ebpf.LoadPinnedMap(filepath.Join(pinDir, "instance_chain"), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ic.Close()
	out := map[uint32][2]uint64{}
	for _, id := range ids {
		var cookie uint64
		var chain uint16
		if err := sh.Lookup(id, &cookie); err != nil {
			t.Fatalf("sock_hash[%d]: %v", id, err)
		}
		if err := ic.Lookup(id, &chain); err != nil {
			t.Fatalf("instance_chain[%d]: %v", id, err)
		}
		out[id] = [2]uint64{cookie, uint64(chain)}
	}
	return out
}

// TestHostileMember: chains A (alpha) and B (bravo) run on one gateway
// (one sockhash, one set of eBPF maps), each with its own function
// processes. A verified member of A — this test process, admitted as
// alpha/rogue and nothing else — attacks B while B serves concurrent
// traffic:
//
//	(a) it tries to obtain B's pool: hello as B's functions, as another A
//	    function, as an EPROXY pod; a legitimate hello that claims B's
//	    instance ID and chain ID; a second hello on a joined connection; a
//	    write to the read-only metrics map it was given;
//	(b) it sends descriptors to B's instances and forged results for B to
//	    the gateway, also as a flood;
//	(c) it forges out-of-range slots and lengths in its own chain, and a
//	    result for a slot the gateway never gave it.
//
// Every attempt is refused and counted: the Verify hook's refusals, the
// sk_msg program's drop counters (exact deltas per reason), the gateway's
// invalid-descriptor counter. B answers every request correctly throughout,
// its instances keep their IDs, sockets and chain in the kernel maps, and
// its pool's free count is back to the start.
func TestHostileMember(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "control.sock")
	pinDir := fmt.Sprintf("/sys/fs/bpf/spright-hostile-%d", os.Getpid())
	al := &allowlist{pids: map[int32]gateway.Member{}}
	g, err := gateway.New(gateway.Config{ControlSocket: sock, PinDir: pinDir, Logger: zaptest.NewLogger(t), Verify: al.verify})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Errorf("gateway close: %v", err)
		}
		if err := g.Unpin(); err != nil {
			t.Errorf("unpin: %v", err)
		}
		os.RemoveAll(pinDir)
	})
	a, err := g.AddChain(chainCfg("alpha", 1))
	if err != nil {
		t.Fatal(err)
	}
	b, err := g.AddChain(chainCfg("bravo", 2))
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	for _, ch := range []string{"alpha", "bravo"} {
		for _, fn := range []string{"upper", "reverse"} {
			startFunction(t, al, sock, ch, fn)
		}
	}
	waitFor(t, "all function processes registered", func() bool {
		return a.InstanceCount("upper") == 1 && a.InstanceCount("reverse") == 1 && b.InstanceCount("upper") == 1 && b.InstanceCount("reverse") == 1
	})
	// This process is A's rogue member, and nothing else.
	al.allow(os.Getpid(), "alpha", "rogue")

	aSrv := httptest.NewServer(g.Handler(a))
	defer aSrv.Close()
	bSrv := httptest.NewServer(g.Handler(b))
	defer bSrv.Close()

	bIDs := append(instancesOf(t, b, "upper"), instancesOf(t, b, "reverse")...)
	bUpper := instancesOf(t, b, "upper")[0]
	aUpper := instancesOf(t, a, "upper")[0]
	bFree := b.Pool().FreeCount()
	bPinned := pinnedState(t, pinDir, bIDs)
	dp := g.Datapath()
	drops0, err := dp.Drops()
	if err != nil {
		t.Fatal(err)
	}

	// Chain B under concurrent traffic for the whole attack.
	var ok, bad atomic.Uint64
	var firstBad atomic.Value
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			cl := &http.Client{Timeout: 10 * time.Second}
			for i := 0; ctx.Err() == nil; i++ {
				body := fmt.Sprintf("w%d-req%d-bravo", w, i)
				resp, err := cl.Post(bSrv.URL, "text/plain", strings.NewReader(body))
				if err != nil {
					bad.Add(1)
					firstBad.CompareAndSwap(nil, err.Error())
					continue
				}
				got, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(got) != reverseUpper(body) {
					bad.Add(1)
					firstBad.CompareAndSwap(nil, fmt.Sprintf("%d %q for %q", resp.StatusCode, got, body))
					continue
				}
				ok.Add(1)
			}
		}(w)
	}
	defer func() { stop(); wg.Wait() }()
	waitFor(t, "traffic on B", func() bool { return ok.Load() > 20 })

	// (a) Obtaining B's pool.
	refused0 := al.refused.Load()
	for _, m := range []control.Message{
		{Type: control.TypeHello, Chain: "bravo", Function: "upper"},
		{Type: control.TypeHello, Chain: "bravo", Function: "reverse"},
		{Type: control.TypeHello, Chain: "bravo", Function: "rogue"},
		{Type: control.TypeHello, Chain: "alpha", Function: "upper"},
		{Type: control.TypeHello, Chain: "bravo", Function: "upper", Instance: bUpper, ChainID: 2},
		{Type: control.TypePod, Namespace: "default", Revision: "bravo-upper", PodName: "bravo-upper-1"},
	} {
		c, err := control.Dial(sock)
		if err != nil {
			t.Fatal(err)
		}
		c.Send(m)
		_, fds, err := c.Expect(control.TypeWelcome)
		for _, fd := range fds {
			unix.Close(fd)
		}
		c.Close()
		if err == nil || len(fds) != 0 {
			t.Fatalf("%s as %s/%s%s: admitted (%d fds)", m.Type, m.Chain, m.Function, m.PodName, len(fds))
		}
		if !strings.Contains(err.Error(), "not verified") {
			t.Fatalf("%s as %s/%s: %v, want a verification refusal", m.Type, m.Chain, m.Function, err)
		}
		t.Logf("refused: %s %s/%s%s: %v", m.Type, m.Chain, m.Function, m.PodName, err)
	}
	if n := al.refused.Load() - refused0; n != 6 {
		t.Fatalf("Verify refused %d registrations, want 6", n)
	}

	// A legitimate hello as alpha/rogue that claims B's instance and chain
	// IDs: the gateway assigns its own, and hands over A's pool only.
	c, err := control.Dial(sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Send(control.Message{Type: control.TypeHello, Chain: "alpha", Function: "rogue", Instance: bUpper, ChainID: 2})
	w, fds, err := c.Expect(control.TypeWelcome)
	if err != nil {
		t.Fatal(err)
	}
	if len(fds) != 2 {
		t.Fatalf("welcome carried %d fds, want 2", len(fds))
	}
	for _, id := range bIDs {
		if w.Instance == id {
			t.Fatalf("welcome gave B's instance ID %d to A's rogue", id)
		}
	}
	if w.ChainID != a.ID() {
		t.Fatalf("welcome chain ID %d, want alpha's %d", w.ChainID, a.ID())
	}
	if inode(t, fds[0]) == inode(t, b.Pool().FD()) || inode(t, fds[0]) != inode(t, a.Pool().FD()) {
		t.Fatal("the pool fd handed to alpha/rogue is not alpha's pool")
	}
	pool, err := shm.Open(fds[0])
	if err != nil {
		t.Fatal(err)
	}
	if pool.Chain() != a.ID() {
		t.Fatalf("pool says chain %d, want %d", pool.Chain(), a.ID())
	}
	pool.Close()
	// The metrics map it gets is read-only: it cannot skew B's load
	// figures (which steer routing and autoscaling).
	mm, err := ebpf.NewMapFromFD(fds[1])
	if err != nil {
		t.Fatal(err)
	}
	if err := mm.Update(bUpper, make([]byte, bpf.MetricsValueSize), ebpf.UpdateAny); err == nil {
		t.Fatal("wrote B's metrics entry through the member's metrics map")
	} else {
		t.Logf("metrics map write refused: %v", err)
	}
	mm.Close()
	// Join, claiming B's instance ID again: ignored.
	ts, err := transport.NewSocket()
	if err != nil {
		t.Fatal(err)
	}
	defer ts.Close()
	if err := ts.Control(func(fd int) error {
		return c.Send(control.Message{Type: control.TypeJoin, Instance: bUpper, ChainID: 2}, fd)
	}); err != nil {
		t.Fatal(err)
	}
	j, _, err := c.Expect(control.TypeJoined)
	if err != nil {
		t.Fatal(err)
	}
	if j.Instance != w.Instance {
		t.Fatalf("joined as %d, welcomed as %d", j.Instance, w.Instance)
	}
	if n := a.InstanceCount("rogue"); n != 1 {
		t.Fatalf("%d alpha/rogue instances, want 1", n)
	}
	// Re-registering on the joined connection, as B's function: the
	// gateway ignores anything after Joined (logs it); no welcome, no fd,
	// and the instance stays alpha's.
	c.Send(control.Message{Type: control.TypeHello, Chain: "bravo", Function: "upper", Instance: bUpper, ChainID: 2})
	answered := make(chan string, 1)
	go func() {
		m, fds, err := c.Recv()
		for _, fd := range fds {
			unix.Close(fd)
		}
		if err == nil {
			answered <- fmt.Sprintf("%+v with %d fds", m, len(fds))
		}
		close(answered)
	}()
	select {
	case m, ok := <-answered:
		if ok {
			t.Fatalf("second hello on a joined connection answered: %s", m)
		}
	case <-time.After(300 * time.Millisecond):
	}
	if n := b.InstanceCount("upper"); n != 1 {
		t.Fatalf("%d bravo/upper instances after the re-registration, want 1", n)
	}
	if st := pinnedState(t, pinDir, []uint32{w.Instance}); st[w.Instance][1] != uint64(a.ID()) {
		t.Fatalf("the rogue's instance %d is in chain %d after re-registering, want %d", w.Instance, st[w.Instance][1], a.ID())
	}
	c.Close()
	<-answered
	waitFor(t, "the closed rogue instance is removed", func() bool { return a.InstanceCount("rogue") == 0 })

	// (b) and (c) from a proper SDK instance of alpha/rogue.
	rogue := serve(t, sock, "alpha", "rogue", function.HandlerFunc(func(m *function.Message) error {
		t.Errorf("rogue handler called for request %d", m.RequestID())
		return nil
	}))
	dropsR0, _ := dp.Drops()
	type attack struct {
		name   string
		d      descriptor.Descriptor
		reason bpf.DropReason
	}
	attacks := []attack{
		{"to B's instance as A", descriptor.Descriptor{Next: bUpper, Chain: 1, Slot: 0, Len: 3}, bpf.DropNextChain},
		{"to B's instance as B", descriptor.Descriptor{Next: bUpper, Chain: 2, Slot: 0, Len: 3}, bpf.DropSenderChain},
		{"forged B result to the gateway", descriptor.Descriptor{Next: 0, Chain: 2, Slot: 1, Len: 3}, bpf.DropSenderChain},
		{"slot past A's pool", descriptor.Descriptor{Next: aUpper, Chain: 1, Slot: 64, Len: 1}, bpf.DropPoolRange},
		{"len past A's slot", descriptor.Descriptor{Next: aUpper, Chain: 1, Slot: 0, Len: 4097}, bpf.DropPoolRange},
		{"huge slot and len", descriptor.Descriptor{Next: aUpper, Chain: 1, Slot: 0xFFFFFFFF, Len: 0xFFFFFFFF}, bpf.DropPoolRange},
		{"unregistered chain", descriptor.Descriptor{Next: aUpper, Chain: 7, Slot: 0, Len: 1}, bpf.DropSenderChain},
	}
	want := map[bpf.DropReason]uint64{}
	for _, at := range attacks {
		if err := rogue.SendRaw(at.d); err != nil {
			t.Fatalf("%s: send: %v", at.name, err)
		}
		want[at.reason]++
		waitFor(t, at.name+" counted as "+at.reason.String(), func() bool {
			d, _ := dp.Drops()
			return d[at.reason]-dropsR0[at.reason] == want[at.reason]
		})
	}
	// A flood at B while it serves.
	const flood = 2000
	for i := 0; i < flood; i++ {
		d := descriptor.Descriptor{Next: bIDs[i%len(bIDs)], Chain: uint16(1 + i%2), Slot: uint32(i % 64), Len: 16}
		if err := rogue.SendRaw(d); err != nil {
			t.Fatalf("flood %d: %v", i, err)
		}
		if d.Chain == 1 {
			want[bpf.DropNextChain]++
		} else {
			want[bpf.DropSenderChain]++
		}
	}
	waitFor(t, "flood counted", func() bool {
		d, _ := dp.Drops()
		return d[bpf.DropNextChain]-dropsR0[bpf.DropNextChain] == want[bpf.DropNextChain] &&
			d[bpf.DropSenderChain]-dropsR0[bpf.DropSenderChain] == want[bpf.DropSenderChain]
	})
	// A result for an A slot the gateway never handed out passes the kernel
	// (right chain, in range) and is refused by the gateway.
	inv0 := a.Invalid.Load()
	if err := rogue.SendRaw(descriptor.Descriptor{Next: 0, Chain: 1, Slot: 5, Len: 3}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "gateway refuses the forged A result", func() bool { return a.Invalid.Load() == inv0+1 })

	// Let B's traffic run a little longer, then stop it.
	n0 := ok.Load()
	waitFor(t, "more traffic on B", func() bool { return ok.Load() > n0+20 })
	stop()
	wg.Wait()

	drops1, err := dp.Drops()
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range bpf.DropReasons() {
		if got := drops1[r] - drops0[r]; got != want[r] {
			t.Errorf("drop counter %s moved by %d, want %d", r, got, want[r])
		}
	}
	t.Logf("B served %d requests during the attack, %d bad; drops %v; Verify refusals %d; A invalid %d",
		ok.Load(), bad.Load(), want, al.refused.Load(), a.Invalid.Load())
	if bad.Load() != 0 {
		t.Fatalf("B answered %d requests wrongly during the attack; first: %v", bad.Load(), firstBad.Load())
	}
	if b.Invalid.Load() != 0 {
		t.Fatalf("the gateway saw %d invalid descriptors on B", b.Invalid.Load())
	}
	waitFor(t, "B's pool whole", func() bool { return b.Pool().FreeCount() == bFree })
	if got := pinnedState(t, pinDir, bIDs); fmt.Sprint(got) != fmt.Sprint(bPinned) {
		t.Fatalf("B's kernel state changed: %v, was %v", got, bPinned)
	}
	if got := append(instancesOf(t, b, "upper"), instancesOf(t, b, "reverse")...); fmt.Sprint(got) != fmt.Sprint(bIDs) {
		t.Fatalf("B's instances are %v, were %v", got, bIDs)
	}
	if rogue.Stats.Handled.Load() != 0 {
		t.Fatal("the rogue was handed requests")
	}
	// A still serves too.
	resp, err := http.Post(aSrv.URL, "text/plain", strings.NewReader("abc"))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(got) != "CBA" {
		t.Fatalf("A after the attack: %d %q", resp.StatusCode, got)
	}
}
