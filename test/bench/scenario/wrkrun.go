package scenario

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
)

// wrkPlan is a closed-loop wrk measurement of one system: idle CPU, a
// warm-up, then wrk at each concurrency.
type wrkPlan struct {
	System string
	// Label is given to every load entry (e.g. "close" for a run with a
	// new connection per request).
	Label       string
	URL         string
	Prefix      []string // runs wrk inside a namespace
	Script      string
	Concurrency []int
	Duration    time.Duration
	Idle        time.Duration
	Warmup      time.Duration
	Groups      Groups
	// Alive reports a dead system; Probe checks an answer after each run.
	Alive func() error
	Probe func(ctx context.Context) error
	// Extra adds scenario-specific figures to each entry.
	Extra func(en *Entry, u cpuUse)
	// Adjust, when set, rewrites each window's CPU before it is recorded;
	// loadgen is the load generator's cores in the window (0 when idle).
	// The cluster scenario uses it to count the whole node (nodeAdjust).
	Adjust func(u cpuUse, loadgen float64) cpuUse
}

// runWrkPlan measures p and appends its entries (and problems) to f.
func runWrkPlan(ctx context.Context, e *Env, f *File, p wrkPlan) error {
	var idle *float64
	if p.Idle > 0 {
		e.Logf("%s: idle for %v", p.System, p.Idle)
		u, err := measureCPU(e.Tick, p.Groups, func() error { return sleepCtx(ctx, p.Idle) })
		if err != nil {
			return fmt.Errorf("%s: idle: %w", p.System, err)
		}
		if p.Adjust != nil {
			u = p.Adjust(u, 0)
		}
		idle = &u.Total
		en := Entry{System: p.System, Label: "idle", DurationS: u.Wall.Seconds()}
		fillCPU(&en, u, 0)
		en.IdleCPUCores = &u.Total
		f.Entries = append(f.Entries, en)
		if err := p.Alive(); err != nil {
			return err
		}
	}
	opts := func(c int, d time.Duration) benchutil.WrkOptions {
		return benchutil.WrkOptions{Binary: e.Wrk, Prefix: p.Prefix, Threads: min(2, c), Connections: c,
			Duration: d, Script: p.Script, URL: p.URL, Timeout: 10 * time.Second}
	}
	if p.Warmup > 0 {
		c := slices.Max(p.Concurrency)
		e.Logf("%s: warm-up, %d connections for %v", p.System, c, p.Warmup)
		w, err := benchutil.RunWrk(ctx, opts(c, p.Warmup))
		if err != nil {
			return fmt.Errorf("%s: warm-up: %w", p.System, err)
		}
		if w.Non2xx > 0 || w.Errors.Total() > 0 {
			f.Notes = append(f.Notes, fmt.Sprintf("%s: warm-up had %d non-2xx, socket errors %+v", p.System, w.Non2xx, w.Errors))
		}
	}
	for _, c := range p.Concurrency {
		o := opts(c, p.Duration)
		var w *benchutil.WrkResult
		u, err := measureCPU(e.Tick, p.Groups, func() (err error) {
			w, err = benchutil.RunWrk(ctx, o)
			return err
		})
		if err != nil {
			return fmt.Errorf("%s: c=%d%s: %w", p.System, c, labelSuffix(p.Label), err)
		}
		if p.Adjust != nil && u.Wall > 0 {
			u = p.Adjust(u, w.CPU.Seconds()/u.Wall.Seconds())
		}
		en := wrkEntry(p.System, c, w, u)
		en.Label = p.Label
		en.IdleCPUCores = idle
		if p.Extra != nil {
			p.Extra(&en, u)
		}
		f.Entries = append(f.Entries, en)
		e.Logf("%s: c=%d%s: %.0f rps, p50 %.3f ms, p99 %.3f ms, %.2f cores (by class %s), wrk %.2f cores, other %.2f, %.1f µs/req (all-in %.1f)",
			p.System, c, labelSuffix(p.Label), en.RPS, en.P50Ms, en.P99Ms, en.CPUCores, fmtClasses(en.CPUByClass), en.LoadGenCPUCores, en.OtherCPUCores,
			en.CPUUsPerRequest, en.AllInUsPerRequest)
		if w.Non2xx > 0 {
			f.Problems = append(f.Problems, fmt.Sprintf("%s: c=%d%s: %d of %d responses were not 2xx", p.System, c, labelSuffix(p.Label), w.Non2xx, w.Requests))
		}
		if n := w.Errors.Total(); n > 0 {
			f.Problems = append(f.Problems, fmt.Sprintf("%s: c=%d%s: socket errors %+v", p.System, c, labelSuffix(p.Label), w.Errors))
		}
		if err := p.Alive(); err != nil {
			return err
		}
		if p.Probe != nil {
			if err := p.Probe(ctx); err != nil {
				f.Problems = append(f.Problems, fmt.Sprintf("%s: after c=%d%s: %v", p.System, c, labelSuffix(p.Label), err))
			}
		}
	}
	return nil
}

func labelSuffix(l string) string {
	if l == "" {
		return ""
	}
	return " " + l
}

func fmtClasses(m map[string]float64) string {
	s := ""
	for _, k := range sortedKeysF(m) {
		if s != "" {
			s += " "
		}
		s += fmt.Sprintf("%s=%.2f", k, m[k])
	}
	return s
}

func sortedKeysF(m map[string]float64) []string {
	b := map[string]bool{}
	for k := range m {
		b[k] = true
	}
	return sortedKeys(b)
}
