package coap

import (
	"context"
	"net"
	"os/exec"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/spright-dev/spright/pkg/adapter"
	"github.com/spright-dev/spright/pkg/adapter/adaptertest"
)

// coapClient finds libcoap's coap-client (Debian: libcoap3-bin ships it as
// coap-client-notls / -gnutls / -openssl).
func coapClient(t *testing.T) string {
	t.Helper()
	for _, n := range []string{"coap-client", "coap-client-notls", "coap-client-gnutls", "coap-client-openssl"} {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	t.Skip("needs coap-client (Debian: libcoap3-bin)")
	return ""
}

func start(t *testing.T) (string, *adaptertest.Chain, *adapter.Chain) {
	t.Helper()
	fc := &adaptertest.Chain{SlotSize: 1024}
	ac := adapter.NewChain("motion", fc, adapter.Options{})
	if _, err := ac.AttachNamed(context.Background(), "coap"); err != nil {
		t.Fatal(err)
	}
	s := NewServer(Config{Chains: []*adapter.Chain{ac}, Logger: zaptest.NewLogger(t)})
	a, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	_, port, _ := net.SplitHostPort(a.String())
	return port, fc, ac
}

// run runs coap-client and returns what it printed (libcoap prints the
// payload of a 2.xx answer, and "4.04 ..." style lines for errors).
func run(t *testing.T, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, coapClient(t), append([]string{"-B", "10"}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out))
}

// TestCoapClient: libcoap's coap-client sends confirmable requests; the
// chain's answer comes back, and mistakes get 4.xx codes.
func TestCoapClient(t *testing.T) {
	port, fc, _ := start(t)
	url := "coap://127.0.0.1:" + port
	if got := run(t, "-m", "post", "-t", "json", "-e", `{"sensor":"s1","state":"on"}`, url+"/motion"); got != `{"light":"s1","state":"on"}` {
		t.Fatalf("motion: %q", got)
	}
	if got := run(t, "-m", "put", "-e", "hello", url+"/echo/x"); got != "hello" {
		t.Fatalf("echo: %q", got)
	}
	if got := run(t, "-m", "post", "-e", `{"sensor":"s1"}`, url+"/motion"); !strings.Contains(got, "4.00") || !strings.Contains(got, "motion event needs") {
		t.Fatalf("bad event: %q, want 4.00 with the function's message", got)
	}
	if got := run(t, "-m", "post", "-e", "x", url+"/missing"); !strings.Contains(got, "4.04") {
		t.Fatalf("no route: %q, want 4.04", got)
	}
	if got := run(t, "-m", "delete", url+"/motion"); !strings.Contains(got, "4.05") {
		t.Fatalf("DELETE: %q, want 4.05", got)
	}
	// Wrong options: an unknown critical option (65001, odd = critical),
	// an Accept the chain cannot honour, a Proxy-Uri to a non-proxy.
	if got := run(t, "-m", "post", "-O", "65001,x", "-e", "x", url+"/echo"); !strings.Contains(got, "4.02") {
		t.Fatalf("unknown critical option: %q, want 4.02", got)
	}
	if got := run(t, "-m", "post", "-t", "json", "-A", "cbor", "-e", "{}", url+"/echo"); !strings.Contains(got, "4.06") {
		t.Fatalf("Accept cbor for a json request: %q, want 4.06", got)
	}
	if got := run(t, "-m", "post", "-O", "35,coap://elsewhere/x", "-e", "x", url+"/echo"); !strings.Contains(got, "5.05") {
		t.Fatalf("Proxy-Uri: %q, want 5.05", got)
	}
	// Larger than a slot: 4.13 (the payload arrives by blockwise transfer).
	if got := run(t, "-m", "post", "-b", "512", "-e", strings.Repeat("x", 3000), url+"/echo"); !strings.Contains(got, "4.13") {
		t.Fatalf("oversize: %q, want 4.13", got)
	}
	if fc.Released.Load() != 2 {
		t.Fatalf("released %d answers, want 2", fc.Released.Load())
	}
}

// TestNoAdapter: with the CoAP adapter detached, requests get 5.01.
func TestNoAdapter(t *testing.T) {
	port, _, ac := start(t)
	if err := ac.Detach(context.Background(), adapter.TransportCoAP); err != nil {
		t.Fatal(err)
	}
	if got := run(t, "-m", "post", "-e", "x", "coap://127.0.0.1:"+port+"/echo"); !strings.Contains(got, "5.01") {
		t.Fatalf("detached: %q, want 5.01", got)
	}
}

// TestBlockwise: a payload sent in 256-byte blocks (Block1, libcoap's
// Request-Tag and per-block tokens) is reassembled before the chain sees it.
func TestBlockwise(t *testing.T) {
	port, fc, _ := start(t)
	body := strings.Repeat("0123456789", 90)
	if got := run(t, "-m", "post", "-b", "256", "-e", body, "coap://127.0.0.1:"+port+"/echo"); got != body {
		t.Fatalf("blockwise echo: got %d bytes %.40q…", len(got), got)
	}
	if fc.Calls.Load() != 1 {
		t.Fatalf("chain called %d times, want once", fc.Calls.Load())
	}
}
