package ingress

import (
	"context"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	ingressinformer "knative.dev/networking/pkg/client/injection/informers/networking/v1alpha1/ingress"
	ingressreconciler "knative.dev/networking/pkg/client/injection/reconciler/networking/v1alpha1/ingress"
	"knative.dev/networking/pkg/status"
	kubeclient "knative.dev/pkg/client/injection/kube/client"
	"knative.dev/pkg/configmap"
	"knative.dev/pkg/controller"
	"knative.dev/pkg/logging"
	"knative.dev/pkg/network"
	pkgreconciler "knative.dev/pkg/reconciler"
	"knative.dev/pkg/system"
)

// isSpright filters KIngresses of the SPRIGHT class (the annotation Knative
// Serving sets from config-network's ingress-class).
var isSpright = pkgreconciler.AnnotationFilterFunc(networking.IngressClassAnnotationKey, IngressClass, false)

// NewController builds the KIngress controller (an
// injection.ControllerConstructor for sharedmain).
func NewController(ctx context.Context, _ configmap.Watcher) *controller.Impl {
	logger := logging.FromContext(ctx)
	ingInformer := ingressinformer.Get(ctx)

	// Only the gateway pods, in the system namespace: an informer of our
	// own rather than every pod of the cluster.
	ns := system.Namespace()
	pods := kubeinformers.NewSharedInformerFactoryWithOptions(kubeclient.Get(ctx), 10*time.Hour,
		kubeinformers.WithNamespace(ns),
		kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) {
			o.LabelSelector = GatewayLabelKey + "=" + GatewayLabelValue
		})).Core().V1().Pods()

	r := &Reconciler{
		PublicLB:  network.GetServiceHostname(ExternalServiceName, ns),
		PrivateLB: network.GetServiceHostname(LocalServiceName, ns),
	}
	impl := ingressreconciler.NewImpl(ctx, r, IngressClass, func(*controller.Impl) controller.Options {
		return controller.Options{PromoteFilterFunc: isSpright}
	})
	prober := status.NewProber(logger.Named("status-manager"), &GatewayTargets{Pods: pods.Lister().Pods(ns)},
		func(ing *v1alpha1.Ingress) {
			impl.EnqueueKey(types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name})
		})
	r.Status = prober
	prober.Start(ctx.Done())

	ingInformer.Informer().AddEventHandler(cache.FilteringResourceEventHandler{
		FilterFunc: isSpright,
		Handler:    controller.HandleAll(impl.Enqueue),
	})
	ingInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		DeleteFunc: prober.CancelIngressProbing,
	})

	// A gateway pod that becomes ready may be what a KIngress waits for.
	notReady := func(obj interface{}) bool {
		ing, ok := obj.(*v1alpha1.Ingress)
		return ok && isSpright(ing) && !ing.IsReady()
	}
	pods.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: func(obj interface{}) {
			if p, ok := obj.(*corev1.Pod); ok && podReady(p) {
				impl.FilteredGlobalResync(notReady, ingInformer.Informer())
			}
		},
		UpdateFunc: func(old, obj interface{}) {
			o, ok1 := old.(*corev1.Pod)
			p, ok2 := obj.(*corev1.Pod)
			if ok1 && ok2 && !podReady(o) && podReady(p) {
				impl.FilteredGlobalResync(notReady, ingInformer.Informer())
			}
		},
		DeleteFunc: func(obj interface{}) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			prober.CancelPodProbing(obj)
		},
	})
	go pods.Informer().Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), pods.Informer().HasSynced) {
		logger.Error("gateway pod informer did not sync before shutdown")
	}
	return impl
}
