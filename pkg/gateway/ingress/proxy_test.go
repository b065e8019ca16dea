package ingress_test

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/networking/pkg/http/header"
	"knative.dev/networking/pkg/http/probe"

	"github.com/spright-dev/spright/internal/testlog"
	"github.com/spright-dev/spright/pkg/gateway/ingress"
	"github.com/spright-dev/spright/pkg/ingressconfig"
)

const ns = "default"

// seen is what an upstream tells about the request it got.
type seen struct {
	Backend string
	Host    string
	Path    string
	Proto   string
	Header  http.Header
}

// upstream is a backend Service: a real server on loopback, and the
// Service object whose ClusterIP and port lead to it.
type upstream struct {
	name string
	srv  *httptest.Server
	svc  *corev1.Service
}

func echo(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(seen{Backend: name, Host: r.Host, Path: r.URL.Path, Proto: r.Proto, Header: r.Header})
	})
}

// startUpstream serves h (wrapped, as every Knative backend is, in
// knative.dev/networking's probe handler, which echoes K-Network-Hash).
// h2c: the server speaks only HTTP/2 with prior knowledge, on a port named
// http2 as Knative names an h2c revision's port.
func startUpstream(t *testing.T, name string, h2c bool, h http.Handler) *upstream {
	t.Helper()
	if h == nil {
		h = echo(name)
	}
	srv := httptest.NewUnstartedServer(probe.NewHandler(h))
	portName := networking.ServicePortNameHTTP1
	if h2c {
		var p http.Protocols
		p.SetUnencryptedHTTP2(true)
		srv.Config.Protocols = &p
		portName = networking.ServicePortNameH2C
	}
	srv.Start()
	t.Cleanup(srv.Close)
	port, _ := strconv.Atoi(strings.TrimPrefix(srv.Listener.Addr().String(), "127.0.0.1:"))
	return &upstream{name: name, srv: srv, svc: &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{ClusterIP: "127.0.0.1", Ports: []corev1.ServicePort{{
			Name: portName, Port: int32(port), TargetPort: intstr.FromInt32(8012),
		}}},
	}}
}

func (u *upstream) split(percent int, set map[string]string) v1alpha1.IngressBackendSplit {
	return v1alpha1.IngressBackendSplit{
		IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: ns, ServiceName: u.name, ServicePort: intstr.FromInt32(u.svc.Spec.Ports[0].Port)},
		Percent:        percent, AppendHeaders: set,
	}
}

func kingress(name string, spec v1alpha1.IngressSpec) *v1alpha1.Ingress {
	return &v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Annotations: map[string]string{networking.IngressClassAnnotationKey: ingressconfig.Class}},
		Spec: spec,
	}
}

func rule(vis v1alpha1.IngressVisibility, hosts []string, paths ...v1alpha1.HTTPIngressPath) v1alpha1.IngressRule {
	return v1alpha1.IngressRule{Hosts: hosts, Visibility: vis, HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: paths}}
}

func paths(splits ...v1alpha1.IngressBackendSplit) v1alpha1.HTTPIngressPath {
	return v1alpha1.HTTPIngressPath{Splits: splits}
}

// gw is a gateway data plane on loopback: both listeners.
type gw struct {
	proxy    *ingress.Proxy
	services cache.Indexer
	addr     map[ingressconfig.Listener]string
}

func startGateway(t *testing.T, chains ingress.ChainFunc, lim ingress.Limits) *gw {
	t.Helper()
	log := testlog.CleanupLogger(t, zapcore.InfoLevel)
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	p := ingress.New(ingress.Options{
		Resolver: &ingress.ServiceResolver{Services: corev1listers.NewServiceLister(idx), ClusterDomain: "cluster.local"},
		Chains:   chains,
		Logger:   log,
	})
	t.Cleanup(p.Close)
	g := &gw{proxy: p, services: idx, addr: map[ingressconfig.Listener]string{}}
	for _, l := range ingressconfig.Listeners {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := ingress.NewServer(p.Handler(l), lim, log)
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		g.addr[l] = ln.Addr().String()
	}
	return g
}

func (g *gw) load(t *testing.T, ups []*upstream, ings ...*v1alpha1.Ingress) {
	t.Helper()
	for _, u := range ups {
		if err := g.services.Add(u.svc); err != nil {
			t.Fatal(err)
		}
	}
	var tr []*ingressconfig.Ingress
	for _, ing := range ings {
		x, err := ingressconfig.Translate(ing)
		if err != nil {
			t.Fatal(err)
		}
		tr = append(tr, x)
	}
	g.proxy.Set(ingressconfig.Merge(tr))
}

var client = &http.Client{
	Transport:     &http.Transport{MaxIdleConnsPerHost: 32},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	Timeout:       10 * time.Second,
}

type result struct {
	status int
	body   string
	header http.Header
	seen   *seen
}

func (g *gw) do(t *testing.T, l ingressconfig.Listener, method, host, path string, hdr map[string]string) result {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+g.addr[l]+path, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Host = host
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := client.Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, host, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	res := result{status: resp.StatusCode, body: string(b), header: resp.Header}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		res.seen = &seen{}
		if err := json.Unmarshal(b, res.seen); err != nil {
			t.Fatalf("upstream answer %q: %v", b, err)
		}
	}
	return res
}

// routing is the KIngress set most tests share: a Knative Service (public
// and cluster-local rules), a tag header route, a path route, a split.
func routing(t *testing.T) (*gw, map[string]*upstream) {
	return routingWith(t, ingress.DefaultLimits())
}

func routingWith(t *testing.T, lim ingress.Limits) (*gw, map[string]*upstream) {
	ups := map[string]*upstream{}
	for _, n := range []string{"hello", "blue", "api", "v1", "v2", "private"} {
		ups[n] = startUpstream(t, n, false, nil)
	}
	g := startGateway(t, nil, lim)
	rev := map[string]string{"Knative-Serving-Revision": "hello-00001", "Knative-Serving-Namespace": ns}
	hello := kingress("hello", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		rule(v1alpha1.IngressVisibilityClusterLocal, []string{"hello.default.svc.cluster.local"},
			paths(ups["hello"].split(100, rev))),
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"hello.default.example.com"},
			v1alpha1.HTTPIngressPath{
				Headers:       map[string]v1alpha1.HeaderMatch{"Knative-Serving-Tag": {Exact: "blue"}},
				AppendHeaders: map[string]string{"K-Tag": "blue"},
				Splits:        []v1alpha1.IngressBackendSplit{ups["blue"].split(100, nil)},
			},
			v1alpha1.HTTPIngressPath{Path: "/api", Splits: []v1alpha1.IngressBackendSplit{ups["api"].split(100, nil)}},
			paths(ups["hello"].split(100, rev))),
	}})
	split := kingress("split", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"split.default.example.com"},
			v1alpha1.HTTPIngressPath{
				AppendHeaders: map[string]string{"X-Route": "split", "X-Both": "route"},
				Splits: []v1alpha1.IngressBackendSplit{
					ups["v1"].split(70, map[string]string{"X-Split": "v1", "X-Both": "split"}),
					ups["v2"].split(30, map[string]string{"X-Split": "v2"}),
				},
			}),
	}})
	private := kingress("private", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		rule(v1alpha1.IngressVisibilityClusterLocal, []string{"private.default.svc.cluster.local"},
			v1alpha1.HTTPIngressPath{Path: "/foo", Splits: []v1alpha1.IngressBackendSplit{ups["private"].split(100, nil)}}),
	}})
	var list []*upstream
	for _, u := range ups {
		list = append(list, u)
	}
	g.load(t, list, hello, split, private)
	return g, ups
}

func TestRouting(t *testing.T) {
	g, _ := routing(t)
	ext, loc := ingressconfig.External, ingressconfig.Local
	for _, tc := range []struct {
		name    string
		l       ingressconfig.Listener
		host    string
		path    string
		hdr     map[string]string
		backend string // "" → status/body below
		status  int
		body    string
	}{
		{name: "public host", l: ext, host: "hello.default.example.com", path: "/", backend: "hello"},
		{name: "public host with port and capitals", l: ext, host: "Hello.Default.Example.COM:80", path: "/x", backend: "hello"},
		{name: "public host on the local listener", l: loc, host: "hello.default.example.com", path: "/", backend: "hello"},
		{name: "cluster-local fqdn", l: loc, host: "hello.default.svc.cluster.local", path: "/", backend: "hello"},
		{name: "cluster-local short name", l: loc, host: "hello.default", path: "/", backend: "hello"},
		{name: "cluster-local host is not public", l: ext, host: "hello.default.svc.cluster.local", path: "/", status: 404,
			body: `no KIngress or chain serves host "hello.default.svc.cluster.local" on this gateway's external listener`},
		{name: "tag header", l: ext, host: "hello.default.example.com", path: "/", hdr: map[string]string{"Knative-Serving-Tag": "blue"}, backend: "blue"},
		{name: "other tag falls through", l: ext, host: "hello.default.example.com", path: "/", hdr: map[string]string{"Knative-Serving-Tag": "green"}, backend: "hello"},
		{name: "path prefix", l: ext, host: "hello.default.example.com", path: "/api/v1/items", backend: "api"},
		{name: "path only route: match", l: loc, host: "private.default", path: "/foo/bar", backend: "private"},
		{name: "path only route: miss", l: loc, host: "private.default", path: "/bar", status: 404,
			body: `KIngress default/private has no route for path "/bar" on host "private.default"`},
		{name: "unknown host", l: ext, host: "nope.example.com", path: "/", status: 404,
			body: `no KIngress or chain serves host "nope.example.com" on this gateway's external listener`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := g.do(t, tc.l, "GET", tc.host, tc.path, tc.hdr)
			if tc.backend == "" {
				if r.status != tc.status || !strings.Contains(r.body, tc.body) {
					t.Fatalf("got %d %q, want %d %q", r.status, r.body, tc.status, tc.body)
				}
				return
			}
			if r.status != 200 || r.seen == nil || r.seen.Backend != tc.backend {
				t.Fatalf("got %d %q, want backend %s", r.status, r.body, tc.backend)
			}
			if r.seen.Host != tc.host {
				t.Errorf("upstream saw Host %q, want the client's %q", r.seen.Host, tc.host)
			}
			if r.seen.Path != tc.path {
				t.Errorf("upstream saw path %q", r.seen.Path)
			}
			if got := r.seen.Header.Get("X-Forwarded-For"); got != "127.0.0.1" {
				t.Errorf("X-Forwarded-For %q", got)
			}
		})
	}
	// Headers the KIngress sets reach the upstream, replacing the client's.
	r := g.do(t, ext, "GET", "hello.default.example.com", "/", map[string]string{"Knative-Serving-Revision": "forged", "X-Forwarded-For": "10.1.2.3"})
	if got := r.seen.Header.Get("Knative-Serving-Revision"); got != "hello-00001" {
		t.Errorf("Knative-Serving-Revision %q, want the KIngress's", got)
	}
	if got := r.seen.Header.Get("X-Forwarded-For"); got != "10.1.2.3, 127.0.0.1" {
		t.Errorf("X-Forwarded-For %q, want the client's chain then the client", got)
	}
	if got := r.seen.Header.Get("X-Forwarded-Proto"); got != "http" {
		t.Errorf("X-Forwarded-Proto %q", got)
	}
	r = g.do(t, ext, "GET", "hello.default.example.com", "/", map[string]string{"Knative-Serving-Tag": "blue"})
	if got := r.seen.Header.Get("K-Tag"); got != "blue" {
		t.Errorf("tag route: K-Tag %q", got)
	}
	// Keep-alive: many requests, few connections (one client, sequential).
	if n := g.proxy.Proxied.Load(); n < 10 {
		t.Errorf("proxied %d", n)
	}
}

func TestSplit(t *testing.T) {
	g, _ := routing(t)
	const n = 1000
	count := map[string]int{}
	for i := 0; i < n; i++ {
		r := g.do(t, ingressconfig.External, "GET", "split.default.example.com", "/", nil)
		if r.seen == nil {
			t.Fatalf("request %d: %d %q", i, r.status, r.body)
		}
		count[r.seen.Backend]++
		h := r.seen.Header
		if h.Get("X-Split") != r.seen.Backend || h.Get("X-Route") != "split" {
			t.Fatalf("backend %s got X-Split %q X-Route %q", r.seen.Backend, h.Get("X-Split"), h.Get("X-Route"))
		}
		want := "route"
		if r.seen.Backend == "v1" {
			want = "split" // the split's header wins over the route's
		}
		if h.Get("X-Both") != want {
			t.Fatalf("backend %s: X-Both %q, want %q", r.seen.Backend, h.Get("X-Both"), want)
		}
	}
	t.Logf("70/30 split over %d requests: v1 %d (%.1f%%), v2 %d (%.1f%%)", n, count["v1"], 100*float64(count["v1"])/n, count["v2"], 100*float64(count["v2"])/n)
	if count["v1"]+count["v2"] != n || count["v1"] < 650 || count["v1"] > 750 {
		t.Errorf("v1 %d v2 %d of %d, want 70%% ± 5%%", count["v1"], count["v2"], n)
	}
}

func TestProbe(t *testing.T) {
	g, ups := routing(t)
	hash := g.proxy.Config().Ingresses[ingressKey("hello")]
	ext := ingressconfig.External
	probeHdr := func(h string) map[string]string {
		m := map[string]string{header.ProbeKey: header.ProbeValue, header.UserAgentKey: header.IngressReadinessUserAgent}
		if h != "" {
			m[header.HashKey] = h
		}
		return m
	}
	upstreamBefore := g.proxy.Proxied.Load()
	for _, h := range []string{header.HashValueOverride, "", hash} {
		r := g.do(t, ext, "GET", "hello.default.example.com", "/healthz", probeHdr(h))
		if r.status != 200 || r.header.Get(header.HashKey) != hash {
			t.Errorf("probe with hash %q: %d %s=%q, want 200 %s", h, r.status, header.HashKey, r.header.Get(header.HashKey), hash)
		}
	}
	// Cluster-local hosts are probed on the local listener.
	if r := g.do(t, ingressconfig.Local, "GET", "hello.default.svc.cluster.local", "/healthz", probeHdr(header.HashValueOverride)); r.header.Get(header.HashKey) != hash {
		t.Errorf("local probe: %d %q", r.status, r.header.Get(header.HashKey))
	}
	if g.proxy.Proxied.Load() != upstreamBefore {
		t.Error("the gateway's own probes reached an upstream")
	}
	// Another hash is the backend's to echo (conformance TestProbeHeaders).
	other := strings.Repeat("ab", 32)
	if r := g.do(t, ext, "GET", "hello.default.example.com", "/", probeHdr(other)); r.status != 200 || r.header.Get(header.HashKey) != other {
		t.Errorf("probe with another hash: %d %q, want the backend's echo", r.status, r.header.Get(header.HashKey))
	}
	// A host the gateway does not serve is not Ready there.
	if r := g.do(t, ext, "GET", "new.default.example.com", "/healthz", probeHdr(header.HashValueOverride)); r.status != 404 || r.header.Get(header.HashKey) != "" {
		t.Errorf("probe for an unknown host: %d %q", r.status, r.header.Get(header.HashKey))
	}
	// A new version: the gateway announces the new hash once it has it.
	changed := kingress("hello", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"hello.default.example.com"}, paths(ups["v2"].split(100, nil))),
	}})
	newHash, _ := ingressconfig.Hash(changed)
	if newHash == hash {
		t.Fatal("same hash for a changed spec")
	}
	g.load(t, nil, changed)
	if r := g.do(t, ext, "GET", "hello.default.example.com", "/healthz", probeHdr(header.HashValueOverride)); r.header.Get(header.HashKey) != newHash {
		t.Errorf("after the update: %q, want %s", r.header.Get(header.HashKey), newHash)
	}
	if r := g.do(t, ext, "GET", "hello.default.example.com", "/", nil); r.seen == nil || r.seen.Backend != "v2" {
		t.Errorf("after the update: %d %q", r.status, r.body)
	}
}

func ingressKey(name string) types.NamespacedName {
	return types.NamespacedName{Namespace: ns, Name: name}
}

func TestWebsocket(t *testing.T) {
	up := websocket.Upgrader{}
	ws := startUpstream(t, "ws", false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			mt, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			c.WriteMessage(mt, append([]byte("echo:"), msg...))
		}
	}))
	g := startGateway(t, nil, ingress.DefaultLimits())
	g.load(t, []*upstream{ws}, kingress("ws", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"ws.default.example.com"}, paths(ws.split(100, nil))),
	}}))
	c, resp, err := websocket.DefaultDialer.Dial("ws://"+g.addr[ingressconfig.External]+"/ws", http.Header{"Host": {"ws.default.example.com"}})
	if err != nil {
		t.Fatalf("dial through the gateway: %v (%v)", err, resp)
	}
	defer c.Close()
	for i := 0; i < 3; i++ {
		msg := fmt.Sprintf("hello %d", i)
		if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
			t.Fatal(err)
		}
		_, got, err := c.ReadMessage()
		if err != nil || string(got) != "echo:"+msg {
			t.Fatalf("got %q %v", got, err)
		}
	}
}

func TestH2C(t *testing.T) {
	grpc := startUpstream(t, "grpc", true, nil)
	plain := startUpstream(t, "plain", false, nil)
	g := startGateway(t, nil, ingress.DefaultLimits())
	g.load(t, []*upstream{grpc, plain}, kingress("h2", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"grpc.default.example.com"}, paths(grpc.split(100, nil))),
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"plain.default.example.com"}, paths(plain.split(100, nil))),
	}}))
	// An HTTP/1.1 client reaches an h2c-only upstream over HTTP/2.
	r := g.do(t, ingressconfig.External, "POST", "grpc.default.example.com", "/svc/Method", nil)
	if r.seen == nil || r.seen.Proto != "HTTP/2.0" {
		t.Fatalf("h2c upstream: %d %q", r.status, r.body)
	}
	// A client speaking h2c to the gateway (as gRPC does) is served over
	// HTTP/2, to either kind of upstream.
	var p http.Protocols
	p.SetUnencryptedHTTP2(true)
	h2 := &http.Client{Transport: &http.Transport{Protocols: &p}, Timeout: 10 * time.Second}
	defer h2.CloseIdleConnections()
	for host, wantUp := range map[string]string{"grpc.default.example.com": "HTTP/2.0", "plain.default.example.com": "HTTP/1.1"} {
		req, _ := http.NewRequest("GET", "http://"+g.addr[ingressconfig.External]+"/", nil)
		req.Host = host
		resp, err := h2.Do(req)
		if err != nil {
			t.Fatalf("%s over h2c: %v", host, err)
		}
		var s seen
		json.NewDecoder(resp.Body).Decode(&s)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || s.Proto != wantUp {
			t.Errorf("%s: client got %s, upstream saw %s (want %s)", host, resp.Proto, s.Proto, wantUp)
		}
	}
}

func TestRewriteHostAndRedirect(t *testing.T) {
	target := startUpstream(t, "target", false, nil)
	g := startGateway(t, nil, ingress.DefaultLimits())
	private := kingress("private", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		rule(v1alpha1.IngressVisibilityClusterLocal, []string{"target.default.svc.cluster.local"}, paths(target.split(100, map[string]string{"X-Inner": "yes"}))),
	}})
	// The vanity KIngress names an ExternalName Service (back to the local
	// gateway, as conformance TestRewriteHost does): it is never resolved.
	vanity := kingress("vanity", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"vanity.example.org"}, v1alpha1.HTTPIngressPath{
			RewriteHost: "target.default.svc.cluster.local",
			Splits: []v1alpha1.IngressBackendSplit{{IngressBackend: v1alpha1.IngressBackend{
				ServiceNamespace: ns, ServiceName: "target-placeholder", ServicePort: intstr.FromInt32(80)},
				AppendHeaders: map[string]string{"X-Outer": "yes"}}},
		}),
	}})
	redirect := kingress("redirect", v1alpha1.IngressSpec{HTTPOption: v1alpha1.HTTPOptionRedirected, Rules: []v1alpha1.IngressRule{
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"secure.example.org"}, paths(target.split(100, nil))),
	}})
	g.load(t, []*upstream{target}, private, vanity, redirect)
	r := g.do(t, ingressconfig.External, "GET", "vanity.example.org", "/p", nil)
	if r.seen == nil || r.seen.Backend != "target" || r.seen.Host != "target.default.svc.cluster.local" {
		t.Fatalf("rewrite: %d %q", r.status, r.body)
	}
	if r.seen.Header.Get("X-Outer") != "yes" || r.seen.Header.Get("X-Inner") != "yes" {
		t.Errorf("rewrite: headers of both routes expected, got %v", r.seen.Header)
	}
	r = g.do(t, ingressconfig.External, "GET", "secure.example.org:80", "/a?b=c", nil)
	if r.status != http.StatusMovedPermanently || r.header.Get("Location") != "https://secure.example.org/a?b=c" {
		t.Errorf("redirect: %d Location %q", r.status, r.header.Get("Location"))
	}
	// The cluster-local listener serves the same host without redirecting.
	if r := g.do(t, ingressconfig.Local, "GET", "secure.example.org", "/", nil); r.seen == nil {
		t.Errorf("local: %d %q", r.status, r.body)
	}
}

// TestChains: chain hosts keep entering the chain as before, the chain
// controller's KIngress enters it in-process, and plain KIngress hosts
// are proxied beside them.
func TestChains(t *testing.T) {
	hello := startUpstream(t, "hello", false, nil)
	var chained []string
	chains := func(r *http.Request) http.Handler {
		name := r.Header.Get(ingressconfig.ChainHeader)
		if name == "" && strings.HasPrefix(ingress.RequestHost(r), "shop-chain.default") {
			name = "default/shop"
		}
		if name != "default/shop" {
			return nil
		}
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			chained = append(chained, r.Host)
			fmt.Fprintf(w, "chain %s", name)
		})
	}
	g := startGateway(t, chains, ingress.DefaultLimits())
	chainIng := kingress("shop-chain", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"shop.default.example.com"}, v1alpha1.HTTPIngressPath{
			AppendHeaders: map[string]string{ingressconfig.ChainHeader: "default/shop"},
			Splits: []v1alpha1.IngressBackendSplit{{IngressBackend: v1alpha1.IngressBackend{
				ServiceNamespace: ns, ServiceName: "shop-chain", ServicePort: intstr.FromInt32(80)}}},
		}),
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"gone.default.example.com"}, v1alpha1.HTTPIngressPath{
			AppendHeaders: map[string]string{ingressconfig.ChainHeader: "default/gone"},
			Splits: []v1alpha1.IngressBackendSplit{{IngressBackend: v1alpha1.IngressBackend{
				ServiceNamespace: ns, ServiceName: "gone-chain", ServicePort: intstr.FromInt32(80)}}},
		}),
	}})
	plain := kingress("hello", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"hello.default.example.com"}, paths(hello.split(100, nil))),
	}})
	g.load(t, []*upstream{hello}, chainIng, plain)
	ext := ingressconfig.External
	for _, tc := range []struct {
		host   string
		hdr    map[string]string
		status int
		body   string
	}{
		{"shop.default.example.com", nil, 200, "chain default/shop"},
		{"shop-chain.default.svc.cluster.local", nil, 200, "chain default/shop"},
		{"anything.example.com", map[string]string{ingressconfig.ChainHeader: "default/shop"}, 200, "chain default/shop"},
		{"gone.default.example.com", nil, 503, "chain default/gone is not loaded on this gateway"},
		{"hello.default.example.com", nil, 200, `"Backend":"hello"`},
		// The client's chain header does not divert a KIngress host.
		{"hello.default.example.com", map[string]string{ingressconfig.ChainHeader: "default/shop"}, 200, `"Backend":"hello"`},
	} {
		r := g.do(t, ext, "POST", tc.host, "/", tc.hdr)
		if r.status != tc.status || !strings.Contains(r.body, tc.body) {
			t.Errorf("%s %v: %d %q, want %d %q", tc.host, tc.hdr, r.status, r.body, tc.status, tc.body)
		}
	}
	if len(chained) != 3 {
		t.Errorf("chain served %v", chained)
	}
	if g.proxy.Proxied.Load() != 2 {
		t.Errorf("proxied %d requests, want only the 2 for hello", g.proxy.Proxied.Load())
	}
}

func TestUpstreamFailures(t *testing.T) {
	down := startUpstream(t, "down", false, nil)
	down.srv.Close() // nothing listens on its port any more
	g := startGateway(t, nil, ingress.DefaultLimits())
	named := kingress("named", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"named.example.com"}, paths(v1alpha1.IngressBackendSplit{
			IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: ns, ServiceName: "down", ServicePort: intstr.FromString("grpc")}})),
	}})
	g.load(t, []*upstream{down}, kingress("f", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"down.example.com"}, paths(down.split(100, nil))),
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"missing.example.com"}, paths(v1alpha1.IngressBackendSplit{
			IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: ns, ServiceName: "missing", ServicePort: intstr.FromInt32(80)}})),
	}}), named)
	for host, want := range map[string]string{
		"down.example.com":    "upstream default/down:",
		"missing.example.com": "service default/missing does not exist",
		"named.example.com":   "service default/down has no port grpc",
	} {
		r := g.do(t, ingressconfig.External, "GET", host, "/", nil)
		if r.status != http.StatusServiceUnavailable || !strings.Contains(r.body, want) {
			t.Errorf("%s: %d %q, want 503 %q", host, r.status, r.body, want)
		}
	}
}

func TestNotLoadedYet(t *testing.T) {
	g := startGateway(t, func(r *http.Request) http.Handler {
		if r.Host != "shop-chain.default" {
			return nil
		}
		return http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "chain") })
	}, ingress.DefaultLimits())
	if r := g.do(t, ingressconfig.External, "GET", "hello.default.example.com", "/", nil); r.status != 503 || r.header.Get("Retry-After") == "" {
		t.Errorf("before the first configuration: %d %q", r.status, r.body)
	}
	if r := g.do(t, ingressconfig.External, "GET", "shop-chain.default", "/", nil); r.status != 200 || r.body != "chain" {
		t.Errorf("chains are served meanwhile: %d %q", r.status, r.body)
	}
}

// rawRequest writes raw bytes to a listener and returns the answer's
// status line and body.
func rawRequest(t *testing.T, addr, raw string) string {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, raw); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatalf("reading the answer to %.40q: %v", raw, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.Proto + " " + resp.Status + "\n" + strings.TrimSpace(string(body))
}

func TestBadInput(t *testing.T) {
	lim := ingress.DefaultLimits()
	lim.ReadHeaderTimeout = 500 * time.Millisecond
	lim.MaxHeaderBytes = 8 << 10
	g, _ := routingWith(t, lim)
	addr := g.addr[ingressconfig.External]

	for _, tc := range []struct{ name, raw, want string }{
		{"space in Host", "GET / HTTP/1.1\r\nHost: a b\r\n\r\n", "HTTP/1.1 400 Bad Request: malformed Host header\n"},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a.example.com\r\nHost: b.example.com\r\n\r\n", "HTTP/1.1 400 Bad Request\n400 Bad Request"},
		{"control byte in Host", "GET / HTTP/1.1\r\nHost: a\x01b.example.com\r\n\r\n", "HTTP/1.1 400 Bad Request\n400 Bad Request"},
		{"no Host", "GET / HTTP/1.1\r\n\r\n", "HTTP/1.1 400 Bad Request: missing required Host header\n"},
		// Well-formed but served by nobody: a plain 404, never a match.
		{"unbalanced bracket", "GET / HTTP/1.1\r\nHost: [::1\r\n\r\n", "HTTP/1.1 404 Not Found\nno KIngress or chain serves host \"[::1\""},
		{"HTTP/1.0 without Host: unknown, not a catch-all", "GET / HTTP/1.0\r\n\r\n", "HTTP/1.0 404 Not Found\nno KIngress or chain serves host \"\""},
		{"oversized headers", "GET / HTTP/1.1\r\nHost: hello.default.example.com\r\nX-Big: " + strings.Repeat("a", 64<<10) + "\r\n\r\n", "HTTP/1.1 431 Request Header Fields Too Large\n431 Request Header Fields Too Large"},
		{"garbage", "\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", "HTTP/1.1 400 Bad Request\n400 Bad Request"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := rawRequest(t, addr, tc.raw); !strings.HasPrefix(got, tc.want) {
				t.Errorf("got %q, want %q", got, tc.want)
			}
		})
	}

	// A slowloris: headers one byte at a time, never finished. The
	// listener closes it once ReadHeaderTimeout has passed.
	t.Run("slowloris", func(t *testing.T) {
		c, err := net.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		closed := make(chan time.Duration, 1)
		go func() {
			buf := make([]byte, 512)
			for {
				if _, err := c.Read(buf); err != nil {
					closed <- time.Since(start)
					return
				}
			}
		}()
		drip := "GET / HTTP/1.1\r\nHost: hello.default.example.com\r\nX-Slow: " + strings.Repeat("z", 100)
		var after time.Duration
	loop:
		for i := 0; ; i++ {
			select {
			case after = <-closed:
				break loop
			case <-time.After(50 * time.Millisecond):
				if time.Since(start) > 10*time.Second {
					t.Fatal("slow connection still open after 10s")
				}
				c.Write([]byte{drip[i%len(drip)]})
			}
		}
		t.Logf("slowloris connection closed after %v (ReadHeaderTimeout %v)", after.Round(10*time.Millisecond), lim.ReadHeaderTimeout)
		if after < lim.ReadHeaderTimeout-50*time.Millisecond || after > lim.ReadHeaderTimeout+2*time.Second {
			t.Errorf("closed after %v, want about %v", after, lim.ReadHeaderTimeout)
		}
	})
	// The listener still serves.
	if r := g.do(t, ingressconfig.External, "GET", "hello.default.example.com", "/", nil); r.seen == nil {
		t.Errorf("after the bad input: %d %q", r.status, r.body)
	}
}

// h2frame writes one HTTP/2 frame.
func h2frame(w io.Writer, typ, flags byte, stream uint32, payload []byte) error {
	n := len(payload)
	hdr := []byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags,
		byte(stream >> 24 & 0x7f), byte(stream >> 16), byte(stream >> 8), byte(stream)}
	_, err := w.Write(append(hdr, payload...))
	return err
}

// TestRapidReset: an HTTP/2 client opens streams and resets them at once,
// thousands of times (CVE-2023-44487). The gateway stays up, keeps
// serving others, and its goroutines come back down.
func TestRapidReset(t *testing.T) {
	var upstreamHits atomic.Int64
	slow := startUpstream(t, "slow", false, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		upstreamHits.Add(1)
		select {
		case <-time.After(50 * time.Millisecond):
		case <-r.Context().Done():
		}
	}))
	g := startGateway(t, nil, ingress.DefaultLimits())
	g.load(t, []*upstream{slow}, kingress("slow", v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"slow.example.com"}, paths(slow.split(100, nil))),
	}}))
	before := runtime.NumGoroutine()

	c, err := net.Dial("tcp", g.addr[ingressconfig.External])
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	closed := make(chan struct{})
	go func() { io.Copy(io.Discard, c); close(closed) }() // the server's frames
	bw := bufio.NewWriter(c)
	bw.WriteString("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
	h2frame(bw, 0x4, 0, 0, nil)   // SETTINGS
	h2frame(bw, 0x4, 0x1, 0, nil) // ACK of the server's SETTINGS
	// HPACK: :method GET, :scheme http, :path /, :authority slow.example.com.
	block := append([]byte{0x82, 0x86, 0x84, 0x41, byte(len("slow.example.com"))}, "slow.example.com"...)
	cancel := []byte{0, 0, 0, 0x8} // RST_STREAM CANCEL
	const n = 5000
	sent := 0
	for i := 0; i < n; i++ {
		id := uint32(2*i + 1)
		if h2frame(bw, 0x1, 0x4|0x1, id, block) != nil || h2frame(bw, 0x3, 0, id, cancel) != nil {
			break
		}
		sent++
	}
	bw.Flush()
	select {
	case <-closed:
		t.Logf("the gateway closed the flooding connection")
	case <-time.After(3 * time.Second):
		t.Logf("the flooding connection is still open")
	}
	c.Close()
	// Others are served meanwhile and after.
	if r := g.do(t, ingressconfig.External, "GET", "slow.example.com", "/", nil); r.status != 200 {
		t.Errorf("after the flood: %d %q", r.status, r.body)
	}
	// Count what is left once the pools' idle keep-alive connections
	// (the gateway's to the upstream, the test client's) are closed.
	var now int
	deadline := time.Now().Add(10 * time.Second)
	for {
		g.proxy.Close()
		client.CloseIdleConnections()
		now = runtime.NumGoroutine()
		if now <= before+20 || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("rapid reset: %d streams opened and reset; %d reached the upstream; goroutines %d before, %d after", sent, upstreamHits.Load(), before, now)
	if now > before+20 {
		t.Errorf("goroutines %d after the flood, %d before", now, before)
	}
}
