package scenario

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

// profileTarget is a process to profile (Pid > 0) or, with Pid == 0, the
// whole machine (perf record -a: kernel work no process is billed for,
// softirq, kworkers, and the load generator too).
type profileTarget struct {
	Name string
	Pid  int
}

// profileFreq is perf's sampling frequency (Hz): fine enough for a 10 s
// window, light enough not to change what it measures much on 2 cores.
const profileFreq = 1999

// recordProfiles runs perf record (call graphs through frame pointers,
// which Go keeps by default) on every target while run runs, then writes
// into dir, per target, <prefix>-<name>.txt (perf report: self and
// children by symbol), <prefix>-<name>.folded (collapsed stacks, one line
// per distinct stack with its sample count: flamegraph.pl input) and a
// line of summary. It returns the summaries.
func recordProfiles(ctx context.Context, e *Env, dir, prefix string, targets []profileTarget, run func() error) ([]string, error) {
	perf, err := lookTool("perf")
	if err != nil {
		return nil, fmt.Errorf("--profile needs perf (Debian: linux-perf): %w", err)
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	type rec struct {
		t    profileTarget
		data string
		cmd  *exec.Cmd
		out  bytes.Buffer
	}
	var recs []*rec
	stopAll := func() {
		for _, r := range recs {
			// SIGINT: perf record writes its data and exits.
			r.cmd.Process.Signal(syscall.SIGINT)
		}
		for _, r := range recs {
			r.cmd.Wait()
		}
	}
	for _, t := range targets {
		r := &rec{t: t, data: filepath.Join(e.Tmp, prefix+"-"+t.Name+".perf.data")}
		args := []string{"record", "-F", fmt.Sprint(profileFreq), "-g", "-o", r.data}
		if t.Pid > 0 {
			args = append(args, "-p", fmt.Sprint(t.Pid))
		} else {
			args = append(args, "-a")
		}
		r.cmd = exec.Command(perf, args...)
		r.cmd.Stdout, r.cmd.Stderr = &r.out, &r.out
		if err := r.cmd.Start(); err != nil {
			stopAll()
			return nil, fmt.Errorf("perf record: %w", err)
		}
		recs = append(recs, r)
	}
	// perf attaches asynchronously; give it a moment so the window is
	// covered from its start.
	time.Sleep(300 * time.Millisecond)
	runErr := run()
	stopAll()
	if runErr != nil {
		return nil, runErr
	}
	var sums []string
	for _, r := range recs {
		base := filepath.Join(dir, prefix+"-"+r.t.Name)
		if _, err := os.Stat(r.data); err != nil {
			return sums, fmt.Errorf("perf record %s wrote nothing: %s", r.t.Name, strings.TrimSpace(r.out.String()))
		}
		var rep bytes.Buffer
		for _, a := range [][]string{
			{"report", "-i", r.data, "--stdio", "--no-children", "--sort", "dso,symbol", "-g", "none", "--percent-limit", "0.5"},
			{"report", "-i", r.data, "--stdio", "--children", "--sort", "symbol", "-g", "none", "--percent-limit", "3"},
		} {
			out, err := exec.CommandContext(ctx, perf, a...).Output()
			if err != nil {
				return sums, fmt.Errorf("perf %s: %w", strings.Join(a, " "), err)
			}
			fmt.Fprintf(&rep, "### perf %s\n\n%s\n", strings.Join(a[2:], " "), out)
		}
		if err := os.WriteFile(base+".txt", rep.Bytes(), 0o644); err != nil {
			return sums, err
		}
		script, err := exec.CommandContext(ctx, perf, "script", "-i", r.data).Output()
		if err != nil {
			return sums, fmt.Errorf("perf script %s: %w", r.t.Name, err)
		}
		stacks := foldPerfScript(script)
		if err := writeFolded(base+".folded", stacks); err != nil {
			return sums, err
		}
		s := summarizeStacks(stacks)
		sums = append(sums, fmt.Sprintf("%s %s: %s", prefix, r.t.Name, s))
		os.Remove(r.data)
	}
	return sums, nil
}

// foldPerfScript turns perf script's default output (a header line per
// sample, then one frame per line, leaf first, then a blank line) into
// collapsed stacks "comm;root;...;leaf" → samples.
func foldPerfScript(b []byte) map[string]int {
	out := map[string]int{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 1<<20), 1<<24)
	var comm string
	var frames []string
	flush := func() {
		if comm == "" {
			return
		}
		var sb strings.Builder
		sb.WriteString(comm)
		for i := len(frames) - 1; i >= 0; i-- {
			sb.WriteByte(';')
			sb.WriteString(frames[i])
		}
		out[sb.String()]++
		comm, frames = "", frames[:0]
	}
	for sc.Scan() {
		line := sc.Text()
		if strings.TrimSpace(line) == "" {
			flush()
			continue
		}
		if line[0] != ' ' && line[0] != '\t' {
			flush()
			// "spright 1234 [000] 12.3: 500 cpu-clock:ppp:" — the command
			// may contain spaces; it ends before the first field that is
			// all digits (the pid).
			f := strings.Fields(line)
			n := 1
			for n < len(f) && strings.Trim(f[n], "0123456789/") != "" {
				n++
			}
			comm = strings.Join(f[:min(n, len(f))], " ")
			continue
		}
		// "\t ffffffff81234567 func+0x12 ([kernel.kallsyms])"
		f := strings.TrimSpace(line)
		_, rest, ok := strings.Cut(f, " ")
		if !ok {
			continue
		}
		sym, dso := rest, ""
		if i := strings.LastIndex(sym, " ("); i >= 0 {
			sym, dso = sym[:i], sym[i:]
		}
		if i := strings.LastIndex(sym, "+0x"); i >= 0 {
			sym = sym[:i]
		}
		sym = strings.ReplaceAll(sym, ";", ":")
		if strings.Contains(dso, "kernel.kallsyms") || strings.HasPrefix(dso, " ([") && !strings.HasPrefix(dso, " ([unknown") {
			// Marked as flamegraph's stackcollapse-perf does.
			sym += "_[k]"
		}
		frames = append(frames, sym)
	}
	flush()
	return out
}

func writeFolded(path string, stacks map[string]int) error {
	keys := make([]string, 0, len(stacks))
	for k := range stacks {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b bytes.Buffer
	for _, k := range keys {
		fmt.Fprintf(&b, "%s %d\n", k, stacks[k])
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

// profileBuckets classify a sample by the frames of its stack, the first
// matching bucket winning (so "scheduler" means the sample is in the
// scheduler's code, whoever called it).
var profileBuckets = []struct {
	Name  string
	Match func(leaf string, stack []string) bool
}{
	{"idle", func(leaf string, st []string) bool { return anyFrame(st, "do_idle", "cpu_idle", "default_idle") }},
	{"sched/ctxsw", func(leaf string, st []string) bool {
		return anyFrame(st, "__schedule", "schedule", "finish_task_switch", "try_to_wake_up", "__wake_up", "ttwu_")
	}},
	{"sk_msg/bpf", func(leaf string, st []string) bool {
		return anyFrame(st, "tcp_bpf_", "sk_msg_", "bpf_prog_", "sk_psock", "bpf_msg_")
	}},
	{"tcp/ip", func(leaf string, st []string) bool {
		return anyFrame(st, "tcp_", "ip_", "__netif_", "net_rx_action", "inet_", "__sys_accept", "__sys_connect", "sock_")
	}},
	{"epoll", func(leaf string, st []string) bool {
		return anyFrame(st, "ep_poll", "do_epoll", "ep_", "__x64_sys_epoll")
	}},
	{"futex", func(leaf string, st []string) bool { return anyFrame(st, "futex_", "do_futex") }},
	{"other kernel", func(leaf string, st []string) bool { return strings.HasSuffix(leaf, "_[k]") }},
	{"go runtime", func(leaf string, st []string) bool { return strings.HasPrefix(leaf, "runtime.") }},
	{"net/http", func(leaf string, st []string) bool { return anyFrame(st, "net/http.") }},
	{"spright", func(leaf string, st []string) bool { return anyFrame(st, "github.com/spright-dev/") }},
	{"other user", func(string, []string) bool { return true }},
}

func anyFrame(st []string, prefixes ...string) bool {
	for _, f := range st {
		for _, p := range prefixes {
			if strings.HasPrefix(f, p) {
				return true
			}
		}
	}
	return false
}

// summarizeStacks gives each bucket's share of the samples, and how many
// leaf frames perf could not name (a check that Go symbols resolve).
func summarizeStacks(stacks map[string]int) string {
	total, unknown := 0, 0
	by := map[string]int{}
	for k, n := range stacks {
		parts := strings.Split(k, ";")
		st := parts[1:]
		leaf := ""
		if len(st) > 0 {
			leaf = st[len(st)-1]
		}
		total += n
		if leaf == "[unknown]" {
			unknown += n
		}
		for _, b := range profileBuckets {
			if b.Match(leaf, st) {
				by[b.Name] += n
				break
			}
		}
	}
	if total == 0 {
		return "no samples"
	}
	var parts []string
	for _, b := range profileBuckets {
		if n := by[b.Name]; n > 0 {
			parts = append(parts, fmt.Sprintf("%s %.1f%%", b.Name, 100*float64(n)/float64(total)))
		}
	}
	return fmt.Sprintf("%d samples; %s; unresolved leaf frames %.1f%%", total, strings.Join(parts, ", "), 100*float64(unknown)/float64(total))
}
