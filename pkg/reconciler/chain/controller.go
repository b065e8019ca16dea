package chain

import (
	"context"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"
	netclient "knative.dev/networking/pkg/client/injection/client"
	ingressinformer "knative.dev/networking/pkg/client/injection/informers/networking/v1alpha1/ingress"
	kubeclient "knative.dev/pkg/client/injection/kube/client"
	k8ssvcinformer "knative.dev/pkg/client/injection/kube/informers/core/v1/service"
	"knative.dev/pkg/configmap"
	"knative.dev/pkg/controller"
	"knative.dev/pkg/injection/clients/dynamicclient"
	"knative.dev/pkg/logging"
	"knative.dev/serving/pkg/apis/serving"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	servingclient "knative.dev/serving/pkg/client/injection/client"
	revisioninformer "knative.dev/serving/pkg/client/injection/informers/serving/v1/revision"
	serviceinformer "knative.dev/serving/pkg/client/injection/informers/serving/v1/service"

	"github.com/spright-dev/spright/pkg/apis/spright/v1alpha1"
)

// NewController builds the chain controller (an injection.ControllerConstructor
// for sharedmain).
func NewController(ctx context.Context, cmw configmap.Watcher) *controller.Impl {
	logger := logging.FromContext(ctx)
	svcInformer := serviceinformer.Get(ctx)
	revInformer := revisioninformer.Get(ctx)
	k8sSvcInformer := k8ssvcinformer.Get(ctx)
	ingInformer := ingressinformer.Get(ctx)

	// Chains are read through the dynamic client (no generated clientset
	// for our one small type); their informer is ours to start.
	dyn := dynamicclient.Get(ctx)
	chainInformer := dynamicinformer.NewDynamicSharedInformerFactory(dyn, 10*time.Hour).ForResource(v1alpha1.ChainResource)

	var cfg atomic.Pointer[Config]
	cfg.Store(DefaultConfig())
	r := &Reconciler{
		Dynamic:          dyn,
		Kube:             kubeclient.Get(ctx),
		Serving:          servingclient.Get(ctx),
		Networking:       netclient.Get(ctx),
		ServiceLister:    svcInformer.Lister(),
		RevisionLister:   revInformer.Lister(),
		ChainLister:      chainInformer.Lister(),
		K8sServiceLister: k8sSvcInformer.Lister(),
		IngressLister:    ingInformer.Lister(),
		Config:           cfg.Load,
	}
	impl := controller.NewContext(ctx, r, controller.ControllerOptions{WorkQueueName: "Chains", Logger: logger})

	chains := func() []*v1alpha1.Chain {
		objs, err := r.ChainLister.List(labels.Everything())
		if err != nil {
			return nil
		}
		var out []*v1alpha1.Chain
		for _, o := range objs {
			if u, ok := o.(*unstructured.Unstructured); ok {
				if c, err := v1alpha1.FromUnstructured(u); err == nil {
					out = append(out, c)
				}
			}
		}
		return out
	}
	enqueueService := func(obj interface{}) {
		s, ok := unwrap(obj).(*servingv1.Service)
		if !ok {
			return
		}
		for _, k := range ChainKeys(s, chains()) {
			impl.EnqueueKey(splitKey(k))
		}
	}
	svcInformer.Informer().AddEventHandler(handleAll(enqueueService))

	revInformer.Informer().AddEventHandler(handleAll(func(obj interface{}) {
		rev, ok := unwrap(obj).(*servingv1.Revision)
		if !ok {
			return
		}
		if s, err := r.ServiceLister.Services(rev.Namespace).Get(rev.Labels[serving.ServiceLabelKey]); err == nil {
			enqueueService(s)
		}
	}))

	chainInformer.Informer().AddEventHandler(handleAll(func(obj interface{}) {
		if u, ok := unwrap(obj).(*unstructured.Unstructured); ok {
			impl.EnqueueKey(types.NamespacedName{Namespace: u.GetNamespace(), Name: u.GetName()})
		}
	}))

	byLabel := cache.FilteringResourceEventHandler{
		FilterFunc: func(obj interface{}) bool {
			m, ok := unwrap(obj).(interface{ GetLabels() map[string]string })
			return ok && m.GetLabels()[ChainLabel] != ""
		},
		Handler: handleAll(func(obj interface{}) {
			m := unwrap(obj).(interface {
				GetLabels() map[string]string
				GetNamespace() string
			})
			impl.EnqueueKey(types.NamespacedName{Namespace: m.GetNamespace(), Name: m.GetLabels()[ChainLabel]})
		}),
	}
	k8sSvcInformer.Informer().AddEventHandler(byLabel)
	ingInformer.Informer().AddEventHandler(byLabel)

	cmw.Watch(ConfigName, func(cm *corev1.ConfigMap) {
		c, err := NewConfigFromConfigMap(cm)
		if err != nil {
			logger.Errorw("ignoring invalid config-spright; keeping the previous one", "error", err)
			return
		}
		cfg.Store(c)
		for _, ch := range chains() {
			impl.EnqueueKey(types.NamespacedName{Namespace: ch.Namespace, Name: ch.Name})
		}
	})

	go chainInformer.Informer().Run(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), chainInformer.Informer().HasSynced) {
		logger.Error("chain informer did not sync before shutdown")
	}
	return impl
}

func splitKey(k string) types.NamespacedName {
	ns, name, _ := cache.SplitMetaNamespaceKey(k)
	return types.NamespacedName{Namespace: ns, Name: name}
}

// unwrap returns the object of a delete tombstone.
func unwrap(obj interface{}) interface{} {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		return t.Obj
	}
	return obj
}

func handleAll(f func(interface{})) cache.ResourceEventHandlerFuncs {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    f,
		UpdateFunc: func(_, n interface{}) { f(n) },
		DeleteFunc: f,
	}
}
