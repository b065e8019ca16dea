// Package mqtt is the gateway's MQTT front end and the built-in MQTT
// adapter (paper Appendix A).
//
// Place in the data path: Server accepts TCP connections and holds the L7
// session itself — CONNECT/CONNACK (MQTT 3.1, 3.1.1 and 5), keep-alive
// (PINGREQ, disconnect after 1.5 × keep-alive), SUBSCRIBE/UNSUBSCRIBE,
// PUBACK for QoS 1, clean DISCONNECT — using mochi-mqtt's packet codec.
// Each PUBLISH goes to the chain's attached MQTT adapter, which maps the
// MQTT topic to the chain topic and a reply topic; the payload is copied
// into a slot by the gateway's Invoke; the chain's answer is published on
// the reply topic to the subscribed clients, then the PUBLISH is
// acknowledged (so an MQTT 5 PUBACK carries the outcome).
//
// Topic mapping (chain.yaml `mqtt.routes`, tried in order):
//
//   - {filter: "motion/+", topic: motion, reply: "lights/{1}"}
//
// runs a PUBLISH on motion/s1 with chain topic "motion" and publishes the
// answer on lights/s1: {1}, {2}… are the levels the filter's wildcards
// matched ('#' matches the rest as one), {topic} is the whole topic. Topic
// defaults to the first topic level; with no routes at all every topic is
// taken and routed on its first level. An MQTT 5 Response Topic on the
// PUBLISH overrides the reply topic (request/response), and its
// Correlation Data and Content Type are copied to the answer.
//
// Errors: chain and adapter failures become MQTT 5 PUBACK reason codes
// (400 → 0x99 payload format invalid, 404 → 0x90 topic name invalid,
// 413/503 → 0x97 quota exceeded, no adapter attached → 0x83, other 5xx →
// 0x80) with the reason string; MQTT 3.1.1 has no such codes, so its
// PUBACK is sent and the failure logged. Malformed or forbidden packets
// end the connection — with a CONNACK or DISCONNECT reason code for MQTT 5
// (0x81 malformed, 0x82 protocol error, 0x95 packet too large, 0x9B QoS 2,
// 0x9A retain), a CONNACK return code or a plain close for 3.1.1.
//
// Not a general broker: no retained or will messages, no QoS 2, no shared
// subscriptions, nothing kept after a connection ends (session present is
// always 0). Clients publish to chains and subscribe to their answers.
package mqtt
