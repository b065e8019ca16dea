package e2e

import (
	"fmt"
	"strings"
	"sync"
	"testing"
)

const helloYAML = `
name: hello
timeout: 10s
pool: {slots: 256, slotSize: 4096}
routes: {"*": [upper]}
functions:
  - name: upper
    workers: 4
    routes: {"*": [reverse]}
  - name: reverse
    workers: 4
`

// TestHelloChain: "abc" through upper and reverse, each in its own netns,
// returns "CBA"; the gateway dispatched once per request (the functions
// routed among themselves), the eBPF counters agree, every function saw its
// input inside the pool mapping (the sample behaviours fail the request
// otherwise) and the pool is whole afterwards.
func TestHelloChain(t *testing.T) { testHelloChain(t, helloYAML) }

// TestHelloChainRunToCompletion is TestHelloChain with workers: 1, where
// each function's reading goroutine handles every descriptor itself.
func TestHelloChainRunToCompletion(t *testing.T) {
	testHelloChain(t, strings.ReplaceAll(helloYAML, "workers: 4", "workers: 1"))
}

func testHelloChain(t *testing.T, yaml string) {
	c := startChain(t, yaml)
	for _, p := range c.Procs() {
		if p.Netns() == "" {
			t.Fatalf("%s runs without a netns", p.Function)
		}
	}
	if c.Procs()[0].Netns() == c.Procs()[1].Netns() {
		t.Fatal("functions share a netns")
	}
	free := c.Chain.Pool().FreeCount()
	const workers, each = 8, 50
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := 0; i < each; i++ {
				in := fmt.Sprintf("abc-%d-%d", w, i)
				code, body, err := post(c.url, in)
				want := reverseString(strings.ToUpper(in))
				if err != nil || code != 200 || body != want {
					errs <- fmt.Errorf("POST %q: %d %q %v, want 200 %q", in, code, body, err, want)
					return
				}
			}
		}(w)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	code, body, err := post(c.url, "abc")
	if err != nil || code != 200 || body != "CBA" {
		t.Fatalf("POST abc = %d %q %v", code, body, err)
	}
	const n = workers*each + 1
	if got := c.Chain.Dispatched.Load(); got != n {
		t.Errorf("gateway dispatched %d descriptors for %d requests, want exactly one each", got, n)
	}
	if got := c.Chain.Returned.Load(); got != n {
		t.Errorf("gateway received %d descriptors back, want %d", got, n)
	}
	// The kernel's view: every instance sent exactly one descriptor per request.
	all, err := c.Gateway.Datapath().AllMetrics()
	if err != nil {
		t.Fatal(err)
	}
	for id, m := range all {
		if m.Sent != n {
			t.Errorf("instance %d sent %d descriptors (eBPF count), want %d", id, m.Sent, n)
		}
		if m.Inflight != 0 {
			t.Errorf("instance %d in-flight %d after the load", id, m.Inflight)
		}
	}
	if len(all) != 3 {
		t.Errorf("eBPF metrics for %d instances, want 3 (gateway + 2 functions)", len(all))
	}
	if got := c.Chain.Pool().FreeCount(); got != free {
		t.Errorf("pool free count %d, want %d", got, free)
	}
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	up, rev := c.stats(t, "upper", 0), c.stats(t, "reverse", 0)
	if up["handled"] != n || up["forwarded"] != n || up["returned"] != 0 || up["failed"] != 0 {
		t.Errorf("upper stats %v: want %d handled and forwarded straight to reverse", up, n)
	}
	if rev["handled"] != n || rev["returned"] != n || rev["failed"] != 0 {
		t.Errorf("reverse stats %v: want %d handled and returned", rev, n)
	}
}

func reverseString(s string) string {
	b := []byte(s)
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}
