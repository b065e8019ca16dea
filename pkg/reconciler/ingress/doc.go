// Package ingress is the SPRIGHT controller's KIngress reconciler: it makes
// the node gateways Knative's networking layer for the ingress class
// spright.ingress.networking.knative.dev (config-network's ingress-class).
//
// It is knative.dev/networking's generated, class-filtered reconciler for
// networking.internal.knative.dev/v1alpha1 Ingress. The gateways watch the
// KIngresses themselves (pkg/ingresswatch) and translate them with
// pkg/ingressconfig; there is no configuration to push. So for each
// KIngress of the class the reconciler
//
//   - translates it with the same pure functions the gateways use: a
//     KIngress they would refuse (invalid) gets NetworkConfigured=False
//     with the reason, never a false Ready;
//   - asks knative.dev/networking's status prober whether every ready
//     gateway pod (app=spright-gateway in the system namespace) serves the
//     KIngress's current version: each host is probed on the listener of
//     its visibility (the pod's container port "http" for ExternalIP rules,
//     "http-local" for ClusterLocal ones) with K-Network-Probe: probe, and
//     the pod must answer 200 with K-Network-Hash equal to the hash of the
//     KIngress's spec (ingressconfig.Hash = knative.dev/networking's
//     ComputeHash) — for a host with TLS only once the gateway can present
//     its certificate, so Ready includes https;
//   - marks it Ready only then, with the load balancers Knative routes to:
//     public spright-gateway.<system-namespace>.svc.<cluster-domain>,
//     private spright-gateway-local.<system-namespace>.svc.<cluster-domain>
//     (both as DomainInternal: the same gateway pods, one port each).
//
// Until the probes succeed the KIngress stays LoadBalancerReady=Unknown;
// the prober re-enqueues it when they do, and a gateway pod becoming ready
// re-enqueues every KIngress of the class that is not Ready yet.
package ingress
