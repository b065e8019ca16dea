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
	"github.com/spright-dev/spright/test/bench/internal/sidecar"
)

// goalRatio is the target: EPROXY spends at most a third of the
// queue-proxy's CPU per request.
const goalRatio = 1.0 / 3

// report is the JSON document.
type report struct {
	Timestamp string            `json:"timestamp"`
	Machine   benchutil.Machine `json:"machine"`
	Settings  settings          `json:"settings"`
	Idle      []idleEntry       `json:"idle"`
	Results   []entry           `json:"results"`
	// Ratios compare EPROXY with the queue-proxy at each concurrency both
	// ran at.
	Ratios   []ratio  `json:"ratios"`
	Skipped  []string `json:"skipped"`
	Problems []string `json:"problems"`
	Notes    []string `json:"notes,omitempty"`
}

type settings struct {
	Systems     []string            `json:"systems"`
	Concurrency []int               `json:"concurrency"`
	WrkThreads  int                 `json:"wrk_threads_max"`
	DurationS   float64             `json:"duration_s"`
	IdleS       float64             `json:"idle_s"`
	WarmupS     float64             `json:"warmup_s"`
	PayloadMix  []benchutil.Payload `json:"payload_mix"`
	Seed        int64               `json:"seed"`
	Function    functionSettings    `json:"function"`
	// QueueProxy describes the queue-proxy build; QueueProxyEnv is the
	// environment both sidecars got (EProxyExtraEnv is added for EPROXY).
	QueueProxy     string   `json:"queue_proxy"`
	QueueProxyEnv  []string `json:"sidecar_env"`
	EProxy         string   `json:"eproxy,omitempty"`
	EProxyExtraEnv []string `json:"eproxy_extra_env,omitempty"`
	Topology       string   `json:"topology"`
}

type functionSettings struct {
	Binary        string  `json:"binary"`
	Behavior      string  `json:"behavior"`
	ServiceTimeMS float64 `json:"service_time_ms"`
}

type idleEntry struct {
	System  string  `json:"system"`
	WindowS float64 `json:"window_s"`
	// The sidecar's figures are null for direct.
	SidecarCPUSeconds  *float64 `json:"sidecar_cpu_seconds"`
	SidecarCPUCores    *float64 `json:"cpu_cores"`
	FunctionCPUSeconds float64  `json:"function_cpu_seconds"`
	FunctionCPUCores   float64  `json:"function_cpu_cores"`
	OtherCores         float64  `json:"other_cpu_cores"`
	StealCores         float64  `json:"steal_cores"`
}

// entry is one (system, concurrency) measurement. cpu_cores and
// sidecar_cpu_us_per_req are the sidecar process's alone (null for direct):
// they divide its CPU by window_s, the wall time between the /proc samples
// around wrk, and by wrk's request count. stack_cpu_us_per_req adds the
// function's.
type entry struct {
	System               string   `json:"system"`
	Concurrency          int      `json:"concurrency"`
	WrkThreads           int      `json:"wrk_threads"`
	RPS                  float64  `json:"rps"`
	Requests             int64    `json:"requests"`
	P50ms                float64  `json:"p50_ms"`
	P75ms                float64  `json:"p75_ms"`
	P90ms                float64  `json:"p90_ms"`
	P99ms                float64  `json:"p99_ms"`
	Non2xx               int64    `json:"non_2xx"`
	SocketErrors         int64    `json:"socket_errors"`
	CPUCores             *float64 `json:"cpu_cores"`
	SidecarCPUSeconds    *float64 `json:"sidecar_cpu_seconds"`
	SidecarCPUusPerReq   *float64 `json:"sidecar_cpu_us_per_req"`
	IdleCPUCores         *float64 `json:"idle_cpu_cores"`
	FunctionCPUSeconds   float64  `json:"function_cpu_seconds"`
	FunctionCPUCores     float64  `json:"function_cpu_cores"`
	FunctionCPUusPerReq  float64  `json:"function_cpu_us_per_req"`
	StackCPUusPerReq     float64  `json:"stack_cpu_us_per_req"`
	LoadgenCPUSeconds    float64  `json:"loadgen_cpu_seconds"`
	LoadgenCPUusPerReq   float64  `json:"loadgen_cpu_us_per_req"`
	OtherCPUCores        float64  `json:"other_cpu_cores"`
	StealCores           float64  `json:"steal_cores"`
	DurationS            float64  `json:"duration_s"`
	WindowS              float64  `json:"window_s"`
	VsQueueProxyCPUPerRq *float64 `json:"sidecar_cpu_per_req_vs_queue_proxy,omitempty"`
}

type ratio struct {
	Concurrency       int     `json:"concurrency"`
	EProxyUSPerReq    float64 `json:"eproxy_cpu_us_per_req"`
	QueueProxyUSPerRq float64 `json:"queue_proxy_cpu_us_per_req"`
	Ratio             float64 `json:"ratio"`
	GoalMet           bool    `json:"goal_met"`
}

func newReport(o *options, e *env, m benchutil.Machine) *report {
	qp := fmt.Sprintf("knative.dev/serving %s cmd/queue", sidecar.ServingVersion)
	if o.queueProxy != "" {
		qp = o.queueProxy + " (given with --queue-proxy)"
	}
	return &report{
		Timestamp: time.Now().UTC().Format(time.RFC3339),
		Machine:   m,
		Settings: settings{
			Systems: o.systems, Concurrency: o.concurrency, WrkThreads: o.threads,
			DurationS: o.duration.Seconds(), IdleS: o.idle.Seconds(), WarmupS: o.warmup.Seconds(),
			PayloadMix: o.mix, Seed: o.seed,
			Function:      functionSettings{Binary: "test/fixtures/httpfn", Behavior: o.behavior, ServiceTimeMS: ms(o.serviceTime)},
			QueueProxy:    qp,
			QueueProxyEnv: e.qpEnv.Environ(),
			EProxy:        o.eproxy, EProxyExtraEnv: o.eproxyEnv,
			Topology: "one network namespace per system (loopback only); wrk inside it → sidecar on 127.0.0.1:" +
				fmt.Sprint(e.qpEnv.ServingPort) + " → function on 127.0.0.1:" + fmt.Sprint(e.qpEnv.UserPort),
		},
		Results:  []entry{},
		Ratios:   []ratio{},
		Skipped:  []string{},
		Problems: []string{}, // [] rather than null: "no problems" is a result
	}
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func f64(v float64) *float64 { return &v }

func cores(d, wall time.Duration) float64 {
	if wall <= 0 {
		return 0
	}
	return d.Seconds() / wall.Seconds()
}

func perReq(d time.Duration, n int64) float64 {
	if n <= 0 {
		return 0
	}
	return d.Seconds() * 1e6 / float64(n)
}

// otherCores is the CPU the machine spent on anything but the sidecar,
// the function and wrk during a window: other processes, and interrupt
// time not charged to any process (some of it the benchmark's own loopback
// traffic, so rarely zero under load).
func otherCores(s cpuSample, loadgen time.Duration) float64 {
	u := s.Function
	busy := u.HostBusy - u.CPU - loadgen
	if s.Sidecar != nil {
		busy -= s.Sidecar.CPU
	}
	return max(0, cores(busy, u.Wall))
}

// contentionThreshold is where "other" CPU starts to distort results on a
// small machine: a fifth of a core taken from the system or wrk.
const contentionThreshold = 0.2

func (r *report) noteContention(what string, other, steal float64) {
	if other > contentionThreshold {
		r.Notes = append(r.Notes, fmt.Sprintf("%s: the host spent %.2f cores on other work; the numbers are contaminated", what, other))
	}
	if steal > contentionThreshold {
		r.Notes = append(r.Notes, fmt.Sprintf("%s: the hypervisor stole %.2f cores", what, steal))
	}
}

func (r *report) add(sr *systemResult) {
	sys := sr.System
	for _, p := range sr.Problems {
		r.Problems = append(r.Problems, sys+": "+p)
	}
	for _, n := range sr.Notes {
		r.Notes = append(r.Notes, sys+": "+n)
	}
	if sr.Skipped != "" {
		r.Skipped = append(r.Skipped, sys+": "+sr.Skipped)
	}
	var idleCores *float64
	if s := sr.Idle; s != nil {
		u := s.Function
		i := idleEntry{System: sys, WindowS: u.Wall.Seconds(),
			FunctionCPUSeconds: u.CPU.Seconds(), FunctionCPUCores: u.Cores(),
			OtherCores: otherCores(*s, 0), StealCores: cores(u.HostSteal, u.Wall)}
		if s.Sidecar != nil {
			i.SidecarCPUSeconds, i.SidecarCPUCores = f64(s.Sidecar.CPU.Seconds()), f64(s.Sidecar.Cores())
			idleCores = i.SidecarCPUCores
		}
		r.Idle = append(r.Idle, i)
		r.noteContention(sys+": idle window", i.OtherCores, i.StealCores)
	}
	for _, run := range sr.Runs {
		w, fn := run.Wrk, run.CPU.Function
		e := entry{
			System: sys, Concurrency: run.Concurrency, WrkThreads: run.Threads,
			RPS: w.RPS, Requests: w.Requests,
			P50ms: ms(w.Latency[50]), P75ms: ms(w.Latency[75]), P90ms: ms(w.Latency[90]), P99ms: ms(w.Latency[99]),
			Non2xx: w.Non2xx, SocketErrors: w.Errors.Total(),
			IdleCPUCores:       idleCores,
			FunctionCPUSeconds: fn.CPU.Seconds(), FunctionCPUCores: fn.Cores(), FunctionCPUusPerReq: perReq(fn.CPU, w.Requests),
			LoadgenCPUSeconds: w.CPU.Seconds(), LoadgenCPUusPerReq: perReq(w.CPU, w.Requests),
			OtherCPUCores: otherCores(run.CPU, w.CPU), StealCores: cores(fn.HostSteal, fn.Wall),
			DurationS: r.Settings.DurationS, WindowS: fn.Wall.Seconds(),
		}
		e.StackCPUusPerReq = e.FunctionCPUusPerReq
		if sc := run.CPU.Sidecar; sc != nil {
			e.CPUCores, e.SidecarCPUSeconds = f64(sc.Cores()), f64(sc.CPU.Seconds())
			e.SidecarCPUusPerReq = f64(perReq(sc.CPU, w.Requests))
			e.StackCPUusPerReq += *e.SidecarCPUusPerReq
			e.WindowS = sc.Wall.Seconds()
		}
		r.noteContention(fmt.Sprintf("%s: c=%d", sys, run.Concurrency), e.OtherCPUCores, e.StealCores)
		r.Results = append(r.Results, e)
	}
}

// finish computes the EPROXY / queue-proxy ratios.
func (r *report) finish() {
	qp := map[int]float64{}
	for _, e := range r.Results {
		if e.System == sysQueueProxy && e.SidecarCPUusPerReq != nil {
			qp[e.Concurrency] = *e.SidecarCPUusPerReq
		}
	}
	for i, e := range r.Results {
		q, ok := qp[e.Concurrency]
		if e.System != sysEProxy || e.SidecarCPUusPerReq == nil || !ok || q <= 0 {
			continue
		}
		x := *e.SidecarCPUusPerReq / q
		r.Results[i].VsQueueProxyCPUPerRq = f64(x)
		r.Ratios = append(r.Ratios, ratio{Concurrency: e.Concurrency, EProxyUSPerReq: *e.SidecarCPUusPerReq,
			QueueProxyUSPerRq: q, Ratio: x, GoalMet: x <= goalRatio})
	}
}

func optf(p *float64, format string) string {
	if p == nil {
		return "-"
	}
	return fmt.Sprintf(format, *p)
}

func (r *report) print(out io.Writer) {
	m, s := r.Machine, r.Settings
	fmt.Fprintf(out, "# sidecar benchmark (queue-proxy vs EPROXY), %s, spright %s\n", r.Timestamp, m.Revision)
	fmt.Fprintf(out, "# machine: nproc=%d, kernel %s, cpu %q, loadavg at start %s\n", m.NProc, m.Kernel, m.CPUModel, m.LoadAvg)
	fmt.Fprintf(out, "# %s\n", benchutil.SharedCoresNote)
	fmt.Fprintf(out, "# %s; POST mix %s; wrk -d %gs per row; function: httpfn --behavior %s --service-time %vms\n",
		m.Wrk, benchutil.DescribeMix(s.PayloadMix), s.DurationS, s.Function.Behavior, s.Function.ServiceTimeMS)
	fmt.Fprintf(out, "# queue-proxy: %s; %s\n", s.QueueProxy, s.Topology)
	fmt.Fprintf(out, "# sidecar env (all of it in the JSON): %s\n", envSummary(s.QueueProxyEnv))
	fmt.Fprintln(out, "# sc_* = the sidecar process alone; fn_* = the function; direct has no sidecar")
	fmt.Fprintln(out)
	for _, i := range r.Idle {
		fmt.Fprintf(out, "idle  %-12s sidecar %s cores (%s cpu_s over %.1fs), function %.4f cores, other work on the host %.2f cores\n",
			i.System, optf(i.SidecarCPUCores, "%.4f"), optf(i.SidecarCPUSeconds, "%.2f"), i.WindowS, i.FunctionCPUCores, i.OtherCores)
	}
	fmt.Fprintln(out)
	if len(r.Results) == 0 {
		fmt.Fprintln(out, "(no results)")
	} else {
		tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', tabwriter.AlignRight)
		fmt.Fprintln(tw, "system\tc\trps\tp50_ms\tp99_ms\tnon2xx\tsock_err\tsc_cpu_s\tsc_cores\tsc_us/req\tfn_us/req\tstack_us/req\twrk_cpu_s\tother_cores\t")
		for _, e := range r.Results {
			fmt.Fprintf(tw, "%s\t%d\t%.0f\t%.3f\t%.3f\t%d\t%d\t%s\t%s\t%s\t%.1f\t%.1f\t%.2f\t%.2f\t\n",
				e.System, e.Concurrency, e.RPS, e.P50ms, e.P99ms, e.Non2xx, e.SocketErrors,
				optf(e.SidecarCPUSeconds, "%.2f"), optf(e.CPUCores, "%.2f"), optf(e.SidecarCPUusPerReq, "%.1f"),
				e.FunctionCPUusPerReq, e.StackCPUusPerReq, e.LoadgenCPUSeconds, e.OtherCPUCores)
		}
		tw.Flush()
	}
	if len(r.Ratios) > 0 {
		fmt.Fprintf(out, "\nEPROXY / queue-proxy sidecar CPU per request (goal ≤ %.2f):\n", goalRatio)
		for _, x := range r.Ratios {
			verdict := "not met"
			if x.GoalMet {
				verdict = "met"
			}
			fmt.Fprintf(out, "  c=%-4d %.1f / %.1f us = %.2f (%s)\n", x.Concurrency, x.EProxyUSPerReq, x.QueueProxyUSPerRq, x.Ratio, verdict)
		}
	}
	for _, list := range []struct {
		title string
		items []string
	}{{"skipped", r.Skipped}, {"notes", r.Notes}, {"PROBLEMS", r.Problems}} {
		if len(list.items) == 0 {
			continue
		}
		fmt.Fprintf(out, "\n%s:\n", list.title)
		for _, p := range list.items {
			fmt.Fprintln(out, "  "+strings.ReplaceAll(p, "\n", "\n  "))
		}
	}
}

// envSummary picks the sidecar variables that change per-request work.
func envSummary(env []string) string {
	var keep []string
	for _, kv := range env {
		k, _, _ := strings.Cut(kv, "=")
		switch k {
		case "CONTAINER_CONCURRENCY", "ENABLE_HTTP_FULL_DUPLEX", "SERVING_REQUEST_METRICS_BACKEND",
			"SERVING_ENABLE_REQUEST_LOG", "TRACING_CONFIG_BACKEND", "SERVING_READINESS_PROBE":
			keep = append(keep, kv)
		}
	}
	return strings.Join(keep, " ")
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
