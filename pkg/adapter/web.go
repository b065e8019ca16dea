package adapter

import (
	"bytes"
	"io"
	"net/http"
)

func init() {
	Register("web", func(arg string, o Options) (Adapter, error) { return Web{}, nil })
}

// MaxWebBody is the largest request body the web adapter accepts (the
// chain's slot size usually refuses a smaller one first, with 413).
const MaxWebBody = 1 << 20

// WebRequestHeaders are the request headers a chain sees: what a web
// application needs to answer (sessions, forms, content negotiation), not
// the whole header block.
var WebRequestHeaders = []string{"Accept", "Accept-Language", "Content-Type", "Cookie", "Referer", "User-Agent", TopicHeader}

// webHopByHop are response headers a function may not set: the gateway
// frames the reply itself.
var webHopByHop = map[string]bool{"Connection": true, "Content-Length": true, "Keep-Alive": true,
	"Transfer-Encoding": true, "Trailer": true, "Upgrade": true, "Proxy-Connection": true}

// Web is the adapter for web applications served by a chain: the whole HTTP
// request (method, path, query, selected headers, body) becomes the payload
// as a request envelope (see WebRequest), and the chain answers with a
// response envelope (status, headers such as Content-Type, Set-Cookie and
// Location, body) that becomes the HTTP reply. The topic is the
// X-Spright-Topic header if the client sent one, else "" (the chain's "*"
// route): a web chain's first function usually picks the topic from the
// path (Message.SetTopic). An answer that is not a response envelope is
// sent as it is (application/octet-stream), like the plain adapter does.
type Web struct{}

func (Web) Name() string      { return "web" }
func (Web) Transport() string { return TransportHTTP }
func (Web) Close() error      { return nil }

// Ingress wraps the request into an envelope.
func (Web) Ingress(in *Inbound) (*Request, error) {
	if in.Size > MaxWebBody {
		return nil, Errorf(http.StatusRequestEntityTooLarge, "body of %d bytes exceeds %d", in.Size, MaxWebBody)
	}
	var body []byte
	if in.Body != nil {
		var err error
		body, err = io.ReadAll(io.LimitReader(in.Body, MaxWebBody+1))
		if err != nil {
			return nil, Errorf(http.StatusBadRequest, "reading body: %v", err)
		}
		if len(body) > MaxWebBody {
			return nil, Errorf(http.StatusRequestEntityTooLarge, "body exceeds %d bytes", MaxWebBody)
		}
	}
	h := http.Header{}
	for _, k := range WebRequestHeaders {
		if v := in.Meta.Values(k); len(v) > 0 {
			h[k] = v
		}
	}
	method := in.Method
	if method == "" {
		method = http.MethodGet
	}
	env, err := AppendWebRequest(make([]byte, 0, 256+len(body)), &WebRequest{Method: method, Path: in.Address, Query: in.Query, Header: h, Body: body})
	if err != nil {
		return nil, Errorf(http.StatusRequestHeaderFieldsTooLarge, "%v", err)
	}
	return &Request{Topic: in.Meta.Get(TopicHeader), Body: bytes.NewReader(env), Size: int64(len(env))}, nil
}

// Egress unwraps the chain's response envelope.
func (Web) Egress(req *Request, res *Result) (*Outbound, error) {
	if !IsWebResponse(res.Body) {
		return &Outbound{Status: res.Status, Meta: Meta{"Content-Type": {"application/octet-stream"}}, Body: res.Body}, nil
	}
	r, err := ParseWebResponse(res.Body)
	if err != nil {
		return nil, Errorf(http.StatusBadGateway, "the chain answered a malformed web envelope: %v", err)
	}
	meta := Meta{}
	for k, v := range r.Header {
		if !webHopByHop[k] {
			meta[k] = v
		}
	}
	if meta.Get("Content-Type") == "" && len(r.Body) > 0 {
		meta.Set("Content-Type", http.DetectContentType(r.Body))
	}
	meta.Set("X-Content-Type-Options", "nosniff")
	return &Outbound{Status: r.Status, Meta: meta, Body: r.Body}, nil
}
