package scenario

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
	"github.com/spright-dev/spright/test/bench/internal/hop"
)

func init() {
	register(&Scenario{
		Name:  "chain2",
		Title: "Two-function chain (paper Fig. 5): SPRIGHT sk_msg vs SPRIGHT polling vs the Knative path vs one HTTP server doing the same work",
		Tools: map[string]string{"nginx": "nginx"},
		Run:   runChain2,
	})
}

// LabelClose marks entries measured with a new TCP connection per request
// (wrk with Connection: close): the cost of accepting and closing.
const LabelClose = "close"

// chain2Hops is the number of descriptor hops of one hello-chain request:
// gateway → upper → reverse → gateway.
const chain2Hops = 3

func runChain2(ctx context.Context, e *Env, f *File) error {
	conc := Pick(e, []int{1, 8, 32, 64}, []int{1, 32})
	closeConc := Pick(e, []int{1, 8, 32}, []int{32})
	dur := Pick(e, 10*time.Second, 3*time.Second)
	idle := Pick(e, 10*time.Second, 3*time.Second)
	warm := Pick(e, 2*time.Second, time.Second)
	hopDur := Pick(e, 5*time.Second, 2*time.Second)
	script := filepath.Join(e.Tmp, "chain2-mix.lua")
	if err := benchutil.WriteMixScript(script, benchutil.PaperMix, 1); err != nil {
		return err
	}
	closeScript := filepath.Join(e.Tmp, "chain2-mix-close.lua")
	if err := benchutil.WriteMixScriptHeaders(closeScript, benchutil.PaperMix, 1, map[string]string{"Connection": "close"}); err != nil {
		return err
	}
	f.Method = append([]string{
		"The hello chain (config/samples/hello/chain.yaml): `upper` then `reverse`, no added service time. " +
			"POST bodies drawn per request from the paper's mix, " + benchutil.DescribeMix(benchutil.PaperMix) + ", by a generated wrk Lua script; " +
			"after each run a probe checks POST abc → CBA.",
		"spright-skmsg / spright-poll: `spright run` of that chain with mode skmsg or poll (gateway in the spright process, " +
			"each function a process in its own network namespace). Process classes: gateway (the spright run process), functions.",
		"direct: the upper bound, one plain Go net/http server doing the chain's whole work in one process " +
			"(test/fixtures/httpfn --behavior upper,reverse on 127.0.0.1, no namespace, no sidecar): read the body, upper-case it, reverse it, answer. " +
			"Process class: server.",
		fmt.Sprintf("Per system: idle CPU over %v, a %v warm-up, then wrk (2 threads, capped at the connection count) for %v at each concurrency %v "+
			"over kept-alive connections (label empty).", idle, warm, dur, conc),
		fmt.Sprintf("Label %q (spright-skmsg and direct): the same wrk runs with the header Connection: close, so every request opens a new TCP "+
			"connection and the server closes it after the answer, at concurrency %v for %v each.", LabelClose, closeConc, dur),
		fmt.Sprintf("%s: the floor of the descriptor path, from test/bench/hop (%v per mode): two connected loopback TCP sockets in the real eBPF "+
			"sockhash (package bpf: the chain's sk_msg program and maps) bounce one 16-byte descriptor, each read by its own OS thread in a "+
			"blocking read (label empty: a hop wakes another thread, as a hop between the chain's processes does) or both by goroutines of one Go "+
			"process through the netpoller (label netpoll: the Go scheduler can run both ends on one thread, no OS wakeup). "+
			"extra: ns_per_hop (wall), cpu_ns_per_hop (the process's rusage), host_cpu_ns_per_hop (the host's busy CPU). "+
			"The entry is scaled to one request of the chain, %d hops (gateway → upper → reverse → gateway): rps = 1 / (%d × ns_per_hop), "+
			"mean = %d × ns_per_hop, cpu µs/req = %d × cpu_ns_per_hop, all-in = %d × host_cpu_ns_per_hop; it stands at concurrency 1 "+
			"(one descriptor in flight).", SysHop, hopDur, chain2Hops, chain2Hops, chain2Hops, chain2Hops, chain2Hops),
		"all-in µs/req: the host's whole busy CPU in the window (/proc/stat: user, system, irq, softirq, kernel threads) minus wrk and the " +
			"benchmark driver, per request: the system's processes plus the kernel work no process is billed for (on a busy host, others' work too; " +
			"see other cores).",
	}, KnativeBaseline...)
	f.Settings = map[string]any{"concurrency": conc, "close_concurrency": closeConc, "duration_s": dur.Seconds(), "idle_s": idle.Seconds(),
		"mix": benchutil.PaperMix, "hop_s": hopDur.Seconds(), "hops_per_request": chain2Hops}

	plan := func(system, url string, g Groups, alive func() error) wrkPlan {
		return wrkPlan{System: system, URL: url, Script: script, Concurrency: conc, Duration: dur, Idle: idle, Warmup: warm,
			Groups: g, Alive: alive, Probe: func(ctx context.Context) error { return probeHello(ctx, url) }}
	}
	// closePlan follows a plan on the same, warm, system.
	closePlan := func(p wrkPlan) wrkPlan {
		p.Label, p.Script, p.Concurrency, p.Idle, p.Warmup = LabelClose, closeScript, closeConc, 0, 0
		return p
	}
	if e.Opts.WantSystem(SysHop) {
		if err := runHopFloor(ctx, e, f, hopDur); err != nil {
			f.Problems = append(f.Problems, fmt.Sprintf("%s: %v", SysHop, err))
		}
	}
	for _, mode := range []string{"skmsg", "poll"} {
		if !e.Opts.WantSystem("spright-" + mode) {
			continue
		}
		s, err := startSpright(ctx, e, "hello", mode, nil, probeHello)
		if err != nil {
			f.Problems = append(f.Problems, err.Error())
			continue
		}
		p := plan(s.system, s.URL, s.groups, s.alive)
		err = runWrkPlan(ctx, e, f, p)
		if err == nil && mode == "skmsg" {
			err = runWrkPlan(ctx, e, f, closePlan(p))
		}
		if err == nil && mode == "skmsg" && e.Opts.Profile {
			err = profileChain2(ctx, e, f, s, p, closePlan(p))
		}
		s.stop(f)
		if err != nil {
			f.Problems = append(f.Problems, err.Error())
		}
	}
	if e.Opts.WantSystem(SysDirect) {
		if err := runChain2Direct(ctx, e, f, plan, closePlan); err != nil {
			f.Problems = append(f.Problems, fmt.Sprintf("%s: %v", SysDirect, err))
		}
	}
	if !e.Opts.WantSystem(SysKnative) {
		return nil
	}
	k, err := startKnative(ctx, e, []FnSpec{{Name: "upper", Behavior: "upper"}, {Name: "reverse", Behavior: "reverse"}},
		map[string][]string{"hello": {"upper", "reverse"}}, false)
	if err != nil {
		return err
	}
	err = runWrkPlan(ctx, e, f, plan(SysKnative, k.URL("hello"), k.groups, k.alive))
	k.stop(f)
	return err
}

// runChain2Direct measures httpfn doing upper then reverse in one server.
func runChain2Direct(ctx context.Context, e *Env, f *File, plan func(string, string, Groups, func() error) wrkPlan, closePlan func(wrkPlan) wrkPlan) error {
	bin, err := e.Binary(ctx, "httpfn")
	if err != nil {
		return err
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		return err
	}
	srv, err := startServer(ctx, e, "direct", bin, "--listen", addr, "--behavior", "upper,reverse")
	if err != nil {
		return err
	}
	url := "http://" + addr + "/"
	if err := srv.waitReady(ctx, func(ctx context.Context) error { return probeHello(ctx, url) }, 30*time.Second); err != nil {
		srv.stopAndReport(f, SysDirect)
		return err
	}
	groups := func() []Group { return []Group{{Class: "server", PIDs: []int{srv.pid}}} }
	p := plan(SysDirect, url, groups, srv.alive)
	err = runWrkPlan(ctx, e, f, p)
	if err == nil {
		err = runWrkPlan(ctx, e, f, closePlan(p))
	}
	srv.stopAndReport(f, SysDirect)
	return err
}

// runHopFloor runs test/bench/hop and records its two modes as SysHop
// entries scaled to one chain2 request.
func runHopFloor(ctx context.Context, e *Env, f *File, d time.Duration) error {
	bin, err := e.Binary(ctx, "hop")
	if err != nil {
		return err
	}
	e.Logf("%s: bouncing a descriptor for %v per mode", SysHop, d)
	cmd := exec.CommandContext(ctx, bin, "--duration", d.String(), "--mode", hop.ModeThread+","+hop.ModeNetpoll)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return fmt.Errorf("%s: %w: %s", bin, err, strings.TrimSpace(stderr.String()))
	}
	sc := bufio.NewScanner(bytes.NewReader(out))
	n := 0
	for sc.Scan() {
		var r hop.Result
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return fmt.Errorf("hop output %q: %w", sc.Text(), err)
		}
		en := hopEntry(r, chain2Hops)
		f.Entries = append(f.Entries, en)
		e.Logf("%s %s: %.0f ns/hop, CPU %.0f ns/hop (host %.0f), %d hops", SysHop, r.Mode, r.NsPerHop, r.CPUNsPerHop, r.HostCPUNsPerHop, r.Hops)
		n++
	}
	if n == 0 {
		return fmt.Errorf("hop printed no result: %s", strings.TrimSpace(stderr.String()))
	}
	return nil
}

// hopEntry scales a hop measurement to one request of hops hops.
func hopEntry(r hop.Result, hops int) Entry {
	label := ""
	if r.Mode != hop.ModeThread {
		label = r.Mode
	}
	h := float64(hops)
	en := Entry{System: SysHop, Concurrency: 1, Label: label, Requests: r.Hops / int64(hops), DurationS: r.Seconds,
		Extra: map[string]float64{"ns_per_hop": r.NsPerHop, "cpu_ns_per_hop": r.CPUNsPerHop, "host_cpu_ns_per_hop": r.HostCPUNsPerHop}}
	if r.NsPerHop > 0 {
		en.RPS = 1e9 / (h * r.NsPerHop)
		en.MeanMs = h * r.NsPerHop / 1e6
		en.CPUCores = r.CPUNsPerHop / r.NsPerHop
		en.CPUByClass = map[string]float64{"hop": en.CPUCores}
		en.CPUUsPerRequest = h * r.CPUNsPerHop / 1e3
		en.AllInUsPerRequest = h * r.HostCPUNsPerHop / 1e3
	}
	return en
}

// hostServer is a plain server process on the host (no namespace).
type hostServer struct {
	name    string
	cmd     *exec.Cmd
	pid     int
	logPath string
	done    chan struct{}
	waitErr error
}

func startServer(ctx context.Context, e *Env, name, bin string, args ...string) (*hostServer, error) {
	logPath := filepath.Join(e.Tmp, name+".log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group (terminal signals go to the benchmark, which
	// stops it), and it dies with the benchmark.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s: %w", bin, err)
	}
	s := &hostServer{name: name, cmd: cmd, pid: cmd.Process.Pid, logPath: logPath, done: make(chan struct{})}
	go func() {
		s.waitErr = cmd.Wait()
		logf.Close()
		close(s.done)
	}()
	return s, nil
}

func (s *hostServer) exited() bool {
	select {
	case <-s.done:
		return true
	default:
		return false
	}
}

func (s *hostServer) alive() error {
	if s.exited() {
		b, _ := os.ReadFile(s.logPath)
		return fmt.Errorf("%s exited (%v): %s", s.name, s.waitErr, strings.TrimSpace(string(b)))
	}
	return nil
}

// waitReady polls probe until it passes, the process exits, or timeout.
func (s *hostServer) waitReady(ctx context.Context, probe func(context.Context) error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		if err := s.alive(); err != nil {
			return err
		}
		err := probe(ctx)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not answering after %v: %w", s.name, timeout, err)
		}
		if err := sleepCtx(ctx, 50*time.Millisecond); err != nil {
			return err
		}
	}
}

// stopAndReport stops the server (SIGTERM, SIGKILL after 5 s) and records
// what went wrong in f under system.
func (s *hostServer) stopAndReport(f *File, system string) {
	if s.exited() {
		f.Problems = append(f.Problems, fmt.Sprintf("%s: %s had exited (%v)", system, s.name, s.waitErr))
		return
	}
	s.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-s.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-s.pid, syscall.SIGKILL)
		<-s.done
		f.Problems = append(f.Problems, fmt.Sprintf("%s: %s still running 5 s after SIGTERM; killed", system, s.name))
	}
}

// profileChain2 records perf profiles of the gateway, the first function
// process and the whole host in extra windows (not entries: perf's own
// cost would be in their figures) at c=1 and c=32 over kept-alive
// connections and at c=32 with a new connection per request.
func profileChain2(ctx context.Context, e *Env, f *File, s *sprightSys, keep, closing wrkPlan) error {
	dir := filepath.Join(e.Opts.Out, "profiles")
	targets := []profileTarget{{Name: "gateway", Pid: s.ch.pid}, {Name: "host"}}
	if len(s.fnPIDs) > 0 {
		targets = append(targets, profileTarget{Name: "function", Pid: s.fnPIDs[0]})
	}
	for _, w := range []struct {
		p wrkPlan
		c int
	}{{keep, 1}, {keep, 32}, {closing, 32}} {
		prefix := fmt.Sprintf("chain2-%s-c%d", s.system, w.c)
		if w.p.Label != "" {
			prefix += "-" + w.p.Label
		}
		e.Logf("%s: perf profile, c=%d%s for %v", s.system, w.c, labelSuffix(w.p.Label), w.p.Duration)
		sums, err := recordProfiles(ctx, e, dir, prefix, targets, func() error {
			_, err := benchutil.RunWrk(ctx, benchutil.WrkOptions{Binary: e.Wrk, Threads: min(2, w.c), Connections: w.c,
				Duration: w.p.Duration, Script: w.p.Script, URL: w.p.URL, Timeout: 10 * time.Second})
			return err
		})
		if err != nil {
			return fmt.Errorf("profile %s: %w", prefix, err)
		}
		for _, l := range sums {
			e.Logf("profile %s", l)
			f.Notes = append(f.Notes, "profile "+l)
		}
	}
	f.Notes = append(f.Notes, fmt.Sprintf("perf profiles (perf record -F %d -g, cpu-clock where the VM has no PMU) in %s: per target a .txt "+
		"(perf report by symbol, self and children) and a .folded (collapsed stacks)", profileFreq, dir))
	return nil
}
