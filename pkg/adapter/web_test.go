package adapter

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
)

func TestWebEnvelopeRoundTrip(t *testing.T) {
	req := &WebRequest{Method: "POST", Path: "/cart", Query: "a=1&b=%20",
		Header: http.Header{"Cookie": {"s=1", "t=2"}, "Content-Type": {"application/x-www-form-urlencoded"}},
		Body:   []byte("product_id=OLJCESPC7Z&quantity=2")}
	b, err := AppendWebRequest(nil, req)
	if err != nil {
		t.Fatal(err)
	}
	if !IsWebRequest(b) || IsWebResponse(b) {
		t.Fatal("kind not recognised")
	}
	got, err := ParseWebRequest(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(got, req) {
		t.Fatalf("round trip: got %+v want %+v", got, req)
	}
	resp := &WebResponse{Status: 302, Header: http.Header{"Location": {"/cart"}, "Set-Cookie": {"a=b; Path=/", "c=d"}}, Body: []byte{}}
	b, err = AppendWebResponse(nil, resp)
	if err != nil {
		t.Fatal(err)
	}
	gr, err := ParseWebResponse(b)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(gr, resp) {
		t.Fatalf("round trip: got %+v want %+v", gr, resp)
	}
	// Every truncation fails, and so does a trailing byte.
	for i := 0; i < len(b); i++ {
		if _, err := ParseWebResponse(b[:i]); err == nil {
			t.Fatalf("truncated to %d bytes: no error", i)
		}
	}
	if _, err := ParseWebResponse(append(b, 0)); err == nil {
		t.Fatal("trailing byte accepted")
	}
	// Response splitting through a header value is refused.
	bad, _ := AppendWebResponse(nil, &WebResponse{Status: 200, Header: http.Header{"X-A": {"a\r\nSet-Cookie: x=y"}}})
	if _, err := ParseWebResponse(bad); err == nil {
		t.Fatal("CRLF in a header value accepted")
	}
	if _, err := AppendWebResponse(nil, &WebResponse{Status: 42}); err == nil {
		t.Fatal("status 42 accepted")
	}
}

// TestWebAdapterOverHTTP runs the adapter on the chain's HTTP front end with
// an invoker that plays a chain: it decodes the request envelope and
// answers a response envelope built from it.
func TestWebAdapterOverHTTP(t *testing.T) {
	var sawTopic string
	inv := InvokerFunc(func(topic string, body io.Reader, size int64, done <-chan struct{}) (*Result, error) {
		sawTopic = topic
		p, _ := io.ReadAll(body)
		if int64(len(p)) != size {
			t.Errorf("size %d, read %d", size, len(p))
		}
		r, err := ParseWebRequest(p)
		if err != nil {
			return nil, err
		}
		if r.Path == "/raw" {
			return NewResult(200, []byte("raw bytes"), nil), nil
		}
		if r.Path == "/broken" {
			return NewResult(200, []byte("SPW1\x02\x00"), nil), nil
		}
		out, _ := AppendWebResponse(nil, &WebResponse{Status: 201, Header: http.Header{
			"Content-Type": {"text/plain"}, "Set-Cookie": {"sid=42; Path=/"}, "Content-Length": {"9999"}},
			Body: []byte(r.Method + " " + r.Path + "?" + r.Query + " cookie=" + r.Header.Get("Cookie") + " auth=" + r.Header.Get("Authorization") + " body=" + string(r.Body))})
		return NewResult(200, out, nil), nil
	})
	c := NewChain("web", inv, Options{})
	if _, err := c.AttachNamed(context.Background(), "web"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(HTTPHandler(c, nil))
	defer srv.Close()

	req, _ := http.NewRequest("POST", srv.URL+"/cart?x=1", strings.NewReader("q=2"))
	req.Header.Set("Cookie", "sid=7")
	req.Header.Set("Authorization", "secret")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 201 || string(b) != "POST /cart?x=1 cookie=sid=7 auth= body=q=2" {
		t.Fatalf("got %d %q", resp.StatusCode, b)
	}
	if resp.Header.Get("Set-Cookie") != "sid=42; Path=/" || resp.Header.Get("Content-Type") != "text/plain" {
		t.Fatalf("headers %v", resp.Header)
	}
	if resp.ContentLength != int64(len(b)) {
		t.Fatalf("content length %d for %d bytes: the function's Content-Length must not pass", resp.ContentLength, len(b))
	}
	if sawTopic != "" {
		t.Fatalf("topic %q without X-Spright-Topic", sawTopic)
	}

	resp, err = http.Get(srv.URL + "/raw")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || string(b) != "raw bytes" {
		t.Fatalf("raw answer: %d %q", resp.StatusCode, b)
	}
	resp, err = http.Get(srv.URL + "/broken")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadGateway {
		t.Fatalf("malformed envelope: %d, want 502", resp.StatusCode)
	}
	big := bytes.Repeat([]byte("x"), MaxWebBody+1)
	resp, err = http.Post(srv.URL+"/", "text/plain", bytes.NewReader(big))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestEntityTooLarge {
		t.Fatalf("huge body: %d, want 413", resp.StatusCode)
	}
}
