package sidecar

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
)

// builtDir holds the binaries the tests build, once per package run.
var (
	buildOnce        sync.Once
	builtDir         string
	builtQP, builtFn string
	buildErr         error
	buildTook        time.Duration
)

func TestMain(m *testing.M) {
	code := m.Run()
	if builtDir != "" {
		os.RemoveAll(builtDir)
	}
	os.Exit(code)
}

// binaries builds the queue-proxy ($SPRIGHT_QUEUE_PROXY if set) and httpfn
// once for all tests. Builds are not under a test's own deadline: on an
// empty build cache and a busy machine the queue-proxy alone can take
// minutes (a few seconds once cached).
func binaries(t *testing.T) (qp, fn string) {
	t.Helper()
	buildOnce.Do(func() {
		start := time.Now()
		if builtDir, buildErr = os.MkdirTemp("", "sidecar-test-bin-"); buildErr != nil {
			return
		}
		if builtQP = os.Getenv("SPRIGHT_QUEUE_PROXY"); builtQP == "" {
			if builtQP, buildErr = BuildQueueProxy(builtDir); buildErr != nil {
				return
			}
		}
		builtFn, buildErr = BuildUserFunction(context.Background(), "", builtDir)
		buildTook = time.Since(start)
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	t.Logf("queue-proxy %s, httpfn %s (built in %v)", builtQP, builtFn, buildTook.Round(time.Millisecond))
	return builtQP, builtFn
}

func needRoot(t *testing.T) {
	t.Helper()
	if testing.Short() {
		t.Skip("-short: starts processes in a network namespace")
	}
	if os.Geteuid() != 0 {
		t.Skip("needs root (network namespaces)")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs ip(8)")
	}
}

// TestRealQueueProxy runs Knative's queue-proxy in a network namespace in
// front of httpfn, with a default revision's environment, and checks the
// parts of its contract that EPROXY copies: the readiness probe waits for
// the user container, requests are proxied to USER_PORT, and the probe
// kinds it refuses or answers itself.
func TestRealQueueProxy(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	qpBin, fnBin := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	testStart := time.Now()

	ns, err := CreateNetNS(fmt.Sprintf("sidecar-test-%d", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := ns.Delete(); err != nil {
			t.Error(err)
		}
	})
	env := DefaultQueueProxyEnv()
	env.ReadinessProbe = HTTPGetProbe(env.UserPort, HealthPath)
	qp, err := StartQueueProxy(ctx, SidecarOptions{Binary: qpBin, NetNS: ns, Env: env, LogPath: filepath.Join(dir, "qp.log")})
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if t.Failed() {
			t.Logf("queue-proxy log:\n%s", qp.LogTail(30))
		}
	}()
	defer qp.Stop(0) // it drains for 30s on SIGTERM
	st, err := benchutil.Proc.Stat(qp.PID)
	if err != nil || !strings.HasPrefix(st.Comm, "queue-proxy") {
		t.Errorf("pid %d is %q (%v): ip netns exec should have exec'd the queue-proxy", qp.PID, st.Comm, err)
	}
	client := ns.HTTPClient(15 * time.Second)

	// The user container is not up yet: kubelet's probe is held (the
	// queue-proxy retries the user's probe for up to 10s) and passes as
	// soon as the function answers its readiness endpoint.
	probed := make(chan error, 1)
	go func() { probed <- Probe(ctx, client, qp.Addr) }()
	select {
	case err := <-probed:
		t.Fatalf("readiness probe answered before the function started: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	fn, err := StartUserFunction(ctx, UserFunctionOptions{Binary: fnBin, NetNS: ns, Behavior: "upper", LogPath: filepath.Join(dir, "fn.log")})
	if err != nil {
		t.Fatal(err)
	}
	defer fn.Stop(5 * time.Second)
	if err := <-probed; err != nil {
		t.Fatalf("readiness probe once the function is up: %v", err)
	}

	// A request goes through to the function (upper) on USER_PORT.
	status, body, err := Do(ctx, client, http.MethodPost, "http://"+qp.Addr+"/", nil, []byte("abc"))
	if err != nil || string(body) != "ABC" {
		t.Errorf("POST abc through the queue-proxy: %d %q %v, want 200 \"ABC\"", status, body, err)
	}

	// Probe kinds, as queue-proxy v0.42.2 treats them.
	tests := []struct {
		name       string
		headers    http.Header
		wantStatus int
		wantBody   string
		wantHeader [2]string
	}{
		{name: "activator probe via kubelet UA is refused",
			headers:    http.Header{"K-Network-Probe": {"activator"}, "User-Agent": {KubeletUserAgent}},
			wantStatus: 400, wantBody: "unexpected probe header value: activator\n"},
		{name: "activator's own probe",
			headers:    http.Header{"K-Network-Probe": {"queue"}, "User-Agent": {"Knative-Activator-Probe"}},
			wantStatus: 200, wantBody: "queue"},
		{name: "KIngress probe echoes the hash",
			headers:    http.Header{"K-Network-Probe": {"probe"}, "K-Network-Hash": {"h123"}},
			wantStatus: 200, wantHeader: [2]string{"K-Network-Hash", "h123"}},
		// Surprising but true: without a health checker's User-Agent the
		// probe header alone is not a probe; the request reaches the
		// function (GET with no body: an empty 200).
		{name: "K-Network-Probe without a probe User-Agent is proxied",
			headers:    http.Header{"K-Network-Probe": {"queue"}, "User-Agent": {"curl/8"}},
			wantStatus: 200, wantBody: ""},
	}
	for _, tc := range tests {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+qp.Addr+"/", nil)
		req.Header = tc.headers
		resp, err := client.Do(req)
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		b := make([]byte, 256)
		n, _ := resp.Body.Read(b)
		resp.Body.Close()
		if resp.StatusCode != tc.wantStatus || (tc.wantHeader[0] == "" && string(b[:n]) != tc.wantBody) {
			t.Errorf("%s: got %d %q, want %d %q", tc.name, resp.StatusCode, b[:n], tc.wantStatus, tc.wantBody)
		}
		if k := tc.wantHeader[0]; k != "" && resp.Header.Get(k) != tc.wantHeader[1] {
			t.Errorf("%s: header %s = %q, want %q", tc.name, k, resp.Header.Get(k), tc.wantHeader[1])
		}
	}

	// The autoscaler's scrape on the fixed port 9090.
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/metrics", QueueMetricsPort), nil)
	req.Header.Set("Accept", "application/protobuf")
	if resp, err := client.Do(req); err != nil {
		t.Errorf("metrics scrape: %v", err)
	} else {
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "application/protobuf" {
			t.Errorf("metrics scrape: %d %q", resp.StatusCode, resp.Header.Get("Content-Type"))
		}
	}

	if err := qp.Stop(0); err != nil {
		t.Error(err)
	}
	if err := fn.Stop(5 * time.Second); err != nil {
		t.Error(err)
	}
	if fn.Killed() {
		t.Error("httpfn did not exit on SIGTERM")
	}
	for _, p := range []*Process{qp, fn} {
		if _, err := benchutil.Proc.Stat(p.PID); err == nil {
			t.Errorf("%s (pid %d) still exists after Stop", p.Name, p.PID)
		}
	}
	t.Logf("namespace, queue-proxy and function up, checked and down in %v", time.Since(testStart).Round(time.Millisecond))
}

func TestNetNSDialReachesOnlyItsNamespace(t *testing.T) {
	needRoot(t)
	a, err := CreateNetNS(fmt.Sprintf("sidecar-test-%d-a", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer a.Delete()
	b, err := CreateNetNS(fmt.Sprintf("sidecar-test-%d-b", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Delete()
	ln, err := a.Listen("tcp", "127.0.0.1:8999")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	c, err := a.Dial(ctx, "tcp", "127.0.0.1:8999")
	if err != nil {
		t.Fatalf("dial inside a: %v", err)
	}
	c.Close()
	if c, err := b.Dial(ctx, "tcp", "127.0.0.1:8999"); err == nil {
		c.Close()
		t.Error("dial inside b reached a's listener")
	}
	if _, err := CreateNetNS(a.Name); err == nil {
		t.Error("CreateNetNS of an existing name: want an error")
	}
}

// TestQueueProxyFullDuplex sends 10 KB POSTs, the large bodies of the
// paper's mix, through the queue-proxy with ENABLE_HTTP_FULL_DUPLEX=true
// (what the sidecar benchmark runs with) over one keep-alive connection:
// none may fail. Without full duplex, queue-proxy v0.42.2 aborts a few
// percent of them mid-response (knative/serving#12387: Go's HTTP/1 server
// closes the request body when the response starts, under the transport
// still copying it to the user container, which then drops the backend
// connection), and the client sees "unexpected EOF".
func TestQueueProxyFullDuplex(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	qpBin, fnBin := binaries(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ns, err := CreateNetNS(fmt.Sprintf("sidecar-test-%d-fd", os.Getpid()))
	if err != nil {
		t.Fatal(err)
	}
	defer ns.Delete()
	fn, err := StartUserFunction(ctx, UserFunctionOptions{Binary: fnBin, NetNS: ns, Behavior: "reverse", LogPath: filepath.Join(dir, "fn.log")})
	if err != nil {
		t.Fatal(err)
	}
	defer fn.Stop(5 * time.Second)
	env := DefaultQueueProxyEnv()
	env.EnableHTTPFullDuplex = true
	qp, err := StartQueueProxy(ctx, SidecarOptions{Binary: qpBin, NetNS: ns, Env: env, LogPath: filepath.Join(dir, "qp.log")})
	if err != nil {
		t.Fatal(err)
	}
	defer qp.Stop(0)
	if err := Probe(ctx, ns.HTTPClient(15*time.Second), qp.Addr); err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: ns.Dial}}
	body := []byte(benchutil.MixBody(10 << 10))
	want := []byte(strings.Clone(string(body)))
	for i, j := 0, len(want)-1; i < j; i, j = i+1, j-1 {
		want[i], want[j] = want[j], want[i]
	}
	var failed int
	for i := 0; i < 500; i++ {
		_, got, err := Do(ctx, client, http.MethodPost, "http://"+qp.Addr+"/", nil, body)
		if err != nil || string(got) != string(want) {
			if failed++; failed <= 3 {
				t.Errorf("request %d: %d bytes back, %v", i, len(got), err)
			}
		}
	}
	if failed > 0 {
		t.Errorf("%d of 500 10 KB POSTs failed\nqueue-proxy log:\n%s", failed, qp.LogTail(5))
	}
}
