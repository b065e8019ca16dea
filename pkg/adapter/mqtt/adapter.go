package mqtt

import (
	"fmt"
	"net/http"

	"github.com/spright-dev/spright/pkg/adapter"
)

func init() {
	adapter.Register("mqtt", func(arg string, o adapter.Options) (adapter.Adapter, error) {
		return NewAdapter(o.MQTT)
	})
}

// Metadata keys the MQTT front end fills in (MQTT 5 properties).
const (
	MetaContentType     = "Content-Type"
	MetaResponseTopic   = "Response-Topic"
	MetaCorrelationData = "Correlation-Data"
)

// Adapter is the built-in MQTT adapter: it maps a PUBLISH topic to the
// chain's topic and to the topic the answer is published on, following the
// chain's MQTT routes (see adapter.MQTTRoute).
type Adapter struct {
	routes []route
}

type route struct {
	filter       string
	topic, reply template // nil = default
}

// NewAdapter validates the routes and builds the adapter.
func NewAdapter(o adapter.MQTTOptions) (*Adapter, error) {
	a := &Adapter{}
	for i, r := range o.Routes {
		if err := ValidFilter(r.Filter); err != nil {
			return nil, fmt.Errorf("mqtt route %d: %w", i+1, err)
		}
		n := wildcards(r.Filter)
		rt := route{filter: r.Filter}
		var err error
		if r.Topic != "" {
			if rt.topic, err = parseTemplate(r.Topic, n); err != nil {
				return nil, fmt.Errorf("mqtt route %d (%s): topic %q: %w", i+1, r.Filter, r.Topic, err)
			}
		}
		if r.Reply != "" {
			if rt.reply, err = parseTemplate(r.Reply, n); err != nil {
				return nil, fmt.Errorf("mqtt route %d (%s): reply %q: %w", i+1, r.Filter, r.Reply, err)
			}
		}
		a.routes = append(a.routes, rt)
	}
	return a, nil
}

func (a *Adapter) Name() string      { return "mqtt" }
func (a *Adapter) Transport() string { return adapter.TransportMQTT }
func (a *Adapter) Close() error      { return nil }

// state is what Ingress hands to Egress.
type state struct {
	contentType string
	correlation string
}

// Ingress picks the route: the first whose filter matches the topic. With
// no routes configured every topic is accepted and routed on its first
// level. An MQTT 5 Response Topic overrides the route's reply topic.
func (a *Adapter) Ingress(in *adapter.Inbound) (*adapter.Request, error) {
	topic := in.Address
	req := &adapter.Request{Body: in.Body, Size: in.Size}
	matched := len(a.routes) == 0
	if matched {
		req.Topic = firstLevel(topic)
	}
	for _, r := range a.routes {
		caps, ok := Match(r.filter, topic)
		if !ok {
			continue
		}
		matched = true
		req.Topic = firstLevel(topic)
		if r.topic != nil {
			req.Topic = r.topic.expand(topic, caps)
		}
		if r.reply != nil {
			req.Reply = r.reply.expand(topic, caps)
		}
		break
	}
	if !matched {
		return nil, adapter.Errorf(http.StatusNotFound, "no MQTT route of this chain matches topic %q", topic)
	}
	if rt := in.Meta.Get(MetaResponseTopic); rt != "" {
		req.Reply = rt
	}
	req.State = state{contentType: in.Meta.Get(MetaContentType), correlation: in.Meta.Get(MetaCorrelationData)}
	return req, nil
}

// Egress publishes the chain's answer, as it is, on the reply topic (with
// the request's content type and correlation data, for MQTT 5).
func (a *Adapter) Egress(req *adapter.Request, res *adapter.Result) (*adapter.Outbound, error) {
	out := &adapter.Outbound{Status: res.Status, Address: req.Reply, Body: res.Body, Meta: adapter.Meta{}}
	if st, ok := req.State.(state); ok {
		if st.contentType != "" {
			out.Meta.Set(MetaContentType, st.contentType)
		}
		if st.correlation != "" {
			out.Meta.Set(MetaCorrelationData, st.correlation)
		}
	}
	return out, nil
}
