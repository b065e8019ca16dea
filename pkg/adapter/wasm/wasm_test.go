package wasm_test

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spright-dev/spright/pkg/adapter"
	"github.com/spright-dev/spright/pkg/adapter/adaptertest"
	"github.com/spright-dev/spright/pkg/adapter/wasm"
)

func testdata(t *testing.T, name string) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func load(t *testing.T, name string, cfg wasm.Config) *wasm.Adapter {
	t.Helper()
	a, err := wasm.Load(testdata(t, name), cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { a.Close() })
	return a
}

// serve runs body through a and the fake chain like a front end would.
func serve(a adapter.Adapter, fc *adaptertest.Chain, body string) (string, error) {
	var got string
	in := &adapter.Inbound{Ctx: context.Background(), Transport: adapter.TransportHTTP, Method: "POST",
		Address: "/", Meta: adapter.Meta{}, Body: strings.NewReader(body), Size: int64(len(body))}
	err := adapter.Serve(a, fc, in, func(out *adapter.Outbound) error {
		got = string(out.Body)
		return nil
	})
	return got, err
}

// TestModulesMatchSource: the committed .wasm files are what wat2wasm
// makes of the .wat files next to them.
func TestModulesMatchSource(t *testing.T) {
	w2w, err := exec.LookPath("wat2wasm")
	if err != nil {
		t.Skip("wat2wasm not installed (Debian package wabt): not checking testdata/*.wasm against their .wat sources")
	}
	wats, _ := filepath.Glob("testdata/*.wat")
	if len(wats) == 0 {
		t.Fatal("no testdata/*.wat")
	}
	for _, wat := range wats {
		out := filepath.Join(t.TempDir(), "m.wasm")
		if b, err := exec.Command(w2w, wat, "-o", out).CombinedOutput(); err != nil {
			t.Fatalf("wat2wasm %s: %v\n%s", wat, err, b)
		}
		want, _ := os.ReadFile(out)
		have, err := os.ReadFile(strings.TrimSuffix(wat, ".wat") + ".wasm")
		if err != nil || !bytes.Equal(have, want) {
			t.Errorf("%s.wasm is stale or missing (%v): run go generate ./pkg/adapter/wasm", strings.TrimSuffix(wat, ".wat"), err)
		}
	}
}

// TestUpper: the module picks the topic from the "topic:" prefix, upper-
// cases the payload, and wraps the chain's answer in [...].
func TestUpper(t *testing.T) {
	a := load(t, "upper.wasm", wasm.Config{})
	if a.Transport() != adapter.TransportHTTP || !strings.HasPrefix(a.Name(), "wasm:") {
		t.Fatalf("name %q transport %q", a.Name(), a.Transport())
	}
	fc := &adaptertest.Chain{}
	got, err := serve(a, fc, "echo:hello, World!")
	if err != nil || got != "[HELLO, WORLD!]" {
		t.Fatalf("got %q, %v", got, err)
	}
	if tp := fc.Topics(); len(tp) != 1 || tp[0] != "echo" {
		t.Fatalf("chain saw topics %q", tp)
	}
	if got, err := serve(a, fc, "echo:"); err != nil || got != "[]" {
		t.Fatalf("empty payload: %q, %v", got, err)
	}
	// The chain's own errors still come through as errors.
	if _, err := serve(a, fc, "missing:x"); err == nil {
		t.Fatal("topic missing: no error")
	} else if st, _ := adapter.StatusOf(err); st != 404 {
		t.Fatalf("topic missing: %v", err)
	}
	if fc.Released.Load() != 2 {
		t.Fatalf("released %d results, want 2", fc.Released.Load())
	}

	// Concurrent calls each get their own instance: no crosstalk.
	var wg sync.WaitGroup
	for i := 0; i < 64; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			p := fmt.Sprintf("payload-%d-%s", i, strings.Repeat("x", i*37))
			got, err := serve(a, fc, "echo:"+p)
			if want := "[" + strings.ToUpper(p) + "]"; err != nil || got != want {
				t.Errorf("%d: got %q, %v; want %q", i, got, err, want)
			}
		}()
	}
	wg.Wait()
}

// TestMisbehavingModule: traps, endless loops, out-of-bounds outputs and
// runaway memory each fail their own request with a clear HTTP error, and
// the same adapter serves the next good request.
func TestMisbehavingModule(t *testing.T) {
	const timeout = 100 * time.Millisecond
	a := load(t, "faulty.wasm", wasm.Config{Timeout: timeout, MemoryLimitPages: 32})
	ac := adapter.NewChain("c", &adaptertest.Chain{}, adapter.Options{})
	if err := ac.Point(adapter.TransportHTTP).Attach(context.Background(), a); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(adapter.HTTPHandler(ac, nil))
	defer srv.Close()
	post := func(body string) (int, string) {
		resp, err := http.Post(srv.URL, "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, strings.TrimSpace(string(b))
	}
	for _, c := range []struct {
		body, want string
		code       int
	}{
		{"trap", "adapter trapped in adapt_request: wasm error: unreachable", 502},
		{"loop", "adapter timed out after 100ms in adapt_request", 504},
		{"oob", "adapter returned a bad output: adapt_request result (ptr 0xffff0000, len 16) is outside its memory", 502},
		{"grow", "adapter trapped in adapt_request: wasm error: unreachable", 502},
	} {
		start := time.Now()
		code, msg := post(c.body)
		if code != c.code || !strings.HasPrefix(msg, c.want) {
			t.Errorf("%s: %d %q, want %d %q…", c.body, code, msg, c.code, c.want)
		}
		if d := time.Since(start); d > 10*timeout {
			t.Errorf("%s took %v (deadline %v)", c.body, d, timeout)
		}
		if code, msg := post("fine after " + c.body); code != 200 || msg != "fine after "+c.body {
			t.Errorf("good request after %s: %d %q", c.body, code, msg)
		}
	}

	// Good and bad requests interleaved from many goroutines.
	var wg sync.WaitGroup
	for i := 0; i < 32; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			bad := []string{"trap", "oob", "loop"}[i%3]
			if code, _ := post(bad); code < 500 {
				t.Errorf("%s: %d", bad, code)
			}
			good := fmt.Sprintf("fine %d", i) // not t, l, o or g first
			if code, msg := post(good); code != 200 || msg != good {
				t.Errorf("%s: %d %q", good, code, msg)
			}
		}()
	}
	wg.Wait()

	// A body without the "topic:" prefix makes upper trap: 502, not a crash.
	up := load(t, "upper.wasm", wasm.Config{})
	if _, err := serve(up, &adaptertest.Chain{}, "no prefix"); err == nil {
		t.Fatal("no error")
	} else if st, msg := adapter.StatusOf(err); st != 502 || !strings.Contains(msg, "adapter trapped") {
		t.Fatalf("%d %s", st, msg)
	}
	// Over MaxBody: 413 before the module runs.
	small := load(t, "upper.wasm", wasm.Config{MaxBody: 8})
	if _, err := serve(small, &adaptertest.Chain{}, "echo:0123456789"); err == nil {
		t.Fatal("no error")
	} else if st, _ := adapter.StatusOf(err); st != 413 {
		t.Fatalf("over MaxBody: %v", err)
	}
}

// TestLoadErrors: what is not a module, or not an adapter module, is
// refused at attach time with a message saying why.
func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	text := filepath.Join(dir, "text.wasm")
	os.WriteFile(text, []byte("hello, I am not wasm"), 0o644)
	broken := filepath.Join(dir, "broken.wasm")
	os.WriteFile(broken, []byte("\x00asm\x01\x00\x00\x00\xff\xff"), 0o644)
	for _, c := range []struct{ path, want string }{
		{text, "not a WebAssembly module"},
		{testdata(t, "upper.wat"), "not a WebAssembly module"},
		{broken, "invalid WebAssembly module"},
		{filepath.Join(dir, "nope.wasm"), "no such file"},
		{testdata(t, "imports.wasm"), "module imports wasi_snapshot_preview1.fd_write: custom adapters get no host functions"},
		{testdata(t, "noabi.wasm"), "module does not export adapt_request(i32, i32) i64"},
	} {
		a, err := wasm.Load(c.path, wasm.Config{})
		if err == nil {
			a.Close()
			t.Errorf("%s: loaded", c.path)
		} else if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", c.path, err, c.want)
		}
	}
	if _, err := adapter.New("wasm", adapter.Options{}); err == nil || !strings.Contains(err.Error(), "needs a module") {
		t.Errorf("wasm without a module: %v", err)
	}
}

// TestAdminAttachUnderTraffic: attach the wasm adapter over the admin
// endpoint while requests flow, try to replace it with a broken module,
// detach, re-attach: every request is answered, by whichever adapter it
// started with.
func TestAdminAttachUnderTraffic(t *testing.T) {
	fc := &adaptertest.Chain{Delay: 10 * time.Millisecond}
	ac := adapter.NewChain("c", fc, adapter.Options{})
	admin := httptest.NewServer(adapter.AdminHandler(ac))
	defer admin.Close()
	srv := httptest.NewServer(adapter.HTTPHandler(ac, nil)) // nothing attached: plain HTTP
	defer srv.Close()
	defer ac.Close()

	do := func(method, path string) (int, string) {
		req, _ := http.NewRequest(method, admin.URL+path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		return resp.StatusCode, string(b)
	}

	// Under wasm "slow:abc" → topic slow, payload ABC → "[ABC]"; under plain
	// HTTP the topic header says slow and the body comes back as it is.
	var wasmN, plainN, failed atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := 0; i < 8; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				req, _ := http.NewRequest("POST", srv.URL, strings.NewReader("slow:abc"))
				req.Header.Set(adapter.TopicHeader, "slow")
				resp, err := http.DefaultClient.Do(req)
				if err != nil {
					failed.Add(1)
					t.Error(err)
					return
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				switch {
				case resp.StatusCode == 200 && string(b) == "[ABC]":
					wasmN.Add(1)
				case resp.StatusCode == 200 && string(b) == "slow:abc":
					plainN.Add(1)
				default:
					failed.Add(1)
					t.Errorf("request lost: %d %q", resp.StatusCode, b)
				}
			}
		}()
	}
	waitFor := func(n *atomic.Int64, what string) {
		t.Helper()
		target := n.Load() + 20
		for deadline := time.Now().Add(10 * time.Second); n.Load() < target; {
			if time.Now().After(deadline) {
				t.Fatalf("no %s answers", what)
			}
			time.Sleep(time.Millisecond)
		}
	}

	mod := testdata(t, "upper.wasm")
	attach := "/adapters/http?name=wasm&module=" + url.QueryEscape(mod)
	waitFor(&plainN, "plain")
	for round := 0; round < 2; round++ { // attach, detach, re-attach, detach
		if code, body := do("PUT", attach); code != 200 || !strings.Contains(body, `"http":"wasm:`+mod+`"`) {
			t.Fatalf("attach: %d %s", code, body)
		}
		waitFor(&wasmN, "wasm")
		// A broken module is refused and the attached one stays.
		if code, body := do("PUT", "/adapters/http?name=wasm:"+url.QueryEscape(testdata(t, "upper.wat"))); code != 400 || !strings.Contains(body, "not a WebAssembly module") {
			t.Fatalf("attach .wat: %d %s", code, body)
		}
		if code, body := do("PUT", "/adapters/mqtt?name=wasm&module="+url.QueryEscape(mod)); code != 400 || !strings.Contains(body, "attaches to http") {
			t.Fatalf("attach to mqtt: %d %s", code, body)
		}
		waitFor(&wasmN, "wasm")
		if code, body := do("DELETE", "/adapters/http"); code != 200 || !strings.Contains(body, `"http":""`) {
			t.Fatalf("detach: %d %s", code, body)
		}
		waitFor(&plainN, "plain")
	}
	close(stop)
	wg.Wait()
	if failed.Load() != 0 {
		t.Fatalf("%d requests failed", failed.Load())
	}
	if fc.InFlight.Load() != 0 || fc.Calls.Load() != fc.Released.Load() {
		t.Fatalf("chain: %d in flight, %d calls, %d released", fc.InFlight.Load(), fc.Calls.Load(), fc.Released.Load())
	}
	t.Logf("%d answered by wasm, %d by plain HTTP", wasmN.Load(), plainN.Load())
}
