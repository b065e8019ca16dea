package e2e

// EPROXY with no blind spots (issue 14): the autoscaler's Stat is valid and
// exact whatever the node agent does, from the pod's first second on, and
// behind the breaker the activator's requests and Knative's probes are told
// apart from the pod's own traffic.

import (
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	netheader "knative.dev/networking/pkg/http/header"
	asmetrics "knative.dev/serving/pkg/autoscaler/metrics"
	"knative.dev/serving/pkg/queue/readiness"

	"github.com/spright-dev/spright/pkg/gateway"
)

// requestsIn is what a Stat says about a window that began when the pod
// started (its first scrape, see NewPodWindow): requests per second ×
// the time since the start.
func requestsIn(st asmetrics.Stat) float64 { return st.RequestCount * st.ProcessUptime }

// waitLog waits until EPROXY has logged msg n times.
func waitLog(t *testing.T, ep *eproxyProc, msg string, n int) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(ep.log.String(), msg) < n {
		if time.Now().After(deadline) {
			t.Fatalf("eproxy did not log %q %d times within 10 s:\n%s", msg, n, ep.log.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Without its node agent EPROXY proxies every request itself, and the
// autoscaler got a 500 for that pod for as long as the agent was away: a
// pod that started before its node's agent (or while it restarted) was
// invisible to scaling. Now the stat endpoint always answers, with exact
// counts: what EPROXY proxies while no agent can count it is counted in
// userspace, and an agent that restarts on its kept pins hands the pod its
// counters back (they kept counting the spliced connections meanwhile).
func TestEproxyCountsWithoutAgentAndAcrossAgentRestarts(t *testing.T) {
	needRoot(t)
	const ip = "127.0.0.81"
	sock := filepath.Join(t.TempDir(), "control.sock")
	pinDir := fmt.Sprintf("/sys/fs/bpf/spright-e2e-%d-blind", os.Getpid())
	var last *gateway.Gateway
	newAgent := func() *gateway.Gateway {
		g, err := gateway.New(gateway.Config{ControlSocket: sock, PinDir: pinDir, Logger: zaptest.NewLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Start(); err != nil {
			t.Fatal(err)
		}
		last = g
		return g
	}
	t.Cleanup(func() {
		if last != nil {
			last.Close()
			last.Unpin()
		}
	})
	user := newUserContainer(t, nil)
	user.start(t)
	env := eproxyEnv(t, ip, sock, user)
	env["CONTAINER_CONCURRENCY"] = "0"
	env["SPRIGHT_METRICS_PORT"] = freePortOn(t, ip)
	ep := startEproxy(t, env)
	if !ep.agentLost() {
		t.Fatalf("eproxy found an agent that is not there:\n%s", ep.log.String())
	}

	sent := 0
	// send makes n requests: on a keep-alive connection of tr, or each
	// on a connection of its own (tr nil).
	send := func(what string, n int, tr *http.Transport) {
		t.Helper()
		for i := 0; i < n; i++ {
			req, _ := http.NewRequest(http.MethodGet, "http://"+ep.traffic+"/", nil)
			rt := tr
			if rt == nil {
				rt = &http.Transport{DisableKeepAlives: true}
			}
			if err := do(rt, req); err != nil {
				t.Fatalf("%s: request %d: %v", what, i, err)
			}
			sent++
		}
	}
	check := func(phase string) {
		t.Helper()
		if got := ep.requestsTotal(t); got != float64(sent) {
			t.Errorf("%s: the pod's counters say %.0f requests, %d were sent (%d reached the user container)", phase, got, sent, user.served.Load())
		}
		ep.scrape(t) // a valid Stat (scrape fails the test on anything else)
	}

	// 1. No agent: 20 requests, the first scrape shows exactly them.
	keep1 := &http.Transport{MaxConnsPerHost: 1}
	defer keep1.CloseIdleConnections()
	send("no agent, keep-alive", 10, keep1)
	send("no agent, new connections", 10, nil)
	st := ep.scrape(t)
	t.Logf("first scrape, no agent, after 20 requests: %+v", st)
	if got := requestsIn(st); math.Abs(got-20) > 0.5 {
		t.Errorf("first scrape without an agent: RequestCount × uptime = %.3f, want the 20 requests since the start", got)
	}
	check("no agent")

	// 2. The agent comes: new connections are spliced and counted in the
	// kernel; the keep-alive connection from before stays counted in
	// userspace.
	newAgent()
	waitLog(t, ep, "registered with the node agent", 1)
	keep2 := &http.Transport{MaxConnsPerHost: 1}
	defer keep2.CloseIdleConnections()
	send("agent 1, spliced keep-alive", 15, keep2)
	send("agent 1, old keep-alive", 5, keep1)
	send("agent 1, new connections", 10, nil)
	check("agent 1")

	// 3. The agent goes away (a DaemonSet restart: the pins stay).
	last.Close()
	waitLog(t, ep, "node agent went away", 1)
	send("agent away, spliced keep-alive", 5, keep2) // the kernel counts these, in the pod's kept entry
	send("agent away, new connections", 10, nil)
	send("agent away, old keep-alive", 5, keep1)
	ep.scrape(t)
	if got := ep.requestsTotal(t); got != float64(sent-5) {
		t.Errorf("agent away: the pod's counters say %.0f requests, want %d (all but the 5 the kernel counted on the spliced connection, which show when the agent is back)", got, sent-5)
	}

	// 4. The agent is back on the kept pins: the pod gets its entry back,
	// with what the kernel counted meanwhile.
	newAgent()
	waitLog(t, ep, "registered with the node agent", 2)
	if !strings.Contains(ep.log.String(), `"resumed":true`) {
		t.Errorf("the restarted agent did not hand the pod its entry back:\n%s", ep.log.String())
	}
	send("agent 2, spliced keep-alive from agent 1", 5, keep2)
	send("agent 2, new connections", 10, nil)
	keep3 := &http.Transport{MaxConnsPerHost: 1}
	defer keep3.CloseIdleConnections()
	send("agent 2, new keep-alive", 10, keep3)
	check("agent 2")

	// 5. The agent is the real binary, and is killed (SIGKILL: it cleans
	// nothing up); the next one finds the pins as it left them.
	last.Close()
	waitLog(t, ep, "node agent went away", 2)
	proc := exec.Command(buildGateway(t), "--control", sock, "--pin-dir", pinDir, "--listen", ip+":0", "--admin-listen", "")
	var procLog syncBuffer
	proc.Stdout, proc.Stderr = &procLog, &procLog
	if err := proc.Start(); err != nil {
		t.Fatal(err)
	}
	waitLog(t, ep, "registered with the node agent", 3)
	send("agent 3 (a process), spliced keep-alive from agent 1", 5, keep2)
	send("agent 3 (a process), new connections", 10, nil)
	check("agent 3 (a process)")
	proc.Process.Kill()
	proc.Wait()
	waitLog(t, ep, "node agent went away", 3)
	send("agent killed, spliced keep-alive", 5, keep2)
	send("agent killed, new connections", 10, nil)
	newAgent()
	waitLog(t, ep, "registered with the node agent", 4)
	if n := strings.Count(ep.log.String(), `"resumed":true`); n != 3 {
		t.Errorf("%d of the 3 restarts on kept pins handed the pod its entry back; agent 3's log:\n%s", n, procLog.String())
	}
	send("agent 4 (after the kill), spliced keep-alive", 5, keep2)
	check("agent 4 (after the kill)")

	// 6. The agent restarts without its pins (its maps are gone): the
	// counters go on from what was read last.
	last.Close()
	last.Unpin()
	waitLog(t, ep, "node agent went away", 4)
	newAgent()
	waitLog(t, ep, "registered with the node agent", 5)
	send("agent 5, new connections", 10, nil)
	send("agent 5, old keep-alive", 5, keep1)
	check("agent 5 (new maps)")
	if served := user.served.Load(); served != int64(sent) {
		t.Errorf("%d requests sent, %d reached the user container", sent, served)
	}
	t.Logf("%d requests in all, counted %.0f", sent, ep.requestsTotal(t))
}

// The autoscaler's first scrape of a new pod reported nothing: EPROXY's
// Window began at the first scrape, so whatever the pod served before it
// (the request that woke it from zero, say) never reached the autoscaler.
// queue-proxy reports from its start.
func TestEproxyFirstScrapeReportsTrafficSinceStart(t *testing.T) {
	_, ep, _ := bugPod(t, "blind-first", "127.0.0.82", func(env map[string]string) { env["CONTAINER_CONCURRENCY"] = "0" })
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	for i := 0; i < 25; i++ {
		req, _ := http.NewRequest(http.MethodGet, "http://"+ep.traffic+"/", nil)
		if err := do(tr, req); err != nil {
			t.Fatal(err)
		}
	}
	st := ep.scrape(t)
	t.Logf("first scrape after 25 requests: %+v", st)
	if got := requestsIn(st); math.Abs(got-25) > 0.5 {
		t.Errorf("first scrape: RequestCount × uptime = %.3f, want the 25 requests since the start", got)
	}
	if st.AverageConcurrentRequests <= 0 {
		t.Errorf("first scrape: concurrency %v, want > 0", st.AverageConcurrentRequests)
	}
}

// Behind the breaker (containerConcurrency > 0) connections are counted by
// the kernel from their first byte, before EPROXY has read a request: the
// activator's requests were counted as the pod's own (ProxiedRequestCount
// 0: the autoscaler counted them twice, once from the activator), and a
// probe in flight when the autoscaler scraped was a request with
// concurrency (its subtraction came only once it was answered).
func TestEproxyBreakerTellsActivatorAndProbesApart(t *testing.T) {
	needRoot(t)
	const ip = "127.0.0.83"
	g := startPodAgent(t, "blind-breaker", nil)
	user := newUserContainer(t, nil)
	readyDelay := time.Second
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/ready" {
			time.Sleep(readyDelay) // a slow readiness endpoint
			io.WriteString(w, "ready")
			return
		}
		io.Copy(io.Discard, r.Body)
		user.served.Add(1)
		io.WriteString(w, "ok")
	})}
	l, err := net.Listen("tcp", user.addr)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	env := eproxyEnv(t, ip, g.ControlSocketPath(), user) // CONTAINER_CONCURRENCY=10
	env["SPRIGHT_METRICS_PORT"] = freePortOn(t, ip)
	port := intstr.Parse(user.port).IntVal
	enc, err := readiness.EncodeSingleProbe(&corev1.Probe{
		ProbeHandler:   corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Scheme: corev1.URISchemeHTTP, Host: "127.0.0.1", Port: intstr.FromInt32(port), Path: "/ready"}},
		PeriodSeconds:  1, // one try per probe, no aggressive polling
		TimeoutSeconds: 3, SuccessThreshold: 1,
	})
	if err != nil {
		t.Fatal(err)
	}
	env["SERVING_READINESS_PROBE"] = enc
	ep := startEproxy(t, env)
	if ep.agentLost() {
		t.Fatalf("eproxy could not register:\n%s", ep.log.String())
	}
	probe := func(tr http.RoundTripper, ua string) {
		t.Helper()
		req, _ := http.NewRequest(http.MethodGet, "http://"+ep.traffic+"/healthz", nil)
		req.Header.Set(netheader.ProbeKey, "queue")
		req.Header.Set("User-Agent", ua)
		resp, err := (&http.Client{Transport: tr, Timeout: 5 * time.Second}).Do(req)
		if err != nil {
			t.Error(err)
			return
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Errorf("probe: %s", resp.Status)
		}
	}

	// The activator's keep-alive connection: a probe, then 10 requests it
	// proxies, then a probe; and 5 requests of the pod's own.
	ep.scrape(t)
	start := time.Now()
	act := &http.Transport{MaxConnsPerHost: 1}
	defer act.CloseIdleConnections()
	probe(act, netheader.ActivatorUserAgent)
	for i := 0; i < 10; i++ {
		req, _ := http.NewRequest(http.MethodGet, "http://"+ep.traffic+"/", nil)
		req.Header.Set(netheader.ProxyKey, "activator")
		if err := do(act, req); err != nil {
			t.Fatal(err)
		}
	}
	probe(act, netheader.ActivatorUserAgent)
	own := &http.Transport{}
	defer own.CloseIdleConnections()
	for i := 0; i < 5; i++ {
		req, _ := http.NewRequest(http.MethodGet, "http://"+ep.traffic+"/", nil)
		if err := do(own, req); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Until(start.Add(1100 * time.Millisecond)))
	st := ep.scrape(t)
	t.Logf("10 activator requests, 5 own, 2 activator probes: %+v", st)
	if st.RequestCount == 0 || math.Abs(st.ProxiedRequestCount/st.RequestCount-10.0/15) > 1e-9 {
		t.Errorf("Stat %+v: want 15 requests of which 10 proxied (ProxiedRequestCount/RequestCount = 2/3), probes not counted", st)
	}
	if st.AverageProxiedConcurrentRequests <= 0 || st.AverageProxiedConcurrentRequests > st.AverageConcurrentRequests {
		t.Errorf("Stat %+v: want the activator's part of the concurrency as proxied", st)
	}

	// A kubelet readiness probe (1 s: it runs the slow readiness probe
	// of the user container) in flight when the autoscaler scrapes.
	time.Sleep(1100 * time.Millisecond)
	ep.scrape(t)
	at := time.Now()
	time.Sleep(400 * time.Millisecond)
	done := make(chan struct{})
	go func() {
		defer close(done)
		probe(&http.Transport{DisableKeepAlives: true}, netheader.KubeProbeUAPrefix+"1.30")
	}()
	time.Sleep(time.Until(at.Add(1100 * time.Millisecond)))
	st = ep.scrape(t) // the probe is in flight
	t.Logf("a probe in flight: %+v", st)
	if st.RequestCount != 0 || st.AverageConcurrentRequests != 0 {
		t.Errorf("a second with only a probe in flight: Stat %+v, want no request and no concurrency", st)
	}
	<-done
	time.Sleep(1100 * time.Millisecond)
	st = ep.scrape(t)
	t.Logf("after the probe: %+v", st)
	if st.RequestCount != 0 || st.AverageConcurrentRequests != 0 {
		t.Errorf("the second the probe ended: Stat %+v, want no request and no concurrency", st)
	}
	if n := user.served.Load(); n != 15 {
		t.Errorf("user container served %d requests, want 15", n)
	}
}
