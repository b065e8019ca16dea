package benchutil

import (
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func TestParseStat(t *testing.T) {
	tests := []struct {
		file string
		want Stat
	}{
		// A copy of sleep named "x) (y z)": comm holds spaces and both
		// parentheses, so only the last ')' ends it.
		{"stat-weird-comm.txt", Stat{PID: 14985, Comm: "x) (y z)", State: 'S', PPID: 1, PGRP: 14975, StartTime: 757622}},
		// `spright run` in poll mode: busy, so utime is well above zero.
		{"stat-spright-poll.txt", Stat{PID: 15008, Comm: "spright", State: 'S', PPID: 1, PGRP: 15004,
			UTime: 321, STime: 2, CUTime: 2, StartTime: 758021}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			got, err := ParseStat([]byte(readTestdata(t, tc.file)))
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("got  %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestParseStatRejects(t *testing.T) {
	for _, in := range []string{
		"",
		"123 no-parens S 1",
		"123 (short) S 1 2 3",
		"abc (x) S " + strings.Repeat("0 ", 50),
		"123 (x) S one " + strings.Repeat("0 ", 50),
		"123 (x) SS 1 " + strings.Repeat("0 ", 50),
	} {
		if s, err := ParseStat([]byte(in)); err == nil {
			t.Errorf("ParseStat(%q) = %+v, want an error", in, s)
		}
	}
}

func TestParseStatSelf(t *testing.T) {
	s, err := Proc.Stat(os.Getpid())
	if err != nil {
		t.Fatal(err)
	}
	if s.PID != os.Getpid() || s.PPID != os.Getppid() {
		t.Errorf("self stat = %+v, want pid %d ppid %d", s, os.Getpid(), os.Getppid())
	}
}

// fakeProc writes a /proc with one stat file per process.
func fakeProc(t *testing.T, procs ...Stat) ProcFS {
	t.Helper()
	dir := t.TempDir()
	for _, p := range procs {
		writeStat(t, dir, p)
	}
	// Non-process entries must be ignored.
	writeHostStat(t, dir, 0, 0)
	os.Mkdir(filepath.Join(dir, "sys"), 0o755)
	return ProcFS(dir)
}

func writeHostStat(t *testing.T, dir string, busy, steal uint64) {
	t.Helper()
	// user=busy, idle=1000, steal=steal; per-CPU lines follow.
	stat := fmt.Sprintf("cpu  %d 0 0 1000 0 0 0 %d 0 0\ncpu0 1 0 0 1 0 0 0 0 0 0\nintr 0\n", busy, steal)
	if err := os.WriteFile(filepath.Join(dir, "stat"), []byte(stat), 0o644); err != nil {
		t.Fatal(err)
	}
}

func writeStat(t *testing.T, dir string, p Stat) {
	t.Helper()
	state := p.State
	if state == 0 {
		state = 'S'
	}
	line := fmt.Sprintf("%d (%s) %c %d %d 0 0 -1 0 0 0 0 0 %d %d %d %d 20 0 1 0 %d 0 0\n",
		p.PID, p.Comm, state, p.PPID, p.PGRP, p.UTime, p.STime, p.CUTime, p.CSTime, p.StartTime)
	if err := os.MkdirAll(filepath.Join(dir, fmt.Sprint(p.PID)), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, fmt.Sprint(p.PID), "stat"), []byte(line), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestTree(t *testing.T) {
	fs := fakeProc(t,
		Stat{PID: 1, Comm: "init"},
		Stat{PID: 100, PPID: 1, Comm: "spright"},
		Stat{PID: 120, PPID: 100, Comm: "spright"}, // function
		Stat{PID: 110, PPID: 100, Comm: "spright"}, // function
		Stat{PID: 130, PPID: 110, Comm: "a) (b c"}, // grandchild with an awkward comm
		Stat{PID: 200, PPID: 1, Comm: "wrk"},       // not ours
		Stat{PID: 99, PPID: 200, Comm: "not-ours"}, // child of another tree
	)
	tree, err := fs.Tree(100)
	if err != nil {
		t.Fatal(err)
	}
	var pids []int
	for _, s := range tree {
		pids = append(pids, s.PID)
	}
	if want := []int{100, 110, 120, 130}; !reflect.DeepEqual(pids, want) {
		t.Errorf("tree pids = %v, want %v", pids, want)
	}
	if _, err := fs.Tree(4242); err == nil {
		t.Error("Tree of a missing root: want an error")
	}
}

func TestSnapshotDelta(t *testing.T) {
	dir := t.TempDir()
	fs := ProcFS(dir)
	root := Stat{PID: 100, PPID: 1, Comm: "spright", UTime: 50, STime: 10, StartTime: 1000}
	fn1 := Stat{PID: 110, PPID: 100, Comm: "spright", UTime: 5, STime: 5, StartTime: 1010}
	fn2 := Stat{PID: 120, PPID: 100, Comm: "spright", UTime: 7, STime: 0, StartTime: 1020}
	for _, s := range []Stat{root, fn1, fn2} {
		writeStat(t, dir, s)
	}
	writeHostStat(t, dir, 500, 7)
	a, err := fs.Snapshot(100)
	if err != nil {
		t.Fatal(err)
	}
	// Root +30 ticks, fn1 +5, fn2 exits, and pid 120 is reused by a new
	// process that used 4 ticks: it must count in full, not as 4-7.
	root.UTime += 25
	root.STime += 5
	fn1.STime += 5
	fn2 = Stat{PID: 120, PPID: 100, Comm: "ip", UTime: 3, STime: 1, StartTime: 2000}
	for _, s := range []Stat{root, fn1, fn2} {
		writeStat(t, dir, s)
	}
	writeHostStat(t, dir, 600, 9)
	b, err := fs.Snapshot(100)
	if err != nil {
		t.Fatal(err)
	}
	b.At = a.At.Add(2 * time.Second)
	u := Delta(a, b, 10*time.Millisecond)
	want := CPUUsage{CPU: 390 * time.Millisecond, Wall: 2 * time.Second, Exited: 1, Started: 1, Processes: 3,
		HostBusy: time.Second, HostSteal: 20 * time.Millisecond}
	if u != want {
		t.Errorf("delta = %+v, want %+v", u, want)
	}
	if c := u.Cores(); c < 0.1949 || c > 0.1951 {
		t.Errorf("cores = %v, want 0.195", c)
	}
}

func TestAlive(t *testing.T) {
	dir := t.TempDir()
	fs := ProcFS(dir)
	writeStat(t, dir, Stat{PID: 10, StartTime: 5})
	writeStat(t, dir, Stat{PID: 11, StartTime: 5, State: 'Z'})
	for _, tc := range []struct {
		k    ProcKey
		want bool
	}{
		{ProcKey{10, 5}, true},
		{ProcKey{10, 6}, false}, // pid reused
		{ProcKey{11, 5}, false}, // zombie
		{ProcKey{12, 5}, false}, // gone
	} {
		got, err := fs.Alive(tc.k)
		if err != nil || got != tc.want {
			t.Errorf("Alive(%+v) = %v, %v; want %v", tc.k, got, err, tc.want)
		}
	}
}

func TestClockTicks(t *testing.T) {
	tick, err := ClockTicks()
	if err != nil {
		t.Skip(err) // no getconf: nothing to check here
	}
	if tick <= 0 || tick > time.Second {
		t.Errorf("tick = %v", tick)
	}
}

func TestParseHostCPU(t *testing.T) {
	// A real /proc/stat from the 2-CPU benchmark VM.
	h, err := ParseHostCPU([]byte(readTestdata(t, "proc-stat.txt")))
	if err != nil {
		t.Fatal(err)
	}
	// cpu  48662 0 17777 1520789 1003 0 666 1155 0 0
	if want := (HostCPU{Busy: 48662 + 17777 + 666, Steal: 1155}); h != want {
		t.Errorf("got %+v, want %+v", h, want)
	}
	for _, bad := range []string{"", "cpu0 1 2 3 4 5 6 7 8\n", "cpu 1 2 3\n", "cpu 1 2 x 4 5 6 7 8\n"} {
		if h, err := ParseHostCPU([]byte(bad)); err == nil {
			t.Errorf("ParseHostCPU(%q) = %+v, want an error", bad, h)
		}
	}
}
