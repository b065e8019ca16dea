package eproxy

import (
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
	"time"

	"go.uber.org/zap"
	netheader "knative.dev/networking/pkg/http/header"
	pkghandler "knative.dev/pkg/network/handlers"
	"knative.dev/serving/pkg/queue/health"
)

// Splicer joins a client connection and an upstream connection in the
// kernel (the node agent does it for EPROXY, which has no privileges).
type Splicer interface {
	Splice(client, upstream *net.TCPConn) error
}

// maxSplicedFirstBody bounds the first request's body that EPROXY reads
// into memory before splicing; a larger (or chunked) first request makes
// that connection use the userspace proxy instead.
const maxSplicedFirstBody = 1 << 20

// maxHeader bounds a first request's header block.
const maxHeader = 64 << 10

// Server is EPROXY's traffic port (QUEUE_SERVING_PORT).
type Server struct {
	UserAddr string
	Splicer  Splicer // nil: every connection uses the userspace proxy
	Prober   func() bool
	Log      *zap.Logger

	drainer *pkghandler.Drainer
	http    *http.Server
	conns   chan net.Conn // connections served in userspace
	closed  chan struct{}
	once    sync.Once

	mu     sync.Mutex
	active map[*net.TCPConn]struct{}

	// Spliced and Userspace count connections by path (diagnostics).
	statMu    sync.Mutex
	spliced   int
	userspace int
}

// NewServer builds the traffic server. prober answers Knative's readiness
// probe by probing the user container (readiness.Probe.ProbeContainer).
func NewServer(userAddr string, splicer Splicer, prober func() bool, drainQuiet time.Duration, log *zap.Logger) *Server {
	if log == nil {
		log = zap.NewNop()
	}
	s := &Server{UserAddr: userAddr, Splicer: splicer, Prober: prober, Log: log,
		conns: make(chan net.Conn), closed: make(chan struct{}), active: map[*net.TCPConn]struct{}{}}
	proxy := httputil.NewSingleHostReverseProxy(&url.URL{Scheme: "http", Host: userAddr})
	inner := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// What queue-proxy does to every request on its way in.
		// Full duplex: net/http would otherwise close the request body when
		// the response starts, cutting off large uploads mid-copy
		// (knative/serving#12387; queue-proxy's ENABLE_HTTP_FULL_DUPLEX).
		http.NewResponseController(w).EnableFullDuplex()
		netheader.RewriteHostOut(r)
		r.Header.Del("Knative-Serving-Revision")
		r.Header.Del("Knative-Serving-Namespace")
		proxy.ServeHTTP(w, r)
	})
	s.drainer = &pkghandler.Drainer{
		QuietPeriod:           drainQuiet,
		HealthCheckUAPrefixes: []string{netheader.ActivatorUserAgent, netheader.AutoscalingUserAgent},
		Inner:                 inner,
		HealthCheck:           health.ProbeHandler(prober, false),
	}
	s.http = &http.Server{Handler: s.drainer, ReadHeaderTimeout: 30 * time.Second}
	return s
}

// Drainer is the probe/drain state shared with the admin port.
func (s *Server) Drainer() *pkghandler.Drainer { return s.drainer }

// Counts returns how many connections were spliced and how many served in userspace.
func (s *Server) Counts() (spliced, userspace int) {
	s.statMu.Lock()
	defer s.statMu.Unlock()
	return s.spliced, s.userspace
}

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
		go s.handle(c)
	}
}

// Close stops the userspace server and closes spliced connections.
func (s *Server) Close() error {
	s.once.Do(func() { close(s.closed) })
	s.mu.Lock()
	for c := range s.active {
		c.Close()
	}
	s.mu.Unlock()
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
	tc, isTCP := c.(*net.TCPConn)
	if s.Splicer == nil || !isTCP || isProbe(req) || !spliceable(req) {
		s.userspaceConn(c, br)
		return
	}
	if err := s.splice(tc, br, hdrLen, req); err != nil {
		s.Log.Warn("cannot splice connection", zap.Error(err))
	}
}

func (s *Server) userspaceConn(c net.Conn, br *bufio.Reader) {
	s.statMu.Lock()
	s.userspace++
	s.statMu.Unlock()
	select {
	case s.conns <- &bufConn{Conn: c, r: br}:
	case <-s.closed:
		c.Close()
	}
}

// splice reads the whole first request, has the agent join the client and
// upstream sockets, then writes the first request upstream (the kernel's
// sk_msg program counts it) and lets the kernel do the rest.
func (s *Server) splice(client *net.TCPConn, br *bufio.Reader, hdrLen int, req *http.Request) error {
	up, err := net.DialTimeout("tcp", s.UserAddr, 5*time.Second)
	if err != nil {
		io.WriteString(client, "HTTP/1.1 502 Bad Gateway\r\nConnection: close\r\nContent-Type: text/plain\r\n\r\nuser container unreachable\n")
		client.Close()
		return fmt.Errorf("dial user container %s: %w", s.UserAddr, err)
	}
	upstream := up.(*net.TCPConn)
	first := make([]byte, hdrLen+int(req.ContentLength))
	if _, err := io.ReadFull(br, first); err != nil {
		client.Close()
		upstream.Close()
		return fmt.Errorf("read first request: %w", err)
	}
	// Pipelined bytes already read past the first request go up too.
	if n := br.Buffered(); n > 0 {
		extra, _ := br.Peek(n)
		first = append(first, extra...)
	}
	if err := s.Splicer.Splice(client, upstream); err != nil {
		// Degrade, do not fail: relay this connection in userspace.
		s.relay(client, upstream, first)
		return fmt.Errorf("agent: %w (relaying the connection in userspace)", err)
	}
	s.statMu.Lock()
	s.spliced++
	s.statMu.Unlock()
	s.track(client, upstream)
	if _, err := upstream.Write(first); err != nil {
		client.Close()
		upstream.Close()
		return fmt.Errorf("write first request upstream: %w", err)
	}
	// From here the kernel forwards both ways. Each side is read only to
	// learn when it closes: the spliced bytes never reach these reads.
	go closeTogether(client, upstream, s.untrack)
	go closeTogether(upstream, client, nil)
	return nil
}

func (s *Server) track(a, b *net.TCPConn) {
	s.mu.Lock()
	s.active[a], s.active[b] = struct{}{}, struct{}{}
	s.mu.Unlock()
}

func (s *Server) untrack(a, b *net.TCPConn) {
	s.mu.Lock()
	delete(s.active, a)
	delete(s.active, b)
	s.mu.Unlock()
}

// closeTogether waits for a to end and closes both.
func closeTogether(a, b *net.TCPConn, done func(a, b *net.TCPConn)) {
	var buf [512]byte
	for {
		if _, err := a.Read(buf[:]); err != nil {
			break
		}
		// Bytes here mean the kernel passed data to userspace instead of
		// redirecting it: only possible if the splice was removed. Drop.
	}
	a.Close()
	b.Close()
	if done != nil {
		done(a, b)
	}
}

// relay is the userspace fallback when the agent cannot splice.
func (s *Server) relay(client, upstream *net.TCPConn, first []byte) {
	s.statMu.Lock()
	s.userspace++
	s.statMu.Unlock()
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
	// Upgrades (websocket, h2c) and HTTP/1.0 keep-alive quirks: userspace.
	if r.Header.Get("Upgrade") != "" || r.ProtoMajor != 1 || r.ProtoMinor != 1 {
		return false
	}
	return true
}

// bufConn replays what the classifier buffered.
type bufConn struct {
	net.Conn
	r *bufio.Reader
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
