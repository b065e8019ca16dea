package coap

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	coapnet "github.com/plgd-dev/go-coap/v3/net"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"
	"github.com/plgd-dev/go-coap/v3/net/responsewriter"
	"github.com/plgd-dev/go-coap/v3/options"
	"github.com/plgd-dev/go-coap/v3/udp"
	udpClient "github.com/plgd-dev/go-coap/v3/udp/client"
	udpServer "github.com/plgd-dev/go-coap/v3/udp/server"
	"go.uber.org/zap"

	"github.com/spright-dev/spright/pkg/adapter"
)

// Config configures the CoAP front end.
type Config struct {
	// Chains served; a request goes to the first chain whose CoAP adapter
	// takes it.
	Chains []*adapter.Chain
	// MaxMessageSize bounds a request, blockwise transfers included
	// (default 64 KiB). Payloads larger than the chain's slot get 4.13.
	MaxMessageSize uint32
	Logger         *zap.Logger
}

// Server is the gateway's CoAP-over-UDP front end (go-coap does the
// messaging layer: confirmable/non-confirmable exchanges, deduplication,
// piggybacked ACKs, blockwise transfer, and 4.02 Bad Option for unknown
// critical options). Each request goes through the chain's CoAP adapter
// and the chain; the answer is the response.
type Server struct {
	cfg  Config
	log  *zap.Logger
	srv  *udpServer.Server
	ctx  context.Context
	stop context.CancelFunc
	ln   *coapnet.UDPConn
	done chan struct{}
	tr   transfers

	Requests atomic.Uint64 // requests handled
	Failed   atomic.Uint64 // requests answered with 4.xx/5.xx
}

// NewServer makes a CoAP front end.
func NewServer(cfg Config) *Server {
	if cfg.MaxMessageSize == 0 {
		cfg.MaxMessageSize = 64 * 1024
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	ctx, stop := context.WithCancel(context.Background())
	s := &Server{cfg: cfg, log: cfg.Logger, ctx: ctx, stop: stop, done: make(chan struct{})}
	s.srv = udp.NewServer(
		options.WithHandlerFunc(s.handle),
		options.WithContext(ctx),
		options.WithMaxMessageSize(cfg.MaxMessageSize),
		// Block1 is reassembled by the server (block1.go); answers are
		// sent whole (at most a slot).
		options.WithBlockwise(false, blockwise.SZX1024, 0),
		options.WithErrors(func(err error) { s.log.Debug("coap", zap.Error(err)) }),
	)
	return s
}

// Listen opens a UDP socket on addr and serves it in the background.
func (s *Server) Listen(addr string) (net.Addr, error) {
	ln, err := coapnet.NewListenUDP("udp", addr)
	if err != nil {
		return nil, fmt.Errorf("coap: listen %s: %w", addr, err)
	}
	s.ln = ln
	go func() {
		defer close(s.done)
		s.srv.Serve(ln)
	}()
	return ln.LocalAddr(), nil
}

// Close stops serving; in-flight chain calls give up.
func (s *Server) Close() error {
	s.stop()
	s.srv.Stop()
	if s.ln != nil {
		<-s.done
		s.ln.Close()
	}
	return nil
}

var methods = map[codes.Code]string{codes.GET: "GET", codes.POST: "POST", codes.PUT: "PUT", codes.DELETE: "DELETE"}

func (s *Server) handle(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) {
	s.Requests.Add(1)
	if err := s.serve(w, r); err != nil {
		s.Failed.Add(1)
		status, msg := adapter.StatusOf(err)
		if status == adapter.StatusClientGone {
			return
		}
		code := CodeFor(status)
		var opts message.Options
		if status == http.StatusServiceUnavailable {
			buf := make([]byte, 4)
			opts, _, _ = opts.SetUint32(buf, message.MaxAge, 1) // retry after 1 s
		}
		// Diagnostic payload (RFC 7252 §5.5.2).
		if err := w.SetResponse(code, message.TextPlain, bytes.NewReader([]byte(msg)), opts...); err != nil {
			s.log.Debug("coap: cannot set error response", zap.Error(err))
		}
		s.log.Debug("coap: request failed", zap.String("path", pathOf(r)), zap.Int("status", status), zap.String("error", msg))
	}
}

func pathOf(r *pool.Message) string {
	p, _ := r.Path()
	return p
}

func (s *Server) serve(w *responsewriter.ResponseWriter[*udpClient.Conn], r *pool.Message) error {
	m, ok := methods[r.Code()]
	if !ok {
		return adapter.Errorf(http.StatusMethodNotAllowed, "method %v not allowed", r.Code())
	}
	if r.HasOption(message.ProxyURI) || r.HasOption(message.ProxyScheme) {
		return adapter.Errorf(http.StatusHTTPVersionNotSupported, "this endpoint is not a CoAP proxy (Proxy-Uri/Proxy-Scheme)")
	}
	in := &adapter.Inbound{Ctx: s.ctx, Transport: adapter.TransportCoAP, Method: m, Meta: adapter.Meta{}, Body: bytes.NewReader(nil), Size: 0}
	if p, err := r.Path(); err == nil {
		in.Address = p
	}
	if cf, err := r.ContentFormat(); err == nil {
		in.Meta.Set(MetaContentFormat, strconv.Itoa(int(cf)))
	}
	if a, err := r.Accept(); err == nil {
		in.Meta.Set(MetaAccept, strconv.Itoa(int(a)))
	}
	if qs, err := r.Queries(); err == nil {
		in.Meta[MetaURIQuery] = qs
	}
	var block1 []message.Option
	if v, err := r.GetOptionUint32(message.Block1); err == nil {
		payload, cont, done, err := s.tr.add(transferKey(w.Conn().RemoteAddr().String(), r), r, v, s.cfg.MaxMessageSize)
		if err != nil {
			return err
		}
		if !done {
			buf := make([]byte, 4)
			opts, _, _ := message.Options{}.SetUint32(buf, message.Block1, cont)
			return w.SetResponse(continueCode, message.TextPlain, nil, opts...)
		}
		in.Body, in.Size = bytes.NewReader(payload), int64(len(payload))
		buf := make([]byte, 4)
		block1, _, _ = message.Options{}.SetUint32(buf, message.Block1, v&^0x8) // echo the last block, M=0
	} else if body := r.Body(); body != nil {
		n, err := r.BodySize()
		if err != nil {
			return adapter.Errorf(http.StatusBadRequest, "reading payload: %v", err)
		}
		// A blockwise-assembled body is left positioned at its end.
		if _, err := body.Seek(0, io.SeekStart); err != nil {
			return adapter.Errorf(http.StatusBadRequest, "reading payload: %v", err)
		}
		in.Body, in.Size = io.Reader(body), n
	}
	return adapter.Dispatch(s.cfg.Chains, adapter.TransportCoAP, in, func(out *adapter.Outbound) error {
		cf := message.AppOctets
		if v, err := strconv.ParseUint(out.Meta.Get(MetaContentFormat), 10, 16); err == nil {
			cf = message.MediaType(v)
		}
		code := codes.Content
		if out.Status >= 300 {
			code = CodeFor(out.Status)
		}
		// go-coap sends the response after this handler returns, when the
		// slot is released: the answer is copied out of shared memory.
		return w.SetResponse(code, cf, bytes.NewReader(bytes.Clone(out.Body)), block1...)
	})
}

// CodeFor maps an HTTP status to the CoAP response code (RFC 8075 §7).
func CodeFor(status int) codes.Code {
	switch status {
	case http.StatusOK:
		return codes.Content
	case http.StatusCreated:
		return codes.Created
	case http.StatusNoContent:
		return codes.Changed
	case http.StatusBadRequest:
		return codes.BadRequest
	case http.StatusUnauthorized:
		return codes.Unauthorized
	case http.StatusForbidden:
		return codes.Forbidden
	case http.StatusNotFound:
		return codes.NotFound
	case http.StatusMethodNotAllowed:
		return codes.MethodNotAllowed
	case http.StatusNotAcceptable:
		return codes.NotAcceptable
	case http.StatusPreconditionFailed:
		return codes.PreconditionFailed
	case http.StatusRequestEntityTooLarge:
		return codes.RequestEntityTooLarge
	case http.StatusUnsupportedMediaType:
		return codes.UnsupportedMediaType
	case http.StatusNotImplemented:
		return codes.NotImplemented
	case http.StatusBadGateway:
		return codes.BadGateway
	case http.StatusServiceUnavailable:
		return codes.ServiceUnavailable
	case http.StatusGatewayTimeout:
		return codes.GatewayTimeout
	case http.StatusHTTPVersionNotSupported: // used for "not a proxy"
		return codes.ProxyingNotSupported
	}
	if status >= 400 && status < 500 {
		return codes.BadRequest
	}
	if status >= 200 && status < 300 {
		return codes.Content
	}
	return codes.InternalServerError
}
