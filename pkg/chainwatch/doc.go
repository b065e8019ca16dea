// Package chainwatch keeps a node gateway's chains in step with the
// cluster's Chain objects (spright.dev/v1alpha1, published by the
// controller): it is the gateway's Kubernetes mode.
//
// For each Chain with a valid spec it adds the chain to the gateway (pool,
// route table, datapath), with the gateway acting as the activator (held
// requests, autoscaler pokes), maps the members' revisions to chain
// functions (so an EPROXY sidecar of such a revision joins the chain as that
// function when it registers), and answers which chain an HTTP request is
// for (the KIngress's Spright-Chain header, else the host name
// "<chain>-chain.<namespace>…" of the chain's ExternalName Service, else
// "<chain>.<namespace>.<domain>").
//
// Limits: a chain's pool and route table are fixed when the gateway first
// loads it. A later change of the chain's functions or routes is logged and
// counted (Stale) and takes effect when the gateway restarts; revision
// changes take effect at once. A deleted Chain stops being routed; its pool
// is released when the gateway restarts, and a Chain created again under
// the same name before that is served with it.
package chainwatch
