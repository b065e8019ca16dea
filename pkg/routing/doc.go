// Package routing is Direct Function Routing (DESIGN §5): the route table a
// function consults, without a syscall, to decide where its output goes next,
// and the instance choice by residual capacity.
//
// The table lives in the chain pool's region (shm.ChainPool.Region), written
// only by the gateway (under a seqlock) and read by every member. Function
// index 0 is the gateway itself; its routes are the chain's entry.
//
// A route maps (function, topic) to an itinerary: an ordered list of
// functions. Itineraries behave like calls: when a function finishes, its own
// route (exact topic, else "*") is pushed in front of whatever the slot still
// has to visit; when there is nothing left to visit, the result returns to
// the gateway. So "upper: * → reverse" and "gateway: * → upper, reverse" give
// the same path, and a chain that visits a function several times (the
// Online Boutique chains) is one itinerary on the gateway. The pending
// itinerary rides in the slot header, so no hop ever goes via the gateway.
package routing
