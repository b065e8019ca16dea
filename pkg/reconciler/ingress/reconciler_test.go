package ingress

import (
	"context"
	"errors"
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	clientgotesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netfake "knative.dev/networking/pkg/client/clientset/versioned/fake"
	ingressreconciler "knative.dev/networking/pkg/client/injection/reconciler/networking/v1alpha1/ingress"
	netlisters "knative.dev/networking/pkg/client/listers/networking/v1alpha1"
	"knative.dev/pkg/controller"
	logtesting "knative.dev/pkg/logging/testing"
	pkgreconciler "knative.dev/pkg/reconciler"
	. "knative.dev/pkg/reconciler/testing"
)

const (
	ns        = "default"
	publicLB  = "spright-gateway.spright-system.svc.cluster.local"
	privateLB = "spright-gateway-local.spright-system.svc.cluster.local"
)

type ingOpt func(*v1alpha1.Ingress)

func ing(name, class string, opts ...ingOpt) *v1alpha1.Ingress {
	i := &v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Generation: 2,
			Annotations: map[string]string{networking.IngressClassAnnotationKey: class}},
		Spec: v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{{
			Hosts:      []string{name + ".default.example.com"},
			Visibility: v1alpha1.IngressVisibilityExternalIP,
			HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: []v1alpha1.HTTPIngressPath{{
				Splits: []v1alpha1.IngressBackendSplit{{Percent: 100, IngressBackend: v1alpha1.IngressBackend{
					ServiceNamespace: ns, ServiceName: name + "-00001", ServicePort: intstr.FromInt32(80)}}},
			}}},
		}}},
	}
	for _, o := range opts {
		o(i)
	}
	return i
}

func observed(i *v1alpha1.Ingress) {
	i.Status.InitializeConditions()
	i.Status.ObservedGeneration = i.Generation
}

func configured(i *v1alpha1.Ingress) { observed(i); i.Status.MarkNetworkConfigured() }

func probing(i *v1alpha1.Ingress) { configured(i); i.Status.MarkLoadBalancerNotReady() }

func ready(i *v1alpha1.Ingress) {
	configured(i)
	i.Status.MarkLoadBalancerReady(
		[]v1alpha1.LoadBalancerIngressStatus{{DomainInternal: publicLB}},
		[]v1alpha1.LoadBalancerIngressStatus{{DomainInternal: privateLB}})
}

func notConfigured(reason, msg string) ingOpt {
	return func(i *v1alpha1.Ingress) {
		observed(i)
		i.GetConditionSet().Manage(&i.Status).MarkFalse(v1alpha1.IngressConditionNetworkConfigured, reason, "%s", msg)
	}
}

func withTLS(i *v1alpha1.Ingress) {
	i.Spec.TLS = []v1alpha1.IngressTLS{{Hosts: i.Spec.Rules[0].Hosts, SecretName: "cert", SecretNamespace: ns}}
}

func withBadSplit(i *v1alpha1.Ingress) { i.Spec.Rules[0].HTTP.Paths[0].Splits[0].Percent = 60 }

// fakeStatus is the prober's verdict per KIngress name.
type fakeStatus struct {
	ready map[string]bool
	err   error
	asked []string
}

func (f *fakeStatus) IsReady(_ context.Context, i *v1alpha1.Ingress) (bool, error) {
	f.asked = append(f.asked, i.Name)
	return f.ready[i.Name], f.err
}

func statusUpdate(i *v1alpha1.Ingress) clientgotesting.UpdateActionImpl {
	return clientgotesting.UpdateActionImpl{Object: i}
}

func TestReconcile(t *testing.T) {
	st := &fakeStatus{ready: map[string]bool{"ready": true, "steady": true, "tls": true}}
	TableTest{{
		Name: "bad key",
		Key:  "too/many/parts",
	}, {
		Name: "gone",
		Key:  ns + "/gone",
	}, {
		Name:    "another class is not ours",
		Key:     ns + "/kourier",
		Objects: []runtime.Object{ing("kourier", "kourier.ingress.networking.knative.dev")},
	}, {
		Name:              "new KIngress: configured, waiting for the gateways",
		Key:               ns + "/new",
		Objects:           []runtime.Object{ing("new", IngressClass)},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(ing("new", IngressClass, probing))},
	}, {
		Name:              "every gateway serves it: Ready, with both load balancers",
		Key:               ns + "/ready",
		Objects:           []runtime.Object{ing("ready", IngressClass, probing)},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(ing("ready", IngressClass, ready))},
	}, {
		Name:    "steady state: no writes",
		Key:     ns + "/steady",
		Objects: []runtime.Object{ing("steady", IngressClass, ready)},
	}, {
		// The gateways' probe answers only once they present the
		// certificate, so Ready includes https.
		Name:              "TLS: configured, Ready when the gateways serve it",
		Key:               ns + "/tls",
		Objects:           []runtime.Object{ing("tls", IngressClass, withTLS, probing)},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(ing("tls", IngressClass, withTLS, ready))},
	}, {
		Name:    "invalid KIngress",
		Key:     ns + "/bad",
		Objects: []runtime.Object{ing("bad", IngressClass, withBadSplit)},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(ing("bad", IngressClass, withBadSplit,
			notConfigured(ReasonInvalid, "invalid KIngress: traffic split percentage must total to 100, but was 60: spec.rules[0].http.paths[0].splits")))},
	}}.Test(t, factory(st))
	if want := []string{"new", "ready", "steady", "tls"}; !equal(st.asked, want) {
		t.Errorf("prober asked about %v, want %v (never about refused or foreign KIngresses)", st.asked, want)
	}
}

func TestReconcileProbeError(t *testing.T) {
	st := &fakeStatus{err: errors.New("no ready gateway pod (app=spright-gateway)")}
	TableTest{{
		Name:              "no gateway to probe: not ready, retried",
		Key:               ns + "/new",
		Objects:           []runtime.Object{ing("new", IngressClass)},
		WantErr:           true,
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(ing("new", IngressClass, probing))},
		WantEvents:        []string{Eventf(corev1.EventTypeWarning, "InternalError", "probing the gateways: no ready gateway pod (app=spright-gateway)")},
	}}.Test(t, factory(st))
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func factory(st *fakeStatus) Factory {
	return func(t *testing.T, row *TableRow) (controller.Reconciler, ActionRecorderList, EventList) {
		idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
		var objs []runtime.Object
		for _, o := range row.Objects {
			idx.Add(o)
			objs = append(objs, o)
		}
		client := netfake.NewSimpleClientset(objs...)
		for _, r := range row.WithReactors {
			client.PrependReactor("*", "*", r)
		}
		recorder := record.NewFakeRecorder(10)
		ctx := row.Ctx
		if ctx == nil {
			ctx = logtesting.TestContextWithLogger(t)
		}
		row.Ctx = ctx
		r := ingressreconciler.NewReconciler(ctx, logtesting.TestLogger(t), client, netlisters.NewIngressLister(idx), recorder,
			&Reconciler{Status: st, PublicLB: publicLB, PrivateLB: privateLB}, IngressClass)
		r.(pkgreconciler.LeaderAware).Promote(pkgreconciler.UniversalBucket(), func(pkgreconciler.Bucket, types.NamespacedName) {})
		return r, ActionRecorderList{client}, EventList{Recorder: recorder}
	}
}
