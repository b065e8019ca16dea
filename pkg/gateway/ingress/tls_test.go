package ingress_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/networking/pkg/http/header"

	"github.com/spright-dev/spright/internal/testlog"
	"github.com/spright-dev/spright/pkg/gateway/ingress"
	"github.com/spright-dev/spright/pkg/ingressconfig"
)

// selfSigned is a self-signed certificate for hosts, as Knative's
// conformance test "tls" makes one: PEM certificate and key, and a pool
// trusting it.
func selfSigned(t *testing.T, serial int64, hosts ...string) (crt, key []byte, pool *x509.CertPool) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := x509.Certificate{
		SerialNumber: big.NewInt(serial), Subject: pkix.Name{Organization: []string{"SPRIGHT test"}},
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, DNSNames: hosts,
		KeyUsage:    x509.KeyUsageKeyEncipherment | x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	c, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(c)
	pk, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}),
		pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), pool
}

func tlsSecret(name, version string, crt, key []byte) *corev1.Secret {
	return &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, UID: types.UID("uid-" + name), ResourceVersion: version,
			Labels: map[string]string{ingress.SecretLabel: "test"}},
		Type: corev1.SecretTypeTLS,
		Data: map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key},
	}
}

// tlsGateway is a gateway with its plain external listener and its TLS
// listener, certificates from Secrets in secrets.
type tlsGateway struct {
	*gw
	tlsAddr string
	secrets cache.Indexer
}

func startTLSGateway(t *testing.T) *tlsGateway {
	t.Helper()
	log := testlog.CleanupLogger(t, zapcore.InfoLevel)
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	secrets := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	p := ingress.New(ingress.Options{
		Resolver:     &ingress.ServiceResolver{Services: corev1listers.NewServiceLister(idx), ClusterDomain: "cluster.local"},
		Certificates: &ingress.SecretCertificates{Secrets: corev1listers.NewSecretLister(secrets)},
		Logger:       log,
	})
	t.Cleanup(p.Close)
	g := &tlsGateway{gw: &gw{proxy: p, services: idx, addr: map[ingressconfig.Listener]string{}}, secrets: secrets}
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		return ln
	}
	for _, l := range ingressconfig.Listeners {
		ln := listen()
		srv := ingress.NewServer(p.Handler(l), ingress.DefaultLimits(), log)
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		g.addr[l] = ln.Addr().String()
	}
	ln := listen()
	srv := ingress.NewServer(p.Handler(ingressconfig.External), ingress.DefaultLimits(), log)
	srv.TLSConfig = p.TLSConfig()
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	g.tlsAddr = ln.Addr().String()
	return g
}

// https sends GET https://host/path to the TLS listener, offering protos
// (ALPN), trusting pool.
func (g *tlsGateway) https(t *testing.T, pool *x509.CertPool, host, path string, protos ...string) (*http.Response, string, error) {
	t.Helper()
	tr := &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: host, NextProtos: protos},
		ForceAttemptHTTP2: len(protos) == 0 || protos[0] == "h2",
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, g.tlsAddr)
		},
	}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr, Timeout: 10 * time.Second}
	resp, err := c.Get("https://" + host + path)
	if err != nil {
		return nil, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, string(b), nil
}

// TestTLS: the TLS listener presents each KIngress host's certificate
// from its spec.tls Secret (SNI), speaks HTTP/2 and HTTP/1.1 over TLS,
// serves the same routes as the plain external listener, and refuses
// hosts without a certificate. Before, a KIngress with spec.tls was
// refused and Knative's conformance tests "tls" and "httpoption" never
// saw it Ready.
func TestTLS(t *testing.T) {
	up := startUpstream(t, "secure", false, nil)
	g := startTLSGateway(t)
	crt, key, pool := selfSigned(t, 1, "secure.example.com")
	if err := g.secrets.Add(tlsSecret("cert", "1", crt, key)); err != nil {
		t.Fatal(err)
	}
	secure := kingress("secure", v1alpha1.IngressSpec{
		Rules: []v1alpha1.IngressRule{rule(v1alpha1.IngressVisibilityExternalIP, []string{"secure.example.com"}, paths(up.split(100, nil)))},
		TLS:   []v1alpha1.IngressTLS{{Hosts: []string{"secure.example.com"}, SecretName: "cert", SecretNamespace: ns}},
	})
	redirected := kingress("redirected", v1alpha1.IngressSpec{
		Rules:      []v1alpha1.IngressRule{rule(v1alpha1.IngressVisibilityExternalIP, []string{"redirected.example.com"}, paths(up.split(100, nil)))},
		TLS:        []v1alpha1.IngressTLS{{Hosts: []string{"redirected.example.com"}, SecretName: "wild", SecretNamespace: ns}},
		HTTPOption: v1alpha1.HTTPOptionRedirected,
	})
	plain := kingress("plain", v1alpha1.IngressSpec{
		Rules: []v1alpha1.IngressRule{rule(v1alpha1.IngressVisibilityExternalIP, []string{"plain.example.com"}, paths(up.split(100, nil)))},
	})
	g.load(t, []*upstream{up}, secure, redirected, plain)
	ext := ingressconfig.External

	// HTTP/2 over TLS (ALPN h2), and HTTP/1.1 over TLS.
	for _, protos := range [][]string{{"h2", "http/1.1"}, {"http/1.1"}} {
		resp, body, err := g.https(t, pool, "secure.example.com", "/x", protos...)
		if err != nil {
			t.Fatalf("https with ALPN %v: %v", protos, err)
		}
		if resp.StatusCode != 200 || !strings.Contains(body, `"Backend":"secure"`) || !strings.Contains(body, `"X-Forwarded-Proto":["https"]`) {
			t.Errorf("https with ALPN %v: %d %s", protos, resp.StatusCode, body)
		}
		if want := map[string]string{"h2": "HTTP/2.0", "http/1.1": "HTTP/1.1"}[protos[0]]; resp.Proto != want {
			t.Errorf("ALPN %v: served %s, want %s", protos, resp.Proto, want)
		}
	}
	// Plain HTTP keeps working (HTTPOption Enabled).
	if r := g.do(t, ext, "GET", "secure.example.com", "/", nil); r.status != 200 {
		t.Errorf("plain http to a TLS host: %d %q", r.status, r.body)
	}

	// A host without spec.tls, and an unknown one: no certificate.
	before := g.proxy.TLSRefused.Load()
	for _, h := range []string{"plain.example.com", "nobody.example.com"} {
		if _, _, err := g.https(t, pool, h, "/"); err == nil {
			t.Errorf("https to %s: served, want a handshake failure", h)
		}
	}
	if n := g.proxy.TLSRefused.Load() - before; n != 2 {
		t.Errorf("TLSRefused counted %d, want 2", n)
	}

	// Redirected: plain HTTP gets 301 to https, https is served (no loop).
	// Its Secret does not exist yet: the gateway says so on the probe, so
	// the KIngress is not Ready before https works.
	probe := map[string]string{header.ProbeKey: header.ProbeValue, header.HashKey: header.HashValueOverride}
	if r := g.do(t, ext, "GET", "redirected.example.com", "/", probe); r.status != http.StatusServiceUnavailable ||
		!strings.Contains(r.body, "secret default/wild not found") {
		t.Errorf("probe before the Secret exists: %d %q, want 503", r.status, r.body)
	}
	wcrt, wkey, wpool := selfSigned(t, 2, "*.example.com")
	if err := g.secrets.Add(tlsSecret("wild", "1", wcrt, wkey)); err != nil {
		t.Fatal(err)
	}
	if r := g.do(t, ext, "GET", "redirected.example.com", "/", probe); r.status != 200 || r.header.Get(header.HashKey) == "" {
		t.Errorf("probe once the Secret exists: %d %q", r.status, r.body)
	}
	if r := g.do(t, ext, "GET", "redirected.example.com", "/a?b=c", nil); r.status != http.StatusMovedPermanently ||
		r.header.Get("Location") != "https://redirected.example.com/a?b=c" {
		t.Errorf("plain http to a redirected host: %d Location %q", r.status, r.header.Get("Location"))
	}
	if resp, body, err := g.https(t, wpool, "redirected.example.com", "/"); err != nil || resp.StatusCode != 200 {
		t.Errorf("https to a redirected host: %v %v %s", err, resp, body)
	}

	// A new version of the Secret (rotation) is presented from then on.
	crt2, key2, pool2 := selfSigned(t, 3, "secure.example.com")
	if err := g.secrets.Update(tlsSecret("cert", "2", crt2, key2)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := g.https(t, pool, "secure.example.com", "/"); err == nil {
		t.Error("the old certificate is still presented after the Secret changed")
	}
	if resp, _, err := g.https(t, pool2, "secure.example.com", "/"); err != nil || resp.StatusCode != 200 {
		t.Errorf("after rotation: %v %v", err, resp)
	}

	// A Secret without a usable key pair: a clear error, no crash.
	if err := g.secrets.Update(tlsSecret("cert", "3", crt2, []byte("not a key"))); err != nil {
		t.Fatal(err)
	}
	if r := g.do(t, ext, "GET", "secure.example.com", "/", probe); r.status != http.StatusServiceUnavailable ||
		!strings.Contains(r.body, "secret default/cert") {
		t.Errorf("probe with a broken Secret: %d %q, want 503 naming it", r.status, r.body)
	}
}

// TestTLSSlowHandshake: a client that opens a TLS connection and sends
// nothing, or half a ClientHello, is closed at the header timeout (Go's
// server bounds the handshake by it), not held forever; garbage instead
// of a ClientHello is refused at once.
func TestTLSSlowHandshake(t *testing.T) {
	log := testlog.CleanupLogger(t, zapcore.ErrorLevel)
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	p := ingress.New(ingress.Options{
		Resolver:     &ingress.ServiceResolver{Services: corev1listers.NewServiceLister(idx)},
		Certificates: &ingress.SecretCertificates{Secrets: corev1listers.NewSecretLister(idx)},
		Logger:       log,
	})
	lim := ingress.DefaultLimits()
	lim.ReadHeaderTimeout = 300 * time.Millisecond
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := ingress.NewServer(p.Handler(ingressconfig.External), lim, log)
	srv.TLSConfig = p.TLSConfig()
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	for name, send := range map[string][]byte{
		"silent":         nil,
		"half a hello":   {0x16, 0x03, 0x01, 0x02, 0x00, 0x01, 0x00, 0x01, 0xfc, 0x03, 0x03},
		"not TLS at all": []byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"),
	} {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		c.Write(send)
		start := time.Now()
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = io.ReadAll(c)
		c.Close()
		if took := time.Since(start); err != nil || took > 2*time.Second {
			t.Errorf("%s: connection closed after %v (%v), want at the 300ms header timeout", name, took, err)
		}
	}
}
