// Package ingress_test runs the SPRIGHT ingress against a real
// kube-apiserver + etcd (test/envtest) with Knative's KIngress CRD and the
// RBAC of config/ applied: the controller's KIngress reconciler as the
// spright-controller ServiceAccount, a gateway's KIngress watch and data
// plane as the spright-gateway ServiceAccount, both in-process.
//
// What is not real: no kubelet runs, so the gateway pod is a Pod object
// whose status the test writes (IP 127.0.0.1, ports of the in-process
// listeners), and the backend Service is an ExternalName to localhost (no
// kube-proxy to make a ClusterIP answer). No Knative webhook runs, so the
// KIngresses are stored as written (not defaulted).
package ingress_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netclientset "knative.dev/networking/pkg/client/clientset/versioned"
	"knative.dev/pkg/injection/sharedmain"
	"knative.dev/pkg/network"
	"knative.dev/pkg/signals"

	"github.com/spright-dev/spright/internal/testlog"
	gwingress "github.com/spright-dev/spright/pkg/gateway/ingress"
	"github.com/spright-dev/spright/pkg/ingressconfig"
	"github.com/spright-dev/spright/pkg/ingresswatch"
	"github.com/spright-dev/spright/pkg/reconciler/ingress"
	"github.com/spright-dev/spright/test/envtest"
)

const (
	controllerSA = "system:serviceaccount:spright-system:spright-controller"
	gatewaySA    = "system:serviceaccount:spright-system:spright-gateway"
	systemNS     = "spright-system"
	ns           = "demo"
)

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	var err error
	for time.Now().Before(deadline) {
		if err = f(); err == nil {
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("%s: not within %v: %v", what, d, err)
}

// backend is an HTTP server on loopback and an ExternalName Service
// (localhost) that leads to it.
func backend(t *testing.T, kc kubernetes.Interface, name string) *corev1.Service {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s saw %s", name, r.Header.Get("Knative-Serving-Revision"))
	}))
	t.Cleanup(srv.Close)
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name},
		Spec: corev1.ServiceSpec{Type: corev1.ServiceTypeExternalName, ExternalName: "localhost",
			Ports: []corev1.ServicePort{{Name: "http", Port: int32(srv.Listener.Addr().(*net.TCPAddr).Port)}}},
	}
	out, err := kc.CoreV1().Services(ns).Create(context.Background(), svc, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func kingress(name, class string, svc *corev1.Service) *v1alpha1.Ingress {
	path := v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{{
		IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: ns, ServiceName: svc.Name, ServicePort: intstr.FromInt32(svc.Spec.Ports[0].Port)},
		AppendHeaders:  map[string]string{"Knative-Serving-Revision": svc.Name + "-00001"},
	}}}
	return &v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name,
			Annotations: map[string]string{networking.IngressClassAnnotationKey: class}},
		Spec: v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
			{Hosts: []string{name + ".demo.example.com"}, Visibility: v1alpha1.IngressVisibilityExternalIP,
				HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{path}}},
			{Hosts: []string{name + ".demo", name + ".demo.svc", name + ".demo.svc.cluster.local"}, Visibility: v1alpha1.IngressVisibilityClusterLocal,
				HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{path}}},
		}},
	}
}

func TestIngressOnRealAPIServer(t *testing.T) {
	env := envtest.Start(t)
	env.InstallKnativeIngressCRD(t)
	env.Apply(t, "../../config/100-namespace.yaml", "../../config/200-rbac.yaml", "../../config/400-config.yaml")
	bg := context.Background()
	admin := env.Config
	kc := kubernetes.NewForConfigOrDie(admin)
	nc := netclientset.NewForConfigOrDie(admin)
	if _, err := kc.CoreV1().Namespaces().Create(bg, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The gateway: KIngress watch and both listeners, as its ServiceAccount.
	log := testlog.CleanupLogger(t, zapcore.InfoLevel)
	gwCfg := env.ConfigFor(gatewaySA, "system:serviceaccounts", "system:serviceaccounts:spright-system")
	w := ingresswatch.New(netclientset.NewForConfigOrDie(gwCfg), kubernetes.NewForConfigOrDie(gwCfg), ingresswatch.Options{TLS: true}, log)
	ctx, cancel := context.WithCancel(signals.NewContext())
	defer cancel()
	go func() {
		if err := w.Run(ctx); err != nil {
			t.Errorf("gateway watch: %v", err)
		}
	}()
	addr := map[ingressconfig.Listener]string{}
	ports := map[ingressconfig.Listener]int32{}
	for _, l := range ingressconfig.Listeners {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := gwingress.NewServer(w.Handler(l), gwingress.DefaultLimits(), log)
		go srv.Serve(ln)
		defer srv.Close()
		addr[l] = ln.Addr().String()
		ports[l] = int32(ln.Addr().(*net.TCPAddr).Port)
	}
	eventually(t, 30*time.Second, "gateway caches synced (RBAC: list/watch KIngresses and Services)", func() error {
		if !w.Synced() {
			return fmt.Errorf("not synced")
		}
		return nil
	})

	// Its Pod, as the kubelet would report it.
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: systemNS, Name: "spright-gateway-node1",
			Labels: map[string]string{ingress.GatewayLabelKey: ingress.GatewayLabelValue}},
		Spec: corev1.PodSpec{ServiceAccountName: "spright-gateway", Containers: []corev1.Container{{
			Name: "gateway", Image: "example.com/gateway", Ports: []corev1.ContainerPort{
				{Name: ingress.ExternalPortName, ContainerPort: ports[ingressconfig.External]},
				{Name: ingress.LocalPortName, ContainerPort: ports[ingressconfig.Local]},
			}}}},
	}
	pod, err := kc.CoreV1().Pods(systemNS).Create(bg, pod, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	pod.Status = corev1.PodStatus{Phase: corev1.PodRunning, PodIP: "127.0.0.1", PodIPs: []corev1.PodIP{{IP: "127.0.0.1"}},
		Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}
	if _, err := kc.CoreV1().Pods(systemNS).UpdateStatus(bg, pod, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The controller with the KIngress reconciler only, as its ServiceAccount.
	t.Setenv("SYSTEM_NAMESPACE", systemNS)
	t.Setenv("PROFILING_PORT", freePort(t))
	t.Setenv("METRICS_PROMETHEUS_PORT", freePort(t))
	t.Setenv("METRICS_DOMAIN", "spright.dev/controller")
	ctlCtx, ctlCancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sharedmain.MainWithConfig(sharedmain.WithHealthProbesDisabled(ctlCtx), "spright-controller",
			env.ConfigFor(controllerSA, "system:serviceaccounts", "system:serviceaccounts:spright-system"), ingress.NewController)
	}()
	defer func() {
		ctlCancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("controller did not stop within 30s")
		}
	}()

	get := func(l ingressconfig.Listener, host string) (int, string) {
		req, _ := http.NewRequest("GET", "http://"+addr[l]+"/", nil)
		req.Host = host
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	ready := func(name string, gen int64) func() error {
		return func() error {
			ing, err := nc.NetworkingV1alpha1().Ingresses(ns).Get(bg, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if ing.Generation != gen || !ing.IsReady() {
				return fmt.Errorf("generation %d (want %d), observed %d, conditions %+v", ing.Generation, gen, ing.Status.ObservedGeneration, ing.Status.Conditions)
			}
			pub, priv := ing.Status.PublicLoadBalancer, ing.Status.PrivateLoadBalancer
			if pub == nil || len(pub.Ingress) != 1 || pub.Ingress[0].DomainInternal != network.GetServiceHostname("spright-gateway", systemNS) ||
				priv == nil || len(priv.Ingress) != 1 || priv.Ingress[0].DomainInternal != network.GetServiceHostname("spright-gateway-local", systemNS) {
				return fmt.Errorf("load balancers %+v %+v", pub, priv)
			}
			return nil
		}
	}

	// A KIngress of the class: Ready once the gateway serves it, and served.
	v1 := backend(t, kc, "hello")
	start := time.Now()
	if _, err := nc.NetworkingV1alpha1().Ingresses(ns).Create(bg, kingress("hello", ingress.IngressClass, v1), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "KIngress hello Ready", ready("hello", 1))
	t.Logf("KIngress Ready %v after its creation", time.Since(start).Round(time.Millisecond))
	if code, body := get(ingressconfig.External, "hello.demo.example.com"); code != 200 || body != "hello saw hello-00001" {
		t.Errorf("external: %d %q", code, body)
	}
	if code, body := get(ingressconfig.Local, "hello.demo.svc.cluster.local"); code != 200 || body != "hello saw hello-00001" {
		t.Errorf("cluster-local: %d %q", code, body)
	}
	if code, _ := get(ingressconfig.External, "hello.demo.svc.cluster.local"); code != 404 {
		t.Errorf("cluster-local host on the external listener: %d", code)
	}

	// A new version: Ready again at the new generation, and served.
	v2 := backend(t, kc, "hello2")
	ing, err := nc.NetworkingV1alpha1().Ingresses(ns).Get(bg, "hello", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	ing.Spec = kingress("hello", ingress.IngressClass, v2).Spec
	if _, err := nc.NetworkingV1alpha1().Ingresses(ns).Update(bg, ing, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "KIngress hello Ready at generation 2", ready("hello", 2))
	if code, body := get(ingressconfig.External, "hello.demo.example.com"); code != 200 || body != "hello2 saw hello2-00001" {
		t.Errorf("after the update: %d %q", code, body)
	}

	// TLS: not Ready while the gateway cannot present the certificate (its
	// Secret does not exist yet), Ready once it can — the gateway reads the
	// labeled Secret as its ServiceAccount. Another class is left alone.
	tls := kingress("secure", ingress.IngressClass, v1)
	tls.Spec.TLS = []v1alpha1.IngressTLS{{Hosts: []string{"secure.demo.example.com"}, SecretName: "cert", SecretNamespace: ns}}
	other := kingress("other", "kourier.ingress.networking.knative.dev", v1)
	for _, i := range []*v1alpha1.Ingress{tls, other} {
		if _, err := nc.NetworkingV1alpha1().Ingresses(ns).Create(bg, i, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "TLS KIngress configured", func() error {
		i, err := nc.NetworkingV1alpha1().Ingresses(ns).Get(bg, "secure", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if c := i.Status.GetCondition(v1alpha1.IngressConditionNetworkConfigured); c == nil || !c.IsTrue() {
			return fmt.Errorf("NetworkConfigured %+v", c)
		}
		return nil
	})
	time.Sleep(2 * time.Second)
	if i, err := nc.NetworkingV1alpha1().Ingresses(ns).Get(bg, "secure", metav1.GetOptions{}); err != nil || i.IsReady() {
		t.Errorf("TLS KIngress Ready without its certificate: %v", err)
	}
	crt, key := selfSigned(t, "secure.demo.example.com")
	if _, err := kc.CoreV1().Secrets(ns).Create(bg, &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: "cert", Labels: map[string]string{networking.CertificateUIDLabelKey: "test"}},
		Type:       corev1.SecretTypeTLS,
		Data:       map[string][]byte{corev1.TLSCertKey: crt, corev1.TLSPrivateKeyKey: key},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 60*time.Second, "TLS KIngress Ready once its Secret exists", ready("secure", 1))
	if code, _ := get(ingressconfig.External, "secure.demo.example.com"); code != 200 {
		t.Errorf("TLS KIngress over plain HTTP: %d", code)
	}
	time.Sleep(2 * time.Second)
	if i, err := nc.NetworkingV1alpha1().Ingresses(ns).Get(bg, "other", metav1.GetOptions{}); err != nil || len(i.Status.Conditions) != 0 {
		t.Errorf("another class's KIngress was touched: %+v %v", i.Status, err)
	}
	if code, _ := get(ingressconfig.External, "other.demo.example.com"); code != 404 {
		t.Errorf("another class's KIngress served: %d", code)
	}
	if w.Proxy().Probes.Load() == 0 {
		t.Error("the gateway answered no probe")
	}
	t.Logf("gateway answered %d probes, proxied %d requests", w.Proxy().Probes.Load(), w.Proxy().Proxied.Load())
}

// selfSigned is a self-signed certificate and key (PEM) for hosts.
func selfSigned(t *testing.T, hosts ...string) (crt, key []byte) {
	t.Helper()
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := x509.Certificate{SerialNumber: big.NewInt(1), DNSNames: hosts,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage:    x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	der, err := x509.CreateCertificate(rand.Reader, &tmpl, &tmpl, &priv.PublicKey, priv)
	if err != nil {
		t.Fatal(err)
	}
	pk, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk})
}
