package scenario

import (
	"context"
	"os"
	"sync"
	"time"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
)

// Group is a process class: the given processes and all their descendants
// (only the given processes when Exact).
type Group struct {
	Class string
	PIDs  []int
	// Exact: PIDs is the whole class (a classification of every process,
	// as the cluster scenario makes), descendants are not added.
	Exact bool
	// Retired is the CPU (clock ticks) of processes of this class that
	// have exited, as last read before they were stopped; it only grows.
	Retired uint64
}

// Groups returns the current process classes of a system (they may change
// over a run: a cold-started function has new pids).
type Groups func() []Group

// cpuSnap is the CPU time of every classified process, of the benchmark
// driver itself, and of the host, at one instant.
type cpuSnap struct {
	at    time.Time
	host  benchutil.HostCPU
	self  uint64
	procs map[benchutil.ProcKey]classed
	// retired is Group.Retired by class.
	retired map[string]uint64
}

type classed struct {
	class string
	ticks uint64
}

// snapshot reads /proc once and classifies the processes of groups.
func snapshot(groups []Group) (cpuSnap, error) {
	host, err := benchutil.Proc.HostCPU()
	if err != nil {
		return cpuSnap{}, err
	}
	all, err := benchutil.Proc.All()
	if err != nil {
		return cpuSnap{}, err
	}
	s := cpuSnap{at: time.Now(), host: host, procs: map[benchutil.ProcKey]classed{}, retired: map[string]uint64{}}
	byPID := map[int]benchutil.Stat{}
	children := map[int][]int{}
	for _, st := range all {
		byPID[st.PID] = st
		children[st.PPID] = append(children[st.PPID], st.PID)
	}
	self := os.Getpid()
	if st, ok := byPID[self]; ok {
		s.self = st.CPUTicks()
	}
	for _, g := range groups {
		s.retired[g.Class] += g.Retired
		queue := append([]int{}, g.PIDs...)
		for len(queue) > 0 {
			pid := queue[0]
			queue = queue[1:]
			st, ok := byPID[pid]
			if !ok || pid == self {
				continue
			}
			if _, dup := s.procs[st.Key()]; dup {
				continue
			}
			s.procs[st.Key()] = classed{g.Class, st.CPUTicks()}
			if !g.Exact {
				queue = append(queue, children[pid]...)
			}
		}
	}
	return s, nil
}

// cpuUse is the CPU used between two snapshots, in cores.
type cpuUse struct {
	Wall    time.Duration
	ByClass map[string]float64
	// Total is the sum over classes: the system under test.
	Total float64
	// Self is the driver process (the Go load generator where it is
	// one, and the sampler).
	Self float64
	// Host is the whole machine's busy CPU.
	Host float64
	// Exited counts processes gone before the second snapshot (their
	// last CPU is lost).
	Exited int
}

func diff(a, b cpuSnap, tick time.Duration) cpuUse {
	u := cpuUse{Wall: b.at.Sub(a.at), ByClass: map[string]float64{}}
	w := u.Wall.Seconds()
	if w <= 0 {
		return u
	}
	cores := func(ticks uint64) float64 { return (time.Duration(ticks) * tick).Seconds() / w }
	for k, pb := range b.procs {
		pa, ok := a.procs[k]
		var d uint64
		switch {
		case !ok:
			d = pb.ticks
		case pb.ticks >= pa.ticks:
			d = pb.ticks - pa.ticks
		}
		u.ByClass[pb.class] += cores(d)
	}
	// Retired processes: their whole CPU was added to retired when they
	// were stopped; what they had at a was already counted before.
	retired := map[string]uint64{}
	for c, rb := range b.retired {
		if ra := a.retired[c]; rb > ra {
			retired[c] = rb - ra
		}
	}
	for k, pa := range a.procs {
		if _, ok := b.procs[k]; !ok {
			u.Exited++
			if r := retired[pa.class]; r > 0 {
				retired[pa.class] = r - min(r, pa.ticks)
			}
		}
	}
	for c, r := range retired {
		u.ByClass[c] += cores(r)
	}
	for _, v := range u.ByClass {
		u.Total += v
	}
	if b.self >= a.self {
		u.Self = cores(b.self - a.self)
	}
	if b.host.Busy >= a.host.Busy {
		u.Host = cores(b.host.Busy - a.host.Busy)
	}
	return u
}

// measureCPU returns the CPU of groups while fn runs.
func measureCPU(tick time.Duration, groups Groups, fn func() error) (cpuUse, error) {
	a, err := snapshot(groups())
	if err != nil {
		return cpuUse{}, err
	}
	if err := fn(); err != nil {
		return cpuUse{}, err
	}
	b, err := snapshot(groups())
	if err != nil {
		return cpuUse{}, err
	}
	return diff(a, b, tick), nil
}

// timeline samples the CPU of groups every interval until stopped.
type timeline struct {
	mu     sync.Mutex
	start  time.Time
	points []cpuUse
	at     []float64
	cancel context.CancelFunc
	done   chan struct{}
}

func startTimeline(ctx context.Context, tick time.Duration, groups Groups, every time.Duration) *timeline {
	ctx, cancel := context.WithCancel(ctx)
	tl := &timeline{start: time.Now(), cancel: cancel, done: make(chan struct{})}
	go func() {
		defer close(tl.done)
		prev, err := snapshot(groups())
		if err != nil {
			return
		}
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			cur, err := snapshot(groups())
			if err != nil {
				continue
			}
			u := diff(prev, cur, tick)
			tl.mu.Lock()
			tl.points = append(tl.points, u)
			tl.at = append(tl.at, cur.at.Sub(tl.start).Seconds())
			tl.mu.Unlock()
			prev = cur
		}
	}()
	return tl
}

// stop ends sampling and returns the series: the system's cores, per
// class, and the driver's.
func (tl *timeline) stop(system string) []Series {
	tl.cancel()
	<-tl.done
	tl.mu.Lock()
	defer tl.mu.Unlock()
	total := Series{System: system, Metric: "cpu_cores", Unit: "cores"}
	self := Series{System: system, Metric: "loadgen_cpu_cores", Unit: "cores"}
	classes := map[string]*Series{}
	var order []string
	for i, p := range tl.points {
		total.T, total.V = append(total.T, tl.at[i]), append(total.V, p.Total)
		self.T, self.V = append(self.T, tl.at[i]), append(self.V, p.Self)
		for c := range p.ByClass {
			if classes[c] == nil {
				classes[c] = &Series{System: system, Metric: "cpu_cores", Label: c, Unit: "cores"}
				order = append(order, c)
			}
		}
	}
	for i, p := range tl.points {
		for _, c := range order {
			s := classes[c]
			s.T, s.V = append(s.T, tl.at[i]), append(s.V, p.ByClass[c])
		}
	}
	out := []Series{total, self}
	for _, c := range order {
		out = append(out, *classes[c])
	}
	return out
}

// fillCPU copies a window's CPU into an entry; loadgen is the load
// generator's cores when it is a separate process (wrk), or <0 to use the
// driver's own CPU (the Go load generator).
func fillCPU(en *Entry, u cpuUse, loadgen float64) {
	en.CPUCores = u.Total
	en.CPUByClass = u.ByClass
	if loadgen < 0 {
		loadgen = u.Self
	}
	en.LoadGenCPUCores = loadgen
	other := u.Host - u.Total - loadgen
	if loadgen != u.Self {
		other -= u.Self
	}
	if other < 0 {
		other = 0
	}
	en.OtherCPUCores = other
	if en.Requests > 0 {
		en.CPUUsPerRequest = u.Total * u.Wall.Seconds() / float64(en.Requests) * 1e6
		en.AllInUsPerRequest = (u.Total + other) * u.Wall.Seconds() / float64(en.Requests) * 1e6
	}
}
