package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
)

func TestParseFlagsDefaults(t *testing.T) {
	o, err := parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(o.systems, []string{"queue-proxy", "eproxy", "direct"}) ||
		!reflect.DeepEqual(o.concurrency, []int{1, 8, 32}) ||
		o.duration != 10*time.Second || o.idle != 10*time.Second ||
		!reflect.DeepEqual(o.mix, benchutil.PaperMix) || !o.fullDuplex || o.readiness != "tcp" {
		t.Errorf("defaults: %+v", o)
	}
	o, err = parseFlags([]string{"--quick", "--duration", "5s", "--systems", "direct, queue-proxy",
		"--eproxy-env", "A=1", "--eproxy-env", "B=x=y"})
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != 5*time.Second || o.idle != 3*time.Second || !reflect.DeepEqual(o.concurrency, []int{1, 32}) ||
		!reflect.DeepEqual(o.systems, []string{"direct", "queue-proxy"}) || !reflect.DeepEqual(o.eproxyEnv, []string{"A=1", "B=x=y"}) {
		t.Errorf("--quick --duration 5s ...: %+v", o)
	}
}

func TestParseFlagsRejects(t *testing.T) {
	for _, args := range [][]string{
		{"--systems", "envoy"},
		{"--systems", ","},
		{"--systems", "direct,direct"},
		{"--concurrency", "1,x"},
		{"--concurrency", "0"},
		{"--duration", "1500ms"},
		{"--warmup", "500ms"},
		{"--idle", "0s"},
		{"--behavior", "shout"},
		{"--service-time", "-1ms"},
		{"--readiness", "exec"},
		{"--mix", "100"},
		{"--eproxy-env", "NOEQUALS"},
		{"--threads", "0"},
		{"extra"},
	} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("parseFlags(%q): want an error", args)
		}
	}
}

func TestExpectFor(t *testing.T) {
	for _, tc := range []struct{ behavior, in, want string }{
		{"echo", "abc", "abc"}, {"upper", "abc-Z", "ABC-Z"}, {"reverse", "abc", "cba"},
	} {
		in := []byte(tc.in)
		got, ok := expectFor(tc.behavior, in)
		if !ok || string(got) != tc.want || string(in) != tc.in {
			t.Errorf("expectFor(%s, %q) = %q %v (input now %q)", tc.behavior, tc.in, got, ok, in)
		}
	}
	if _, ok := expectFor("nope", nil); ok {
		t.Error("unknown behaviour accepted")
	}
}

func TestQueueProxyEnvFromFlags(t *testing.T) {
	o, err := parseFlags([]string{"--container-concurrency", "4", "--readiness", "http", "--full-duplex=false"})
	if err != nil {
		t.Fatal(err)
	}
	env := strings.Join(queueProxyEnv(o).Environ(), "\n")
	for _, want := range []string{"CONTAINER_CONCURRENCY=4", "ENABLE_HTTP_FULL_DUPLEX=false", `"httpGet":{"path":"/healthz"`} {
		if !strings.Contains(env, want) {
			t.Errorf("environment lacks %q:\n%s", want, env)
		}
	}
	if s := envSummary(queueProxyEnv(o).Environ()); !strings.Contains(s, "CONTAINER_CONCURRENCY=4") || strings.Contains(s, "SERVING_NAMESPACE") {
		t.Errorf("envSummary = %s", s)
	}
}

func usage(cpu, wall time.Duration) *benchutil.CPUUsage {
	return &benchutil.CPUUsage{CPU: cpu, Wall: wall, HostBusy: 2 * cpu}
}

func fakeRun(c int, requests int64, sidecarCPU time.Duration) runResult {
	r := runResult{Concurrency: c, Threads: 1,
		Wrk: &benchutil.WrkResult{Requests: requests, RPS: float64(requests) / 10, CPU: time.Second,
			Latency: map[float64]time.Duration{50: time.Millisecond, 99: 3 * time.Millisecond}},
		CPU: cpuSample{Function: *usage(time.Second, 10*time.Second)}}
	if sidecarCPU > 0 {
		r.CPU.Sidecar = usage(sidecarCPU, 10*time.Second)
	}
	return r
}

func TestReportRatios(t *testing.T) {
	o, _ := parseFlags([]string{"--concurrency", "1,8"})
	e := &env{opts: o, qpEnv: queueProxyEnv(o)}
	r := newReport(o, e, benchutil.Machine{NProc: 2, Note: benchutil.SharedCoresNote})
	idle := &cpuSample{Sidecar: usage(0, 10*time.Second), Function: *usage(0, 10*time.Second)}
	// queue-proxy: 300us and 150us per request; EPROXY: 90us and 60us.
	r.add(&systemResult{System: sysQueueProxy, Idle: idle, Runs: []runResult{fakeRun(1, 10000, 3*time.Second), fakeRun(8, 20000, 3*time.Second)}})
	r.add(&systemResult{System: sysEProxy, Idle: idle, Runs: []runResult{fakeRun(1, 10000, 900*time.Millisecond), fakeRun(8, 20000, 1200*time.Millisecond)},
		Problems: []string{"c=8: 1 of 20000 responses were not 2xx"}})
	r.add(&systemResult{System: sysDirect, Runs: []runResult{fakeRun(1, 40000, 0)}})
	r.add(&systemResult{System: "eproxy2", Skipped: "no binary"})
	r.finish()

	if len(r.Ratios) != 2 {
		t.Fatalf("ratios = %+v", r.Ratios)
	}
	if x := r.Ratios[0]; x.Concurrency != 1 || x.Ratio < 0.2999 || x.Ratio > 0.3001 || !x.GoalMet {
		t.Errorf("c=1 ratio = %+v, want 90/300 = 0.3, met", x)
	}
	if x := r.Ratios[1]; x.Concurrency != 8 || x.Ratio < 0.3999 || x.Ratio > 0.4001 || x.GoalMet {
		t.Errorf("c=8 ratio = %+v, want 60/150 = 0.4, not met", x)
	}
	if len(r.Problems) != 1 || !strings.HasPrefix(r.Problems[0], "eproxy: ") || len(r.Skipped) != 1 {
		t.Errorf("problems %q, skipped %q", r.Problems, r.Skipped)
	}
	var direct entry
	for _, e := range r.Results {
		if e.System == sysDirect {
			direct = e
		}
	}
	if direct.SidecarCPUusPerReq != nil || direct.CPUCores != nil || direct.FunctionCPUusPerReq != 25 || direct.StackCPUusPerReq != 25 {
		t.Errorf("direct entry: %+v", direct)
	}

	var buf bytes.Buffer
	r.print(&buf)
	out := buf.String()
	for _, want := range []string{"nproc=2", benchutil.SharedCoresNote, "98% 100 B / 2% 10240 B", "c=1    90.0 / 300.0 us = 0.30 (met)",
		"c=8    60.0 / 150.0 us = 0.40 (not met)", "PROBLEMS:", "skipped:"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}

	path := filepath.Join(t.TempDir(), "out", "sidecar.json")
	if err := r.write(path); err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	results := doc["results"].([]any)
	first := results[0].(map[string]any)
	for _, k := range []string{"system", "concurrency", "rps", "p50_ms", "p99_ms", "cpu_cores", "sidecar_cpu_us_per_req",
		"idle_cpu_cores", "loadgen_cpu_seconds", "function_cpu_us_per_req"} {
		if _, ok := first[k]; !ok {
			t.Errorf("result entry lacks %q: %v", k, first)
		}
	}
	if d := results[len(results)-1].(map[string]any); d["sidecar_cpu_us_per_req"] != nil {
		t.Errorf("direct's sidecar_cpu_us_per_req = %v, want null", d["sidecar_cpu_us_per_req"])
	}
}

func TestLogFindings(t *testing.T) {
	path := filepath.Join(t.TempDir(), "log")
	log := `{"severity":"INFO","message":"Starting queue-proxy"}
{"severity":"ERROR","message":"error reverse proxying request; sockstat: sockets: used 9\nTCP: inuse 0","error":"context canceled"}
2026/11/23 12:12:12 httputil: ReverseProxy read error during body copy: use of closed network connection
{"level":"error","msg":"node agent unreachable"}
{"level":"info","msg":"an error word in an info line"}
`
	os.WriteFile(path, []byte(log), 0o644)
	got := logFindings(path)
	if len(got) != 1 || !strings.HasPrefix(got[0], "3 error line(s)") || !strings.HasSuffix(got[0], "first: error reverse proxying request: context canceled") {
		t.Errorf("logFindings = %q", got)
	}
	os.WriteFile(path, []byte(`{"severity":"INFO"}`+"\n"), 0o644)
	if got := logFindings(path); got != nil {
		t.Errorf("clean log: %q", got)
	}
}
