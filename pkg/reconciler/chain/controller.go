package chain

import (
	"context"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	netclient "knative.dev/networking/pkg/client/injection/client"
	ingressinformer "knative.dev/networking/pkg/client/injection/informers/networking/v1alpha1/ingress"
	kubeclient "knative.dev/pkg/client/injection/kube/client"
	k8ssvcinformer "knative.dev/pkg/client/injection/kube/informers/core/v1/service"
	"knative.dev/pkg/configmap"
	"knative.dev/pkg/controller"
	"knative.dev/pkg/injection/clients/dynamicclient"
	"knative.dev/pkg/logging"
	pkgreconciler "knative.dev/pkg/reconciler"
	"knative.dev/serving/pkg/apis/serving"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	servingscheme "knative.dev/serving/pkg/client/clientset/versioned/scheme"
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
		Recorder:         eventRecorder(ctx, logger),
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
	r.PromoteFunc = func(bkt pkgreconciler.Bucket, enq func(pkgreconciler.Bucket, types.NamespacedName)) error {
		services, err := r.ServiceLister.List(labels.Everything())
		if err != nil {
			return err
		}
		all := chains()
		seen := map[string]bool{}
		for _, s := range services {
			for _, k := range ChainKeys(s, all) {
				seen[k] = true
			}
		}
		for _, c := range all {
			seen[c.Namespace+"/"+c.Name] = true
		}
		for k := range seen {
			if key := splitKey(k); bkt.Has(key) {
				enq(bkt, key)
			}
		}
		return nil
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

// eventRecorder is the context's recorder, or one that writes Events
// through the API server as "spright-controller".
func eventRecorder(ctx context.Context, logger *zap.SugaredLogger) record.EventRecorder {
	if rec := controller.GetEventRecorder(ctx); rec != nil {
		return rec
	}
	b := record.NewBroadcaster()
	b.StartLogging(logger.Named("event-broadcaster").Infof)
	b.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: kubeclient.Get(ctx).CoreV1().Events("")})
	go func() {
		<-ctx.Done()
		b.Shutdown()
	}()
	sch := runtime.NewScheme()
	_ = scheme.AddToScheme(sch)
	_ = servingscheme.AddToScheme(sch)
	return b.NewRecorder(sch, corev1.EventSource{Component: "spright-controller"})
}
