package ingressconfig

import (
	"context"
	"fmt"
	"net/textproto"
	"sort"
	"strings"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netingress "knative.dev/networking/pkg/ingress"
)

// Class is the SPRIGHT ingress class: config-network's ingress-class, which
// Knative Serving writes as the networking.knative.dev/ingress.class
// annotation of every KIngress it makes.
const Class = "spright.ingress.networking.knative.dev"

// ChainHeader is the header the SPRIGHT controller's chain KIngress sets
// ("namespace/chain", pkg/reconciler/chain). A split that sets it enters
// that chain's shared memory in the gateway instead of being proxied.
const ChainHeader = "Spright-Chain"

// IsSpright reports whether a KIngress with these annotations is of the
// SPRIGHT class.
func IsSpright(annotations map[string]string) bool {
	return annotations[networking.IngressClassAnnotationKey] == Class
}

// Hash is the version of a KIngress a gateway serves: knative.dev/
// networking's ComputeHash (spec, namespace, name), in hex, of the KIngress
// with knative.dev/networking's defaults applied — the value Knative's
// status prober expects in K-Network-Hash. The prober in the controller is
// handed the defaulted object (the generated reconciler defaults before
// ReconcileKind) while a gateway's watch sees it as stored; in a cluster
// Knative's webhook stores it defaulted, elsewhere (a bare API server) it
// may not be. Defaulting here makes both sides agree either way.
func Hash(ing *v1alpha1.Ingress) (string, error) {
	d := ing.DeepCopy()
	d.SetDefaults(context.Background())
	b, err := netingress.ComputeHash(d)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("%x", b), nil
}

// Listener is one of the gateway's HTTP listeners.
type Listener int

const (
	// External serves the ExternalIP rules (the spright-gateway Service).
	External Listener = iota
	// Local serves every rule, ClusterLocal and ExternalIP (the
	// spright-gateway-local Service).
	Local
	numListeners
)

// Listeners are both listeners, in order.
var Listeners = []Listener{External, Local}

func (l Listener) String() string {
	if l == External {
		return "external"
	}
	return "cluster-local"
}

// Hosts maps a lower-case host name to its virtual host; "" is the
// catch-all of a rule without hosts.
type Hosts map[string]*VirtualHost

// VirtualHost is what one host serves on one listener.
type VirtualHost struct {
	// Ingress is the KIngress the host comes from, Hash its version.
	Ingress types.NamespacedName
	Hash    string
	// RedirectHTTPS answers every plain-HTTP request with 301 to https
	// (HTTPOption Redirected, external listener only).
	RedirectHTTPS bool
	// TLS is the Secret whose certificate the external listener's TLS
	// port presents for this host (spec.tls; nil: no https).
	TLS *SecretRef
	// Routes in the KIngress's order; the first that matches wins.
	Routes []*Route
}

// Route is one KIngress path.
type Route struct {
	// Prefix is a literal path prefix; "" matches every path.
	Prefix string
	// Headers must all be present with exactly these values (canonical
	// header names).
	Headers map[string]string
	// Set are headers set on the upstream request, before the split's.
	Set map[string]string
	// RewriteHost replaces the request's Host when not empty.
	RewriteHost string
	// Splits share the traffic by Weight (out of Total).
	Splits []*Split
	Total  int
}

// Split is one backend of a route.
type Split struct {
	Backend Backend
	Weight  int
	// Set are headers set on the upstream request after the route's.
	Set map[string]string
	// Chain is "namespace/chain" when the route's or split's headers set
	// ChainHeader: the request enters that chain in the gateway.
	Chain string
}

// SecretRef names a kubernetes.io/tls Secret (tls.crt, tls.key).
type SecretRef struct {
	Namespace, Name string
}

func (s SecretRef) String() string { return s.Namespace + "/" + s.Name }

// Backend is a Kubernetes Service port.
type Backend struct {
	Namespace, Name string
	Port            intstr.IntOrString
}

func (b Backend) String() string {
	return b.Namespace + "/" + b.Name + ":" + b.Port.String()
}

// Ingress is one translated KIngress.
type Ingress struct {
	Key     types.NamespacedName
	Created time.Time
	Hash    string
	// Hosts per listener (index: Listener).
	Hosts [numListeners]Hosts
}

// Translate validates a KIngress with knative.dev/networking's own
// validation, applies its defaults to a copy (visibility ExternalIP, a lone
// split gets 100%), and translates it.
func Translate(ing *v1alpha1.Ingress) (*Ingress, error) {
	hash, err := Hash(ing)
	if err != nil {
		return nil, err
	}
	if fe := ing.Validate(context.Background()); fe != nil {
		return nil, fmt.Errorf("invalid KIngress: %w", fe)
	}
	spec := ing.Spec.DeepCopy()
	spec.SetDefaults(context.Background())
	key := types.NamespacedName{Namespace: ing.Namespace, Name: ing.Name}
	out := &Ingress{Key: key, Created: ing.CreationTimestamp.Time, Hash: hash}
	for l := range out.Hosts {
		out.Hosts[l] = Hosts{}
	}
	for i, rule := range spec.Rules {
		var listeners []Listener
		switch rule.Visibility {
		case v1alpha1.IngressVisibilityExternalIP:
			listeners = []Listener{External, Local}
		case v1alpha1.IngressVisibilityClusterLocal:
			listeners = []Listener{Local}
		default:
			return nil, fmt.Errorf("rule %d: unknown visibility %q", i, rule.Visibility)
		}
		routes, err := translateRoutes(rule.HTTP.Paths)
		if err != nil {
			return nil, fmt.Errorf("rule %d: %w", i, err)
		}
		hosts := []string{""}
		if len(rule.Hosts) > 0 {
			given := sets.New[string]()
			for _, h := range rule.Hosts {
				given.Insert(NormalizeHost(h))
			}
			hosts = sets.List(netingress.ExpandedHosts(given))
		}
		for _, l := range listeners {
			for _, h := range hosts {
				if _, taken := out.Hosts[l][h]; taken {
					continue // the first rule for a host wins
				}
				v := &VirtualHost{
					Ingress:       key,
					Hash:          hash,
					RedirectHTTPS: l == External && spec.HTTPOption == v1alpha1.HTTPOptionRedirected,
					Routes:        routes,
				}
				if l == External {
					v.TLS = tlsFor(spec.TLS, h)
				}
				out.Hosts[l][h] = v
			}
		}
	}
	return out, nil
}

// tlsFor is the Secret of the first spec.tls entry naming host, exactly or
// by a wildcard ("*.example.com" covers "a.example.com", not
// "a.b.example.com").
func tlsFor(entries []v1alpha1.IngressTLS, host string) *SecretRef {
	if host == "" {
		return nil
	}
	wildcard := ""
	if i := strings.IndexByte(host, '.'); i > 0 {
		wildcard = "*" + host[i:]
	}
	for _, e := range entries {
		for _, h := range e.Hosts {
			if h = NormalizeHost(h); h == host || (wildcard != "" && h == wildcard) {
				return &SecretRef{Namespace: e.SecretNamespace, Name: e.SecretName}
			}
		}
	}
	return nil
}

func translateRoutes(paths []v1alpha1.HTTPIngressPath) ([]*Route, error) {
	var out []*Route
	for i, p := range paths {
		if p.Path != "" && !strings.HasPrefix(p.Path, "/") {
			return nil, fmt.Errorf("path %d: %q does not begin with /", i, p.Path)
		}
		r := &Route{Prefix: p.Path, RewriteHost: NormalizeHost(p.RewriteHost), Set: canonical(p.AppendHeaders)}
		if len(p.Headers) > 0 {
			r.Headers = make(map[string]string, len(p.Headers))
			for k, m := range p.Headers {
				r.Headers[textproto.CanonicalMIMEHeaderKey(k)] = m.Exact
			}
		}
		for _, s := range p.Splits {
			sp := &Split{
				Backend: Backend{Namespace: s.ServiceNamespace, Name: s.ServiceName, Port: s.ServicePort},
				Weight:  s.Percent,
				Set:     canonical(s.AppendHeaders),
			}
			sp.Chain = sp.Set[ChainHeader]
			if sp.Chain == "" {
				sp.Chain = r.Set[ChainHeader]
			}
			r.Splits = append(r.Splits, sp)
			r.Total += s.Percent
		}
		if r.Total == 0 {
			// Validation lets only a lone split have 0; defaults made it
			// 100. Still, never divide by nothing: share equally.
			for _, s := range r.Splits {
				s.Weight = 1
			}
			r.Total = len(r.Splits)
		}
		out = append(out, r)
	}
	return out, nil
}

func canonical(m map[string]string) map[string]string {
	if len(m) == 0 {
		return nil
	}
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[textproto.CanonicalMIMEHeaderKey(k)] = v
	}
	return out
}

// NormalizeHost lower-cases a host and drops a trailing dot (a fully
// qualified name); ports are the caller's to strip.
func NormalizeHost(h string) string {
	return strings.TrimSuffix(strings.ToLower(h), ".")
}

// Match returns the first route whose prefix and headers match, or nil.
func (v *VirtualHost) Match(path string, get func(name string) string) *Route {
	for _, r := range v.Routes {
		if r.Matches(path, get) {
			return r
		}
	}
	return nil
}

// Matches reports whether a request path and headers (get returns a
// header's first value by canonical name) match the route.
func (r *Route) Matches(path string, get func(name string) string) bool {
	if !strings.HasPrefix(path, r.Prefix) {
		return false
	}
	for k, want := range r.Headers {
		if get(k) != want {
			return false
		}
	}
	return true
}

// Pick returns the split for x in [0, Total): each split owns Weight
// consecutive values, in order.
func (r *Route) Pick(x int) *Split {
	for _, s := range r.Splits {
		if x < s.Weight {
			return s
		}
		x -= s.Weight
	}
	return r.Splits[len(r.Splits)-1]
}

// Config is what a gateway serves: every KIngress of the class, merged.
type Config struct {
	Hosts [numListeners]Hosts
	// Conflicts are hosts claimed by more than one KIngress.
	Conflicts []Conflict
	// Ingresses maps each merged KIngress to its hash.
	Ingresses map[types.NamespacedName]string
}

// Conflict is a host another, older KIngress already serves.
type Conflict struct {
	Listener Listener
	Host     string
	Served   types.NamespacedName
	Shadowed types.NamespacedName
}

func (c Conflict) String() string {
	return fmt.Sprintf("%s host %q: served by %s, not by %s", c.Listener, c.Host, c.Served, c.Shadowed)
}

// Merge combines translated KIngresses. A host claimed twice on a listener
// goes to the oldest KIngress (creation time, then namespace/name), so the
// outcome does not depend on the order the gateway saw them in.
func Merge(ings []*Ingress) *Config {
	sorted := append([]*Ingress(nil), ings...)
	sort.Slice(sorted, func(i, j int) bool {
		a, b := sorted[i], sorted[j]
		if !a.Created.Equal(b.Created) {
			return a.Created.Before(b.Created)
		}
		return a.Key.String() < b.Key.String()
	})
	c := &Config{Ingresses: make(map[types.NamespacedName]string, len(sorted))}
	for l := range c.Hosts {
		c.Hosts[l] = Hosts{}
	}
	for _, ing := range sorted {
		c.Ingresses[ing.Key] = ing.Hash
		for l := range ing.Hosts {
			hosts := make([]string, 0, len(ing.Hosts[l]))
			for h := range ing.Hosts[l] {
				hosts = append(hosts, h)
			}
			sort.Strings(hosts)
			for _, h := range hosts {
				if prev, taken := c.Hosts[l][h]; taken {
					c.Conflicts = append(c.Conflicts, Conflict{Listener: Listener(l), Host: h, Served: prev.Ingress, Shadowed: ing.Key})
					continue
				}
				c.Hosts[l][h] = ing.Hosts[l][h]
			}
		}
	}
	return c
}

// Lookup returns the virtual host for a request's host (lower-case, no
// port) on a listener: the exact host, else the listener's catch-all.
func (c *Config) Lookup(l Listener, host string) *VirtualHost {
	if v := c.Hosts[l][host]; v != nil {
		return v
	}
	return c.Hosts[l][""]
}

// TLS is the Secret the external listener presents for a TLS client's
// server name (SNI, lower-cased), or nil.
func (c *Config) TLS(serverName string) *SecretRef {
	if v := c.Hosts[External][NormalizeHost(serverName)]; v != nil {
		return v.TLS
	}
	return nil
}

// Exact is Lookup without the catch-all.
func (c *Config) Exact(l Listener, host string) *VirtualHost {
	return c.Hosts[l][host]
}
