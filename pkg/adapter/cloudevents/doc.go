// Package cloudevents is the CloudEvents adapter on the gateway's HTTP
// front end (CloudEvents 1.0 and 0.3, HTTP protocol binding, with
// github.com/cloudevents/sdk-go/v2).
//
// Place in the data path: the chain's HTTP listener hands each request to
// the adapter attached at its http hook point (`protocol: cloudevents` in
// chain.yaml, or attached at run time). Binary mode (ce-* headers): the
// body is the event data and streams straight into the slot (the one
// copy). Structured mode (application/cloudevents+json): the envelope is
// decoded, then its data is copied into the slot. The event's type is the
// chain topic. The answer is an event in the request's mode: a new id, the
// chain as source (/spright/<chain>), type "<request type>.response", the
// request's datacontenttype, the chain's bytes as data (binary mode writes
// them straight from the slot).
//
// Errors are plain HTTP: 400 for a request that is not a valid event
// (missing id/source/type/specversion, broken JSON) or uses batch mode,
// 415 an unknown event format, 405 not POST/PUT, and the chain's own
// statuses.
package cloudevents
