package e2e

// Knative's own prober code (knative.dev/networking/pkg/prober, as the
// activator's revision backends manager uses it) against EPROXY, which
// must answer exactly as queue-proxy does.

import (
	"context"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	nethttp "knative.dev/networking/pkg/http"
	netheader "knative.dev/networking/pkg/http/header"
	"knative.dev/networking/pkg/prober"
	pkgnet "knative.dev/pkg/network"
	"knative.dev/serving/pkg/queue/readiness"
)

// probePodIP is the pod IP stand-in for the probe tests.
const probePodIP = "127.0.0.45"

// activatorProbeTimeout is the activator's per-probe timeout
// (pkg/activator/net/revision_backends.go).
const activatorProbeTimeout = 300 * time.Millisecond

// activatorProbe probes the pod as the activator's revisionWatcher.probe
// does: GET /healthz, K-Network-Probe: queue, the activator's user agent,
// 200 with body "queue".
func activatorProbe(ep *eproxyProc) (bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), activatorProbeTimeout)
	defer cancel()
	return prober.Do(ctx, pkgnet.NewProberTransport(), "http://"+ep.traffic+nethttp.HealthCheckPath,
		prober.WithHeader(netheader.ProbeKey, "queue"),
		prober.WithHeader(netheader.UserAgentKey, netheader.ActivatorUserAgent),
		prober.ExpectsStatusCodes([]int{http.StatusOK}),
		prober.ExpectsBody("queue"))
}

// kubeletProbe is the readiness probe Knative puts on the queue-proxy
// container: HTTP GET on the serving port with K-Network-Probe: queue.
func kubeletProbe(ep *eproxyProc) (int, string, error) {
	req, _ := http.NewRequest(http.MethodGet, "http://"+ep.traffic+"/", nil)
	req.Header.Set(netheader.ProbeKey, "queue")
	req.Header.Set("User-Agent", netheader.KubeProbeUAPrefix+"1.29")
	resp, err := (&http.Client{Transport: pkgnet.NewProberTransport(), Timeout: 12 * time.Second}).Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), nil
}

// probePod starts a node agent (as root; otherwise EPROXY runs without
// one, which changes nothing for probes), a user container that is not
// listening yet, and EPROXY with readinessProbe (nil: the TCP probe Knative
// gives a container without one).
func probePod(t *testing.T, name string, readinessProbe func(userPort int32) *corev1.Probe) (*eproxyProc, *userContainer) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "no-agent.sock")
	if os.Geteuid() == 0 {
		sock = startPodAgent(t, name, nil).ControlSocketPath()
	}
	user := newUserContainer(t, nil)
	env := eproxyEnv(t, probePodIP, sock, user)
	env["SPRIGHT_METRICS_PORT"] = freePortOn(t, probePodIP)
	port := intstr.Parse(user.port).IntVal
	p := &corev1.Probe{
		ProbeHandler:     corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{Host: "127.0.0.1", Port: intstr.FromInt32(port)}},
		SuccessThreshold: 1,
	}
	if readinessProbe != nil {
		p = readinessProbe(port)
	}
	enc, err := readiness.EncodeSingleProbe(p) // as the revision reconciler encodes it
	if err != nil {
		t.Fatal(err)
	}
	env["SERVING_READINESS_PROBE"] = enc
	return startEproxy(t, env), user
}

func eventually(t *testing.T, d time.Duration, what string, probe func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ok, err := probe()
		if ok {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %v (last: %v)", what, d, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func TestEproxyAnswersKnativeProbes(t *testing.T) {
	ep, user := probePod(t, "probes", nil)

	// The user container is not listening: not ready.
	if ok, err := activatorProbe(ep); ok {
		t.Fatalf("activator probe passed with the user container down")
	} else {
		t.Logf("user container down: activator probe not ready (%v)", err)
	}

	// It comes up: the activator's probe passes.
	user.start(t)
	eventually(t, 5*time.Second, "activator probe after the user container came up", func() (bool, error) { return activatorProbe(ep) })
	if code, body, err := kubeletProbe(ep); err != nil || code != http.StatusOK || body != "queue" {
		t.Errorf("kubelet readiness probe = %d %q %v, want 200 \"queue\"", code, body, err)
	}

	// K-Network-Probe: activator is not for the queue: 400, as queue-proxy.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	ok, err := prober.Do(ctx, pkgnet.NewProberTransport(), "http://"+ep.traffic+nethttp.HealthCheckPath,
		prober.WithHeader(netheader.ProbeKey, "activator"),
		prober.WithHeader(netheader.UserAgentKey, netheader.ActivatorUserAgent),
		prober.ExpectsStatusCodes([]int{http.StatusBadRequest}))
	if !ok {
		t.Errorf("K-Network-Probe: activator: want 400 (%v)", err)
	}

	// The KIngress probe: 200 echoing K-Network-Hash; without a hash, 400.
	ok, err = prober.Do(ctx, pkgnet.NewProberTransport(), "http://"+ep.traffic+"/",
		prober.WithHeader(netheader.ProbeKey, netheader.ProbeValue),
		prober.WithHeader(netheader.HashKey, "c0ffee-1234"),
		prober.WithHeader(netheader.UserAgentKey, netheader.IngressReadinessUserAgent),
		prober.ExpectsStatusCodes([]int{http.StatusOK}),
		prober.ExpectsHeader(netheader.HashKey, "c0ffee-1234"))
	if !ok {
		t.Errorf("K-Network-Probe: probe with a hash: %v", err)
	}
	ok, err = prober.Do(ctx, pkgnet.NewProberTransport(), "http://"+ep.traffic+"/",
		prober.WithHeader(netheader.ProbeKey, netheader.ProbeValue),
		prober.ExpectsStatusCodes([]int{http.StatusBadRequest}))
	if !ok {
		t.Errorf("K-Network-Probe: probe without a hash: want 400 (%v)", err)
	}

	// The user container goes away: not ready again.
	user.stop()
	if ok, err := activatorProbe(ep); ok {
		t.Errorf("activator probe passed after the user container stopped")
	} else {
		t.Logf("user container stopped: activator probe not ready (%v)", err)
	}

	// Back up, then SIGTERM: probes fail with 503 while EPROXY drains.
	user.start(t)
	eventually(t, 12*time.Second, "activator probe after the user container came back", func() (bool, error) { return activatorProbe(ep) })
	ep.cmd.Process.Signal(syscall.SIGTERM)
	time.Sleep(100 * time.Millisecond) // the signal is handled
	code, _, err := kubeletProbe(ep)
	if err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("kubelet probe while draining = %d %v, want 503", code, err)
	}
	if ok, err := activatorProbe(ep); ok {
		t.Errorf("activator probe passed while draining")
	} else {
		t.Logf("draining: activator probe not ready (%v)", err)
	}
	select {
	case <-ep.done:
	case <-time.After(10 * time.Second):
		t.Errorf("eproxy still running 10 s after SIGTERM (drain quiet period 1 s)")
	}
}

// SERVING_READINESS_PROBE with an HTTP GET: EPROXY runs the user
// container's own readiness probe when Knative probes it.
func TestEproxyRunsServingReadinessProbe(t *testing.T) {
	ep, user := probePod(t, "readiness", func(port int32) *corev1.Probe {
		return &corev1.Probe{
			ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{
				Host: "127.0.0.1", Port: intstr.FromInt32(port), Path: "/ready", Scheme: corev1.URISchemeHTTP}},
			PeriodSeconds: 1, TimeoutSeconds: 1, SuccessThreshold: 1, FailureThreshold: 1,
		}
	})
	user.notReady.Store(true)
	user.start(t)

	ok, err := activatorProbe(ep)
	if ok {
		t.Fatalf("activator probe passed while the user container's /ready answers 503")
	}
	t.Logf("user readiness 503: activator probe not ready (%v)", err)
	if code, body, err := kubeletProbe(ep); err != nil || code != http.StatusServiceUnavailable {
		t.Errorf("kubelet probe = %d %q %v, want 503", code, body, err)
	}

	user.notReady.Store(false)
	eventually(t, 5*time.Second, "activator probe once /ready answers 200", func() (bool, error) { return activatorProbe(ep) })
	if code, body, err := kubeletProbe(ep); err != nil || code != http.StatusOK || body != "queue" {
		t.Errorf("kubelet probe = %d %q %v, want 200 \"queue\"", code, body, err)
	}
}
