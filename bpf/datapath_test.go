package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// bpffsRoot returns a directory on a bpf filesystem for the test's pins:
// /sys/fs/bpf if it is bpffs, else a private bpffs mounted on a temp dir
// (unmounted at cleanup). Skips if not root or bpffs cannot be had.
func bpffsRoot(t testing.TB) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("bpf tests need root (CAP_BPF, CAP_NET_ADMIN, CAP_SYS_ADMIN): skipping")
	}
	var st unix.Statfs_t
	if err := unix.Statfs("/sys/fs/bpf", &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return "/sys/fs/bpf"
	}
	dir := t.TempDir()
	if err := unix.Mount("bpf", dir, "bpf", 0, "mode=0700"); err != nil {
		t.Skipf("bpffs is not mounted on /sys/fs/bpf and mounting one on %s failed (%v): skipping", dir, err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, 0); err != nil {
			t.Errorf("unmount test bpffs %s: %v", dir, err)
		}
	})
	return dir
}

func pinDir(t testing.TB) string {
	t.Helper()
	root := bpffsRoot(t)
	dir, err := os.MkdirTemp(root, "spright-test-")
	if err != nil {
		t.Fatal(err)
	}
	// Load must create the leaf itself.
	dir = filepath.Join(dir, "spright")
	t.Cleanup(func() { os.RemoveAll(filepath.Dir(dir)) })
	return dir
}

// member is one registered socket: conn is the instance's own end (in
// sock_hash), peer the other end of the loopback TCP connection.
type member struct {
	conn, peer *net.TCPConn
}

func tcpPair(t *testing.T) member {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	p, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	m := member{conn: c.(*net.TCPConn), peer: p.(*net.TCPConn)}
	t.Cleanup(func() { m.conn.Close(); m.peer.Close() })
	return m
}

func withFD(t *testing.T, c *net.TCPConn, f func(fd int) error) {
	t.Helper()
	rc, err := c.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var ferr error
	if err := rc.Control(func(fd uintptr) { ferr = f(int(fd)) }); err != nil {
		t.Fatal(err)
	}
	if ferr != nil {
		t.Fatal(ferr)
	}
}

func register(t *testing.T, d *Datapath, instance uint32, chain uint16) member {
	t.Helper()
	m := tcpPair(t)
	withFD(t, m.conn, func(fd int) error { return d.AddSocket(instance, chain, fd) })
	return m
}

type desc struct {
	next        uint32
	chain, flag uint16
	slot, len   uint32
}

func (d desc) bytes() []byte {
	b := make([]byte, 16)
	binary.LittleEndian.PutUint32(b[0:], d.next)
	binary.LittleEndian.PutUint16(b[4:], d.chain)
	binary.LittleEndian.PutUint16(b[6:], d.flag)
	binary.LittleEndian.PutUint32(b[8:], d.slot)
	binary.LittleEndian.PutUint32(b[12:], d.len)
	return b
}

// send writes d from `from` and expects it to arrive, byte for byte, on the
// receiver's own socket.
func send(t *testing.T, from, to member, d desc) {
	t.Helper()
	if n, err := from.conn.Write(d.bytes()); err != nil || n != 16 {
		t.Fatalf("send %+v: wrote %d, %v", d, n, err)
	}
	got := make([]byte, 16)
	to.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := ioReadFull(to.conn, got); err != nil {
		t.Fatalf("receive %+v: %v", d, err)
	}
	if string(got) != string(d.bytes()) {
		t.Fatalf("receive %+v: got %x", d, got)
	}
}

func ioReadFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

// nothingArrives checks that no byte becomes readable on any of cs for a
// short while (all read concurrently).
func nothingArrives(t *testing.T, what string, cs ...*net.TCPConn) {
	t.Helper()
	errs := make(chan error, len(cs))
	for _, c := range cs {
		go func() {
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			b := make([]byte, 64)
			n, err := c.Read(b)
			if n > 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
				errs <- fmt.Errorf("unexpected read on %s: %d bytes %x, err %v", c.LocalAddr(), n, b[:n], err)
				return
			}
			errs <- nil
		}()
	}
	for range cs {
		if err := <-errs; err != nil {
			t.Errorf("%s: %v", what, err)
		}
	}
}

func drops(t *testing.T, d *Datapath) map[DropReason]uint64 {
	t.Helper()
	m, err := d.Drops()
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// expectNACK sends d from `from` and expects it back on from's own socket,
// marked as rejected for reason.
func expectNACK(t *testing.T, from member, d desc, reason DropReason) {
	t.Helper()
	if n, err := from.conn.Write(d.bytes()); err != nil || n != 16 {
		t.Fatalf("write %+v: n=%d err=%v, want 16 bytes written", d, n, err)
	}
	nack := d
	nack.flag = d.flag&0x0fff | FlagRejected | uint16(reason)<<12
	got := make([]byte, 16)
	from.conn.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := ioReadFull(from.conn, got); err != nil {
		t.Fatalf("no NACK for %+v: %v", d, err)
	}
	if string(got) != string(nack.bytes()) {
		t.Errorf("NACK %x, want %x", got, nack.bytes())
	}
	if r, ok := Rejected(binary.LittleEndian.Uint16(got[6:])); !ok || r != reason {
		t.Errorf("Rejected = %v %v, want %v", r, ok, reason)
	}
}

// checkDrops checks that exactly the counter of reason (none if -1) went up
// by one since pre.
func checkDrops(t *testing.T, d *Datapath, pre map[DropReason]uint64, reason DropReason) {
	t.Helper()
	post := drops(t, d)
	for _, r := range DropReasons() {
		want := pre[r]
		if r == reason {
			want++
		}
		if post[r] != want {
			t.Errorf("drops[%s] = %d, want %d", r, post[r], want)
		}
	}
}

func metrics(t *testing.T, d *Datapath, instance uint32) InstanceMetrics {
	t.Helper()
	m, err := d.Metrics(instance)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

const (
	chainA   = 7
	chainB   = 8
	slots    = 64
	slotSize = 4096
)

func TestDatapath(t *testing.T) {
	dir := pinDir(t)
	d, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if d != nil {
			d.Unpin()
			d.Close()
		}
	}()

	for _, c := range []uint16{chainA, chainB} {
		if err := d.SetChain(c, slots, slotSize); err != nil {
			t.Fatal(err)
		}
	}
	if err := d.SetChain(AnyChain, 1, 1); err == nil {
		t.Error("SetChain(AnyChain) succeeded, want error")
	}
	gw := register(t, d, GatewayInstance, AnyChain)
	f1 := register(t, d, 1, chainA)
	f2 := register(t, d, 2, chainA)
	f3 := register(t, d, 3, chainB)
	all := []*net.TCPConn{gw.conn, gw.peer, f1.conn, f1.peer, f2.conn, f2.peer, f3.conn, f3.peer}

	// Registering the same socket again is idempotent.
	withFD(t, f1.conn, func(fd int) error { return d.AddSocket(1, chainA, fd) })

	t.Run("chain", func(t *testing.T) {
		send(t, gw, f1, desc{next: 1, chain: chainA, slot: 0, len: 100})

		// A redirected message must wake a reader blocked in epoll.
		got := make(chan error, 1)
		go func() {
			b := make([]byte, 16)
			f2.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err := ioReadFull(f2.conn, b)
			if err == nil && string(b) != string(desc{next: 2, chain: chainA, slot: 1, len: 4096}.bytes()) {
				err = errors.New("wrong bytes")
			}
			got <- err
		}()
		time.Sleep(100 * time.Millisecond) // let the reader park
		if _, err := f1.conn.Write(desc{next: 2, chain: chainA, slot: 1, len: 4096}.bytes()); err != nil {
			t.Fatal(err)
		}
		if err := <-got; err != nil {
			t.Fatalf("blocked reader of instance 2: %v", err)
		}

		send(t, f2, gw, desc{next: GatewayInstance, chain: chainA, flag: 2, slot: 1, len: 5})
		nothingArrives(t, "after chain", all...)

		m0, m1, m2 := metrics(t, d, 0), metrics(t, d, 1), metrics(t, d, 2)
		if m0.Sent != 1 || m0.RequestsIn != 0 || m0.ResponsesOut != 0 || m0.Inflight != 0 {
			t.Errorf("gateway metrics %+v", m0)
		}
		for i, m := range []InstanceMetrics{m1, m2} {
			if m.Sent != 1 || m.RequestsIn != 1 || m.ResponsesOut != 1 || m.Inflight != 0 {
				t.Errorf("instance %d metrics %+v", i+1, m)
			}
			if m.BusyNs == 0 || m.LastNs == 0 {
				t.Errorf("instance %d: no busy time: %+v", i+1, m)
			}
		}
		// Instance 1 held the request from gw's send until its own send,
		// which included at least the 100 ms sleep.
		if m1.BusyNs < uint64(100*time.Millisecond) {
			t.Errorf("instance 1 busy %v, want >= 100ms", time.Duration(m1.BusyNs))
		}
		now, err := MonotonicNs()
		if err != nil {
			t.Fatal(err)
		}
		if m1.LastNs > now || m1.BusyNsAt(now) != m1.BusyNs {
			t.Errorf("instance 1: LastNs %d (now %d), BusyNsAt %d", m1.LastNs, now, m1.BusyNsAt(now))
		}
		all, err := d.AllMetrics()
		if err != nil {
			t.Fatal(err)
		}
		if len(all) != 4 || all[1] != m1 || all[2] != m2 {
			t.Errorf("AllMetrics = %+v", all)
		}
		// The raw map decodes into InstanceMetrics too.
		var raw InstanceMetrics
		if err := d.MetricsMap().LookupWithFlags(uint32(1), &raw, ebpf.LookupLock); err != nil || raw != m1 {
			t.Errorf("MetricsMap lookup: %+v, %v", raw, err)
		}
	})

	// A request in flight at instance 3 shows up as inflight 1 and grows
	// BusyNsAt.
	t.Run("inflight", func(t *testing.T) {
		send(t, gw, f3, desc{next: 3, chain: chainB, slot: 2, len: 1})
		m := metrics(t, d, 3)
		if m.Inflight != 1 || m.RequestsIn != 1 {
			t.Fatalf("instance 3 metrics %+v", m)
		}
		now, _ := MonotonicNs()
		if m.BusyNsAt(now+1000) != m.BusyNs+(now+1000-m.LastNs) {
			t.Errorf("BusyNsAt does not extend the integral: %+v", m)
		}
		send(t, f3, gw, desc{next: 0, chain: chainB, slot: 2, len: 1})
		if m := metrics(t, d, 3); m.Inflight != 0 || m.ResponsesOut != 1 {
			t.Fatalf("instance 3 metrics %+v", m)
		}
	})

	// Instance 4 is registered in chain A, then its socket is closed: the
	// kernel takes it out of sock_hash, its chain membership stays.
	f4 := register(t, d, 4, chainA)
	f4.conn.Close()

	before := map[uint32]InstanceMetrics{}
	for i := uint32(0); i <= 3; i++ {
		before[i] = metrics(t, d, i)
	}

	// Well-formed descriptors of registered senders that fail a check come
	// back to the sender, marked; the write itself succeeds.
	for _, tc := range []struct {
		name   string
		from   member
		d      desc
		reason DropReason
	}{
		{"sender in other chain", f1, desc{next: 3, chain: chainB}, DropSenderChain},
		{"next in other chain", f1, desc{next: 3, chain: chainA, flag: 0xf001}, DropNextChain},
		{"next not registered", f1, desc{next: 42, chain: chainA}, DropNextChain},
		{"slot out of range", f1, desc{next: 2, chain: chainA, slot: slots}, DropPoolRange},
		{"len > slot size", f1, desc{next: 2, chain: chainA, slot: 1, len: slotSize + 1}, DropPoolRange},
		{"chain without pool", gw, desc{next: 0, chain: 9, flag: 0x0fff}, DropPoolRange},
		{"next socket closed", f1, desc{next: 4, chain: chainA, flag: 2}, DropRedirect},
		{"gateway to closed socket", gw, desc{next: 4, chain: chainA, slot: 7, len: 7}, DropRedirect},
	} {
		t.Run("reject/"+tc.name, func(t *testing.T) {
			pre := drops(t, d)
			expectNACK(t, tc.from, tc.d, tc.reason)
			nothingArrives(t, tc.name, all...)
			checkDrops(t, d, pre, tc.reason)
		})
	}

	// Everything else is dropped: the write fails with EACCES, and the
	// socket stays refused until it is registered again.
	stranger := tcpPair(t) // in sock_hash, but without a sender identity
	withFD(t, stranger.conn, func(fd int) error {
		return d.objs.SockHash.Update(uint32(99), uint64(fd), ebpf.UpdateAny)
	})
	all = append(all, stranger.conn, stranger.peer)
	// SK_DROP makes a socket useless, so each case gets a fresh sender.
	senders := make([]member, 3)
	for i := range senders {
		senders[i] = register(t, d, uint32(10+i), chainA)
		all = append(all, senders[i].conn, senders[i].peer)
	}
	last := senders[2]
	for i, tc := range []struct {
		name   string
		msg    []byte
		reason DropReason
	}{
		{"short message", desc{next: 1, chain: chainA}.bytes()[:8], DropShort},
		{"two descriptors in one write", append(desc{next: 1, chain: chainA}.bytes(), desc{next: 1, chain: chainA}.bytes()...), DropShort},
		{"17 bytes", append(desc{next: 1, chain: chainA}.bytes(), 0), DropShort},
		{"unregistered sender", desc{next: 1, chain: chainA}.bytes(), DropUnknownSender},
	} {
		t.Run("drop/"+tc.name, func(t *testing.T) {
			from := stranger
			if tc.reason != DropUnknownSender {
				from = senders[i]
			}
			pre := drops(t, d)
			n, err := from.conn.Write(tc.msg)
			if n != 0 || !errors.Is(err, syscall.EACCES) {
				t.Errorf("write: n=%d err=%v, want EACCES", n, err)
			}
			nothingArrives(t, tc.name, all...)
			checkDrops(t, d, pre, tc.reason)
		})
	}

	for i, m := range before {
		if got := metrics(t, d, i); got != m {
			t.Errorf("drops changed metrics of %d: %+v -> %+v", i, m, got)
		}
	}

	t.Run("dropped socket stays refused until re-registered", func(t *testing.T) {
		pre := drops(t, d)
		good := desc{next: 0, chain: chainA}
		if _, err := last.conn.Write(good.bytes()); !errors.Is(err, syscall.EACCES) {
			t.Errorf("write after SK_DROP: %v, want EACCES", err)
		}
		nothingArrives(t, "after SK_DROP", all...)
		checkDrops(t, d, pre, -1) // the program did not even run
		if err := d.RemoveInstance(12); err != nil {
			t.Fatal(err)
		}
		withFD(t, last.conn, func(fd int) error { return d.AddSocket(12, chainA, fd) })
		send(t, last, gw, good)
	})

	// The sender's socket still works after a rejection.
	send(t, f1, f2, desc{next: 2, chain: chainA, slot: 3, len: 3})
	send(t, f2, gw, desc{next: 0, chain: chainA, slot: 3, len: 3})

	// The data path outlives its loader, and a new Load reuses the pins.
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := d.Metrics(1); !errors.Is(err, ErrClosed) {
		t.Errorf("Metrics after Close: %v", err)
	}
	send(t, gw, f1, desc{next: 1, chain: chainA, slot: 4, len: 4})

	d, err = Load(dir)
	if err != nil {
		t.Fatalf("reload: %v", err)
	}
	send(t, f1, f2, desc{next: 2, chain: chainA, slot: 4, len: 4})
	send(t, f2, gw, desc{next: 0, chain: chainA, slot: 4, len: 4})
	if m := metrics(t, d, 0); m.Sent != 3 {
		t.Errorf("gateway metrics after reload %+v, want sent 3 (kept across Load)", m)
	}
	// In: gw→1 twice. Out: 1→2 three times (one without a request: the
	// in-flight count stays clamped at 0).
	if m := metrics(t, d, 1); m.RequestsIn != 2 || m.ResponsesOut != 3 || m.Inflight != 0 {
		t.Errorf("instance 1 metrics after reload %+v", m)
	}
	// A socket added after the reload runs the new program.
	f5 := register(t, d, 5, chainA)
	send(t, gw, f5, desc{next: 5, chain: chainA, slot: 5, len: 5})
	send(t, f5, gw, desc{next: 0, chain: chainA, slot: 5, len: 5})

	t.Run("remove", func(t *testing.T) {
		if err := d.RemoveInstance(2); err != nil {
			t.Fatal(err)
		}
		if err := d.RemoveInstance(2); err != nil {
			t.Fatalf("second RemoveInstance: %v", err)
		}
		if _, err := d.Metrics(2); !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Errorf("Metrics of removed instance: %v", err)
		}
		pre := drops(t, d)
		expectNACK(t, f1, desc{next: 2, chain: chainA}, DropNextChain)
		checkDrops(t, d, pre, DropNextChain)
		// Out of sock_hash, the old socket is a plain TCP socket again.
		if _, err := f2.conn.Write([]byte("plain")); err != nil {
			t.Fatal(err)
		}
		b := make([]byte, 5)
		f2.peer.SetReadDeadline(time.Now().Add(2 * time.Second))
		if _, err := ioReadFull(f2.peer, b); err != nil || string(b) != "plain" {
			t.Errorf("plain TCP after removal: %q %v", b, err)
		}
		if err := d.DeleteChain(chainB); err != nil {
			t.Fatal(err)
		}
		if err := d.DeleteChain(chainB); err != nil {
			t.Fatal(err)
		}
		pre = drops(t, d)
		expectNACK(t, gw, desc{next: 3, chain: chainB}, DropPoolRange)
		checkDrops(t, d, pre, DropPoolRange)
	})

	if err := d.Unpin(); err != nil {
		t.Fatal(err)
	}
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	d = nil
	if _, err := os.Stat(dir); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("pin dir after Unpin: %v", err)
	}
}

func TestLoadRejectsNonBPFFS(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root")
	}
	dir := filepath.Join(t.TempDir(), "spright")
	_, err := Load(dir)
	if err == nil {
		t.Fatal("Load on a non-bpf filesystem succeeded")
	}
	if _, serr := os.Stat(dir); !errors.Is(serr, os.ErrNotExist) {
		t.Errorf("Load created %s despite failing: %v", dir, serr)
	}
	t.Log(err)
}

func TestUnpinKeepsForeignFiles(t *testing.T) {
	dir := pinDir(t)
	d, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if _, err := os.Stat(filepath.Join(dir, "sock_hash")); err != nil {
		t.Fatalf("sock_hash not pinned: %v", err)
	}
	if err := os.Mkdir(filepath.Join(dir, "other"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := d.Unpin(); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 || ents[0].Name() != "other" {
		t.Errorf("pin dir after Unpin: %v", ents)
	}
}

func TestDropReasonString(t *testing.T) {
	seen := map[string]bool{}
	for _, r := range DropReasons() {
		s := r.String()
		if seen[s] {
			t.Errorf("duplicate name %q", s)
		}
		seen[s] = true
	}
	if len(seen) != numDropReasons {
		t.Errorf("%d names", len(seen))
	}
	if got := DropReason(9).String(); got != "drop-reason-9" {
		t.Errorf("unknown reason: %q", got)
	}
}

func TestDropsMapSize(t *testing.T) {
	spec, err := loadSpright()
	if err != nil {
		t.Fatal(err)
	}
	if got := spec.Maps[sprightMapDrops].MaxEntries; got != dropSlots {
		t.Errorf("drops max_entries %d, want %d", got, dropSlots)
	}
	if got := spec.Maps[sprightMapInstanceMetrics].ValueSize; got != MetricsValueSize {
		t.Errorf("metrics value size %d, want %d", got, MetricsValueSize)
	}
}
