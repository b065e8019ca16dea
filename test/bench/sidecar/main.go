// Command sidecar benchmarks the per-pod sidecar of the Knative data path:
// Knative's real queue-proxy against SPRIGHT's EPROXY, both in front of the
// same HTTP function (test/fixtures/httpfn), and the function alone as the
// floor:
//
//	go run ./test/bench/sidecar [--quick] [--systems queue-proxy,eproxy,direct]
//	    [--eproxy PATH] [--concurrency 1,8,32] [--duration 10s] [--idle 10s]
//
// Each system runs in a network namespace of its own standing in for a pod
// (loopback only; the sidecar on 8012 forwarding to the function on
// 127.0.0.1:8080, Knative's ports), and wrk runs inside the same namespace:
//
//   - direct: wrk → function;
//   - queue-proxy: wrk → queue-proxy (knative.dev/serving cmd/queue at
//     v0.42.2, built from serving's own module, with the environment the
//     revision reconciler gives it) → function;
//   - eproxy: wrk → EPROXY (--eproxy, same environment) → function. Without
//     --eproxy, or if it does not start and pass the readiness probe, the
//     system is skipped with a note.
//
// For each system it measures the CPU the sidecar and the function burn
// while idle, then runs wrk at each concurrency with the paper's payload mix
// (98% 100 B / 2% 10 KB POST bodies, drawn per request) and records
// throughput, latency, the CPU of the sidecar process alone (the figure
// behind "EPROXY ≤ 1/3 of queue-proxy CPU per request"), of the function
// and of wrk, from /proc and wrk's rusage.
//
// It needs root (network namespaces), ip(8) and wrk. Results go to stdout
// as a table and to --out as JSON; the exit status is non-zero if anything
// looked wrong (non-2xx, socket errors, wrong answers, processes dying).
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
	"github.com/spright-dev/spright/test/bench/internal/sidecar"
)

// The systems, in the order they run.
const (
	sysDirect     = "direct"
	sysQueueProxy = "queue-proxy"
	sysEProxy     = "eproxy"
)

var knownSystems = []string{sysQueueProxy, sysEProxy, sysDirect}

type options struct {
	systems              []string
	eproxy               string
	eproxyEnv            []string
	queueProxy           string
	httpfn               string
	behavior             string
	serviceTime          time.Duration
	containerConcurrency int
	readiness            string
	fullDuplex           bool
	mix                  []benchutil.Payload
	seed                 int64
	concurrency          []int
	threads              int
	duration             time.Duration
	idle                 time.Duration
	warmup               time.Duration
	readyTimeout         time.Duration
	stopGrace            time.Duration
	out                  string
	wrk                  string
	keepTmp              bool
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("sidecar", flag.ContinueOnError)
	o := &options{}
	systems := fs.String("systems", strings.Join(knownSystems, ","), "comma-separated systems: queue-proxy, eproxy, direct")
	fs.StringVar(&o.eproxy, "eproxy", "", "EPROXY binary (go build -o /tmp/eproxy ./cmd/eproxy); without it eproxy is skipped")
	var eproxyEnv stringList
	fs.Var(&eproxyEnv, "eproxy-env", "extra KEY=VALUE for EPROXY, after the queue-proxy environment (repeatable)")
	fs.StringVar(&o.queueProxy, "queue-proxy", "", "queue-proxy binary (default: build knative.dev/serving/cmd/queue@"+sidecar.ServingVersion+")")
	fs.StringVar(&o.httpfn, "httpfn", "", "function binary (default: go build ./test/fixtures/httpfn)")
	fs.StringVar(&o.behavior, "behavior", "upper", "function behaviour: echo, upper or reverse")
	fs.DurationVar(&o.serviceTime, "service-time", 0, "CPU the function burns per request")
	fs.IntVar(&o.containerConcurrency, "container-concurrency", 0, "CONTAINER_CONCURRENCY (0: unlimited, Knative's default)")
	fs.StringVar(&o.readiness, "readiness", "tcp", "user readiness probe given to the sidecar: tcp (Knative's default) or http (GET /healthz)")
	fs.BoolVar(&o.fullDuplex, "full-duplex", true, "ENABLE_HTTP_FULL_DUPLEX (the revision annotation features.knative.dev/http-full-duplex: Enabled); "+
		"without it queue-proxy v0.42.2 aborts some responses to 10 KB POSTs (knative/serving#12387)")
	mix := fs.String("mix", "100:98,10240:2", "POST body mix, SIZE:WEIGHT,... (the paper's: 98% 100 B, 2% 10 KB)")
	fs.Int64Var(&o.seed, "seed", 1, "seed of the body choice in wrk")
	conc := fs.String("concurrency", "1,8,32", "comma-separated wrk connection counts")
	fs.IntVar(&o.threads, "threads", 2, "wrk threads (capped at the connection count)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "wrk run length per concurrency (whole seconds)")
	fs.DurationVar(&o.idle, "idle", 10*time.Second, "idle window for the idle-CPU measurement")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unrecorded wrk run before the measured ones (0: none)")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 30*time.Second, "how long a sidecar or function may take to come up")
	fs.DurationVar(&o.stopGrace, "stop-grace", time.Second, "SIGTERM to SIGKILL delay when stopping a sidecar (queue-proxy drains for 30s)")
	fs.StringVar(&o.out, "out", "", "JSON results file (default: <module>/test/bench/results/sidecar.json)")
	fs.StringVar(&o.wrk, "wrk", "wrk", "wrk binary")
	fs.BoolVar(&o.keepTmp, "keep-tmp", false, "keep the temporary directory (binaries, wrk script, logs)")
	quick := fs.Bool("quick", false, "smoke test: --idle 3s --duration 3s --concurrency 1,32 --warmup 1s unless given")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if *quick {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for _, d := range []struct{ name, value string }{
			{"idle", "3s"}, {"duration", "3s"}, {"concurrency", "1,32"}, {"warmup", "1s"},
		} {
			if !set[d.name] {
				fs.Set(d.name, d.value)
			}
		}
	}
	o.eproxyEnv = eproxyEnv
	for _, kv := range o.eproxyEnv {
		if k, _, ok := strings.Cut(kv, "="); !ok || k == "" {
			return nil, fmt.Errorf("--eproxy-env %q: want KEY=VALUE", kv)
		}
	}
	for _, s := range strings.Split(*systems, ",") {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if !slices.Contains(knownSystems, s) {
			return nil, fmt.Errorf("--systems: unknown system %q (known: %s)", s, strings.Join(knownSystems, ", "))
		}
		if slices.Contains(o.systems, s) {
			return nil, fmt.Errorf("--systems: %q twice", s)
		}
		o.systems = append(o.systems, s)
	}
	if len(o.systems) == 0 {
		return nil, errors.New("--systems: empty")
	}
	for _, s := range strings.Split(*conc, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || c < 1 {
			return nil, fmt.Errorf("--concurrency: %q is not a positive integer", s)
		}
		o.concurrency = append(o.concurrency, c)
	}
	var err error
	if o.mix, err = benchutil.ParseMix(*mix); err != nil {
		return nil, fmt.Errorf("--mix: %w", err)
	}
	if _, ok := expectFor(o.behavior, nil); !ok {
		return nil, fmt.Errorf("--behavior %q: want echo, upper or reverse", o.behavior)
	}
	if o.serviceTime < 0 {
		return nil, errors.New("--service-time must not be negative")
	}
	if o.containerConcurrency < 0 {
		return nil, errors.New("--container-concurrency must not be negative")
	}
	if o.readiness != "tcp" && o.readiness != "http" {
		return nil, fmt.Errorf("--readiness %q: want tcp or http", o.readiness)
	}
	if o.threads < 1 {
		return nil, errors.New("--threads must be at least 1")
	}
	if o.duration < time.Second || o.duration%time.Second != 0 {
		return nil, fmt.Errorf("--duration %v: wrk takes whole seconds", o.duration)
	}
	if o.warmup != 0 && (o.warmup < time.Second || o.warmup%time.Second != 0) {
		return nil, fmt.Errorf("--warmup %v: wrk takes whole seconds", o.warmup)
	}
	if o.idle <= 0 {
		return nil, errors.New("--idle must be positive")
	}
	if o.stopGrace < 0 {
		return nil, errors.New("--stop-grace must not be negative")
	}
	return o, nil
}

// expectFor is what the function answers to body with the given behaviour
// (as test/fixtures/httpfn does it); ok is false for an unknown behaviour.
func expectFor(behavior string, body []byte) (out []byte, ok bool) {
	out = slices.Clone(body)
	switch behavior {
	case "echo":
	case "upper":
		for i, c := range out {
			if 'a' <= c && c <= 'z' {
				out[i] = c - ('a' - 'A')
			}
		}
	case "reverse":
		slices.Reverse(out)
	default:
		return nil, false
	}
	return out, true
}

// queueProxyEnv is the sidecars' environment for these options.
func queueProxyEnv(o *options) sidecar.QueueProxyEnv {
	env := sidecar.DefaultQueueProxyEnv()
	env.ContainerConcurrency = o.containerConcurrency
	env.EnableHTTPFullDuplex = o.fullDuplex
	if o.readiness == "http" {
		env.ReadinessProbe = sidecar.HTTPGetProbe(env.UserPort, sidecar.HealthPath)
	}
	return env
}

// env is what every system's run shares.
type env struct {
	opts       *options
	tmp        string
	wrk        string
	script     string
	tick       time.Duration
	queueProxy string
	httpfn     string
	qpEnv      sidecar.QueueProxyEnv
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run() error {
	o, err := parseFlags(os.Args[1:])
	if errors.Is(err, flag.ErrHelp) {
		return nil
	}
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root: every system runs in a network namespace of its own")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		return fmt.Errorf("ip(8): %w (apt-get install -y iproute2)", err)
	}
	wrkPath, wrkVersion, err := benchutil.LookWrk(o.wrk)
	if err != nil {
		return err
	}
	tick, err := benchutil.ClockTicks()
	if err != nil {
		return err
	}
	root, err := benchutil.ModuleRoot()
	if err != nil && (o.httpfn == "" || o.out == "") {
		return fmt.Errorf("locate the module (needed for defaults; or pass --httpfn and --out): %w", err)
	}
	if o.out == "" {
		o.out = filepath.Join(root, "test/bench/results/sidecar.json")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	tmp, err := os.MkdirTemp("", "spright-sidecar-bench-")
	if err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	if o.keepTmp {
		fmt.Fprintf(os.Stderr, "bench: keeping %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	e := &env{opts: o, tmp: tmp, wrk: wrkPath, tick: tick, queueProxy: o.queueProxy, httpfn: o.httpfn, qpEnv: queueProxyEnv(o)}
	if e.httpfn == "" {
		fmt.Fprintln(os.Stderr, "bench: building test/fixtures/httpfn")
		if e.httpfn, err = sidecar.BuildUserFunction(ctx, root, tmp); err != nil {
			return err
		}
	}
	if e.queueProxy == "" && slices.Contains(o.systems, sysQueueProxy) {
		fmt.Fprintf(os.Stderr, "bench: building knative.dev/serving/cmd/queue@%s (slow the first time)\n", sidecar.ServingVersion)
		if e.queueProxy, err = sidecar.BuildQueueProxyContext(ctx, tmp); err != nil {
			return err
		}
	}
	e.script = filepath.Join(tmp, "mix.lua")
	if err := benchutil.WriteMixScript(e.script, o.mix, o.seed); err != nil {
		return err
	}

	rep := newReport(o, e, benchutil.DescribeMachine(root, wrkVersion, tick))
	for _, sys := range o.systems {
		sr, err := benchSystem(ctx, e, sys)
		if err != nil {
			sr.Problems = append(sr.Problems, err.Error())
		}
		rep.add(sr)
		if ctx.Err() != nil {
			rep.Problems = append(rep.Problems, "interrupted: remaining systems skipped")
			break
		}
	}
	rep.finish()
	rep.print(os.Stdout)
	if err := rep.write(o.out); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "bench: wrote %s\n", o.out)
	if n := len(rep.Problems); n > 0 {
		return fmt.Errorf("%d problem(s), listed above", n)
	}
	return nil
}

// systemResult is everything measured for one system.
type systemResult struct {
	System string
	// Skipped says why the system was not measured ("" if it was).
	Skipped string
	// Binary is the sidecar's executable ("" for direct).
	Binary   string
	Idle     *cpuSample
	Runs     []runResult
	Problems []string
	Notes    []string
}

// cpuSample is the CPU of the sidecar (nil for direct) and the function
// over one window.
type cpuSample struct {
	Sidecar  *benchutil.CPUUsage
	Function benchutil.CPUUsage
}

// runResult is one wrk run at one concurrency.
type runResult struct {
	Concurrency int
	Threads     int
	Wrk         *benchutil.WrkResult
	CPU         cpuSample
}

// stack is one system's processes in their namespace.
type stack struct {
	ns      *sidecar.NetNS
	fn      *sidecar.Process
	sidecar *sidecar.Process // nil for direct
	client  *probeClient
}

// benchSystem measures one system from start to cleanup. The processes are
// stopped and the namespace removed whatever happens.
func benchSystem(ctx context.Context, e *env, sys string) (res *systemResult, err error) {
	res = &systemResult{System: sys}
	if sys == sysEProxy && e.opts.eproxy == "" {
		res.Skipped = "no --eproxy binary given (go build -o /tmp/eproxy ./cmd/eproxy, then --eproxy /tmp/eproxy)"
		return res, nil
	}
	ns, err := sidecar.CreateNetNS(fmt.Sprintf("sidecar-bench-%d-%s", os.Getpid(), sys))
	if err != nil {
		return res, err
	}
	st := &stack{ns: ns, client: newProbeClient(ns, e)}
	defer func() { st.teardown(e, res) }()

	logDir := e.tmp
	st.fn, err = sidecar.StartUserFunction(ctx, sidecar.UserFunctionOptions{
		Binary: e.httpfn, NetNS: ns, Port: e.qpEnv.UserPort, Behavior: e.opts.behavior, ServiceTime: e.opts.serviceTime,
		LogPath: filepath.Join(logDir, sys+"-function.log"), StartTimeout: e.opts.readyTimeout,
	})
	if err != nil {
		return res, err
	}
	target := st.fn.Addr
	if sys != sysDirect {
		o := sidecar.SidecarOptions{
			NetNS: ns, Env: e.qpEnv, LogPath: filepath.Join(logDir, sys+".log"), StartTimeout: e.opts.readyTimeout,
		}
		switch sys {
		case sysQueueProxy:
			o.Binary = e.queueProxy
		case sysEProxy:
			o.Binary, o.ExtraEnv = e.opts.eproxy, e.opts.eproxyEnv
		}
		res.Binary = o.Binary
		st.sidecar, err = sidecar.StartSidecar(ctx, sys, o)
		if err == nil {
			pctx, cancel := context.WithTimeout(ctx, e.opts.readyTimeout)
			err = sidecar.Probe(pctx, st.client.http, st.sidecar.Addr)
			cancel()
			if err != nil {
				err = fmt.Errorf("%w\n  log tail (%s):\n%s", err, st.sidecar.LogPath, st.sidecar.LogTail(10))
			}
		}
		if err != nil {
			if sys == sysEProxy {
				res.Skipped = fmt.Sprintf("%s did not start or pass the readiness probe: %v", o.Binary, err)
				return res, nil
			}
			return res, err
		}
		target = st.sidecar.Addr
	}
	err = measure(ctx, e, st, "http://"+target+"/", res)
	if err != nil && ctx.Err() != nil {
		err = fmt.Errorf("interrupted (%w)", ctx.Err())
	}
	return res, err
}

// teardown stops the stack and reports what it left behind.
func (st *stack) teardown(e *env, res *systemResult) {
	if p := st.sidecar; p != nil {
		if err := p.Stop(e.opts.stopGrace); err != nil {
			res.Problems = append(res.Problems, err.Error())
		} else if p.Killed() && res.System == sysEProxy {
			res.Notes = append(res.Notes, fmt.Sprintf("did not exit within --stop-grace %v of SIGTERM; killed", e.opts.stopGrace))
		}
		res.Notes = append(res.Notes, logFindings(p.LogPath)...)
	}
	if p := st.fn; p != nil {
		if err := p.Stop(5 * time.Second); err != nil {
			res.Problems = append(res.Problems, "function: "+err.Error())
		} else if p.Killed() {
			res.Problems = append(res.Problems, "function did not exit on SIGTERM")
		}
	}
	for _, p := range []*sidecar.Process{st.sidecar, st.fn} {
		if p == nil {
			continue
		}
		if _, err := benchutil.Proc.Stat(p.PID); err == nil {
			res.Problems = append(res.Problems, fmt.Sprintf("%s (pid %d) still exists after being stopped", p.Name, p.PID))
		}
	}
	if err := st.ns.Delete(); err != nil {
		res.Problems = append(res.Problems, err.Error())
	} else if st.ns.Exists() {
		res.Problems = append(res.Problems, "network namespace "+st.ns.Name+" still exists")
	}
}

// logFindings summarises a sidecar's error lines (Knative's zap JSON:
// "severity":"ERROR"; zap's "level":"error"; Go's standard log lines from
// httputil.ReverseProxy, which bypass the sidecar's logger).
func logFindings(path string) []string {
	b, err := os.ReadFile(path)
	if err != nil {
		return []string{fmt.Sprintf("log %s unreadable: %v", path, err)}
	}
	var n int
	var first string
	for _, l := range strings.Split(string(b), "\n") {
		ll := strings.ToLower(l)
		if strings.Contains(ll, `"severity":"error"`) || strings.Contains(ll, `"level":"error"`) ||
			strings.HasPrefix(ll, "error") || strings.Contains(l, "httputil: ReverseProxy") || strings.HasPrefix(l, "panic:") || strings.HasPrefix(l, "fatal error:") {
			if n == 0 {
				first = l
			}
			n++
		}
	}
	if n == 0 {
		return nil
	}
	// For JSON lines, the message and error say more than the whole line.
	var j map[string]any
	if json.Unmarshal([]byte(first), &j) == nil {
		msg, _ := j["message"].(string)
		if msg == "" {
			msg, _ = j["msg"].(string)
		}
		msg, _, _ = strings.Cut(msg, ";")
		first = fmt.Sprintf("%s: %v", msg, j["error"])
	}
	if len(first) > 300 {
		first = first[:300] + "..."
	}
	return []string{fmt.Sprintf("%d error line(s) in its log; first: %s", n, first)}
}

func measure(ctx context.Context, e *env, st *stack, url string, res *systemResult) error {
	sys := res.System
	if err := st.client.check(ctx, url); err != nil {
		return err
	}
	pids := st.pids()
	fmt.Fprintf(os.Stderr, "bench: %s: up in netns %s at %s (pids %v); idle for %v\n", sys, st.ns.Name, url, pids, e.opts.idle)
	idle, err := sample(e.tick, pids, func() error { return sleep(ctx, e.opts.idle) })
	if err != nil {
		return fmt.Errorf("idle measurement: %w", err)
	}
	res.Idle = &idle
	if err := st.alive(); err != nil {
		return fmt.Errorf("while idle: %w", err)
	}

	if e.opts.warmup > 0 {
		c := slices.Max(e.opts.concurrency)
		fmt.Fprintf(os.Stderr, "bench: %s: warm-up, %d connections for %v\n", sys, c, e.opts.warmup)
		w, err := benchutil.RunWrk(ctx, e.wrkOptions(st, c, e.opts.warmup, url))
		if err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		if w.Non2xx > 0 || w.Errors.Total() > 0 {
			res.Problems = append(res.Problems, fmt.Sprintf("warm-up: %d non-2xx responses, socket errors %+v", w.Non2xx, w.Errors))
		}
	}

	for _, c := range e.opts.concurrency {
		o := e.wrkOptions(st, c, e.opts.duration, url)
		fmt.Fprintf(os.Stderr, "bench: %s: wrk -t%d -c%d -d%v\n", sys, o.Threads, c, e.opts.duration)
		var w *benchutil.WrkResult
		cpu, err := sample(e.tick, pids, func() (err error) {
			w, err = benchutil.RunWrk(ctx, o)
			return err
		})
		if err != nil {
			return fmt.Errorf("%d connections: %w", c, err)
		}
		res.Runs = append(res.Runs, runResult{Concurrency: c, Threads: o.Threads, Wrk: w, CPU: cpu})
		if w.Non2xx > 0 {
			res.Problems = append(res.Problems, fmt.Sprintf("c=%d: %d of %d responses were not 2xx", c, w.Non2xx, w.Requests))
		}
		if n := w.Errors.Total(); n > 0 {
			res.Problems = append(res.Problems, fmt.Sprintf("c=%d: socket errors %+v", c, w.Errors))
		}
		if err := st.alive(); err != nil {
			return fmt.Errorf("c=%d: %w", c, err)
		}
		// wrk only sees status codes; check the answers are right.
		if err := st.client.check(ctx, url); err != nil {
			res.Problems = append(res.Problems, fmt.Sprintf("after c=%d: %v", c, err))
		}
	}
	return nil
}

// pids are the processes sampled: the sidecar (if any), then the function.
func (st *stack) pids() []int {
	if st.sidecar == nil {
		return []int{st.fn.PID}
	}
	return []int{st.sidecar.PID, st.fn.PID}
}

func (st *stack) alive() error {
	for _, p := range []*sidecar.Process{st.sidecar, st.fn} {
		if p != nil && p.Exited() {
			return fmt.Errorf("%s (pid %d) exited: %v\n  log tail (%s):\n%s", p.Name, p.PID, p.WaitErr(), p.LogPath, p.LogTail(10))
		}
	}
	return nil
}

func (e *env) wrkOptions(st *stack, conns int, d time.Duration, url string) benchutil.WrkOptions {
	return benchutil.WrkOptions{
		Prefix: st.ns.Prefix(), Binary: e.wrk,
		Threads: min(e.opts.threads, conns), Connections: conns,
		Duration: d, Script: e.script, URL: url,
	}
}

// sample returns the CPU each process (and its descendants) used while fn
// ran: the sidecar's (nil if there is none) and the function's.
func sample(tick time.Duration, pids []int, fn func() error) (cpuSample, error) {
	snap := func(when string) ([]benchutil.CPUSnapshot, error) {
		var s []benchutil.CPUSnapshot
		for _, pid := range pids {
			x, err := benchutil.Proc.Snapshot(pid)
			if err != nil {
				return nil, fmt.Errorf("CPU sample %s: %w", when, err)
			}
			s = append(s, x)
		}
		return s, nil
	}
	a, err := snap("before")
	if err != nil {
		return cpuSample{}, err
	}
	if err := fn(); err != nil {
		return cpuSample{}, err
	}
	b, err := snap("after (did a process exit?)")
	if err != nil {
		return cpuSample{}, err
	}
	var s cpuSample
	last := len(pids) - 1
	s.Function = benchutil.Delta(a[last], b[last], tick)
	if last > 0 {
		u := benchutil.Delta(a[0], b[0], tick)
		s.Sidecar = &u
	}
	return s, nil
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
