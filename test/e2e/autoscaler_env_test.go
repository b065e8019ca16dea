package e2e

// The pieces of a one-pod Knative revision on this machine, for the
// autoscaler and probe tests: the node agent (an in-process gateway), a
// user container (an in-test HTTP server), and the real eproxy binary with
// the environment Knative gives queue-proxy.

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"k8s.io/apimachinery/pkg/types"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/spright-dev/spright/pkg/eproxy"
	"github.com/spright-dev/spright/pkg/gateway"
)

var (
	eproxyOnce sync.Once
	eproxyBin  string
	eproxyErr  error
)

// eproxyBinary builds cmd/eproxy once, next to the spright binary (TestMain
// removes that directory).
func eproxyBinary(t *testing.T) string {
	t.Helper()
	eproxyOnce.Do(func() {
		out := filepath.Join(filepath.Dir(spright), "eproxy")
		build := exec.Command("go", "build", "-o", out, "github.com/spright-dev/spright/cmd/eproxy")
		var stderr bytes.Buffer
		build.Stdout, build.Stderr = &stderr, &stderr
		if err := build.Run(); err != nil {
			eproxyErr = fmt.Errorf("building eproxy: %v\n%s", err, stderr.String())
			return
		}
		eproxyBin = out
	})
	if eproxyErr != nil {
		t.Fatal(eproxyErr)
	}
	return eproxyBin
}

// startPodAgent runs the node agent (a gateway with no chains) with its own
// control socket and pin directory. reporter, if set, makes it push the
// Stats of registered pods (EnableStatPush).
func startPodAgent(t *testing.T, name string, reporter *eproxy.Reporter, adjust ...func(*gateway.Config)) *gateway.Gateway {
	t.Helper()
	needRoot(t)
	sock := filepath.Join(t.TempDir(), "control.sock")
	cfg := gateway.Config{
		ControlSocket: sock,
		PinDir:        fmt.Sprintf("/sys/fs/bpf/spright-e2e-%d-%s", os.Getpid(), name),
		Logger:        zaptest.NewLogger(t),
	}
	for _, f := range adjust {
		f(&cfg)
	}
	g, err := gateway.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if reporter != nil {
		g.EnableStatPush(reporter)
		// The test revision is not scraped in push mode (TBC -1).
		g.PushStats(types.NamespacedName{Namespace: "default", Name: "hello-00001"})
	}
	if err := g.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := g.Close(); err != nil {
			t.Errorf("gateway close: %v", err)
		}
		g.Unpin()
	})
	return g
}

// userContainer is the revision's container: every request is held for a
// while (a slow handler), /ready answers readiness probes.
type userContainer struct {
	addr string // 127.0.0.1:port
	port string

	hold     func(n int64) time.Duration
	notReady atomic.Bool // /ready answers 503

	served, inflight, maxInflight atomic.Int64

	mu  sync.Mutex
	l   net.Listener
	srv *http.Server
}

func newUserContainer(t *testing.T, hold func(n int64) time.Duration) *userContainer {
	t.Helper()
	u := &userContainer{hold: hold}
	port := freePortOn(t, "127.0.0.1")
	u.port = port
	u.addr = net.JoinHostPort("127.0.0.1", port)
	return u
}

func (u *userContainer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == "/ready" {
		if u.notReady.Load() {
			http.Error(w, "not ready", http.StatusServiceUnavailable)
			return
		}
		io.WriteString(w, "ready")
		return
	}
	n := u.inflight.Add(1)
	for {
		m := u.maxInflight.Load()
		if n <= m || u.maxInflight.CompareAndSwap(m, n) {
			break
		}
	}
	io.Copy(io.Discard, r.Body)
	if u.hold != nil {
		time.Sleep(u.hold(n))
	}
	u.inflight.Add(-1)
	u.served.Add(1)
	io.WriteString(w, "ok")
}

// start listens on the container's port (again, after stop).
func (u *userContainer) start(t *testing.T) {
	t.Helper()
	l, err := net.Listen("tcp", u.addr)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: u}
	u.mu.Lock()
	u.l, u.srv = l, srv
	u.mu.Unlock()
	go srv.Serve(l)
	t.Cleanup(u.stop)
}

// stop closes the listener and every connection: the port refuses.
func (u *userContainer) stop() {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.srv != nil {
		u.srv.Close()
		u.srv, u.l = nil, nil
	}
}

func freePortOn(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return strconv.Itoa(l.Addr().(*net.TCPAddr).Port)
}

// eproxyProc is a running eproxy binary.
type eproxyProc struct {
	cmd                             *exec.Cmd
	ip                              string
	traffic, stat, prom, admin      string // host:port
	log                             *syncBuffer
	done                            chan struct{}
	exitErr                         error
	namespace, revision, pod, confg string
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// eproxyEnv is what Knative's revision reconciler gives queue-proxy, plus
// SPRIGHT's settings. ip is the pod IP stand-in (every listener binds it).
func eproxyEnv(t *testing.T, ip, controlSocket string, user *userContainer) map[string]string {
	t.Helper()
	return map[string]string{
		"SERVING_NAMESPACE":             "default",
		"SERVING_SERVICE":               "hello",
		"SERVING_CONFIGURATION":         "hello",
		"SERVING_REVISION":              "hello-00001",
		"SERVING_POD":                   "hello-00001-deployment-5f7d9c8b6-x7k2p",
		"SERVING_POD_IP":                ip,
		"CONTAINER_CONCURRENCY":         "10",
		"QUEUE_SERVING_PORT":            freePortOn(t, ip),
		"USER_PORT":                     user.port,
		"REVISION_TIMEOUT_SECONDS":      "300",
		"SERVING_LOGGING_LEVEL":         "info",
		"SPRIGHT_CONTROL_SOCKET":        controlSocket,
		"SPRIGHT_BIND_ADDRESS":          ip,
		"SPRIGHT_METRICS_PORT":          "9090",
		"SPRIGHT_PROMETHEUS_PORT":       freePortOn(t, ip),
		"SPRIGHT_ADMIN_PORT":            freePortOn(t, ip),
		"SPRIGHT_DRAIN_QUIET_SECONDS":   "1",
		"SPRIGHT_DRAIN_TIMEOUT_SECONDS": "10",
	}
}

// startEproxy runs the eproxy binary with env and waits until its traffic
// and stat ports accept connections. It is stopped with SIGTERM at cleanup.
func startEproxy(t *testing.T, env map[string]string, adjust ...func(*exec.Cmd)) *eproxyProc {
	t.Helper()
	ip := env["SPRIGHT_BIND_ADDRESS"]
	p := &eproxyProc{
		ip:        ip,
		traffic:   net.JoinHostPort(ip, env["QUEUE_SERVING_PORT"]),
		stat:      net.JoinHostPort(ip, env["SPRIGHT_METRICS_PORT"]),
		prom:      net.JoinHostPort(ip, env["SPRIGHT_PROMETHEUS_PORT"]),
		admin:     net.JoinHostPort(ip, env["SPRIGHT_ADMIN_PORT"]),
		log:       &syncBuffer{},
		done:      make(chan struct{}),
		namespace: env["SERVING_NAMESPACE"], revision: env["SERVING_REVISION"], pod: env["SERVING_POD"], confg: env["SERVING_CONFIGURATION"],
	}
	cmd := exec.Command(eproxyBinary(t))
	cmd.Env = []string{"PATH=" + os.Getenv("PATH")}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = p.log, p.log
	for _, f := range adjust {
		f(cmd)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	p.cmd = cmd
	go func() { p.exitErr = cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		p.stop(t)
		if t.Failed() || testing.Verbose() {
			t.Logf("eproxy output:\n%s", p.log.String())
		}
	})
	deadline := time.Now().Add(10 * time.Second)
	for _, addr := range []string{p.traffic, p.stat} {
		for {
			c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
			if err == nil {
				c.Close()
				break
			}
			select {
			case <-p.done:
				t.Fatalf("eproxy exited (%v):\n%s", p.exitErr, p.log.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("eproxy not listening on %s after 10 s: %v\n%s", addr, err, p.log.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	return p
}

// stop sends SIGTERM and waits for the drain; SIGKILL after 15 s.
func (p *eproxyProc) stop(t *testing.T) {
	select {
	case <-p.done:
		return
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(15 * time.Second):
		t.Errorf("eproxy did not exit 15 s after SIGTERM; killing it")
		p.cmd.Process.Kill()
		<-p.done
	}
}

// agentLost reports EPROXY's log line for a failed registration with the
// node agent (it then serves without eBPF stats).
func (p *eproxyProc) agentLost() bool {
	return strings.Contains(p.log.String(), "node agent unreachable")
}

// promCounters reads EPROXY's Prometheus text (:9091 in a pod) and returns
// the eproxy_* samples by metric name.
func (p *eproxyProc) promCounters(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := http.Get("http://" + p.prom + "/metrics")
	if err != nil {
		t.Fatalf("prometheus endpoint: %v", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		b, _ := io.ReadAll(resp.Body)
		t.Fatalf("prometheus endpoint: %d %s", resp.StatusCode, b)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if !strings.HasPrefix(line, "eproxy_") {
			continue
		}
		name := line
		if i := strings.IndexAny(line, "{ "); i >= 0 {
			name = line[:i]
		}
		f := strings.Fields(line)
		v, err := strconv.ParseFloat(f[len(f)-1], 64)
		if err != nil {
			t.Fatalf("bad prometheus line %q", line)
		}
		out[name] = v
	}
	return out
}

// loadResult is what the load generator did.
type loadResult struct {
	issued, ok, failed int64
	firstErr           error

	mu   sync.Mutex
	sent []time.Time // when each answered request was sent
}

// sentIn counts answered requests sent in (from, to].
func (r *loadResult) sentIn(from, to time.Time) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, s := range r.sent {
		if s.After(from) && !s.After(to) {
			n++
		}
	}
	return n
}

// holdLoad keeps `concurrency` requests open at once through url for d:
// each worker sends requests back to back on its own keep-alive
// connection. It returns when the last request has been answered.
func holdLoad(ctx context.Context, url string, concurrency int, d time.Duration) *loadResult {
	tr := &http.Transport{MaxIdleConnsPerHost: concurrency, MaxConnsPerHost: concurrency, IdleConnTimeout: time.Minute}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr, Timeout: 30 * time.Second}
	res := &loadResult{}
	var errOnce sync.Once
	stop := time.Now().Add(d)
	var wg sync.WaitGroup
	for w := 0; w < concurrency; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(stop) && ctx.Err() == nil {
				atomic.AddInt64(&res.issued, 1)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				sent := time.Now()
				resp, err := client.Do(req)
				if err == nil {
					b, rerr := io.ReadAll(resp.Body)
					resp.Body.Close()
					if rerr != nil {
						err = rerr
					} else if resp.StatusCode != http.StatusOK || string(b) != "ok" {
						err = fmt.Errorf("%d %q", resp.StatusCode, b)
					}
				}
				if err != nil {
					atomic.AddInt64(&res.failed, 1)
					errOnce.Do(func() { res.firstErr = err })
					time.Sleep(50 * time.Millisecond)
					continue
				}
				atomic.AddInt64(&res.ok, 1)
				res.mu.Lock()
				res.sent = append(res.sent, sent)
				res.mu.Unlock()
			}
		}()
	}
	wg.Wait()
	return res
}
