package e2e

import (
	"fmt"
	"net/http"
	"path/filepath"
	"testing"

	"github.com/spright-dev/spright/pkg/standalone"
)

// TestWasmAdapterOnRunningChain: a custom adapter compiled to WebAssembly
// is attached to a running chain through the admin endpoint, maps
// "topic:payload" requests (upper-casing the payload) and wraps answers;
// detaching it restores plain HTTP. The chain never stops.
func TestWasmAdapterOnRunningChain(t *testing.T) {
	admin := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	c := startChainWith(t, helloYAML, func(o *standalone.Options) { o.AdminListen = admin })
	module, err := filepath.Abs("../../pkg/adapter/wasm/testdata/upper.wasm")
	if err != nil {
		t.Fatal(err)
	}
	do := func(method, url string) int {
		req, _ := http.NewRequest(method, url, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := do(http.MethodPut, "http://"+admin+"/adapters/http?name=wasm&module="+module); code/100 != 2 {
		t.Fatalf("attach: %d", code)
	}
	// upper.wasm upper-cases "abc" (so upper sees "ABC"), reverse makes
	// "CBA", and the module wraps the answer.
	if code, body, err := post(c.url, "any:abc"); err != nil || code != 200 || body != "[CBA]" {
		t.Fatalf("through the wasm adapter: %d %q %v", code, body, err)
	}
	if code := do(http.MethodDelete, "http://"+admin+"/adapters/http"); code/100 != 2 {
		t.Fatalf("detach: %d", code)
	}
	if code, body, err := post(c.url, "abc"); err != nil || code != 200 || body != "CBA" {
		t.Fatalf("after detach: %d %q %v", code, body, err)
	}
}
