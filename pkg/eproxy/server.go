package eproxy

import (
	"golang.org/x/sys/unix"

	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spright-dev/spright/bpf"
	"github.com/spright-dev/spright/pkg/transport"

	"go.uber.org/zap"
	netheader "knative.dev/networking/pkg/http/header"
	pkghandler "knative.dev/pkg/network/handlers"
	"knative.dev/serving/pkg/queue"
	"knative.dev/serving/pkg/queue/health"
)

// Splicer joins a client connection and an upstream connection in the
// kernel (the node agent does it for EPROXY, which has no privileges), and
// takes them apart again.
type Splicer interface {
	Splice(client, upstream *net.TCPConn, proxied bool) error
	Unsplice(client, upstream *net.TCPConn) error
	UnspliceFDs(client, upstream int) error
	// Count has eBPF count what a userspace-proxied socket carries
	// ("upstream", "client" or "arrival": see AgentClient.Count).
	Count(c *net.TCPConn, side string) error
}

// maxSplicedFirstBody bounds the first request's body that EPROXY reads
// into memory before splicing; a larger (or chunked) first request makes
// that connection use the userspace proxy instead.
const maxSplicedFirstBody = 1 << 20

// activatorName is what the activator puts in K-Proxy-Request.
const activatorName = "activator"

// maxHeader bounds a first request's header block.
const maxHeader = 64 << 10

// Server is EPROXY's traffic port (QUEUE_SERVING_PORT).
type Server struct {
	UserAddr  string
	splicerMu sync.RWMutex
	splicer   Splicer // nil: every connection uses the userspace proxy
	Prober    func() bool
	Log       *zap.Logger

	drainer *pkghandler.Drainer
	http    *http.Server
	conns   chan net.Conn // connections served in userspace
	closed  chan struct{}
	once    sync.Once

	// ConnBuffer bounds the kernel buffers of the connections EPROXY
	// proxies in userspace (SO_RCVBUF upstream, SO_SNDBUF to the client;
	// the kernel doubles what is asked): with Go's 32 KiB copy buffer,
	// what a slow client makes the pod hold for it, beyond the user
	// container's own send buffer. 0: the kernel's autotuning (up to
	// net.ipv4.tcp_rmem's maximum, 32 MiB on 6.18).
	ConnBuffer int

	// FlushTimeout bounds how long a closing spliced connection waits for
	// the kernel to deliver what is still in flight (default 30s).
	FlushTimeout time.Duration

	breaker *queue.Breaker // containerConcurrency > 0
	hangups *bpf.HangupWatcher
	mu      sync.Mutex
	active  map[*splicedConn]struct{}

	// Steering (package bpf, "Steer"): the clients to steer are learned
	// from the first requests EPROXY serves itself (steer.go).
	steerMu sync.RWMutex
	steer   *steering

	// Where requests are counted (counts.go): the kernel entries read
	// through the agent, and userspace tallies for connections the kernel
	// does not count.
	ledger ledger
	// Probes the kernel counted as requests (answered on arrival-counted
	// connections): Window.Probes takes them off. Counted when they start,
	// their time as it passes, like the kernel counts them.
	probes tally
	// Activator requests the kernel counted in the pod's own entry:
	// Window.Activator moves them to the proxied part.
	activator tally
}

// NewServer builds the traffic server. prober answers Knative's readiness
// probe by probing the user container (readiness.Probe.ProbeContainer).
//
// containerConcurrency > 0 puts Knative's breaker in front of the user
// container (queue depth 10×CC, 503 when full, as queue-proxy). Spliced
// connections cannot be gated per request, so such a revision is proxied
// in userspace, and its requests are counted by eBPF as they arrive —
// before the breaker, so the autoscaler sees the queued ones as well.
func NewServer(userAddr string, splicer Splicer, prober func() bool, drainQuiet time.Duration, containerConcurrency int, log *zap.Logger) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	s := &Server{UserAddr: userAddr, splicer: splicer, Prober: prober, Log: log,
		conns: make(chan net.Conn), closed: make(chan struct{}), active: map[*splicedConn]struct{}{}, FlushTimeout: 30 * time.Second}
	if w, err := bpf.NewHangupWatcher(); err != nil {
		log.Warn("no hangup watcher: connections relayed in userspace", zap.Error(err))
	} else {
		s.hangups = w
	}
	if containerConcurrency > 0 {
		s.breaker = queue.NewBreaker(queue.BreakerParams{QueueDepth: 10 * containerConcurrency,
			MaxConcurrency: containerConcurrency, InitialCapacity: containerConcurrency})
	}
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: userAddr})
	// Upstream connections of the userspace proxy are counted by eBPF like
	// spliced ones: requests as they are written to the user container.
	// Two pools, so that a request from a client connection the kernel
	// counts goes out on an upstream connection the kernel counts, and one
	// counted in userspace on one it does not (else a request would be
	// counted twice, or its response without it).
	dialer := &net.Dialer{Timeout: 5 * time.Second, KeepAlive: 30 * time.Second,
		// Set before connect, so that the window the user container sees
		// is bounded from the start.
		Control: func(_, _ string, rc syscall.RawConn) error {
			if n := s.ConnBuffer; n > 0 {
				rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, n) })
			}
			return nil
		}}
	transport := func(count bool) *http.Transport {
		return &http.Transport{
			MaxIdleConns: 1000, MaxIdleConnsPerHost: 1000, IdleConnTimeout: 90 * time.Second,
			DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
				c, err := dialer.DialContext(ctx, network, addr)
				if err == nil && count {
					s.countConn(c, "upstream")
				}
				return c, err
			},
		}
	}
	proxy.Transport = pickTransport{kernel: transport(true), user: transport(false)}
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := r.Context().Value(connKey{}).(*countedConn); ok && s.breaker == nil {
			if bc, ok := c.Conn.(*bufConn); ok && bc.closeAfterOne {
				w.Header().Set("Connection", "close")
			}
		}
		r, done := s.countRequest(r)
		defer done()
		// What queue-proxy does to every request on its way in.
		// Full duplex: net/http would otherwise close the request body when
		// the response starts, cutting off large uploads mid-copy
		// (knative/serving#12387; queue-proxy's ENABLE_HTTP_FULL_DUPLEX).
		http.NewResponseController(w).EnableFullDuplex()
		netheader.RewriteHostOut(r)
		r.Header.Del("Knative-Serving-Revision")
		r.Header.Del("Knative-Serving-Namespace")
		if s.breaker == nil {
			proxy.ServeHTTP(w, r)
			return
		}
		if err := s.breaker.Maybe(r.Context(), func() { proxy.ServeHTTP(w, r) }); err != nil {
			if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, queue.ErrRequestQueueFull) {
				http.Error(w, err.Error(), http.StatusServiceUnavailable)
			} else {
				w.WriteHeader(http.StatusInternalServerError)
			}
		}
	})
	s.drainer = &pkghandler.Drainer{
		QuietPeriod:           drainQuiet,
		HealthCheckUAPrefixes: []string{netheader.ActivatorUserAgent, netheader.AutoscalingUserAgent},
		Inner:                 inner,
		HealthCheck:           health.ProbeHandler(prober, false),
	}
	var handler http.Handler = s.drainer
	if s.breaker != nil {
		handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if isProbe(r) && s.kernelCounted(r) {
				// The kernel counted it on arrival: taken off again.
				defer s.probes.begin()()
			}
			s.drainer.ServeHTTP(w, r)
		})
	}
	s.http = &http.Server{Handler: handler, ReadHeaderTimeout: 30 * time.Second,
		ConnContext: func(ctx context.Context, c net.Conn) context.Context {
			return context.WithValue(ctx, connKey{}, &countedConn{Conn: c})
		}}
	return s
}

type connKey struct{}

// countedConn registers a client connection for eBPF counting the first
// time it carries a proxied request (not at accept: a connection that only
// carries probes must not count their answers as responses). Behind the
// breaker it was registered at accept (arrivalConn).
type countedConn struct {
	net.Conn
	once sync.Once
	// kernel: the agent registered the connection in the entry of epoch;
	// else its requests are counted in userspace.
	kernel bool
	epoch  uint64
}

// countConn asks the agent to count what is sent on c. It reports whether
// the kernel counts c now (no agent, or the agent failed: it does not).
func (s *Server) countConn(c net.Conn, side string) bool {
	sp := s.Splicer()
	if sp == nil {
		return false
	}
	if bc, ok := c.(*bufConn); ok {
		c = bc.Conn
	}
	if ac, ok := c.(arrivalConn); ok {
		c = ac.Conn
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return false
	}
	if err := sp.Count(tc, side); err != nil {
		s.Log.Debug("cannot count a userspace connection in eBPF: counting it in userspace", zap.Error(err))
		return false
	}
	return true
}

// arrivalConn is a client connection behind the breaker, registered for
// counting at accept: kernel says whether the agent took it.
type arrivalConn struct {
	net.Conn
	kernel bool
	epoch  uint64
}

// countArrival registers c to be counted from its first byte (breaker).
func (s *Server) countArrival(c net.Conn) net.Conn {
	epoch := s.countingEpoch()
	return arrivalConn{Conn: c, kernel: s.countConn(c, "arrival"), epoch: epoch}
}

// conn returns r's client connection, its counting decided: behind the
// breaker at accept, else now, at its first proxied request.
func (s *Server) conn(r *http.Request) *countedConn {
	c, ok := r.Context().Value(connKey{}).(*countedConn)
	if !ok {
		return nil
	}
	c.once.Do(func() {
		inner := c.Conn
		if bc, ok := inner.(*bufConn); ok {
			inner = bc.Conn
		}
		if ac, ok := inner.(arrivalConn); ok {
			c.kernel, c.epoch = ac.kernel, ac.epoch
			return
		}
		if s.breaker == nil {
			c.epoch = s.countingEpoch()
			c.kernel = s.countConn(c.Conn, "client")
		}
	})
	return c
}

// kernelCounted: r's connection is counted by the kernel entry read now.
func (s *Server) kernelCounted(r *http.Request) bool {
	c := s.conn(r)
	return c != nil && c.kernel && c.epoch == s.countingEpoch()
}

type countModeKey struct{}

// countRequest counts a request the userspace proxy passes on, where the
// kernel does not: on a connection the kernel does not count (no agent at
// its start, or an entry no longer read), in userspace; the activator's on
// a connection counted in the own entry, as moved to the proxied part.
// (Probes never get here: the drainer answers them.) It returns the request to
// pass on (it says which upstream pool to use) and the func that ends the
// count.
func (s *Server) countRequest(r *http.Request) (*http.Request, func()) {
	kernel := s.kernelCounted(r)
	// Behind the breaker the kernel counts on arrival, never upstream.
	r = r.WithContext(context.WithValue(r.Context(), countModeKey{}, kernel && s.breaker == nil))
	activator := netheader.GetKnativeProxyValue(r) == activatorName
	switch {
	case !kernel && activator:
		return r, s.ledger.userProxied.begin()
	case !kernel:
		return r, s.ledger.userOwn.begin()
	case activator:
		return r, s.activator.begin()
	}
	return r, func() {}
}

// pickTransport sends a request on an upstream connection counted like its
// client connection (countRequest).
type pickTransport struct{ kernel, user *http.Transport }

func (p pickTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	if k, _ := r.Context().Value(countModeKey{}).(bool); k {
		return p.kernel.RoundTrip(r)
	}
	return p.user.RoundTrip(r)
}

// Probes reports the Knative probes the kernel counted as requests, and
// the time spent answering them (see Window.Probes).
func (s *Server) Probes() (count, busyNs uint64) { return s.probes.read() }

// ProbesInFlight reports the probes of Probes being answered now (see
// Window.ProbesInFlight).
func (s *Server) ProbesInFlight() int64 {
	s.probes.mu.Lock()
	defer s.probes.mu.Unlock()
	return s.probes.inflight
}

// Activator reports the activator's requests the kernel counted in the
// pod's own entry, and their time (see Window.Activator).
func (s *Server) Activator() (count, busyNs uint64) { return s.activator.read() }

// Splicer is the agent connections are spliced with now (nil: none).
func (s *Server) Splicer() Splicer {
	s.splicerMu.RLock()
	defer s.splicerMu.RUnlock()
	return s.splicer
}

// SetSplicer switches to another agent (after the agent restarted);
// connections spliced before keep the agent that spliced them.
func (s *Server) SetSplicer(sp Splicer) {
	s.splicerMu.Lock()
	s.splicer = sp
	s.splicerMu.Unlock()
}

// Drainer is the probe/drain state shared with the admin port.
func (s *Server) Drainer() *pkghandler.Drainer { return s.drainer }

// Serve accepts connections on l until Close.
func (s *Server) Serve(l net.Listener) error {
	go s.http.Serve(chanListener{s: s, addr: l.Addr()})
	for {
		c, err := l.Accept()
		if err != nil {
			select {
			case <-s.closed:
				return nil
			default:
				return err
			}
		}
		if s.breaker != nil {
			// Counted from its first byte: requests as they arrive.
			c = s.countArrival(c)
		}
		go s.handle(c)
	}
}

// Close stops the userspace server and closes spliced connections.
func (s *Server) Close() error {
	s.once.Do(func() { close(s.closed) })
	s.mu.Lock()
	active := make([]*splicedConn, 0, len(s.active))
	for c := range s.active {
		active = append(active, c)
	}
	s.mu.Unlock()
	for _, c := range active {
		s.finish(c, false)
	}
	if s.hangups != nil {
		s.hangups.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	return s.http.Shutdown(ctx)
}

// handle classifies a new connection by its first request: Knative probes
// (and anything EPROXY cannot splice) are served in userspace; traffic is
// spliced to the user container in the kernel.
func (s *Server) handle(c net.Conn) {
	c.SetReadDeadline(time.Now().Add(30 * time.Second))
	br := bufio.NewReaderSize(c, 16<<10)
	hdrLen, req, err := peekRequest(br)
	if err != nil {
		if !errors.Is(err, io.EOF) {
			s.Log.Debug("bad first request", zap.Error(err))
			io.WriteString(c, "HTTP/1.1 400 Bad Request\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\n"+err.Error()+"\n")
		}
		c.Close()
		return
	}
	c.SetReadDeadline(time.Time{})
	if st := s.steering(); st != nil && s.breaker == nil {
		if _, port, err := net.SplitHostPort(s.UserAddr); err == nil && st.handoff(c, req, port) {
			// Its client is steered from now on: this request is answered
			// here, then the connection closes and the next one is the
			// kernel's (see steering).
			s.boundSendBuffer(c)
			select {
			case s.conns <- &bufConn{Conn: c, r: br, closeAfterOne: true}:
			case <-s.closed:
				c.Close()
			}
			return
		}
	}
	tc, isTCP := c.(*net.TCPConn)
	sp := s.Splicer()
	// With steering on, what still reaches EPROXY (the activator, a
	// client's connection that began with a probe) is proxied in
	// userspace: a splice has no backpressure (package bpf, "There is no
	// backpressure through a splice"), and the hot path is steered.
	if sp == nil || s.hangups == nil || s.breaker != nil || !isTCP || isProbe(req) || !spliceable(req) || s.steering() != nil {
		s.userspaceConn(c, br)
		return
	}
	if err := s.splice(sp, tc, br, hdrLen, req); err != nil {
		s.Log.Warn("cannot splice connection", zap.Error(err))
	}
}

func (s *Server) userspaceConn(c net.Conn, br *bufio.Reader) {
	s.boundSendBuffer(c)
	select {
	case s.conns <- &bufConn{Conn: c, r: br}:
	case <-s.closed:
		c.Close()
	}
}

// splice reads the whole first request, has the agent join the client and
// upstream sockets in the kernel, writes the first request upstream (the
// kernel's sk_msg program counts it like every later one) and from then on
// only watches for the end of the connection. The order of the steps is
// what keeps bytes in order (see package bpf, "Bytes queued before the
// splice").
func (s *Server) splice(sp Splicer, client *net.TCPConn, br *bufio.Reader, hdrLen int, req *http.Request) error {
	first := make([]byte, hdrLen+int(req.ContentLength))
	if _, err := io.ReadFull(br, first); err != nil {
		client.Close()
		return fmt.Errorf("read first request: %w", err)
	}
	up, err := net.DialTimeout("tcp", s.UserAddr, 5*time.Second)
	if err != nil {
		io.WriteString(client, "HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\nuser container unreachable\n")
		client.Close()
		return fmt.Errorf("dial user container %s: %w", s.UserAddr, err)
	}
	upstream := up.(*net.TCPConn)
	// Bytes past the first request (pipelining, or a body still arriving)
	// would race with our own write of the first request: relay instead.
	if n := br.Buffered(); n > 0 || queued(client) > 0 {
		extra, _ := br.Peek(br.Buffered())
		s.relay(client, upstream, append(first, extra...))
		return nil
	}
	// Once spliced, the sockets are kept as dups and the TCPConns closed
	// (see watch). Take the dups now, so that the Forwardings, which follow
	// the sockets by fd number for the whole life of the connection, name
	// fds that stay open until finish closes them: the TCPConns' own fd
	// numbers are free again once the splice runs and soon belong to the
	// next connection (a flush measured on them failed at once, and the
	// response still in the kernel was thrown away by the unsplice).
	cf, cfd, err := dupSocket(client)
	if err != nil {
		s.relay(client, upstream, first)
		return fmt.Errorf("%w (relaying the connection in userspace)", err)
	}
	uf, ufd, err := dupSocket(upstream)
	if err != nil {
		cf.Close()
		s.relay(client, upstream, first)
		return fmt.Errorf("%w (relaying the connection in userspace)", err)
	}
	// A connection whose first request came from the activator carries the
	// activator's traffic: counted as proxied (the activator keeps its
	// connections to a pod for itself).
	proxied := netheader.GetKnativeProxyValue(req) == activatorName
	if err := sp.Splice(client, upstream, proxied); err != nil {
		cf.Close()
		uf.Close()
		s.relay(client, upstream, first)
		return fmt.Errorf("agent: %w (relaying the connection in userspace)", err)
	}
	up2down, err := bpf.NewForwarding(ufd, cfd)
	if err == nil {
		_, err = upstream.Write(first)
	}
	var down2up *bpf.Forwarding
	if err == nil {
		down2up, err = bpf.NewForwarding(cfd, ufd)
	}
	if err == nil {
		err = bpf.KickSplice(cfd)
	}
	if err != nil {
		sp.Unsplice(client, upstream)
		cf.Close()
		uf.Close()
		client.Close()
		upstream.Close()
		return fmt.Errorf("start spliced connection: %w", err)
	}
	// From here on only the dups are used: no goroutine stays parked on
	// the sockets (see watch).
	client.Close()
	upstream.Close()
	s.watch(&splicedConn{client: cf, upstream: uf, cfd: cfd, ufd: ufd, down2up: down2up, up2down: up2down, splicer: sp})
	return nil
}

// rawSocket is a dup of a spliced socket's fd that Go's runtime does not
// know: neither the netpoller (a File from (*net.TCPConn).File, or
// os.NewFile on a non-blocking fd, is registered there, and the kernel's
// data-ready signal after every forwarded chunk would wake it) nor the GC
// (closed explicitly by finish).
type rawSocket int

func (r rawSocket) Close() error { return unix.Close(int(r)) }

// dupSocket returns a dup of c's socket (close-on-exec) and its fd number,
// valid until the rawSocket is closed.
func dupSocket(c *net.TCPConn) (rawSocket, int, error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return -1, -1, fmt.Errorf("dup spliced socket: %w", err)
	}
	fd, dupErr := -1, error(nil)
	if err := raw.Control(func(v uintptr) {
		fd, dupErr = unix.FcntlInt(v, unix.F_DUPFD_CLOEXEC, 0)
	}); err != nil {
		return -1, -1, fmt.Errorf("dup spliced socket: %w", err)
	}
	if dupErr != nil {
		return -1, -1, fmt.Errorf("dup spliced socket: %w", dupErr)
	}
	return rawSocket(fd), fd, nil
}

// splicedConn is a connection pair the kernel forwards between.
type splicedConn struct {
	client, upstream rawSocket // dups of the sockets (the TCPConns are closed)
	cfd, ufd         int       // their fds, open until finish closes them
	down2up, up2down *bpf.Forwarding
	splicer          Splicer // the agent that spliced it
	once             sync.Once

	// The client's half-close is passed on by a goroutine that uses ufd;
	// finish stops it and waits for it before closing the fds, so that it
	// never acts on an fd number that another connection reuses.
	mu       sync.Mutex
	closing  bool
	stop     context.CancelFunc // ends the client flush (done: closing)
	done     context.Context
	flushing sync.WaitGroup
}

// watch hands the pair to the hangup watcher: no goroutine reads the
// sockets, so an EPROXY with spliced connections sleeps until one of them
// closes.
func (s *Server) watch(sc *splicedConn) {
	sc.done, sc.stop = context.WithCancel(context.Background())
	s.mu.Lock()
	s.active[sc] = struct{}{}
	s.mu.Unlock()
	// Client done sending: pass its FIN on once its bytes are through, and
	// keep waiting for the response (clients may half-close).
	err := s.hangups.Add(sc.cfd, func() {
		sc.mu.Lock()
		defer sc.mu.Unlock()
		if sc.closing {
			return
		}
		sc.flushing.Add(1)
		go func() {
			defer sc.flushing.Done()
			ctx, cancel := context.WithTimeout(sc.done, s.FlushTimeout)
			defer cancel()
			sc.down2up.Wait(ctx)
			if sc.done.Err() == nil { // else finish closes the connection
				unix.Shutdown(sc.ufd, unix.SHUT_WR)
			}
		}()
	})
	if err == nil {
		// Upstream done: deliver what it sent, then end the connection.
		err = s.hangups.Add(sc.ufd, func() { go s.finish(sc, true) })
	}
	if err != nil {
		// Unwatched, the pair would never be closed.
		s.Log.Warn("cannot watch a spliced connection: closing it", zap.Error(err))
		go s.finish(sc, false)
	}
}

// finish ends a spliced connection: optionally waits (bounded) until the
// kernel has delivered what the upstream sent, removes the splice and
// closes both sockets.
func (s *Server) finish(sc *splicedConn, flush bool) {
	sc.once.Do(func() {
		if flush {
			ctx, cancel := context.WithTimeout(context.Background(), s.FlushTimeout)
			if err := sc.up2down.Wait(ctx); err != nil {
				s.Log.Debug("spliced response not flushed", zap.Error(err))
			}
			cancel()
		}
		s.hangups.Remove(sc.cfd)
		s.hangups.Remove(sc.ufd)
		sc.mu.Lock()
		sc.closing = true
		sc.mu.Unlock()
		sc.stop()
		sc.flushing.Wait()
		sc.splicer.UnspliceFDs(sc.cfd, sc.ufd)
		sc.client.Close()
		sc.upstream.Close()
		s.mu.Lock()
		delete(s.active, sc)
		s.mu.Unlock()
	})
}

// boundSendBuffer applies ConnBuffer to a client connection EPROXY
// answers in userspace.
func (s *Server) boundSendBuffer(c net.Conn) {
	if tc, ok := c.(*net.TCPConn); ok && s.ConnBuffer > 0 {
		tc.SetWriteBuffer(s.ConnBuffer)
	}
}

// queued is how many bytes wait unread in c's receive queue (SIOCINQ).
func queued(c *net.TCPConn) int {
	n := -1
	transport.ControlFD(c, func(fd int) error {
		v, err := unix.IoctlGetInt(fd, unix.SIOCINQ)
		if err == nil {
			n = v
		}
		return err
	})
	return n
}

// relay is the userspace fallback when the agent cannot splice.
func (s *Server) relay(client, upstream *net.TCPConn, first []byte) {
	upstream.Write(first)
	go func() { io.Copy(upstream, client); upstream.CloseWrite() }()
	go func() { io.Copy(client, upstream); client.Close(); upstream.Close() }()
}

// peekRequest parses the first request's header block without consuming
// it: hdrLen is the size of the block including the blank line.
func peekRequest(br *bufio.Reader) (int, *http.Request, error) {
	for n := 1; ; {
		b, err := br.Peek(n)
		if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 {
			hdr := b[:i+4]
			req, perr := http.ReadRequest(bufio.NewReader(bytes.NewReader(hdr)))
			if perr != nil {
				return 0, nil, fmt.Errorf("malformed request: %w", perr)
			}
			return len(hdr), req, nil
		}
		if err != nil {
			if errors.Is(err, bufio.ErrBufferFull) {
				return 0, nil, fmt.Errorf("request header larger than %d bytes", br.Size())
			}
			if len(b) == 0 {
				return 0, nil, io.EOF
			}
			return 0, nil, fmt.Errorf("incomplete request header: %w", err)
		}
		if n >= br.Size() || n >= maxHeader {
			return 0, nil, fmt.Errorf("request header larger than %d bytes", min(br.Size(), maxHeader))
		}
		// Grow to what is buffered, or one more byte to wait for data.
		if nb := br.Buffered(); nb > n {
			n = nb
		} else {
			n++
		}
	}
}

// isProbe: Knative's probes are answered by EPROXY itself.
func isProbe(r *http.Request) bool {
	if netheader.IsProbe(r) {
		return true
	}
	ua := r.Header.Get(netheader.UserAgentKey)
	return strings.HasPrefix(ua, netheader.ActivatorUserAgent) || strings.HasPrefix(ua, netheader.AutoscalingUserAgent)
}

// spliceable: a first request EPROXY can read whole before splicing.
func spliceable(r *http.Request) bool {
	if len(r.TransferEncoding) > 0 || r.ContentLength < 0 || r.ContentLength > maxSplicedFirstBody {
		return false
	}
	// Upgrades (websocket, h2c), HTTP/1.0 keep-alive quirks, and clients
	// waiting for 100 Continue before they send the body: userspace.
	if r.Header.Get("Upgrade") != "" || r.Header.Get("Expect") != "" || r.ProtoMajor != 1 || r.ProtoMinor != 1 {
		return false
	}
	return true
}

// bufConn replays what the classifier buffered.
type bufConn struct {
	net.Conn
	r *bufio.Reader
	// closeAfterOne: answer one request with Connection: close (its
	// client was just steered).
	closeAfterOne bool
}

func (c *bufConn) Read(p []byte) (int, error) { return c.r.Read(p) }

// chanListener feeds classified connections to the userspace http.Server.
type chanListener struct {
	s    *Server
	addr net.Addr
}

func (l chanListener) Accept() (net.Conn, error) {
	select {
	case c := <-l.s.conns:
		return c, nil
	case <-l.s.closed:
		return nil, net.ErrClosed
	}
}
func (l chanListener) Close() error   { return nil }
func (l chanListener) Addr() net.Addr { return l.addr }
