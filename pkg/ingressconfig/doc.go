// Package ingressconfig turns Knative KIngresses
// (networking.internal.knative.dev/v1alpha1 Ingress) of the SPRIGHT class
// into the node gateways' routing configuration, and computes the hash
// that says which version of a KIngress a gateway serves.
//
// It is the pure core shared by both sides of the SPRIGHT ingress: the
// controller (pkg/reconciler/ingress) translates to validate and probes the
// gateways for Hash; each gateway (pkg/ingresswatch → pkg/gateway/ingress)
// translates the KIngresses it watches and answers Knative's probes with the
// same Hash. No Kubernetes client here, so every case is a table test.
//
// What a KIngress becomes:
//
//   - Each rule's hosts (with the cluster-local short forms of
//     knative.dev/networking's ExpandedHosts, lower-cased) become virtual
//     hosts. The external listener serves the ExternalIP rules; the
//     cluster-local listener serves every rule (as Kourier's internal
//     gateway does), so in-cluster clients reach public services too.
//     A rule without hosts is a catch-all for its listener.
//   - Each path becomes a Route, in the KIngress's order (first match
//     wins): a literal path prefix ("" matches every path), headers that
//     must all match exactly, headers to set on the upstream request,
//     an optional Host rewrite, and weighted splits (percent) with their
//     own headers to set.
//   - spec.tls gives an external virtual host the Secret (namespace/name)
//     whose certificate the gateway's TLS listener presents for it (SNI);
//     an entry's host may be a wildcard ("*.example.com"). TLS is for
//     ExternalIP hosts: cluster-local hosts are served in plain HTTP.
//   - HTTPOption Redirected makes the external virtual hosts answer
//     plain-HTTP requests with 301 to https.
//
// A host claimed by several KIngresses is served by the oldest one
// (creation time, then namespace/name); the others are reported as
// conflicts. Validation is knative.dev/networking's own (Ingress.Validate).
//
// KIngress has no timeout or retry fields (HTTPRetry is deprecated and
// unused), so there is nothing to translate for them: the gateway proxies
// with no request timeout and no retries, which is what Knative's
// conformance tests (TestTimeout, TestRetry) expect of an ingress.
package ingressconfig
