// Package chainspec turns the spright.dev annotations of Knative revisions
// into a chain's routing spec (DESIGN §6): it is the pure core the
// controller's reconciler calls, kept free of Kubernetes clients so every
// validation path is a table test.
//
//	spright.dev/chain     chain name (required to be a member)
//	spright.dev/entry     "true" on the chain's head
//	spright.dev/routes    "*=cart;checkout=payment,shipping": topic=functions to visit
//	spright.dev/protocol  http | cloudevents | mqtt | coap
//
// A member's function name is its Knative Service name.
package chainspec
