// Command xdp measures what eBPF forwarding between network namespaces
// (bpf/redirect: tc bpf_redirect_peer, XDP_REDIRECT) does to HTTP that
// crosses veths, against the host's normal IP forwarding path (paper
// Appendix B):
//
//	go run ./test/bench/xdp [--out DIR] [--quick] [--modes off,tc,xdp] [--paths echo,hello]
//
// Two paths, both client namespace -> veth -> host -> veth -> server
// namespace, wrk in the client namespace:
//
//   - echo: a Go HTTP echo server in a namespace of its own (the network
//     hop alone, as the paper's Fig. 12 measures it);
//   - hello: the standalone hello chain with its gateway in a namespace of
//     its own (spright run --gateway-netns --client-netns 1): client pod ->
//     gateway pod, then sk_msg to the functions.
//
// For each path, mode (redirect-off, redirect-tc, redirect-xdp) and
// concurrency it runs wrk (POST of 100 bytes) and records RPS, p50/p99
// latency, the CPU of the system under test (this process, which hosts the
// server or gateway, plus the function processes; wrk excluded), wrk's CPU,
// the whole host's busy CPU, and the forwarding counters. Results go to
// DIR/xdp.json (and .csv) in the benchmark suite's format (scenario.File) and a
// table on stdout. Needs root, ip and wrk. The machine is shared: other
// processes' CPU shows in host_busy_cores and contaminates the figures.
package main

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
	"github.com/spright-dev/spright/test/bench/scenario"

	"github.com/spright-dev/spright/bpf/redirect"
	"github.com/spright-dev/spright/pkg/standalone"
)

type options struct {
	out         string
	quick       bool
	modes       []redirect.Mode
	paths       []string
	concurrency []int
	duration    time.Duration
	warmup      time.Duration
	wrk         string
}

func main() {
	o, err := parseFlags(os.Args[1:])
	if err != nil {
		fmt.Fprintln(os.Stderr, "xdp:", err)
		os.Exit(2)
	}
	if err := run(o); err != nil {
		fmt.Fprintln(os.Stderr, "xdp:", err)
		os.Exit(1)
	}
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("xdp", flag.ContinueOnError)
	o := &options{}
	fs.StringVar(&o.out, "out", "test/bench/results", "directory for xdp.json")
	fs.BoolVar(&o.quick, "quick", false, "smoke run: concurrency 32 only, 3s per point")
	modes := fs.String("modes", "off,tc,xdp", "forwarding modes to compare")
	paths := fs.String("paths", "echo,hello", "paths: echo (HTTP server in a netns), hello (the hello chain's gateway in a netns)")
	conc := fs.String("concurrency", "1,8,32,64", "wrk connection counts")
	fs.DurationVar(&o.duration, "duration", 8*time.Second, "wrk run per point")
	fs.DurationVar(&o.warmup, "warmup", time.Second, "wrk warm-up per mode (not recorded)")
	fs.StringVar(&o.wrk, "wrk", "wrk", "wrk binary")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	for _, m := range strings.Split(*modes, ",") {
		mode, err := redirect.ParseMode(m)
		if err != nil {
			return nil, err
		}
		o.modes = append(o.modes, mode)
	}
	for _, p := range strings.Split(*paths, ",") {
		if p = strings.TrimSpace(p); p != "echo" && p != "hello" {
			return nil, fmt.Errorf("path %q: want echo or hello", p)
		}
		o.paths = append(o.paths, strings.TrimSpace(p))
	}
	for _, c := range strings.Split(*conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(c))
		if err != nil || n < 1 {
			return nil, fmt.Errorf("concurrency %q", c)
		}
		o.concurrency = append(o.concurrency, n)
	}
	if o.quick {
		o.concurrency = []int{32}
		o.duration = 3 * time.Second
		o.warmup = time.Second
	}
	return o, nil
}

// Entry is one measured point.
type Entry struct {
	System          string            `json:"system"` // redirect-off | redirect-tc | redirect-xdp
	Path            string            `json:"path"`   // echo | hello
	Concurrency     int               `json:"concurrency"`
	DurationS       float64           `json:"duration_s"`
	Requests        int64             `json:"requests"`
	RPS             float64           `json:"rps"`
	P50ms           float64           `json:"p50_ms"`
	P90ms           float64           `json:"p90_ms"`
	P99ms           float64           `json:"p99_ms"`
	Errors          int64             `json:"errors"`  // wrk socket errors
	Non2xx          int64             `json:"non_2xx"` // wrk non-2xx/3xx responses
	CPUCores        float64           `json:"cpu_cores"`
	LoadgenCPUCores float64           `json:"loadgen_cpu_cores"`
	HostBusyCores   float64           `json:"host_busy_cores"`
	CPUusPerReq     float64           `json:"cpu_us_per_request"`
	HostForwarded   uint64            `json:"host_forwarded_packets"` // Ip ForwDatagrams delta: packets the host stack forwarded
	Redirected      uint64            `json:"redirected_packets"`     // forwarding program counters
	Counters        map[string]uint64 `json:"counters,omitempty"`
}

// Report is xdp.json.
type Report struct {
	Scenario string            `json:"scenario"`
	Machine  map[string]string `json:"machine"`
	Started  string            `json:"started"`
	Quick    bool              `json:"quick"`
	Notes    []string          `json:"notes"`
	Entries  []Entry           `json:"entries"`
}

func run(o *options) error {
	if os.Geteuid() != 0 {
		return errors.New("needs root (eBPF, network namespaces)")
	}
	wrkPath, err := exec.LookPath(o.wrk)
	if err != nil {
		return fmt.Errorf("wrk: %w", err)
	}
	if err := os.MkdirAll(o.out, 0o755); err != nil {
		return fmt.Errorf("out dir: %w", err)
	}
	tmp, err := os.MkdirTemp("", "spright-bench-xdp")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	script := filepath.Join(tmp, "post.lua")
	body := strings.Repeat("a", 100)
	if err := os.WriteFile(script, []byte(fmt.Sprintf("wrk.method = \"POST\"\nwrk.body = %q\nwrk.headers[\"Content-Type\"] = \"text/plain\"\n", body)), 0o644); err != nil {
		return err
	}
	started := time.Now()
	rep := Report{Scenario: "xdp", Machine: machine(wrkPath), Started: time.Now().UTC().Format(time.RFC3339), Quick: o.quick,
		Notes: []string{
			"client netns -> veth -> host -> veth -> server netns; wrk (1 thread) in the client netns, POST 100 B",
			"cpu_cores: this process (HTTP server or gateway) + function processes, user+sys from /proc; loadgen_cpu_cores: wrk rusage; host_busy_cores: /proc/stat, everything on the host",
			"softirq work is charged to whatever task runs at the time (often wrk or the server), so cpu_cores and loadgen_cpu_cores split the forwarding cost arbitrarily; host_busy_cores includes other processes on a shared VM",
		}}
	var spright string
	for _, p := range o.paths {
		if p == "hello" {
			spright = filepath.Join(tmp, "spright")
			build := exec.Command("go", "build", "-o", spright, "github.com/spright-dev/spright/cmd/spright")
			build.Stdout, build.Stderr = os.Stderr, os.Stderr
			if err := build.Run(); err != nil {
				return fmt.Errorf("build spright: %w", err)
			}
		}
	}
	for _, path := range o.paths {
		for _, mode := range o.modes {
			entries, err := measure(o, path, mode, spright, wrkPath, script)
			if err != nil {
				return fmt.Errorf("%s, redirect %s: %w", path, mode, err)
			}
			rep.Entries = append(rep.Entries, entries...)
		}
	}
	f := suiteFile(rep, o, started)
	if err := f.Write(o.out); err != nil {
		return err
	}
	out := filepath.Join(o.out, "xdp.json")
	fmt.Printf("%-6s %-13s %5s %9s %8s %8s %7s %7s %7s %9s %10s\n", "path", "system", "conc", "rps", "p50_ms", "p99_ms", "cpu", "loadgen", "host", "host_fwd", "redirected")
	bad := 0
	for _, e := range rep.Entries {
		fmt.Printf("%-6s %-13s %5d %9.0f %8.3f %8.3f %7.2f %7.2f %7.2f %9d %10d\n", e.Path, e.System, e.Concurrency, e.RPS, e.P50ms, e.P99ms,
			e.CPUCores, e.LoadgenCPUCores, e.HostBusyCores, e.HostForwarded, e.Redirected)
		bad += int(e.Errors + e.Non2xx)
	}
	fmt.Println("wrote", out)
	if bad > 0 {
		return fmt.Errorf("%d errors or non-2xx responses (see %s)", bad, out)
	}
	return nil
}

// target is a server reachable from a client netns across veths.
type target struct {
	url       string
	clientNS  string
	pids      []int // processes of the system under test besides this one
	forwarder func() *redirect.Forwarder
	stop      func() error
}

func startEcho(mode redirect.Mode) (*target, error) {
	// Two pods made by a standalone runner would need a chain; build them
	// with the same primitives instead: a runner with no functions is not
	// allowed, so the echo path uses its own namespaces.
	return newEchoPods(mode)
}

func startHello(mode redirect.Mode, spright string) (*target, error) {
	cf, err := standalone.Parse([]byte(`
name: benchxdp
gatewayNetns: true
clientNetns: 1
pool: {slots: 1024, slotSize: 16384, hugePages: false}
routes: {"*": [upper]}
functions:
  - name: upper
    concurrency: 64
    routes: {"*": [reverse]}
  - name: reverse
    concurrency: 64
`))
	if err != nil {
		return nil, err
	}
	dir, err := os.MkdirTemp("", "spright-bench-xdp-chain")
	if err != nil {
		return nil, err
	}
	r, err := standalone.Start(cf, standalone.Options{
		Listen:        "127.0.0.1:8080",
		PinDir:        fmt.Sprintf("/sys/fs/bpf/spright-bench-xdp-%d", os.Getpid()),
		ControlSocket: filepath.Join(dir, "control.sock"),
		Executable:    spright,
		Redirect:      string(mode),
	})
	if err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	t := &target{url: "http://" + r.Addr() + "/", clientNS: r.ClientNetns()[0], forwarder: r.Forwarder,
		stop: func() error { defer os.RemoveAll(dir); return r.Stop() }}
	for _, p := range r.Procs() {
		t.pids = append(t.pids, p.Cmd.Process.Pid)
	}
	return t, nil
}

func measure(o *options, path string, mode redirect.Mode, spright, wrkPath, script string) ([]Entry, error) {
	var (
		t   *target
		err error
	)
	if path == "echo" {
		t, err = startEcho(mode)
	} else {
		t, err = startHello(mode, spright)
	}
	if err != nil {
		return nil, err
	}
	defer t.stop()
	if err := probe(t); err != nil {
		return nil, err
	}
	wrk := func(c int, d time.Duration) (*wrkResult, error) {
		return runWrk(wrkPath, []string{"ip", "netns", "exec", t.clientNS}, c, d, script, t.url)
	}
	if _, err := wrk(8, o.warmup.Round(time.Second)); err != nil {
		return nil, fmt.Errorf("warm-up: %w", err)
	}
	var out []Entry
	for _, c := range o.concurrency {
		fw0, err := forwDatagrams()
		if err != nil {
			return nil, err
		}
		var s0 redirect.Stats
		if f := t.forwarder(); f != nil {
			if s0, err = f.Stats(); err != nil {
				return nil, err
			}
		}
		cpu0, err := treeTicks(t.pids)
		if err != nil {
			return nil, err
		}
		h0, err := hostBusy()
		if err != nil {
			return nil, err
		}
		start := time.Now()
		res, err := wrk(c, o.duration)
		if err != nil {
			return nil, err
		}
		elapsed := time.Since(start).Seconds()
		cpu1, err := treeTicks(t.pids)
		if err != nil {
			return nil, err
		}
		h1, err := hostBusy()
		if err != nil {
			return nil, err
		}
		fw1, err := forwDatagrams()
		if err != nil {
			return nil, err
		}
		e := Entry{
			System: "redirect-" + string(mode), Path: path, Concurrency: c, DurationS: res.elapsed.Seconds(),
			Requests: res.requests, RPS: res.rps, P50ms: ms(res.lat[50]), P90ms: ms(res.lat[90]), P99ms: ms(res.lat[99]),
			Errors: res.errors, Non2xx: res.non2xx,
			CPUCores:        float64(cpu1-cpu0) / clkTck / elapsed,
			LoadgenCPUCores: res.cpu.Seconds() / elapsed,
			HostBusyCores:   float64(h1-h0) / clkTck / elapsed,
			HostForwarded:   fw1 - fw0,
		}
		if res.requests > 0 {
			e.CPUusPerReq = float64(cpu1-cpu0) / clkTck * 1e6 / float64(res.requests)
		}
		if f := t.forwarder(); f != nil {
			s1, err := f.Stats()
			if err != nil {
				return nil, err
			}
			d := s1.Sub(s0)
			e.Redirected = d.Redirected()
			e.Counters = d.Map()
		}
		fmt.Fprintf(os.Stderr, "xdp: %s %s c=%d: %.0f rps, p50 %.3f ms, p99 %.3f ms, sut %.2f cores, wrk %.2f, host fwd %d, redirected %d\n",
			path, e.System, c, e.RPS, e.P50ms, e.P99ms, e.CPUCores, e.LoadgenCPUCores, e.HostForwarded, e.Redirected)
		out = append(out, e)
	}
	return out, t.stop()
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

// probe checks the path answers before loading it.
func probe(t *target) error {
	cl := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = redirect.InNetns(t.clientNS, func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}}
	resp, err := cl.Post(t.url, "text/plain", strings.NewReader("abc"))
	if err != nil {
		return fmt.Errorf("probe %s from netns %s: %w", t.url, t.clientNS, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 || len(b) == 0 {
		return fmt.Errorf("probe %s: %d %q", t.url, resp.StatusCode, b)
	}
	return nil
}

// clkTck is USER_HZ (100 on Linux).
const clkTck = 100

// treeTicks is utime+stime of this process (all threads) and pids.
func treeTicks(pids []int) (uint64, error) {
	var total uint64
	for _, p := range append([]int{os.Getpid()}, pids...) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", p))
		if err != nil {
			return 0, fmt.Errorf("cpu of %d: %w", p, err)
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		f := strings.Fields(s[i+1:])
		if i < 0 || len(f) < 13 {
			return 0, fmt.Errorf("bad /proc/%d/stat", p)
		}
		u, _ := strconv.ParseUint(f[11], 10, 64)
		st, _ := strconv.ParseUint(f[12], 10, 64)
		total += u + st
	}
	return total, nil
}

// hostBusy is the host's non-idle CPU ticks (/proc/stat "cpu" line, minus
// idle and iowait).
func hostBusy() (uint64, error) {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, err
	}
	line, _, _ := strings.Cut(string(b), "\n")
	f := strings.Fields(line)
	if len(f) < 8 || f[0] != "cpu" {
		return 0, fmt.Errorf("bad /proc/stat: %q", line)
	}
	var busy uint64
	for i, v := range f[1:] {
		n, _ := strconv.ParseUint(v, 10, 64)
		if i == 3 || i == 4 || i >= 7 { // idle, iowait; guest time is inside user
			continue
		}
		busy += n
	}
	return busy, nil
}

// forwDatagrams is Ip: ForwDatagrams of the host netns.
func forwDatagrams() (uint64, error) { return redirect.HostForwarded() }

func machine(wrkPath string) map[string]string {
	m := map[string]string{"goos": runtime.GOOS, "goarch": runtime.GOARCH, "go": runtime.Version(), "cpus": strconv.Itoa(runtime.NumCPU())}
	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m["kernel"] = strings.TrimSpace(string(b))
	}
	if h, err := os.Hostname(); err == nil {
		m["hostname"] = h
	}
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok && strings.TrimSpace(k) == "model name" {
				m["cpu_model"] = strings.TrimSpace(v)
				break
			}
		}
	}
	if out, err := exec.Command(wrkPath, "-v").CombinedOutput(); len(out) > 0 {
		_ = err // wrk -v exits 1
		m["wrk"] = strings.TrimSpace(strings.SplitN(string(out), "\n", 2)[0])
	}
	return m
}

// wrkResult is the part of wrk's report used here.
type wrkResult struct {
	requests int64
	elapsed  time.Duration
	rps      float64
	lat      map[int]time.Duration
	errors   int64
	non2xx   int64
	cpu      time.Duration
}

// runWrk runs wrk (one thread, --latency) through prefix, which must exec
// it so that its rusage is wrk's.
func runWrk(bin string, prefix []string, conns int, d time.Duration, script, url string) (*wrkResult, error) {
	if d < time.Second {
		d = time.Second
	}
	args := append(append([]string{}, prefix...), bin, "-t", "1", "-c", strconv.Itoa(conns), "-d", fmt.Sprintf("%ds", int(d/time.Second)), "--latency", "-s", script, url)
	cmd := exec.Command(args[0], args[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("%s: %w: %s", strings.Join(args, " "), err, stderr.String())
	}
	r, err := parseWrk(stdout.String())
	if err != nil {
		return nil, fmt.Errorf("wrk output: %w:\n%s", err, stdout.String())
	}
	r.cpu = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return r, nil
}

func parseWrk(out string) (*wrkResult, error) {
	r := &wrkResult{lat: map[int]time.Duration{}}
	inDist := false
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		switch {
		case len(f) == 0:
		case strings.HasPrefix(strings.TrimSpace(l), "Latency Distribution"):
			inDist = true
		case inDist && len(f) == 2 && strings.HasSuffix(f[0], "%"):
			p, err := strconv.ParseFloat(strings.TrimSuffix(f[0], "%"), 64)
			if err != nil {
				return nil, err
			}
			d, err := parseDur(f[1])
			if err != nil {
				return nil, err
			}
			r.lat[int(p)] = d
		case len(f) >= 5 && f[1] == "requests" && f[2] == "in":
			inDist = false
			n, err := strconv.ParseInt(f[0], 10, 64)
			if err != nil {
				return nil, err
			}
			r.requests = n
			d, err := parseDur(strings.TrimSuffix(f[3], ","))
			if err != nil {
				return nil, err
			}
			r.elapsed = d
		case f[0] == "Requests/sec:" && len(f) == 2:
			v, err := strconv.ParseFloat(f[1], 64)
			if err != nil {
				return nil, err
			}
			r.rps = v
		case f[0] == "Socket" && len(f) >= 10: // Socket errors: connect 0, read 0, write 0, timeout 0
			for i := 2; i+1 < len(f); i += 2 {
				n, _ := strconv.ParseInt(strings.TrimSuffix(f[i+1], ","), 10, 64)
				r.errors += n
			}
		case len(f) == 5 && f[0] == "Non-2xx":
			n, _ := strconv.ParseInt(f[4], 10, 64)
			r.non2xx = n
		}
	}
	if r.rps == 0 || r.requests == 0 {
		return nil, errors.New("no requests/sec")
	}
	if _, ok := r.lat[99]; !ok {
		return nil, errors.New("no latency distribution")
	}
	return r, nil
}

// parseDur reads wrk's durations: 1.23us, 4.56ms, 7.89s, 1.2m.
func parseDur(s string) (time.Duration, error) {
	units := []struct {
		suf string
		d   time.Duration
	}{{"us", time.Microsecond}, {"ms", time.Millisecond}, {"m", time.Minute}, {"s", time.Second}, {"h", time.Hour}}
	for _, u := range units {
		if strings.HasSuffix(s, u.suf) {
			v, err := strconv.ParseFloat(strings.TrimSuffix(s, u.suf), 64)
			if err != nil {
				return 0, fmt.Errorf("duration %q: %w", s, err)
			}
			return time.Duration(v * float64(u.d)), nil
		}
	}
	return 0, fmt.Errorf("duration %q: unknown unit", s)
}

// suiteFile converts the run into the benchmark suite's result file
// (test/bench/scenario.File): the path is the entry's label, the ratios are
// tc and xdp against off, and every figure keeps its name.
func suiteFile(rep Report, o *options, started time.Time) *scenario.File {
	root, _ := benchutil.ModuleRoot()
	f := &scenario.File{
		Scenario:  "xdp",
		Title:     "XDP/TC redirect on/off (paper Appendix B): RPS and latency",
		Quick:     o.quick,
		Started:   started.UTC(),
		DurationS: time.Since(started).Seconds(),
		Machine:   benchutil.DescribeMachine(root, rep.Machine["wrk"], time.Second/time.Duration(clkTck)),
		Command:   "go run ./test/bench/xdp " + strings.Join(os.Args[1:], " "),
		Method: []string{
			"Paths: echo = an HTTP echo server in one network namespace, wrk in another, both joined to the host by veth pairs; " +
				"hello = the hello chain under `spright run` with its gateway in a namespace of its own and wrk in a client namespace, " +
				"so client → gateway crosses veths (the functions' descriptors travel by sk_msg either way).",
			"Systems: redirect-off = the host's IP stack forwards between the veths (netfilter FORWARD hook, iptables/nftables); " +
				"redirect-tc = tc programs on the host-side veths, bpf_fib_lookup + bpf_redirect_peer; redirect-xdp = XDP on the same veths " +
				"(+ a pass-only XDP program on the pod side, needed for XDP redirects into a veth). extra.host_forwarded_packets is the host's " +
				"Ip ForwDatagrams delta (0 means the stack was bypassed), extra.redirected_packets the programs' own count.",
		},
		Settings: map[string]any{
			"ratio_pairs": []any{[]any{"redirect-tc", "redirect-off"}, []any{"redirect-xdp", "redirect-off"}},
			"modes":       o.modes, "paths": o.paths, "concurrency": o.concurrency, "duration_s": o.duration.Seconds(),
		},
		Notes: rep.Notes,
	}
	for _, e := range rep.Entries {
		other := e.HostBusyCores - e.CPUCores - e.LoadgenCPUCores
		if other < 0 {
			other = 0
		}
		se := scenario.Entry{
			System: e.System, Concurrency: e.Concurrency, Label: e.Path,
			RPS: e.RPS, P50Ms: e.P50ms, P99Ms: e.P99ms,
			CPUCores: e.CPUCores, CPUByClass: map[string]float64{"server": e.CPUCores},
			CPUUsPerRequest: e.CPUusPerReq, LoadGenCPUCores: e.LoadgenCPUCores, OtherCPUCores: other,
			Requests: e.Requests, Errors: e.Errors + e.Non2xx, DurationS: e.DurationS,
			Extra: map[string]float64{
				"p90_ms":                 e.P90ms,
				"host_forwarded_packets": float64(e.HostForwarded),
				"redirected_packets":     float64(e.Redirected),
			},
		}
		if e.Path == "hello" {
			se.CPUByClass = map[string]float64{"gateway+functions": e.CPUCores}
		}
		f.Entries = append(f.Entries, se)
	}
	return f
}
