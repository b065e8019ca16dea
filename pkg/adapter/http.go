package adapter

import (
	"net/http"
	"strconv"
)

// TopicHeader carries a plain HTTP request's topic (DESIGN §5).
const TopicHeader = "X-Spright-Topic"

// StatusClientGone is the status of a request whose sender went away.
const StatusClientGone = 499

func init() {
	Register("http", func(arg string, o Options) (Adapter, error) { return Plain{}, nil })
}

// Plain is the plain HTTP adapter: the topic is the X-Spright-Topic header,
// the body is the payload, the answer is the response body.
type Plain struct{}

func (Plain) Name() string      { return "http" }
func (Plain) Transport() string { return TransportHTTP }
func (Plain) Close() error      { return nil }

// Ingress takes the topic from the X-Spright-Topic header.
func (Plain) Ingress(in *Inbound) (*Request, error) {
	return &Request{Topic: in.Meta.Get(TopicHeader), Body: in.Body, Size: in.Size}, nil
}

// Egress answers with the chain's bytes.
func (Plain) Egress(req *Request, res *Result) (*Outbound, error) {
	return &Outbound{Status: res.Status, Meta: Meta{"Content-Type": {"application/octet-stream"}}, Body: res.Body}, nil
}

// HTTPHandler is the chain's HTTP front end. Each request goes through the
// adapter attached at the chain's http point when the request arrives; with
// none attached it goes to fallback (the gateway's own plain handler), or
// to Plain if fallback is nil.
func HTTPHandler(c *Chain, fallback http.Handler) http.Handler {
	p := c.Point(TransportHTTP)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a, release := p.Acquire()
		defer release()
		if a == nil {
			if fallback != nil {
				fallback.ServeHTTP(w, r)
				return
			}
			a = Plain{}
		}
		in := &Inbound{Ctx: r.Context(), Transport: TransportHTTP, Method: r.Method, Address: r.URL.Path,
			Query: r.URL.RawQuery, Meta: r.Header, Body: r.Body, Size: r.ContentLength}
		err := Serve(a, c.Invoker, in, func(out *Outbound) error {
			for k, v := range out.Meta {
				w.Header()[k] = v
			}
			w.Header().Set("Content-Length", strconv.Itoa(len(out.Body)))
			status := out.Status
			if status == 0 {
				status = http.StatusOK
			}
			w.WriteHeader(status)
			w.Write(out.Body) // a write error means the client went away: nothing left to tell it
			return nil
		})
		if err != nil {
			WriteHTTPError(w, err)
		}
	})
}

// WriteHTTPError answers err as plain text with its status (503 gets a
// Retry-After; a client that went away gets nothing).
func WriteHTTPError(w http.ResponseWriter, err error) {
	status, msg := StatusOf(err)
	switch status {
	case StatusClientGone:
		return
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", "1")
	}
	http.Error(w, msg, status)
}
