package adapter

import (
	"bytes"
	"testing"
)

// FuzzWebEnvelope: any bytes either fail to parse or parse into an envelope
// that encodes back to the same bytes modulo header order, and whose header
// values carry no line breaks. Never a panic.
func FuzzWebEnvelope(f *testing.F) {
	seed := func(b []byte, err error) []byte {
		if err != nil {
			f.Fatal(err)
		}
		return b
	}
	f.Add(seed(AppendWebRequest(nil, &WebRequest{Method: "GET", Path: "/", Header: map[string][]string{"Cookie": {"a=b"}}})))
	f.Add(seed(AppendWebRequest(nil, &WebRequest{Method: "POST", Path: "/cart", Query: "x=1", Body: []byte("product_id=1&quantity=2")})))
	f.Add(seed(AppendWebResponse(nil, &WebResponse{Status: 302, Header: map[string][]string{"Location": {"/"}, "Set-Cookie": {"a=b", "c=d"}}})))
	f.Add(seed(AppendWebResponse(nil, &WebResponse{Status: 200, Body: []byte("<html></html>")})))
	f.Add([]byte("SPW1\x01"))
	f.Add([]byte("SPW1\x02\xc8\x00\x01\x00"))
	f.Fuzz(func(t *testing.T, p []byte) {
		if r, err := ParseWebRequest(p); err == nil {
			if r.Method == "" {
				t.Fatal("empty method accepted")
			}
			checkHeaders(t, r.Header)
			b, err := AppendWebRequest(nil, r)
			if err != nil {
				t.Fatalf("re-encoding a parsed request: %v", err)
			}
			if len(b) != len(p) {
				t.Fatalf("re-encoded %d bytes, parsed %d", len(b), len(p))
			}
			r2, err := ParseWebRequest(b)
			if err != nil || r2.Method != r.Method || r2.Path != r.Path || r2.Query != r.Query || !bytes.Equal(r2.Body, r.Body) {
				t.Fatalf("round trip: %+v %v", r2, err)
			}
		}
		if r, err := ParseWebResponse(p); err == nil {
			if r.Status < 100 || r.Status > 999 {
				t.Fatalf("status %d accepted", r.Status)
			}
			checkHeaders(t, r.Header)
			b, err := AppendWebResponse(nil, r)
			if err != nil || len(b) != len(p) {
				t.Fatalf("re-encoding a parsed response: %d bytes for %d, %v", len(b), len(p), err)
			}
		}
	})
}

func checkHeaders(t *testing.T, h map[string][]string) {
	t.Helper()
	for k, vs := range h {
		if !validHeaderName(k) {
			t.Fatalf("header name %q accepted", k)
		}
		for _, v := range vs {
			if bytes.ContainsAny([]byte(v), "\r\n\x00") {
				t.Fatalf("header %s value %q accepted", k, v)
			}
		}
	}
}
