package chain

import (
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	dynamicfake "k8s.io/client-go/dynamic/fake"
	kubefake "k8s.io/client-go/kubernetes/fake"
	corev1listers "k8s.io/client-go/listers/core/v1"
	clientgotesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	netv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"
	netfake "knative.dev/networking/pkg/client/clientset/versioned/fake"
	netlisters "knative.dev/networking/pkg/client/listers/networking/v1alpha1"
	"knative.dev/pkg/apis"
	"knative.dev/pkg/controller"
	logtesting "knative.dev/pkg/logging/testing"
	pkgreconciler "knative.dev/pkg/reconciler"
	. "knative.dev/pkg/reconciler/testing"
	"knative.dev/serving/pkg/apis/autoscaling"
	"knative.dev/serving/pkg/apis/serving"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	servingfake "knative.dev/serving/pkg/client/clientset/versioned/fake"
	servinglisters "knative.dev/serving/pkg/client/listers/serving/v1"

	"github.com/spright-dev/spright/pkg/apis/spright/v1alpha1"
	"github.com/spright-dev/spright/pkg/chainspec"
)

const ns = "shop-ns"

// ---- object builders --------------------------------------------------

type svcOpt func(*servingv1.Service)

func ksvc(name string, ann map[string]string, opts ...svcOpt) *servingv1.Service {
	s := &servingv1.Service{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}}
	s.Spec.Template.Annotations = ann
	for _, o := range opts {
		o(s)
	}
	return s
}

// member annotates a chain member the way `kn service create --annotation`
// does, with min-scale already set unless noMinScale.
func member(name string, extra ...string) *servingv1.Service {
	ann := map[string]string{chainspec.AnnotationChain: "shop", autoscaling.MinScaleAnnotationKey: "1"}
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == "<unset>" {
			delete(ann, extra[i])
			continue
		}
		ann[extra[i]] = extra[i+1]
	}
	return ksvc(name, ann)
}

func rev(service, name string) *servingv1.Revision {
	return &servingv1.Revision{ObjectMeta: metav1.ObjectMeta{
		Name: name, Namespace: ns, Labels: map[string]string{serving.ServiceLabelKey: service},
	}}
}

type chainOpt func(*v1alpha1.Chain)

func chainObj(name string, opts ...chainOpt) *v1alpha1.Chain {
	c := &v1alpha1.Chain{
		TypeMeta:   metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: v1alpha1.Kind},
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{ChainLabel: name}},
	}
	for _, o := range opts {
		o(c)
	}
	return c
}

func withSpec(entry string, fns []v1alpha1.ChainFunction, routes ...v1alpha1.ChainRoute) chainOpt {
	return func(c *v1alpha1.Chain) {
		c.Spec = v1alpha1.ChainSpec{Entry: entry, Protocol: "http", Functions: fns, Routes: routes}
	}
}

func withProtocol(p string) chainOpt { return func(c *v1alpha1.Chain) { c.Spec.Protocol = p } }

func withValid() chainOpt {
	return func(c *v1alpha1.Chain) { c.Status.InitializeConditions(); c.Status.MarkValid() }
}

func withInvalid(reason, msg string) chainOpt {
	return func(c *v1alpha1.Chain) { c.Status.InitializeConditions(); c.Status.MarkInvalid(reason, "%s", msg) }
}

func withRouted(urlHost string) chainOpt {
	return func(c *v1alpha1.Chain) {
		c.Status.MarkRouted()
		c.Status.Address = Address(c.Namespace, c.Name)
		if urlHost != "" {
			c.Status.URL = &apis.URL{Scheme: "http", Host: urlHost}
		}
	}
}

func withNotRouted(reason, msg string) chainOpt {
	return func(c *v1alpha1.Chain) { c.Status.MarkNotRouted(reason, "%s", msg) }
}

func fn(name string, revs ...string) v1alpha1.ChainFunction {
	return v1alpha1.ChainFunction{Name: name, Revisions: revs}
}

func route(from, topic string, to ...string) v1alpha1.ChainRoute {
	return v1alpha1.ChainRoute{From: from, Topic: topic, To: to}
}

func gw(entry string) v1alpha1.ChainRoute { return route("gateway", "*", entry) }

func u(c *v1alpha1.Chain) *unstructured.Unstructured {
	out, err := v1alpha1.ToUnstructured(c)
	if err != nil {
		panic(err)
	}
	return out
}

// specOnly is what the reconciler creates: status goes in a second call.
func specOnly(c *v1alpha1.Chain) *unstructured.Unstructured {
	return u(&v1alpha1.Chain{TypeMeta: c.TypeMeta, ObjectMeta: c.ObjectMeta, Spec: c.Spec})
}

func statusUpdate(c *v1alpha1.Chain) clientgotesting.UpdateActionImpl {
	a := clientgotesting.NewUpdateSubresourceAction(v1alpha1.ChainResource, "status", ns, u(c))
	return a
}

func update(obj runtime.Object) clientgotesting.UpdateActionImpl {
	return clientgotesting.UpdateActionImpl{Object: obj}
}

func minScalePatch(name string) clientgotesting.PatchActionImpl {
	return clientgotesting.PatchActionImpl{
		ActionImpl: clientgotesting.ActionImpl{Namespace: ns},
		Name:       name, PatchType: types.MergePatchType, Patch: MinScalePatch(DefaultConfig()),
	}
}

func deleteAction(res, name string) clientgotesting.DeleteActionImpl {
	return clientgotesting.DeleteActionImpl{
		ActionImpl: clientgotesting.ActionImpl{Namespace: ns, Verb: "delete", Resource: schema.GroupVersionResource{Resource: res}},
		Name:       name,
	}
}

func owned(c *v1alpha1.Chain, cfg *Config) *corev1.Service { return MakeService(c, cfg) }

// ---- factory ----------------------------------------------------------

func makeFactory(cfg *Config) Factory {
	return func(t *testing.T, row *TableRow) (controller.Reconciler, ActionRecorderList, EventList) {
		var servingObjs, kubeObjs, netObjs, dynObjs []runtime.Object
		svcIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
		revIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
		chainIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
		k8sIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
		ingIdx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
		for _, o := range row.Objects {
			switch o := o.(type) {
			case *servingv1.Service:
				servingObjs = append(servingObjs, o)
				svcIdx.Add(o)
			case *servingv1.Revision:
				servingObjs = append(servingObjs, o)
				revIdx.Add(o)
			case *v1alpha1.Chain:
				uc := u(o)
				dynObjs = append(dynObjs, uc)
				chainIdx.Add(uc)
			case *corev1.Service:
				kubeObjs = append(kubeObjs, o)
				k8sIdx.Add(o)
			case *netv1alpha1.Ingress:
				netObjs = append(netObjs, o)
				ingIdx.Add(o)
			default:
				t.Fatalf("unexpected object type %T", o)
			}
		}
		servingClient := servingfake.NewSimpleClientset(servingObjs...)
		kubeClient := kubefake.NewSimpleClientset(kubeObjs...)
		netClient := netfake.NewSimpleClientset(netObjs...)
		dynClient := dynamicfake.NewSimpleDynamicClientWithCustomListKinds(runtime.NewScheme(),
			map[schema.GroupVersionResource]string{v1alpha1.ChainResource: "ChainList"}, dynObjs...)
		for _, r := range row.WithReactors {
			servingClient.PrependReactor("*", "*", r)
			kubeClient.PrependReactor("*", "*", r)
			netClient.PrependReactor("*", "*", r)
			dynClient.PrependReactor("*", "*", r)
		}
		recorder := record.NewFakeRecorder(100)
		ctx := row.Ctx
		if ctx == nil {
			ctx = logtesting.TestContextWithLogger(t)
		}
		row.Ctx = controller.WithEventRecorder(ctx, recorder)
		r := &Reconciler{
			Dynamic: dynClient, Kube: kubeClient, Serving: servingClient, Networking: netClient,
			ServiceLister:    servinglisters.NewServiceLister(svcIdx),
			RevisionLister:   servinglisters.NewRevisionLister(revIdx),
			ChainLister:      cache.NewGenericLister(chainIdx, v1alpha1.ChainResource.GroupResource()),
			K8sServiceLister: corev1listers.NewServiceLister(k8sIdx),
			IngressLister:    netlisters.NewIngressLister(ingIdx),
			Config:           func() *Config { return cfg },
		}
		r.Promote(pkgreconciler.UniversalBucket(), func(pkgreconciler.Bucket, types.NamespacedName) {})
		return r, ActionRecorderList{dynClient, kubeClient, servingClient, netClient}, EventList{Recorder: recorder}
	}
}

// chainTransform compares Chains read back from the dynamic client as typed
// objects, so the framework's LastTransitionTime filter applies.
var chainTransform = cmp.Transformer("chain", func(in *unstructured.Unstructured) *v1alpha1.Chain {
	c, err := v1alpha1.FromUnstructured(in)
	if err != nil {
		panic(err)
	}
	return c
})

func run(t *testing.T, cfg *Config, rows TableTest) {
	t.Helper()
	for i := range rows {
		rows[i].CmpOpts = append(rows[i].CmpOpts, chainTransform)
	}
	rows.Test(t, makeFactory(cfg))
}

// ---- the table --------------------------------------------------------

func TestReconcile(t *testing.T) {
	cfg := DefaultConfig()
	valid := chainObj("shop",
		withSpec("frontend", []v1alpha1.ChainFunction{fn("cart", "cart-00001"), fn("frontend", "frontend-00001")},
			gw("frontend"), route("frontend", "*", "cart")))
	validReady := chainObj("shop",
		withSpec("frontend", []v1alpha1.ChainFunction{fn("cart", "cart-00001"), fn("frontend", "frontend-00001")},
			gw("frontend"), route("frontend", "*", "cart")),
		withValid(), withRouted(""))
	frontend := member("frontend", chainspec.AnnotationEntry, "true", chainspec.AnnotationRoutes, "*=cart")
	cart := member("cart")
	revs := []runtime.Object{rev("cart", "cart-00001"), rev("frontend", "frontend-00001")}

	run(t, cfg, TableTest{{
		Name: "bad key",
		Key:  "too/many/parts",
	}, {
		Name: "no members, no chain: nothing to do",
		Key:  ns + "/shop",
		Objects: []runtime.Object{
			ksvc("plain", map[string]string{"autoscaling.knative.dev/target": "10"}),
		},
	}, {
		Name:        "two members: chain published and routed",
		Key:         ns + "/shop",
		Objects:     append([]runtime.Object{frontend, cart}, revs...),
		WantCreates: []runtime.Object{specOnly(valid), owned(valid, cfg)},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{
			statusUpdate(validReady),
		},
	}, {
		Name: "min-scale defaulted when the user set none",
		Key:  ns + "/shop",
		Objects: append([]runtime.Object{
			member("frontend", chainspec.AnnotationEntry, "true", chainspec.AnnotationRoutes, "*=cart", autoscaling.MinScaleAnnotationKey, "<unset>"),
			member("cart", autoscaling.MinScaleAnnotationKey, "<unset>"),
		}, revs...),
		WantPatches: []clientgotesting.PatchActionImpl{minScalePatch("cart"), minScalePatch("frontend")},
		WantEvents: []string{
			Eventf(corev1.EventTypeNormal, ReasonMinScaleDefaulted, "member of chain shop: set autoscaling.knative.dev/min-scale=1 (a warm SPRIGHT function costs no CPU)"),
			Eventf(corev1.EventTypeNormal, ReasonMinScaleDefaulted, "member of chain shop: set autoscaling.knative.dev/min-scale=1 (a warm SPRIGHT function costs no CPU)"),
		},
		WantCreates:       []runtime.Object{specOnly(valid), owned(valid, cfg)},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(validReady)},
	}, {
		Name: "user's min-scale (legacy spelling) is kept",
		Key:  ns + "/shop",
		Objects: append([]runtime.Object{
			member("frontend", chainspec.AnnotationEntry, "true", chainspec.AnnotationRoutes, "*=cart", autoscaling.MinScaleAnnotationKey, "<unset>", "autoscaling.knative.dev/minScale", "0"),
			cart,
		}, revs...),
		WantCreates:       []runtime.Object{specOnly(valid), owned(valid, cfg)},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(validReady)},
	}, {
		Name:    "steady state: no writes",
		Key:     ns + "/shop",
		Objects: append([]runtime.Object{frontend, cart, validReady, owned(validReady, cfg)}, revs...),
	}, {
		Name: "new revision is published",
		Key:  ns + "/shop",
		Objects: append([]runtime.Object{frontend, cart, validReady, owned(validReady, cfg),
			rev("cart", "cart-00002")}, revs...),
		WantUpdates: []clientgotesting.UpdateActionImpl{update(u(chainObj("shop",
			withSpec("frontend", []v1alpha1.ChainFunction{fn("cart", "cart-00001", "cart-00002"), fn("frontend", "frontend-00001")},
				gw("frontend"), route("frontend", "*", "cart")), withValid(), withRouted(""))))},
	}, {
		Name: "bad routes syntax: condition on the chain, warning on the service",
		Key:  ns + "/shop",
		Objects: []runtime.Object{
			member("frontend", chainspec.AnnotationEntry, "true", chainspec.AnnotationRoutes, "*cart"),
		},
		WantCreates: []runtime.Object{specOnly(chainObj("shop"))},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(chainObj("shop",
			withNotRouted(ReasonNotValid, "the chain has never been valid, so it is not routed"),
			withInvalid(ReasonInvalidAnnotations, `service frontend: invalid spright.dev/routes: "*cart": want topic=function[,function...]`)))},
		WantEvents: []string{
			Eventf(corev1.EventTypeWarning, ReasonInvalidAnnotations, `chain shop: invalid spright.dev/routes: "*cart": want topic=function[,function...]`),
			Eventf(corev1.EventTypeWarning, ReasonInvalidAnnotations, `service frontend: invalid spright.dev/routes: "*cart": want topic=function[,function...]`),
		},
	}, {
		Name: "bad entry and bad protocol values",
		Key:  ns + "/shop",
		Objects: []runtime.Object{
			member("frontend", chainspec.AnnotationEntry, "yes"),
			member("cart", chainspec.AnnotationProtocol, "amqp"),
		},
		WantCreates: []runtime.Object{specOnly(chainObj("shop"))},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(chainObj("shop",
			withNotRouted(ReasonNotValid, "the chain has never been valid, so it is not routed"),
			withInvalid(ReasonInvalidAnnotations, `service cart: invalid spright.dev/protocol: "amqp" (want one of http, cloudevents, mqtt, coap, web); service frontend: invalid spright.dev/entry: "yes" (want "true" or "false")`)))},
		WantEvents: []string{
			Eventf(corev1.EventTypeWarning, ReasonInvalidAnnotations, `chain shop: invalid spright.dev/protocol: "amqp" (want one of http, cloudevents, mqtt, coap, web)`),
			Eventf(corev1.EventTypeWarning, ReasonInvalidAnnotations, `chain shop: invalid spright.dev/entry: "yes" (want "true" or "false")`),
			Eventf(corev1.EventTypeWarning, ReasonInvalidAnnotations, `service cart: invalid spright.dev/protocol: "amqp" (want one of http, cloudevents, mqtt, coap, web); service frontend: invalid spright.dev/entry: "yes" (want "true" or "false")`),
		},
	}, {
		Name: "route to a function that is not a member",
		Key:  ns + "/shop",
		Objects: []runtime.Object{
			member("frontend", chainspec.AnnotationEntry, "true", chainspec.AnnotationRoutes, "*=cart;checkout=payment"),
			cart,
		},
		WantCreates: []runtime.Object{specOnly(chainObj("shop"))},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(chainObj("shop",
			withNotRouted(ReasonNotValid, "the chain has never been valid, so it is not routed"),
			withInvalid(ReasonUnknownMember, `route to a function that is not a member of the chain: frontend routes topic "checkout" to "payment"`)))},
		WantEvents: []string{
			Eventf(corev1.EventTypeWarning, ReasonUnknownMember, `route to a function that is not a member of the chain: frontend routes topic "checkout" to "payment"`),
		},
	}, {
		Name: "routes loop with no exit",
		Key:  ns + "/shop",
		Objects: []runtime.Object{
			member("frontend", chainspec.AnnotationEntry, "true", chainspec.AnnotationRoutes, "*=cart"),
			member("cart", chainspec.AnnotationRoutes, "*=frontend"),
		},
		WantCreates: []runtime.Object{specOnly(chainObj("shop"))},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(chainObj("shop",
			withNotRouted(ReasonNotValid, "the chain has never been valid, so it is not routed"),
			withInvalid(ReasonCycle, "routes loop with no exit: frontend → cart → frontend → cart → frontend → cart → frontend → cart …")))},
		WantEvents: []string{Eventf(corev1.EventTypeWarning, ReasonCycle, "routes loop with no exit: frontend → cart → frontend → cart → frontend → cart → frontend → cart …")},
	}, {
		Name:        "no entry",
		Key:         ns + "/shop",
		Objects:     []runtime.Object{member("frontend"), cart},
		WantCreates: []runtime.Object{specOnly(chainObj("shop"))},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(chainObj("shop",
			withNotRouted(ReasonNotValid, "the chain has never been valid, so it is not routed"),
			withInvalid(ReasonNoEntry, `chain has no entry (spright.dev/entry: "true")`)))},
		WantEvents: []string{Eventf(corev1.EventTypeWarning, ReasonNoEntry, `chain has no entry (spright.dev/entry: "true")`)},
	}, {
		Name:        "two entries",
		Key:         ns + "/shop",
		Objects:     []runtime.Object{member("frontend", chainspec.AnnotationEntry, "true"), member("cart", chainspec.AnnotationEntry, "true")},
		WantCreates: []runtime.Object{specOnly(chainObj("shop"))},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(chainObj("shop",
			withNotRouted(ReasonNotValid, "the chain has never been valid, so it is not routed"),
			withInvalid(ReasonManyEntries, "chain has more than one entry: cart, frontend")))},
		WantEvents: []string{Eventf(corev1.EventTypeWarning, ReasonManyEntries, "chain has more than one entry: cart, frontend")},
	}, {
		Name: "members declare different protocols",
		Key:  ns + "/shop",
		Objects: []runtime.Object{
			member("frontend", chainspec.AnnotationEntry, "true", chainspec.AnnotationRoutes, "*=cart", chainspec.AnnotationProtocol, "mqtt"),
			member("cart", chainspec.AnnotationProtocol, "coap"),
		},
		WantCreates: []runtime.Object{specOnly(chainObj("shop"))},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(chainObj("shop",
			withNotRouted(ReasonNotValid, "the chain has never been valid, so it is not routed"),
			withInvalid(ReasonProtocolClash, "members declare different protocols: [coap mqtt]")))},
		WantEvents: []string{Eventf(corev1.EventTypeWarning, ReasonProtocolClash, "members declare different protocols: [coap mqtt]")},
	}, {
		Name: "a valid chain turns invalid: last spec kept, still routed",
		Key:  ns + "/shop",
		Objects: append([]runtime.Object{
			member("frontend", chainspec.AnnotationEntry, "true", chainspec.AnnotationRoutes, "*=cart;x=ghost"),
			cart, validReady, owned(validReady, cfg),
		}, revs...),
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(chainObj("shop",
			withSpec("frontend", []v1alpha1.ChainFunction{fn("cart", "cart-00001"), fn("frontend", "frontend-00001")},
				gw("frontend"), route("frontend", "*", "cart")),
			withValid(), withRouted(""),
			withInvalid(ReasonUnknownMember, `route to a function that is not a member of the chain: frontend routes topic "x" to "ghost"`)))},
		WantEvents: []string{
			Eventf(corev1.EventTypeWarning, ReasonUnknownMember, `route to a function that is not a member of the chain: frontend routes topic "x" to "ghost"`),
		},
	}, {
		Name:        "last member left: chain and its service deleted",
		Key:         ns + "/shop",
		Objects:     []runtime.Object{ksvc("frontend", nil), validReady, owned(validReady, cfg)},
		WantDeletes: []clientgotesting.DeleteActionImpl{deleteAction("services", "shop-chain"), deleteAction("chains", "shop")},
	}, {
		Name: "the chain's service name is taken by someone else",
		Key:  ns + "/shop",
		Objects: append([]runtime.Object{frontend, cart,
			&corev1.Service{ObjectMeta: metav1.ObjectMeta{Name: "shop-chain", Namespace: ns}}}, revs...),
		WantCreates: []runtime.Object{specOnly(valid)},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(chainObj("shop",
			withSpec("frontend", []v1alpha1.ChainFunction{fn("cart", "cart-00001"), fn("frontend", "frontend-00001")},
				gw("frontend"), route("frontend", "*", "cart")),
			withValid(), withNotRouted(ReasonRouteFailed, "service shop-ns/shop-chain exists and is not owned by chain shop")))},
		WantEvents: []string{Eventf(corev1.EventTypeWarning, ReasonRouteFailed, "service shop-ns/shop-chain exists and is not owned by chain shop")},
	}, {
		Name: "spright annotations without spright.dev/chain: warned",
		Key:  ns + "/",
		Objects: []runtime.Object{
			ksvc("lost", map[string]string{chainspec.AnnotationRoutes: "*=cart"}),
			ksvc("plain", map[string]string{"autoscaling.knative.dev/target": "10"}),
		},
		WantEvents: []string{Eventf(corev1.EventTypeWarning, ReasonInvalidAnnotations, "spright.dev/routes is set but spright.dev/chain is not: the revision joins no chain")},
	}, {
		Name:    "mqtt chain",
		Key:     ns + "/shop",
		Objects: []runtime.Object{member("frontend", chainspec.AnnotationEntry, "true", chainspec.AnnotationProtocol, "mqtt")},
		WantCreates: []runtime.Object{
			specOnly(chainObj("shop", withSpec("frontend", []v1alpha1.ChainFunction{fn("frontend")}, gw("frontend")), withProtocol("mqtt"))),
			owned(chainObj("shop"), cfg),
		},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(chainObj("shop",
			withSpec("frontend", []v1alpha1.ChainFunction{fn("frontend")}, gw("frontend")), withProtocol("mqtt"),
			withValid(), withRouted("")))},
	}})
}

func TestReconcileExternalDomain(t *testing.T) {
	cfg := DefaultConfig()
	cfg.Domain = "example.com"
	frontend := member("frontend", chainspec.AnnotationEntry, "true")
	c := chainObj("shop", withSpec("frontend", []v1alpha1.ChainFunction{fn("frontend")}, gw("frontend")))
	ready := chainObj("shop", withSpec("frontend", []v1alpha1.ChainFunction{fn("frontend")}, gw("frontend")),
		withValid(), withRouted("shop.shop-ns.example.com"))
	ing := MakeIngress(c, cfg)
	if got := ing.Spec.Rules[0].Hosts; len(got) != 1 || got[0] != "shop.shop-ns.example.com" {
		t.Fatalf("ingress hosts %v", got)
	}
	if got := ing.Spec.Rules[0].HTTP.Paths[0].AppendHeaders[ChainHeader]; got != "shop-ns/shop" {
		t.Fatalf("ingress appends %s: %q", ChainHeader, got)
	}
	movedCfg := *cfg
	movedCfg.GatewayService = "gw.elsewhere.svc.cluster.local"
	run(t, cfg, TableTest{{
		Name:              "external host gets a KIngress to the chain's service",
		Key:               ns + "/shop",
		Objects:           []runtime.Object{frontend},
		WantCreates:       []runtime.Object{specOnly(c), owned(c, cfg), ing},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(ready)},
	}, {
		Name:    "external steady state: no writes",
		Key:     ns + "/shop",
		Objects: []runtime.Object{frontend, ready, owned(ready, cfg), MakeIngress(ready, cfg)},
	}})
	noDomain := DefaultConfig()
	run(t, noDomain, TableTest{{
		Name:        "domain removed: KIngress deleted, URL cleared",
		Key:         ns + "/shop",
		Objects:     []runtime.Object{frontend, ready, owned(ready, cfg), MakeIngress(ready, cfg)},
		WantDeletes: []clientgotesting.DeleteActionImpl{deleteAction("ingresses", "shop-chain")},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(chainObj("shop",
			withSpec("frontend", []v1alpha1.ChainFunction{fn("frontend")}, gw("frontend")), withValid(), withRouted("")))},
	}})
	run(t, &movedCfg, TableTest{{
		Name:        "gateway service moved: ExternalName follows",
		Key:         ns + "/shop",
		Objects:     []runtime.Object{frontend, ready, owned(ready, cfg), MakeIngress(ready, cfg)},
		WantUpdates: []clientgotesting.UpdateActionImpl{update(owned(ready, &movedCfg))},
	}})
}

// TestReconcileOnlineBoutique: the six chains of DESIGN §8 set up with kn
// annotations (a frontend entry with one route per chain, nine services)
// publish one Chain whose routes are exactly those itineraries.
func TestReconcileOnlineBoutique(t *testing.T) {
	cfg := DefaultConfig()
	itineraries := [][2]string{
		{"ch1", "currency,productcatalog,cart,currency,currency,currency,currency,currency,currency,currency,ad"},
		{"ch2", "currency,cart,recommendation,productcatalog,productcatalog,productcatalog,productcatalog,productcatalog,shipping,currency,productcatalog,currency"},
		{"ch3", "productcatalog,cart"},
		{"ch4", "checkout,productcatalog,payment,shipping,email,recommendation,productcatalog,productcatalog,productcatalog,productcatalog,currency"},
		{"ch5", "productcatalog,currency,cart,currency,recommendation,productcatalog,productcatalog,productcatalog,productcatalog,ad"},
		{"ch6", "currency"},
	}
	var ann []string
	routes := []v1alpha1.ChainRoute{gw("frontend")}
	for _, it := range itineraries {
		ann = append(ann, it[0]+"="+it[1])
		routes = append(routes, route("frontend", it[0], strings.Split(it[1], ",")...))
	}
	objs := []runtime.Object{member("frontend", chainspec.AnnotationEntry, "true", chainspec.AnnotationRoutes, strings.Join(ann, ";"))}
	services := []string{"ad", "cart", "checkout", "currency", "email", "frontend", "payment", "productcatalog", "recommendation", "shipping"}
	var fns []v1alpha1.ChainFunction
	for _, s := range services {
		if s != "frontend" {
			objs = append(objs, member(s))
		}
		objs = append(objs, rev(s, s+"-00001"))
		fns = append(fns, fn(s, s+"-00001"))
	}
	c := chainObj("shop", withSpec("frontend", fns, routes...))
	run(t, cfg, TableTest{{
		Name:              "online boutique",
		Key:               ns + "/shop",
		Objects:           objs,
		WantCreates:       []runtime.Object{specOnly(c), owned(c, cfg)},
		WantStatusUpdates: []clientgotesting.UpdateActionImpl{statusUpdate(chainObj("shop", withSpec("frontend", fns, routes...), withValid(), withRouted("")))},
	}})
	// And the published spec loads into the gateway's route table.
	if err := c.Spec.RoutingSpec().Validate(); err != nil {
		t.Fatalf("published spec does not load: %v", err)
	}
}

func TestChainKeys(t *testing.T) {
	listed := chainObj("old", withSpec("a", []v1alpha1.ChainFunction{fn("a")}, gw("a")))
	other := chainObj("other", withSpec("b", []v1alpha1.ChainFunction{fn("b")}, gw("b")))
	for _, tc := range []struct {
		name string
		svc  *servingv1.Service
		want []string
	}{
		{"joins shop, was in old", ksvc("a", map[string]string{chainspec.AnnotationChain: "shop"}), []string{ns + "/shop", ns + "/old"}},
		{"left every chain", ksvc("a", nil), []string{ns + "/old"}},
		{"orphan annotations", ksvc("z", map[string]string{chainspec.AnnotationEntry: "true"}), []string{ns + "/"}},
		{"unrelated", ksvc("z", map[string]string{"x": "y"}), nil},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := ChainKeys(tc.svc, []*v1alpha1.Chain{listed, other}); !cmp.Equal(got, tc.want, cmpEmpty) {
				t.Errorf("ChainKeys = %v, want %v", got, tc.want)
			}
		})
	}
}

var cmpEmpty = cmp.Comparer(func(a, b []string) bool { return strings.Join(a, ",") == strings.Join(b, ",") })

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		data    map[string]string
		wantErr string
		check   func(*Config) bool
	}{
		{nil, "", func(c *Config) bool { return *c == *DefaultConfig() }},
		{map[string]string{"domain": "example.com.", "default-min-scale": ""}, "", func(c *Config) bool { return c.Domain == "example.com" && c.DefaultMinScale == "" }},
		{map[string]string{"gateway-port": "8080", "ingress-class": "istio.ingress.networking.knative.dev"}, "", func(c *Config) bool {
			return c.GatewayPort == 8080 && c.IngressClass == "istio.ingress.networking.knative.dev"
		}},
		{map[string]string{"gateway-port": "0"}, `gateway-port "0" is not a port number`, nil},
		{map[string]string{"default-min-scale": "-1"}, "not a non-negative integer", nil},
		{map[string]string{"gateway-service": " "}, "must not be empty", nil},
		{map[string]string{"domian": "typo.example"}, `unknown key "domian"`, nil},
	} {
		c, err := NewConfigFromConfigMap(&corev1.ConfigMap{Data: tc.data})
		switch {
		case tc.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tc.wantErr)):
			t.Errorf("%v: err %v, want %q", tc.data, err, tc.wantErr)
		case tc.wantErr == "" && err != nil:
			t.Errorf("%v: %v", tc.data, err)
		case tc.check != nil && err == nil && !tc.check(c):
			t.Errorf("%v: got %+v", tc.data, c)
		}
	}
}
