package scenario

import (
	"fmt"
	"image/color"
	"path/filepath"
	"sort"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Plots are PNG files next to the JSON; each function returns the file
// names it wrote (relative to the results directory).

func savePlot(p *plot.Plot, dir, name string) (string, error) {
	p.Legend.Top = true
	// Headroom above the data for the legend; linear axes start at 0.
	if _, log := p.Y.Scale.(plot.LogScale); log {
		p.Y.Max *= 8
	} else {
		if p.Y.Min > 0 {
			p.Y.Min = 0
		}
		p.Y.Max = p.Y.Min + (p.Y.Max-p.Y.Min)*1.4
	}
	if err := p.Save(8*vg.Inch, 5*vg.Inch, filepath.Join(dir, name)); err != nil {
		return "", fmt.Errorf("plot %s: %w", name, err)
	}
	return name, nil
}

// systemColor keeps each system's colour the same across plots.
func systemColor(sys string) color.Color {
	switch sys {
	case SysSkmsg:
		return color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}
	case SysPoll:
		return color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff}
	case SysKnative, SysQueueProxy:
		return color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff}
	case SysEProxy:
		return color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff}
	case SysDirect:
		return color.RGBA{R: 0x7f, G: 0x7f, B: 0x7f, A: 0xff}
	}
	h := 0
	for _, c := range sys {
		h = h*31 + int(c)
	}
	return plotutil.Color(h & 0xff)
}

func addLine(p *plot.Plot, name string, xys plotter.XYs, c color.Color, dashed bool) error {
	l, pts, err := plotter.NewLinePoints(xys)
	if err != nil {
		return err
	}
	l.Color, pts.Color = c, c
	if dashed {
		l.Dashes = []vg.Length{vg.Points(4), vg.Points(3)}
	}
	p.Add(l, pts)
	p.Legend.Add(name, l, pts)
	return nil
}

// loadEntries are the entries of a load sweep: no label, concurrency > 0
// (not the hop floor, a single computed point).
func loadEntries(f *File, sys string) []Entry {
	var out []Entry
	for _, e := range f.Entries {
		if e.System == sys && sys != SysHop && e.Label == "" && e.Concurrency > 0 {
			out = append(out, e)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Concurrency < out[j].Concurrency })
	return out
}

// sweepPlots draws metrics against concurrency, one line per system.
func sweepPlots(f *File, dir string) ([]string, error) {
	type metric struct {
		file, title, y string
		v              func(Entry) float64
		log            bool
	}
	metrics := []metric{
		{f.Scenario + "_rps.png", "Throughput", "requests/s", func(e Entry) float64 { return e.RPS }, false},
		{f.Scenario + "_latency.png", "Latency: mean (dashed) and p99 (solid)", "ms (log)", nil, true},
		{f.Scenario + "_cpu.png", "CPU of the system under test (load generator excluded)", "cores", func(e Entry) float64 { return e.CPUCores }, false},
		{f.Scenario + "_cpu_per_request.png", "CPU per request", "µs", func(e Entry) float64 { return e.CPUUsPerRequest }, false},
	}
	var out []string
	for _, m := range metrics {
		p := plot.New()
		p.Title.Text = f.Title + "\n" + m.title
		concurrencyAxis(p, f)
		p.Y.Label.Text = m.y
		if m.log {
			p.Y.Scale = plot.LogScale{}
			p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
		}
		n := 0
		for _, sys := range f.Systems() {
			es := loadEntries(f, sys)
			if len(es) == 0 {
				continue
			}
			line := func(v func(Entry) float64) plotter.XYs {
				var xys plotter.XYs
				for _, e := range es {
					y := v(e)
					if m.log && y <= 0 {
						continue
					}
					xys = append(xys, plotter.XY{X: float64(e.Concurrency), Y: y})
				}
				return xys
			}
			if m.v == nil {
				if err := addLine(p, sys+" p99", line(func(e Entry) float64 { return e.P99Ms }), systemColor(sys), false); err != nil {
					return nil, err
				}
				if err := addLine(p, sys+" mean", line(func(e Entry) float64 { return e.MeanMs }), systemColor(sys), true); err != nil {
					return nil, err
				}
			} else if err := addLine(p, sys, line(m.v), systemColor(sys), false); err != nil {
				return nil, err
			}
			n++
		}
		if n == 0 {
			continue
		}
		name, err := savePlot(p, dir, m.file)
		if err != nil {
			return nil, err
		}
		out = append(out, name)
	}
	return out, nil
}

// ratioPlot draws the ratios of each pair against concurrency (sweeps) or
// as grouped bars per label (everything else).
func ratioPlot(f *File, dir string, rows []ratioRow) (string, error) {
	if len(rows) == 0 {
		return "", nil
	}
	p := plot.New()
	p.Title.Text = f.Title + "\nRatios (SPRIGHT side / baseline); 1 = equal"
	sweep := true
	for _, r := range rows {
		if r.Label != "idle" && (r.Label != "" || r.Concurrency == 0) {
			sweep = false
		}
	}
	p.Y.Label.Text = "ratio"
	if sweep {
		p.Y.Label.Text = "ratio (log)"
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	metrics := []struct {
		name string
		v    func(ratioRow) float64
	}{
		{"rps", func(r ratioRow) float64 { return r.RPS }},
		{"p95 latency", func(r ratioRow) float64 { return r.P95 }},
		{"p99 latency", func(r ratioRow) float64 { return r.P99 }},
		{"cpu cores", func(r ratioRow) float64 { return r.CPU }},
		{"cpu/request", func(r ratioRow) float64 { return r.CPUPerReq }},
	}
	colors := []color.Color{
		color.RGBA{R: 0x1f, G: 0x77, B: 0xb4, A: 0xff}, color.RGBA{R: 0xd6, G: 0x27, B: 0x28, A: 0xff},
		color.RGBA{R: 0xff, G: 0x7f, B: 0x0e, A: 0xff}, color.RGBA{R: 0x2c, G: 0xa0, B: 0x2c, A: 0xff},
		color.RGBA{R: 0x94, G: 0x67, B: 0xbd, A: 0xff},
	}
	pairs := []string{}
	seen := map[string]bool{}
	for _, r := range rows {
		pr := r.Num + "/" + r.Den
		if !seen[pr] {
			seen[pr] = true
			pairs = append(pairs, pr)
		}
	}
	if sweep {
		concurrencyAxis(p, f)
		for pi, pr := range pairs {
			for mi, m := range metrics {
				var xys plotter.XYs
				for _, r := range rows {
					if r.Num+"/"+r.Den == pr && m.v(r) > 0 && r.Label == "" {
						xys = append(xys, plotter.XY{X: float64(r.Concurrency), Y: m.v(r)})
					}
				}
				if len(xys) == 0 {
					continue
				}
				if err := addLine(p, pr+" "+m.name, xys, colors[mi%len(colors)], pi > 0); err != nil {
					return "", err
				}
			}
		}
	} else {
		// Grouped bars: one group per (pair, label), one bar per metric.
		var groups []string
		idx := map[string]int{}
		for _, r := range rows {
			g := r.Num + "/" + r.Den
			if r.Label != "" {
				g += " " + r.Label
			}
			if _, ok := idx[g]; !ok {
				idx[g] = len(groups)
				groups = append(groups, g)
			}
		}
		w := vg.Points(10)
		for mi, m := range metrics {
			vals := make(plotter.Values, len(groups))
			any := false
			for _, r := range rows {
				g := r.Num + "/" + r.Den
				if r.Label != "" {
					g += " " + r.Label
				}
				if v := m.v(r); v > 0 && !isNaN(v) {
					vals[idx[g]] = v
					any = true
				}
			}
			if !any {
				continue
			}
			b, err := plotter.NewBarChart(vals, w)
			if err != nil {
				return "", err
			}
			b.Color = colors[mi%len(colors)]
			b.LineStyle.Width = 0
			b.Offset = vg.Length(mi-len(metrics)/2) * w
			p.Add(b)
			p.Legend.Add(m.name, b)
		}
		p.NominalX(groups...)
		p.X.Tick.Label.Rotation = 0.4
		p.X.Tick.Label.XAlign = -0.9
	}
	return savePlot(p, dir, f.Scenario+"_ratio.png")
}

// seriesPlot draws one metric's series over time, one line per system
// (label "" only) or per system and label.
func seriesPlot(f *File, dir, metric, file, title, y string, perLabel bool, log bool) (string, error) {
	p := plot.New()
	p.Title.Text = f.Title + "\n" + title
	p.X.Label.Text = "time (s)"
	p.Y.Label.Text = y
	if log {
		p.Y.Scale = plot.LogScale{}
		p.Y.Tick.Marker = plot.LogTicks{Prec: -1}
	}
	n := 0
	for _, s := range f.Series {
		if s.Metric != metric || (s.Label != "" && !perLabel) {
			continue
		}
		var xys plotter.XYs
		for i := range s.T {
			if log && s.V[i] <= 0 {
				continue
			}
			xys = append(xys, plotter.XY{X: s.T[i], Y: s.V[i]})
		}
		if len(xys) == 0 {
			continue
		}
		name := s.System
		if s.Label != "" {
			name += " " + s.Label
		}
		if metric == "latency_ms" || metric == "response_ms" {
			sc, err := plotter.NewScatter(xys)
			if err != nil {
				return "", err
			}
			sc.Color = systemColor(s.System)
			p.Add(sc)
			p.Legend.Add(name, sc)
		} else if err := addLine(p, name, xys, systemColor(s.System), s.Label != ""); err != nil {
			return "", err
		}
		n++
	}
	if n == 0 {
		return "", nil
	}
	return savePlot(p, dir, file)
}

// labelBars draws a latency percentile per label, one bar per system.
func labelBars(f *File, dir, file, title string, v func(Entry) float64) (string, error) {
	var labels []string
	seen := map[string]bool{}
	for _, e := range f.Entries {
		if e.Label != "" && e.Label != "idle" && !seen[e.Label] {
			seen[e.Label] = true
			labels = append(labels, e.Label)
		}
	}
	if len(labels) == 0 {
		return "", nil
	}
	p := plot.New()
	p.Title.Text = f.Title + "\n" + title
	p.Y.Label.Text = "ms"
	w := vg.Points(14)
	systems := f.Systems()
	for si, sys := range systems {
		vals := make(plotter.Values, len(labels))
		for i, l := range labels {
			for _, e := range f.Entries {
				if e.System == sys && e.Label == l && v(e) > 0 {
					vals[i] = v(e)
				}
			}
		}
		b, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return "", err
		}
		b.Color = systemColor(sys)
		b.LineStyle.Width = 0
		b.Offset = vg.Length(float64(si)-float64(len(systems)-1)/2) * w
		p.Add(b)
		p.Legend.Add(sys, b)
	}
	p.NominalX(labels...)
	return savePlot(p, dir, file)
}

// concurrencyAxis is a log x axis ticked at the concurrencies measured.
func concurrencyAxis(p *plot.Plot, f *File) {
	p.X.Label.Text = "concurrency (connections, log scale)"
	p.X.Scale = plot.LogScale{}
	seen := map[int]bool{}
	var ticks []plot.Tick
	for _, e := range f.Entries {
		if e.Concurrency > 0 && !seen[e.Concurrency] {
			seen[e.Concurrency] = true
			ticks = append(ticks, plot.Tick{Value: float64(e.Concurrency), Label: fmt.Sprint(e.Concurrency)})
		}
	}
	p.X.Tick.Marker = plot.ConstantTicks(ticks)
}
