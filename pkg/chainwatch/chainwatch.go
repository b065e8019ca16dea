package chainwatch

import (
	"context"
	"fmt"
	"hash/fnv"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/tools/cache"

	"github.com/spright-dev/spright/pkg/adapter"
	// The HTTP-point adapters a Chain may declare register themselves.
	_ "github.com/spright-dev/spright/pkg/adapter/cloudevents"
	"github.com/spright-dev/spright/pkg/apis/spright/v1alpha1"
	"github.com/spright-dev/spright/pkg/gateway"
	"github.com/spright-dev/spright/pkg/ingressconfig"
	"github.com/spright-dev/spright/pkg/shm"
)

// ChainHeader is the header the chain's KIngress appends ("namespace/chain");
// one definition, in ingressconfig, for the controller, this watcher and
// the KIngress data plane.
const ChainHeader = ingressconfig.ChainHeader

// Options configure the chains a Watcher adds.
type Options struct {
	// Pool is the geometry of every chain's pool.
	Pool shm.Config
	// Timeout bounds a request from dispatch to response.
	Timeout time.Duration
	// HoldTimeout and MaxHeld: the gateway holds requests for a member with
	// no instance this long (activator behaviour); 0 means 30s.
	HoldTimeout time.Duration
	MaxHeld     int
	// Mode is the descriptor transport (gateway.ModeSkMsg by default).
	Mode string
}

// Watcher applies Chain objects to a gateway.
type Watcher struct {
	g    *gateway.Gateway
	opts Options
	log  *zap.Logger

	applyMu sync.Mutex // serializes Apply and Delete
	mu      sync.RWMutex
	chains  map[types.NamespacedName]*loaded
	ids     map[uint16]types.NamespacedName // chain IDs in use
	// retired are deleted Chains whose pool the gateway still holds (it
	// releases pools only when it restarts): a Chain created again under
	// the same name is served with them.
	retired map[types.NamespacedName]*loaded

	// Updated counts changes of a loaded chain's functions, routes or
	// entry applied in place; UpdateRefused those the gateway refused
	// (it then keeps serving the previous routes).
	Updated, UpdateRefused atomic.Uint64
}

type loaded struct {
	chain *gateway.Chain
	spec  v1alpha1.ChainSpec
	revs  []types.NamespacedName
	// adapters are the chain's protocol hook points: the Chain's
	// spec.protocol (cloudevents, web) is attached at the http point, and
	// handler serves the chain's HTTP through it.
	adapters *adapter.Chain
	handler  http.Handler
}

// attachProtocol puts the Chain's declared protocol adapter in front of the
// chain's HTTP (plain http: none). MQTT and CoAP have no front end in
// Kubernetes mode: the chain then serves plain HTTP, and the log says so.
func (w *Watcher) attachProtocol(l *loaded, key types.NamespacedName, protocol string) {
	if l.adapters == nil {
		l.adapters = adapter.NewChain(GatewayName(key), w.g.AdapterInvoker(l.chain), adapter.Options{})
		l.handler = adapter.HTTPHandler(l.adapters, w.g.Handler(l.chain))
	}
	p := l.adapters.Point(adapter.TransportHTTP)
	switch protocol {
	case "", "http":
		p.Detach(context.Background())
		return
	}
	a, err := adapter.New(protocol, l.adapters.Options)
	if err != nil {
		w.log.Warn("chain's protocol has no adapter: serving plain HTTP", zap.String("chain", key.String()), zap.String("protocol", protocol), zap.Error(err))
		return
	}
	if a.Transport() != adapter.TransportHTTP {
		a.Close()
		w.log.Warn("chain's protocol needs a front end the gateway has only in standalone mode: serving plain HTTP",
			zap.String("chain", key.String()), zap.String("protocol", protocol))
		return
	}
	a.Close()
	if _, err := l.adapters.AttachNamed(context.Background(), protocol); err != nil {
		w.log.Warn("attaching the chain's protocol adapter", zap.String("chain", key.String()), zap.String("protocol", protocol), zap.Error(err))
	}
}

// New returns a Watcher for g.
func New(g *gateway.Gateway, opts Options, log *zap.Logger) *Watcher {
	if opts.HoldTimeout <= 0 {
		opts.HoldTimeout = 30 * time.Second
	}
	if opts.Pool.Slots == 0 {
		opts.Pool.Slots = 1024
	}
	if opts.Pool.SlotSize == 0 {
		opts.Pool.SlotSize = 64 << 10
	}
	return &Watcher{g: g, opts: opts, log: log, chains: map[types.NamespacedName]*loaded{}, ids: map[uint16]types.NamespacedName{},
		retired: map[types.NamespacedName]*loaded{}}
}

// GatewayName is the gateway's name for a namespace's chain:
// "<namespace>.<chain>" (a namespace name has no dots, so it is unambiguous;
// no slash, because the name also names the chain's pool file).
func GatewayName(key types.NamespacedName) string { return key.Namespace + "." + key.Name }

// Apply loads or updates one Chain. A change of an already loaded chain's
// functions, routes or entry is applied in place (gateway.UpdateChain):
// requests in flight finish on the routes they started with, new ones take
// the new routes, and no request fails because of the change.
func (w *Watcher) Apply(c *v1alpha1.Chain) error {
	key := types.NamespacedName{Namespace: c.Namespace, Name: c.Name}
	if c.Spec.Entry == "" {
		return nil // never valid: nothing to serve (its status says why)
	}
	// applyMu serializes Apply and Delete; mu guards only the maps, so
	// requests looking up chains never wait for an update's drain.
	w.applyMu.Lock()
	defer w.applyMu.Unlock()
	w.mu.RLock()
	l, revived := w.chains[key], false
	if l == nil && w.retired[key] != nil {
		// Deleted and created again (kn service delete, then create): the
		// gateway still has this chain's pool and table; serve them. Before,
		// AddChain refused the name and the chain was never served again
		// until the gateway restarted (seen on the real cluster).
		l, revived = w.retired[key], true
	}
	w.mu.RUnlock()

	switch {
	case l == nil:
		spec := c.Spec.RoutingSpec()
		if err := spec.Validate(); err != nil {
			return fmt.Errorf("chain %s: published spec does not load: %w", key, err)
		}
		w.mu.Lock()
		id := w.chainID(key)
		w.mu.Unlock()
		gc, err := w.g.AddChain(w.config(key, id, c))
		if err != nil {
			return fmt.Errorf("chain %s: %w", key, err)
		}
		l = &loaded{chain: gc, spec: *c.Spec.DeepCopy()}
		w.attachProtocol(l, key, c.Spec.Protocol)
		w.mu.Lock()
		w.ids[id] = key
		w.chains[key] = l
		w.mu.Unlock()
		w.log.Info("chain loaded", zap.String("chain", key.String()), zap.String("entry", c.Spec.Entry), zap.Int("functions", len(c.Spec.Functions)))
	case w.differs(l, c):
		if err := w.g.UpdateChain(w.config(key, l.chain.ID(), c)); err != nil {
			w.UpdateRefused.Add(1)
			return fmt.Errorf("chain %s: the gateway keeps serving its previous routes: %w", key, err)
		}
		l.spec = *c.Spec.DeepCopy()
		w.Updated.Add(1)
		w.log.Info("chain updated in place", zap.String("chain", key.String()), zap.String("entry", c.Spec.Entry), zap.Int("functions", len(c.Spec.Functions)))
	}
	if l.spec.Protocol != c.Spec.Protocol || l.adapters == nil {
		// A protocol change alone (kn service update --annotation
		// spright.dev/protocol=…) swaps the adapter; requests in flight
		// keep the one they started with.
		w.attachProtocol(l, key, c.Spec.Protocol)
		l.spec.Protocol = c.Spec.Protocol
	}
	if revived {
		w.mu.Lock()
		delete(w.retired, key)
		w.chains[key] = l
		w.mu.Unlock()
		w.log.Info("chain created again: serving it with the pool kept from before", zap.String("chain", key.String()))
	}
	// Revisions: map the current ones (after the table knows their
	// functions, so their pods can join at once), unmap those gone.
	var revs []types.NamespacedName
	for _, f := range c.Spec.Functions {
		for _, r := range f.Revisions {
			rev := types.NamespacedName{Namespace: c.Namespace, Name: r}
			revs = append(revs, rev)
			w.g.SetRevisionChain(rev, gateway.ChainMember{Chain: GatewayName(key), Function: f.Name, Routed: slices.Contains(f.Routed, r)})
		}
	}
	for _, old := range l.revs {
		if !contains(revs, old) {
			w.g.UnsetRevisionChain(old)
		}
	}
	l.revs = revs
	return nil
}

// config is the gateway configuration of Chain c.
func (w *Watcher) config(key types.NamespacedName, id uint16, c *v1alpha1.Chain) gateway.ChainConfig {
	return gateway.ChainConfig{
		Name: GatewayName(key), ID: id, Mode: w.opts.Mode,
		Pool: w.opts.Pool, Routing: c.Spec.RoutingSpec(), Timeout: w.opts.Timeout,
		HoldTimeout: w.opts.HoldTimeout, MaxHeld: w.opts.MaxHeld,
	}
}

// differs reports whether c's functions, routes or entry differ from what
// the gateway loaded for it (revisions may differ: they apply at once).
func (w *Watcher) differs(l *loaded, c *v1alpha1.Chain) bool {
	return !reflect.DeepEqual(l.spec.Routes, c.Spec.Routes) || !sameFunctions(l.spec.Functions, c.Spec.Functions) || l.spec.Entry != c.Spec.Entry
}

// chainID derives the chain's ID from its name (FNV-1a into 1..65534,
// probing past IDs in use), so a restarted gateway usually gives a chain the
// ID it had — and then finds the pool it kept (pool files are matched by name
// and ID).
func (w *Watcher) chainID(key types.NamespacedName) uint16 {
	h := fnv.New32a()
	h.Write([]byte(GatewayName(key)))
	id := uint16(h.Sum32()%0xFFFE) + 1
	for {
		if _, used := w.ids[id]; !used {
			return id
		}
		id = id%0xFFFE + 1
	}
}

// Delete stops routing a deleted Chain and unmaps its revisions.
func (w *Watcher) Delete(key types.NamespacedName) {
	w.applyMu.Lock()
	defer w.applyMu.Unlock()
	w.mu.Lock()
	defer w.mu.Unlock()
	l := w.chains[key]
	if l == nil {
		return
	}
	for _, r := range l.revs {
		w.g.UnsetRevisionChain(r)
	}
	delete(w.chains, key)
	// The ID stays reserved (w.ids): the gateway still holds the chain.
	l.revs = nil
	w.retired[key] = l
	w.log.Info("chain deleted", zap.String("chain", key.String()))
}

// Chain returns the loaded chain for key.
func (w *Watcher) Chain(key types.NamespacedName) *gateway.Chain {
	if l := w.loadedFor(key); l != nil {
		return l.chain
	}
	return nil
}

func (w *Watcher) loadedFor(key types.NamespacedName) *loaded {
	w.mu.RLock()
	defer w.mu.RUnlock()
	return w.chains[key]
}

// Lookup returns the chain an HTTP request is for, or nil.
func (w *Watcher) Lookup(r *http.Request) *gateway.Chain {
	if l := w.lookup(r); l != nil {
		return l.chain
	}
	return nil
}

func (w *Watcher) lookup(r *http.Request) *loaded {
	if h := r.Header.Get(ChainHeader); h != "" {
		if ns, name, ok := strings.Cut(h, "/"); ok {
			return w.loadedFor(types.NamespacedName{Namespace: ns, Name: name})
		}
		return nil
	}
	host, _, err := net.SplitHostPort(r.Host)
	if err != nil {
		host = r.Host
	}
	labels := strings.Split(host, ".")
	if len(labels) < 2 {
		return nil
	}
	if name, ok := strings.CutSuffix(labels[0], "-chain"); ok {
		if l := w.loadedFor(types.NamespacedName{Namespace: labels[1], Name: name}); l != nil {
			return l
		}
	}
	return w.loadedFor(types.NamespacedName{Namespace: labels[1], Name: labels[0]})
}

// Handler serves chain traffic, picking the chain per request.
func (w *Watcher) Handler() http.Handler {
	return http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		h := w.ChainHandler(r)
		if h == nil {
			http.Error(rw, fmt.Sprintf("no chain for host %q on this gateway", r.Host), http.StatusNotFound)
			return
		}
		h.ServeHTTP(rw, r)
	})
}

// ChainHandler is the handler of the chain an HTTP request is for (through
// the chain's protocol adapter), or nil.
func (w *Watcher) ChainHandler(r *http.Request) http.Handler {
	if l := w.lookup(r); l != nil {
		return l.handler // set before the chain is routed (attachProtocol)
	}
	return nil
}

// Run watches Chains in every namespace until ctx ends.
func (w *Watcher) Run(ctx context.Context, client dynamic.Interface) error {
	inf := dynamicinformer.NewDynamicSharedInformerFactory(client, 10*time.Hour).ForResource(v1alpha1.ChainResource).Informer()
	apply := func(obj interface{}) {
		u, ok := obj.(*unstructured.Unstructured)
		if !ok {
			return
		}
		c, err := v1alpha1.FromUnstructured(u)
		if err == nil {
			err = w.Apply(c)
		}
		if err != nil {
			w.log.Error("applying chain", zap.Error(err))
		}
	}
	if _, err := inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    apply,
		UpdateFunc: func(_, n interface{}) { apply(n) },
		DeleteFunc: func(obj interface{}) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = t.Obj
			}
			if u, ok := obj.(*unstructured.Unstructured); ok {
				w.Delete(types.NamespacedName{Namespace: u.GetNamespace(), Name: u.GetName()})
			}
		},
	}); err != nil {
		return err
	}
	inf.Run(ctx.Done())
	return nil
}

func sameFunctions(a, b []v1alpha1.ChainFunction) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Name != b[i].Name {
			return false
		}
	}
	return true
}

func contains(list []types.NamespacedName, x types.NamespacedName) bool {
	for _, y := range list {
		if y == x {
			return true
		}
	}
	return false
}
