package scenario

import (
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ratioRow is one SPRIGHT-side / baseline comparison at one load level.
// A ratio is 0 where either side is missing or zero.
type ratioRow struct {
	Num, Den    string
	Concurrency int
	Label       string
	RPS, P50    float64
	P95, P99    float64
	CPU         float64
	CPUPerReq   float64
	AllInPerReq float64
	Idle        float64
}

// ratioPairs are the (SPRIGHT side, baseline) system pairs of a file: an
// explicit settings.ratio_pairs, else every spright-* against knative,
// eproxy against queue-proxy, every spright-* against direct (chain2: a
// bare HTTP server doing the chain's work, the upper bound) and
// spright-skmsg against the descriptor hop floor (SysHop).
func ratioPairs(f *File) [][2]string {
	if raw, ok := f.Settings["ratio_pairs"].([]any); ok {
		var out [][2]string
		for _, x := range raw {
			if p, ok := x.([]any); ok && len(p) == 2 {
				a, _ := p[0].(string)
				b, _ := p[1].(string)
				if a != "" && b != "" {
					out = append(out, [2]string{a, b})
				}
			}
		}
		return out
	}
	has := map[string]bool{}
	for _, s := range f.Systems() {
		has[s] = true
	}
	var out [][2]string
	for _, s := range f.Systems() {
		if has[SysKnative] && strings.HasPrefix(s, "spright") {
			out = append(out, [2]string{s, SysKnative})
		}
	}
	if has[SysEProxy] && has[SysQueueProxy] {
		out = append(out, [2]string{SysEProxy, SysQueueProxy})
	}
	for _, s := range f.Systems() {
		if has[SysDirect] && strings.HasPrefix(s, "spright") {
			out = append(out, [2]string{s, SysDirect})
		}
	}
	if has[SysHop] && has[SysSkmsg] {
		out = append(out, [2]string{SysSkmsg, SysHop})
	}
	// The cluster's ingress: a plain service through the gateway vs the
	// same pod by its IP.
	for _, s := range f.Systems() {
		if has[directSystem(s)] {
			out = append(out, [2]string{s, directSystem(s)})
		}
	}
	return out
}

// ratio is a/b, NaN when b is not positive or a is negative (not
// available); 0/b is a real 0 (e.g. SPRIGHT's idle CPU).
func ratio(a, b float64) float64 {
	if b <= 0 || a < 0 {
		return math.NaN()
	}
	return a / b
}

func isNaN(v float64) bool { return v != v }

// ratios computes every pair's ratios where both systems have an entry at
// the same concurrency and label.
func ratios(f *File) []ratioRow {
	var out []ratioRow
	for _, pr := range ratioPairs(f) {
		for _, n := range f.Entries {
			if n.System != pr[0] {
				continue
			}
			d := f.Find(pr[1], n.Concurrency, n.Label)
			if d == nil {
				continue
			}
			r := ratioRow{Num: pr[0], Den: pr[1], Concurrency: n.Concurrency, Label: n.Label,
				RPS: ratio(n.RPS, d.RPS), P50: ratio(n.P50Ms, d.P50Ms), P95: ratio(n.P95Ms, d.P95Ms), P99: ratio(n.P99Ms, d.P99Ms),
				CPU: ratio(n.CPUCores, d.CPUCores), CPUPerReq: ratio(n.CPUUsPerRequest, d.CPUUsPerRequest),
				AllInPerReq: ratio(n.AllInUsPerRequest, d.AllInUsPerRequest)}
			r.Idle = math.NaN()
			if n.IdleCPUCores != nil && d.IdleCPUCores != nil {
				r.Idle = ratio(*n.IdleCPUCores, *d.IdleCPUCores)
			}
			if n.Requests == 0 || d.Requests == 0 {
				// No traffic on one side: only CPU compares.
				r.RPS, r.P50, r.P95, r.P99, r.CPUPerReq, r.AllInPerReq = math.NaN(), math.NaN(), math.NaN(), math.NaN(), math.NaN(), math.NaN()
			}
			if n.AllInUsPerRequest == 0 || d.AllInUsPerRequest == 0 {
				r.AllInPerReq = math.NaN()
			}
			if n.P50Ms == 0 || d.P50Ms == 0 {
				r.P50 = math.NaN()
			}
			if n.P99Ms == 0 || d.P99Ms == 0 {
				r.P99 = math.NaN()
			}
			if n.P95Ms == 0 || d.P95Ms == 0 {
				r.P95 = math.NaN()
			}
			if n.CPUByClass == nil || d.CPUByClass == nil {
				r.CPU, r.CPUPerReq, r.AllInPerReq = math.NaN(), math.NaN(), math.NaN()
			}
			if isNaN(r.RPS) && isNaN(r.P50) && isNaN(r.P99) && isNaN(r.CPU) && isNaN(r.Idle) {
				continue
			}
			out = append(out, r)
		}
	}
	return out
}

// num formats a figure with about three significant digits.
func num(v float64) string {
	switch {
	case v == 0:
		return "0"
	case v >= 1000:
		return fmt.Sprintf("%.0f", v)
	case v >= 100:
		return fmt.Sprintf("%.1f", v)
	case v >= 10:
		return fmt.Sprintf("%.2f", v)
	case v >= 0.01:
		return fmt.Sprintf("%.3f", v)
	default:
		return fmt.Sprintf("%.2g", v)
	}
}

// rnum is a ratio, "–" when not available.
func rnum(v float64) string {
	if isNaN(v) {
		return "–"
	}
	return num(v) + "×"
}

// Report reads every <scenario>.json in dir and writes md (RESULTS.md),
// the CSV next to each JSON and the PNG plots into dir. Nothing in it is
// typed by hand: every figure comes from the JSON.
func Report(dir, md string) error {
	files := map[string]*File{}
	paths, err := filepath.Glob(filepath.Join(dir, "*.json"))
	if err != nil {
		return err
	}
	var extra []string
	for _, p := range paths {
		f, err := ReadFile(p)
		if err != nil {
			// Files of other formats (e.g. an old harness's) are skipped.
			fmt.Fprintf(os.Stderr, "report: skipping %s: %v\n", p, err)
			continue
		}
		files[f.Scenario] = f
		if _, ok := Lookup(f.Scenario); !ok {
			extra = append(extra, f.Scenario)
		}
	}
	sort.Strings(extra)
	order := append(Names(), extra...)
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format, args...) }
	w("# SPRIGHT benchmark results\n\n")
	w("Generated from `test/bench/results/*.json` by `go run ./test/bench --report-only` (run at the end of `make bench`): ")
	w("every figure, table and plot below comes from those files; do not edit by hand.\n\n")

	var first *File
	quick := false
	for _, n := range order {
		if f := files[n]; f != nil && f.Unavailable == "" {
			if first == nil {
				first = f
			}
			quick = quick || f.Quick
		}
	}
	if first == nil {
		w("No results yet: run `make bench`.\n")
		return os.WriteFile(md, []byte(b.String()), 0o644)
	}
	m := first.Machine
	w("## Machine\n\n")
	w("- **%d cores, shared by the load generator and the system under test.** Every figure is taken with wrk or the Go load generator "+
		"running on the same cores as the system it measures: neither gets the whole machine. The load generator's own CPU is reported "+
		"separately (column *loadgen*) and is not in *cpu cores*; *other* is the rest of the host's busy CPU in the same window "+
		"(other processes, unattributed interrupts), which flags a contaminated run.\n", m.NProc)
	w("- kernel %s, CPU %s, %s hugepages, USER_HZ %d\n", m.Kernel, m.CPUModel, m.HugePages, m.ClockTicks)
	w("- %s, %s, SPRIGHT revision %s\n", m.Go, m.Wrk, m.Revision)
	w("- load average at the start of each scenario: ")
	var la []string
	for _, n := range order {
		if f := files[n]; f != nil && f.Unavailable == "" {
			la = append(la, fmt.Sprintf("%s %s", n, f.Machine.LoadAvg))
		}
	}
	w("%s\n", strings.Join(la, "; "))
	if quick {
		w("\n> **Quick (smoke) run**: at least one scenario ran with `--quick`, whose windows are too short to be a measurement. " +
			"Such scenarios are marked below.\n")
	}
	w("\n## Commands\n\n")
	w("```\nmake bench                          # every scenario, then this report (root; installs wrk/nginx from Debian if missing)\n")
	w("make bench-quick                    # the same with --quick (~3-5 min smoke run)\n")
	w("go run ./test/bench [--quick] SCENARIO...   # or: spright bench SCENARIO [--quick]\n")
	w("go run ./test/bench --report-only   # regenerate RESULTS.md, CSV and PNG from the JSON\n```\n\n")
	w("Scenarios: %s. The command each file was produced by is given in its section.\n\n", strings.Join(Names(), ", "))

	w("## Summary: SPRIGHT / baseline ratios\n\n")
	w("Ratio = SPRIGHT side ÷ baseline at the same load level (rps: higher is better for SPRIGHT when > 1; latency and CPU: lower is better when < 1).\n\n")
	w("| scenario | pair | concurrency | label | rps | p50 | p95 | p99 | cpu cores | cpu/request | all-in cpu/request | idle cpu |\n|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, n := range order {
		f := files[n]
		if f == nil || f.Unavailable != "" {
			continue
		}
		for _, r := range ratios(f) {
			w("| %s | %s / %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", n, r.Num, r.Den, r.Concurrency, r.Label,
				rnum(r.RPS), rnum(r.P50), rnum(r.P95), rnum(r.P99), rnum(r.CPU), rnum(r.CPUPerReq), rnum(r.AllInPerReq), rnum(r.Idle))
		}
	}
	w("\n")

	for _, n := range order {
		f := files[n]
		title := n
		if s, ok := Lookup(n); ok {
			title = s.Title
		}
		w("## %s: %s\n\n", n, title)
		if f == nil {
			if n == "xdp" {
				w("Not available: `test/bench/xdp` does not exist in this tree yet (the XDP/TC redirect feature is built separately); " +
					"the suite runs it as `go run ./test/bench/xdp --out test/bench/results [--quick]` once it does.\n\n")
			} else {
				w("Not run: no `%s.json`.\n\n", n)
			}
			continue
		}
		if f.Unavailable != "" {
			w("Not available: %s\n\n", f.Unavailable)
			continue
		}
		if f.Quick {
			w("> Quick (smoke) run: shortened windows, not a measurement.\n\n")
		}
		if o, n := otherCPU(f); n > 0 && o > contaminated {
			w("> Contaminated: the rest of the host (not the system, not the load generator) used %s cores on average during "+
				"this scenario's windows (*other* column); its figures are not those of a quiet machine.\n\n", num(o))
		}
		w("Run %s for %.0f s: `%s`. Raw data: [%s.json](results/%s.json), [%s.csv](results/%s.csv).\n\n",
			f.Started.Format("2006-01-02 15:04 UTC"), f.DurationS, f.Command, n, n, n, n)
		if len(f.Method) > 0 {
			w("What was run:\n\n")
			for _, l := range f.Method {
				w("- %s\n", l)
			}
			w("\n")
		}
		writeEntries(&b, f)
		if rs := ratios(f); len(rs) > 0 {
			w("\nRatios:\n\n| pair | concurrency | label | rps | p50 | p95 | p99 | cpu cores | cpu/request | all-in cpu/request | idle cpu |\n|---|---|---|---|---|---|---|---|---|---|---|\n")
			for _, r := range rs {
				w("| %s / %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n", r.Num, r.Den, r.Concurrency, r.Label,
					rnum(r.RPS), rnum(r.P50), rnum(r.P95), rnum(r.P99), rnum(r.CPU), rnum(r.CPUPerReq), rnum(r.AllInPerReq), rnum(r.Idle))
			}
		}
		pngs, err := plotsFor(f, dir)
		if err != nil {
			return err
		}
		if len(pngs) > 0 {
			w("\n")
			for _, p := range pngs {
				w("![%s](results/%s)\n", strings.TrimSuffix(p, ".png"), p)
			}
		}
		if len(f.Notes) > 0 {
			w("\nNotes:\n\n")
			for _, l := range f.Notes {
				w("- %s\n", oneLine(l))
			}
		}
		if len(f.Problems) > 0 {
			w("\n**Problems** (the run exited non-zero):\n\n")
			for _, l := range f.Problems {
				w("- %s\n", oneLine(l))
			}
		}
		w("\n")
		if err := f.WriteCSV(filepath.Join(dir, n+".csv")); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Dir(md), 0o755); err != nil && !errors.Is(err, fs.ErrExist) {
		return err
	}
	return os.WriteFile(md, []byte(b.String()), 0o644)
}

func oneLine(s string) string {
	s = strings.ReplaceAll(s, "\n", " ⏎ ")
	if len(s) > 600 {
		s = s[:600] + "…"
	}
	return s
}

// writeEntries writes the file's entries as a Markdown table.
func writeEntries(b *strings.Builder, f *File) {
	b.WriteString("| system | concurrency | label | rps | mean ms | p50 ms | p95 ms | p99 ms | max ms | cpu cores | cpu by class | idle cores | cpu µs/req | all-in µs/req | loadgen cores | other cores | requests | errors |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	lat := func(e Entry, v float64) string {
		if e.Requests == 0 || v == 0 {
			return "–"
		}
		return num(v)
	}
	for _, e := range f.Entries {
		idle := "–"
		if e.IdleCPUCores != nil {
			idle = num(*e.IdleCPUCores)
		}
		var cls []string
		for _, k := range sortedKeysF(e.CPUByClass) {
			cls = append(cls, fmt.Sprintf("%s %s", k, num(e.CPUByClass[k])))
		}
		cpu, lg, other := num(e.CPUCores), num(e.LoadGenCPUCores), num(e.OtherCPUCores)
		if e.CPUByClass == nil {
			cpu, lg, other = "–", "–", "–"
		}
		rps := num(e.RPS)
		if e.Label == "idle" {
			rps = "–"
		}
		fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %d | %d |\n",
			e.System, e.Concurrency, e.Label, rps, lat(e, e.MeanMs), lat(e, e.P50Ms), lat(e, e.P95Ms), lat(e, e.P99Ms), lat(e, e.MaxMs),
			cpu, strings.Join(cls, ", "), idle, lat(e, e.CPUUsPerRequest), lat(e, e.AllInUsPerRequest), lg, other, e.Requests, e.Errors)
		if len(e.Extra) > 0 {
			var ex []string
			for _, k := range sortedKeysF(e.Extra) {
				ex = append(ex, fmt.Sprintf("%s = %s", k, num(e.Extra[k])))
			}
			fmt.Fprintf(b, "| ↳ | | | %s ||||||||||||||\n", strings.Join(ex, ", "))
		}
	}
}

// plotsFor draws the file's plots and returns their names.
func plotsFor(f *File, dir string) ([]string, error) {
	var out []string
	add := func(name string, err error) error {
		if err != nil {
			return err
		}
		if name != "" {
			out = append(out, name)
		}
		return nil
	}
	concs := map[int]bool{}
	for _, e := range f.Entries {
		if e.Label == "" && e.Concurrency > 0 {
			concs[e.Concurrency] = true
		}
	}
	if len(concs) > 1 {
		ps, err := sweepPlots(f, dir)
		if err != nil {
			return nil, err
		}
		out = append(out, ps...)
	}
	if err := add(ratioPlot(f, dir, ratios(f))); err != nil {
		return nil, err
	}
	has := map[string]bool{}
	for _, s := range f.Series {
		has[s.Metric] = true
	}
	if has["rps"] {
		if err := add(seriesPlot(f, dir, "rps", f.Scenario+"_timeseries.png", "Requests completed per second", "requests/s", false, false)); err != nil {
			return nil, err
		}
	}
	if has["cpu_cores"] {
		if err := add(seriesPlot(f, dir, "cpu_cores", f.Scenario+"_cpu_timeseries.png", "CPU of the system under test per second (load generator excluded)", "cores", false, false)); err != nil {
			return nil, err
		}
	}
	if has["latency_ms"] {
		if err := add(seriesPlot(f, dir, "latency_ms", f.Scenario+"_latency.png", "Latency of each event", "ms (log)", false, true)); err != nil {
			return nil, err
		}
	}
	if has["response_ms"] {
		if err := add(seriesPlot(f, dir, "response_ms", f.Scenario+"_response.png", "Response time of each request (by send time)", "ms (log)", false, true)); err != nil {
			return nil, err
		}
	}
	if len(concs) <= 1 {
		p95 := false
		for _, e := range f.Entries {
			if e.Label != "" && e.P95Ms > 0 {
				p95 = true
			}
		}
		v, t := func(e Entry) float64 { return e.P99Ms }, "p99 latency by label"
		if p95 {
			v, t = func(e Entry) float64 { return e.P95Ms }, "p95 latency by label"
		}
		if err := add(labelBars(f, dir, f.Scenario+"_by_label.png", t, v)); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// contaminated is the average "other" CPU (cores) above which a
// scenario's section says the host was busy with something else.
const contaminated = 0.25

// otherCPU is the mean other_cpu_cores over the entries that measured CPU.
func otherCPU(f *File) (mean float64, n int) {
	var sum float64
	for _, e := range f.Entries {
		if e.CPUByClass != nil {
			sum += e.OtherCPUCores
			n++
		}
	}
	if n == 0 {
		return 0, 0
	}
	return sum / float64(n), n
}
