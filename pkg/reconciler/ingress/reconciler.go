package ingress

import (
	"context"
	"fmt"

	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	ingressreconciler "knative.dev/networking/pkg/client/injection/reconciler/networking/v1alpha1/ingress"
	"knative.dev/networking/pkg/status"
	pkgreconciler "knative.dev/pkg/reconciler"

	"github.com/spright-dev/spright/pkg/ingressconfig"
)

// IngressClass is the SPRIGHT ingress class: set it as config-network's
// ingress-class (or a KIngress's networking.knative.dev/ingress.class).
const IngressClass = ingressconfig.Class

// The gateways, as config/500-gateway.yaml deploys them.
const (
	// GatewayLabelKey=GatewayLabelValue selects the gateway pods in the
	// system namespace.
	GatewayLabelKey   = "app"
	GatewayLabelValue = "spright-gateway"
	// ExternalServiceName and LocalServiceName are the gateways' Services:
	// the external listener and the cluster-local one.
	ExternalServiceName = "spright-gateway"
	LocalServiceName    = "spright-gateway-local"
	// ExternalPortName and LocalPortName are the gateway container's ports
	// of the two listeners.
	ExternalPortName = "http"
	LocalPortName    = "http-local"
)

// ReasonInvalid is the reason of NetworkConfigured=False: the KIngress
// fails knative.dev/networking's validation or the translation.
const ReasonInvalid = "InvalidKIngress"

// Reconciler marks KIngresses of the SPRIGHT class Ready once every gateway
// serves them.
type Reconciler struct {
	// Status tells whether every gateway serves the KIngress's current
	// version (knative.dev/networking's status prober).
	Status status.Manager
	// PublicLB and PrivateLB are the gateways' Services' host names.
	PublicLB, PrivateLB string
}

var _ ingressreconciler.Interface = (*Reconciler)(nil)

// ReconcileKind implements the generated reconciler's Interface.
func (r *Reconciler) ReconcileKind(ctx context.Context, ing *v1alpha1.Ingress) pkgreconciler.Event {
	ing.Status.InitializeConditions()
	if _, err := ingressconfig.Translate(ing); err != nil {
		// The gateways refuse it too; a spec change brings it back here.
		ing.GetConditionSet().Manage(&ing.Status).MarkFalse(v1alpha1.IngressConditionNetworkConfigured, ReasonInvalid, "%s", err.Error())
		return nil
	}
	ing.Status.MarkNetworkConfigured()
	ready, err := r.Status.IsReady(ctx, ing)
	if err != nil {
		ing.Status.MarkLoadBalancerNotReady()
		return fmt.Errorf("probing the gateways: %w", err)
	}
	if !ready {
		ing.Status.MarkLoadBalancerNotReady()
		return nil
	}
	ing.Status.MarkLoadBalancerReady(
		[]v1alpha1.LoadBalancerIngressStatus{{DomainInternal: r.PublicLB}},
		[]v1alpha1.LoadBalancerIngressStatus{{DomainInternal: r.PrivateLB}},
	)
	return nil
}
