// Command controller is the SPRIGHT controller: it compiles the spright.dev/*
// annotations of Knative Services into Chain objects for the node gateways
// and routes each chain's host to them (pkg/reconciler/chain), and makes the
// node gateways Knative's networking layer for the ingress class
// spright.ingress.networking.knative.dev (pkg/reconciler/ingress: KIngresses
// of that class are Ready once every gateway serves them). It runs as a
// knative.dev/pkg sharedmain controller in the system namespace
// (SYSTEM_NAMESPACE, spright-system in config/), with leader election and
// logging/observability from the usual config-* ConfigMaps.
package main

import (
	"knative.dev/pkg/injection/sharedmain"

	"github.com/spright-dev/spright/pkg/reconciler/chain"
	"github.com/spright-dev/spright/pkg/reconciler/ingress"
)

func main() {
	sharedmain.Main("spright-controller", chain.NewController, ingress.NewController)
}
