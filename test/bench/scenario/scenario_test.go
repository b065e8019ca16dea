package scenario

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
	"github.com/spright-dev/spright/test/bench/internal/hop"
)

func TestRegistryOrder(t *testing.T) {
	want := []string{"sidecar", "chain2", "boutique", "boutique-shop", "motion", "parking", "xdp", "crossnode", "reconfig", "cluster"}
	if got := Names(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Fatalf("scenarios = %v, want %v", got, want)
	}
}

func TestWriteChainConfig(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "chain.yaml")
	name, err := writeChainConfig("../../../config/samples/parking/chain.yaml", dst, "poll", "127.0.0.1:12345", scaleServiceTimes(0.1))
	if err != nil {
		t.Fatal(err)
	}
	if name != "parking" {
		t.Errorf("name = %q", name)
	}
	b, _ := os.ReadFile(dst)
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["mode"] != "poll" || m["listen"] != "127.0.0.1:12345" {
		t.Errorf("mode, listen = %v, %v", m["mode"], m["listen"])
	}
	if !strings.Contains(string(b), "serviceTime: 43.5ms") {
		t.Errorf("plate-detection's 435ms not scaled to 43.5ms:\n%s", b)
	}
}

func TestLoadSample(t *testing.T) {
	fns, routes, err := loadSample("../../..", "boutique-synthetic", 1)
	if err != nil {
		t.Fatal(err)
	}
	if len(fns) != 9 || len(routes["ch4"]) != 11 {
		t.Fatalf("functions %d, ch4 %v", len(fns), routes["ch4"])
	}
	for _, f := range fns {
		if f.Name == "checkout" && f.ServiceTime != 260*time.Millisecond {
			t.Errorf("checkout service time %v", f.ServiceTime)
		}
	}
	for _, m := range boutiqueMix {
		if routes[m.Chain] == nil {
			t.Errorf("mix chain %s not in the sample", m.Chain)
		}
	}
}

func TestMotionTrace(t *testing.T) {
	got := motionTrace([]burst{{0, 2}, {5 * time.Second, 2}}, time.Second/2)
	want := []time.Duration{0, 500 * time.Millisecond, 5500 * time.Millisecond, 6 * time.Second}
	if len(got) != len(want) {
		t.Fatalf("trace %v, want %v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("trace %v, want %v", got, want)
		}
	}
}

func TestLatencyStats(t *testing.T) {
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	var e Entry
	latencyStats(&e, ds)
	if e.Requests != 100 || e.P50Ms != 50 || e.P95Ms != 95 || e.P99Ms != 99 || e.MaxMs != 100 || e.MeanMs != 50.5 {
		t.Fatalf("stats %+v", e)
	}
}

func TestDiffRetired(t *testing.T) {
	tick := 10 * time.Millisecond
	k1 := benchutil.ProcKey{PID: 1, StartTime: 1}
	k2 := benchutil.ProcKey{PID: 2, StartTime: 2}
	now := time.Now()
	a := cpuSnap{at: now, procs: map[benchutil.ProcKey]classed{k1: {"functions", 100}, k2: {"gateway", 50}}, retired: map[string]uint64{}}
	// k1 was stopped with 130 ticks (retired); k2 ran 50 more; a new
	// functions process has 20.
	b := cpuSnap{at: now.Add(time.Second), procs: map[benchutil.ProcKey]classed{k2: {"gateway", 100}, {PID: 3, StartTime: 3}: {"functions", 20}},
		retired: map[string]uint64{"functions": 130}}
	u := diff(a, b, tick)
	if math.Abs(u.ByClass["functions"]-0.5) > 1e-9 || math.Abs(u.ByClass["gateway"]-0.5) > 1e-9 || math.Abs(u.Total-1) > 1e-9 {
		t.Fatalf("usage %+v, want functions 0.5 (30 retired + 20 new ticks), gateway 0.5", u)
	}
}

func TestNginxConf(t *testing.T) {
	k := &knativePath{dir: "/tmp/x", port: 1234, chains: map[string][]string{"hello": {"upper", "reverse"}}}
	k.qpEnv.ServingPort = 8012
	for i, n := range []string{"upper", "reverse"} {
		k.pods = append(k.pods, &pod{spec: FnSpec{Name: n}, podIP: "10.0.0." + string(rune('2'+i)), hostIP: "10.0.1." + string(rune('1'+i))})
	}
	c := k.nginxConf()
	for _, want := range []string{
		"upstream fn_upper { server 10.0.0.2:8012;",
		"location = /fn/reverse { proxy_set_header Connection \"\"; proxy_pass http://fn_reverse/; }",
		"location = /chain/hello { proxy_set_header Connection \"\"; proxy_set_header X-Chain-Next \"reverse\"; proxy_pass http://fn_upper/; }",
		"listen 10.0.1.2:1234;",
		"daemon off;",
	} {
		if !strings.Contains(c, want) {
			t.Errorf("nginx.conf lacks %q:\n%s", want, c)
		}
	}
}

func TestReport(t *testing.T) {
	dir := t.TempDir()
	idle := 0.0
	kidle := 0.02
	f := &File{Scenario: "chain2", Title: "two", Machine: benchutil.Machine{NProc: 2, Kernel: "6.18"}, Command: "go run ./test/bench chain2",
		Entries: []Entry{
			{System: SysSkmsg, Label: "idle", CPUCores: 0, IdleCPUCores: &idle, CPUByClass: map[string]float64{"gateway": 0}},
			{System: SysKnative, Label: "idle", CPUCores: 0.02, IdleCPUCores: &kidle, CPUByClass: map[string]float64{"nginx": 0.02}},
		}}
	for _, c := range []int{1, 8} {
		f.Entries = append(f.Entries,
			Entry{System: SysSkmsg, Concurrency: c, RPS: 4000 * float64(c), P50Ms: 0.2, P99Ms: 1, MeanMs: 0.3, CPUCores: 1, Requests: 100,
				CPUUsPerRequest: 50, AllInUsPerRequest: 60, CPUByClass: map[string]float64{"gateway": 0.5, "functions": 0.5}, LoadGenCPUCores: 0.3},
			Entry{System: SysKnative, Concurrency: c, RPS: 1000 * float64(c), P50Ms: 1, P99Ms: 4, MeanMs: 1.2, CPUCores: 1.5, Requests: 100,
				CPUUsPerRequest: 500, AllInUsPerRequest: 600, CPUByClass: map[string]float64{"nginx": 0.5, "queue-proxy": 0.5, "functions": 0.5}, LoadGenCPUCores: 0.1},
			Entry{System: SysDirect, Concurrency: c, RPS: 8000 * float64(c), P50Ms: 0.1, P99Ms: 0.5, MeanMs: 0.15, CPUCores: 1, Requests: 100,
				CPUUsPerRequest: 25, AllInUsPerRequest: 30, CPUByClass: map[string]float64{"server": 1}, LoadGenCPUCores: 0.3})
	}
	f.Entries = append(f.Entries,
		Entry{System: SysSkmsg, Concurrency: 8, Label: LabelClose, RPS: 2000, P50Ms: 1, P99Ms: 2, CPUCores: 1, Requests: 100,
			CPUUsPerRequest: 100, AllInUsPerRequest: 120, CPUByClass: map[string]float64{"gateway": 0.5, "functions": 0.5}},
		Entry{System: SysDirect, Concurrency: 8, Label: LabelClose, RPS: 4000, P50Ms: 0.5, P99Ms: 1, CPUCores: 1, Requests: 100,
			CPUUsPerRequest: 50, AllInUsPerRequest: 60, CPUByClass: map[string]float64{"server": 1}},
		hopEntry(hop.Result{Mode: hop.ModeThread, Hops: 3000, Seconds: 0.03, NsPerHop: 10000, CPUNsPerHop: 5000, HostCPUNsPerHop: 10000}, 3),
		hopEntry(hop.Result{Mode: hop.ModeNetpoll, Hops: 3000, Seconds: 0.012, NsPerHop: 4000, CPUNsPerHop: 4000, HostCPUNsPerHop: 4000}, 3))
	if err := f.Write(dir); err != nil {
		t.Fatal(err)
	}
	md := filepath.Join(dir, "RESULTS.md")
	if err := Report(dir, md); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(md)
	if err != nil {
		t.Fatal(err)
	}
	s := string(b)
	for _, want := range []string{
		"2 cores, shared by the load generator and the system under test",
		"| chain2 | spright-skmsg / knative | 8 |  | 4.000× | 0.200× | – | 0.250× | 0.667× | 0.100× | 0.100× | – |",
		"| chain2 | spright-skmsg / knative | 0 | idle | – | – | – | – | 0× | – | – | 0× |",
		"| chain2 | spright-skmsg / direct | 8 |  | 0.500× | 2.000× | – | 2.000× | 1.000× | 2.000× | 2.000× | – |",
		"| chain2 | spright-skmsg / direct | 8 | close | 0.500× | 2.000× | – | 2.000× | 1.000× | 2.000× | 2.000× | – |",
		// The floor: 3 hops of 10 µs = 33,333 rps, 15 µs CPU, 30 µs all-in.
		"| chain2 | spright-skmsg / skmsg-hop | 1 |  | 0.120× | – | – | – | 2.000× | 3.333× | 2.000× | – |",
		"| skmsg-hop | 1 |  | 33333 | 0.030 | – | – | – | – | 0.500 | hop 0.500 | – | 15.00 | 30.00 |",
		"![chain2_ratio](results/chain2_ratio.png)",
		"## xdp:", "Not available",
		"## boutique:", "Not run",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("RESULTS.md lacks %q:\n%s", want, s)
		}
	}
	for _, p := range []string{"chain2_rps.png", "chain2_latency.png", "chain2_cpu.png", "chain2_ratio.png", "chain2.csv"} {
		if st, err := os.Stat(filepath.Join(dir, p)); err != nil || st.Size() == 0 {
			t.Errorf("%s not written: %v", p, err)
		}
	}
	csv, _ := os.ReadFile(filepath.Join(dir, "chain2.csv"))
	if !strings.HasPrefix(string(csv), strings.Join(CSVHeader, ",")) || !strings.Contains(string(csv), "cpu_cores_queue-proxy") {
		t.Errorf("csv:\n%s", csv)
	}
}

func TestFoldPerfScript(t *testing.T) {
	script := `spright 1234/1240 [001] 100.000001:     500000 cpu-clock:ppp: 
	ffffffff8110a0b0 finish_task_switch.isra.0+0x90 ([kernel.kallsyms])
	ffffffff81f0c2a3 __schedule+0x2f3 ([kernel.kallsyms])
	          46a2b1 runtime.futex.abi0+0x21 (/tmp/spright)
	          43b0c5 runtime.notesleep+0x85 (/tmp/spright)

spright 1234/1240 [001] 100.000002:     500000 cpu-clock:ppp: 
	          5d1e31 github.com/spright-dev/spright/pkg/gateway.(*Gateway).serve+0x31 (/tmp/spright)
	          44ff55 runtime.main+0x2d5 (/tmp/spright)

upper fn 99/99 [000] 100.000003:     500000 cpu-clock:ppp: 
	          0 [unknown] ([unknown])

`
	st := foldPerfScript([]byte(script))
	want := map[string]int{
		"spright;runtime.notesleep;runtime.futex.abi0;__schedule_[k];finish_task_switch.isra.0_[k]": 1,
		"spright;runtime.main;github.com/spright-dev/spright/pkg/gateway.(*Gateway).serve":          1,
		"upper fn;[unknown]": 1,
	}
	if len(st) != len(want) {
		t.Fatalf("folded %v, want %v", st, want)
	}
	for k, n := range want {
		if st[k] != n {
			t.Errorf("folded %v: want %q = %d", st, k, n)
		}
	}
	sum := summarizeStacks(st)
	for _, w := range []string{"3 samples", "sched/ctxsw 33.3%", "spright 33.3%", "unresolved leaf frames 33.3%"} {
		if !strings.Contains(sum, w) {
			t.Errorf("summary %q lacks %q", sum, w)
		}
	}
}
