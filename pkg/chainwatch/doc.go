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
// A change of a loaded chain's functions, routes or entry (kn service
// update of a member's spright.dev annotations, a member added or removed)
// is applied in place (gateway.UpdateChain): requests in flight finish on
// the routes they started with, new requests take the new ones; revision
// changes take effect at once. The pool's geometry is the Watcher's, the
// same for every chain, so an update never needs a new pool. A deleted
// Chain stops being routed; its pool is released when the gateway
// restarts, and a Chain created again under the same name before that is
// served with it (and its current spec).
package chainwatch
