package coap

import (
	"net/http"
	"strconv"
	"strings"

	"github.com/spright-dev/spright/pkg/adapter"
)

func init() {
	adapter.Register("coap", func(arg string, o adapter.Options) (adapter.Adapter, error) { return Adapter{}, nil })
}

// Metadata keys the CoAP front end fills in (option values as decimal
// numbers for the numeric ones).
const (
	MetaContentFormat = "Content-Format"
	MetaAccept        = "Accept"
	MetaURIQuery      = "Uri-Query"
)

// Adapter is the built-in CoAP adapter. Requests are routed like HTTP ones:
// the first Uri-Path segment is the chain topic (coap://host/motion →
// "motion"; no path → the default route), the payload goes to the chain,
// and the chain's answer comes back in the piggybacked response (2.05
// Content) with the request's Content-Format.
type Adapter struct{}

func (Adapter) Name() string      { return "coap" }
func (Adapter) Transport() string { return adapter.TransportCoAP }
func (Adapter) Close() error      { return nil }

// Ingress checks the methods and options the chain can honour.
func (Adapter) Ingress(in *adapter.Inbound) (*adapter.Request, error) {
	switch in.Method {
	case "GET", "POST", "PUT":
	default:
		return nil, adapter.Errorf(http.StatusMethodNotAllowed, "method %s not allowed: use GET, POST or PUT", in.Method)
	}
	cf, accept := in.Meta.Get(MetaContentFormat), in.Meta.Get(MetaAccept)
	if accept != "" && cf != "" && accept != cf {
		return nil, adapter.Errorf(http.StatusNotAcceptable, "the chain answers in the request's Content-Format %s, not Accept %s", cf, accept)
	}
	topic, _, _ := strings.Cut(strings.TrimPrefix(in.Address, "/"), "/")
	return &adapter.Request{Topic: topic, Body: in.Body, Size: in.Size, State: cfOr(cf, accept)}, nil
}

func cfOr(a, b string) string {
	if a != "" {
		return a
	}
	return b
}

// Egress answers with the chain's bytes in the request's Content-Format.
func (Adapter) Egress(req *adapter.Request, res *adapter.Result) (*adapter.Outbound, error) {
	out := &adapter.Outbound{Status: res.Status, Body: res.Body, Meta: adapter.Meta{}}
	if cf, _ := req.State.(string); cf != "" {
		if _, err := strconv.ParseUint(cf, 10, 16); err == nil {
			out.Meta.Set(MetaContentFormat, cf)
		}
	}
	return out, nil
}
