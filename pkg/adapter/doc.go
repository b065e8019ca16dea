// Package adapter is the gateway's protocol adaptation (paper §3.5,
// Appendix A; DESIGN §5–6): hook points where a protocol adapter turns an
// incoming message into (topic, payload in a slot) and the chain's answer
// back into the protocol's reply.
//
// The data path, per message:
//
//	client ─▶ front end (gateway: TCP/UDP, HTTP server, MQTT sessions, CoAP messaging)
//	          │ Inbound{address, metadata, body reader}
//	          ▼
//	        hook point ─▶ attached Adapter.Ingress ─▶ Request{topic, body}
//	          │ Invoker.Invoke = gateway.Invoke: the body is copied once into a slot,
//	          │ one descriptor enters the chain, functions route among themselves (sk_msg)
//	          ▼
//	        Result{body still in the slot} ─▶ Adapter.Egress ─▶ Outbound ─▶ reply written ─▶ slot freed
//
// Everything runs on the message's own goroutine inside the gateway: no
// adapter process, no extra hop, nothing running while no message comes
// (event-driven). Stateful protocols keep their L7 state in the front end
// (the MQTT server holds CONNECT/keep-alive/subscriptions), so adapters
// stay stateless translators.
//
// Each chain has one hook point per front end (Chain.Point: "http", "mqtt",
// "coap"). An adapter is attached or detached at run time (Point.Attach,
// Point.Detach, the admin endpoint AdminHandler, chain.yaml's protocol at
// start). A message holds the adapter it started with until its reply is
// sent; Attach/Detach switch new messages at once and wait for those in
// flight before closing the old adapter, so none is lost. Where the paper
// loads shared libraries, adapters here are Go values built by registered
// factories (the built-ins: "http", "cloudevents", "mqtt", "coap", and
// "web", which carries a whole HTTP exchange for web applications as
// binary envelopes: WebRequest in the payload, WebResponse back), and
// custom adapters are WebAssembly modules run sandboxed by package
// adapter/wasm ("wasm:/path/to/module.wasm").
//
// Errors are *Error values carrying an HTTP status; each front end turns
// them into its protocol's own error (HTTP status, CoAP 4.xx/5.xx, MQTT 5
// PUBACK/CONNACK/DISCONNECT reason codes).
package adapter
