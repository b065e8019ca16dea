package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spright-dev/spright/pkg/gateway"
)

// podNetns is a pod stand-in: a named network namespace joined to the host
// by a veth pair (host .1, pod .2 of a /29), the host as its default
// gateway, as a CNI bridge plugin leaves a pod. The host has a second
// address, clientIP (.3), standing in for another pod (the ingress):
// its packets reach the pod through its eth0, as in a cluster.
type podNetns struct {
	name                    string
	hostIP, podIP, clientIP string
	hostIf                  string
}

// podNetnsSeq tells apart the pods of one test process (a deleted
// namespace's veth may still be going away when the next test starts).
var podNetnsSeq atomic.Int32

func newPodNetns(t *testing.T, subnet int) *podNetns {
	t.Helper()
	seq := int(podNetnsSeq.Add(1))
	subnet = (subnet+seq)%250 + 1
	p := &podNetns{name: fmt.Sprintf("spright-steer-%d-%d", os.Getpid(), seq),
		hostIP: fmt.Sprintf("10.251.%d.1", subnet), podIP: fmt.Sprintf("10.251.%d.2", subnet), clientIP: fmt.Sprintf("10.251.%d.3", subnet),
		hostIf: fmt.Sprintf("sst%d-%d", os.Getpid()%100000, seq)}
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", p.name)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", p.name).Run() })
	run("link", "add", p.hostIf, "type", "veth", "peer", "name", "eth0", "netns", p.name)
	run("addr", "add", p.hostIP+"/29", "dev", p.hostIf)
	run("addr", "add", p.clientIP+"/29", "dev", p.hostIf)
	run("link", "set", p.hostIf, "up")
	run("-n", p.name, "link", "set", "lo", "up")
	run("-n", p.name, "addr", "add", p.podIP+"/29", "dev", "eth0")
	run("-n", p.name, "link", "set", "eth0", "up")
	run("-n", p.name, "route", "add", "default", "via", p.hostIP)
	return p
}

// do runs f on a thread inside the namespace: sockets it opens live there.
// The thread is switched back before it is unlocked: a thread left locked
// in another namespace would end with its goroutine, except the process's
// main thread, which Go keeps (wedged) — and /proc/self/net, which other
// tests read (the host's forwarding counter), shows the main thread's
// namespace.
func (p *podNetns) do(t *testing.T, f func()) {
	t.Helper()
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(orig)
		fd, err := unix.Open("/run/netns/"+p.name, unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		defer unix.Close(fd)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- err
			return
		}
		f()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- fmt.Errorf("back to the host namespace: %w", err) // the thread stays locked and ends
			return
		}
		runtime.UnlockOSThread()
		errc <- nil
	}()
	if err := <-errc; err != nil {
		t.Fatal(err)
	}
}

// TestEproxySteersPlainTraffic runs the real EPROXY in a pod namespace with
// the node agent outside: a client that sent traffic once gets its next
// connections steered by the kernel straight to the user container (which
// then sees the client's own address and port), every request is counted
// exactly once in EPROXY's metrics, and Knative's probes from the node (the
// pod's default gateway) keep reaching EPROXY.
func TestEproxySteersPlainTraffic(t *testing.T) {
	// The user container, listening on every address of the pod.
	var mu sync.Mutex
	seen := map[string]int{} // RemoteAddr → requests
	pod, ep, agent := startSteeredPod(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		mu.Lock()
		seen[r.RemoteAddr]++
		mu.Unlock()
		io.WriteString(w, "user")
	}))

	probe := func() {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+net.JoinHostPort(pod.podIP, "8012")+"/", nil)
		req.Header.Set("K-Network-Probe", "queue")
		req.Header.Set("User-Agent", "kube-probe/1.36")
		resp, err := (&http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}).Do(req)
		if err != nil {
			t.Fatalf("probe from the node: %v", err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "queue" {
			t.Fatalf("probe from the node answered %d %q, want 200 \"queue\" from EPROXY", resp.StatusCode, b)
		}
	}
	probe()

	// A client on another address of the pod network (standing in for the
	// ingress): its packets come in through the pod's eth0.
	type conn struct {
		c     net.Conn
		br    *bufio.Reader
		local string
	}
	dial := func() *conn {
		var c net.Conn
		var err error
		c, err = (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(pod.clientIP)}}).Dial("tcp", net.JoinHostPort(pod.podIP, "8012"))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return &conn{c: c, br: bufio.NewReader(c), local: c.LocalAddr().String()}
	}
	sent := 0
	send := func(c *conn) *http.Response {
		t.Helper()
		c.c.SetDeadline(time.Now().Add(5 * time.Second))
		fmt.Fprintf(c.c, "POST / HTTP/1.1\r\nHost: hello.default\r\nContent-Length: 3\r\n\r\nabc")
		resp, err := http.ReadResponse(c.br, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(b) != "user" {
			t.Fatalf("answer %q, want user", b)
		}
		sent++
		return resp
	}
	steered := func(c *conn) bool {
		mu.Lock()
		defer mu.Unlock()
		return seen[c.local] > 0
	}

	// The first connection of an unknown client: EPROXY answers (through
	// its own upstream connection) and closes it, having steered the
	// client, whose next connection is the kernel's at once.
	first := dial()
	if resp := send(first); !resp.Close || steered(first) {
		t.Fatalf("first request of a new client: Connection: close %v, steered %v; want EPROXY's answer with Connection: close", resp.Close, steered(first))
	}
	for range 4 {
		c := dial()
		for range 50 {
			if resp := send(c); resp.Close {
				t.Fatal("a steered connection was closed")
			}
		}
		if !steered(c) {
			t.Fatalf("a connection of a known client was not steered:\n%s", ep.log.String())
		}
	}
	probe() // the node is never steered

	// A pooling client (as the ingress is) ends up with steered
	// connections only: 8 workers × 50 requests.
	mu.Lock()
	before := map[string]int{}
	for k, v := range seen {
		before[k] = v
	}
	mu.Unlock()
	pooled := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 8,
		DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(pod.clientIP)}}).DialContext}}
	var wg sync.WaitGroup
	var failed atomic.Int64
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				resp, err := pooled.Post("http://"+net.JoinHostPort(pod.podIP, "8012")+"/", "text/plain", strings.NewReader("abc"))
				if err != nil {
					failed.Add(1)
					continue
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if string(b) != "user" {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	sent += 400
	if failed.Load() != 0 {
		t.Fatalf("%d of 400 pooled requests failed", failed.Load())
	}
	viaEproxy := 0
	mu.Lock()
	for k, v := range seen {
		if strings.HasPrefix(k, "127.0.0.1:") {
			viaEproxy += v - before[k]
		}
	}
	mu.Unlock()
	if viaEproxy != 0 {
		t.Errorf("%d of the pooled client's 400 requests went through EPROXY, want 0 (its client was already steered)", viaEproxy)
	}

	// The agent's count of steered connections: 4 + the pool's 8.
	rec := httptest.NewRecorder()
	agent.MetricsHandler().ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	var steeredConns float64
	for _, line := range strings.Split(rec.Body.String(), "\n") {
		if strings.HasPrefix(line, "spright_eproxy_steered_connections_total{") {
			f := strings.Fields(line)
			steeredConns, _ = strconv.ParseFloat(f[len(f)-1], 64)
		}
	}
	if steeredConns < 12 {
		t.Errorf("spright_eproxy_steered_connections_total = %v, want at least 12", steeredConns)
	}
	if !steerWait(2*time.Second, func() bool {
		m := ep.promCounters(t)
		return m["eproxy_requests_total"] == float64(sent) && m["eproxy_responses_total"] == float64(sent) && m["eproxy_inflight_requests"] == 0
	}) {
		t.Fatalf("EPROXY's counters %v, want %d requests and responses, none in flight (probes not counted)", ep.promCounters(t), sent)
	}
}

// startSteeredPod runs a pod stand-in (newPodNetns) with user as its user
// container on :8080, the real EPROXY in it and the node agent outside,
// and waits until EPROXY steers.
func startSteeredPod(t *testing.T, user http.Handler) (*podNetns, *eproxyProc, *gateway.Gateway) {
	t.Helper()
	needRoot(t)
	pod := newPodNetns(t, os.Getpid()%200+20)
	var sock string
	agent := startPodAgent(t, "steer", nil, func(c *gateway.Config) { sock = c.ControlSocket })
	var ln net.Listener
	var lerr error
	pod.do(t, func() { ln, lerr = net.Listen("tcp", ":8080") })
	if lerr != nil {
		t.Fatal(lerr)
	}
	srv := &http.Server{Handler: user}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	env := map[string]string{
		"SERVING_NAMESPACE": "default", "SERVING_SERVICE": "hello", "SERVING_CONFIGURATION": "hello",
		"SERVING_REVISION": "hello-00001", "SERVING_POD": "hello-00001-deployment-5f7d9c8b6-steer",
		"SERVING_POD_IP": pod.podIP, "CONTAINER_CONCURRENCY": "0", "QUEUE_SERVING_PORT": "8012", "USER_PORT": "8080",
		"REVISION_TIMEOUT_SECONDS": "300", "SERVING_LOGGING_LEVEL": "debug", "SPRIGHT_CONTROL_SOCKET": sock,
		"SPRIGHT_BIND_ADDRESS": pod.podIP, "SPRIGHT_METRICS_PORT": "9090", "SPRIGHT_PROMETHEUS_PORT": "9091",
		"SPRIGHT_ADMIN_PORT": "8022", "SPRIGHT_DRAIN_QUIET_SECONDS": "1", "SPRIGHT_DRAIN_TIMEOUT_SECONDS": "10",
	}
	ep := startEproxy(t, env, func(cmd *exec.Cmd) {
		ip, _ := exec.LookPath("ip")
		cmd.Args = append([]string{ip, "netns", "exec", pod.name}, cmd.Path)
		cmd.Path = ip
	})
	if !steerWait(5*time.Second, func() bool { return strings.Contains(ep.log.String(), "steering plain traffic") }) {
		t.Fatalf("EPROXY did not start steering:\n%s", ep.log.String())
	}
	return pod, ep, agent
}

func steerWait(d time.Duration, ok func() bool) bool {
	deadline := time.Now().Add(d)
	for {
		if ok() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		time.Sleep(20 * time.Millisecond)
	}
}
