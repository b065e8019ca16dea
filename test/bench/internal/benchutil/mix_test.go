package benchutil

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestParseMix(t *testing.T) {
	mix, err := ParseMix("100:98, 10240:2")
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(mix, PaperMix) {
		t.Errorf("ParseMix = %+v, want %+v", mix, PaperMix)
	}
	if got := DescribeMix(mix); got != "98% 100 B / 2% 10240 B" {
		t.Errorf("DescribeMix = %q", got)
	}
	for _, bad := range []string{"", "100", "x:1", "100:0", "100:-1", "-1:1", "100:1,", "100:NaN"} {
		if m, err := ParseMix(bad); err == nil {
			t.Errorf("ParseMix(%q) = %+v, want an error", bad, m)
		}
	}
}

func TestMixBody(t *testing.T) {
	for _, n := range []int{0, 1, 25, 26, 27, 100, 10240} {
		b := MixBody(n)
		if len(b) != n || !strings.HasPrefix(MixPattern+MixPattern, b[:min(n, 52)]) {
			t.Errorf("MixBody(%d) = %q...", n, b[:min(n, 60)])
		}
	}
}

func TestMixScript(t *testing.T) {
	s, err := MixScript(PaperMix, 42)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		`wrk.method = "POST"`,
		"local sizes = {100, 10240}",
		"local cumulative = {0.98, 1}",
		"math.randomseed(42 + ",
		`local pattern = "` + MixPattern + `"`,
		"function request()",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("script lacks %q:\n%s", want, s)
		}
	}
	if _, err := MixScript(nil, 1); err == nil {
		t.Error("empty mix: want an error")
	}
	if strings.Contains(s, "wrk.headers[\"Host\"]") {
		t.Error("MixScript sets a Host header")
	}
	h, err := MixScriptHeaders(PaperMix, 42, map[string]string{"Host": "a.ns.example.com", "X-Chain-Next": "b"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h, "wrk.headers[\"Host\"] = \"a.ns.example.com\"\nwrk.headers[\"X-Chain-Next\"] = \"b\"\n") {
		t.Errorf("headers not set, in name order:\n%s", h)
	}
	if _, err := MixScriptHeaders(PaperMix, 1, map[string]string{"X": "a\r\nEvil: 1"}); err == nil {
		t.Error("a header value with a line break: want an error")
	}
}

// TestMixScriptUnderWrk runs the script in wrk against a server that
// records body sizes: every body must be one of the mix's, and the large
// one must come up about as often as its weight says. It also runs wrk
// through a Prefix (env(1), which execs it), as the sidecar benchmark
// does with ip netns exec.
func TestMixScriptUnderWrk(t *testing.T) {
	wrk, err := exec.LookPath("wrk")
	if err != nil {
		t.Skip("wrk not installed")
	}
	if testing.Short() {
		t.Skip("runs wrk for 2s")
	}
	var mu sync.Mutex
	counts := map[int]int{}
	var bad []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		defer mu.Unlock()
		counts[len(b)]++
		if r.Method != http.MethodPost || string(b) != MixBody(len(b)) || r.ContentLength != int64(len(b)) ||
			r.Host != "fn.ns.example.com" || r.Header.Get("X-Chain-Next") != "next" {
			if len(bad) < 3 {
				bad = append(bad, r.Method+" "+r.Host+" "+string(b[:min(len(b), 40)]))
			}
		}
	}))
	defer srv.Close()
	mix := []Payload{{Size: 100, Weight: 0.9}, {Size: 10240, Weight: 0.1}}
	script := filepath.Join(t.TempDir(), "mix.lua")
	// With a Host header (the cluster scenario reaches host-routed
	// services through the ingress's address).
	if err := WriteMixScriptHeaders(script, mix, 7, map[string]string{"Host": "fn.ns.example.com", "X-Chain-Next": "next"}); err != nil {
		t.Fatal(err)
	}
	res, err := RunWrk(context.Background(), WrkOptions{
		Prefix: []string{"env"}, Binary: wrk, Threads: 2, Connections: 4,
		Duration: 2 * time.Second, Script: script, URL: srv.URL + "/",
	})
	if err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(bad) > 0 {
		t.Errorf("unexpected requests: %q", bad)
	}
	total := counts[100] + counts[10240]
	if total < 1000 || len(counts) != 2 {
		t.Fatalf("body sizes seen: %v (wrk: %d requests)", counts, res.Requests)
	}
	// 10% large, with thousands of draws: well within 7%..13%.
	if f := float64(counts[10240]) / float64(total); f < 0.07 || f > 0.13 {
		t.Errorf("large bodies: %.3f of %d requests, want about 0.1", f, total)
	}
	if res.CPU <= 0 {
		t.Errorf("wrk CPU through the prefix = %v", res.CPU)
	}
}
