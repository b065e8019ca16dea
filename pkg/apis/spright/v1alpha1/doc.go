// Package v1alpha1 is the spright.dev/v1alpha1 API: the Chain resource.
//
// A Chain is what the SPRIGHT controller compiles from the spright.dev/*
// annotations of a namespace's Knative Services: the chain's members, their
// current revisions and the routing table. It is the controller's output and
// the node gateways' input (they watch Chains and load each into their
// shared-memory route table), and its status is where an operator reads why a
// chain is not served (invalid annotations, unknown members, loops).
//
// Users never write Chains: the controller owns them, creates one per
// (namespace, spright.dev/chain) pair and deletes it when the last member
// goes. The Go types are hand-written with hand-written deep copies (the
// API is tiny and is read through the dynamic client), so no code generator
// has to run in CI.
package v1alpha1
