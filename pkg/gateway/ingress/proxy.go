package ingress

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httputil"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"knative.dev/networking/pkg/http/header"

	"github.com/spright-dev/spright/pkg/ingressconfig"
)

// Target is where a backend is reached.
type Target struct {
	Addr string // host:port
	H2C  bool   // HTTP/2 with prior knowledge
}

// Resolver finds a backend's address.
type Resolver interface {
	Resolve(b ingressconfig.Backend) (Target, error)
}

// ChainFunc returns the handler of the SPRIGHT chain a request is for (by
// its Spright-Chain header or its host), or nil.
type ChainFunc func(r *http.Request) http.Handler

// Options configure a Proxy.
type Options struct {
	Resolver Resolver
	// Certificates gives the TLS listener its certificates (nil: no TLS).
	Certificates Certificates
	// Chains serves chain requests; nil when the gateway has no chains.
	Chains ChainFunc
	Logger *zap.Logger
	// DialTimeout bounds connecting to an upstream (default 5s).
	DialTimeout time.Duration
}

// Proxy serves the KIngress routing configuration.
type Proxy struct {
	opts   Options
	log    *zap.Logger
	cfg    atomic.Pointer[ingressconfig.Config]
	h1     *httputil.ReverseProxy
	h2c    *httputil.ReverseProxy
	closer []*http.Transport

	// Counters, for tests and logs.
	Proxied, Chained, Probes, NotFound, UpstreamErrors, TLSRefused atomic.Uint64
}

// New returns a Proxy with no configuration: until Set, requests that no
// chain takes get 503.
func New(opts Options) *Proxy {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.DialTimeout <= 0 {
		opts.DialTimeout = 5 * time.Second
	}
	p := &Proxy{opts: opts, log: opts.Logger}
	dialer := &net.Dialer{Timeout: opts.DialTimeout, KeepAlive: 30 * time.Second}
	h1 := &http.Transport{
		DialContext:           dialer.DialContext,
		MaxIdleConns:          1000,
		MaxIdleConnsPerHost:   100,
		IdleConnTimeout:       90 * time.Second,
		ExpectContinueTimeout: time.Second,
		// Pass the client's Accept-Encoding through untouched instead of
		// asking for gzip and decompressing on the client's behalf.
		DisableCompression: true,
	}
	var only2 http.Protocols
	only2.SetUnencryptedHTTP2(true)
	h2c := &http.Transport{
		DialContext:        dialer.DialContext,
		Protocols:          &only2,
		IdleConnTimeout:    90 * time.Second,
		DisableCompression: true,
	}
	p.closer = []*http.Transport{h1, h2c}
	errLog := zap.NewStdLog(p.log.Named("reverseproxy"))
	for _, tr := range []struct {
		rp **httputil.ReverseProxy
		t  *http.Transport
	}{{&p.h1, h1}, {&p.h2c, h2c}} {
		*tr.rp = &httputil.ReverseProxy{
			Rewrite:      p.rewrite,
			Transport:    tr.t,
			BufferPool:   bufferPool{},
			ErrorHandler: p.upstreamError,
			ErrorLog:     errLog,
		}
	}
	return p
}

// Set replaces the routing configuration (atomically: a request sees the
// old or the new one, never a mix).
func (p *Proxy) Set(c *ingressconfig.Config) { p.cfg.Store(c) }

// Config is the configuration being served (nil before the first Set).
func (p *Proxy) Config() *ingressconfig.Config { return p.cfg.Load() }

// Close drops the idle upstream connections.
func (p *Proxy) Close() {
	for _, t := range p.closer {
		t.CloseIdleConnections()
	}
}

// Handler serves one listener.
func (p *Proxy) Handler(l ingressconfig.Listener) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		p.serveHTTP(l, w, r)
	})
}

// RequestHost is a request's host as KIngress hosts are written: no port,
// lower case, no trailing dot.
func RequestHost(r *http.Request) string {
	h := r.Host
	if host, _, err := net.SplitHostPort(h); err == nil {
		h = host
	}
	return ingressconfig.NormalizeHost(h)
}

func (p *Proxy) serveHTTP(l ingressconfig.Listener, w http.ResponseWriter, r *http.Request) {
	cfg := p.cfg.Load()
	host := RequestHost(r)
	if cfg != nil && host != "" {
		if v := cfg.Exact(l, host); v != nil {
			p.serveHost(cfg, v, w, r, false)
			return
		}
	}
	if p.opts.Chains != nil {
		if h := p.opts.Chains(r); h != nil {
			p.Chained.Add(1)
			h.ServeHTTP(w, r)
			return
		}
	}
	if cfg == nil {
		w.Header().Set("Retry-After", "1")
		http.Error(w, "the gateway has not loaded its KIngress configuration yet", http.StatusServiceUnavailable)
		return
	}
	if v := cfg.Hosts[l][""]; v != nil {
		p.serveHost(cfg, v, w, r, false)
		return
	}
	p.NotFound.Add(1)
	http.Error(w, fmt.Sprintf("no KIngress or chain serves host %q on this gateway's %s listener", host, l), http.StatusNotFound)
}

// decision is what the rewrite of a proxied request needs.
type decision struct {
	route  *ingressconfig.Route
	split  *ingressconfig.Split
	target Target
}

type decisionKey struct{}

func (p *Proxy) serveHost(cfg *ingressconfig.Config, v *ingressconfig.VirtualHost, w http.ResponseWriter, r *http.Request, rerouted bool) {
	if r.Header.Get(header.ProbeKey) == header.ProbeValue {
		switch h := r.Header.Get(header.HashKey); h {
		case "", header.HashValueOverride, v.Hash:
			p.Probes.Add(1)
			if v.TLS != nil {
				// Not Ready before https is served too.
				if err := p.certificate(v.TLS); err != nil {
					w.Header().Set("Retry-After", "1")
					http.Error(w, fmt.Sprintf("KIngress %s: %v", v.Ingress, err), http.StatusServiceUnavailable)
					return
				}
			}
			w.Header().Set(header.HashKey, v.Hash)
			w.WriteHeader(http.StatusOK)
			return
		}
		// Another hash: the backend echoes it (Knative's contract).
	}
	if v.RedirectHTTPS && r.TLS == nil {
		host := r.Host
		if h, _, err := net.SplitHostPort(host); err == nil {
			host = h
		}
		http.Redirect(w, r, "https://"+host+r.URL.RequestURI(), http.StatusMovedPermanently)
		return
	}
	route := v.Match(r.URL.Path, r.Header.Get)
	if route == nil {
		p.NotFound.Add(1)
		http.Error(w, fmt.Sprintf("KIngress %s has no route for path %q on host %q", v.Ingress, r.URL.Path, RequestHost(r)), http.StatusNotFound)
		return
	}
	split := route.Pick(rand.IntN(route.Total))
	if split.Chain != "" {
		setHeaders(r.Header, route, split)
		if p.opts.Chains != nil {
			if h := p.opts.Chains(r); h != nil {
				p.Chained.Add(1)
				h.ServeHTTP(w, r)
				return
			}
		}
		// The chain's Service leads back to the gateways: proxying would
		// loop.
		w.Header().Set("Retry-After", "1")
		http.Error(w, fmt.Sprintf("chain %s is not loaded on this gateway", split.Chain), http.StatusServiceUnavailable)
		return
	}
	if route.RewriteHost != "" && !rerouted {
		if lv := cfg.Exact(ingressconfig.Local, route.RewriteHost); lv != nil {
			setHeaders(r.Header, route, split)
			r.Host = route.RewriteHost
			p.serveHost(cfg, lv, w, r, true)
			return
		}
	}
	target, err := p.opts.Resolver.Resolve(split.Backend)
	if err != nil {
		p.UpstreamErrors.Add(1)
		w.Header().Set("Retry-After", "1")
		http.Error(w, fmt.Sprintf("KIngress %s: %v", v.Ingress, err), http.StatusServiceUnavailable)
		return
	}
	d := &decision{route: route, split: split, target: target}
	r = r.WithContext(context.WithValue(r.Context(), decisionKey{}, d))
	p.Proxied.Add(1)
	if target.H2C && !isUpgrade(r) {
		p.h2c.ServeHTTP(w, r)
		return
	}
	p.h1.ServeHTTP(w, r)
}

func (p *Proxy) certificate(ref *ingressconfig.SecretRef) error {
	if p.opts.Certificates == nil {
		return fmt.Errorf("the gateway has no TLS listener for secret %s", ref)
	}
	_, err := p.opts.Certificates.Certificate(*ref)
	return err
}

func setHeaders(h http.Header, route *ingressconfig.Route, split *ingressconfig.Split) {
	for k, v := range route.Set {
		h[k] = []string{v}
	}
	for k, v := range split.Set {
		h[k] = []string{v}
	}
}

func isUpgrade(r *http.Request) bool {
	return r.Header.Get("Upgrade") != "" && strings.Contains(strings.ToLower(r.Header.Get("Connection")), "upgrade")
}

func (p *Proxy) rewrite(pr *httputil.ProxyRequest) {
	d := pr.In.Context().Value(decisionKey{}).(*decision)
	pr.Out.URL.Scheme = "http"
	pr.Out.URL.Host = d.target.Addr
	if d.route.RewriteHost != "" {
		pr.Out.Host = d.route.RewriteHost
	}
	// Keep the chain of proxies, then add the client.
	if prior, ok := pr.In.Header["X-Forwarded-For"]; ok {
		pr.Out.Header["X-Forwarded-For"] = prior
	}
	pr.SetXForwarded()
	setHeaders(pr.Out.Header, d.route, d.split)
}

func (p *Proxy) upstreamError(w http.ResponseWriter, r *http.Request, err error) {
	if errors.Is(err, context.Canceled) && r.Context().Err() != nil {
		return // the client went away; nobody to answer
	}
	p.UpstreamErrors.Add(1)
	d := r.Context().Value(decisionKey{}).(*decision)
	status := http.StatusBadGateway
	var op *net.OpError
	if errors.As(err, &op) && op.Op == "dial" {
		status = http.StatusServiceUnavailable // nothing listens: no endpoint
	}
	p.log.Debug("upstream failed", zap.Stringer("backend", d.split.Backend), zap.String("addr", d.target.Addr), zap.Error(err))
	http.Error(w, fmt.Sprintf("upstream %s (%s): %v", d.split.Backend, d.target.Addr, err), status)
}

// bufferPool recycles ReverseProxy's copy buffers.
type bufferPool struct{}

var buffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func (bufferPool) Get() []byte  { return *(buffers.Get().(*[]byte)) }
func (bufferPool) Put(b []byte) { buffers.Put(&b) }
