// Command hello benchmarks the hello chain (config/samples/hello/chain.yaml)
// end to end, in sk_msg and busy-polling modes, with wrk as the client:
//
//	go run ./test/bench/hello [--quick] [--modes skmsg,poll] [--concurrency 1,8,32,64]
//
// For each mode it starts `spright run` (gateway in-process, one process
// per function instance in its own network namespace), measures the CPU the
// chain burns while idle, then drives it with wrk at each concurrency and
// records throughput, latency and the CPU of the system under test (the
// `spright run` process and its descendants, i.e. the functions) and of
// wrk. Finally it stops the chain and checks that nothing was left behind.
//
// It needs root (eBPF, network namespaces) and wrk. Results go to stdout as
// a table and to --out as JSON. The exit status is non-zero if anything
// looked wrong (non-2xx responses, socket errors, leaks, error logs), after
// the results have been written.
package main

import (
	"context"
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
)

type options struct {
	spright      string
	config       string
	modes        []string
	concurrency  []int
	threads      int
	duration     time.Duration
	idle         time.Duration
	warmup       time.Duration
	readyTimeout time.Duration
	stopTimeout  time.Duration
	out          string
	wrk          string
	keepTmp      bool
}

func parseFlags(args []string) (*options, error) {
	fs := flag.NewFlagSet("hello", flag.ContinueOnError)
	o := &options{}
	fs.StringVar(&o.spright, "spright", "", "spright binary to benchmark (default: go build ./cmd/spright into a temporary directory)")
	fs.StringVar(&o.config, "config", "", "chain file (default: <module>/config/samples/hello/chain.yaml)")
	modes := fs.String("modes", "skmsg,poll", "comma-separated chain modes")
	conc := fs.String("concurrency", "1,8,32,64", "comma-separated wrk connection counts")
	fs.IntVar(&o.threads, "threads", 2, "wrk threads (capped at the connection count)")
	fs.DurationVar(&o.duration, "duration", 10*time.Second, "wrk run length per concurrency (whole seconds)")
	fs.DurationVar(&o.idle, "idle", 10*time.Second, "idle window for the idle-CPU measurement")
	fs.DurationVar(&o.warmup, "warmup", 2*time.Second, "unrecorded wrk run before the measured ones (0: none)")
	fs.DurationVar(&o.readyTimeout, "ready-timeout", 30*time.Second, "how long to wait for the chain to answer")
	fs.DurationVar(&o.stopTimeout, "stop-timeout", 20*time.Second, "how long spright run may take to exit after SIGTERM before SIGKILL")
	fs.StringVar(&o.out, "out", "", "JSON results file (default: <module>/test/bench/results/hello.json)")
	fs.StringVar(&o.wrk, "wrk", "wrk", "wrk binary")
	fs.BoolVar(&o.keepTmp, "keep-tmp", false, "keep the temporary directory (binary, chain files, chain logs)")
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
		quickDefaults := []struct{ name, value string }{
			{"idle", "3s"}, {"duration", "3s"}, {"concurrency", "1,32"}, {"warmup", "1s"},
		}
		for _, d := range quickDefaults {
			if !set[d.name] {
				fs.Set(d.name, d.value)
			}
		}
	}
	for _, m := range strings.Split(*modes, ",") {
		if m = strings.TrimSpace(m); m != "" {
			o.modes = append(o.modes, m)
		}
	}
	if len(o.modes) == 0 {
		return nil, fmt.Errorf("--modes: empty")
	}
	for _, s := range strings.Split(*conc, ",") {
		c, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || c < 1 {
			return nil, fmt.Errorf("--concurrency: %q is not a positive integer", s)
		}
		o.concurrency = append(o.concurrency, c)
	}
	if o.threads < 1 {
		return nil, fmt.Errorf("--threads must be at least 1")
	}
	if o.duration < time.Second || o.duration%time.Second != 0 {
		return nil, fmt.Errorf("--duration %v: wrk takes whole seconds", o.duration)
	}
	if o.warmup != 0 && (o.warmup < time.Second || o.warmup%time.Second != 0) {
		return nil, fmt.Errorf("--warmup %v: wrk takes whole seconds", o.warmup)
	}
	if o.idle <= 0 {
		return nil, fmt.Errorf("--idle must be positive")
	}
	return o, nil
}

// env is what every mode's run shares.
type env struct {
	opts    *options
	tmp     string
	spright string
	wrk     string
	script  string
	tick    time.Duration
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
		return errors.New("needs root: spright run loads eBPF and creates network namespaces")
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
	if err != nil && (o.spright == "" || o.config == "" || o.out == "") {
		return fmt.Errorf("locate the module (needed for defaults; or pass --spright, --config and --out): %w", err)
	}
	if o.config == "" {
		o.config = filepath.Join(root, "config/samples/hello/chain.yaml")
	}
	if o.out == "" {
		o.out = filepath.Join(root, "test/bench/results/hello.json")
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()

	tmp, err := os.MkdirTemp("", "spright-bench-")
	if err != nil {
		return fmt.Errorf("temporary directory: %w", err)
	}
	if o.keepTmp {
		fmt.Fprintf(os.Stderr, "bench: keeping %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	e := &env{opts: o, tmp: tmp, wrk: wrkPath, tick: tick, spright: o.spright}
	if e.spright == "" {
		if e.spright, err = buildSpright(ctx, root, tmp); err != nil {
			return err
		}
	}
	e.script = filepath.Join(tmp, "post.lua")
	if err := benchutil.WritePostScript(e.script, "abc"); err != nil {
		return err
	}

	rep := newReport(o, benchutil.DescribeMachine(root, wrkVersion, tick))
	for _, mode := range o.modes {
		mr, err := benchMode(ctx, e, mode)
		rep.add(mr)
		if err != nil {
			rep.Problems = append(rep.Problems, fmt.Sprintf("%s: %v", systemName(mode), err))
		}
		if ctx.Err() != nil {
			rep.Problems = append(rep.Problems, "interrupted: remaining modes skipped")
			break
		}
	}
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

func buildSpright(ctx context.Context, root, tmp string) (string, error) {
	bin := filepath.Join(tmp, "spright")
	cmd := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/spright")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build ./cmd/spright: %w\n%s", err, out)
	}
	return bin, nil
}

// modeResult is everything measured for one mode.
type modeResult struct {
	Mode string
	Idle *benchutil.CPUUsage
	// HugePages is whether the chain's pool is on hugepages ("unknown" if
	// the log did not say).
	HugePages string
	Runs      []runResult
	Problems  []string
	Notes     []string
}

// runResult is one wrk run at one concurrency.
type runResult struct {
	Concurrency int
	Threads     int
	Wrk         *benchutil.WrkResult
	SUT         benchutil.CPUUsage
}

// benchMode runs one mode from start to cleanup. Whatever happens during
// the measurement, the chain is stopped and checked for leftovers.
func benchMode(ctx context.Context, e *env, mode string) (*modeResult, error) {
	res := &modeResult{Mode: mode}
	addr, err := freeLoopbackAddr()
	if err != nil {
		return res, err
	}
	cfgPath := filepath.Join(e.tmp, "chain-"+mode+".yaml")
	name, err := writeChainConfig(e.opts.config, cfgPath, mode, addr)
	if err != nil {
		return res, err
	}
	ch, err := startChain(e.spright, cfgPath, name, defaultPinDir(mode), filepath.Join(e.tmp, "chain-"+mode+".log"))
	if err != nil {
		return res, err
	}
	measureErr := measure(ctx, e, ch, "http://"+addr+"/", res)
	if measureErr != nil && ctx.Err() != nil {
		// wrk or a probe failing because we cancelled them says nothing.
		measureErr = fmt.Errorf("interrupted (%w)", ctx.Err())
	} else if measureErr != nil {
		// The log usually says why; it is deleted with the temporary dir
		// unless --keep-tmp.
		measureErr = fmt.Errorf("%w\nchain log (tail; --keep-tmp keeps all of it):\n%s", measureErr, ch.logTail(15))
	}

	// A chain that died during the measurement is already explained by
	// measureErr; stopping it would only add "already exited".
	if !ch.exited() || measureErr == nil {
		fmt.Fprintf(os.Stderr, "bench: %s: stopping the chain (SIGTERM to pid %d)\n", mode, ch.pid)
		if err := ch.stop(e.opts.stopTimeout); err != nil {
			res.Problems = append(res.Problems, err.Error())
		}
	}
	problems, notes := ch.leftovers()
	res.Problems = append(res.Problems, problems...)
	res.Notes = append(res.Notes, notes...)
	errs, warns, err := ch.logFindings()
	if err != nil {
		res.Problems = append(res.Problems, err.Error())
	}
	for _, l := range errs {
		res.Problems = append(res.Problems, "chain log: "+l)
	}
	for _, l := range warns {
		res.Notes = append(res.Notes, "chain log: "+l)
	}
	return res, measureErr
}

func measure(ctx context.Context, e *env, ch *chain, url string, res *modeResult) error {
	mode := res.Mode
	if err := ch.waitReady(ctx, url, e.opts.readyTimeout); err != nil {
		return err
	}
	tree, err := benchutil.Proc.Tree(ch.pid)
	if err != nil {
		return fmt.Errorf("process tree of spright run: %w", err)
	}
	for _, s := range tree[1:] {
		ch.functions = append(ch.functions, s.Key())
	}
	if len(ch.functions) == 0 {
		return errors.New("no function processes under spright run")
	}
	res.HugePages = ch.poolHugepages()
	fmt.Fprintf(os.Stderr, "bench: %s: chain up at %s (spright run pid %d, %d function processes)\n", mode, url, ch.pid, len(ch.functions))

	fmt.Fprintf(os.Stderr, "bench: %s: idle for %v\n", mode, e.opts.idle)
	idle, err := sample(ch.pid, e.tick, func() error { return sleep(ctx, e.opts.idle) })
	if err != nil {
		return fmt.Errorf("idle measurement: %w", err)
	}
	res.Idle = &idle
	if idle.Exited > 0 {
		res.Problems = append(res.Problems, fmt.Sprintf("%d process(es) of the chain exited while idle", idle.Exited))
	}

	if e.opts.warmup > 0 {
		c := slices.Max(e.opts.concurrency)
		fmt.Fprintf(os.Stderr, "bench: %s: warm-up, %d connections for %v\n", mode, c, e.opts.warmup)
		w, err := benchutil.RunWrk(ctx, e.wrkOptions(c, e.opts.warmup, url))
		if err != nil {
			return fmt.Errorf("warm-up: %w", err)
		}
		if w.Non2xx > 0 || w.Errors.Total() > 0 {
			res.Problems = append(res.Problems, fmt.Sprintf("warm-up: %d non-2xx responses, socket errors %+v", w.Non2xx, w.Errors))
		}
	}

	for _, c := range e.opts.concurrency {
		o := e.wrkOptions(c, e.opts.duration, url)
		fmt.Fprintf(os.Stderr, "bench: %s: wrk -t%d -c%d -d%v\n", mode, o.Threads, c, e.opts.duration)
		var w *benchutil.WrkResult
		sut, err := sample(ch.pid, e.tick, func() (err error) {
			w, err = benchutil.RunWrk(ctx, o)
			return err
		})
		if err != nil {
			return fmt.Errorf("%d connections: %w", c, err)
		}
		res.Runs = append(res.Runs, runResult{Concurrency: c, Threads: o.Threads, Wrk: w, SUT: sut})
		if w.Non2xx > 0 {
			res.Problems = append(res.Problems, fmt.Sprintf("c=%d: %d of %d responses were not 2xx", c, w.Non2xx, w.Requests))
		}
		if n := w.Errors.Total(); n > 0 {
			res.Problems = append(res.Problems, fmt.Sprintf("c=%d: socket errors %+v", c, w.Errors))
		}
		if sut.Exited > 0 {
			res.Problems = append(res.Problems, fmt.Sprintf("c=%d: %d process(es) of the chain exited under load", c, sut.Exited))
		}
		// wrk only sees status codes; check the chain still answers right.
		if err := probe(ctx, url); err != nil {
			res.Problems = append(res.Problems, fmt.Sprintf("after c=%d: %v", c, err))
		}
	}
	return nil
}

func (e *env) wrkOptions(conns int, d time.Duration, url string) benchutil.WrkOptions {
	return benchutil.WrkOptions{
		Binary: e.wrk, Threads: min(e.opts.threads, conns), Connections: conns,
		Duration: d, Script: e.script, URL: url,
	}
}

// sample returns the CPU the chain's process tree used while fn ran.
func sample(pid int, tick time.Duration, fn func() error) (benchutil.CPUUsage, error) {
	a, err := benchutil.Proc.Snapshot(pid)
	if err != nil {
		return benchutil.CPUUsage{}, fmt.Errorf("CPU sample before: %w", err)
	}
	if err := fn(); err != nil {
		return benchutil.CPUUsage{}, err
	}
	b, err := benchutil.Proc.Snapshot(pid)
	if err != nil {
		return benchutil.CPUUsage{}, fmt.Errorf("CPU sample after (did spright run exit?): %w", err)
	}
	return benchutil.Delta(a, b, tick), nil
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
