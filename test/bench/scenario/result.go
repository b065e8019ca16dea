package scenario

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"time"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
)

// The systems compared, as they appear in results.
const (
	SysSkmsg   = "spright-skmsg"
	SysPoll    = "spright-poll"
	SysKnative = "knative"
	SysEProxy  = "eproxy"
	// SysEProxySplice is EPROXY with steering off: every connection spliced.
	SysEProxySplice = "eproxy-splice"
	SysQueueProxy   = "queue-proxy"
	SysDirect       = "direct"
	// SysHop is the per-hop floor of the descriptor path (chain2): not a
	// system serving requests but test/bench/hop's measurement, scaled to
	// the hops of one request.
	SysHop = "skmsg-hop"
)

// Entry is one system at one load level: the one row type of every
// scenario's results. Latencies are in milliseconds, CPU in cores (CPU
// seconds per wall second) averaged over the measured window.
type Entry struct {
	System string `json:"system"`
	// Concurrency is wrk's connections or the closed-loop user count (0
	// for open-loop replays such as motion and parking).
	Concurrency int `json:"concurrency"`
	// Label narrows the entry: a chain (boutique "ch4"), an event class.
	Label string  `json:"label,omitempty"`
	RPS   float64 `json:"rps"`
	// MeanMs is wrk's thread-statistics average or the exact mean.
	MeanMs float64 `json:"mean_ms"`
	P50Ms  float64 `json:"p50_ms"`
	// P95Ms is 0 where the load generator does not give it (wrk).
	P95Ms float64 `json:"p95_ms,omitempty"`
	P99Ms float64 `json:"p99_ms"`
	MaxMs float64 `json:"max_ms,omitempty"`
	// CPUCores is the system under test: every process class below,
	// load generator excluded.
	CPUCores float64 `json:"cpu_cores"`
	// IdleCPUCores is the system's CPU with no load, where measured.
	IdleCPUCores *float64 `json:"idle_cpu_cores,omitempty"`
	// CPUByClass splits CPUCores by process class (gateway, functions,
	// queue-proxy, nginx, eproxy, node-agent, ...).
	CPUByClass map[string]float64 `json:"cpu_by_class,omitempty"`
	// CPUUsPerRequest is CPUCores·window / requests, in µs.
	CPUUsPerRequest float64 `json:"cpu_us_per_request,omitempty"`
	// AllInUsPerRequest is the whole host's busy CPU (/proc/stat: user,
	// system, irq, softirq, kernel threads) in the window minus the load
	// generator and the benchmark driver, per request, in µs: CPUCores
	// plus OtherCPUCores. It charges the request with the kernel work
	// that no process of the system is billed for (softirq, kworkers);
	// it is only meaningful on a quiet machine (other work lands in it).
	AllInUsPerRequest float64 `json:"allin_us_per_request,omitempty"`
	// LoadGenCPUCores is the load generator's own CPU (wrk's rusage, or
	// the Go driver process), reported apart from the system's.
	LoadGenCPUCores float64 `json:"loadgen_cpu_cores"`
	// OtherCPUCores is the rest of the host's busy CPU in the window:
	// other processes and unattributed interrupt time. High values mean
	// a contaminated run.
	OtherCPUCores float64 `json:"other_cpu_cores"`
	Requests      int64   `json:"requests"`
	// Errors counts non-2xx answers, socket errors and wrong answers.
	Errors    int64   `json:"errors"`
	DurationS float64 `json:"duration_s"`
	// Extra holds scenario-specific figures (e.g. the sidecar's own µs
	// per request).
	Extra map[string]float64 `json:"extra,omitempty"`
}

// Series is a time series of one metric of one system (T in seconds from
// the start of the system's measured window).
type Series struct {
	System string    `json:"system"`
	Metric string    `json:"metric"`
	Label  string    `json:"label,omitempty"`
	Unit   string    `json:"unit"`
	T      []float64 `json:"t"`
	V      []float64 `json:"v"`
}

// File is test/bench/results/<scenario>.json.
type File struct {
	Scenario string `json:"scenario"`
	Title    string `json:"title"`
	// Quick marks a shortened smoke run: its figures are not the
	// benchmark's.
	Quick     bool              `json:"quick"`
	Started   time.Time         `json:"started"`
	DurationS float64           `json:"duration_s"`
	Machine   benchutil.Machine `json:"machine"`
	Command   string            `json:"command"`
	// Unavailable says why the scenario did not run (e.g. xdp before the
	// feature exists).
	Unavailable string `json:"unavailable,omitempty"`
	// Method describes, in words, what was run and compared: the text
	// RESULTS.md quotes.
	Method   []string       `json:"method,omitempty"`
	Settings map[string]any `json:"settings,omitempty"`
	Entries  []Entry        `json:"entries"`
	Series   []Series       `json:"series,omitempty"`
	Notes    []string       `json:"notes,omitempty"`
	Problems []string       `json:"problems,omitempty"`
}

// Write stores the file as indented JSON and as CSV beside it.
func (f *File) Write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(f, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, f.Scenario+".json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return f.WriteCSV(filepath.Join(dir, f.Scenario+".csv"))
}

// ReadFile loads one results file.
func ReadFile(path string) (*File, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var f File
	if err := json.Unmarshal(b, &f); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if f.Scenario == "" {
		return nil, fmt.Errorf("%s: no scenario name", path)
	}
	return &f, nil
}

// CSVHeader is the fixed part of the CSV columns; CPU classes and extras
// follow, sorted by name.
var CSVHeader = []string{"system", "concurrency", "label", "rps", "mean_ms", "p50_ms", "p95_ms", "p99_ms", "max_ms",
	"cpu_cores", "idle_cpu_cores", "cpu_us_per_request", "allin_us_per_request", "loadgen_cpu_cores", "other_cpu_cores", "requests", "errors", "duration_s"}

// WriteCSV writes the entries, one row each.
func (f *File) WriteCSV(path string) error {
	classes, extras := map[string]bool{}, map[string]bool{}
	for _, e := range f.Entries {
		for k := range e.CPUByClass {
			classes[k] = true
		}
		for k := range e.Extra {
			extras[k] = true
		}
	}
	cl, ex := sortedKeys(classes), sortedKeys(extras)
	header := append([]string{}, CSVHeader...)
	for _, c := range cl {
		header = append(header, "cpu_cores_"+c)
	}
	header = append(header, ex...)
	out, err := os.Create(path)
	if err != nil {
		return err
	}
	w := csv.NewWriter(out)
	w.Write(header)
	g := func(v float64) string { return strconv.FormatFloat(v, 'g', 6, 64) }
	for _, e := range f.Entries {
		idle := ""
		if e.IdleCPUCores != nil {
			idle = g(*e.IdleCPUCores)
		}
		row := []string{e.System, strconv.Itoa(e.Concurrency), e.Label, g(e.RPS), g(e.MeanMs), g(e.P50Ms), g(e.P95Ms), g(e.P99Ms), g(e.MaxMs),
			g(e.CPUCores), idle, g(e.CPUUsPerRequest), g(e.AllInUsPerRequest), g(e.LoadGenCPUCores), g(e.OtherCPUCores),
			strconv.FormatInt(e.Requests, 10), strconv.FormatInt(e.Errors, 10), g(e.DurationS)}
		for _, c := range cl {
			row = append(row, g(e.CPUByClass[c]))
		}
		for _, x := range ex {
			row = append(row, g(e.Extra[x]))
		}
		w.Write(row)
	}
	w.Flush()
	if err := w.Error(); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

func sortedKeys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Find returns the entry of system at concurrency and label, or nil.
func (f *File) Find(system string, conc int, label string) *Entry {
	for i := range f.Entries {
		e := &f.Entries[i]
		if e.System == system && e.Concurrency == conc && e.Label == label {
			return e
		}
	}
	return nil
}

// Systems lists the systems of the entries in order of appearance.
func (f *File) Systems() []string {
	var out []string
	seen := map[string]bool{}
	for _, e := range f.Entries {
		if !seen[e.System] {
			seen[e.System] = true
			out = append(out, e.System)
		}
	}
	return out
}
