package v1alpha1

import "github.com/spright-dev/spright/pkg/routing"

// RoutingSpec is the spec as the gateway's route table loads it.
func (s ChainSpec) RoutingSpec() routing.Spec {
	var out routing.Spec
	for _, f := range s.Functions {
		out.Functions = append(out.Functions, routing.FunctionSpec{Name: f.Name})
	}
	for _, r := range s.Routes {
		out.Routes = append(out.Routes, routing.Route{From: r.From, Topic: r.Topic, To: append([]string(nil), r.To...)})
	}
	return out
}
