//go:build e2e

// Package conformance runs Knative's KIngress conformance suite against the
// ingress class given by --ingressClass (run.sh: the SPRIGHT ingress on the
// one-node cluster of hack/cluster-up.sh).
package conformance

import (
	"testing"

	"knative.dev/networking/test/conformance/ingress"
)

func TestIngressConformance(t *testing.T) {
	ingress.RunConformance(t)
}
