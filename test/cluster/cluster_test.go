package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// ingress is where the SPRIGHT gateway takes external traffic on the
// one-node cluster: its hostPort 80 on the node's address
// (hack/cluster-lib.sh CLUSTER_NODE_IP).
const ingress = "10.222.0.1:80"

// env is the cluster as a user sees it after `make cluster-up`.
type env struct {
	root      string // repository root
	vars      []string
	kubectl   string
	kn        string
	ko        string
	clusterUp bool // this test brought the cluster up (and takes it down)
}

// setup brings the cluster up (a no-op when it is up) and returns the
// commands a user has. Without the cluster's tools it skips, unless
// SPRIGHT_CLUSTER_REQUIRED is set (CI), when cluster-up builds them.
func setup(t *testing.T) *env {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: kubelet, containerd, CNI")
	}
	root, err := filepath.Abs("../..")
	if err != nil {
		t.Fatal(err)
	}
	kn := filepath.Join(root, "..", "shared", "tools", "kn")
	if _, err := os.Stat(kn); err != nil {
		kn, err = exec.LookPath("kn")
		if err != nil {
			t.Fatalf("kn: not at ../shared/tools/kn nor on PATH")
		}
	}
	// Minutes of a real cluster: only when asked for (make e2e-cluster, CI).
	if os.Getenv("SPRIGHT_CLUSTER_REQUIRED") == "" {
		t.Skip("the one-node Knative cluster test runs with `make e2e-cluster` (SPRIGHT_CLUSTER_REQUIRED=1)")
	}
	out, err := exec.Command(filepath.Join(root, "hack/build-kube-apiserver.sh"), "--print-dir").Output()
	if err != nil {
		t.Fatal(err)
	}
	kubeBin := strings.TrimSpace(string(out))
	up := exec.Command(filepath.Join(root, "hack/cluster-up.sh"))
	var stdout, stderr bytes.Buffer
	up.Stdout, up.Stderr = &stdout, &stderr
	start := time.Now()
	if err := up.Run(); err != nil {
		t.Fatalf("cluster-up: %v\n%s", err, tail(stderr.String(), 60))
	}
	e := &env{root: root, kn: kn, clusterUp: !strings.Contains(stderr.String(), "already up")}
	t.Logf("cluster-up (%s): %v", map[bool]string{true: "started", false: "already up"}[e.clusterUp], time.Since(start).Round(time.Second))
	if e.clusterUp && os.Getenv("SPRIGHT_CLUSTER_KEEP") == "" {
		t.Cleanup(func() {
			down := exec.Command(filepath.Join(root, "hack/cluster-down.sh"))
			if out, err := down.CombinedOutput(); err != nil {
				t.Errorf("cluster-down: %v\n%s", err, out)
			}
		})
	}
	// The exports cluster-up prints (KUBECONFIG, KO_DOCKER_REPO, ...).
	vars := os.Environ()
	for _, line := range strings.Split(stdout.String(), "\n") {
		line = strings.TrimPrefix(strings.TrimSpace(line), "export ")
		for _, kv := range strings.Fields(line) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				v = strings.ReplaceAll(v, "$PATH", os.Getenv("PATH"))
				vars = append(vars, k+"="+v)
			}
		}
	}
	e.vars = vars
	e.kubectl = filepath.Join(kubeBin, "kubectl")
	koDir, err := exec.Command(filepath.Join(root, "hack/ko-resolve.sh"), "--print-dir").Output()
	if err != nil {
		t.Fatal(err)
	}
	e.ko = filepath.Join(strings.TrimSpace(string(koDir)), "ko")
	return e
}

func tail(s string, lines int) string {
	l := strings.Split(s, "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// run runs a command in the repository root with the cluster's
// environment and returns its stdout; stderr goes into the error.
func (e *env) run(timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = e.root
	cmd.Env = e.vars
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err, stdout.String(), tail(stderr.String(), 30))
	}
	return stdout.String(), nil
}

func (e *env) must(t *testing.T, timeout time.Duration, name string, args ...string) string {
	t.Helper()
	out, err := e.run(timeout, name, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

func (e *env) kubectlT(t *testing.T, args ...string) string {
	t.Helper()
	return e.must(t, 3*time.Minute, e.kubectl, args...)
}

func (e *env) knT(t *testing.T, args ...string) string {
	t.Helper()
	return e.must(t, 5*time.Minute, e.kn, args...)
}

// koBuild builds an import path of this repository into the cluster's
// registry and returns the image reference.
func (e *env) koBuild(t *testing.T, path string) string {
	t.Helper()
	out := e.must(t, 10*time.Minute, e.ko, "build", "--sbom=none", path)
	return strings.TrimSpace(out)
}

// curl sends body to the ingress with the Host header and returns status
// and body, through the real curl.
func (e *env) curl(host, body string, headers ...string) (int, string, error) {
	args := []string{"-sS", "-m", "40", "-o", "-", "-w", "\n%{http_code}", "-H", "Host: " + host}
	for _, h := range headers {
		args = append(args, "-H", h)
	}
	if body != "" {
		args = append(args, "--data-binary", body)
	}
	args = append(args, "http://"+ingress+"/")
	out, err := e.run(45*time.Second, "curl", args...)
	if err != nil {
		return 0, out, err
	}
	i := strings.LastIndex(out, "\n")
	code, _ := strconv.Atoi(out[i+1:])
	return code, out[:i], nil
}

// waitFor polls cond every 500 ms until it holds or d passes.
func waitFor(t *testing.T, d time.Duration, what string, cond func() (bool, error)) {
	t.Helper()
	deadline := time.Now().Add(d)
	var last error
	for {
		ok, err := cond()
		if ok {
			return
		}
		last = err
		if time.Now().After(deadline) {
			t.Fatalf("%s: not after %v (last: %v)", what, d, last)
		}
		time.Sleep(500 * time.Millisecond)
	}
}

// gatewayMetrics reads the node gateway's Prometheus text (its admin port
// on the pod IP).
func (e *env) gatewayMetrics(t *testing.T) map[string]float64 {
	t.Helper()
	ip := strings.TrimSpace(e.kubectlT(t, "get", "pod", "-n", "spright-system", "-l", "app=spright-gateway",
		"-o", "jsonpath={.items[0].status.podIP}"))
	return promText(t, "http://"+ip+":9091/metrics")
}

func promText(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("metrics %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := map[string]float64{}
	for _, line := range strings.Split(string(b), "\n") {
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		if i < 0 {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err == nil {
			m[line[:i]] = v
		}
	}
	return m
}

// pods returns the Running pods of a revision.
func (e *env) runningPods(t *testing.T, revision string) int {
	t.Helper()
	out := e.kubectlT(t, "get", "pods", "-l", "serving.knative.dev/revision="+revision,
		"-o", "jsonpath={range .items[*]}{.status.phase}{\" \"}{.metadata.deletionTimestamp}{\"\\n\"}{end}")
	n := 0
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) == 1 && f[0] == "Running" {
			n++
		}
	}
	return n
}

// wrk runs the real wrk against the ingress and returns its summary.
type wrkResult struct {
	requests, non2xx, socketErrors int
	rps                            float64
	out                            string
}

var wrkNumbers = struct {
	requests, non2xx, errors, rps, bodies *regexp.Regexp
}{
	regexp.MustCompile(`(\d+) requests in`),
	regexp.MustCompile(`Non-2xx or 3xx responses: (\d+)`),
	regexp.MustCompile(`Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)`),
	regexp.MustCompile(`Requests/sec:\s+([\d.]+)`),
	regexp.MustCompile(`bodies: (\d+) (\d+) wrong (\d+)`),
}

func (e *env) wrk(t *testing.T, host string, conns int, d time.Duration, extra ...string) wrkResult {
	t.Helper()
	args := []string{"-t2", fmt.Sprintf("-c%d", conns), fmt.Sprintf("-d%ds", int(d.Seconds())), "-H", "Host: " + host}
	args = append(args, extra...)
	args = append(args, "http://"+ingress+"/")
	out, err := e.run(d+time.Minute, "wrk", args...)
	if err != nil {
		t.Fatal(err)
	}
	r := wrkResult{out: out}
	if m := wrkNumbers.requests.FindStringSubmatch(out); m != nil {
		r.requests, _ = strconv.Atoi(m[1])
	}
	if m := wrkNumbers.non2xx.FindStringSubmatch(out); m != nil {
		r.non2xx, _ = strconv.Atoi(m[1])
	}
	if m := wrkNumbers.errors.FindStringSubmatch(out); m != nil {
		for _, s := range m[1:] {
			n, _ := strconv.Atoi(s)
			r.socketErrors += n
		}
	}
	if m := wrkNumbers.rps.FindStringSubmatch(out); m != nil {
		r.rps, _ = strconv.ParseFloat(m[1], 64)
	}
	return r
}

// knList is `kn service list -o json`, reduced to name → Ready.
func (e *env) knReady(t *testing.T) map[string]bool {
	t.Helper()
	var list struct {
		Items []struct {
			Metadata struct{ Name string }
			Status   struct {
				Conditions []struct{ Type, Status string }
			}
		}
	}
	if err := json.Unmarshal([]byte(e.knT(t, "service", "list", "-o", "json")), &list); err != nil {
		t.Fatal(err)
	}
	ready := map[string]bool{}
	for _, s := range list.Items {
		for _, c := range s.Status.Conditions {
			if c.Type == "Ready" {
				ready[s.Metadata.Name] = c.Status == "True"
			}
		}
	}
	return ready
}

// series records a value over time, for the note and the failure message.
type series struct {
	mu     sync.Mutex
	points []string
}

func (s *series) add(p string) {
	s.mu.Lock()
	s.points = append(s.points, time.Now().Format("15:04:05")+" "+p)
	s.mu.Unlock()
}

func (s *series) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return strings.Join(s.points, "\n")
}
