package adapter_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spright-dev/spright/pkg/adapter"
	"github.com/spright-dev/spright/pkg/adapter/adaptertest"
)

// closing records when it is closed and whether a message used it after.
type closing struct {
	adapter.Plain
	mu     sync.Mutex
	closed bool
	late   bool
}

func (c *closing) Name() string { return "closing" }
func (c *closing) Close() error { c.mu.Lock(); c.closed = true; c.mu.Unlock(); return nil }
func (c *closing) Egress(req *adapter.Request, res *adapter.Result) (*adapter.Outbound, error) {
	c.mu.Lock()
	c.late = c.late || c.closed
	c.mu.Unlock()
	return c.Plain.Egress(req, res)
}

// TestDetachWaitsForInFlight: Detach returns only after the messages that
// acquired the adapter are done, and only then closes it.
func TestDetachWaitsForInFlight(t *testing.T) {
	fc := &adaptertest.Chain{Delay: 100 * time.Millisecond}
	ac := adapter.NewChain("c", fc, adapter.Options{})
	a := &closing{}
	if err := ac.Point(adapter.TransportHTTP).Attach(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(adapter.HTTPHandler(ac, http.NotFoundHandler()))
	defer srv.Close()
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			req, _ := http.NewRequest("POST", srv.URL, strings.NewReader("x"))
			req.Header.Set(adapter.TopicHeader, "slow")
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				t.Error(err)
				return
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "x" {
				t.Errorf("in flight during detach: %d %q", resp.StatusCode, b)
			}
		}()
	}
	for fc.InFlight.Load() < 8 {
		time.Sleep(time.Millisecond)
	}
	if err := ac.Detach(context.Background(), adapter.TransportHTTP); err != nil {
		t.Fatal(err)
	}
	if fc.InFlight.Load() != 0 || !a.closed || a.late {
		t.Fatalf("detach returned with %d in flight, closed=%v, used after close=%v", fc.InFlight.Load(), a.closed, a.late)
	}
	wg.Wait()
	// Detached: the fallback (here 404) serves.
	resp, _ := http.Post(srv.URL, "text/plain", strings.NewReader("x"))
	if resp.StatusCode != 404 {
		t.Fatalf("after detach: %d, want the fallback's 404", resp.StatusCode)
	}
}

// TestAdmin: attach and detach over the admin endpoint.
func TestAdmin(t *testing.T) {
	ac := adapter.NewChain("c", &adaptertest.Chain{}, adapter.Options{})
	srv := httptest.NewServer(adapter.AdminHandler(ac))
	defer srv.Close()
	do := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, srv.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}
	if code, body := do("PUT", "/adapters/http?name=http"); code != 200 || !strings.Contains(body, `"http":"http"`) {
		t.Fatalf("attach: %d %s", code, body)
	}
	if code, body := do("PUT", "/adapters/mqtt?name=http"); code != 400 || !strings.Contains(body, "attaches to http") {
		t.Fatalf("wrong front end: %d %s", code, body)
	}
	if code, body := do("PUT", "/adapters/http?name=nope"); code != 400 || !strings.Contains(body, "unknown protocol adapter") {
		t.Fatalf("unknown: %d %s", code, body)
	}
	if code, body := do("DELETE", "/adapters/http"); code != 200 || !strings.Contains(body, `"http":""`) {
		t.Fatalf("detach: %d %s", code, body)
	}
}
