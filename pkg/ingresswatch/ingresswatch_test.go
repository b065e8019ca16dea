package ingresswatch_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	kubefake "k8s.io/client-go/kubernetes/fake"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netfake "knative.dev/networking/pkg/client/clientset/versioned/fake"
	"knative.dev/networking/pkg/http/header"
	"knative.dev/networking/pkg/status"
	logtesting "knative.dev/pkg/logging/testing"

	"github.com/spright-dev/spright/internal/testlog"
	gwingress "github.com/spright-dev/spright/pkg/gateway/ingress"
	"github.com/spright-dev/spright/pkg/ingressconfig"
	"github.com/spright-dev/spright/pkg/ingresswatch"
	ingressreconciler "github.com/spright-dev/spright/pkg/reconciler/ingress"
)

const ns = "default"

func backend(t *testing.T, name string) *corev1.Service {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, name)
	}))
	t.Cleanup(srv.Close)
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec:       corev1.ServiceSpec{ClusterIP: "127.0.0.1", Ports: []corev1.ServicePort{{Name: "http", Port: int32(port)}}},
	}
}

func kingress(name, class, host string, svc *corev1.Service) *v1alpha1.Ingress {
	return &v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, ResourceVersion: "1",
			Annotations: map[string]string{networking.IngressClassAnnotationKey: class}},
		Spec: v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{{
			Hosts: []string{host}, Visibility: v1alpha1.IngressVisibilityExternalIP,
			HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{{
				Splits: []v1alpha1.IngressBackendSplit{{Percent: 100, IngressBackend: v1alpha1.IngressBackend{
					ServiceNamespace: ns, ServiceName: svc.Name, ServicePort: intstr.FromInt32(svc.Spec.Ports[0].Port)}}},
			}}},
		}}},
	}
}

type gateway struct {
	w    *ingresswatch.Watcher
	addr map[ingressconfig.Listener]string
}

func start(t *testing.T, nc *netfake.Clientset, kube *kubefake.Clientset) *gateway {
	return startWith(t, nc, kube, ingresswatch.Options{})
}

func startWith(t *testing.T, nc *netfake.Clientset, kube *kubefake.Clientset, opts ingresswatch.Options) *gateway {
	t.Helper()
	log := testlog.CleanupLogger(t, zapcore.InfoLevel)
	w := ingresswatch.New(nc, kube, opts, log)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	g := &gateway{w: w, addr: map[ingressconfig.Listener]string{}}
	for _, l := range ingressconfig.Listeners {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := gwingress.NewServer(w.Handler(l), gwingress.DefaultLimits(), log)
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
		g.addr[l] = ln.Addr().String()
	}
	return g
}

func (g *gateway) get(t *testing.T, host string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("GET", "http://"+g.addr[ingressconfig.External]+"/", nil)
	req.Host = host
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func eventually(t *testing.T, what string, f func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !f() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting until %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestWatch(t *testing.T) {
	v1, v2 := backend(t, "v1"), backend(t, "v2")
	hello := kingress("hello", ingressconfig.Class, "hello.default.example.com", v1)
	other := kingress("other", "kourier.ingress.networking.knative.dev", "other.default.example.com", v1)
	nc := netfake.NewSimpleClientset(hello, other)
	kube := kubefake.NewSimpleClientset(v1, v2)
	g := start(t, nc, kube)
	eventually(t, "the caches synced", g.w.Synced)
	if code, body := g.get(t, "hello.default.example.com"); code != 200 || body != "v1" {
		t.Errorf("hello: %d %q", code, body)
	}
	if code, body := g.get(t, "other.default.example.com"); code != 404 || !strings.Contains(body, "no KIngress or chain serves host") {
		t.Errorf("another class's KIngress: %d %q", code, body)
	}

	ctx := context.Background()
	update := func(i *v1alpha1.Ingress) {
		t.Helper()
		if _, err := nc.NetworkingV1alpha1().Ingresses(ns).Update(ctx, i, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	// A new split target is served once the watch delivers it.
	moved := kingress("hello", ingressconfig.Class, "hello.default.example.com", v2)
	moved.ResourceVersion = "2"
	update(moved)
	eventually(t, "the update is served", func() bool { _, b := g.get(t, "hello.default.example.com"); return b == "v2" })

	// A version the gateway refuses (invalid: the split's percent does
	// not total 100) leaves the last accepted one serving.
	bad := moved.DeepCopy()
	bad.ResourceVersion = "3"
	bad.Spec.Rules[0].HTTP.Paths[0].Splits[0].Percent = 60
	update(bad)
	time.Sleep(200 * time.Millisecond)
	if _, b := g.get(t, "hello.default.example.com"); b != "v2" {
		t.Errorf("after a refused update: %q", b)
	}

	// Class changed away: dropped.
	gone := moved.DeepCopy()
	gone.ResourceVersion = "4"
	gone.Annotations[networking.IngressClassAnnotationKey] = "kourier.ingress.networking.knative.dev"
	update(gone)
	eventually(t, "the class change drops it", func() bool { c, _ := g.get(t, "hello.default.example.com"); return c == 404 })

	// Deleted: gone too.
	back := moved.DeepCopy()
	back.ResourceVersion = "5"
	update(back)
	eventually(t, "it is back", func() bool { c, _ := g.get(t, "hello.default.example.com"); return c == 200 })
	if err := nc.NetworkingV1alpha1().Ingresses(ns).Delete(ctx, "hello", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the delete is served", func() bool { c, _ := g.get(t, "hello.default.example.com"); return c == 404 })
}

// TestKnativeProberAgainstGateway runs knative.dev/networking's own status
// prober, with the SPRIGHT controller's probe targets, against a gateway:
// the KIngress is Ready only once the gateway serves the very version the
// controller asks about.
func TestKnativeProberAgainstGateway(t *testing.T) {
	v1, v2 := backend(t, "v1"), backend(t, "v2")
	hello := kingress("hello", ingressconfig.Class, "hello.default.example.com", v1)
	hello.Spec.Rules = append(hello.Spec.Rules, v1alpha1.IngressRule{
		Hosts: []string{"hello.default.svc.cluster.local"}, Visibility: v1alpha1.IngressVisibilityClusterLocal,
		HTTP: hello.Spec.Rules[0].HTTP.DeepCopy(),
	})
	nc := netfake.NewSimpleClientset(hello)
	g := start(t, nc, kubefake.NewSimpleClientset(v1, v2))
	eventually(t, "the caches synced", g.w.Synced)

	// One gateway pod, on loopback, with the listeners' ports.
	port := func(l ingressconfig.Listener) int32 {
		_, p, _ := strings.Cut(g.addr[l], ":")
		n, _ := strconv.Atoi(p)
		return int32(n)
	}
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	idx.Add(&corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: "spright-system", Name: "spright-gateway-x",
			Labels: map[string]string{ingressreconciler.GatewayLabelKey: ingressreconciler.GatewayLabelValue}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "gateway", Ports: []corev1.ContainerPort{
			{Name: ingressreconciler.ExternalPortName, ContainerPort: port(ingressconfig.External)},
			{Name: ingressreconciler.LocalPortName, ContainerPort: port(ingressconfig.Local)},
		}}}},
		Status: corev1.PodStatus{PodIP: "127.0.0.1", Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	})
	var mu sync.Mutex
	readyFor := map[string]bool{}
	prober := status.NewProber(logtesting.TestLogger(t),
		&ingressreconciler.GatewayTargets{Pods: corev1listers.NewPodLister(idx).Pods("spright-system")},
		func(ing *v1alpha1.Ingress) {
			h, _ := ingressconfig.Hash(ing)
			mu.Lock()
			readyFor[h] = true
			mu.Unlock()
		})
	stop := make(chan struct{})
	defer close(stop)
	prober.Start(stop)
	isReadyCalled := func(ing *v1alpha1.Ingress) bool {
		h, _ := ingressconfig.Hash(ing)
		mu.Lock()
		defer mu.Unlock()
		return readyFor[h]
	}
	ctx := context.Background()

	// The version the gateway serves becomes Ready.
	if ok, err := prober.IsReady(ctx, hello); err != nil || ok {
		t.Fatalf("IsReady at once: %v %v (want probing)", ok, err)
	}
	eventually(t, "the served version is Ready", func() bool { return isReadyCalled(hello) })
	if ok, _ := prober.IsReady(ctx, hello); !ok {
		t.Error("IsReady false after the ready callback")
	}

	// A new version is not Ready while the gateway serves the old one...
	moved := hello.DeepCopy()
	moved.ResourceVersion = "2"
	moved.Spec.Rules[0].HTTP.Paths[0].Splits[0].ServiceName = "v2"
	moved.Spec.Rules[0].HTTP.Paths[0].Splits[0].ServicePort = intstr.FromInt32(v2.Spec.Ports[0].Port)
	if ok, _ := prober.IsReady(ctx, moved); ok {
		t.Fatal("a version the gateway has not loaded is Ready")
	}
	time.Sleep(1500 * time.Millisecond) // several probe rounds answer the old hash
	if isReadyCalled(moved) {
		t.Fatal("Ready before the gateway loaded the new version")
	}
	// ... and is once the gateway has it.
	if _, err := nc.NetworkingV1alpha1().Ingresses(ns).Update(ctx, moved, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	eventually(t, "the new version is Ready", func() bool { return isReadyCalled(moved) })
	t.Logf("new version Ready %v after the gateway got it", time.Since(start).Round(time.Millisecond))
	if _, b := g.get(t, "hello.default.example.com"); b != "v2" {
		t.Errorf("serving %q", b)
	}
}

// TestEndpointsNotClusterIP: a split goes to its Service's ready endpoints
// (EndpointSlices), not through the ClusterIP. On a cluster kube-proxy
// programs a new Service's ClusterIP a moment after its endpoints are
// published; Knative's conformance test "update" sends a request the
// moment the KIngress is Ready on a Service made just before, and got
// "connection refused" from the ClusterIP. Here the ClusterIP refuses
// connections; the endpoint serves.
func TestEndpointsNotClusterIP(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "pod")
	}))
	t.Cleanup(srv.Close)
	podPort := int32(srv.Listener.Addr().(*net.TCPAddr).Port)
	// A ClusterIP and port where nothing listens.
	ln, err := net.Listen("tcp", "127.0.0.2:0")
	if err != nil {
		t.Fatal(err)
	}
	svcPort := int32(ln.Addr().(*net.TCPAddr).Port)
	ln.Close()
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "fresh"},
		Spec: corev1.ServiceSpec{ClusterIP: "127.0.0.2", Ports: []corev1.ServicePort{{
			Name: "http", Port: svcPort, TargetPort: intstr.FromInt32(podPort)}}},
	}
	ready, notReady := true, false
	slice := func(name string, ready *bool) *discoveryv1.EndpointSlice {
		return &discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
				Labels: map[string]string{discoveryv1.LabelServiceName: "fresh"}},
			AddressType: discoveryv1.AddressTypeIPv4,
			Endpoints: []discoveryv1.Endpoint{{Addresses: []string{"127.0.0.1"},
				Conditions: discoveryv1.EndpointConditions{Ready: ready}}},
			Ports: []discoveryv1.EndpointPort{{Name: ptr("http"), Port: ptr(podPort)}},
		}
	}
	// Another Service's slice in the namespace, and a not-ready endpoint
	// of this one, are not chosen.
	other := slice("other-abcde", &ready)
	other.Labels[discoveryv1.LabelServiceName] = "other"
	other.Endpoints[0].Addresses = []string{"127.0.0.3"}
	starting := slice("fresh-starting", &notReady)
	starting.Endpoints[0].Addresses = []string{"127.0.0.4"}
	nc := netfake.NewSimpleClientset(kingress("fresh", ingressconfig.Class, "fresh.default.example.com", svc))
	kube := kubefake.NewSimpleClientset(svc, slice("fresh-abcde", &ready), other, starting)
	g := start(t, nc, kube)
	eventually(t, "the caches synced", g.w.Synced)
	for i := 0; i < 20; i++ {
		if code, body := g.get(t, "fresh.default.example.com"); code != 200 || body != "pod" {
			t.Fatalf("request %d: %d %q, want 200 from the endpoint", i, code, body)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// TestWatchTLS: with Options.TLS the gateway watches the certificate
// Secrets (Knative's label) and its TLS listener presents them; a Secret
// without the label is not seen, and the probe says why.
func TestWatchTLS(t *testing.T) {
	v1 := backend(t, "v1")
	secure := kingress("secure", ingressconfig.Class, "secure.default.example.com", v1)
	secure.Spec.TLS = []v1alpha1.IngressTLS{{Hosts: []string{"secure.default.example.com"}, SecretName: "cert", SecretNamespace: ns}}
	hidden := kingress("hidden", ingressconfig.Class, "hidden.default.example.com", v1)
	hidden.Spec.TLS = []v1alpha1.IngressTLS{{Hosts: []string{"hidden.default.example.com"}, SecretName: "unlabeled", SecretNamespace: ns}}

	// A self-signed certificate, as Knative's conformance test makes one.
	crtPEM, keyPEM, pool := selfSigned(t, "secure.default.example.com", "hidden.default.example.com")
	secret := func(name string, labels map[string]string) *corev1.Secret {
		return &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
			Type: corev1.SecretTypeTLS, Data: map[string][]byte{corev1.TLSCertKey: crtPEM, corev1.TLSPrivateKeyKey: keyPEM}}
	}
	nc := netfake.NewSimpleClientset(secure, hidden)
	kube := kubefake.NewSimpleClientset(v1, secret("cert", map[string]string{networking.CertificateUIDLabelKey: "uid"}), secret("unlabeled", nil))
	g := startWith(t, nc, kube, ingresswatch.Options{TLS: true})
	eventually(t, "the caches synced", g.w.Synced)

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := gwingress.NewServer(g.w.Handler(ingressconfig.External), gwingress.DefaultLimits(), nil)
	srv.TLSConfig = g.w.TLSConfig()
	go srv.ServeTLS(ln, "", "")
	t.Cleanup(func() { srv.Close() })
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig:   &tls.Config{RootCAs: pool},
		ForceAttemptHTTP2: true,
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, ln.Addr().String())
		},
	}}
	resp, err := c.Get("https://secure.default.example.com/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "v1" || resp.Proto != "HTTP/2.0" {
		t.Errorf("https: %d %s %q", resp.StatusCode, resp.Proto, b)
	}
	if _, err := c.Get("https://hidden.default.example.com/"); err == nil {
		t.Error("https with an unlabeled Secret: served, want a handshake failure")
	}
	req, _ := http.NewRequest("GET", "http://"+g.addr[ingressconfig.External]+"/", nil)
	req.Host = "hidden.default.example.com"
	req.Header.Set(header.ProbeKey, header.ProbeValue)
	presp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	pb, _ := io.ReadAll(presp.Body)
	presp.Body.Close()
	if presp.StatusCode != 503 || !strings.Contains(string(pb), "labeled "+networking.CertificateUIDLabelKey) {
		t.Errorf("probe of the KIngress with an unlabeled Secret: %d %q", presp.StatusCode, pb)
	}
}

func selfSigned(t *testing.T, hosts ...string) (crtPEM, keyPEM []byte, pool *x509.CertPool) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: hosts, IsCA: true, BasicConstraintsValid: true,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	pk, _ := x509.MarshalPKCS8PrivateKey(priv)
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk}), pool
}
