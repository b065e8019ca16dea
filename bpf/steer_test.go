package bpf

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// netnsForTest creates a new network namespace with lo up and returns a
// function running f on a thread inside it (sockets f creates live there).
func netnsForTest(t *testing.T) func(f func()) {
	t.Helper()
	nsc := make(chan int, 1)
	errc := make(chan error, 1)
	go func() {
		// The thread goes back to its namespace before it is unlocked: one
		// left in another would end with the goroutine, except the
		// process's main thread, which Go keeps (wedged) — and
		// /proc/self/net, which tests read, shows the main thread's.
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(orig)
		if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer func() {
			if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
				runtime.UnlockOSThread()
			} // else the thread stays locked and ends with the goroutine
		}()
		fd, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			errc <- err
			return
		}
		// lo up, with a plain ioctl.
		s, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
		if err == nil {
			ifr, _ := unix.NewIfreq("lo")
			if err = unix.IoctlIfreq(s, unix.SIOCGIFFLAGS, ifr); err == nil {
				ifr.SetUint16(ifr.Uint16() | unix.IFF_UP)
				err = unix.IoctlIfreq(s, unix.SIOCSIFFLAGS, ifr)
			}
			unix.Close(s)
		}
		if err != nil {
			errc <- err
			return
		}
		nsc <- fd
	}()
	var nsfd int
	select {
	case err := <-errc:
		t.Skipf("cannot make a network namespace: %v", err)
	case nsfd = <-nsc:
	}
	t.Cleanup(func() { unix.Close(nsfd) })
	return func(f func()) {
		if err := inNetns(nsfd, func() error { f(); return nil }); err != nil {
			t.Fatal(err)
		}
	}
}

// steerPod is a pod stand-in: EPROXY's listener on 8012 answering
// "eproxy", the user container on 8080 answering "user" (and holding
// /hold requests until released).
type steerPod struct {
	eproxy, user net.Listener
	release      chan struct{}
	held         chan struct{}
	in           func(func())
	host         string
}

func newSteerPod(t *testing.T, host string) *steerPod {
	p := &steerPod{in: netnsForTest(t), release: make(chan struct{}), held: make(chan struct{}, 16), host: host}
	var err1, err2 error
	p.in(func() {
		p.eproxy, err1 = net.Listen("tcp", net.JoinHostPort(host, "8012"))
		p.user, err2 = net.Listen("tcp", net.JoinHostPort(host, "8080"))
	})
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	answer := func(who string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/hold" {
				p.held <- struct{}{}
				<-p.release
				panic(http.ErrAbortHandler) // close without answering
			}
			io.Copy(io.Discard, r.Body)
			io.WriteString(w, who)
		})
	}
	go http.Serve(p.eproxy, answer("eproxy"))
	go http.Serve(p.user, answer("user"))
	t.Cleanup(func() { p.eproxy.Close(); p.user.Close() })
	return p
}

// dial opens a keep-alive connection to the pod's port 8012, inside it.
func (p *steerPod) dial(t *testing.T) net.Conn {
	t.Helper()
	var c net.Conn
	var err error
	p.in(func() { c, err = net.Dial("tcp", net.JoinHostPort(p.host, "8012")) })
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// get sends one request on c and returns the answer's body.
func get(t *testing.T, c net.Conn, br *bufio.Reader, path, body string) string {
	t.Helper()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	fmt.Fprintf(c, "POST %s HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%s", path, len(body), body)
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	return string(b)
}

func listenerFD(t *testing.T, l net.Listener) int {
	t.Helper()
	raw, err := l.(*net.TCPListener).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	fd := -1
	raw.Control(func(v uintptr) { fd = int(v) })
	return fd
}

func TestSteer(t *testing.T) {
	d, err := Load(pinDir(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	defer d.Unpin()
	const inst = 4242
	if err := d.AddInstanceMetrics(inst); err != nil {
		t.Fatal(err)
	}
	p := newSteerPod(t, "127.0.0.1")
	cookie, err := d.Steer(inst, listenerFD(t, p.eproxy), 8080)
	if err != nil {
		t.Fatal(err)
	}
	pins, _ := filepath.Glob(filepath.Join(d.PinDir(), fmt.Sprintf("steer-%d-*", cookie)))
	if len(pins) != 1 { // lo: ingress only (loopback packets pass it both ways)
		t.Errorf("pinned links %v, want lo's ingress", pins)
	}

	// No steered source yet: everything reaches EPROXY, nothing is counted.
	early := p.dial(t)
	earlyR := bufio.NewReader(early)
	if got := get(t, early, earlyR, "/", "x"); got != "eproxy" {
		t.Fatalf("unsteered source answered by %q, want eproxy", got)
	}
	if err := d.SteerSource(cookie, netip.MustParseAddr("127.0.0.1"), true); err != nil {
		t.Fatal(err)
	}
	// A connection opened before the source was steered stays EPROXY's.
	if got := get(t, early, earlyR, "/", "x"); got != "eproxy" {
		t.Fatalf("connection opened before steering answered by %q, want eproxy", got)
	}

	// Steered: the user container answers on the same connection, every
	// request and response counted once, bodies of both sizes.
	c := p.dial(t)
	br := bufio.NewReader(c)
	const n = 500
	big := strings.Repeat("b", 10240)
	for i := range n {
		body := "x"
		if i%50 == 0 {
			body = big
		}
		if got := get(t, c, br, "/", body); got != "user" {
			t.Fatalf("request %d on a steered connection answered by %q, want user", i, got)
		}
	}
	m := metrics(t, d, inst)
	if m.RequestsIn != n || m.ResponsesOut != n || m.Inflight != 0 {
		t.Fatalf("after %d steered requests: %+v, want %d in, %d out, 0 in flight", n, m, n, n)
	}

	// A request in flight is counted in flight, and a connection the user
	// container drops unanswered takes it out again.
	held := p.dial(t)
	fmt.Fprintf(held, "POST /hold HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n")
	<-p.held
	if m := metrics(t, d, inst); m.Inflight != 1 || m.RequestsIn != n+1 {
		t.Fatalf("held request: %+v, want 1 in flight", m)
	}
	close(p.release)
	held.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, held) // until the user container's close
	deadline := time.Now().Add(2 * time.Second)
	for metrics(t, d, inst).Inflight != 0 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if m := metrics(t, d, inst); m.Inflight != 0 || m.ResponsesOut != n {
		t.Fatalf("after the user container dropped a request: %+v, want 0 in flight, %d out", m, n)
	}

	// Draining: new connections reach EPROXY, steered ones keep going.
	if err := d.SetSteerEnabled(cookie, false); err != nil {
		t.Fatal(err)
	}
	drainC := p.dial(t)
	if got := get(t, drainC, bufio.NewReader(drainC), "/", "x"); got != "eproxy" {
		t.Fatalf("new connection while steering is off answered by %q, want eproxy", got)
	}
	if got := get(t, c, br, "/", "x"); got != "user" {
		t.Fatalf("steered connection after steering went off answered by %q, want user", got)
	}
	if err := d.SetSteerEnabled(cookie, true); err != nil {
		t.Fatal(err)
	}
	// A source taken out: its new connections are EPROXY's again.
	if err := d.SteerSource(cookie, netip.MustParseAddr("127.0.0.1"), false); err != nil {
		t.Fatal(err)
	}
	late := p.dial(t)
	if got := get(t, late, bufio.NewReader(late), "/", "x"); got != "eproxy" {
		t.Fatalf("removed source answered by %q, want eproxy", got)
	}
	if m := metrics(t, d, inst); m.RequestsIn != n+2 || m.ResponsesOut != n+1 {
		t.Fatalf("EPROXY's own connections were counted by the steer program: %+v", m)
	}

	// A new registration (the agent or EPROXY restarted: a new instance)
	// takes the namespace's counts over, those of connections steered
	// before included; the namespace's count of steered flows goes on.
	before, err := d.SteerStats(cookie)
	if err != nil {
		t.Fatal(err)
	}
	const inst2 = 4244
	if err := d.AddInstanceMetrics(inst2); err != nil {
		t.Fatal(err)
	}
	if _, err := d.Steer(inst2, listenerFD(t, p.eproxy), 8080); err != nil {
		t.Fatal(err)
	}
	if got := get(t, c, br, "/", "x"); got != "user" {
		t.Fatalf("steered connection after re-registration answered by %q, want user", got)
	}
	if m := metrics(t, d, inst2); m.RequestsIn != 1 || m.ResponsesOut != 1 {
		t.Fatalf("a connection steered before the re-registration counted %+v for the new instance, want 1 in, 1 out", m)
	}
	if after, err := d.SteerStats(cookie); err != nil || after.Connections != before.Connections || after.Connections < 2 {
		t.Fatalf("steered connections %d before, %+v (%v) after the re-registration", before.Connections, after, err)
	}

	if err := d.Unsteer(cookie); err != nil {
		t.Fatal(err)
	}
	if pins, _ := filepath.Glob(filepath.Join(d.PinDir(), "steer-*")); len(pins) != 0 {
		t.Errorf("pins left after Unsteer: %v", pins)
	}
	if _, err := os.Stat(d.PinDir()); err != nil {
		t.Fatal(err)
	}
}

// TestSteerIPv6: the same on ::1 (the IPv6 header, 16-byte addresses).
func TestSteerIPv6(t *testing.T) {
	d, err := Load(pinDir(t))
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	defer d.Unpin()
	const inst = 4343
	if err := d.AddInstanceMetrics(inst); err != nil {
		t.Fatal(err)
	}
	p := newSteerPod(t, "::1")
	cookie, err := d.Steer(inst, listenerFD(t, p.eproxy), 8080)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.SteerSource(cookie, netip.MustParseAddr("::1"), true); err != nil {
		t.Fatal(err)
	}
	c := p.dial(t)
	br := bufio.NewReader(c)
	for i := range 100 {
		if got := get(t, c, br, "/", "x"); got != "user" {
			t.Fatalf("request %d on a steered IPv6 connection answered by %q, want user", i, got)
		}
	}
	if m := metrics(t, d, inst); m.RequestsIn != 100 || m.ResponsesOut != 100 || m.Inflight != 0 {
		t.Fatalf("after 100 steered IPv6 requests: %+v", m)
	}
	if err := d.SteerSource(cookie, netip.MustParseAddr("::1"), false); err != nil {
		t.Fatal(err)
	}
	other := p.dial(t)
	if got := get(t, other, bufio.NewReader(other), "/", "x"); got != "eproxy" {
		t.Fatalf("unsteered IPv6 client answered by %q, want eproxy", got)
	}
}
