package cloudevents

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"testing"

	"github.com/spright-dev/spright/pkg/adapter"
)

// FuzzIngress: any HTTP request (content type, ce-* headers, body) is
// either decoded into a topic and payload or refused with a 4xx; the answer
// event for a decoded one is valid JSON in structured mode. Never a panic.
func FuzzIngress(f *testing.F) {
	f.Add("application/cloudevents+json", "", "", "", []byte(`{"specversion":"1.0","id":"1","source":"/s","type":"motion","datacontenttype":"application/json","data":{"sensor":"s1","state":"on"}}`))
	f.Add("application/cloudevents+json", "", "", "", []byte(`{"specversion":"0.3","id":"1","source":"/s","type":"t","data_base64":"AAEC"}`))
	f.Add("application/json", "1.0", "motion", "/s", []byte(`{"sensor":"s1","state":"on"}`))
	f.Add("application/cloudevents-batch+json", "", "", "", []byte(`[{"specversion":"1.0","id":"1","source":"/s","type":"t"}]`))
	f.Add("text/plain", "1.0", "", "/s", []byte(`x`))
	a := New(adapter.Options{Chain: "fuzz"})
	f.Fuzz(func(t *testing.T, ct, specversion, typ, source string, body []byte) {
		h := http.Header{}
		if ct != "" {
			h.Set("Content-Type", ct)
		}
		if specversion != "" {
			h.Set("Ce-Specversion", specversion)
			h.Set("Ce-Id", "1")
		}
		if typ != "" {
			h.Set("Ce-Type", typ)
		}
		if source != "" {
			h.Set("Ce-Source", source)
		}
		req, err := a.Ingress(&adapter.Inbound{Ctx: context.Background(), Transport: adapter.TransportHTTP, Method: "POST",
			Meta: h, Body: bytes.NewReader(body), Size: int64(len(body))})
		if err != nil {
			if st, _ := adapter.StatusOf(err); st < 400 || st > 499 {
				t.Fatalf("refused with %d: %v", st, err)
			}
			return
		}
		data, err := io.ReadAll(req.Body)
		if err != nil {
			t.Fatal(err)
		}
		out, err := a.Egress(req, adapter.NewResult(200, data, nil))
		if err != nil {
			t.Fatal(err)
		}
		if out.Meta.Get("Content-Type") == "application/cloudevents+json" && !json.Valid(out.Body) {
			t.Fatalf("structured answer is not JSON: %q", out.Body)
		}
	})
}
