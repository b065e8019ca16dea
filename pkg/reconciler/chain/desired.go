package chain

import (
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	netapi "knative.dev/networking/pkg/apis/networking"
	netv1alpha1 "knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/pkg/kmeta"
	"knative.dev/serving/pkg/apis/autoscaling"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"

	"github.com/spright-dev/spright/pkg/apis/spright/v1alpha1"
	"github.com/spright-dev/spright/pkg/chainspec"
	"github.com/spright-dev/spright/pkg/ingressconfig"
)

// Labels and headers the controller sets.
const (
	// ChainLabel marks objects the controller made for a chain.
	ChainLabel = "spright.dev/chain"
	// ChainHeader is appended by the KIngress so the gateway knows the
	// chain whatever host the client used ("namespace/chain"); with the
	// SPRIGHT ingress, such a split enters the chain in the gateway.
	ChainHeader = ingressconfig.ChainHeader
)

// Reasons in conditions and events.
const (
	ReasonInvalidAnnotations = "InvalidAnnotations"
	ReasonNoEntry            = "NoEntry"
	ReasonManyEntries        = "ManyEntries"
	ReasonUnknownMember      = "UnknownMember"
	ReasonCycle              = "RoutesLoop"
	ReasonProtocolClash      = "ProtocolClash"
	ReasonInvalidChain       = "InvalidChain"
	ReasonNotValid           = "NotValid"
	ReasonMinScaleDefaulted  = "MinScaleDefaulted"
	ReasonRouteFailed        = "RouteFailed"
)

// Member is one Service's view of the chain it joins.
type Member struct {
	Service *servingv1.Service
	Parsed  chainspec.Member
	Err     error // invalid annotations
}

// ChainOf returns the chain a Service's revision template joins ("" none).
func ChainOf(s *servingv1.Service) string {
	return strings.TrimSpace(s.Spec.Template.Annotations[chainspec.AnnotationChain])
}

// MembersOf parses the Services of a namespace and returns those joining
// chain, sorted by name.
func MembersOf(chain string, services []*servingv1.Service) []Member {
	var out []Member
	for _, s := range services {
		if ChainOf(s) != chain {
			continue
		}
		m, _, err := chainspec.Parse(s.Name, s.Spec.Template.Annotations)
		out = append(out, Member{Service: s, Parsed: m, Err: err})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Service.Name < out[j].Service.Name })
	return out
}

// Orphans are Services with spright.dev/* annotations but no chain: the
// error says what is wrong.
func Orphans(services []*servingv1.Service) map[*servingv1.Service]error {
	out := map[*servingv1.Service]error{}
	for _, s := range services {
		if ChainOf(s) != "" {
			continue
		}
		if _, _, err := chainspec.Parse(s.Name, s.Spec.Template.Annotations); err != nil {
			out[s] = err
		}
	}
	return out
}

// Verdict is the outcome of validating a chain's members.
type Verdict struct {
	Spec   v1alpha1.ChainSpec // valid only when Reason == ""
	Reason string
	Msg    string
}

// MakeChainSpec validates and assembles the members; revisions maps a
// Service name to its revisions' names.
func MakeChainSpec(chain string, members []Member, revisions map[string][]string) Verdict {
	var bad []string
	var parsed []chainspec.Member
	for _, m := range members {
		if m.Err != nil {
			bad = append(bad, fmt.Sprintf("service %s: %v", m.Service.Name, m.Err))
			continue
		}
		parsed = append(parsed, m.Parsed)
	}
	if len(bad) > 0 {
		return Verdict{Reason: ReasonInvalidAnnotations, Msg: strings.Join(bad, "; ")}
	}
	c, err := chainspec.Assemble(chain, parsed)
	if err != nil {
		return Verdict{Reason: reasonFor(err), Msg: err.Error()}
	}
	spec := v1alpha1.ChainSpec{Entry: c.Entry, Protocol: c.Protocol}
	routed := map[string][]string{}
	for _, m := range members {
		routed[m.Service.Name] = RoutedRevisions(m.Service)
	}
	for _, f := range c.Spec.Functions {
		revs := append([]string(nil), revisions[f.Name]...)
		sort.Strings(revs)
		spec.Functions = append(spec.Functions, v1alpha1.ChainFunction{Name: f.Name, Revisions: revs, Routed: routed[f.Name]})
	}
	for _, r := range c.Spec.Routes {
		spec.Routes = append(spec.Routes, v1alpha1.ChainRoute{From: r.From, Topic: r.Topic, To: append([]string(nil), r.To...)})
	}
	return Verdict{Spec: spec}
}

func reasonFor(err error) string {
	switch {
	case errors.Is(err, chainspec.ErrNoEntry):
		return ReasonNoEntry
	case errors.Is(err, chainspec.ErrManyEntries):
		return ReasonManyEntries
	case errors.Is(err, chainspec.ErrUnknownMember):
		return ReasonUnknownMember
	case errors.Is(err, chainspec.ErrCycle):
		return ReasonCycle
	case errors.Is(err, chainspec.ErrProtocolClash):
		return ReasonProtocolClash
	}
	return ReasonInvalidChain
}

// NeedsMinScale reports whether the controller should default a member's
// min-scale: the user set none (under any of Knative's spellings).
func NeedsMinScale(s *servingv1.Service, cfg *Config) bool {
	if cfg.DefaultMinScale == "" {
		return false
	}
	_, _, ok := autoscaling.MinScaleAnnotation.Get(s.Spec.Template.Annotations)
	return !ok
}

// MinScalePatch is the merge patch that defaults a member's min-scale.
func MinScalePatch(cfg *Config) []byte {
	return []byte(fmt.Sprintf(`{"spec":{"template":{"metadata":{"annotations":{%q:%q}}}}}`,
		autoscaling.MinScaleAnnotationKey, cfg.DefaultMinScale))
}

// ServiceName is the chain's in-cluster Service (and host prefix).
func ServiceName(chain string) string { return chain + "-chain" }

// Address is the chain's in-cluster host name.
func Address(ns, chain string) string {
	return ServiceName(chain) + "." + ns + ".svc.cluster.local"
}

// ExternalHost is the chain's external host name ("" without a domain).
func ExternalHost(ns, chain string, cfg *Config) string {
	if cfg.Domain == "" {
		return ""
	}
	return chain + "." + ns + "." + cfg.Domain
}

func chainLabels(chain string) map[string]string {
	return map[string]string{ChainLabel: chain}
}

// MakeService is the ExternalName Service that makes the chain's host
// resolve to the node gateways (so neither the activator nor a
// queue-proxy is on the chain's path).
func MakeService(c *v1alpha1.Chain, cfg *Config) *corev1.Service {
	return &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{
			Name:            ServiceName(c.Name),
			Namespace:       c.Namespace,
			Labels:          chainLabels(c.Name),
			OwnerReferences: []metav1.OwnerReference{*kmeta.NewControllerRef(chainOwner{c})},
		},
		Spec: corev1.ServiceSpec{
			Type:         corev1.ServiceTypeExternalName,
			ExternalName: cfg.GatewayService,
			Ports: []corev1.ServicePort{{
				Name:       "http",
				Port:       int32(cfg.GatewayPort),
				TargetPort: intstr.FromInt32(int32(cfg.GatewayPort)),
			}},
		},
	}
}

// MakeIngress is the KIngress for the chain's external host; nil when no
// domain is configured.
func MakeIngress(c *v1alpha1.Chain, cfg *Config) *netv1alpha1.Ingress {
	host := ExternalHost(c.Namespace, c.Name, cfg)
	if host == "" {
		return nil
	}
	return &netv1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{
			Name:            ServiceName(c.Name),
			Namespace:       c.Namespace,
			Labels:          chainLabels(c.Name),
			Annotations:     map[string]string{netapi.IngressClassAnnotationKey: cfg.IngressClass},
			OwnerReferences: []metav1.OwnerReference{*kmeta.NewControllerRef(chainOwner{c})},
		},
		Spec: netv1alpha1.IngressSpec{
			HTTPOption: netv1alpha1.HTTPOptionEnabled,
			Rules: []netv1alpha1.IngressRule{{
				Hosts:      []string{host},
				Visibility: netv1alpha1.IngressVisibilityExternalIP,
				HTTP: &netv1alpha1.HTTPIngressRuleValue{Paths: []netv1alpha1.HTTPIngressPath{{
					AppendHeaders: map[string]string{ChainHeader: c.Namespace + "/" + c.Name},
					Splits: []netv1alpha1.IngressBackendSplit{{
						Percent: 100,
						IngressBackend: netv1alpha1.IngressBackend{
							ServiceNamespace: c.Namespace,
							ServiceName:      ServiceName(c.Name),
							ServicePort:      intstr.FromInt32(int32(cfg.GatewayPort)),
						},
					}},
				}}},
			}},
		},
	}
}

// chainOwner lets kmeta build an owner reference to a Chain.
type chainOwner struct{ *v1alpha1.Chain }

func (o chainOwner) GetGroupVersionKind() schema.GroupVersionKind {
	return v1alpha1.SchemeGroupVersion.WithKind(v1alpha1.Kind)
}

// RoutedRevisions are the revisions svc's route sends traffic to (its
// status.traffic targets with a percent above 0), sorted; nil before the
// route has reported any.
func RoutedRevisions(svc *servingv1.Service) []string {
	var out []string
	for _, t := range svc.Status.Traffic {
		if t.RevisionName != "" && t.Percent != nil && *t.Percent > 0 && !slices.Contains(out, t.RevisionName) {
			out = append(out, t.RevisionName)
		}
	}
	sort.Strings(out)
	return out
}
