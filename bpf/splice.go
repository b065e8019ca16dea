package bpf

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// Sides of a splice, as recorded in splice_info.side (spright.c).
const (
	spliceSideClient   uint8 = 0
	spliceSideUpstream uint8 = 1
)

// attachSplice attaches the splice programs to splice_map, replacing the
// programs of an earlier Load. Sockets already in splice_map keep the
// programs they were added under (all versions share the maps).
func (d *Datapath) attachSplice() error {
	for _, a := range []struct {
		prog   *ebpf.Program
		attach ebpf.AttachType
		what   string
	}{
		{d.objs.SprightSpliceVerdict, ebpf.AttachSkSKBStreamVerdict, "stream verdict"},
		{d.objs.SprightSpliceMsg, ebpf.AttachSkMsgVerdict, "sk_msg"},
	} {
		err := link.RawAttachProgram(link.RawAttachProgramOptions{
			Target:  d.objs.SpliceMap.FD(),
			Program: a.prog,
			Attach:  a.attach,
		})
		if err != nil {
			return fmt.Errorf("bpf: attach splice %s program to splice_map: %w", a.what, err)
		}
	}
	return nil
}

// socketCookie returns the kernel's socket cookie of fd: unique per socket
// for the life of the kernel (never reused), the key of splice_map and
// splice_peer. Reading it needs no privilege.
func socketCookie(fd int) (uint64, error) {
	if fd < 0 {
		return 0, fmt.Errorf("bad fd %d", fd)
	}
	c, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("socket cookie of fd %d: %w", fd, err)
	}
	return c, nil
}

// AddInstanceMetrics creates a zeroed metrics entry for an instance that has
// no data-path socket of its own yet (a plain pod registering). An existing
// entry is left as it is.
func (d *Datapath) AddInstanceMetrics(instance uint32) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	return d.addInstanceMetrics(instance)
}

func (d *Datapath) addInstanceMetrics(instance uint32) error {
	var zero sprightMetrics
	err := d.objs.InstanceMetrics.Update(instance, &zero, ebpf.UpdateNoExist)
	if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return fmt.Errorf("bpf: create metrics of instance %d: %w", instance, err)
	}
	return nil
}

// AddSplice joins two established TCP sockets of pod instance `instance` —
// clientFD, the client's connection accepted by EPROXY (side A), and
// upstreamFD, EPROXY's connection to the user container (side B) — so that
// the kernel forwards between them: bytes arriving on A leave through B,
// bytes arriving on B leave through A, without passing through any process. Requests written to B and responses written to A (forwarded or
// written by the caller) are counted in instance's metrics, which are
// created if absent. See the package documentation ("Splice") for the
// counting rules, what happens to bytes queued before the call, and how to
// detect the end of a spliced connection.
//
// Order of use (package doc, "Splice: order of use"): read the first
// request from A, exactly; AddSplice; NewForwarding(B, A); write that
// request to B (it is counted by the sk_msg program like forwarded ones);
// NewForwarding(A, B); KickSplice(A), so that bytes the client sent after
// the first request, if any, are forwarded. A must have no unread bytes when
// AddSplice is called (SIOCINQ 0): a partly read segment would be forwarded
// whole, repeating the bytes already read.
//
// The caller keeps ownership of the fds; the kernel holds its own
// references. A socket leaves splice_map by itself when it is closed; use
// RemoveSplice (or PruneSplices) to drop the peer records too. Adding the
// same pair again only refreshes the records.
func (d *Datapath) AddSplice(instance uint32, clientFD, upstreamFD int) error {
	ca, err := socketCookie(clientFD)
	if err != nil {
		return fmt.Errorf("bpf: add splice of instance %d: client side: %w", instance, err)
	}
	cb, err := socketCookie(upstreamFD)
	if err != nil {
		return fmt.Errorf("bpf: add splice of instance %d: upstream side: %w", instance, err)
	}
	if ca == cb {
		return fmt.Errorf("bpf: add splice of instance %d: client and upstream are the same socket", instance)
	}

	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	// Shared with other AddSplice calls, exclusive with PruneSplices: a
	// splice is recorded in splice_peer before its sockets are in
	// splice_map, and PruneSplices must not take it for a dead one.
	d.spliceMu.RLock()
	defer d.spliceMu.RUnlock()

	if err := d.addInstanceMetrics(instance); err != nil {
		return err
	}

	sides := []struct {
		fd           int
		cookie, peer uint64
		side         uint8
		what         string
	}{
		// Upstream first: nothing arrives on B before the first request
		// is written, while client bytes arriving on A need B in place.
		{upstreamFD, cb, ca, spliceSideUpstream, "upstream"},
		{clientFD, ca, cb, spliceSideClient, "client"},
	}
	undo := func() { d.removeSplice(clientFD, upstreamFD) }

	// The records first, so that the programs never see a splice_map member
	// without them (the verdict would leave its bytes to userspace).
	records := func() error {
		for _, s := range sides {
			info := sprightSpliceInfo{PeerCookie: s.peer, Conn: ca, Instance: instance, Side: s.side}
			// Adding a pair again keeps its outstanding requests.
			var old sprightSpliceInfo
			if err := d.objs.SplicePeer.Lookup(s.cookie, &old); err == nil && old.Conn == ca {
				info.Outstanding = old.Outstanding
			}
			if err := d.objs.SplicePeer.Update(s.cookie, &info, ebpf.UpdateAny); err != nil {
				return fmt.Errorf("record %s side: %w", s.what, err)
			}
			info.Outstanding = 0
			if err := d.objs.SpliceSock.Update(int32(s.fd), &info, ebpf.UpdateAny); err != nil {
				return fmt.Errorf("%s side storage (fd %d): %w", s.what, s.fd, err)
			}
		}
		return nil
	}
	err = records()
	if errors.Is(err, unix.E2BIG) {
		// splice_peer is full: records of sockets closed without
		// RemoveSplice take the room. Prune under the exclusive lock (it
		// waits for other AddSplice calls to finish; it also drops what we
		// just wrote, our sockets not being in splice_map yet), then write
		// the records again.
		d.spliceMu.RUnlock()
		d.spliceMu.Lock()
		_, err = d.pruneSplices()
		d.spliceMu.Unlock()
		d.spliceMu.RLock()
		if err == nil {
			err = records()
		}
	}
	if err != nil {
		undo()
		return fmt.Errorf("bpf: add splice of instance %d: %w", instance, err)
	}
	for _, s := range sides {
		// A socket can be in a sockhash with verdict programs only once
		// (EBUSY): skip it if it is already there.
		var cur uint64
		if err := d.objs.SpliceMap.Lookup(s.cookie, &cur); err == nil && cur == s.cookie {
			continue
		}
		if err := d.objs.SpliceMap.Update(s.cookie, uint64(s.fd), ebpf.UpdateAny); err != nil {
			undo()
			return fmt.Errorf("bpf: add splice of instance %d: put %s socket (fd %d) into splice_map (must be an established TCP socket in no other sockmap): %w", instance, s.what, s.fd, err)
		}
	}
	return nil
}

// RemoveSplice takes both sockets out of splice_map and drops their splice
// records; they are plain TCP sockets again. Requests of the connection
// that were counted in but never answered leave the instance's Inflight
// (see the package doc, "Splice: cleanup and bounds"). Entries that do not
// exist are not an error, and a negative fd skips that side (e.g. already
// closed).
//
// Bytes the kernel has taken off one socket but not yet written to the
// other are discarded when that other socket leaves splice_map, so remove
// a splice only when the connection is over (both sides at EOF) or being
// abandoned.
func (d *Datapath) RemoveSplice(clientFD, upstreamFD int) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	return d.removeSplice(clientFD, upstreamFD)
}

func (d *Datapath) removeSplice(clientFD, upstreamFD int) error {
	var (
		errs    []error
		fds     []int
		cookies []uint64
	)
	ignore := func(err error) bool {
		return err == nil || errors.Is(err, ebpf.ErrKeyNotExist)
	}
	for _, fd := range []int{clientFD, upstreamFD} {
		if fd < 0 {
			continue
		}
		cookie, err := socketCookie(fd)
		if err != nil {
			errs = append(errs, fmt.Errorf("bpf: remove splice: %w", err))
			continue
		}
		fds = append(fds, fd)
		cookies = append(cookies, cookie)
	}
	// Out of splice_map first: the programs stop counting, and bytes
	// arriving from then on stay in the socket's receive queue, readable by
	// its owner.
	for i, cookie := range cookies {
		if err := d.objs.SpliceMap.Delete(cookie); !ignore(err) {
			errs = append(errs, fmt.Errorf("bpf: remove splice: fd %d from splice_map: %w", fds[i], err))
		}
	}
	// Then settle the connection's unanswered requests.
	for _, cookie := range cookies {
		var info sprightSpliceInfo
		if err := d.objs.SplicePeer.Lookup(cookie, &info); err == nil {
			if _, err := d.endSplice(info.Conn); err != nil {
				errs = append(errs, err)
			}
			break
		}
	}
	for i, cookie := range cookies {
		if err := d.objs.SplicePeer.Delete(cookie); !ignore(err) {
			errs = append(errs, fmt.Errorf("bpf: remove splice: record of fd %d: %w", fds[i], err))
		}
		if err := d.objs.SpliceSock.Delete(int32(fds[i])); !ignore(err) {
			errs = append(errs, fmt.Errorf("bpf: remove splice: storage of fd %d: %w", fds[i], err))
		}
	}
	return errors.Join(errs...)
}

// endSplice runs spright_splice_end for connection conn: its outstanding
// requests leave their instance's in-flight count. It returns how many.
func (d *Datapath) endSplice(conn uint64) (uint32, error) {
	var in [16]byte
	binary.LittleEndian.PutUint64(in[:], conn) // the objects are built for bpfel only
	ret, err := d.objs.SprightSpliceEnd.Run(&ebpf.RunOptions{Data: in[:]})
	if err != nil {
		return 0, fmt.Errorf("bpf: end splice %#x: run spright_splice_end: %w", conn, err)
	}
	return ret, nil
}

// PruneSplices drops the splice records (splice_peer) of sockets that are no
// longer in splice_map — closed without RemoveSplice — and returns how many
// it dropped. Like RemoveSplice, it takes the unanswered requests of those
// connections out of their instances' Inflight. AddSplice calls it when
// splice_peer is full; an agent that cannot call RemoveSplice for every
// splice (EPROXY killed, say) should call it now and then, or Inflight stays
// too high until it does. Socket cookies are never reused, so a stale record
// is never mistaken for a new socket's.
func (d *Datapath) PruneSplices() (int, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return 0, ErrClosed
	}
	d.spliceMu.Lock()
	defer d.spliceMu.Unlock()
	return d.pruneSplices()
}

// pruneSplices does PruneSplices; the caller holds d.mu (read) and
// d.spliceMu (write).
func (d *Datapath) pruneSplices() (int, error) {
	var (
		cookie, cur uint64
		info        sprightSpliceInfo
		dead        []uint64
	)
	it := d.objs.SplicePeer.Iterate()
	for it.Next(&cookie, &info) {
		err := d.objs.SpliceMap.Lookup(cookie, &cur)
		switch {
		case errors.Is(err, ebpf.ErrKeyNotExist):
			dead = append(dead, cookie)
		case err != nil:
			return 0, fmt.Errorf("bpf: prune splices: look up %#x in splice_map: %w", cookie, err)
		}
	}
	if err := it.Err(); err != nil {
		return 0, fmt.Errorf("bpf: prune splices: iterate splice_peer: %w", err)
	}
	// Settle the connections first: the client-side record holds the
	// count, and the upstream side's record may be dead too.
	for _, c := range dead {
		var info sprightSpliceInfo
		if err := d.objs.SplicePeer.Lookup(c, &info); err == nil && info.Conn == c {
			if _, err := d.endSplice(c); err != nil {
				return 0, fmt.Errorf("bpf: prune splices: %w", err)
			}
		}
	}
	n := 0
	for _, c := range dead {
		err := d.objs.SplicePeer.Delete(c)
		if err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return n, fmt.Errorf("bpf: prune splices: drop record %#x: %w", c, err)
		}
		n++
	}
	return n, nil
}

// KickSplice makes the kernel run the splice verdict on bytes that were
// already in fd's receive queue when the socket was spliced (the verdict
// otherwise runs only when new bytes arrive, or when its owner calls read).
// It needs no privilege: EPROXY calls it on its own client socket after
// writing the first request to the upstream socket. It re-sets SO_RCVLOWAT
// to its current value, which makes TCP signal "data ready" if bytes are
// queued; the setting itself does not change.
func KickSplice(fd int) error {
	v, err := unix.GetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT)
	if err != nil {
		return fmt.Errorf("bpf: kick splice: read SO_RCVLOWAT of fd %d: %w", fd, err)
	}
	if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVLOWAT, v); err != nil {
		return fmt.Errorf("bpf: kick splice: set SO_RCVLOWAT of fd %d: %w", fd, err)
	}
	return nil
}

// Forwarding follows one direction of a splice — bytes arriving on `from`
// and written by the kernel out of `to` — with TCP's own byte counters
// (TCP_INFO bytes_received of from; bytes_acked plus SIOCOUTQ of to). It
// needs no privilege: EPROXY uses it on its own sockets to learn when it
// may close `to` without losing bytes.
//
// The kernel forwards asynchronously: a chunk taken off `from` waits in a
// backlog until `to` has room, and closing `to` (or RemoveSplice) discards
// what is still waiting there. So when one side reaches EOF, wait until the
// other direction has no bytes pending before closing (see the package doc,
// "End of a spliced connection").
type Forwarding struct {
	from, to int
	base     int64 // written(to) - received(from) while nothing was in flight
}

// NewForwarding starts following from → to. Call it while no byte of this
// direction is in flight: for upstream → client right after AddSplice (the
// upstream has not been asked anything yet); for client → upstream after
// writing the first request to the upstream and before KickSplice.
//
// The Forwarding names the sockets by fd number: both fds must stay open,
// on the same sockets, for as long as it is used. A number that was closed
// fails the reads (Wait returns at once, as if nothing could be flushed),
// and one reused by another connection reads that connection's counters.
func NewForwarding(fromFD, toFD int) (*Forwarding, error) {
	f := &Forwarding{from: fromFD, to: toFD}
	written, received, err := f.counters()
	if err != nil {
		return nil, err
	}
	f.base = written - received
	return f, nil
}

// counters reads written(to), then received(from): in this order an ACK or
// a forwarded chunk racing with the reads can only make Pending larger.
func (f *Forwarding) counters() (written, received int64, err error) {
	ti, err := unix.GetsockoptTCPInfo(f.to, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, 0, fmt.Errorf("bpf: forwarding: TCP_INFO of fd %d: %w", f.to, err)
	}
	if ti.State == uint8(tcpClose) {
		return 0, 0, fmt.Errorf("bpf: forwarding: fd %d is closed or reset: %w", f.to, unix.ENOTCONN)
	}
	outq, err := unix.IoctlGetInt(f.to, unix.SIOCOUTQ)
	if err != nil {
		return 0, 0, fmt.Errorf("bpf: forwarding: SIOCOUTQ of fd %d: %w", f.to, err)
	}
	fi, err := unix.GetsockoptTCPInfo(f.from, unix.IPPROTO_TCP, unix.TCP_INFO)
	if err != nil {
		return 0, 0, fmt.Errorf("bpf: forwarding: TCP_INFO of fd %d: %w", f.from, err)
	}
	received = int64(fi.Bytes_received)
	switch fi.State {
	case tcpCloseWait, tcpLastAck, tcpClosing, tcpTimeWait, tcpClose:
		// The peer's FIN takes a sequence number. A socket whose fd is
		// open reaches TCP_CLOSE after both FINs (LAST_ACK acked, or
		// FIN_WAIT2 then the peer's FIN: the kernel hands the TIME_WAIT
		// to a separate timewait socket) — e.g. EPROXY passed on the
		// client's half-close and then the upstream closed — or after a
		// reset. A reset connection has no FIN to take off, so at worst
		// its last byte is not waited for; without this, a closed `from`
		// stayed 1 byte "pending" for good and Wait ran to its timeout.
		received--
	}
	return int64(ti.Bytes_acked) + int64(outq), received, nil
}

// TCP states (include/net/tcp_states.h).
const (
	tcpTimeWait  = 6
	tcpClose     = 7
	tcpCloseWait = 8
	tcpLastAck   = 9
	tcpClosing   = 11
)

// Pending returns how many bytes that arrived on from have not been written
// into to's TCP send queue yet: still in from's receive queue or in the
// kernel's splice backlog. Bytes in to's send queue are not pending: a
// normal close (or shutdown) sends them before the FIN. The count is valid
// until `to` is shut down or closed (its FIN takes a sequence number too).
func (f *Forwarding) Pending() (int64, error) {
	written, received, err := f.counters()
	if err != nil {
		return 0, err
	}
	return received - (written - f.base), nil
}

// Wait returns once Pending is 0, polling with a backoff of up to 10 ms. It
// gives up with ctx's error, or with an error if `to` is closed or reset
// (then the pending bytes cannot be delivered anyway). A slow reader on the
// far side of `to` keeps bytes pending: bound ctx accordingly.
func (f *Forwarding) Wait(ctx context.Context) error {
	delay := 100 * time.Microsecond
	for {
		n, err := f.Pending()
		if err != nil {
			return err
		}
		if n <= 0 {
			return nil
		}
		t := time.NewTimer(delay)
		select {
		case <-ctx.Done():
			t.Stop()
			return fmt.Errorf("bpf: forwarding: %d bytes still pending: %w", n, ctx.Err())
		case <-t.C:
		}
		delay = min(2*delay, 10*time.Millisecond)
	}
}

// HangupWatcher tells when spliced sockets are hung up — the peer's FIN, a
// reset or an error — without being woken by the traffic the kernel
// forwards. A goroutine parked in net.Conn.Read on a spliced socket is not
// handed spliced bytes, but the kernel signals data ready on the socket
// after every chunk it forwards, and Go's netpoller (registered for
// EPOLLIN|EPOLLOUT|EPOLLET) wakes and reports EPOLLOUT: about two wake-ups
// per request (measured on 6.18). The watcher uses an epoll instance of its
// own that asks for EPOLLRDHUP only, so the kernel filters those wake-ups
// out; one goroutine, blocked in epoll_wait on its own OS thread, serves
// every socket added.
//
// To keep the process fully asleep, the sockets must also leave Go's
// netpoller: dup the fd with fcntl(F_DUPFD_CLOEXEC) inside
// SyscallConn().Control, close the TCPConn (that deregisters it), and give
// the raw dup to Add. (Not (*net.TCPConn).File nor os.NewFile: both register
// a non-blocking dup with the netpoller again.) The watcher does not own
// the fds: Remove an fd before closing it.
type HangupWatcher struct {
	epfd, wakefd int

	mu     sync.Mutex
	next   uint64
	byFD   map[int]uint64
	funcs  map[uint64]func()
	closed bool
	done   chan struct{}
}

// NewHangupWatcher starts a watcher. It needs no privilege.
func NewHangupWatcher() (*HangupWatcher, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("bpf: hangup watcher: epoll_create1: %w", err)
	}
	wakefd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err != nil {
		unix.Close(epfd)
		return nil, fmt.Errorf("bpf: hangup watcher: eventfd: %w", err)
	}
	ev := unix.EpollEvent{Events: unix.EPOLLIN} // token 0: Close
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wakefd, &ev); err != nil {
		unix.Close(wakefd)
		unix.Close(epfd)
		return nil, fmt.Errorf("bpf: hangup watcher: epoll_ctl: %w", err)
	}
	w := &HangupWatcher{epfd: epfd, wakefd: wakefd, next: 1, byFD: map[int]uint64{},
		funcs: map[uint64]func(){}, done: make(chan struct{})}
	go w.run()
	return w, nil
}

// Add watches fd (a connected TCP socket): f is called once, from the
// watcher's goroutine, when the peer has shut down its sending side or the
// connection failed. Data arriving on fd does not call f. Adding an fd that
// is watched already replaces its f.
func (w *HangupWatcher) Add(fd int, f func()) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return ErrClosed
	}
	tok := w.next
	w.next++
	// The token, not the fd, identifies the watch: fd numbers are reused.
	ev := unix.EpollEvent{Events: unix.EPOLLRDHUP | unix.EPOLLONESHOT, Fd: int32(uint32(tok)), Pad: int32(uint32(tok >> 32))}
	op := unix.EPOLL_CTL_ADD
	if old, ok := w.byFD[fd]; ok {
		op = unix.EPOLL_CTL_MOD
		delete(w.funcs, old)
	}
	if err := unix.EpollCtl(w.epfd, op, fd, &ev); err != nil {
		return fmt.Errorf("bpf: hangup watcher: watch fd %d: %w", fd, err)
	}
	w.byFD[fd] = tok
	w.funcs[tok] = f
	return nil
}

// Remove stops watching fd; f will not be called after Remove returns
// unless it is running already. Unknown fds are not an error. Call it
// before closing fd (also after f ran: the fd stays in the watcher's epoll
// set until then).
func (w *HangupWatcher) Remove(fd int) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	tok, ok := w.byFD[fd]
	if !ok {
		return nil
	}
	delete(w.byFD, fd)
	delete(w.funcs, tok)
	if w.closed {
		return nil
	}
	if err := unix.EpollCtl(w.epfd, unix.EPOLL_CTL_DEL, fd, nil); err != nil && !errors.Is(err, unix.ENOENT) && !errors.Is(err, unix.EBADF) {
		return fmt.Errorf("bpf: hangup watcher: unwatch fd %d: %w", fd, err)
	}
	return nil
}

// Close stops the watcher; no f is called after Close returns.
func (w *HangupWatcher) Close() error {
	w.mu.Lock()
	if w.closed {
		w.mu.Unlock()
		return nil
	}
	w.closed = true
	w.funcs = map[uint64]func(){}
	w.byFD = map[int]uint64{}
	w.mu.Unlock()
	var one [8]byte
	binary.NativeEndian.PutUint64(one[:], 1)
	unix.Write(w.wakefd, one[:])
	<-w.done
	unix.Close(w.wakefd)
	return unix.Close(w.epfd)
}

func (w *HangupWatcher) run() {
	defer close(w.done)
	events := make([]unix.EpollEvent, 64)
	for {
		n, err := unix.EpollWait(w.epfd, events, -1)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return
		}
		for _, ev := range events[:n] {
			tok := uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
			if tok == 0 {
				return // Close
			}
			// One shot: the fd stays in the epoll set, disarmed, until
			// Remove (or Add, which re-arms it).
			w.mu.Lock()
			f := w.funcs[tok]
			delete(w.funcs, tok)
			w.mu.Unlock()
			if f != nil {
				f()
			}
		}
	}
}

// AddCounted puts one socket of pod instance `instance` under the splice
// programs for counting only: no peer record, so the verdict leaves every
// byte to userspace (SK_PASS), while the sk_msg program counts what is sent
// on it — requests written on an upstream socket, final responses written
// on a client socket — exactly as on a spliced connection. EPROXY uses it
// for the connections it must proxy in userspace (probes followed by
// traffic on one keep-alive connection, chunked first requests, HTTP/1.0,
// revisions with a containerConcurrency breaker), so those requests are
// counted by eBPF too. Register a socket before any byte moves on it.
// Unanswered requests of a counted connection are not taken back out of
// Inflight when it ends (there is no connection record).
func (d *Datapath) AddCounted(instance uint32, fd int, upstream bool) error {
	cookie, err := socketCookie(fd)
	if err != nil {
		return fmt.Errorf("bpf: add counted socket of instance %d: %w", instance, err)
	}
	side := spliceSideClient
	if upstream {
		side = spliceSideUpstream
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	if err := d.addInstanceMetrics(instance); err != nil {
		return err
	}
	info := sprightSpliceInfo{Instance: instance, Side: side}
	if err := d.objs.SpliceSock.Update(int32(fd), &info, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bpf: add counted socket of instance %d: storage (fd %d): %w", instance, fd, err)
	}
	if err := d.objs.SpliceMap.Update(cookie, uint64(fd), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bpf: add counted socket of instance %d: put fd %d into splice_map (must be an established TCP socket in no other sockmap): %w", instance, fd, err)
	}
	return nil
}

// AddArrivalCounted is AddCounted for a client socket whose requests must
// be counted as they arrive rather than as they are written upstream:
// EPROXY's containerConcurrency breaker queues requests in userspace, and
// the autoscaler must see the queued ones (queue-proxy counts them on
// arrival too). The verdict counts request starts coming in; the sk_msg
// program counts the final responses going out. Register the socket before
// its first byte arrives.
func (d *Datapath) AddArrivalCounted(instance uint32, fd int) error {
	cookie, err := socketCookie(fd)
	if err != nil {
		return fmt.Errorf("bpf: add arrival-counted socket of instance %d: %w", instance, err)
	}
	d.mu.RLock()
	if !d.closed {
		err = d.objs.ArrivalCounted.Update(cookie, instance, ebpf.UpdateAny)
	}
	d.mu.RUnlock()
	if err != nil {
		return fmt.Errorf("bpf: add arrival-counted socket of instance %d: %w", instance, err)
	}
	return d.AddCounted(instance, fd, false)
}
