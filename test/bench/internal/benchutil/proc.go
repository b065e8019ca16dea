package benchutil

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// Stat is the part of /proc/<pid>/stat the benchmarks use. CPU times are in
// clock ticks (see ClockTicks). For a process, utime and stime already sum
// all its threads, including threads that have exited.
type Stat struct {
	PID   int
	Comm  string
	State byte
	PPID  int
	PGRP  int
	UTime uint64
	STime uint64
	// CUTime and CSTime are the CPU of reaped children. They are not part
	// of the process's own CPU: children are accounted as processes.
	CUTime uint64
	CSTime uint64
	// StartTime (ticks after boot) tells a process from a later one that
	// reused its pid.
	StartTime uint64
}

// CPUTicks is the process's own user+system time.
func (s Stat) CPUTicks() uint64 { return s.UTime + s.STime }

// ParseStat parses the contents of /proc/<pid>/stat. The comm field is
// within parentheses but may itself contain spaces and parentheses (a
// process can name itself "a) (b"), so the fixed fields are taken after the
// last ')'.
func ParseStat(b []byte) (Stat, error) {
	var s Stat
	line := strings.TrimSpace(string(b))
	open := strings.IndexByte(line, '(')
	closing := strings.LastIndexByte(line, ')')
	if open < 0 || closing < open {
		return s, fmt.Errorf("proc stat %q: no (comm)", line)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(line[:open]))
	if err != nil {
		return s, fmt.Errorf("proc stat: pid: %w", err)
	}
	s.PID, s.Comm = pid, line[open+1:closing]
	// Fields after comm, numbered as in proc(5) minus 3: state is field 3.
	f := strings.Fields(line[closing+1:])
	const (
		fState = iota
		fPPID
		fPGRP
		fSession
		fTTY
		fTPGID
		fFlags
		fMinflt
		fCMinflt
		fMajflt
		fCMajflt
		fUTime
		fSTime
		fCUTime
		fCSTime
		fPriority
		fNice
		fNumThreads
		fItRealValue
		fStartTime
	)
	if len(f) <= fStartTime {
		return s, fmt.Errorf("proc stat for pid %d: %d fields after comm, want > %d", pid, len(f), fStartTime)
	}
	if len(f[fState]) != 1 {
		return s, fmt.Errorf("proc stat for pid %d: state %q", pid, f[fState])
	}
	s.State = f[fState][0]
	ints := []struct {
		idx int
		dst *int
	}{{fPPID, &s.PPID}, {fPGRP, &s.PGRP}}
	for _, x := range ints {
		if *x.dst, err = strconv.Atoi(f[x.idx]); err != nil {
			return s, fmt.Errorf("proc stat for pid %d: field %d: %w", pid, x.idx+3, err)
		}
	}
	uints := []struct {
		idx int
		dst *uint64
	}{{fUTime, &s.UTime}, {fSTime, &s.STime}, {fCUTime, &s.CUTime}, {fCSTime, &s.CSTime}, {fStartTime, &s.StartTime}}
	for _, x := range uints {
		if *x.dst, err = strconv.ParseUint(f[x.idx], 10, 64); err != nil {
			return s, fmt.Errorf("proc stat for pid %d: field %d: %w", pid, x.idx+3, err)
		}
	}
	return s, nil
}

// ProcFS is a procfs mount point; tests point it at a fake tree.
type ProcFS string

// Proc is the host's /proc.
const Proc ProcFS = "/proc"

// ErrNoProcess is returned for a pid that does not exist (any more).
var ErrNoProcess = errors.New("no such process")

// Stat reads /proc/<pid>/stat.
func (p ProcFS) Stat(pid int) (Stat, error) {
	b, err := os.ReadFile(filepath.Join(string(p), strconv.Itoa(pid), "stat"))
	if err != nil {
		// ESRCH shows up when the process exits between open and read.
		if errors.Is(err, fs.ErrNotExist) || errors.Is(err, syscall.ESRCH) {
			return Stat{}, fmt.Errorf("pid %d: %w", pid, ErrNoProcess)
		}
		return Stat{}, err
	}
	return ParseStat(b)
}

// All reads the stat of every process (see all).
func (p ProcFS) All() ([]Stat, error) { return p.all() }

// all reads the stat of every process. Processes that vanish while the
// directory is walked are skipped: they are not ours to account for yet.
func (p ProcFS) all() ([]Stat, error) {
	ents, err := os.ReadDir(string(p))
	if err != nil {
		return nil, fmt.Errorf("list %s: %w", p, err)
	}
	var out []Stat
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || !e.IsDir() {
			continue
		}
		s, err := p.Stat(pid)
		if errors.Is(err, ErrNoProcess) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// Tree returns root and all its live descendants, root first, then in pid
// order. It walks parent links in /proc rather than /proc/<pid>/task/*/children,
// which needs CONFIG_PROC_CHILDREN and misses children of exited threads.
func (p ProcFS) Tree(root int) ([]Stat, error) {
	all, err := p.all()
	if err != nil {
		return nil, err
	}
	children := map[int][]Stat{}
	var rootStat *Stat
	for i := range all {
		children[all[i].PPID] = append(children[all[i].PPID], all[i])
		if all[i].PID == root {
			rootStat = &all[i]
		}
	}
	if rootStat == nil {
		return nil, fmt.Errorf("process tree of %d: %w", root, ErrNoProcess)
	}
	out := []Stat{*rootStat}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i].PID]...)
	}
	sort.Slice(out[1:], func(i, j int) bool { return out[1+i].PID < out[1+j].PID })
	return out, nil
}

// ProcKey identifies a process across pid reuse.
type ProcKey struct {
	PID       int
	StartTime uint64
}

// Key is the process's identity.
func (s Stat) Key() ProcKey { return ProcKey{s.PID, s.StartTime} }

// Alive reports whether the process k still exists (zombies count as gone:
// they run nothing and hold no resources but their pid).
func (p ProcFS) Alive(k ProcKey) (bool, error) {
	s, err := p.Stat(k.PID)
	if errors.Is(err, ErrNoProcess) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	return s.StartTime == k.StartTime && s.State != 'Z' && s.State != 'X', nil
}

// HostCPU is the machine-wide CPU time of the "cpu" line of /proc/stat,
// in clock ticks summed over all CPUs.
type HostCPU struct {
	// Busy is user+nice+system+irq+softirq (guest time is inside user).
	Busy uint64
	// Steal is time the hypervisor ran something else while we wanted
	// the CPU: on a VM it shrinks what the benchmark can get.
	Steal uint64
}

// ParseHostCPU parses the aggregate "cpu" line of /proc/stat.
func ParseHostCPU(b []byte) (HostCPU, error) {
	for _, line := range strings.Split(string(b), "\n") {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "cpu" {
			continue
		}
		// user nice system idle iowait irq softirq steal [guest guest_nice]
		if len(f) < 9 {
			return HostCPU{}, fmt.Errorf("proc stat cpu line %q: want at least 8 counters", line)
		}
		var v [8]uint64
		for i := range v {
			n, err := strconv.ParseUint(f[i+1], 10, 64)
			if err != nil {
				return HostCPU{}, fmt.Errorf("proc stat cpu line %q: %w", line, err)
			}
			v[i] = n
		}
		return HostCPU{Busy: v[0] + v[1] + v[2] + v[5] + v[6], Steal: v[7]}, nil
	}
	return HostCPU{}, errors.New("proc stat: no aggregate cpu line")
}

// HostCPU reads /proc/stat.
func (p ProcFS) HostCPU() (HostCPU, error) {
	b, err := os.ReadFile(filepath.Join(string(p), "stat"))
	if err != nil {
		return HostCPU{}, err
	}
	return ParseHostCPU(b)
}

// CPUSnapshot is the CPU time of each process of a tree, and of the whole
// machine, at one instant.
type CPUSnapshot struct {
	At    time.Time
	Root  int
	Procs map[ProcKey]Stat
	Host  HostCPU
}

// Snapshot samples the CPU time of root's process tree and of the host.
func (p ProcFS) Snapshot(root int) (CPUSnapshot, error) {
	host, err := p.HostCPU()
	if err != nil {
		return CPUSnapshot{}, err
	}
	tree, err := p.Tree(root)
	if err != nil {
		return CPUSnapshot{}, err
	}
	s := CPUSnapshot{At: time.Now(), Root: root, Procs: make(map[ProcKey]Stat, len(tree)), Host: host}
	for _, st := range tree {
		s.Procs[st.Key()] = st
	}
	return s, nil
}

// CPUUsage is the CPU a process tree used between two snapshots.
type CPUUsage struct {
	CPU  time.Duration
	Wall time.Duration
	// Exited processes were in the first snapshot only: the CPU they used
	// after it is lost, so CPU is a lower bound when Exited > 0.
	Exited int
	// Started processes were in the second snapshot only; all their CPU is
	// counted, since they began after the first.
	Started int
	// Processes in the second snapshot.
	Processes int
	// HostBusy and HostSteal are the machine-wide busy and stolen CPU
	// over the same window. HostBusy minus the tree's CPU (and the load
	// generator's) is everything else the machine did: other processes,
	// and interrupt time not charged to any process.
	HostBusy  time.Duration
	HostSteal time.Duration
}

// Cores is the average number of cores busy over the window.
func (u CPUUsage) Cores() float64 {
	if u.Wall <= 0 {
		return 0
	}
	return u.CPU.Seconds() / u.Wall.Seconds()
}

// Delta is the CPU used from a to b, with tick the length of a clock tick.
func Delta(a, b CPUSnapshot, tick time.Duration) CPUUsage {
	u := CPUUsage{Wall: b.At.Sub(a.At), Processes: len(b.Procs)}
	var ticks uint64
	for k, sb := range b.Procs {
		sa, ok := a.Procs[k]
		if !ok {
			u.Started++
			ticks += sb.CPUTicks()
			continue
		}
		if d := sb.CPUTicks(); d >= sa.CPUTicks() {
			ticks += d - sa.CPUTicks()
		}
	}
	for k := range a.Procs {
		if _, ok := b.Procs[k]; !ok {
			u.Exited++
		}
	}
	u.CPU = time.Duration(ticks) * tick
	// Counters only grow; guard anyway so a bad sample cannot wrap around.
	if b.Host.Busy >= a.Host.Busy {
		u.HostBusy = time.Duration(b.Host.Busy-a.Host.Busy) * tick
	}
	if b.Host.Steal >= a.Host.Steal {
		u.HostSteal = time.Duration(b.Host.Steal-a.Host.Steal) * tick
	}
	return u
}

// ClockTicks returns the length of a /proc clock tick (USER_HZ) from
// `getconf CLK_TCK`. Go has no sysconf, and USER_HZ is 100 on every
// mainstream Linux, but asking costs nothing and avoids a silent 10x error.
func ClockTicks() (time.Duration, error) {
	out, err := exec.Command("getconf", "CLK_TCK").Output()
	if err != nil {
		return 0, fmt.Errorf("getconf CLK_TCK: %w", err)
	}
	hz, err := strconv.Atoi(strings.TrimSpace(string(out)))
	if err != nil || hz <= 0 {
		return 0, fmt.Errorf("getconf CLK_TCK: unexpected %q", strings.TrimSpace(string(out)))
	}
	return time.Second / time.Duration(hz), nil
}
