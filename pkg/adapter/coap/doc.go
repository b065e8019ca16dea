// Package coap is the gateway's CoAP-over-UDP front end and the built-in
// CoAP adapter.
//
// Place in the data path: Server (go-coap's UDP server) does the CoAP
// messaging layer — confirmable and non-confirmable requests, duplicate
// detection, piggybacked ACKs, 4.02 Bad Option for unknown critical
// options — and reassembles Block1 uploads itself (keyed by peer and
// Request-Tag, since clients such as libcoap change the token per block).
// Each request goes to the chain's attached CoAP adapter, which routes it
// like HTTP: the first Uri-Path segment is the chain topic
// (coap://host/motion → "motion"). The payload is copied into a slot by
// the gateway's Invoke; the chain's answer is copied out once (go-coap
// writes the response after the handler returns) and sent as 2.05 Content
// with the request's Content-Format.
//
// Errors are CoAP codes with a diagnostic payload: 4.00 a function refused
// the payload, 4.04 no route, 4.05 method other than GET/POST/PUT, 4.06 an
// Accept other than the request's Content-Format, 4.08 Block1 transfer out
// of order, 4.13 larger than a slot, 5.01 no adapter attached, 5.03 pool
// full (Max-Age 1), 5.04 timeout, 5.05 Proxy-Uri (not a proxy).
// Answers are sent whole (no Block2): a slot must fit in a datagram.
package coap
