package bpf

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// The splice tests run a small HTTP/1.1 world on loopback: a client, an
// EPROXY-like proxy that splices, and an upstream (the user container).

// pattern is the body of request/response `seed`: lowercase letters only,
// so no segment of a body can look like a request or status line.
func pattern(seed, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte((seed*7+i)%26)
	}
	return b
}

// upstream is the user container: it answers keep-alive requests built by
// request() with "HTTP/1.1 200 OK" and the body the request asked for,
// checking every request body.
type upstream struct {
	t  testing.TB
	ln net.Listener
	// hold, if set, is called before each response is written.
	hold func()

	mu       sync.Mutex
	requests int
	errs     []error
	conns    int
	eofs     int // connections that ended with a clean EOF from the proxy
}

func newUpstream(t testing.TB) *upstream {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	u := &upstream{t: t, ln: ln}
	t.Cleanup(func() {
		ln.Close()
		u.mu.Lock()
		defer u.mu.Unlock()
		for _, err := range u.errs {
			t.Errorf("upstream: %v", err)
		}
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u.mu.Lock()
			u.conns++
			u.mu.Unlock()
			go u.serve(c)
		}
	}()
	return u
}

func (u *upstream) fail(err error) {
	u.mu.Lock()
	u.errs = append(u.errs, err)
	u.mu.Unlock()
}

func (u *upstream) serve(c net.Conn) {
	defer c.Close()
	br := bufio.NewReaderSize(c, 64<<10)
	for {
		req, err := http.ReadRequest(br)
		if err != nil {
			if errors.Is(err, io.EOF) {
				u.mu.Lock()
				u.eofs++
				u.mu.Unlock()
			} else if !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ECONNRESET) {
				u.fail(fmt.Errorf("read request: %w", err))
			}
			return
		}
		id, _ := strconv.Atoi(req.Header.Get("X-Id"))
		respLen, _ := strconv.Atoi(req.Header.Get("X-Resp-Len"))
		body, err := io.ReadAll(req.Body)
		if err != nil {
			u.fail(fmt.Errorf("request %d: read body: %w", id, err))
			return
		}
		if !bytes.Equal(body, pattern(id, int(req.ContentLength))) {
			u.fail(fmt.Errorf("request %d: body of %d bytes corrupt (want %d)", id, len(body), req.ContentLength))
			return
		}
		u.mu.Lock()
		u.requests++
		u.mu.Unlock()
		if u.hold != nil {
			u.hold()
		}
		closing := req.Header.Get("X-Close") != ""
		hdr := fmt.Sprintf("HTTP/1.1 200 OK\r\nContent-Length: %d\r\n", respLen)
		if closing {
			hdr += "Connection: close\r\n"
		}
		// Status line, headers and body in one write, as servers do.
		if _, err := c.Write(append([]byte(hdr+"\r\n"), pattern(id+1000000, respLen)...)); err != nil {
			u.fail(fmt.Errorf("request %d: write response: %w", id, err))
			return
		}
		if closing {
			return
		}
	}
}

func (u *upstream) stats() (requests, conns, eofs int) {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.requests, u.conns, u.eofs
}

// request is request `id` with a body of reqLen bytes, asking for respLen.
func request(id, reqLen, respLen int, extra string) []byte {
	h := fmt.Sprintf("POST /r/%d HTTP/1.1\r\nHost: upstream\r\nX-Id: %d\r\nX-Resp-Len: %d\r\nContent-Length: %d\r\n%s\r\n", id, id, respLen, reqLen, extra)
	return append([]byte(h), pattern(id, reqLen)...)
}

// client is a keep-alive HTTP/1.1 client on one raw connection.
type client struct {
	c  *net.TCPConn
	br *bufio.Reader
}

// dialClient connects to addr; mss > 0 sets TCP_MAXSEG first, so the
// connection carries segments of at most mss bytes.
func dialClient(t testing.TB, addr string, mss int) *client {
	t.Helper()
	dialer := net.Dialer{}
	if mss > 0 {
		dialer.Control = func(_, _ string, rc syscall.RawConn) error {
			var serr error
			err := rc.Control(func(fd uintptr) {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_MAXSEG, mss)
			})
			return errors.Join(err, serr)
		}
	}
	c, err := dialer.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	cl := &client{c: c.(*net.TCPConn), br: bufio.NewReaderSize(c, 64<<10)}
	t.Cleanup(func() { cl.c.Close() })
	return cl
}

// do sends request id and checks its response. pieces > 1 writes the body
// in that many writes (a body spanning many segments); otherwise the
// request goes out in one write.
func (cl *client) do(id, reqLen, respLen, pieces int, extra string) error {
	if err := cl.send(id, reqLen, respLen, pieces, extra); err != nil {
		return err
	}
	return cl.receive(id, respLen)
}

func (cl *client) send(id, reqLen, respLen, pieces int, extra string) error {
	req := request(id, reqLen, respLen, extra)
	cl.c.SetDeadline(time.Now().Add(10 * time.Second))
	if pieces <= 1 || reqLen < pieces {
		if _, err := cl.c.Write(req); err != nil {
			return fmt.Errorf("request %d: write: %w", id, err)
		}
	} else {
		// The head with the first piece of the body, then the rest.
		head := len(req) - reqLen
		step := (reqLen + pieces - 1) / pieces
		for off := 0; off < len(req); {
			end := off + step
			if off == 0 {
				end = head + step
			}
			end = min(end, len(req))
			if _, err := cl.c.Write(req[off:end]); err != nil {
				return fmt.Errorf("request %d: write: %w", id, err)
			}
			off = end
		}
	}
	return nil
}

func (cl *client) receive(id, respLen int) error {
	cl.c.SetDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(cl.br, nil)
	if err != nil {
		return fmt.Errorf("request %d: read response: %w", id, err)
	}
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return fmt.Errorf("request %d: read response body: %w", id, err)
	}
	if resp.StatusCode != 200 || !bytes.Equal(body, pattern(id+1000000, respLen)) {
		return fmt.Errorf("request %d: status %d, body of %d bytes (want %d) corrupt", id, resp.StatusCode, len(body), respLen)
	}
	return nil
}

// spliceProxy is the EPROXY flow for plain revisions: accept A, read the
// first request in userspace, dial the upstream (B), AddSplice, write the
// first request to B, KickSplice(A); then only watch A and B for EOF.
type spliceProxy struct {
	t        testing.TB
	d        *Datapath
	instance uint32
	upstream string
	ln       net.Listener
	// remove: on EOF call RemoveSplice before closing (else only close).
	remove bool
	// drain: on EOF of one side wait until the other direction has
	// nothing pending before closing (else close at once).
	drain bool
	// hangup, if set, watches the spliced sockets instead of parked
	// reads; the sockets leave Go's netpoller.
	hangup *HangupWatcher

	spliced chan *splicedConn

	mu       sync.Mutex
	active   map[*splicedConn]bool
	stopping bool
	wg       sync.WaitGroup
}

// splicedConn is one spliced pair, with what the EOF watchers saw.
type splicedConn struct {
	A, B             *net.TCPConn
	fdA, fdB         int
	cookieA, cookieB uint64
	first            []byte // bytes the proxy read from A and wrote to B
	toClient         *Forwarding
	toUpstream       *Forwarding
	// Per side: how often a parked read was woken, and bytes a read
	// returned (must stay 0: spliced bytes never reach userspace).
	wakeA, wakeB atomic.Int64
	dataA, dataB atomic.Int64
	eofA, eofB   chan struct{}
	stop         chan struct{} // closed by the proxy's cleanup
	closeBoth    func()
	closed       chan struct{}
}

func newSpliceProxy(t testing.TB, d *Datapath, instance uint32, upstream string) *spliceProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &spliceProxy{t: t, d: d, instance: instance, upstream: upstream, ln: ln, remove: true, drain: true,
		spliced: make(chan *splicedConn, 64), active: map[*splicedConn]bool{}}
	t.Cleanup(func() {
		// Runs before the Datapath's cleanup: end the pairs still open.
		ln.Close()
		p.mu.Lock()
		p.stopping = true
		for sc := range p.active {
			sc.closeBoth()
			close(sc.stop)
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				if err := p.handle(c.(*net.TCPConn)); err != nil {
					t.Errorf("proxy: %v", err)
					c.Close()
				}
			}()
		}
	}()
	return p
}

func fdOf(c *net.TCPConn) (int, error) {
	rc, err := c.SyscallConn()
	if err != nil {
		return -1, err
	}
	fd := -1
	if err := rc.Control(func(f uintptr) { fd = int(f) }); err != nil {
		return -1, err
	}
	return fd, nil
}

// inq is SIOCINQ (FIONREAD) of c: bytes in its receive queue.
func inq(c *net.TCPConn) (int, error) {
	fd, err := fdOf(c)
	if err != nil {
		return 0, err
	}
	return unix.IoctlGetInt(fd, unix.SIOCINQ)
}

// readFirstRequest reads one HTTP/1.1 request with its body from c and
// returns every byte it read from the socket.
func readFirstRequest(c *net.TCPConn) ([]byte, error) {
	var raw bytes.Buffer
	br := bufio.NewReader(io.TeeReader(c, &raw))
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil, err
	}
	if _, err := io.Copy(io.Discard, req.Body); err != nil {
		return nil, err
	}
	if br.Buffered() != 0 {
		return nil, fmt.Errorf("client sent more than one request (%d bytes buffered)", br.Buffered())
	}
	return raw.Bytes(), nil
}

func (p *spliceProxy) handle(a *net.TCPConn) error {
	first, err := readFirstRequest(a)
	if err != nil {
		return fmt.Errorf("first request: %w", err)
	}
	// Nothing may be left unread in A when it is spliced (package doc).
	if n, err := inq(a); err != nil || n != 0 {
		return fmt.Errorf("A has %d unread bytes before AddSplice (%v)", n, err)
	}
	bc, err := net.Dial("tcp", p.upstream)
	if err != nil {
		return err
	}
	b := bc.(*net.TCPConn)
	sc := &splicedConn{A: a, B: b, first: first, eofA: make(chan struct{}), eofB: make(chan struct{}),
		stop: make(chan struct{}), closed: make(chan struct{})}
	if p.hangup != nil {
		// Out of Go's netpoller: raw fds (blocking), watched by p.hangup.
		if sc.fdA, err = detach(a); err != nil {
			return err
		}
		if sc.fdB, err = detach(b); err != nil {
			unix.Close(sc.fdA)
			return err
		}
		sc.closeBoth = func() {
			p.hangup.Remove(sc.fdA)
			p.hangup.Remove(sc.fdB)
			unix.Close(sc.fdA)
			unix.Close(sc.fdB)
		}
	} else {
		if sc.fdA, err = fdOf(a); err != nil {
			return err
		}
		if sc.fdB, err = fdOf(b); err != nil {
			return err
		}
		sc.closeBoth = func() { a.Close(); b.Close() }
	}
	sc.cookieA, _ = socketCookie(sc.fdA)
	sc.cookieB, _ = socketCookie(sc.fdB)
	if err := p.d.AddSplice(p.instance, sc.fdA, sc.fdB); err != nil {
		sc.closeBoth()
		return err
	}
	if sc.toClient, err = NewForwarding(sc.fdB, sc.fdA); err != nil {
		return err
	}
	// The first request goes out through B's sk_msg program: counted.
	if p.hangup != nil {
		err = writeFD(sc.fdB, first)
	} else {
		_, err = b.Write(first)
	}
	if err != nil {
		return fmt.Errorf("write first request: %w", err)
	}
	if sc.toUpstream, err = NewForwarding(sc.fdA, sc.fdB); err != nil {
		return err
	}
	if err := KickSplice(sc.fdA); err != nil {
		return err
	}
	if p.hangup != nil {
		var onceA, onceB sync.Once
		p.hangup.Add(sc.fdA, func() { sc.wakeA.Add(1); onceA.Do(func() { close(sc.eofA) }) })
		p.hangup.Add(sc.fdB, func() { sc.wakeB.Add(1); onceB.Do(func() { close(sc.eofB) }) })
	} else {
		go watch(a, &sc.wakeA, &sc.dataA, sc.eofA)
		go watch(b, &sc.wakeB, &sc.dataB, sc.eofB)
	}
	p.mu.Lock()
	if p.stopping {
		p.mu.Unlock()
		sc.closeBoth()
		return nil
	}
	p.active[sc] = true
	p.wg.Add(1)
	p.mu.Unlock()
	go func() {
		defer p.wg.Done()
		// EOF on either side ends the pair, once what that side sent
		// has been handed to the other.
		var fwd *Forwarding
		select {
		case <-sc.eofA:
			fwd = sc.toUpstream
		case <-sc.eofB:
			fwd = sc.toClient
		case <-sc.stop:
			return
		}
		if p.drain {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			if err := fwd.Wait(ctx); err != nil {
				p.mu.Lock()
				if !p.stopping {
					p.t.Errorf("drain: %v", err)
				}
				p.mu.Unlock()
			}
			cancel()
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.stopping {
			return // closed by the cleanup
		}
		if p.remove {
			if err := p.d.RemoveSplice(sc.fdA, sc.fdB); err != nil {
				p.t.Errorf("RemoveSplice: %v", err)
			}
		}
		sc.closeBoth()
		delete(p.active, sc)
		close(sc.closed)
	}()
	p.spliced <- sc
	return nil
}

// detach takes c out of Go's netpoller: it returns a blocking dup of its
// fd and closes c (which deregisters it; the socket lives on in the dup).
func detach(c *net.TCPConn) (int, error) {
	fd, err := fdOf(c)
	if err != nil {
		return -1, err
	}
	dup, err := unix.Dup(fd)
	if err != nil {
		return -1, err
	}
	c.Close()
	if err := unix.SetNonblock(dup, false); err != nil {
		unix.Close(dup)
		return -1, err
	}
	return dup, nil
}

func writeFD(fd int, b []byte) error {
	for len(b) > 0 {
		n, err := unix.Write(fd, b)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		b = b[n:]
	}
	return nil
}

// watch parks in a read on c until EOF, as EPROXY does to learn that a
// spliced connection ended, counting wake-ups and any bytes the read
// returns (there must be none). It is net.Conn.Read's own loop with a hook:
// the callback runs once, then once per readiness notification.
func watch(c *net.TCPConn, wakes, data *atomic.Int64, eof chan struct{}) {
	defer close(eof)
	rc, err := c.SyscallConn()
	if err != nil {
		return
	}
	buf := make([]byte, 64<<10)
	first := true
	rc.Read(func(fd uintptr) bool {
		if !first {
			wakes.Add(1)
		}
		first = false
		for {
			n, err := unix.Read(int(fd), buf)
			switch {
			case errors.Is(err, unix.EINTR):
				continue
			case errors.Is(err, unix.EAGAIN):
				return false // park again
			case err != nil, n == 0:
				return true // error or EOF
			}
			data.Add(int64(n))
		}
	})
}

func (p *spliceProxy) next(t testing.TB) *splicedConn {
	t.Helper()
	select {
	case sc := <-p.spliced:
		return sc
	case <-time.After(5 * time.Second):
		t.Fatal("proxy did not splice a connection")
		return nil
	}
}

func waitClosed(t testing.TB, sc *splicedConn) {
	t.Helper()
	select {
	case <-sc.closed:
	case <-time.After(5 * time.Second):
		t.Fatal("proxy did not see EOF")
	}
}

func loadSplice(t testing.TB) *Datapath {
	t.Helper()
	d, err := Load(pinDir(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Unpin(); d.Close() })
	return d
}

// spliceEntries counts the splice_map, splice_peer entries of cookies.
func spliceEntries(t *testing.T, d *Datapath, cookies ...uint64) (inMap, inPeer int) {
	t.Helper()
	for _, c := range cookies {
		var v uint64
		var info sprightSpliceInfo
		if err := d.objs.SpliceMap.Lookup(c, &v); err == nil {
			inMap++
		} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Fatal(err)
		}
		if err := d.objs.SplicePeer.Lookup(c, &info); err == nil {
			inPeer++
		} else if !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Fatal(err)
		}
	}
	return inMap, inPeer
}

// peerRecords counts the entries of splice_peer.
func peerRecords(t *testing.T, d *Datapath) int {
	t.Helper()
	var (
		k uint64
		v sprightSpliceInfo
		n int
	)
	it := d.objs.SplicePeer.Iterate()
	for it.Next(&k, &v) {
		n++
	}
	if err := it.Err(); err != nil {
		t.Fatal(err)
	}
	return n
}

// sizes of request and response bodies, up to 200 KB; 65536 is the 64 KB
// body of the brief.
var bodySizes = []int{0, 1, 17, 512, 1460, 4096, 9000, 16384, 65536, 65536 + 3, 200000, 100}

// TestSplice: 1000 keep-alive requests through one spliced connection.
func TestSplice(t *testing.T) {
	d := loadSplice(t)
	up := newUpstream(t)
	p := newSpliceProxy(t, d, 42, up.ln.Addr().String())
	stats, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME))
	if err == nil {
		defer stats.Close()
	}

	// MSS 1400: the 64 KB bodies cross the spliced sockets in many TCP
	// segments (on loopback GSO still hands them over in large skbs).
	cl := dialClient(t, p.ln.Addr().String(), 1400)
	const n = 1000
	// Request 0 is the first one: the proxy reads it (64 KB body) and
	// writes it to B itself after AddSplice.
	if err := cl.do(0, 65536, 4096, 1, ""); err != nil {
		t.Fatal(err)
	}
	sc := p.next(t)
	if len(sc.first) < 65536 {
		t.Fatalf("proxy read %d bytes as the first request", len(sc.first))
	}
	for i := 1; i < n; i++ {
		reqLen := bodySizes[i%len(bodySizes)]
		respLen := bodySizes[(i*5+3)%len(bodySizes)]
		pieces := 1
		if i%3 == 0 {
			pieces = 7 // body written in several writes
		}
		if err := cl.do(i, reqLen, respLen, pieces, ""); err != nil {
			t.Fatal(err)
		}
	}
	if got, _, _ := up.stats(); got != n {
		t.Errorf("upstream served %d requests, want %d", got, n)
	}

	// Exactly n each: request 0 counted on the proxy's write to B, 1..n-1
	// when the kernel forwarded them out of B; n responses out of A.
	m := metrics(t, d, 42)
	if m.RequestsIn != n || m.ResponsesOut != n || m.Inflight != 0 || m.BusyNs == 0 || m.Sent != 0 {
		t.Errorf("metrics after %d requests: %+v", n, m)
	}
	t.Logf("metrics: %+v (busy %v)", m, time.Duration(m.BusyNs))
	if dr := drops(t, d); dr[DropSplicePeer] != 0 {
		t.Errorf("drops: %v", dr)
	}
	if sc.dataA.Load() != 0 || sc.dataB.Load() != 0 {
		t.Errorf("reads on spliced sockets returned data: A %d, B %d bytes", sc.dataA.Load(), sc.dataB.Load())
	}
	// The parked reads stay parked (the netpoller itself is woken about
	// twice per request, see HangupWatcher and TestSpliceCPU).
	t.Logf("parked reads woken by spliced traffic (returning nothing): A %d, B %d times for %d requests",
		sc.wakeA.Load(), sc.wakeB.Load(), n)
	if sc.wakeA.Load()+sc.wakeB.Load() > n/10 {
		t.Errorf("parked reads were woken %d times for %d requests", sc.wakeA.Load()+sc.wakeB.Load(), n)
	}
	if stats != nil {
		for name, prog := range map[string]*ebpf.Program{"verdict": d.objs.SprightSpliceVerdict, "sk_msg": d.objs.SprightSpliceMsg} {
			if s, err := prog.Stats(); err == nil {
				t.Logf("%s program: %d runs, %v total (%.0f ns/run)", name, s.RunCount, s.Runtime, float64(s.Runtime.Nanoseconds())/float64(max(s.RunCount, 1)))
			}
		}
	}

	// The client closes: the proxy's read on A sees EOF, it removes the
	// splice and closes B, and the upstream sees a clean EOF.
	in, peer := spliceEntries(t, d, sc.cookieA, sc.cookieB)
	if in != 2 || peer != 2 {
		t.Errorf("before close: %d in splice_map, %d in splice_peer, want 2, 2", in, peer)
	}
	cl.c.Close()
	waitClosed(t, sc)
	select {
	case <-sc.eofA:
	default:
		t.Error("A did not see EOF")
	}
	waitFor(t, "upstream EOF", func() bool { _, _, eofs := up.stats(); return eofs == 1 })
	if in, peer := spliceEntries(t, d, sc.cookieA, sc.cookieB); in != 0 || peer != 0 {
		t.Errorf("after RemoveSplice and close: %d in splice_map, %d in splice_peer", in, peer)
	}
}

func waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// TestSpliceConcurrency: parallel spliced connections of one instance add
// up in inflight and BusyNs.
func TestSpliceConcurrency(t *testing.T) {
	d := loadSplice(t)
	up := newUpstream(t)
	const k, hold = 8, 200 * time.Millisecond
	var (
		holding atomic.Bool
		release = make(chan struct{})
	)
	up.hold = func() {
		if holding.Load() {
			<-release
		}
	}
	p := newSpliceProxy(t, d, 7, up.ln.Addr().String())
	clients := make([]*client, k)
	for i := range clients {
		clients[i] = dialClient(t, p.ln.Addr().String(), 0)
		if err := clients[i].do(i*1000, 10, 10, 1, ""); err != nil {
			t.Fatal(err)
		}
		p.next(t)
	}
	m0 := metrics(t, d, 7)
	if m0.RequestsIn != k || m0.ResponsesOut != k || m0.Inflight != 0 {
		t.Fatalf("after the first requests: %+v", m0)
	}

	// All k connections send a request the upstream holds.
	holding.Store(true)
	errs := make(chan error, k)
	for i, cl := range clients {
		go func() { errs <- cl.do(i*1000+1, 100, 100, 1, "") }()
	}
	waitFor(t, "k requests in flight", func() bool { return metrics(t, d, 7).Inflight == k })
	t0, _ := MonotonicNs()
	time.Sleep(hold)
	t1, _ := MonotonicNs()
	mid := metrics(t, d, 7)
	holding.Store(false)
	close(release)
	for range clients {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	// Concurrency k for at least `hold`.
	if got := mid.BusyNsAt(t1) - mid.BusyNsAt(t0); got != k*(t1-t0) {
		t.Errorf("busy over the hold %v, want %v", time.Duration(got), time.Duration(k*(t1-t0)))
	}

	// And more traffic on all of them, in parallel.
	const more = 50
	var wg sync.WaitGroup
	for i, cl := range clients {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 2; j < more+2; j++ {
				if err := cl.do(i*1000+j, bodySizes[j%len(bodySizes)], bodySizes[(j+i)%len(bodySizes)], 1, ""); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	m := metrics(t, d, 7)
	want := uint64(k * (more + 2))
	if m.RequestsIn != want || m.ResponsesOut != want || m.Inflight != 0 {
		t.Errorf("metrics %+v, want %d requests and responses, none in flight", m, want)
	}
	if m.BusyNs < k*uint64(hold) {
		t.Errorf("busy %v, want >= %v", time.Duration(m.BusyNs), k*hold)
	}
	t.Logf("metrics: %+v (busy %v; mean concurrency while held %.2f)", m, time.Duration(m.BusyNs),
		float64(mid.BusyNsAt(t1)-mid.BusyNsAt(t0))/float64(t1-t0))
}

// TestSpliceClose: either side's close reaches the proxy as EOF, the maps
// are cleaned (RemoveSplice) or prunable (close only), and new splices work.
func TestSpliceClose(t *testing.T) {
	for _, mode := range []string{"parked reads", "hangup watcher"} {
		t.Run(mode, func(t *testing.T) { testSpliceClose(t, mode == "hangup watcher") })
	}
}

func testSpliceClose(t *testing.T, hangup bool) {
	d := loadSplice(t)
	up := newUpstream(t)
	var w *HangupWatcher
	if hangup {
		var err error
		if w, err = NewHangupWatcher(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { w.Close() })
	}
	p := newSpliceProxy(t, d, 9, up.ln.Addr().String())
	p.hangup = w
	requests, unanswered := uint64(0), uint64(0)

	t.Run("client closes", func(t *testing.T) {
		cl := dialClient(t, p.ln.Addr().String(), 0)
		if err := cl.do(1, 10, 10, 1, ""); err != nil {
			t.Fatal(err)
		}
		sc := p.next(t)
		if err := cl.do(2, 10, 10, 1, ""); err != nil {
			t.Fatal(err)
		}
		requests += 2
		_, _, eofs0 := up.stats()
		cl.c.Close()
		waitClosed(t, sc)
		select {
		case <-sc.eofA:
		default:
			t.Error("the proxy stopped without EOF on A")
		}
		waitFor(t, "upstream EOF", func() bool { _, _, e := up.stats(); return e == eofs0+1 })
		if in, peer := spliceEntries(t, d, sc.cookieA, sc.cookieB); in != 0 || peer != 0 {
			t.Errorf("after RemoveSplice: %d in splice_map, %d in splice_peer", in, peer)
		}
	})

	t.Run("upstream closes", func(t *testing.T) {
		cl := dialClient(t, p.ln.Addr().String(), 0)
		if err := cl.do(3, 10, 10, 1, ""); err != nil {
			t.Fatal(err)
		}
		sc := p.next(t)
		// The upstream answers with Connection: close and closes: EOF on
		// B. The client reads only after that, so most of the 16 MB
		// response is still in the kernel (A's send queue and the splice
		// backlog); the proxy waits for the backlog before closing A.
		const big = 16 << 20
		if err := cl.send(4, 10, big, 1, "X-Close: 1\r\n"); err != nil {
			t.Fatal(err)
		}
		select {
		case <-sc.eofB:
		case <-time.After(5 * time.Second):
			t.Fatal("no EOF on B")
		}
		if n, err := sc.toClient.Pending(); err != nil || n == 0 {
			t.Logf("pending towards the client at EOF on B: %d, %v (expected > 0)", n, err)
		} else {
			t.Logf("pending towards the client at EOF on B: %d bytes", n)
		}
		if err := cl.receive(4, big); err != nil {
			t.Fatal(err)
		}
		requests += 2
		waitClosed(t, sc)
		cl.c.SetReadDeadline(time.Now().Add(2 * time.Second))
		if n, err := cl.br.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) {
			t.Errorf("client after upstream close: %d bytes, %v; want EOF", n, err)
		}
	})

	t.Run("closing at once loses the backlog", func(t *testing.T) {
		p.drain = false
		defer func() { p.drain = true }()
		cl := dialClient(t, p.ln.Addr().String(), 0)
		if err := cl.do(30, 10, 10, 1, ""); err != nil {
			t.Fatal(err)
		}
		sc := p.next(t)
		const big = 16 << 20
		before := metrics(t, d, 9)
		if err := cl.send(31, 10, big, 1, "X-Close: 1\r\n"); err != nil {
			t.Fatal(err)
		}
		requests += 2
		waitClosed(t, sc)
		// The response was counted if its first bytes made it out of A
		// before A was closed; if not, RemoveSplice took the request out
		// of Inflight.
		if m := metrics(t, d, 9); m.ResponsesOut == before.ResponsesOut {
			unanswered++
		}
		err := cl.receive(31, big)
		if err == nil {
			t.Fatal("the whole response arrived although A was closed with bytes in the splice backlog")
		}
		t.Logf("client, A closed at EOF on B without waiting: %v", err)
	})

	t.Run("close without RemoveSplice", func(t *testing.T) {
		p.remove = false
		defer func() { p.remove = true }()
		before := peerRecords(t, d)
		cl := dialClient(t, p.ln.Addr().String(), 0)
		if err := cl.do(5, 10, 10, 1, ""); err != nil {
			t.Fatal(err)
		}
		sc := p.next(t)
		requests++
		cl.c.Close()
		waitClosed(t, sc)
		// The kernel took the closed sockets out of splice_map; their
		// records stay until pruned.
		if in, peer := spliceEntries(t, d, sc.cookieA, sc.cookieB); in != 0 || peer != 2 {
			t.Errorf("after close: %d in splice_map, %d in splice_peer, want 0, 2", in, peer)
		}
		n, err := d.PruneSplices()
		if err != nil || n != 2 {
			t.Errorf("PruneSplices = %d, %v; want 2", n, err)
		}
		if got := peerRecords(t, d); got != before {
			t.Errorf("%d records after pruning, want %d", got, before)
		}
	})

	t.Run("new splice after", func(t *testing.T) {
		cl := dialClient(t, p.ln.Addr().String(), 0)
		for i := 6; i < 26; i++ {
			if err := cl.do(i, bodySizes[i%len(bodySizes)], 100, 1, ""); err != nil {
				t.Fatal(err)
			}
		}
		requests += 20
		sc := p.next(t)
		cl.c.Close()
		waitClosed(t, sc)
	})

	m := metrics(t, d, 9)
	if m.RequestsIn != requests || m.ResponsesOut != requests-unanswered || m.Inflight != 0 {
		t.Errorf("metrics %+v, want %d requests, %d responses, none in flight", m, requests, requests-unanswered)
	}
	if n := peerRecords(t, d); n != 0 {
		t.Errorf("%d splice records left", n)
	}
	if dr := drops(t, d); dr[DropSplicePeer] != 0 {
		t.Logf("drops[%s] = %d (bytes that arrived after the peer was closed)", DropSplicePeer, dr[DropSplicePeer])
	}
}

// rawSplice is a spliced pair without HTTP: client ⇄ A ~ B ⇄ server.
type rawSplice struct {
	client, A, B, server *net.TCPConn
	fdA, fdB             int
}

func newRawSplice(t *testing.T) *rawSplice {
	t.Helper()
	front, back := tcpPair(t), tcpPair(t)
	r := &rawSplice{client: front.conn, A: front.peer, B: back.conn, server: back.peer}
	var err error
	if r.fdA, err = fdOf(r.A); err != nil {
		t.Fatal(err)
	}
	if r.fdB, err = fdOf(r.B); err != nil {
		t.Fatal(err)
	}
	return r
}

// readWant reads from c until len(want) bytes arrived (or 5 s passed),
// then whatever else arrives within 50 ms, so that extra bytes show.
func readWant(c *net.TCPConn, want string) string {
	var out []byte
	b := make([]byte, 64<<10)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for len(out) < len(want) {
		n, err := c.Read(b)
		out = append(out, b[:n]...)
		if err != nil {
			return string(out)
		}
	}
	return string(out) + readFor(c, 50*time.Millisecond)
}

// readFor reads from c until nothing more arrives for `quiet`.
func readFor(c *net.TCPConn, quiet time.Duration) string {
	var out []byte
	b := make([]byte, 64<<10)
	for {
		c.SetReadDeadline(time.Now().Add(quiet))
		n, err := c.Read(b)
		out = append(out, b[:n]...)
		if err != nil {
			return string(out)
		}
	}
}

// TestSpliceQueuedBytes pins down what happens to bytes that are in A's
// receive queue when A is spliced (package doc, "Bytes queued before the
// splice").
func TestSpliceQueuedBytes(t *testing.T) {
	d := loadSplice(t)
	const inst = 5
	const req = "GET /queued HTTP/1.1\r\nHost: x\r\n\r\n"
	queue := func(t *testing.T, r *rawSplice, s string) {
		t.Helper()
		if _, err := r.client.Write([]byte(s)); err != nil {
			t.Fatal(err)
		}
		waitFor(t, "bytes queued on A", func() bool { n, _ := inq(r.A); return n == len(s) })
	}
	requestsIn := func() uint64 { return metrics(t, d, inst).RequestsIn }

	t.Run("stay queued until kicked", func(t *testing.T) {
		r := newRawSplice(t)
		queue(t, r, req)
		if err := d.AddSplice(inst, r.fdA, r.fdB); err != nil {
			t.Fatal(err)
		}
		// Spliced, SIOCINQ reports the psock's queue, not the TCP one.
		if n, err := inq(r.A); err != nil || n != 0 {
			t.Errorf("SIOCINQ of spliced A = %d, %v; want 0 although %d bytes are queued", n, err, len(req))
		}
		n0 := requestsIn()
		if got := readFor(r.server, 200*time.Millisecond); got != "" {
			t.Fatalf("forwarded without a kick: %q", got)
		}
		if err := KickSplice(r.fdA); err != nil {
			t.Fatal(err)
		}
		if got := readWant(r.server, req); got != req {
			t.Fatalf("after KickSplice the upstream got %q, want %q", got, req)
		}
		if n := requestsIn(); n != n0+1 {
			t.Errorf("requests in %d -> %d, want +1", n0, n)
		}
	})

	t.Run("a read on A forwards them", func(t *testing.T) {
		r := newRawSplice(t)
		queue(t, r, req)
		if err := d.AddSplice(inst, r.fdA, r.fdB); err != nil {
			t.Fatal(err)
		}
		// recvmsg on a spliced socket first runs the verdict over the
		// TCP receive queue: the reader gets nothing, the peer the bytes.
		r.A.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		if n, err := r.A.Read(make([]byte, 100)); n != 0 || !errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("read on spliced A: %d bytes, %v; want nothing", n, err)
		}
		if got := readWant(r.server, req); got != req {
			t.Fatalf("after a read on A the upstream got %q, want %q", got, req)
		}
	})

	t.Run("the next bytes push them out first", func(t *testing.T) {
		r := newRawSplice(t)
		queue(t, r, "first.")
		if err := d.AddSplice(inst, r.fdA, r.fdB); err != nil {
			t.Fatal(err)
		}
		if got := readFor(r.server, 100*time.Millisecond); got != "" {
			t.Fatalf("forwarded without new bytes: %q", got)
		}
		r.client.Write([]byte("second."))
		if got := readWant(r.server, "first.second."); got != "first.second." {
			t.Fatalf("upstream got %q, want %q", got, "first.second.")
		}
	})

	t.Run("a partly read segment is forwarded whole", func(t *testing.T) {
		r := newRawSplice(t)
		queue(t, r, "HEAD-REST")
		b := make([]byte, 5)
		if _, err := io.ReadFull(r.A, b); err != nil || string(b) != "HEAD-" {
			t.Fatalf("read %q, %v", b, err)
		}
		if err := d.AddSplice(inst, r.fdA, r.fdB); err != nil {
			t.Fatal(err)
		}
		if err := KickSplice(r.fdA); err != nil {
			t.Fatal(err)
		}
		// The 5 bytes userspace already read go out again: the verdict is
		// handed the whole skb, not the unread rest (measured on 6.18).
		if got := readWant(r.server, "HEAD-REST"); got != "HEAD-REST" {
			t.Fatalf("upstream got %q; the documented behaviour is %q (bytes already read are sent again)", got, "HEAD-REST")
		}
	})

	t.Run("fully read, nothing queued", func(t *testing.T) {
		r := newRawSplice(t)
		queue(t, r, "HEAD-REST")
		b := make([]byte, 9)
		if _, err := io.ReadFull(r.A, b); err != nil {
			t.Fatal(err)
		}
		if n, _ := inq(r.A); n != 0 {
			t.Fatalf("SIOCINQ %d after reading everything", n)
		}
		if err := d.AddSplice(inst, r.fdA, r.fdB); err != nil {
			t.Fatal(err)
		}
		if err := KickSplice(r.fdA); err != nil {
			t.Fatal(err)
		}
		r.client.Write([]byte("NEXT"))
		if got := readWant(r.server, "NEXT"); got != "NEXT" {
			t.Fatalf("upstream got %q, want %q", got, "NEXT")
		}
	})
}

// TestSpliceAPI: argument checks, idempotence, storage cleanup.
func TestSpliceAPI(t *testing.T) {
	d := loadSplice(t)
	r := newRawSplice(t)
	if err := d.AddSplice(1, r.fdA, r.fdA); err == nil {
		t.Error("AddSplice of a socket with itself succeeded")
	}
	if err := d.AddSplice(1, -1, r.fdB); err == nil {
		t.Error("AddSplice with a bad fd succeeded")
	}
	// A socket that is not connected cannot be spliced; nothing is left
	// behind.
	lnFD, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(lnFD)
	if err := d.AddSplice(1, lnFD, r.fdB); err == nil {
		t.Error("AddSplice of an unconnected socket succeeded")
	}
	if n := peerRecords(t, d); n != 0 {
		t.Errorf("%d records after a failed AddSplice", n)
	}
	if _, err := d.Metrics(1); err != nil {
		t.Errorf("metrics entry: %v", err) // created before the failure; harmless
	}

	if err := d.AddSplice(2, r.fdA, r.fdB); err != nil {
		t.Fatal(err)
	}
	if err := d.AddSplice(2, r.fdA, r.fdB); err != nil {
		t.Fatalf("second AddSplice of the same pair: %v", err)
	}
	r.client.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	if got := readWant(r.server, "GET / HTTP/1.1\r\n\r\n"); got != "GET / HTTP/1.1\r\n\r\n" {
		t.Fatalf("upstream got %q", got)
	}
	r.server.Write([]byte("HTTP/1.1 204 No Content\r\n\r\n"))
	if got := readWant(r.client, "HTTP/1.1 204 No Content\r\n\r\n"); got != "HTTP/1.1 204 No Content\r\n\r\n" {
		t.Fatalf("client got %q", got)
	}
	if m := metrics(t, d, 2); m.RequestsIn != 1 || m.ResponsesOut != 1 || m.Inflight != 0 {
		t.Errorf("metrics %+v", m)
	}

	for i := 0; i < 2; i++ {
		if err := d.RemoveSplice(r.fdA, r.fdB); err != nil {
			t.Fatalf("RemoveSplice #%d: %v", i+1, err)
		}
	}
	if err := d.RemoveSplice(-1, -1); err != nil {
		t.Fatal(err)
	}
	var info sprightSpliceInfo
	for _, fd := range []int{r.fdA, r.fdB} {
		if err := d.objs.SpliceSock.Lookup(int32(fd), &info); !errors.Is(err, ebpf.ErrKeyNotExist) {
			t.Errorf("splice_sock of fd %d after RemoveSplice: %v", fd, err)
		}
	}
	if n := peerRecords(t, d); n != 0 {
		t.Errorf("%d records after RemoveSplice", n)
	}
	// Plain sockets again: bytes stay for their owners.
	r.client.Write([]byte("plain"))
	if got := readWant(r.A, "plain"); got != "plain" {
		t.Errorf("A after RemoveSplice got %q", got)
	}

	if err := d.AddInstanceMetrics(77); err != nil {
		t.Fatal(err)
	}
	if m := metrics(t, d, 77); m != (InstanceMetrics{}) {
		t.Errorf("new metrics entry %+v", m)
	}
	if err := d.AddInstanceMetrics(2); err != nil {
		t.Fatal(err)
	}
	if m := metrics(t, d, 2); m.RequestsIn != 1 {
		t.Errorf("AddInstanceMetrics reset an existing entry: %+v", m)
	}
}

// TestSpliceCounting: what the sk_msg program counts as a request or a
// response (first bytes of a message only).
func TestSpliceCounting(t *testing.T) {
	d := loadSplice(t)
	r := newRawSplice(t)
	const inst = 3
	if err := d.AddSplice(inst, r.fdA, r.fdB); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		upstream bool // written by the client (goes out of B) or by the server
		msg      string
		req, rsp uint64
	}{
		{true, "GET / HTTP/1.1\r\n\r\n", 1, 0},
		{true, "POST /x HTTP/1.1\r\n", 1, 0},
		{true, "PUT /x HTTP/1.1\r\n", 1, 0},
		{true, "DELETE /x HTTP/1.1\r\n", 1, 0},
		{true, "HEAD /x HTTP/1.1\r\n", 1, 0},
		{true, "OPTIONS * HTTP/1.1\r\n", 1, 0},
		{true, "PATCH /x HTTP/1.1\r\n", 1, 0},
		{true, "CONNECT h:1 HTTP/1.1\r\n", 1, 0},
		{true, "TRACE / HTTP/1.1\r\n", 1, 0},
		{true, "GETX / HTTP/1.1\r\n", 0, 0},
		{true, "get / HTTP/1.1\r\n", 0, 0},
		{true, "GET /", 0, 0}, // shorter than 12 bytes
		{true, "some body bytes GET / HTTP/1.1", 0, 0},
		{true, "HTTP/1.1 200 OK\r\n\r\n", 0, 0}, // a response line towards the server
		{false, "HTTP/1.1 200 OK\r\n\r\n", 0, 1},
		{false, "HTTP/1.0 404 Not Found\r\n\r\n", 0, 1},
		{false, "HTTP/1.1 503 Busy\r\n\r\n", 0, 1},
		{false, "HTTP/1.1 101 Switching Protocols\r\n\r\n", 0, 1},
		{false, "HTTP/1.1 100 Continue\r\n\r\n", 0, 0},
		{false, "HTTP/1.1 103 Early Hints\r\n\r\n", 0, 0},
		{false, "HTTP/2 200\r\n\r\n", 0, 0},
		{false, "HTTP/1.1 600 X\r\n\r\n", 0, 0},
		{false, "GET / HTTP/1.1\r\n\r\n", 0, 0},
		{false, "xHTTP/1.1 200 OK\r\n", 0, 0},
	} {
		before := metrics(t, d, inst)
		from, to := r.server, r.client
		if tc.upstream {
			from, to = r.client, r.server
		}
		if _, err := from.Write([]byte(tc.msg)); err != nil {
			t.Fatal(err)
		}
		if got := readWant(to, tc.msg); got != tc.msg {
			t.Fatalf("%q arrived as %q", tc.msg, got)
		}
		after := metrics(t, d, inst)
		if after.RequestsIn-before.RequestsIn != tc.req || after.ResponsesOut-before.ResponsesOut != tc.rsp {
			t.Errorf("%q: counted %d requests, %d responses; want %d, %d", tc.msg,
				after.RequestsIn-before.RequestsIn, after.ResponsesOut-before.ResponsesOut, tc.req, tc.rsp)
		}
	}
	// 9 requests, then 4 responses.
	if m := metrics(t, d, inst); m.RequestsIn != 9 || m.ResponsesOut != 4 || m.Inflight != 5 {
		t.Errorf("metrics %+v", m)
	}
}

// TestSpliceEdges: a socket without a record passes its bytes to userspace;
// bytes for a closed peer are dropped and counted.
func TestSpliceEdges(t *testing.T) {
	d := loadSplice(t)
	t.Run("no record", func(t *testing.T) {
		r := newRawSplice(t)
		if err := d.AddSplice(1, r.fdA, r.fdB); err != nil {
			t.Fatal(err)
		}
		ca, _ := socketCookie(r.fdA)
		if err := d.objs.SplicePeer.Delete(ca); err != nil {
			t.Fatal(err)
		}
		r.client.Write([]byte("for userspace"))
		if got := readWant(r.A, "for userspace"); got != "for userspace" {
			t.Errorf("A got %q", got)
		}
		if got := readFor(r.server, 50*time.Millisecond); got != "" {
			t.Errorf("upstream got %q", got)
		}
	})
	t.Run("peer closed", func(t *testing.T) {
		r := newRawSplice(t)
		if err := d.AddSplice(1, r.fdA, r.fdB); err != nil {
			t.Fatal(err)
		}
		pre := drops(t, d)
		r.B.Close()
		r.client.Write([]byte("nobody takes this"))
		waitFor(t, "drop", func() bool { return drops(t, d)[DropSplicePeer] == pre[DropSplicePeer]+1 })
		checkDrops(t, d, pre, DropSplicePeer)
		if got := readFor(r.A, 50*time.Millisecond); got != "" {
			t.Errorf("A got %q", got)
		}
		if n, err := d.PruneSplices(); err != nil || n < 1 {
			t.Errorf("PruneSplices = %d, %v; want B's record at least", n, err)
		}
		ca, _ := socketCookie(r.fdA)
		if _, peer := spliceEntries(t, d, ca); peer != 1 {
			t.Error("PruneSplices dropped the record of A, which is open")
		}
	})
}

// TestSplicePruneWhenFull: records of sockets closed without RemoveSplice
// cannot fill splice_peer: AddSplice prunes them when it is full.
func TestSplicePruneWhenFull(t *testing.T) {
	d := loadSplice(t)
	max := int(d.objs.SplicePeer.MaxEntries())
	keys := make([]uint64, max-1)
	vals := make([]sprightSpliceInfo, max-1)
	for i := range keys {
		keys[i] = 1<<62 + uint64(i) // cookies of no live socket
	}
	if n, err := d.objs.SplicePeer.BatchUpdate(keys, vals, nil); err != nil || n != len(keys) {
		t.Fatalf("fill splice_peer: %d, %v", n, err)
	}
	r := newRawSplice(t)
	if err := d.AddSplice(1, r.fdA, r.fdB); err != nil {
		t.Fatalf("AddSplice with splice_peer full of dead records: %v", err)
	}
	if n := peerRecords(t, d); n != 2 {
		t.Errorf("%d records after AddSplice, want 2", n)
	}
	r.client.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	if got := readWant(r.server, "GET / HTTP/1.1\r\n\r\n"); got != "GET / HTTP/1.1\r\n\r\n" {
		t.Errorf("upstream got %q", got)
	}
}

// TestSpliceReload: spliced connections keep working without the loader
// and across a new Load, which reuses the pinned maps.
func TestSpliceReload(t *testing.T) {
	dir := pinDir(t)
	d, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	r := newRawSplice(t)
	if err := d.AddSplice(4, r.fdA, r.fdB); err != nil {
		t.Fatal(err)
	}
	exchange := func(what string) {
		t.Helper()
		r.client.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
		if got := readWant(r.server, "GET / HTTP/1.1\r\n\r\n"); got != "GET / HTTP/1.1\r\n\r\n" {
			t.Fatalf("%s: upstream got %q", what, got)
		}
		r.server.Write([]byte("HTTP/1.1 200 OK\r\n\r\n"))
		if got := readWant(r.client, "HTTP/1.1 200 OK\r\n\r\n"); got != "HTTP/1.1 200 OK\r\n\r\n" {
			t.Fatalf("%s: client got %q", what, got)
		}
	}
	exchange("loaded")
	if err := d.Close(); err != nil {
		t.Fatal(err)
	}
	if err := d.AddSplice(4, r.fdA, r.fdB); !errors.Is(err, ErrClosed) {
		t.Errorf("AddSplice after Close: %v", err)
	}
	exchange("closed")
	d, err = Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { d.Unpin(); d.Close() }()
	exchange("reloaded")
	if m := metrics(t, d, 4); m.RequestsIn != 3 || m.ResponsesOut != 3 || m.Inflight != 0 {
		t.Errorf("metrics across reload %+v", m)
	}
	// A pair spliced by the new Load works too.
	r2 := newRawSplice(t)
	if err := d.AddSplice(4, r2.fdA, r2.fdB); err != nil {
		t.Fatal(err)
	}
	r2.client.Write([]byte("x"))
	if got := readWant(r2.server, "x"); got != "x" {
		t.Errorf("new pair: upstream got %q", got)
	}
	if err := d.Unpin(); err != nil {
		t.Fatal(err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 0 {
		t.Errorf("pins left after Unpin: %v", ents)
	}
}

// TestHangupWatcher: the watcher fires on the peer's FIN, not on data.
func TestHangupWatcher(t *testing.T) {
	w, err := NewHangupWatcher()
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	m := tcpPair(t)
	fd, err := fdOf(m.conn)
	if err != nil {
		t.Fatal(err)
	}
	fired := make(chan struct{}, 4)
	if err := w.Add(fd, func() { fired <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	m.peer.Write([]byte("data"))
	select {
	case <-fired:
		t.Fatal("fired on data")
	case <-time.After(50 * time.Millisecond):
	}
	m.peer.CloseWrite()
	select {
	case <-fired:
	case <-time.After(2 * time.Second):
		t.Fatal("did not fire on FIN")
	}
	// Re-adding re-arms; the hangup is still there, so it fires again.
	if err := w.Add(fd, func() { fired <- struct{}{} }); err != nil {
		t.Fatal(err)
	}
	select {
	case <-fired:
	case <-time.After(2 * time.Second):
		t.Fatal("did not fire after re-arming")
	}
	if err := w.Remove(fd); err != nil {
		t.Fatal(err)
	}
	if err := w.Remove(fd); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Add(fd, func() {}); !errors.Is(err, ErrClosed) {
		t.Errorf("Add after Close: %v", err)
	}
}

// TestSpliceNoBackpressure pins down that a splice has no flow control from
// the client back to the upstream (package doc): with a client that reads
// nothing, the upstream's writes all complete and the bytes wait in the
// kernel. They all arrive, in order, once the client reads.
func TestSpliceNoBackpressure(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	d := loadSplice(t)
	r := newRawSplice(t)
	if err := d.AddSplice(1, r.fdA, r.fdB); err != nil {
		t.Fatal(err)
	}
	fwd, err := NewForwarding(r.fdB, r.fdA)
	if err != nil {
		t.Fatal(err)
	}
	const total = 64 << 20
	chunk := pattern(3, 1<<20)
	r.server.SetWriteDeadline(time.Now().Add(20 * time.Second))
	for n := 0; n < total; n += len(chunk) {
		if _, err := r.server.Write(chunk); err != nil {
			t.Fatalf("upstream blocked after %d MB: %v (the kernel applies backpressure now: update the package doc)", n>>20, err)
		}
	}
	pending, err := fwd.Pending()
	if err != nil {
		t.Fatal(err)
	}
	outq, _ := unix.IoctlGetInt(r.fdA, unix.SIOCOUTQ)
	t.Logf("upstream wrote %d MB, client read nothing: %d MB pending in the splice backlog, %d MB in A's send queue",
		total>>20, pending>>20, outq>>20)
	if pending < total/2 {
		t.Errorf("only %d bytes pending", pending)
	}
	t0 := time.Now()
	got := 0
	b := make([]byte, 1<<20)
	r.client.SetReadDeadline(time.Now().Add(60 * time.Second))
	for got < total {
		n, err := r.client.Read(b)
		for i, c := range b[:n] {
			if c != chunk[(got+i)%len(chunk)] {
				t.Fatalf("corrupt at byte %d", got+i)
			}
		}
		got += n
		if err != nil {
			t.Fatalf("after %d bytes: %v", got, err)
		}
	}
	t.Logf("the client then read %d MB in %v", total>>20, time.Since(t0).Round(time.Millisecond))
	if n, err := fwd.Pending(); err != nil || n != 0 {
		t.Errorf("pending after reading all: %d, %v", n, err)
	}
}

// TestSpliceAbandoned: a request whose connection ends before its response
// leaves Inflight when the splice is removed (or pruned), so that a client
// that gives up does not keep the instance busy forever.
func TestSpliceAbandoned(t *testing.T) {
	d := loadSplice(t)
	const inst = 6
	const req = "GET /slow HTTP/1.1\r\nHost: x\r\n\r\n"
	if err := d.AddInstanceMetrics(inst); err != nil {
		t.Fatal(err)
	}
	start := func(t *testing.T) *rawSplice {
		t.Helper()
		r := newRawSplice(t)
		if err := d.AddSplice(inst, r.fdA, r.fdB); err != nil {
			t.Fatal(err)
		}
		r.client.Write([]byte(req))
		if got := readWant(r.server, req); got != req {
			t.Fatalf("upstream got %q", got)
		}
		return r
	}
	t.Run("RemoveSplice", func(t *testing.T) {
		m0 := metrics(t, d, inst)
		r := start(t)
		if m := metrics(t, d, inst); m.Inflight != m0.Inflight+1 {
			t.Fatalf("inflight %d, want %d", m.Inflight, m0.Inflight+1)
		}
		r.client.Close() // the client gives up
		if err := d.RemoveSplice(r.fdA, r.fdB); err != nil {
			t.Fatal(err)
		}
		m := metrics(t, d, inst)
		if m.Inflight != m0.Inflight || m.RequestsIn != m0.RequestsIn+1 || m.ResponsesOut != m0.ResponsesOut {
			t.Errorf("after RemoveSplice: %+v (before the request %+v)", m, m0)
		}
		if m.BusyNs <= m0.BusyNs {
			t.Errorf("the abandoned request added no busy time: %+v", m)
		}
	})
	t.Run("answered requests are not taken out", func(t *testing.T) {
		m0 := metrics(t, d, inst)
		r := start(t)
		r.server.Write([]byte("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
		readWant(r.client, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
		r.client.Write([]byte(req)) // a second one, abandoned
		readWant(r.server, req)
		if err := d.RemoveSplice(r.fdA, r.fdB); err != nil {
			t.Fatal(err)
		}
		m := metrics(t, d, inst)
		if m.Inflight != m0.Inflight || m.RequestsIn != m0.RequestsIn+2 || m.ResponsesOut != m0.ResponsesOut+1 {
			t.Errorf("after RemoveSplice: %+v (before %+v)", m, m0)
		}
	})
	t.Run("PruneSplices", func(t *testing.T) {
		m0 := metrics(t, d, inst)
		r := start(t)
		// EPROXY dies: both sockets close without RemoveSplice.
		r.A.Close()
		r.B.Close()
		if m := metrics(t, d, inst); m.Inflight != m0.Inflight+1 {
			t.Fatalf("inflight %d before pruning, want %d", m.Inflight, m0.Inflight+1)
		}
		if n, err := d.PruneSplices(); err != nil || n != 2 {
			t.Fatalf("PruneSplices = %d, %v; want 2", n, err)
		}
		if m := metrics(t, d, inst); m.Inflight != m0.Inflight {
			t.Errorf("inflight %d after pruning, want %d", m.Inflight, m0.Inflight)
		}
	})
}

// TestForwardingAfterBothFINs: the `from` side of a Forwarding reaches
// TCP_CLOSE once both FINs are through — here EPROXY passes the client's
// half-close on to the upstream (shutdown of B) and the upstream then
// closes — and its byte count still includes the peer's FIN. Pending must
// be 0 once everything is delivered, not 1 for good (which made Wait run to
// its timeout, and EPROXY hold the connection for FlushTimeout).
func TestForwardingAfterBothFINs(t *testing.T) {
	d := loadSplice(t)
	r := newRawSplice(t)
	if err := d.AddSplice(1, r.fdA, r.fdB); err != nil {
		t.Fatal(err)
	}
	fwd, err := NewForwarding(r.fdB, r.fdA)
	if err != nil {
		t.Fatal(err)
	}
	const resp = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"
	if _, err := r.server.Write([]byte(resp)); err != nil {
		t.Fatal(err)
	}
	if got := readWant(r.client, resp); got != resp {
		t.Fatalf("client got %q", got)
	}
	// Our FIN to the upstream first, then the upstream's.
	if err := unix.Shutdown(r.fdB, unix.SHUT_WR); err != nil {
		t.Fatal(err)
	}
	r.server.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := r.server.Read(make([]byte, 1)); n != 0 || err == nil {
		t.Fatalf("upstream read %d, %v; want EOF", n, err)
	}
	r.server.Close()
	waitFor(t, "B in TCP_CLOSE", func() bool {
		ti, err := unix.GetsockoptTCPInfo(r.fdB, unix.IPPROTO_TCP, unix.TCP_INFO)
		return err == nil && ti.State == tcpClose
	})
	if n, err := fwd.Pending(); err != nil || n != 0 {
		t.Errorf("Pending with everything delivered and B closed: %d, %v; want 0", n, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if err := fwd.Wait(ctx); err != nil {
		t.Errorf("Wait: %v", err)
	}
}
