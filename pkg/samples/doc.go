// Package samples holds the built-in function behaviours that the sample
// chains (config/samples/) run: the hello chain's upper and reverse, and the
// paper's workloads (Online Boutique, parking, IoT motion) as functions that
// burn their measured CPU service time (DESIGN §8) on the payload in place.
//
// The real Online Boutique's services (package boutique, run by
// config/samples/boutique) are here too, as the behaviours
// "boutique-frontend", "boutique-cart", … (boutique.go).
//
// One binary (`spright function --behavior NAME`) serves them all; the
// behaviour is chosen per instance. Every behaviour checks that the payload
// it was handed lies inside the chain pool's mapping: a copy anywhere on the
// path would fail the request, so the end-to-end tests prove zero copy.
package samples
