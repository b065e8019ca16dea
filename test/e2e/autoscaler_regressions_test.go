package e2e

// EPROXY behaviours that break the autoscaler's view of a pod, found while
// writing the autoscaler tests. Each test asserts queue-proxy's behaviour
// (they were skipped until EPROXY was fixed; all run now).

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	nethttp "knative.dev/networking/pkg/http"
	netheader "knative.dev/networking/pkg/http/header"
	"knative.dev/networking/pkg/prober"
	asmetrics "knative.dev/serving/pkg/autoscaler/metrics"

	"github.com/spright-dev/spright/pkg/gateway"
)

// bugPod is a node agent, a user container answering at once, and EPROXY
// on ip (stat port: a free port).
func bugPod(t *testing.T, name, ip string, adjust ...func(map[string]string)) (*gateway.Gateway, *eproxyProc, *userContainer) {
	t.Helper()
	needRoot(t)
	g := startPodAgent(t, name, nil)
	user := newUserContainer(t, nil)
	user.start(t)
	env := eproxyEnv(t, ip, g.ControlSocketPath(), user)
	for _, f := range adjust {
		f(env)
	}
	env["SPRIGHT_METRICS_PORT"] = freePortOn(t, ip)
	ep := startEproxy(t, env)
	if ep.agentLost() {
		t.Fatalf("eproxy could not register:\n%s", ep.log.String())
	}
	return g, ep, user
}

// scrape reads the Stat the autoscaler would get from the stat port.
func (p *eproxyProc) scrape(t *testing.T) asmetrics.Stat {
	t.Helper()
	resp, err := http.Get("http://" + p.stat + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	var st asmetrics.Stat
	if resp.StatusCode != http.StatusOK || st.Unmarshal(b) != nil {
		t.Fatalf("stat endpoint: %d %q", resp.StatusCode, b)
	}
	return st
}

func (p *eproxyProc) requestsTotal(t *testing.T) float64 {
	t.Helper()
	return p.promCounters(t)["eproxy_requests_total"]
}

// Was a bug, fixed (bpf.AddCounted, eproxy countConn): a connection
// whose first request EPROXY does not splice is proxied in userspace for
// its whole life, and nothing counts its requests (eBPF counts only
// spliced connections; "no userspace code counts requests"). The
// autoscaler never sees them. Such connections are common:
//   - the activator shares one keep-alive transport between its readiness
//     probes and the requests it proxies (serving cmd/activator/main.go: "so
//     that throttler probe connections can be reused after probing"), so
//     its first connection to a pod starts with a probe;
//   - chunked request bodies, bodies over 1 MiB, HTTP/1.0 (ab), upgrades
//     (websockets, h2c/gRPC), and the relay fallback when the agent cannot
//     splice.
//
// Fix: count userspace-proxied requests into the same per-instance
// counters (e.g. an agent call, or register the userspace proxy's upstream
// socket with the agent so the sk_msg program counts it), or, after a
// probe on a keep-alive connection, re-classify the next request and
// splice then.
//
// With containerConcurrency 0 (Knative's default; no breaker) requests are
// counted as they are written to the user container: exactly what reached
// it. (With a breaker they are counted on arrival, before it, and then a
// probe that shares a counted connection is counted as a request too.)
func TestEproxyCountsRequestsOnUserspaceConnections(t *testing.T) {
	_, ep, user := bugPod(t, "bug-userspace", "127.0.0.46", func(env map[string]string) { env["CONTAINER_CONCURRENCY"] = "0" })
	base := "http://" + ep.traffic

	cases := []struct {
		name string
		send func() error
	}{
		{"activator probe, then 10 requests on the same keep-alive connection", func() error {
			tr := &http.Transport{MaxConnsPerHost: 1, MaxIdleConnsPerHost: 1}
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			if ok, err := prober.Do(ctx, tr, base+nethttp.HealthCheckPath,
				prober.WithHeader(netheader.ProbeKey, "queue"), prober.WithHeader(netheader.UserAgentKey, netheader.ActivatorUserAgent),
				prober.ExpectsStatusCodes([]int{http.StatusOK})); !ok {
				return fmt.Errorf("probe: %v", err)
			}
			for i := 0; i < 10; i++ {
				req, _ := http.NewRequest(http.MethodGet, base+"/", nil)
				req.Header.Set(netheader.ProxyKey, "activator")
				if err := do(tr, req); err != nil {
					return err
				}
			}
			return nil
		}},
		{"10 chunked POSTs", func() error {
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			for i := 0; i < 10; i++ {
				req, _ := http.NewRequest(http.MethodPost, base+"/", io.MultiReader(strings.NewReader("hello "), strings.NewReader("world")))
				req.ContentLength = -1 // chunked
				if err := do(tr, req); err != nil {
					return err
				}
			}
			return nil
		}},
		{"10 HTTP/1.0 requests (ab)", func() error {
			for i := 0; i < 10; i++ {
				c, err := net.Dial("tcp", ep.traffic)
				if err != nil {
					return err
				}
				fmt.Fprintf(c, "GET / HTTP/1.0\r\nHost: hello\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err == nil {
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusOK {
						err = fmt.Errorf("HTTP/1.0: %d", resp.StatusCode)
					}
				}
				c.Close()
				if err != nil {
					return err
				}
			}
			return nil
		}},
	}
	for _, c := range cases {
		before, served := ep.requestsTotal(t), user.served.Load()
		if err := c.send(); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		got, reached := ep.requestsTotal(t)-before, user.served.Load()-served
		t.Logf("%s: reached the user container %d, eBPF counted %.0f", c.name, reached, got)
		if got != float64(reached) {
			t.Errorf("%s: %d requests reached the user container, eBPF counted %.0f: the autoscaler does not see them", c.name, reached, got)
		}
	}
}

// Was a bug, fixed for spliced connections: the Stat never filled
// AverageProxiedConcurrentRequests / ProxiedRequestCount. queue-proxy
// counts requests carrying K-Proxy-Request: activator as proxied, and the
// autoscaler subtracts them (collector.record) because the activator
// already reported them: with EPROXY, a revision behind the activator
// (scale from zero, or any time excess burst capacity is negative with the
// default target-burst-capacity 200) is counted twice and over-scaled.
// DESIGN §6a: requests the gateway forwards carry K-Proxy-Request:
// activator "(or are counted as proxied) so they are not counted twice".
// Fix: EPROXY classifies the connection on its first request; pass that to
// the agent (e.g. AddSplice(instance, cfd, ufd, proxied)) so the sk_msg
// program counts into proxied counters, and have Window fill the Proxied*
// fields from them.
//
// Fixed for spliced connections (containerConcurrency 0): a connection whose
// first request carries K-Proxy-Request: activator is counted in the pod's
// proxied entry. Behind the breaker (CC > 0) requests are not yet separated.
func TestEproxyCountsActivatorRequestsAsProxied(t *testing.T) {
	_, ep, _ := bugPod(t, "bug-proxied", "127.0.0.47", func(env map[string]string) { env["CONTAINER_CONCURRENCY"] = "0" })
	stat := func() asmetrics.Stat { return ep.scrape(t) }
	stat() // first look
	start := time.Now()
	tr := &http.Transport{MaxConnsPerHost: 1}
	defer tr.CloseIdleConnections()
	for i := 0; i < 20; i++ {
		req, _ := http.NewRequest(http.MethodGet, "http://"+ep.traffic+"/", nil)
		req.Header.Set(netheader.ProxyKey, "activator") // what the activator sets on every proxied request
		if err := do(tr, req); err != nil {
			t.Fatal(err)
		}
	}
	time.Sleep(time.Until(start.Add(1100 * time.Millisecond)))
	st := stat()
	t.Logf("after 20 requests via the activator: %+v", st)
	if st.ProxiedRequestCount == 0 || st.ProxiedRequestCount != st.RequestCount {
		t.Errorf("Stat %+v: want the activator's requests as ProxiedRequestCount too (the autoscaler subtracts them: the activator reported them already)", st)
	}
}

// Was a bug, fixed (cmd/eproxy/agent.go re-registers): EPROXY
// registers with the node agent once. When the agent restarts (DaemonSet
// update), EPROXY's control connection is gone and its metrics entry is
// removed: its stat endpoint answers 503 for the rest of the pod's life
// (the autoscaler, seeing 503 from every pod, in the default mesh
// "auto" mode falls back to service scraping and marks the revision's
// pods unaddressable for good), and every new connection fails to splice
// and is relayed in userspace, uncounted. A restarted agent also hands
// instance IDs out from 1 again (gateway.New: nextInst starts at 0) while
// EPROXY keeps reading its old ID: with the maps pinned across the restart
// it would read another pod's counters (which go backwards: see
// pkg/eproxy TestWindowCounterReset). The SDK re-registers after a
// gateway restart; EPROXY should too: watch the control connection (a
// blocking read in a goroutine), re-register with backoff, and swap in the
// new instance's Window and Splicer.
func TestEproxyReRegistersAfterAgentRestart(t *testing.T) {
	needRoot(t)
	sock := filepath.Join(t.TempDir(), "control.sock")
	newAgent := func(name string) *gateway.Gateway {
		g, err := gateway.New(gateway.Config{ControlSocket: sock, PinDir: fmt.Sprintf("/sys/fs/bpf/spright-e2e-%d-%s", os.Getpid(), name), Logger: zaptest.NewLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Start(); err != nil {
			t.Fatal(err)
		}
		return g
	}
	g1 := newAgent("bug-restart-1")
	user := newUserContainer(t, nil)
	user.start(t)
	env := eproxyEnv(t, "127.0.0.48", sock, user)
	env["SPRIGHT_METRICS_PORT"] = freePortOn(t, "127.0.0.48")
	ep := startEproxy(t, env)
	statCode := func() int {
		resp, err := http.Get("http://" + ep.stat + "/metrics")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := statCode(); c != http.StatusOK {
		t.Fatalf("stat endpoint before the restart: %d", c)
	}

	// The agent restarts.
	g1.Close()
	g1.Unpin()
	g2 := newAgent("bug-restart-2")
	t.Cleanup(func() { g2.Close(); g2.Unpin() })

	// The Window answers from its last snapshot for a Period: look after it.
	time.Sleep(1100 * time.Millisecond)
	deadline := time.Now().Add(10 * time.Second)
	for statCode() != http.StatusOK {
		if time.Now().After(deadline) {
			t.Fatalf("stat endpoint still %d 10 s after the agent restarted: EPROXY did not re-register", statCode())
		}
		time.Sleep(100 * time.Millisecond)
	}
	before := ep.requestsTotal(t)
	tr := &http.Transport{}
	defer tr.CloseIdleConnections()
	for i := 0; i < 10; i++ {
		req, _ := http.NewRequest(http.MethodGet, "http://"+ep.traffic+"/", nil)
		if err := do(tr, req); err != nil {
			t.Fatal(err)
		}
	}
	if got := ep.requestsTotal(t) - before; got != 10 {
		t.Errorf("after the agent restart, eBPF counted %.0f of 10 requests", got)
	}
}

func do(tr http.RoundTripper, req *http.Request) error {
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK || string(b) != "ok" {
		return fmt.Errorf("%s %s: %d %q", req.Method, req.URL, resp.StatusCode, b)
	}
	return nil
}

// Was a bug, fixed (breaker + arrival counting) (pkg/eproxy/config.go:13 is read but never used; server.go has
// no breaker): CONTAINER_CONCURRENCY is not honoured. queue-proxy lets at
// most containerConcurrency requests reach the user container and queues
// up to 10×CC more (503 beyond that); DESIGN §6a requires the same. In
// TestAutoscalerScrapesEproxy the user container of a CC=10 revision had
// 30 requests in flight at once. Kernel splicing hands whole connections
// to the user container, so a fix needs a decision: e.g. do not splice
// revisions with CC > 0 (userspace breaker, as queue-proxy), or enforce
// the limit per connection/request in the sk_msg/sk_skb path.
func TestEproxyHonoursContainerConcurrency(t *testing.T) {
	needRoot(t)
	g := startPodAgent(t, "bug-cc", nil)
	user := newUserContainer(t, func(int64) time.Duration { return 500 * time.Millisecond })
	user.start(t)
	env := eproxyEnv(t, "127.0.0.49", g.ControlSocketPath(), user) // CONTAINER_CONCURRENCY=10
	env["SPRIGHT_METRICS_PORT"] = freePortOn(t, "127.0.0.49")
	ep := startEproxy(t, env)
	res := holdLoad(context.Background(), "http://"+ep.traffic+"/", 30, time.Second)
	t.Logf("%d requests, %d failed; the user container had up to %d in flight (CONTAINER_CONCURRENCY=10)", res.issued, res.failed, user.maxInflight.Load())
	if res.failed != 0 {
		t.Errorf("%d requests failed (30 concurrent fit in the queue of 10×CC): %v", res.failed, res.firstErr)
	}
	if m := user.maxInflight.Load(); m > 10 {
		t.Errorf("user container had %d requests in flight, containerConcurrency is 10", m)
	}
}

// Was a bug, fixed: /wait-for-drain on the admin
// port is what the user container's preStop hook calls. queue-proxy
// (serving pkg/queue/sharedmain/handlers.go adminHandler) resets the
// drainer a second later if no SIGTERM came: then the user container is
// being restarted by its liveness probe and the pod must become ready
// again. EPROXY never resets: after one liveness restart of the user
// container, every readiness probe answers 503 for the rest of the pod's
// life. Fix: as queue-proxy, in the handler start
//
//	go func() { select { case <-ctx.Done(): case <-time.After(time.Second): srv.Drainer().Reset() } }()
//
// before srv.Drainer().Drain() (ctx = the SIGTERM context).
func TestEproxyWaitForDrainWithoutSIGTERMRecovers(t *testing.T) {
	ep, user := probePod(t, "bug-drain", nil)
	user.start(t)
	eventually(t, 5*time.Second, "ready", func() (bool, error) { return activatorProbe(ep) })
	resp, err := http.Get("http://" + ep.admin + "/wait-for-drain") // the user container's preStop hook
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	// No SIGTERM follows (a liveness restart of the user container): ready again.
	eventually(t, 5*time.Second, "ready again after /wait-for-drain without SIGTERM", func() (bool, error) { return activatorProbe(ep) })
}

// Was a bug, found on the real one-node cluster: a revision with
// containerConcurrency > 0 never scaled to zero. Behind the breaker every
// connection is counted from its first byte, kubelet's readiness probes
// included (a new connection each, every few seconds); the autoscaler saw
// a concurrency just above zero and Knative rounds that up to one pod.
// Fixed: EPROXY takes the probes it answered off the Stat (Window.Probes).
func TestEproxyBreakerDoesNotCountKubeletProbes(t *testing.T) {
	_, ep, _ := bugPod(t, "bug-probes", "127.0.0.50") // CONTAINER_CONCURRENCY=10
	probe := func() {
		req, _ := http.NewRequest(http.MethodGet, "http://"+ep.traffic+"/", nil)
		req.Header.Set(netheader.ProbeKey, "queue") // what Knative's readiness probe on queue-proxy sends
		req.Header.Set("User-Agent", "kube-probe/1.36")
		req.Close = true // kubelet: a new connection per probe
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("probe: %s", resp.Status)
		}
	}
	ep.scrape(t) // first look
	before := ep.requestsTotal(t)
	for i := 0; i < 4; i++ {
		for j := 0; j < 10; j++ {
			probe()
			time.Sleep(100 * time.Millisecond)
		}
		if st := ep.scrape(t); st.RequestCount != 0 || st.AverageConcurrentRequests != 0 {
			t.Errorf("second %d with only probes: Stat %+v, want no requests and no concurrency", i, st)
		}
	}
	t.Logf("the kernel counted %v probe requests on the arrival-counted connections", ep.requestsTotal(t)-before)
	// Traffic next to probes is still counted.
	start := time.Now()
	for i := 0; i < 5; i++ {
		probe()
		resp, err := http.Post("http://"+ep.traffic+"/", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	time.Sleep(time.Until(start.Add(1100 * time.Millisecond)))
	if st := ep.scrape(t); st.RequestCount < 4 || st.RequestCount > 6 {
		t.Errorf("5 requests and 5 probes in a second: Stat %+v, want RequestCount about 5", st)
	}
}
