package scenario

import (
	"math"
	"os"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestParseKubepodsCgroup(t *testing.T) {
	const id = "6a7fd9e7471f769933a109823f9b21294a2287d4163e4d47187168067fc69c33"
	for _, tc := range []struct {
		name, in, uid, container string
		ok                       bool
	}{
		{"cgroupfs (this node: cgroup v1, cgroupDriver cgroupfs)",
			"9:name=systemd:/kubepods/burstable/pod7a918ab8-87a6-4f3f-92a9-84b828fd880b/" + id + "\n" +
				"1:cpu:/kubepods/burstable/pod7a918ab8-87a6-4f3f-92a9-84b828fd880b/" + id + "\n0::/kubepods/burstable/pod7a918ab8-87a6-4f3f-92a9-84b828fd880b/" + id + "\n",
			"7a918ab8-87a6-4f3f-92a9-84b828fd880b", id, true},
		{"guaranteed QoS: no class directory",
			"0::/kubepods/pod7a918ab8-87a6-4f3f-92a9-84b828fd880b/" + id + "\n",
			"7a918ab8-87a6-4f3f-92a9-84b828fd880b", id, true},
		{"systemd driver",
			"0::/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod7a918ab8_87a6_4f3f_92a9_84b828fd880b.slice/cri-containerd-" + id + ".scope\n",
			"7a918ab8-87a6-4f3f-92a9-84b828fd880b", id, true},
		{"a host process", "9:name=systemd:/\n1:cpu:/\n0::/\n", "", "", false},
		{"another container runtime's tree", "0::/docker/" + id + "\n", "", "", false},
	} {
		uid, c, ok := parseKubepodsCgroup(tc.in)
		if uid != tc.uid || c != tc.container || ok != tc.ok {
			t.Errorf("%s: got %q %q %v, want %q %q %v", tc.name, uid, c, ok, tc.uid, tc.container, tc.ok)
		}
	}
}

const testPods = `{"items": [
 {"metadata": {"name": "bench-kn-upper-00001-deployment-x", "namespace": "spright-bench", "uid": "u-bench",
   "labels": {"serving.knative.dev/revision": "bench-kn-upper-00001"}},
  "spec": {"containers": [{"name": "user-container", "image": "localhost:5000/spright/httpfn-1@sha256:a"},
                          {"name": "queue-proxy", "image": "localhost:5000/knative/queue@sha256:b"}]},
  "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
   "containerStatuses": [{"name": "user-container", "containerID": "containerd://cuser", "restartCount": 0},
                         {"name": "queue-proxy", "containerID": "containerd://cqueue", "restartCount": 1}]}},
 {"metadata": {"name": "bench-sp-upper-00001-deployment-y", "namespace": "spright-bench", "uid": "u-bench2",
   "labels": {"serving.knative.dev/revision": "bench-sp-upper-00001"}},
  "spec": {"containers": [{"name": "user-container", "image": "x"},
                          {"name": "queue-proxy", "image": "localhost:5000/spright/eproxy-859414db3119cbbc@sha256:c"}]},
  "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}],
   "containerStatuses": [{"name": "queue-proxy", "containerID": "containerd://ceproxy"}]}},
 {"metadata": {"name": "spright-gateway-abc", "namespace": "spright-system", "uid": "u-gw", "labels": {"app": "spright-gateway"}},
  "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
 {"metadata": {"name": "spright-controller-1", "namespace": "spright-system", "uid": "u-ctl", "labels": {"app": "spright-controller"}},
  "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
 {"metadata": {"name": "activator-1", "namespace": "knative-serving", "uid": "u-act"},
  "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
 {"metadata": {"name": "coredns-1", "namespace": "kube-system", "uid": "u-dns"},
  "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": "True"}]}},
 {"metadata": {"name": "ingress-conformance-1", "namespace": "serving-tests", "uid": "u-conf"},
  "status": {"phase": "Pending", "conditions": [{"type": "Ready", "status": "False"}]}}
]}`

func TestClassifyNode(t *testing.T) {
	pods, err := parseKubePods([]byte(testPods))
	if err != nil {
		t.Fatal(err)
	}
	pc := classifyPods(pods, benchNS)
	const self = 500
	procs := []nodeProc{
		{PID: 1, PPID: 0, Comm: "process_api"},
		{PID: 2, PPID: 0, Comm: "kthreadd"},
		{PID: 3, PPID: 2, Comm: "ksoftirqd/0"},
		{PID: 10, PPID: 1, Comm: "containerd"},
		{PID: 11, PPID: 10, Comm: "bridge"}, // a CNI plugin run by containerd
		{PID: 12, PPID: 1, Comm: "kubelet"},
		{PID: 13, PPID: 12, Comm: "iptables"},
		{PID: 20, PPID: 1, Comm: "containerd-shim"},
		{PID: 21, PPID: 20, Comm: "pause", PodUID: "u-bench", Container: "csandbox"},
		{PID: 22, PPID: 20, Comm: "httpfn", PodUID: "u-bench", Container: "cuser"},
		{PID: 23, PPID: 20, Comm: "queue", PodUID: "u-bench", Container: "cqueue"},
		{PID: 24, PPID: 20, Comm: "eproxy", PodUID: "u-bench2", Container: "ceproxy"},
		{PID: 30, PPID: 20, Comm: "gateway", PodUID: "u-gw", Container: "cgw"},
		{PID: 31, PPID: 20, Comm: "controller", PodUID: "u-ctl", Container: "cctl"},
		{PID: 32, PPID: 20, Comm: "activator", PodUID: "u-act", Container: "cact"},
		{PID: 33, PPID: 20, Comm: "coredns", PodUID: "u-dns", Container: "cdns"},
		{PID: 34, PPID: 20, Comm: "conformance", PodUID: "u-conf", Container: "cconf"},
		{PID: 35, PPID: 20, Comm: "new", PodUID: "u-unlisted", Container: "cnew"},
		{PID: 40, PPID: 1, Comm: "bash"},
		{PID: 41, PPID: 40, Comm: "go"},
		{PID: self, PPID: 41, Comm: "bench"},
		{PID: 501, PPID: self, Comm: "wrk"},
		{PID: 502, PPID: 501, Comm: "child-of-wrk"},
	}
	groups := classifyNode(procs, pc, []int{10, 12, 999 /* gone */}, self)
	got := map[int]string{}
	var names []string
	for _, g := range groups {
		if !g.Exact {
			t.Errorf("group %s is not Exact", g.Class)
		}
		names = append(names, g.Class)
		for _, pid := range g.PIDs {
			if prev, dup := got[pid]; dup {
				t.Errorf("pid %d in %s and %s", pid, prev, g.Class)
			}
			got[pid] = g.Class
		}
	}
	if !slices.IsSorted(names) {
		t.Errorf("groups not in class order: %v", names)
	}
	want := map[int]string{
		1: classOther, 2: classKernel, 3: classKernel,
		10: classKubernetes, 11: classKubernetes, 12: classKubernetes, 13: classKubernetes, 20: classKubernetes,
		21: classKubernetes, 22: classFunctions, 23: SysQueueProxy, 24: SysEProxy,
		30: classGateway, 31: classSprightCtl, 32: classKnative, 33: classKubernetes,
		34: classOther, 35: classOther, 40: classOther, 41: classOther,
	}
	for pid, c := range want {
		if got[pid] != c {
			t.Errorf("pid %d (%s): class %q, want %q", pid, procs[slices.IndexFunc(procs, func(p nodeProc) bool { return p.PID == pid })].Comm, got[pid], c)
		}
	}
	for _, pid := range []int{self, 501, 502} {
		if c, ok := got[pid]; ok {
			t.Errorf("pid %d (the driver's tree) classified as %s; it is measured apart", pid, c)
		}
	}
}

// TestExactGroup: an Exact group is its pids only; another group counts
// descendants too.
func TestExactGroup(t *testing.T) {
	cmd := exec.Command("sh", "-c", "sleep 5; true")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	sh := cmd.Process.Pid
	var n int
	for i := 0; i < 100; i++ {
		s, err := snapshot([]Group{{Class: "x", PIDs: []int{sh}}})
		if err != nil {
			t.Fatal(err)
		}
		if n = len(s.procs); n >= 2 {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if n != 2 {
		t.Fatalf("sh and its sleep: %d processes in the group", n)
	}
	s, err := snapshot([]Group{{Class: "x", PIDs: []int{sh}, Exact: true}})
	if err != nil {
		t.Fatal(err)
	}
	if len(s.procs) != 1 {
		t.Fatalf("Exact group of sh: %d processes, want 1", len(s.procs))
	}
}

func TestNodeAdjust(t *testing.T) {
	u := cpuUse{Wall: 10 * time.Second, Host: 1.5, Self: 0.05,
		ByClass: map[string]float64{classFunctions: 0.3, classGateway: 0.2, classKubernetes: 0.4, classOther: 0.1}}
	u.Total = 1.0
	const loadgen = 0.4
	a := nodeAdjust(u, loadgen)
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9 }
	if !near(a.ByClass[classUnattributed], 1.5-1.0-0.4-0.05) {
		t.Errorf("unattributed %v", a.ByClass[classUnattributed])
	}
	if _, ok := a.ByClass[classOther]; ok {
		t.Error("foreign work left in the classes")
	}
	if !near(a.Total, 1.5-0.4-0.05-0.1) {
		t.Errorf("node CPU %v, want host - wrk - driver - foreign = %v", a.Total, 1.5-0.4-0.05-0.1)
	}
	en := Entry{Requests: 1000}
	fillCPU(&en, a, loadgen)
	if !near(en.OtherCPUCores, 0.1) || !near(en.CPUCores, a.Total) || !near(en.LoadGenCPUCores, loadgen) {
		t.Errorf("entry: cpu %v other %v loadgen %v", en.CPUCores, en.OtherCPUCores, en.LoadGenCPUCores)
	}
	if u.ByClass[classOther] != 0.1 {
		t.Error("nodeAdjust changed its argument's map")
	}
	if dp := dataPathCores(a.ByClass); !near(dp, 0.3+0.2+(1.5-1.0-0.4-0.05)) {
		t.Errorf("data path %v: want functions + gateway + unattributed, without kubernetes", dp)
	}
	// Processes counted more than the host's busy time (tick rounding):
	// no negative remainder.
	b := nodeAdjust(cpuUse{Host: 0.5, ByClass: map[string]float64{classFunctions: 0.6}}, 0)
	if b.ByClass[classUnattributed] != 0 || !near(b.Total, 0.6) {
		t.Errorf("over-counted window: %+v", b)
	}
}

func TestSidecarClass(t *testing.T) {
	for img, want := range map[string]string{
		"localhost:5000/spright/eproxy-859414db3119cbbc154cd539a19dcb6a@sha256:e7a5": SysEProxy,
		"localhost:5000/knative/queue@sha256:c41cc6c6":                               SysQueueProxy,
		"gcr.io/knative-releases/knative.dev/serving/cmd/queue@sha256:1":             SysQueueProxy,
		"ko.local/eproxy:latest": SysEProxy,
	} {
		if got := sidecarClass(img); got != want {
			t.Errorf("sidecarClass(%s) = %s, want %s", img, got, want)
		}
	}
}

func TestStockQueueImage(t *testing.T) {
	yaml := "kind: ConfigMap\nmetadata:\n  name: config-deployment\ndata:\n  _example: |-\n    # queue-sidecar-image: not this\n" +
		"  queue-sidecar-image: localhost:5000/knative/queue@sha256:c41cc6c650123d44\n"
	if got := stockQueueImage([]byte(yaml)); got != "localhost:5000/knative/queue@sha256:c41cc6c650123d44" {
		t.Errorf("got %q", got)
	}
	if got := stockQueueImage([]byte(`  queue-sidecar-image: "gcr.io/q@sha256:1"`)); got != "gcr.io/q@sha256:1" {
		t.Errorf("quoted: got %q", got)
	}
	if got := stockQueueImage([]byte("nothing")); got != "" {
		t.Errorf("none: got %q", got)
	}
	// The YAML of the cluster on this machine, when there is one.
	if b, err := os.ReadFile(knativeCoreYAML); err == nil {
		if got := stockQueueImage(b); sidecarClass(got) != SysQueueProxy || imageDigest(got) == "" {
			t.Errorf("%s: stock image %q", knativeCoreYAML, got)
		}
	}
}

func TestParseClusterExports(t *testing.T) {
	out := "export KUBECONFIG=/var/lib/spright-cluster/admin.kubeconfig\n" +
		"export KO_DOCKER_REPO=localhost:5000/spright KO_DEFAULTBASEIMAGE=localhost:5000/spright/base:static\n" +
		"export PATH=/k/bin:/ko:$PATH\n"
	vars := parseClusterExports(out, []string{"HOME=/root", "PATH=/usr/bin:/bin"})
	get := func(k string) string {
		v := ""
		for _, kv := range vars {
			if x, ok := strings.CutPrefix(kv, k+"="); ok {
				v = x // the last one wins, as in exec
			}
		}
		return v
	}
	if get("PATH") != "/k/bin:/ko:/usr/bin:/bin" || get("KO_DOCKER_REPO") != "localhost:5000/spright" ||
		get("KO_DEFAULTBASEIMAGE") != "localhost:5000/spright/base:static" || get("KUBECONFIG") == "" || get("HOME") != "/root" {
		t.Errorf("vars: %q", vars)
	}
}

func TestKnCreateArgs(t *testing.T) {
	s := clusterSystems(".spright-bench.example.com")
	if len(s) != 5 {
		t.Fatalf("%d systems", len(s))
	}
	var kn clusterSystem
	for _, x := range s {
		if x.Name == SysKnative {
			kn = x
		}
	}
	upper := kn.Services[len(kn.Services)-1]
	args := strings.Join(knCreateArgs(benchNS, "img", upper), " ")
	for _, want := range []string{
		"service create bench-kn-upper -n spright-bench --image img --arg=--behavior=upper",
		"--arg=--front=http://10.222.0.1:80 --arg=--front-host-suffix=.spright-bench.example.com",
		"--annotation-revision autoscaling.knative.dev/min-scale=1",
		"--annotation-revision autoscaling.knative.dev/max-scale=1",
		"--annotation-revision autoscaling.knative.dev/target-burst-capacity=0",
	} {
		if !strings.Contains(args, want) {
			t.Errorf("kn args lack %q:\n%s", want, args)
		}
	}
	if kn.Headers["X-Chain-Next"] != "bench-kn-reverse" || kn.Entry != "bench-kn-upper" {
		t.Errorf("stock chain: entry %s, headers %v", kn.Entry, kn.Headers)
	}
	for _, x := range s {
		for _, svc := range x.Services {
			if !strings.HasPrefix(svc.Name, "bench-") {
				t.Errorf("service %s: not bench-", svc.Name)
			}
		}
		if x.Name == SysSDK {
			a := strings.Join(knCreateArgs(benchNS, "img", x.Services[0]), " ")
			if !strings.Contains(a, "--image img --arg=function --arg=--behavior=upper --annotation-revision") ||
				!strings.Contains(a, "spright.dev/sdk=true") || strings.Count(a, "--behavior") != 1 || !x.Services[0].SDK {
				t.Errorf("SDK entry args: %s", a)
			}
		}
		if x.Name == SysSkmsg {
			a := strings.Join(knCreateArgs(benchNS, "img", x.Services[0]), " ")
			if !strings.Contains(a, "--annotation spright.dev/chain=bench-hello --annotation spright.dev/entry=true --annotation spright.dev/routes=*=bench-sp-reverse") {
				t.Errorf("chain entry args: %s", a)
			}
		}
	}
	if got := string(helloAnswer([]byte("abc"))); got != "CBA" {
		t.Errorf("helloAnswer(abc) = %q", got)
	}
	if got := chainHost("bench-hello", benchNS, "example.com"); got != "bench-hello.spright-bench.example.com" {
		t.Errorf("chainHost with a domain: %s", got)
	}
	if got := chainHost("bench-hello", benchNS, ""); got != "bench-hello-chain.spright-bench.svc.cluster.local" {
		t.Errorf("chainHost without a domain: %s", got)
	}
}

func TestParseKnativeDomain(t *testing.T) {
	d, err := parseKnativeDomain([]byte(`{"data": {"_example": "...", "example.com": ""}}`))
	if err != nil || d != "example.com" {
		t.Errorf("got %q %v", d, err)
	}
	d, err = parseKnativeDomain([]byte(`{"data": {"example.com": "", "internal.example.com": "selector:\n  app: x"}}`))
	if err != nil || d != "example.com" {
		t.Errorf("with a selector domain: got %q %v", d, err)
	}
	if _, err := parseKnativeDomain([]byte(`{"data": {"_example": "..."}}`)); err == nil {
		t.Error("no domain: want an error")
	}
}

func TestOtherRuns(t *testing.T) {
	cmd := exec.Command("sleep", "7.123")
	if err := cmd.Start(); err != nil {
		t.Skip(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	found := otherRuns("7.123")
	if len(found) != 1 || !strings.HasPrefix(found[0], strconv.Itoa(cmd.Process.Pid)+" sleep 7.123") {
		t.Errorf("otherRuns = %q", found)
	}
}

func TestLogErrorLines(t *testing.T) {
	text := `{"level":"info","msg":"gateway ready"}
{"level":"info","logger":"http","msg":"http: proxy error: read tcp 10.244.0.5:1234->10.244.0.9:8012: read: connection reset by peer"}
{"severity":"ERROR","message":"error reverse proxying request"}
{"severity":"ERROR","message":"error reverse proxying request; sockstat: ...","error":"context canceled"}
{"level":"info","msg":"httputil: ReverseProxy read error during body copy: unexpected EOF"}
{"level":"info","msg":"fine"}`
	n, first := logErrorLines(text)
	if n != 3 || first != "http: proxy error: read tcp 10.244.0.5:1234->10.244.0.9:8012: read: connection reset by peer" {
		t.Errorf("got %d, first %q", n, first)
	}
	// Knative's queue-proxy: the error after a long sockstat dump.
	qp := `[pod/x/queue-proxy] {"severity":"ERROR","logger":"queueproxy","message":"error reverse proxying request; sockstat: sockets: used 74\nTCP: inuse 24 ` +
		strings.Repeat("x", 500) + `","error":"net/http: HTTP/1.x transport connection broken: http: ContentLength=10240 with Body length 0"}`
	if _, first := logErrorLines(qp); first != "[pod/x/queue-proxy] error reverse proxying request: net/http: HTTP/1.x transport connection broken: http: ContentLength=10240 with Body length 0" {
		t.Errorf("queue-proxy line: %q", first)
	}
}

func TestUnsettled(t *testing.T) {
	pods, err := parseKubePods([]byte(testPods))
	if err != nil {
		t.Fatal(err)
	}
	// The bench pod on queue-proxy is not on EPROXY; the conformance pod
	// (not a revision) is not looked at.
	if r, foreign := unsettled(pods, "localhost:5000/knative/queue@sha256:b"); !strings.Contains(r, "bench-sp-upper") || foreign {
		t.Errorf("unsettled = %q %v, want the bench pod on the other sidecar", r, foreign)
	}
	pods.Items = slices.DeleteFunc(pods.Items, func(p kubePod) bool { return p.Metadata.Name == "bench-sp-upper-00001-deployment-y" })
	if r, _ := unsettled(pods, "localhost:5000/knative/queue@sha256:b"); r != "" {
		t.Errorf("unsettled = %q, want settled", r)
	}
	ts := "2026-01-01T00:00:00Z"
	pods.Items[0].Metadata.DeletionTimestamp = &ts
	if r, foreign := unsettled(pods, ""); !strings.Contains(r, "terminating") || foreign {
		t.Errorf("terminating bench pod: %q %v", r, foreign)
	}
	pods.Items[0].Metadata.DeletionTimestamp = nil
	// Someone else's revision rolling: foreign.
	other := pods.Items[0]
	other.Metadata.Namespace, other.Metadata.Name = "default", "plain-00001-deployment-z"
	other.Status.Conditions = nil
	pods.Items = append(pods.Items, other)
	if r, foreign := unsettled(pods, ""); !strings.Contains(r, "default/plain") || !foreign {
		t.Errorf("foreign revision not Ready: %q %v", r, foreign)
	}
}

// TestClusterRatios: the report pairs the cluster's systems as the paper
// does: spright-skmsg / knative, eproxy / queue-proxy.
func TestClusterRatios(t *testing.T) {
	f := &File{Scenario: "cluster"}
	for _, s := range []string{SysKnative, SysQueueProxy, SysSkmsg, SysSDK, SysEProxy} {
		f.Entries = append(f.Entries, Entry{System: s, Concurrency: 8, RPS: 100, P50Ms: 1, P99Ms: 2, CPUCores: 1,
			CPUByClass: map[string]float64{classFunctions: 1}, Requests: 1000, CPUUsPerRequest: 10})
	}
	f.Entries[0].Extra = map[string]float64{"datapath_us_per_request": 200}
	f.Entries[2].Extra = map[string]float64{"datapath_us_per_request": 50}
	if n := datapathNotes(f); len(n) != 1 || !strings.Contains(n[0], "control planes), spright-skmsg / knative: c=8 50.00 / 200.0 µs = 0.250×") {
		t.Errorf("datapath notes %q", n)
	}
	var pairs []string
	for _, r := range ratios(f) {
		pairs = append(pairs, r.Num+"/"+r.Den)
	}
	if strings.Join(pairs, " ") != "spright-skmsg/knative spright-sdk/knative eproxy/queue-proxy" {
		t.Errorf("pairs %v", pairs)
	}
}
