// Package chain is the SPRIGHT controller's reconciler: it turns the
// spright.dev/* annotations on a namespace's Knative Services into one Chain
// object per chain (pkg/apis/spright/v1alpha1), which the node gateways load
// into their shared-memory route tables, and routes the chain's host to the
// gateways instead of through the activator.
//
// The work queue key is "namespace/chain". For each key the reconciler
//
//   - reads the members (Services whose revision template carries
//     spright.dev/chain=<chain>) and their revisions from the listers,
//   - validates and assembles them with pkg/chainspec; a member with bad
//     annotations gets a Warning event, the Chain a Valid=False condition
//     whose message names the member and the fault (the last valid spec is
//     left in place so gateways keep serving it),
//   - defaults each member's template to autoscaling.knative.dev/min-scale
//     "1" unless the user set a min-scale (a warm SPRIGHT function costs no
//     CPU, so scale-to-zero buys nothing and costs a cold start),
//   - creates/updates the Chain, an ExternalName Service "<chain>-chain"
//     that resolves to the gateways' Service, and a KIngress for the
//     external host when config-spright sets a domain,
//   - deletes all three when the last member leaves.
//
// The key "namespace/" (no chain) checks Services that carry spright.dev/*
// annotations without spright.dev/chain and warns on them.
//
// Desired objects come from pure functions (MakeChainSpec, MakeService,
// MakeIngress) so the table tests can state them directly.
package chain
