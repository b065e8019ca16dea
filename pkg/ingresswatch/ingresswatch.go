package ingresswatch

import (
	"context"
	"crypto/tls"
	"errors"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	kubeinformers "k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netclientset "knative.dev/networking/pkg/client/clientset/versioned"
	netinformers "knative.dev/networking/pkg/client/informers/externalversions"

	gwingress "github.com/spright-dev/spright/pkg/gateway/ingress"
	"github.com/spright-dev/spright/pkg/ingressconfig"
)

// Options configure a Watcher.
type Options struct {
	// Chains serves chain requests (pkg/chainwatch); nil: no chains.
	Chains gwingress.ChainFunc
	// Resync is the informers' resync period (default 10h).
	Resync time.Duration
	// TLS watches the Secrets labeled gwingress.SecretLabel for the
	// KIngresses' spec.tls (the gateway has a TLS listener; Proxy's
	// TLSConfig). Without it a KIngress with TLS is never Ready: its probe
	// says the gateway has no TLS listener.
	TLS bool
}

// Watcher applies the cluster's KIngresses of the SPRIGHT class to a data
// plane.
type Watcher struct {
	log   *zap.Logger
	proxy *gwingress.Proxy

	ingInformer cache.SharedIndexInformer
	caches      []cache.InformerSynced
	start       []func(<-chan struct{})

	mu        sync.Mutex
	ings      map[types.NamespacedName]*ingressconfig.Ingress
	refused   map[types.NamespacedName]string // resourceVersion last refused
	conflicts map[string]bool
	synced    atomic.Bool
}

// New returns a Watcher that reads KIngresses through net and Services
// through kube. Run starts it.
func New(net netclientset.Interface, kube kubernetes.Interface, opts Options, log *zap.Logger) *Watcher {
	if opts.Resync <= 0 {
		opts.Resync = 10 * time.Hour
	}
	nf := netinformers.NewSharedInformerFactory(net, opts.Resync)
	kf := kubeinformers.NewSharedInformerFactory(kube, opts.Resync)
	ingInf := nf.Networking().V1alpha1().Ingresses()
	svcInf := kf.Core().V1().Services()
	epInf := kf.Discovery().V1().EndpointSlices().Informer()
	// Before the factory starts it, so no error is possible.
	_ = epInf.AddIndexers(gwingress.EndpointSliceIndexers())
	starts := []func(<-chan struct{}){nf.Start, kf.Start}
	synced := []cache.InformerSynced{ingInf.Informer().HasSynced, svcInf.Informer().HasSynced, epInf.HasSynced}
	var certs *gwingress.SecretCertificates
	if opts.TLS {
		// Only the Secrets of certificates (Knative's label), not every
		// Secret of the cluster.
		sf := kubeinformers.NewSharedInformerFactoryWithOptions(kube, opts.Resync,
			kubeinformers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = gwingress.SecretLabel }))
		secInf := sf.Core().V1().Secrets()
		certs = &gwingress.SecretCertificates{Secrets: secInf.Lister()}
		_, _ = secInf.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{DeleteFunc: func(obj interface{}) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if s, ok := obj.(*corev1.Secret); ok {
				certs.Forget(ingressconfig.SecretRef{Namespace: s.Namespace, Name: s.Name})
			}
		}})
		starts = append(starts, sf.Start)
		synced = append(synced, secInf.Informer().HasSynced)
	}
	w := &Watcher{
		log: log,
		proxy: gwingress.New(gwingress.Options{
			Resolver:     &gwingress.ServiceResolver{Services: svcInf.Lister(), EndpointSlices: epInf.GetIndexer()},
			Certificates: certificates(certs),
			Chains:       opts.Chains,
			Logger:       log,
		}),
		ingInformer: ingInf.Informer(),
		caches:      synced,
		start:       starts,
		ings:        map[types.NamespacedName]*ingressconfig.Ingress{},
		refused:     map[types.NamespacedName]string{},
		conflicts:   map[string]bool{},
	}
	return w
}

// certificates avoids a typed nil in the Certificates interface.
func certificates(c *gwingress.SecretCertificates) gwingress.Certificates {
	if c == nil {
		return nil
	}
	return c
}

// Proxy is the data plane the Watcher configures.
func (w *Watcher) Proxy() *gwingress.Proxy { return w.proxy }

// TLSConfig is the TLS listener's configuration (Options.TLS): serve it
// with Handler(ingressconfig.External).
func (w *Watcher) TLSConfig() *tls.Config { return w.proxy.TLSConfig() }

// Handler serves one of the gateway's listeners.
func (w *Watcher) Handler(l ingressconfig.Listener) http.Handler { return w.proxy.Handler(l) }

// Synced reports whether the first complete configuration is published.
func (w *Watcher) Synced() bool { return w.synced.Load() }

// Apply adds or updates one KIngress (or drops it when its class is not
// SPRIGHT's).
func (w *Watcher) Apply(ing *v1alpha1.Ingress) {
	key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
	if !ingressconfig.IsSpright(ing.Annotations) {
		w.Delete(key)
		return
	}
	tr, err := ingressconfig.Translate(ing)
	w.mu.Lock()
	defer w.mu.Unlock()
	if err != nil {
		if w.refused[key] != ing.ResourceVersion {
			w.refused[key] = ing.ResourceVersion
			w.log.Warn("KIngress refused; the last version accepted stays in service", zap.Stringer("ingress", key), zap.Bool("serving_previous", w.ings[key] != nil), zap.Error(err))
		}
		return
	}
	delete(w.refused, key)
	if old := w.ings[key]; old != nil && old.Hash == tr.Hash {
		return
	}
	w.ings[key] = tr
	w.publishLocked()
}

// Delete stops serving a KIngress.
func (w *Watcher) Delete(key types.NamespacedName) {
	w.mu.Lock()
	defer w.mu.Unlock()
	delete(w.refused, key)
	if _, ok := w.ings[key]; !ok {
		return
	}
	delete(w.ings, key)
	w.publishLocked()
}

func (w *Watcher) publishLocked() {
	if !w.synced.Load() {
		return // Run publishes the complete set once the caches synced
	}
	list := make([]*ingressconfig.Ingress, 0, len(w.ings))
	for _, i := range w.ings {
		list = append(list, i)
	}
	cfg := ingressconfig.Merge(list)
	w.proxy.Set(cfg)
	now := map[string]bool{}
	for _, c := range cfg.Conflicts {
		s := c.String()
		now[s] = true
		if !w.conflicts[s] {
			w.log.Warn("host claimed by two KIngresses: the older one serves it", zap.String("conflict", s))
		}
	}
	w.conflicts = now
	w.log.Debug("KIngress configuration published", zap.Int("ingresses", len(list)),
		zap.Int("external_hosts", len(cfg.Hosts[ingressconfig.External])), zap.Int("local_hosts", len(cfg.Hosts[ingressconfig.Local])))
}

// Run watches until ctx ends.
func (w *Watcher) Run(ctx context.Context) error {
	apply := func(obj interface{}) {
		if ing, ok := obj.(*v1alpha1.Ingress); ok {
			w.Apply(ing)
		}
	}
	if _, err := w.ingInformer.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    apply,
		UpdateFunc: func(_, n interface{}) { apply(n) },
		DeleteFunc: func(obj interface{}) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if ing, ok := obj.(*v1alpha1.Ingress); ok {
				w.Delete(types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name})
			}
		},
	}); err != nil {
		return err
	}
	for _, s := range w.start {
		s(ctx.Done())
	}
	defer w.proxy.Close()
	if !cache.WaitForCacheSync(ctx.Done(), w.caches...) {
		if ctx.Err() != nil {
			return nil
		}
		return errors.New("KIngress, Service, EndpointSlice (and Secret) caches did not sync")
	}
	w.mu.Lock()
	w.synced.Store(true)
	w.publishLocked()
	n := len(w.ings)
	w.mu.Unlock()
	w.log.Info("serving KIngresses", zap.String("class", ingressconfig.Class), zap.Int("ingresses", n))
	<-ctx.Done()
	return nil
}
