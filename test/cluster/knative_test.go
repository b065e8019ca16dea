package cluster

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spright-dev/spright/pkg/samples/boutique"
	"github.com/spright-dev/spright/pkg/samples/boutique/shopper"
)

// TestSprightOnKnative is what a user does, on a real one-node Kubernetes
// with Knative Serving 1.15 (hack/cluster-up.sh): install SPRIGHT as
// docs/knative.md says, create services with the real kn, and watch
// Knative's own controllers, autoscaler and activator work with SPRIGHT's
// gateway (the ingress and the chains' entry), EPROXY (every revision's
// queue sidecar) and the pod webhook. The subtests run in order: each uses
// what the previous ones set up, and the last uninstalls.
func TestSprightOnKnative(t *testing.T) {
	e := setup(t)
	// Leftovers of an interrupted run.
	for _, n := range []string{"plain", "upper", "reverse", "echo", "scale", "frontend", "productcatalog", "currency", "cart",
		"recommendation", "ad", "shipping", "payment", "email", "checkout"} {
		if _, err := e.run(time.Minute, e.kubectl, "get", "ksvc", n); err == nil {
			e.knDelete(t, n)
		}
	}

	var httpfn, sdkfn string
	if !t.Run("install", func(t *testing.T) {
		// docs/knative.md "Install" and "SPRIGHT as the ingress".
		e.must(t, 15*time.Minute, e.ko, "apply", "-f", "config/")
		e.kubectlT(t, "rollout", "status", "-n", "spright-system", "deployment/spright-controller", "--timeout=180s")
		e.kubectlT(t, "rollout", "status", "-n", "spright-system", "deployment/spright-webhook", "--timeout=180s")
		e.kubectlT(t, "rollout", "status", "-n", "spright-system", "daemonset/spright-gateway", "--timeout=180s")
		e.kubectlT(t, "patch", "configmap/config-network", "-n", "knative-serving", "--type", "merge",
			"-p", `{"data":{"ingress-class":"spright.ingress.networking.knative.dev"}}`)
		e.kubectlT(t, "patch", "configmap/config-spright", "-n", "spright-system", "--type", "merge",
			"-p", `{"data":{"ingress-class":"spright.ingress.networking.knative.dev","domain":"example.com"}}`)
		// The queue-sidecar-image swap, keeping the stock image for the
		// uninstall.
		stockQueue = strings.TrimSpace(e.kubectlT(t, "get", "configmap/config-deployment", "-n", "knative-serving",
			"-o", "jsonpath={.data.queue-sidecar-image}"))
		if stockQueue == "" || strings.Contains(stockQueue, "eproxy") {
			// An earlier run on this cluster swapped it already: take the
			// stock image from what hack/knative-install.sh applied.
			t.Logf("queue-sidecar-image is %q before the swap (an earlier run's)", stockQueue)
			b, err := os.ReadFile("/var/lib/spright-cluster/knative-serving-core.yaml")
			if m := regexp.MustCompile(`queue-sidecar-image: "?([^"\s]+)`).FindSubmatch(b); err == nil && m != nil {
				stockQueue = string(m[1])
			}
		}
		eproxy := e.koBuild(t, "./cmd/eproxy")
		e.kubectlT(t, "patch", "configmap/config-deployment", "-n", "knative-serving", "--type", "merge",
			"-p", fmt.Sprintf(`{"data":{"queue-sidecar-image":%q}}`, eproxy))
		httpfn = e.koBuild(t, "./test/fixtures/httpfn")
		sdkfn = e.koBuild(t, "./cmd/spright")
	}) {
		t.FailNow() // everything after needs SPRIGHT installed
	}

	t.Run("plain service through the SPRIGHT ingress", func(t *testing.T) {
		// min-scale 1: it stays up through the other subtests, so the
		// uninstall can show its pod moving back to the stock queue-proxy.
		// target-burst-capacity 0: the ingress sends straight to its pods
		// (ServerlessService in Serve mode), where EPROXY steers; with
		// Knative's default (200) one pod keeps the activator in the path,
		// and the activator's connections are never steered.
		e.knT(t, "service", "create", "plain", "--image", httpfn, "--arg=--behavior=upper", "--scale-min", "1",
			"--annotation", "autoscaling.knative.dev/target-burst-capacity=0")
		code, body, err := e.curl("plain.default.example.com", "abc")
		if err != nil || code != 200 || body != "ABC" {
			t.Fatalf("curl plain: %d %q %v", code, body, err)
		}
		// Kubelet's readiness probe went through EPROXY (the pod is Ready),
		// and the pod webhook gave EPROXY the node's control socket.
		pod := e.kubectlT(t, "get", "pods", "-l", "serving.knative.dev/service=plain", "-o", "json")
		var pods struct {
			Items []struct {
				Spec struct {
					Containers []struct {
						Name, Image  string
						VolumeMounts []struct{ Name, MountPath string }
					}
				}
				Status struct {
					Conditions []struct{ Type, Status string }
				}
			}
		}
		if err := json.Unmarshal([]byte(pod), &pods); err != nil || len(pods.Items) == 0 {
			t.Fatalf("pods of plain: %v\n%s", err, pod)
		}
		found := false
		for _, c := range pods.Items[0].Spec.Containers {
			if c.Name != "queue-proxy" {
				continue
			}
			if !strings.Contains(c.Image, "eproxy") {
				t.Errorf("queue-proxy image %s, want EPROXY", c.Image)
			}
			for _, m := range c.VolumeMounts {
				if m.Name == "spright-run" && m.MountPath == "/run/spright" {
					found = true
				}
			}
		}
		if !found {
			t.Errorf("the pod webhook did not mount /run/spright into queue-proxy")
		}
	})

	t.Run("traffic split through the SPRIGHT ingress", func(t *testing.T) {
		// A second revision, then 70/30 between the two (kn waits for the
		// Route, so the KIngress is Ready with the split on every gateway).
		e.knT(t, "service", "update", "plain", "--env", "SPLIT=second")
		e.knT(t, "service", "update", "plain", "--traffic", "plain-00001=70", "--traffic", "plain-00002=30")
		defer e.run(5*time.Minute, e.kn, "service", "update", "plain", "--traffic", "@latest=100")
		before := map[string]float64{"plain-00001": e.revisionRequests(t, "plain-00001"), "plain-00002": e.revisionRequests(t, "plain-00002")}
		client := &http.Client{Timeout: 10 * time.Second}
		const n = 1000
		for i := 0; i < n; i++ {
			req, _ := http.NewRequest(http.MethodPost, "http://"+ingress+"/", strings.NewReader("abc"))
			req.Host = "plain.default.example.com"
			resp, err := client.Do(req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || string(b) != "ABC" {
				t.Fatalf("request %d: %d %q", i, resp.StatusCode, b)
			}
		}
		first := e.revisionRequests(t, "plain-00001") - before["plain-00001"]
		second := e.revisionRequests(t, "plain-00002") - before["plain-00002"]
		t.Logf("70/30 split over %d requests, counted by each revision's EPROXY: plain-00001 %v (%.1f%%), plain-00002 %v (%.1f%%)",
			n, first, 100*first/n, second, 100*second/n)
		// The ingress's connections to the pods: EPROXY answered the first
		// request of each with Connection: close and had the kernel steer
		// the ingress's next ones straight to the user container.
		steered := 0.0
		for k, v := range e.gatewayMetrics(t) {
			if strings.HasPrefix(k, "spright_eproxy_steered_connections_total") && strings.Contains(k, `revision="plain-0000`) {
				steered += v
			}
		}
		t.Logf("connections steered to plain's user containers: %v", steered)
		if steered == 0 {
			t.Errorf("no connection to plain's pods was steered (spright_eproxy_steered_connections_total)")
		}
		if first+second != n {
			t.Errorf("the revisions counted %v requests, want %d", first+second, n)
		}
		if share := first / n; share < 0.65 || share > 0.75 {
			t.Errorf("plain-00001 got %.1f%% of the requests, want 70%% ± 5", 100*share)
		}
	})

	chainOK := t.Run("chain", func(t *testing.T) {
		// upper is a Go SDK function (`spright function`, pkg/function)
		// that joins the chain itself; reverse an unmodified HTTP container
		// that EPROXY's shim joins for it.
		e.knT(t, "service", "create", "upper", "--image", sdkfn, "--arg=function", "--arg=--behavior=upper",
			"--annotation", "spright.dev/chain=hello", "--annotation", "spright.dev/entry=true",
			"--annotation", "spright.dev/routes=*=reverse", "--annotation", "spright.dev/sdk=true")
		e.knT(t, "service", "create", "reverse", "--image", httpfn, "--arg=--behavior=reverse",
			"--annotation", "spright.dev/chain=hello")
		// Ready, after the controller's min-scale default made a second
		// revision of each member (the Service is not Ready while it rolls out).
		var ready map[string]bool
		waitFor(t, 2*time.Minute, "upper and reverse Ready in kn service list", func() (bool, error) {
			ready = e.knReady(t)
			return ready["upper"] && ready["reverse"], fmt.Errorf("%v", ready)
		})
		waitFor(t, 2*time.Minute, "chain hello Ready", func() (bool, error) {
			out, err := e.run(time.Minute, e.kubectl, "get", "chain", "hello", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
			return strings.TrimSpace(out) == "True", err
		})
		// The SDK function joined the chain itself; EPROXY next to it did not.
		waitFor(t, time.Minute, "upper's SDK function joined the chain", func() (bool, error) {
			logs, err := e.run(time.Minute, e.kubectl, "logs", "-l", "serving.knative.dev/service=upper", "-c", "user-container", "--tail=-1")
			return strings.Contains(logs, "joined the chain"), err
		})
		if logs, _ := e.run(time.Minute, e.kubectl, "logs", "-l", "serving.knative.dev/service=upper", "-c", "queue-proxy", "--tail=-1"); strings.Contains(logs, "joined the chain") {
			t.Errorf("EPROXY joined the chain for the SDK function too:\n%s", tail(logs, 20))
		}
		t.Logf("kn service list:\n%s", e.knT(t, "service", "list"))
		t.Logf("kubectl get chains,pods -o wide:\n%s", e.kubectlT(t, "get", "chains,pods", "-o", "wide"))

		before := e.gatewayMetrics(t)
		var code int
		var body string
		waitFor(t, 2*time.Minute, "the chain answering through the ingress", func() (bool, error) {
			var err error
			code, body, err = e.curl("hello.default.example.com", "abc")
			return code == 200 && body == "CBA", err
		})
		const n = 20
		for i := 0; i < n; i++ {
			if code, body, err := e.curl("hello.default.example.com", "abc"); err != nil || code != 200 || body != "CBA" {
				t.Fatalf("request %d: %d %q %v", i, code, body, err)
			}
		}
		after := e.gatewayMetrics(t)
		// The descriptors' hops, counted by the sk_msg program: gateway →
		// upper → reverse → gateway, each instance sending once per request.
		hops := map[string]float64{}
		for k, v := range after {
			if strings.HasPrefix(k, "spright_bpf_instance_sent_total") {
				hops[k] = v - before[k]
			}
		}
		// (A member may have two instances, one per revision, while the
		// min-scale default's revision takes over: count sends in total.)
		total := 0.0
		for k, d := range hops {
			if d > 0 {
				t.Logf("sk_msg sends of %s over the last %d+ requests: %v", strings.TrimPrefix(k, "spright_bpf_instance_sent_total"), n, d)
			}
			total += d
		}
		if gw := hops[`spright_bpf_instance_sent_total{instance="0"}`]; gw < n || total < 3*n {
			t.Errorf("descriptor sends: gateway %v, all %v; want >= %d from the gateway and >= %d in all (gateway → upper → reverse → gateway)", gw, total, n, 3*n)
		}
		key := `spright_gateway_requests_total{chain="default.hello",code="200"}`
		if d := after[key] - before[key]; d < n {
			t.Errorf("gateway counted %v chain requests, want >= %d", d, n)
		}
	})

	t.Run("autoscaler scales a plain service on EPROXY's stats", func(t *testing.T) {
		// containerConcurrency 10, I/O-bound requests of 200 ms, 30 clients:
		// the autoscaler must want >= 3 pods. A 10 s window to keep the
		// test short (the scale-to-zero grace period stays Knative's 30 s).
		e.knT(t, "service", "create", "scale", "--image", httpfn, "--arg=--wait=200ms",
			"--concurrency-limit", "10", "--annotation", "autoscaling.knative.dev/window=10s")
		var s series
		stop := make(chan struct{})
		done := make(chan int)
		go func() {
			maxPods := 0
			for {
				select {
				case <-stop:
					done <- maxPods
					return
				case <-time.After(2 * time.Second):
				}
				out, _ := e.run(time.Minute, e.kubectl, "get", "podautoscaler", "scale-00001", "-o", "jsonpath={.status.desiredScale}/{.status.actualScale}")
				pods := e.runningPods(t, "scale-00001")
				if pods > maxPods {
					maxPods = pods
				}
				s.add(fmt.Sprintf("desired/actual %s running %d", out, pods))
			}
		}()
		r := e.wrk(t, "scale.default.example.com", 30, 60*time.Second)
		close(stop)
		maxPods := <-done
		t.Logf("wrk c=30 60s: %d requests, %.0f rps, %d non-2xx, %d socket errors", r.requests, r.rps, r.non2xx, r.socketErrors)
		t.Logf("PodAutoscaler scale-00001 under load:\n%s", s.String())
		if maxPods < 3 {
			t.Errorf("at most %d pods under c=30 with containerConcurrency 10, want >= 3", maxPods)
		}
		if r.non2xx > 0 {
			t.Errorf("%d non-2xx responses under load", r.non2xx)
		}
		// Down, then to zero after the window and the grace period.
		var down series
		waitFor(t, 4*time.Minute, "scale to zero", func() (bool, error) {
			out, err := e.run(time.Minute, e.kubectl, "get", "podautoscaler", "scale-00001", "-o", "jsonpath={.status.desiredScale}/{.status.actualScale}")
			down.add(out)
			return strings.TrimSpace(out) == "0/0" && e.runningPods(t, "scale-00001") == 0, err
		})
		t.Logf("after the load:\n%s", down.String())
		// A request at zero: held by Knative's activator until a pod is up.
		start := time.Now()
		code, body, err := e.curl("scale.default.example.com", "wake")
		if err != nil || code != 200 || body != "wake" {
			t.Fatalf("request at zero: %d %q %v", code, body, err)
		}
		t.Logf("request at zero answered 200 after %v (scale from zero through the activator)", time.Since(start).Round(time.Millisecond))
	})

	t.Run("chain member from zero through the gateway", func(t *testing.T) {
		if !chainOK {
			t.Skip("the chain does not work")
		}
		// reverse may scale to zero (a min-scale the user set is kept).
		e.knT(t, "service", "update", "reverse", "--scale-min", "0", "--annotation", "autoscaling.knative.dev/window=6s")
		defer e.run(5*time.Minute, e.kn, "service", "update", "reverse", "--scale-min", "1")
		rev := strings.TrimSpace(e.kubectlT(t, "get", "ksvc", "reverse", "-o", "jsonpath={.status.latestReadyRevisionName}"))
		waitFor(t, 3*time.Minute, "reverse at zero", func() (bool, error) {
			out, err := e.run(time.Minute, e.kubectl, "get", "pods", "-l", "serving.knative.dev/service=reverse", "-o", "name")
			if err != nil || strings.TrimSpace(out) == "" {
				return err == nil, err
			}
			// Say why not, if it never gets there.
			pods, _ := e.run(time.Minute, e.kubectl, "get", "pods,kpa", "-o", "wide")
			return false, fmt.Errorf("still running:\n%s", pods)
		})
		before := e.gatewayMetrics(t)
		start := time.Now()
		code, body, err := e.curl("hello.default.example.com", "abc")
		if err != nil || code != 200 || body != "CBA" {
			t.Fatalf("chain with reverse at zero: %d %q %v", code, body, err)
		}
		t.Logf("chain request with %s at zero answered after %v", rev, time.Since(start).Round(time.Millisecond))
		after := e.gatewayMetrics(t)
		key := `spright_gateway_held_requests_total{chain="default.hello"}`
		if after[key]-before[key] < 1 {
			t.Errorf("the gateway did not hold the request (held %v → %v)", before[key], after[key])
		}
	})

	t.Run("gateway pod deleted under load", func(t *testing.T) {
		if !chainOK {
			t.Skip("the chain does not work")
		}
		gw := strings.TrimSpace(e.kubectlT(t, "get", "pod", "-n", "spright-system", "-l", "app=spright-gateway", "-o", "jsonpath={.items[0].metadata.name}"))
		deleted := make(chan time.Time, 1)
		go func() {
			time.Sleep(5 * time.Second)
			deleted <- time.Now()
			e.run(time.Minute, e.kubectl, "delete", "pod", "-n", "spright-system", gw, "--wait=false")
		}()
		// Beside wrk, one request every 100 ms tells when the chain stopped
		// answering and when it answered again.
		var lastOK, firstFail, backOK time.Time
		stopProbe := make(chan struct{})
		probed := make(chan struct{})
		go func() {
			defer close(probed)
			client := &http.Client{Timeout: 2 * time.Second}
			for {
				select {
				case <-stopProbe:
					return
				case <-time.After(100 * time.Millisecond):
				}
				req, _ := http.NewRequest(http.MethodPost, "http://"+ingress+"/", strings.NewReader("abc"))
				req.Host = "hello.default.example.com"
				resp, err := client.Do(req)
				ok := false
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					ok = resp.StatusCode == 200 && string(b) == "CBA"
				}
				now := time.Now()
				switch {
				case ok && firstFail.IsZero():
					lastOK = now
				case !ok && firstFail.IsZero():
					firstFail = now
				case ok && backOK.IsZero():
					backOK = now
				}
			}
		}()
		r := e.wrk(t, "hello.default.example.com", 8, 30*time.Second, "-s", writeBodyScript(t))
		close(stopProbe)
		<-probed
		del := <-deleted
		t.Logf("wrk c=8 30s on the chain, gateway pod deleted at 5 s: %d requests, %d non-2xx, %d socket errors", r.requests, r.non2xx, r.socketErrors)
		if !firstFail.IsZero() {
			t.Logf("outage seen by a request every 100 ms: last answer %v after the delete, first failure %v after, answering again %v after (%v without answers)",
				lastOK.Sub(del).Round(time.Millisecond), firstFail.Sub(del).Round(time.Millisecond), backOK.Sub(del).Round(time.Millisecond), backOK.Sub(lastOK).Round(time.Millisecond))
		}
		e.kubectlT(t, "rollout", "status", "-n", "spright-system", "daemonset/spright-gateway", "--timeout=120s")
		waitFor(t, time.Minute, "the chain answering after the gateway restart", func() (bool, error) {
			code, body, err := e.curl("hello.default.example.com", "abc")
			return code == 200 && body == "CBA", err
		})
		// The new gateway pod kept the chain's pool (hugepages memfd named
		// under the pin directory) instead of making a new one.
		logs, _ := e.run(time.Minute, e.kubectl, "logs", "-n", "spright-system", "-l", "app=spright-gateway", "--tail=-1")
		if !strings.Contains(logs, "pool reopened from the previous gateway") {
			t.Errorf("the restarted gateway did not reopen the chain's pool:\n%s", tail(logs, 40))
		}
		if r.requests == 0 {
			t.Fatalf("no requests completed:\n%s", r.out)
		}
	})

	t.Run("kn service update of a chain member", func(t *testing.T) {
		if !chainOK {
			t.Skip("the chain does not work")
		}
		old := strings.TrimSpace(e.kubectlT(t, "get", "ksvc", "upper", "-o", "jsonpath={.status.latestReadyRevisionName}"))
		e.knT(t, "service", "update", "upper", "--env", "GREETING=hi")
		now := strings.TrimSpace(e.kubectlT(t, "get", "ksvc", "upper", "-o", "jsonpath={.status.latestReadyRevisionName}"))
		if now == old {
			t.Fatalf("no new revision (still %s)", old)
		}
		waitFor(t, 2*time.Minute, "the chain served by "+now, func() (bool, error) {
			code, body, err := e.curl("hello.default.example.com", "xyz")
			if code != 200 || body != "ZYX" {
				return false, err
			}
			// The old revision's pods are gone (Knative scales it down); a
			// request must not need them.
			return e.runningPods(t, old) == 0, nil
		})
	})

	t.Run("chain changed live under load", func(t *testing.T) {
		if !chainOK {
			t.Skip("the chain does not work")
		}
		// While wrk keeps the chain busy: a member joins (echo), the
		// entry's routes move to it (upper → echo: "ABC" instead of
		// "CBA"), and reverse leaves the chain. Each is a plain kn command
		// a user runs; the gateway applies each Chain change in place.
		// Every answer must be 200 with one of the two bodies.
		before := e.gatewayMetrics(t)
		steps := make(chan string, 8)
		go func() {
			defer close(steps)
			time.Sleep(3 * time.Second)
			for _, step := range [][]string{
				{"service", "create", "echo", "--image", httpfn, "--arg=--behavior=echo", "--annotation", "spright.dev/chain=hello"},
				{"service", "update", "upper", "--annotation", "spright.dev/routes=*=echo"},
				{"service", "update", "reverse", "--annotation", "spright.dev/chain-"},
			} {
				start := time.Now()
				out, err := e.run(3*time.Minute, e.kn, step...)
				if err != nil {
					steps <- fmt.Sprintf("FAILED kn %s: %v\n%s", strings.Join(step, " "), err, tail(out, 10))
					return
				}
				steps <- fmt.Sprintf("kn %s: %v", strings.Join(step[:3], " "), time.Since(start).Round(time.Second))
			}
			// Until the chain has only upper and echo, and the old
			// revisions' pods are gone.
			deadline := time.Now().Add(2 * time.Minute)
			for time.Now().Before(deadline) {
				out, _ := e.run(time.Minute, e.kubectl, "get", "chain", "hello", "-o", "jsonpath={.spec.functions[*].name}")
				if strings.TrimSpace(out) == "echo upper" || strings.TrimSpace(out) == "upper echo" {
					steps <- "chain functions: " + strings.TrimSpace(out)
					return
				}
				time.Sleep(time.Second)
			}
			steps <- "FAILED: the chain never became upper + echo"
		}()
		r := e.wrk(t, "hello.default.example.com", 8, 90*time.Second, "-s", writeCheckingScript(t, "CBA", "ABC"))
		failed := false
		for s := range steps {
			t.Log(s)
			failed = failed || strings.HasPrefix(s, "FAILED")
		}
		t.Logf("wrk c=8 90s on the chain across the changes: %d requests, %d non-2xx, %d socket errors; %s",
			r.requests, r.non2xx, r.socketErrors, strings.TrimSpace(wrkNumbers.bodies.FindString(r.out)))
		if failed {
			t.Fatal("a kn step failed")
		}
		m := wrkNumbers.bodies.FindStringSubmatch(r.out)
		if m == nil {
			t.Fatalf("wrk printed no body counts:\n%s", r.out)
		}
		first, second, wrong := atoi(m[1]), atoi(m[2]), atoi(m[3])
		if r.non2xx != 0 || r.socketErrors != 0 || wrong != 0 {
			var told []string
			for _, l := range strings.Split(r.out, "\n") {
				if strings.HasPrefix(l, "non-2xx ") {
					told = append(told, l)
				}
			}
			t.Errorf("requests failed across the live changes: %d non-2xx, %d socket errors, %d wrong bodies; first answers:\n%s",
				r.non2xx, r.socketErrors, wrong, strings.Join(told, "\n"))
		}
		if first == 0 || second == 0 {
			t.Errorf("answers CBA %d, ABC %d: the route change did not happen under load", first, second)
		}
		after := e.gatewayMetrics(t)
		key := `spright_gateway_chain_updates_total{chain="default.hello"}`
		if d := after[key] - before[key]; d < 3 {
			t.Errorf("gateway applied %v chain updates in place, want >= 3 (member added, routes, member removed)", d)
		}
		if code, body, err := e.curl("hello.default.example.com", "xyz"); code != 200 || body != "XYZ" {
			t.Errorf("after the changes: %d %q %v, want 200 XYZ (upper → echo)", code, body, err)
		}
		e.knDelete(t, "echo")
	})

	t.Run("Online Boutique as Knative Services", func(t *testing.T) {
		// The real shop (pkg/samples/boutique): ten kn services of Go SDK
		// functions in one chain, the frontend its entry with the web
		// protocol adapter in front, one itinerary per user action; then
		// Locust-like shoppers through the SPRIGHT ingress, every page's
		// content checked (carts, orders, currencies).
		var routes []string
		for act, itin := range boutique.Itineraries {
			routes = append(routes, act+"="+strings.Join(itin, ","))
		}
		sort.Strings(routes)
		services := []string{"frontend", "productcatalog", "currency", "cart", "recommendation", "ad", "shipping", "payment", "email", "checkout"}
		defer e.knDelete(t, services...)
		for _, svc := range services {
			args := []string{"service", "create", svc, "--image", sdkfn, "--arg=function", "--arg=--behavior=boutique-" + svc,
				"--annotation", "spright.dev/chain=boutique", "--annotation", "spright.dev/sdk=true", "--no-wait"}
			switch svc {
			case "frontend":
				args = append(args, "--annotation", "spright.dev/entry=true", "--annotation", "spright.dev/protocol=web",
					"--annotation", "spright.dev/routes="+strings.Join(routes, ";"))
			case "cart":
				// The carts live in the function's memory: one pod.
				args = append(args, "--scale-min", "1", "--scale-max", "1")
			}
			e.knT(t, args...)
		}
		waitFor(t, 5*time.Minute, "the ten services Ready and chain boutique Ready", func() (bool, error) {
			ready := e.knReady(t)
			for _, svc := range services {
				if !ready[svc] {
					return false, fmt.Errorf("%s not Ready: %v", svc, ready)
				}
			}
			out, err := e.run(time.Minute, e.kubectl, "get", "chain", "boutique", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
			return strings.TrimSpace(out) == "True", err
		})
		const host = "boutique.default.example.com"
		// Every user's connections go to the ingress, with the shop's host.
		client := func() *http.Client {
			d := &net.Dialer{Timeout: 5 * time.Second}
			return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
				DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
					return d.DialContext(ctx, network, ingress)
				},
			}}
		}
		waitFor(t, 2*time.Minute, "the shop's home page through the ingress", func() (bool, error) {
			resp, err := client().Get("http://" + host + "/")
			if err != nil {
				return false, err
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			return resp.StatusCode == 200 && strings.Contains(string(b), "Online Boutique"), fmt.Errorf("%d %.200s", resp.StatusCode, b)
		})
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		rep, err := shopper.Run(ctx, shopper.Config{BaseURL: "http://" + host, Users: 4, Duration: 20 * time.Second,
			ThinkMin: 0, ThinkMax: 50 * time.Millisecond, Seed: 1, Client: client})
		if err != nil {
			t.Fatal(err)
		}
		t.Logf("shoppers through the SPRIGHT ingress into chain boutique (10 kn services):\n%s", rep)
		total := rep.Total()
		if total.Errors != 0 || total.Count < 40 {
			t.Errorf("%d tasks, %d failed their checks (first: %s)", total.Count, total.Errors, total.FirstError)
		}
		if rep.Get("checkout") == nil || rep.Get("checkout").Count == 0 {
			t.Error("no checkout was made")
		}
	})

	t.Run("kn service delete cleans up the chain", func(t *testing.T) {
		e.knDelete(t, "upper", "reverse")
		waitFor(t, time.Minute, "chain hello and its Service gone", func() (bool, error) {
			_, err1 := e.run(time.Minute, e.kubectl, "get", "chain", "hello")
			_, err2 := e.run(time.Minute, e.kubectl, "get", "service", "hello-chain")
			return err1 != nil && err2 != nil, nil
		})
	})

	t.Run("uninstall", func(t *testing.T) {
		// docs/knative.md "Uninstall": revisions get their queue-proxy back,
		// then SPRIGHT goes.
		if stockQueue == "" || strings.Contains(stockQueue, "eproxy") {
			t.Skipf("no stock queue-proxy image recorded (%q)", stockQueue)
		}
		e.kubectlT(t, "patch", "configmap/config-deployment", "-n", "knative-serving", "--type", "merge",
			"-p", fmt.Sprintf(`{"data":{"queue-sidecar-image":%q}}`, stockQueue))
		waitFor(t, 3*time.Minute, "plain back on the stock queue-proxy", func() (bool, error) {
			out, err := e.run(time.Minute, e.kubectl, "get", "pods", "-l", "serving.knative.dev/service=plain",
				"-o", `jsonpath={range .items[*]}{.status.phase}{" "}{.spec.containers[?(@.name=="queue-proxy")].image}{"\n"}{end}`)
			lines := strings.Split(strings.TrimSpace(out), "\n")
			return len(lines) == 1 && strings.HasPrefix(lines[0], "Running ") && !strings.Contains(lines[0], "eproxy"), err
		})
		e.must(t, 5*time.Minute, e.ko, "delete", "-f", "config/", "--ignore-not-found")
		// The ingress left with SPRIGHT; the revision still answers through
		// its Kubernetes Service (kube-proxy → stock queue-proxy → user
		// container).
		// The private Service selects the pods (its public twin may lead to
		// the activator, which needs the ingress's Knative-Serving-* headers).
		rev := strings.TrimSpace(e.kubectlT(t, "get", "ksvc", "plain", "-o", "jsonpath={.status.latestReadyRevisionName}"))
		ip := strings.TrimSpace(e.kubectlT(t, "get", "service", rev+"-private", "-o", "jsonpath={.spec.clusterIP}"))
		waitFor(t, time.Minute, "plain answering through its revision Service", func() (bool, error) {
			out, err := e.run(30*time.Second, "curl", "-sS", "-m", "20", "--data-binary", "abc", "http://"+ip+"/")
			return out == "ABC", err
		})
		e.knDelete(t, "plain", "scale")
	})
}

// knDelete deletes kn services one by one and waits (itself) until they
// are gone: `kn service delete A B --wait` was seen spinning at 100% CPU
// for minutes after the first was gone.
func (e *env) knDelete(t *testing.T, names ...string) {
	t.Helper()
	for _, n := range names {
		e.knT(t, "service", "delete", n)
	}
	waitFor(t, 3*time.Minute, fmt.Sprintf("services %v gone", names), func() (bool, error) {
		for _, n := range names {
			if _, err := e.run(time.Minute, e.kubectl, "get", "ksvc", n); err == nil {
				return false, fmt.Errorf("%s still there", n)
			}
		}
		return true, nil
	})
}

// revisionRequests sums eproxy_requests_total over a revision's pods (each
// EPROXY's Prometheus port, 9091 on the pod IP).
func (e *env) revisionRequests(t *testing.T, revision string) float64 {
	t.Helper()
	ips := strings.Fields(e.kubectlT(t, "get", "pods", "-l", "serving.knative.dev/revision="+revision,
		"-o", "jsonpath={range .items[*]}{.status.podIP}{\" \"}{end}"))
	total := 0.0
	for _, ip := range ips {
		for k, v := range promText(t, "http://"+ip+":9091/metrics") {
			if strings.HasPrefix(k, "eproxy_requests_total{") {
				total += v
			}
		}
	}
	return total
}

// stockQueue is config-deployment's queue-sidecar-image before the swap.
var stockQueue string

// writeCheckingScript writes a wrk Lua script that POSTs "abc" and counts
// the 200 answers whose body is first, second, or neither; done prints
// "bodies: <first> <second> wrong <n>".
func writeCheckingScript(t *testing.T, first, second string) string {
	t.Helper()
	p := t.TempDir() + "/check.lua"
	script := fmt.Sprintf(`wrk.method = "POST"
wrk.body = "abc"
local threads = {}
function setup(thread) table.insert(threads, thread) end
function init(args) a = 0; b = 0; wrong = 0; told = 0 end
function response(status, headers, body)
  if status ~= 200 then
    if told < 5 then
      told = told + 1
      io.write("non-2xx " .. status .. " " .. string.gsub(string.sub(body, 1, 200), "\n", " ") .. "\n")
    end
    return
  end
  if body == %[1]q then a = a + 1 elseif body == %[2]q then b = b + 1 else wrong = wrong + 1 end
end
function done(summary, latency, requests)
  local ta, tb, tw = 0, 0, 0
  for _, th in ipairs(threads) do
    ta = ta + th:get("a"); tb = tb + th:get("b"); tw = tw + th:get("wrong")
  end
  io.write(string.format("bodies: %%d %%d wrong %%d\n", ta, tb, tw))
end
`, first, second)
	if err := os.WriteFile(p, []byte(script), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func atoi(s string) int { n, _ := strconv.Atoi(s); return n }

// writeBodyScript writes a wrk Lua script that POSTs "abc".
func writeBodyScript(t *testing.T) string {
	t.Helper()
	p := t.TempDir() + "/post.lua"
	if err := os.WriteFile(p, []byte("wrk.method = \"POST\"\nwrk.body = \"abc\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}
