package boutique

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"

	"github.com/spright-dev/spright/pkg/adapter"
)

// The same services as plain HTTP services (the Knative baseline): each
// service is an http.Handler that takes the document as a POST body and
// answers the document with its part added; the frontend is an
// http.Handler serving the shop that walks the action's itinerary itself,
// calling each service over HTTP — the coordinating front end of the
// paper's Knative setup.

// ServiceHandler serves service svc (not the frontend) over HTTP.
func (s *Shop) ServiceHandler(svc string) (http.Handler, error) {
	if !isStep(svc) {
		return nil, fmt.Errorf("boutique: unknown service %q", svc)
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/_healthz" {
			w.Write([]byte("ok"))
			return
		}
		if r.Method != http.MethodPost {
			http.Error(w, "POST a document", http.StatusMethodNotAllowed)
			return
		}
		b, err := io.ReadAll(io.LimitReader(r.Body, MaxDoc+1))
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		d, err := DecodeDoc(b)
		if err != nil {
			se := err.(*StatusError)
			http.Error(w, se.Msg, se.Status)
			return
		}
		if err := s.Step(svc, d); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		out, err := json.Marshal(d)
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.Write(out)
	}), nil
}

// Caller runs one service's step on d (over HTTP, or in this process).
type Caller func(ctx context.Context, svc string, d *Doc) (*Doc, error)

// LocalCaller runs the steps in this process on shop s.
func LocalCaller(s *Shop) Caller {
	return func(ctx context.Context, svc string, d *Doc) (*Doc, error) {
		return d, s.Step(svc, d)
	}
}

// HTTPCaller POSTs the document to the service's URL (urls: service name →
// base URL).
func HTTPCaller(client *http.Client, urls map[string]string) Caller {
	return func(ctx context.Context, svc string, d *Doc) (*Doc, error) {
		u, ok := urls[svc]
		if !ok {
			return nil, fmt.Errorf("no URL for service %q", svc)
		}
		b, err := json.Marshal(d)
		if err != nil {
			return nil, err
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, u, bytes.NewReader(b))
		if err != nil {
			return nil, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := client.Do(req)
		if err != nil {
			return nil, err
		}
		defer resp.Body.Close()
		body, err := io.ReadAll(io.LimitReader(resp.Body, MaxDoc+1))
		if err != nil {
			return nil, err
		}
		if resp.StatusCode != http.StatusOK {
			return nil, fmt.Errorf("%s answered %d: %s", svc, resp.StatusCode, bytes.TrimSpace(body))
		}
		return DecodeDoc(body)
	}
}

// FrontendHandler serves the shop over plain HTTP, calling the services
// through call along each action's itinerary.
func (s *Shop) FrontendHandler(call Caller) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, err := io.ReadAll(io.LimitReader(r.Body, adapter.MaxWebBody+1))
		if err != nil || len(body) > adapter.MaxWebBody {
			http.Error(w, "request body too large or unreadable", http.StatusRequestEntityTooLarge)
			return
		}
		h := http.Header{}
		for _, k := range adapter.WebRequestHeaders {
			if v := r.Header.Values(k); len(v) > 0 {
				h[k] = v
			}
		}
		resp := s.Serve(r.Context(), &adapter.WebRequest{Method: r.Method, Path: r.URL.Path, Query: r.URL.RawQuery, Header: h, Body: body}, call)
		for k, v := range resp.Header {
			w.Header()[k] = v
		}
		w.Header().Set("Content-Length", strconv.Itoa(len(resp.Body)))
		w.WriteHeader(resp.Status)
		w.Write(resp.Body)
	})
}

// Serve runs one web request through the whole shop: Begin, the action's
// itinerary through call, Render.
func (s *Shop) Serve(ctx context.Context, r *adapter.WebRequest, call Caller) *adapter.WebResponse {
	d, resp := s.Begin(r)
	if resp != nil {
		return resp
	}
	for _, svc := range Itineraries[d.Action] {
		if svc == SvcFrontend {
			return s.Render(d)
		}
		nd, err := call(ctx, svc, d)
		if err != nil {
			d.fail(svc, http.StatusBadGateway, "The %s service failed: %v", svc, err)
			d.Trace = append(d.Trace, svc)
			continue
		}
		d = nd
	}
	return s.Render(d)
}
