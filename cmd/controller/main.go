// Command controller is the SPRIGHT controller: it compiles the spright.dev/*
// annotations of Knative Services into Chain objects for the node gateways
// and routes each chain's host to them (pkg/reconciler/chain). It runs as a
// knative.dev/pkg sharedmain controller in the system namespace
// (SYSTEM_NAMESPACE, spright-system in config/), with leader election and
// logging/observability from the usual config-* ConfigMaps.
package main

import (
	"knative.dev/pkg/injection/sharedmain"

	"github.com/spright-dev/spright/pkg/reconciler/chain"
)

func main() {
	sharedmain.Main("spright-controller", chain.NewController)
}
