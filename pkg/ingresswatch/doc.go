// Package ingresswatch keeps a node gateway's KIngress data plane
// (pkg/gateway/ingress) in step with the cluster: it is the gateway's
// Kubernetes mode for the SPRIGHT ingress class, beside pkg/chainwatch.
//
// It watches every KIngress (networking.internal.knative.dev/v1alpha1
// Ingress) and keeps those of the class spright.ingress.networking.knative.dev,
// translates each with pkg/ingressconfig and publishes the merged
// configuration to the data plane in one atomic swap per change, and
// watches Services and EndpointSlices so the data plane resolves a split's
// Service to a ready endpoint (or its ClusterIP) and port (and knows an h2c
// port). With Options.TLS it also watches the Secrets labeled
// networking.internal.knative.dev/certificate-uid, the certificates of the
// KIngresses' spec.tls for the TLS listener.
//
// Nothing is published before both caches have synced: until then the
// data plane answers 503 (chains are served meanwhile), so a restarted
// gateway never 404s a host it is about to serve. A KIngress update the
// gateway refuses (invalid) leaves the last version it accepted in
// service and is logged; the controller reports the refusal on the
// KIngress's status. A KIngress whose class changes away is dropped.
package ingresswatch
