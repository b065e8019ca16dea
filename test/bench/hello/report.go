package main

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
)

// sharedCoresNote is printed and stored with every result.
const sharedCoresNote = benchutil.SharedCoresNote

// report is the JSON document; its field names are what downstream
// comparisons (other systems' benchmarks) key on.
type report struct {
	Timestamp string            `json:"timestamp"`
	Machine   benchutil.Machine `json:"machine"`
	Settings  settings          `json:"settings"`
	Idle      []idleEntry       `json:"idle"`
	Results   []entry           `json:"results"`
	Problems  []string          `json:"problems"`
	Notes     []string          `json:"notes,omitempty"`
	modes     []modeResult      // for the table, in run order
}

type settings struct {
	Chain       string   `json:"chain"`
	Body        string   `json:"body"`
	Modes       []string `json:"modes"`
	Concurrency []int    `json:"concurrency"`
	WrkThreads  int      `json:"wrk_threads_max"`
	DurationS   float64  `json:"duration_s"`
	IdleS       float64  `json:"idle_s"`
	WarmupS     float64  `json:"warmup_s"`
}

type idleEntry struct {
	System     string  `json:"system"`
	WindowS    float64 `json:"window_s"`
	CPUSeconds float64 `json:"cpu_seconds"`
	CPUCores   float64 `json:"cpu_cores"`
	Processes  int     `json:"processes"`
	HugePages  string  `json:"pool_hugepages"`
	OtherCores float64 `json:"other_cpu_cores"`
	StealCores float64 `json:"steal_cores"`
}

// entry is one (system, concurrency) measurement. cpu_cores divides the
// chain's CPU by window_s, the wall time between the two /proc samples
// around wrk (slightly longer than duration_s, wrk's -d, because of wrk's
// start-up and shutdown); all of wrk's requests fall inside that window,
// so cpu_us_per_req is consistent with it.
type entry struct {
	System            string  `json:"system"`
	Concurrency       int     `json:"concurrency"`
	WrkThreads        int     `json:"wrk_threads"`
	RPS               float64 `json:"rps"`
	Requests          int64   `json:"requests"`
	P50ms             float64 `json:"p50_ms"`
	P75ms             float64 `json:"p75_ms"`
	P90ms             float64 `json:"p90_ms"`
	P99ms             float64 `json:"p99_ms"`
	Non2xx            int64   `json:"non_2xx"`
	SocketErrors      int64   `json:"socket_errors"`
	CPUSeconds        float64 `json:"cpu_seconds"`
	CPUCores          float64 `json:"cpu_cores"`
	CPUusPerReq       float64 `json:"cpu_us_per_req"`
	LoadgenCPUSeconds float64 `json:"loadgen_cpu_seconds"`
	IdleCPUCores      float64 `json:"idle_cpu_cores"`
	PoolHugePages     string  `json:"pool_hugepages"`
	OtherCPUCores     float64 `json:"other_cpu_cores"`
	StealCores        float64 `json:"steal_cores"`
	DurationS         float64 `json:"duration_s"`
	WindowS           float64 `json:"window_s"`
}

func systemName(mode string) string { return "spright-" + mode }

func newReport(o *options, m benchutil.Machine) *report {
	return &report{
		Timestamp: time.Now().UTC().Format(time.RFC3339),
		Machine:   m,
		Settings: settings{
			Chain: o.config, Body: "abc", Modes: o.modes, Concurrency: o.concurrency, WrkThreads: o.threads,
			DurationS: o.duration.Seconds(), IdleS: o.idle.Seconds(), WarmupS: o.warmup.Seconds(),
		},
		Problems: []string{}, // [] rather than null: "no problems" is a result
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func (r *report) add(mr *modeResult) {
	r.modes = append(r.modes, *mr)
	sys := systemName(mr.Mode)
	for _, p := range mr.Problems {
		r.Problems = append(r.Problems, sys+": "+p)
	}
	for _, n := range mr.Notes {
		r.Notes = append(r.Notes, sys+": "+n)
	}
	var idleCores float64
	if u := mr.Idle; u != nil {
		idleCores = u.Cores()
		i := idleEntry{System: sys, WindowS: u.Wall.Seconds(),
			CPUSeconds: u.CPU.Seconds(), CPUCores: idleCores, Processes: u.Processes, HugePages: mr.HugePages,
			OtherCores: otherCores(*u, 0), StealCores: cores(u.HostSteal, u.Wall)}
		r.Idle = append(r.Idle, i)
		r.noteContention(sys+": idle window", i.OtherCores, i.StealCores)
	}
	for _, run := range mr.Runs {
		w := run.Wrk
		e := entry{
			System: sys, Concurrency: run.Concurrency, WrkThreads: run.Threads,
			RPS: w.RPS, Requests: w.Requests,
			P50ms: ms(w.Latency[50]), P75ms: ms(w.Latency[75]), P90ms: ms(w.Latency[90]), P99ms: ms(w.Latency[99]),
			Non2xx: w.Non2xx, SocketErrors: w.Errors.Total(),
			CPUSeconds: run.SUT.CPU.Seconds(), CPUCores: run.SUT.Cores(),
			LoadgenCPUSeconds: w.CPU.Seconds(), IdleCPUCores: idleCores, PoolHugePages: mr.HugePages,
			DurationS: r.Settings.DurationS, WindowS: run.SUT.Wall.Seconds(),
			OtherCPUCores: otherCores(run.SUT, w.CPU), StealCores: cores(run.SUT.HostSteal, run.SUT.Wall),
		}
		r.noteContention(fmt.Sprintf("%s: c=%d", sys, run.Concurrency), e.OtherCPUCores, e.StealCores)
		if w.Requests > 0 {
			e.CPUusPerReq = run.SUT.CPU.Seconds() * 1e6 / float64(w.Requests)
		}
		r.Results = append(r.Results, e)
	}
}

func cores(d, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return d.Seconds() / wall.Seconds()
}

// otherCores is the CPU the machine spent on anything but the system under
// test and the load generator during a window, in cores: other processes,
// and interrupt/softirq time not charged to a process (some of which is
// the benchmark's own loopback traffic, so it is rarely exactly zero
// under load).
func otherCores(u benchutil.CPUUsage, loadgen time.Duration) float64 {
	return max(0, cores(u.HostBusy-u.CPU-loadgen, u.Wall))
}

// contentionThreshold is where "other" CPU starts to distort results on a
// small machine: a fifth of a core taken from the chain or wrk.
const contentionThreshold = 0.2

func (r *report) noteContention(what string, other, steal float64) {
	if other > contentionThreshold {
		r.Notes = append(r.Notes, fmt.Sprintf("%s: the host spent %.2f cores on other work; the numbers are contaminated", what, other))
	}
	if steal > contentionThreshold {
		r.Notes = append(r.Notes, fmt.Sprintf("%s: the hypervisor stole %.2f cores", what, steal))
	}
}

func (r *report) print(out io.Writer) {
	m := r.Machine
	fmt.Fprintf(out, "# hello chain benchmark, %s, spright %s\n", r.Timestamp, m.Revision)
	fmt.Fprintf(out, "# machine: nproc=%d, kernel %s, cpu %q, nr_hugepages=%s, loadavg at start %s\n",
		m.NProc, m.Kernel, m.CPUModel, m.HugePages, m.LoadAvg)
	fmt.Fprintf(out, "# %s\n", sharedCoresNote)
	fmt.Fprintf(out, "# %s; POST %q; wrk -d %gs per row; sut = spright run + function processes\n",
		m.Wrk, r.Settings.Body, r.Settings.DurationS)
	fmt.Fprintln(out)
	for _, i := range r.Idle {
		fmt.Fprintf(out, "idle  %-14s %.2f cpu_s over %.1fs = %.3f cores (%d processes; pool on hugepages: %s; other work on the host: %.2f cores)\n",
			i.System, i.CPUSeconds, i.WindowS, i.CPUCores, i.Processes, i.HugePages, i.OtherCores)
	}
	fmt.Fprintln(out)
	if len(r.Results) == 0 {
		fmt.Fprintln(out, "(no results)")
	}
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "mode\tconcurrency\trps\tp50_ms\tp99_ms\tnon2xx\tsock_err\tsut_cpu_s\tsut_cpu_cores\tcpu_us_per_req\twrk_cpu_s\tother_cores\t")
	for _, e := range r.Results {
		fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.3f\t%.3f\t%d\t%d\t%.2f\t%.2f\t%.1f\t%.2f\t%.2f\t\n",
			strings.TrimPrefix(e.System, "spright-"), e.Concurrency, e.RPS, e.P50ms, e.P99ms, e.Non2xx, e.SocketErrors,
			e.CPUSeconds, e.CPUCores, e.CPUusPerReq, e.LoadgenCPUSeconds, e.OtherCPUCores)
	}
	if len(r.Results) > 0 {
		tw.Flush()
	}
	if len(r.Notes) > 0 {
		fmt.Fprintln(out, "\nnotes:")
		for _, n := range r.Notes {
			fmt.Fprintln(out, "  "+n)
		}
	}
	if len(r.Problems) > 0 {
		fmt.Fprintln(out, "\nPROBLEMS:")
		for _, p := range r.Problems {
			fmt.Fprintln(out, "  "+strings.ReplaceAll(p, "\n", "\n  "))
		}
	}
}

func (r *report) write(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return fmt.Errorf("results directory: %w", err)
	}
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return fmt.Errorf("encode results: %w", err)
	}
	if err := os.WriteFile(path, append(b, '\n'), 0o644); err != nil {
		return fmt.Errorf("write results: %w", err)
	}
	return nil
}
