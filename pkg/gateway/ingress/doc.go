// Package ingress is the SPRIGHT gateway's KIngress data plane: it serves
// the routing configuration of pkg/ingressconfig on the gateway's HTTP
// listeners, so that the node gateway is Knative's networking layer.
//
// Per request, on the listener it arrived on (external: ExternalIP rules;
// cluster-local: every rule):
//
//  1. The Host (port stripped, lower-cased) picks a virtual host. If no
//     KIngress serves it, the chain path of today decides (the Spright-Chain
//     header or a chain host, pkg/chainwatch): the request goes straight
//     into the chain's shared memory. Then a catch-all rule, then 404 with
//     a plain-text body naming the host and the listener.
//  2. Knative's probes (K-Network-Probe: probe) are answered here with 200
//     and K-Network-Hash set to the hash of the KIngress the gateway has
//     loaded for the host, when the request's hash is "override" (what
//     Knative's status prober sends), empty, or that very hash. A probe
//     naming another hash is routed like any request: Knative's data-plane
//     contract has the backend (queue-proxy, activator) echo it, and
//     Knative's conformance test TestProbeHeaders checks exactly that.
//     For a host with TLS the probe answers 503, naming the reason, until
//     its certificate can be presented: Ready includes https.
//  3. HTTPOption Redirected: a plain-HTTP request gets 301 to https (over
//     TLS it is served). Otherwise the first route whose
//     path prefix and exact headers match, then a split by weighted random
//     choice.
//  4. The route's and then the split's headers are set on the request. A
//     split that sets Spright-Chain (the chain controller's KIngress) is
//     served by that chain in-process — the chain's Service would only lead
//     back to the gateways. A route with RewriteHost to a host the
//     cluster-local listener serves is routed again there in-process (that
//     is how Knative's DomainMapping and conformance TestRewriteHost use it:
//     the split names an ExternalName Service pointing back at the local
//     gateway). Everything else is proxied with net/http/httputil's
//     ReverseProxy to the split's Service.
//
// Upstreams are resolved through a Service lister (ServiceResolver): one of
// the Service's ready endpoints from its EndpointSlices, at random (as
// Envoy-based ingresses do: kube-proxy programs a new ClusterIP only some
// time after its endpoints exist), else the ClusterIP and port (no DNS
// lookup per new connection, and a recreated Service is followed at once),
// an ExternalName's name, or for a headless Service its DNS name and target
// port. A Service port named http2
// or h2c, or with appProtocol kubernetes.io/h2c (what Knative sets for h2c
// revisions), is reached with HTTP/2 prior knowledge; everything else with
// HTTP/1.1 keep-alive, and upgrades (websockets) always so. The original
// Host is kept; X-Forwarded-For is appended to, X-Forwarded-Host and
// -Proto are set. There is no request timeout and no retry: KIngress has
// neither, and Knative's conformance expects none from the ingress.
//
// NewServer builds the listeners' http.Server with bounded header size
// (431 beyond it), header read timeout (slowloris), idle timeout, HTTP/2
// over cleartext (h2c, so gRPC clients can use the gateway) with a bounded
// number of concurrent streams. The TLS listener is such a server with
// Proxy.TLSConfig: the certificate of the KIngress host the client names
// (SNI) from its spec.tls Secret (SecretCertificates: kubernetes.io/tls
// Secrets, each version parsed once), HTTP/2 or HTTP/1.1 by ALPN, and the
// external listener's routes; a name without a certificate fails the
// handshake.
package ingress
