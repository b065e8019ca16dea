// Package controller_test runs the SPRIGHT controller against a real
// kube-apiserver + etcd (test/envtest) with Knative Serving's CRDs installed
// and config/ applied, under its own ServiceAccount's RBAC.
//
// What is not real here: nothing runs Knative's own controllers, so the
// Revisions a Knative Service would get are created by the test (named and
// labelled as Knative names them), and no ingress controller acts on the
// KIngress. Everything the SPRIGHT controller reads and writes goes through
// the API server.
package controller_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	corev1 "k8s.io/api/core/v1"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"knative.dev/pkg/injection/sharedmain"
	"knative.dev/pkg/signals"
	"knative.dev/serving/pkg/apis/autoscaling"
	"knative.dev/serving/pkg/apis/serving"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	servingclientset "knative.dev/serving/pkg/client/clientset/versioned"

	"github.com/spright-dev/spright/internal/testlog"
	"github.com/spright-dev/spright/pkg/apis/spright/v1alpha1"
	"github.com/spright-dev/spright/pkg/chainwatch"
	"github.com/spright-dev/spright/pkg/function"
	"github.com/spright-dev/spright/pkg/gateway"
	"github.com/spright-dev/spright/pkg/reconciler/chain"
	"github.com/spright-dev/spright/pkg/samples"
	"github.com/spright-dev/spright/pkg/shm"
	"github.com/spright-dev/spright/test/envtest"
)

const (
	controllerSA = "system:serviceaccount:spright-system:spright-controller"
	gatewaySA    = "system:serviceaccount:spright-system:spright-gateway"
)

func configFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("../../config/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no config/*.yaml: %v", err)
	}
	sort.Strings(files)
	return files
}

func freePort(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

func TestControllerOnRealAPIServer(t *testing.T) {
	env := envtest.Start(t)
	env.InstallKnativeServingCRDs(t)
	env.InstallKnativeIngressCRD(t)

	// Every file of config/ passes a server-side dry run, alone and as the
	// directory `ko apply -f config/` reads.
	env.DryRunServer(t, "../../config")
	for _, f := range configFiles(t) {
		t.Run("dry-run/"+filepath.Base(f), func(t *testing.T) { env.DryRunServer(t, f) })
	}
	env.Apply(t, configFiles(t)...)
	env.KubectlT(t, "wait", "--for=condition=Established", "--timeout=60s", "crd/chains.spright.dev")

	// The controller, in-process, as its ServiceAccount: RBAC of
	// config/200-rbac.yaml is what it gets.
	cfg := env.ConfigFor(controllerSA, "system:serviceaccounts", "system:serviceaccounts:spright-system")
	t.Setenv("SYSTEM_NAMESPACE", "spright-system")
	t.Setenv("PROFILING_PORT", freePort(t))
	t.Setenv("METRICS_PROMETHEUS_PORT", freePort(t))
	t.Setenv("METRICS_DOMAIN", "spright.dev/controller")
	ctx, cancel := context.WithCancel(signals.NewContext())
	done := make(chan struct{})
	go func() {
		defer close(done)
		sharedmain.MainWithConfig(sharedmain.WithHealthProbesDisabled(ctx), "spright-controller", cfg, chain.NewController)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("controller did not stop within 30s")
		}
	})

	admin := env.Config
	sc := servingclientset.NewForConfigOrDie(admin)
	kc := kubernetes.NewForConfigOrDie(admin)
	dc := dynamic.NewForConfigOrDie(admin)
	bg := context.Background()
	const ns = "shop"
	if _, err := kc.CoreV1().Namespaces().Create(bg, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	// kn service create NAME --image IMG --annotation spright.dev/chain=shop ...
	// puts the annotations on the revision template.
	create := func(name string, ann map[string]string) {
		t.Helper()
		s := &servingv1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
		s.Spec.Template.Annotations = ann
		s.Spec.Template.Spec.Containers = []corev1.Container{{Image: "example.com/" + name}}
		if _, err := sc.ServingV1().Services(ns).Create(bg, s, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		// What Knative's controller would create: the first revision.
		r := &servingv1.Revision{ObjectMeta: metav1.ObjectMeta{Name: name + "-00001", Namespace: ns,
			Labels: map[string]string{serving.ServiceLabelKey: name, serving.ConfigurationLabelKey: name}}}
		r.Spec.Containers = []corev1.Container{{Image: "example.com/" + name}}
		if _, err := sc.ServingV1().Revisions(ns).Create(bg, r, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	create("frontend", map[string]string{"spright.dev/chain": "shop", "spright.dev/entry": "true", "spright.dev/routes": "*=cart;checkout=payment,shipping"})
	create("cart", map[string]string{"spright.dev/chain": "shop", autoscaling.MinScaleAnnotationKey: "3"})
	create("payment", map[string]string{"spright.dev/chain": "shop"})
	create("shipping", map[string]string{"spright.dev/chain": "shop"})
	create("plain", map[string]string{"autoscaling.knative.dev/target": "10"})

	getChain := func(name string) (*v1alpha1.Chain, error) {
		u, err := dc.Resource(v1alpha1.ChainResource).Namespace(ns).Get(bg, name, metav1.GetOptions{})
		if err != nil {
			return nil, err
		}
		return v1alpha1.FromUnstructured(u)
	}
	var shop *v1alpha1.Chain
	eventually(t, 60*time.Second, "chain shop published and ready", func() error {
		c, err := getChain("shop")
		if err != nil {
			return err
		}
		if !c.Status.IsReady() {
			return fmt.Errorf("not ready: %+v", c.Status.Conditions)
		}
		shop = c
		return nil
	})
	wantRoutes := "gateway/*→frontend frontend/*→cart frontend/checkout→payment,shipping"
	if got := routesString(shop.Spec); got != wantRoutes {
		t.Errorf("routes %q, want %q", got, wantRoutes)
	}
	if got := functionsString(shop.Spec); got != "cart[cart-00001] frontend[frontend-00001] payment[payment-00001] shipping[shipping-00001]" {
		t.Errorf("functions %s", got)
	}
	if shop.Spec.Entry != "frontend" || shop.Spec.Protocol != "http" || shop.Status.Address != "shop-chain.shop.svc.cluster.local" {
		t.Errorf("entry %q protocol %q address %q", shop.Spec.Entry, shop.Spec.Protocol, shop.Status.Address)
	}
	svc, err := kc.CoreV1().Services(ns).Get(bg, "shop-chain", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if svc.Spec.Type != corev1.ServiceTypeExternalName || svc.Spec.ExternalName != "spright-gateway.spright-system.svc.cluster.local" {
		t.Errorf("chain service: %s %s", svc.Spec.Type, svc.Spec.ExternalName)
	}
	// min-scale defaulted where the user set none, kept where they did.
	for name, want := range map[string]string{"frontend": "1", "payment": "1", "shipping": "1", "cart": "3"} {
		eventually(t, 30*time.Second, name+" min-scale", func() error {
			s, err := sc.ServingV1().Services(ns).Get(bg, name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			if got := s.Spec.Template.Annotations[autoscaling.MinScaleAnnotationKey]; got != want {
				return fmt.Errorf("min-scale %q, want %q", got, want)
			}
			return nil
		})
	}
	if s, _ := sc.ServingV1().Services(ns).Get(bg, "plain", metav1.GetOptions{}); s.Spec.Template.Annotations[autoscaling.MinScaleAnnotationKey] != "" {
		t.Error("a Service outside any chain was given a min-scale")
	}

	// A node gateway in Kubernetes mode, as its ServiceAccount, loads the
	// chain; a request through the chain's host is held until the members
	// register (the gateway acting as the activator), then answered by them.
	gw, handler := startGateway(t, ctx, env.ConfigFor(gatewaySA, "system:serviceaccounts", "system:serviceaccounts:spright-system"))
	eventually(t, 30*time.Second, "gateway loads chain shop", func() error {
		if gw.watcher.Chain(types.NamespacedName{Namespace: ns, Name: "shop"}) == nil {
			return fmt.Errorf("not loaded")
		}
		return nil
	})
	if m, ok := gw.g.RevisionChain(types.NamespacedName{Namespace: ns, Name: "cart-00001"}); !ok || m.Chain != "shop.shop" || m.Function != "cart" {
		t.Errorf("revision cart-00001 maps to %+v (%v)", m, ok)
	}
	srv := httptest.NewServer(handler)
	defer srv.Close()
	answer := make(chan string, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodPost, srv.URL, strings.NewReader("abc"))
		req.Host = "shop-chain.shop.svc.cluster.local"
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			answer <- err.Error()
			return
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		answer <- fmt.Sprintf("%d %s", resp.StatusCode, b)
	}()
	c := gw.watcher.Chain(types.NamespacedName{Namespace: ns, Name: "shop"})
	eventually(t, 10*time.Second, "request held for the entry", func() error {
		if c.Activation().Held.Load() != 1 {
			return fmt.Errorf("held %d", c.Activation().Held.Load())
		}
		return nil
	})
	gw.function(t, ctx, "shop.shop", "cart", "reverse")
	gw.function(t, ctx, "shop.shop", "frontend", "upper")
	select {
	case got := <-answer:
		if got != "200 CBA" {
			t.Errorf("chain answered %q, want 200 CBA", got)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("held request not answered after the members registered")
	}

	// A new revision of a member is published.
	r := &servingv1.Revision{ObjectMeta: metav1.ObjectMeta{Name: "cart-00002", Namespace: ns,
		Labels: map[string]string{serving.ServiceLabelKey: "cart"}}}
	r.Spec.Containers = []corev1.Container{{Image: "example.com/cart"}}
	if _, err := sc.ServingV1().Revisions(ns).Create(bg, r, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "cart-00002 published", func() error {
		c, err := getChain("shop")
		if err != nil {
			return err
		}
		if got := functionsString(c.Spec); !strings.Contains(got, "cart[cart-00001,cart-00002]") {
			return fmt.Errorf("functions %s", got)
		}
		return nil
	})

	// Invalid annotations: a loop with no exit in another chain, a route
	// with bad syntax: clear conditions and Warning events, never silence.
	create("a", map[string]string{"spright.dev/chain": "loop", "spright.dev/entry": "true", "spright.dev/routes": "*=b"})
	create("b", map[string]string{"spright.dev/chain": "loop", "spright.dev/routes": "*=a"})
	eventually(t, 30*time.Second, "chain loop refused", func() error {
		c, err := getChain("loop")
		if err != nil {
			return err
		}
		cond := c.Status.GetCondition(v1alpha1.ChainConditionReady)
		if cond == nil || !cond.IsFalse() || cond.Reason != chain.ReasonCycle || !strings.Contains(cond.Message, "routes loop with no exit") {
			return fmt.Errorf("ready condition %+v", cond)
		}
		return nil
	})
	if _, err := kc.CoreV1().Services(ns).Get(bg, "loop-chain", metav1.GetOptions{}); !apierrs.IsNotFound(err) {
		t.Errorf("an invalid chain got a route: %v", err)
	}
	create("typo", map[string]string{"spright.dev/chain": "shop", "spright.dev/routes": "*cart"})
	eventually(t, 30*time.Second, "bad routes reported", func() error {
		c, err := getChain("shop")
		if err != nil {
			return err
		}
		cond := c.Status.GetCondition(v1alpha1.ChainConditionValid)
		if cond == nil || !cond.IsFalse() || !strings.Contains(cond.Message, `service typo: invalid spright.dev/routes: "*cart"`) {
			return fmt.Errorf("valid condition %+v", cond)
		}
		if got := routesString(c.Spec); got != wantRoutes {
			return fmt.Errorf("the last valid spec was not kept: %s", got)
		}
		return nil
	})
	eventually(t, 30*time.Second, "warning event on the bad member", func() error {
		evs, err := kc.CoreV1().Events(ns).List(bg, metav1.ListOptions{FieldSelector: "involvedObject.name=typo"})
		if err != nil {
			return err
		}
		for _, e := range evs.Items {
			if e.Type == corev1.EventTypeWarning && e.Reason == chain.ReasonInvalidAnnotations {
				return nil
			}
		}
		return fmt.Errorf("no InvalidAnnotations warning among %d events", len(evs.Items))
	})
	if out := env.KubectlT(t, "get", "chains", "-n", ns); !strings.Contains(out, "RoutesLoop") || !strings.Contains(out, "shop-chain.shop.svc.cluster.local") {
		t.Errorf("kubectl get chains:\n%s", out)
	}

	// Fixing the member makes the chain ready again; removing every member
	// removes the chain and its route.
	if err := sc.ServingV1().Services(ns).Delete(bg, "typo", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "shop ready again", func() error {
		c, err := getChain("shop")
		if err != nil {
			return err
		}
		if !c.Status.IsReady() {
			return fmt.Errorf("conditions %+v", c.Status.Conditions)
		}
		return nil
	})
	for _, n := range []string{"frontend", "cart", "payment", "shipping"} {
		if err := sc.ServingV1().Services(ns).Delete(bg, n, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	eventually(t, 30*time.Second, "chain shop removed", func() error {
		if _, err := getChain("shop"); !apierrs.IsNotFound(err) {
			return fmt.Errorf("chain still there: %v", err)
		}
		if _, err := kc.CoreV1().Services(ns).Get(bg, "shop-chain", metav1.GetOptions{}); !apierrs.IsNotFound(err) {
			return fmt.Errorf("service still there: %v", err)
		}
		return nil
	})
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

func routesString(s v1alpha1.ChainSpec) string {
	var parts []string
	for _, r := range s.Routes {
		parts = append(parts, r.From+"/"+r.Topic+"→"+strings.Join(r.To, ","))
	}
	return strings.Join(parts, " ")
}

func functionsString(s v1alpha1.ChainSpec) string {
	var parts []string
	for _, f := range s.Functions {
		parts = append(parts, f.Name+"["+strings.Join(f.Revisions, ",")+"]")
	}
	return strings.Join(parts, " ")
}

type nodeGateway struct {
	g       *gateway.Gateway
	watcher *chainwatch.Watcher
	sock    string
}

// startGateway runs a node gateway in Kubernetes mode (pkg/chainwatch) with
// the given identity. Needs root (eBPF).
func startGateway(t *testing.T, ctx context.Context, cfg *rest.Config) (*nodeGateway, http.Handler) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("the gateway needs root (eBPF, bpffs)")
	}
	log := testlog.CleanupLogger(t, zapcore.InfoLevel)
	dir := t.TempDir()
	pin := fmt.Sprintf("/sys/fs/bpf/spright-ctrltest-%d", os.Getpid())
	g, err := gateway.New(gateway.Config{ControlSocket: filepath.Join(dir, "ctl.sock"), PinDir: pin, Logger: log, Name: "gateway-test"})
	if err != nil {
		t.Fatal(err)
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	w := chainwatch.New(g, chainwatch.Options{Pool: shm.Config{Slots: 64, SlotSize: 4096, NoHugePages: true}, HoldTimeout: 20 * time.Second}, log)
	wctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); w.Run(wctx, dynamic.NewForConfigOrDie(cfg)) }()
	t.Cleanup(func() {
		cancel()
		<-done
		g.Close()
		g.Unpin()
	})
	return &nodeGateway{g: g, watcher: w, sock: filepath.Join(dir, "ctl.sock")}, w.Handler()
}

// function registers an SDK function instance with the gateway, running
// one of the sample behaviours (pkg/samples).
func (n *nodeGateway) function(t *testing.T, ctx context.Context, chain, name, behavior string) {
	t.Helper()
	h, err := samples.Lookup(behavior, 0)
	if err != nil {
		t.Fatal(err)
	}
	in, err := function.Register(function.Options{ControlSocket: n.sock, Chain: chain, Function: name, Logger: testlog.CleanupLogger(t, zapcore.InfoLevel), Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	fctx, cancel := context.WithCancel(ctx)
	done := make(chan struct{})
	go func() { defer close(done); in.Serve(fctx, h) }()
	t.Cleanup(func() { cancel(); <-done; in.Close() })
}
