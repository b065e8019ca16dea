package adapter

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/textproto"
	"strconv"
	"strings"
)

// Transports: the gateway front ends an adapter can be attached to.
const (
	TransportHTTP = "http" // the chain's HTTP listener (plain HTTP, CloudEvents)
	TransportMQTT = "mqtt" // the MQTT listener (the gateway holds the sessions)
	TransportCoAP = "coap" // the CoAP/UDP listener
)

// Invoker runs one message through one chain. It is the gateway's hook
// point (gateway.Invoke bound to a chain, see gateway.AdapterInvoker): the
// body is read once, straight into a slot of the chain's pool, one
// descriptor enters the chain, and the call waits for the chain's answer.
// Failures are *Error values carrying an HTTP status.
type Invoker interface {
	Invoke(topic string, body io.Reader, size int64, done <-chan struct{}) (*Result, error)
}

// InvokerFunc adapts a function to Invoker.
type InvokerFunc func(topic string, body io.Reader, size int64, done <-chan struct{}) (*Result, error)

// Invoke calls f.
func (f InvokerFunc) Invoke(topic string, body io.Reader, size int64, done <-chan struct{}) (*Result, error) {
	return f(topic, body, size, done)
}

// Result is a chain's answer. Body still points into the chain's shared
// memory: use it, then call Release exactly once.
type Result struct {
	Status  int
	Body    []byte
	release func()
}

// NewResult wraps an answer; release (may be nil) frees its slot.
func NewResult(status int, body []byte, release func()) *Result {
	return &Result{Status: status, Body: body, release: release}
}

// Release frees the answer's slot. Safe to call more than once.
func (r *Result) Release() {
	if r != nil && r.release != nil {
		r.release()
		r.release = nil
	}
}

// Error is a failure with the HTTP status that says what went wrong. Every
// front end turns it into its protocol's own error: the HTTP status itself,
// a CoAP 4.xx/5.xx code, an MQTT 5 PUBACK reason code.
type Error struct {
	Status int
	Msg    string
}

func (e *Error) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Msg) }

// Errorf makes an *Error.
func Errorf(status int, format string, a ...any) *Error {
	return &Error{Status: status, Msg: fmt.Sprintf(format, a...)}
}

// StatusOf is the HTTP status for err: the *Error's, else 500 (0 for nil).
func StatusOf(err error) (int, string) {
	if err == nil {
		return 0, ""
	}
	var e *Error
	if errors.As(err, &e) {
		return e.Status, e.Msg
	}
	return http.StatusInternalServerError, err.Error()
}

// Meta carries a message's metadata, keyed like HTTP headers (canonical
// MIME header keys): HTTP headers as they are; for MQTT "Content-Type",
// "Response-Topic", "Correlation-Data"; for CoAP "Content-Format" and
// "Accept" (numbers) and "Uri-Query".
type Meta = http.Header

// MetaKey canonicalises a metadata key.
func MetaKey(k string) string { return textproto.CanonicalMIMEHeaderKey(k) }

// Inbound is a protocol message as the gateway's front end hands it to an
// adapter: framing, sessions and acknowledgements are already done.
type Inbound struct {
	Ctx       context.Context
	Transport string // TransportHTTP, TransportMQTT or TransportCoAP
	Method    string // HTTP method, CoAP method ("POST"), "PUBLISH"
	Address   string // HTTP URL path, MQTT topic name, CoAP Uri-Path ("a/b")
	Query     string // HTTP: the raw query (no '?'); "" elsewhere
	Meta      Meta
	Body      io.Reader // not yet read: the adapter decides what enters the slot
	Size      int64     // -1 if unknown
}

// Request is what an adapter makes of an Inbound: the chain's topic and the
// payload that goes into the slot.
type Request struct {
	Topic string
	Body  io.Reader
	Size  int64
	// Reply is where the answer goes when the protocol does not answer on
	// the same exchange (MQTT: the topic it is published on; "" = nowhere).
	Reply string
	// State is the adapter's own, handed back to Egress.
	State any
}

// Outbound is the protocol reply an adapter makes of the chain's answer.
type Outbound struct {
	Status  int    // HTTP semantics; front ends map it to their codes
	Address string // MQTT: the topic the answer is published on
	Meta    Meta   // HTTP headers; CoAP "Content-Format"; MQTT "Content-Type", "Correlation-Data"
	Body    []byte // usually the Result's body, still in the slot
}

// Adapter turns one protocol's messages into chain requests and the chain's
// answers back into that protocol's replies. It runs inside the gateway, on
// the request's own goroutine (event-driven: no adapter process, no
// polling). Implementations must be safe for concurrent use.
type Adapter interface {
	// Name identifies the adapter ("cloudevents", "mqtt", …).
	Name() string
	// Transport is the front end it attaches to.
	Transport() string
	// Ingress maps an inbound message to a chain request. Errors should be
	// *Error (status 4xx for the sender's mistakes).
	Ingress(in *Inbound) (*Request, error)
	// Egress maps the chain's answer (res.Body is in shared memory until
	// the front end has sent the reply) to the protocol's reply.
	Egress(req *Request, res *Result) (*Outbound, error)
	// Close frees the adapter's resources. It is called after Detach once
	// no request uses the adapter any more.
	Close() error
}

// Serve runs one inbound message through adapter a and chain inv, and calls
// reply with the outbound message while the answer is still in its slot.
// It is the whole hook-point sequence every front end uses.
func Serve(a Adapter, inv Invoker, in *Inbound, reply func(*Outbound) error) error {
	req, err := a.Ingress(in)
	if err != nil {
		return err
	}
	return serveRequest(a, inv, in, req, reply)
}

func serveRequest(a Adapter, inv Invoker, in *Inbound, req *Request, reply func(*Outbound) error) error {
	var done <-chan struct{}
	if in.Ctx != nil {
		done = in.Ctx.Done()
	}
	res, err := inv.Invoke(req.Topic, req.Body, req.Size, done)
	if err != nil {
		return err
	}
	defer res.Release()
	if res.Status >= 400 {
		// A function failed the request (function.Errorf): its status and
		// text become the protocol's error, not an answer.
		return &Error{Status: res.Status, Msg: strings.TrimSpace(string(res.Body))}
	}
	out, err := a.Egress(req, res)
	if err != nil {
		return err
	}
	return reply(out)
}

// Dispatch serves in with the first of chains whose adapter at transport
// takes it: an adapter that answers Ingress with 404 passes the message to
// the next chain. With no adapter attached anywhere the error is 501.
func Dispatch(chains []*Chain, transport string, in *Inbound, reply func(*Outbound) error) error {
	err := error(Errorf(http.StatusNotFound, "no chain takes %s message %q", transport, in.Address))
	attached := false
	for _, ch := range chains {
		a, release := ch.Point(transport).Acquire()
		if a == nil {
			release()
			continue
		}
		attached = true
		req, ierr := a.Ingress(in)
		if ierr != nil {
			release()
			err = ierr
			if st, _ := StatusOf(ierr); st == http.StatusNotFound {
				continue
			}
			return err
		}
		err = serveRequest(a, ch.Invoker, in, req, reply)
		release()
		return err
	}
	if !attached {
		return Errorf(http.StatusNotImplemented, "no %s adapter is attached to %s", transport, chainNames(chains))
	}
	return err
}

func chainNames(cs []*Chain) string {
	var n []string
	for _, c := range cs {
		n = append(n, strconv.Quote(c.Name))
	}
	if len(n) == 1 {
		return "chain " + n[0]
	}
	return "chains " + strings.Join(n, ", ")
}
