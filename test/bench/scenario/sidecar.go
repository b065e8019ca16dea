package scenario

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
	"github.com/spright-dev/spright/test/bench/internal/sidecar"
)

func init() {
	register(&Scenario{
		Name:  "sidecar",
		Title: "Sidecar overhead (paper Fig. 2): one HTTP function alone, behind the real queue-proxy, behind EPROXY",
		Run:   runSidecar,
	})
}

func runSidecar(ctx context.Context, e *Env, f *File) error {
	conc := Pick(e, []int{1, 8, 32}, []int{1, 32})
	dur := Pick(e, 10*time.Second, 3*time.Second)
	idle := Pick(e, 10*time.Second, 3*time.Second)
	warm := Pick(e, 2*time.Second, time.Second)
	script := filepath.Join(e.Tmp, "sidecar-mix.lua")
	if err := benchutil.WriteMixScript(script, benchutil.PaperMix, 1); err != nil {
		return err
	}
	env := sidecar.DefaultQueueProxyEnv()
	env.EnableHTTPFullDuplex = true
	f.Method = []string{
		"The same HTTP function (test/fixtures/httpfn --behavior upper, no added service time) in a network namespace of its own " +
			"standing in for a pod (loopback only, Knative's ports: sidecar on 8012 → function on 127.0.0.1:8080); wrk runs inside the namespace.",
		"direct: wrk → function (the floor). queue-proxy: wrk → Knative's real queue-proxy (knative.dev/serving " + sidecar.ServingVersion +
			" cmd/queue) → function. eproxy: wrk → EPROXY (cmd/eproxy, same environment, plus SPRIGHT_CONTROL_SOCKET of a node agent, " +
			"cmd/gateway, started for the run and counted as the class node-agent) → function: new connections of a client EPROXY has seen " +
			"traffic from are steered by the node agent's eBPF program straight to the function's port (SPRIGHT_STEER, the default: " +
			"EPROXY answers the first request of a new client's connection itself with Connection: close, and wrk's reconnection is steered). eproxy-splice: the same with " +
			"SPRIGHT_STEER=false, every connection spliced in the kernel (sk_skb redirect).",
		"All-in µs/request counts the host's busy CPU but the load generator's (kernel workers and softirq included): a splice moves the forwarding into kworkers, outside every process.",
		"Sidecar environment: what the revision reconciler gives queue-proxy for a default install, with ENABLE_HTTP_FULL_DUPLEX=true " +
			"(without it queue-proxy v0.42.2 aborts a few percent of answers to 10 KB POSTs, knative/serving#12387).",
		fmt.Sprintf("POST bodies: %s, drawn per request. Per system: idle CPU over %v, %v warm-up, wrk for %v at concurrency %v; "+
			"after each run both body sizes are checked to come back upper-cased. extra.sidecar_us_per_request is the sidecar process's "+
			"own CPU per request (for eproxy, plus the node agent's); *_cycles_per_request_est are CPU time × the clock /proc/cpuinfo reports "+
			"(an estimate, not a PMU count).", benchutil.DescribeMix(benchutil.PaperMix), idle, warm, dur, conc),
	}
	f.Settings = map[string]any{"concurrency": conc, "duration_s": dur.Seconds(), "idle_s": idle.Seconds(), "mix": benchutil.PaperMix,
		"sidecar_env": env.Environ()}

	httpfn, err := e.Binary(ctx, "httpfn")
	if err != nil {
		return err
	}
	f.Settings["ratio_pairs"] = []any{[]any{SysEProxy, SysQueueProxy}, []any{SysEProxy, SysDirect}, []any{SysEProxySplice, SysDirect},
		[]any{SysEProxy, SysEProxySplice}, []any{SysQueueProxy, SysDirect}}
	for _, sys := range []string{SysDirect, SysQueueProxy, SysEProxy, SysEProxySplice} {
		if err := sidecarSystem(ctx, e, f, sys, httpfn, env, wrkPlan{Script: script, Concurrency: conc, Duration: dur, Idle: idle, Warmup: warm}); err != nil {
			f.Problems = append(f.Problems, fmt.Sprintf("%s: %v", sys, err))
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
	}
	return nil
}

// nodeAgent is cmd/gateway run as EPROXY's node agent.
type nodeAgent struct {
	cmd    *exec.Cmd
	sock   string
	pins   string
	done   chan struct{}
	logTxt string
}

func startNodeAgent(ctx context.Context, e *Env) (*nodeAgent, error) {
	bin, err := e.Binary(ctx, "gateway")
	if err != nil {
		return nil, err
	}
	a := &nodeAgent{
		sock: fmt.Sprintf("/run/spright/bench-%d.sock", os.Getpid()),
		pins: fmt.Sprintf("/sys/fs/bpf/spright-bench-%d", os.Getpid()),
		done: make(chan struct{}),
	}
	os.MkdirAll("/run/spright", 0o755)
	a.logTxt = filepath.Join(e.Tmp, "node-agent.log")
	logf, err := os.Create(a.logTxt)
	if err != nil {
		return nil, err
	}
	a.cmd = exec.Command(bin, "--control", a.sock, "--pin-dir", a.pins, "--listen", "127.0.0.1:0", "--admin-listen", "")
	a.cmd.Stdout, a.cmd.Stderr = logf, logf
	a.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := a.cmd.Start(); err != nil {
		logf.Close()
		return nil, err
	}
	go func() { a.cmd.Wait(); logf.Close(); close(a.done) }()
	for i := 0; i < 200; i++ {
		if _, err := os.Stat(a.sock); err == nil {
			return a, nil
		}
		select {
		case <-a.done:
			b, _ := os.ReadFile(a.logTxt)
			return nil, fmt.Errorf("node agent exited: %s", b)
		case <-time.After(50 * time.Millisecond):
		}
	}
	a.stop()
	return nil, fmt.Errorf("node agent: no control socket %s after 10s", a.sock)
}

func (a *nodeAgent) stop() []string {
	var problems []string
	select {
	case <-a.done:
		problems = append(problems, "node agent had exited")
	default:
		a.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-a.done:
		case <-time.After(10 * time.Second):
			syscall.Kill(-a.cmd.Process.Pid, syscall.SIGKILL)
			<-a.done
			problems = append(problems, "node agent did not exit within 10s of SIGTERM; killed")
		}
	}
	// The node agent leaves its pins for a restart to adopt (as
	// hack/bench-sidecar.sh assumed); the benchmark removes them.
	os.RemoveAll(a.pins)
	os.Remove(a.sock)
	return problems
}

func sidecarSystem(ctx context.Context, e *Env, f *File, sys, httpfn string, env sidecar.QueueProxyEnv, p wrkPlan) error {
	ns, err := sidecar.CreateNetNS(fmt.Sprintf("sidecar-bench-%d-%s", os.Getpid(), sys))
	if err != nil {
		return err
	}
	var fn, sc *sidecar.Process
	var agent *nodeAgent
	defer func() {
		if sc != nil {
			sc.Stop(time.Second)
		}
		if fn != nil {
			if err := fn.Stop(5 * time.Second); err != nil {
				f.Problems = append(f.Problems, sys+": function: "+err.Error())
			}
		}
		if agent != nil {
			for _, pr := range agent.stop() {
				f.Problems = append(f.Problems, sys+": "+pr)
			}
		}
		if err := ns.Delete(); err != nil {
			f.Problems = append(f.Problems, sys+": "+err.Error())
		}
	}()
	fn, err = sidecar.StartUserFunction(ctx, sidecar.UserFunctionOptions{Binary: httpfn, NetNS: ns, Port: env.UserPort, Behavior: "upper",
		LogPath: filepath.Join(e.Tmp, sys+"-function.log"), StartTimeout: 30 * time.Second})
	if err != nil {
		return err
	}
	target := fn.Addr
	groups := func() []Group { return []Group{{Class: "functions", PIDs: []int{fn.PID}}} }
	if sys != SysDirect {
		o := sidecar.SidecarOptions{NetNS: ns, Env: env, LogPath: filepath.Join(e.Tmp, sys+".log"), StartTimeout: 30 * time.Second}
		if sys == SysQueueProxy {
			if o.Binary, err = e.Binary(ctx, "queue-proxy"); err != nil {
				return err
			}
		} else {
			if o.Binary, err = e.Binary(ctx, "eproxy"); err != nil {
				return err
			}
			if agent, err = startNodeAgent(ctx, e); err != nil {
				return err
			}
			o.ExtraEnv = []string{"SPRIGHT_CONTROL_SOCKET=" + agent.sock, "SPRIGHT_STEER=" + fmt.Sprint(sys == SysEProxy)}
		}
		if sc, err = sidecar.StartSidecar(ctx, sys, o); err != nil {
			return err
		}
		client := ns.KubeletClient(5 * time.Second)
		deadline := time.Now().Add(30 * time.Second)
		for {
			if err = sidecar.Probe(ctx, client, sc.Addr); err == nil {
				break
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("readiness probe: %w\n%s", err, sc.LogTail(10))
			}
			time.Sleep(20 * time.Millisecond)
		}
		target = sc.Addr
		groups = func() []Group {
			g := []Group{{Class: sys, PIDs: []int{sc.PID}}, {Class: "functions", PIDs: []int{fn.PID}}}
			if agent != nil {
				g = append(g, Group{Class: "node-agent", PIDs: []int{agent.cmd.Process.Pid}})
			}
			return g
		}
	}
	url := "http://" + target + "/"
	client := ns.HTTPClient(10 * time.Second)
	check := func(ctx context.Context) error {
		for _, pl := range benchutil.PaperMix {
			body := []byte(benchutil.MixBody(pl.Size))
			_, got, err := sidecar.Do(ctx, client, http.MethodPost, url, http.Header{"Content-Type": {"application/octet-stream"}}, body)
			if err != nil {
				return fmt.Errorf("POST %d bytes: %w", len(body), err)
			}
			if want := bytes.ToUpper(body); !bytes.Equal(got, want) {
				return fmt.Errorf("POST %d bytes: got %d bytes %.40q..., want them upper-cased", len(body), len(got), got)
			}
		}
		return nil
	}
	if err := check(ctx); err != nil {
		// Recorded (the run fails), but the system is still measured:
		// one wrong answer does not make its throughput meaningless.
		f.Problems = append(f.Problems, fmt.Sprintf("%s: before the runs: %v", sys, err))
	}
	p.System, p.URL, p.Prefix, p.Groups, p.Probe = sys, url, ns.Prefix(), groups, check
	p.Alive = func() error {
		for _, x := range []*sidecar.Process{fn, sc} {
			if x != nil && x.Exited() {
				return fmt.Errorf("%s exited: %v\n%s", x.Name, x.WaitErr(), x.LogTail(10))
			}
		}
		return nil
	}
	mhz := cpuMHz()
	p.Extra = func(en *Entry, u cpuUse) {
		en.Extra = map[string]float64{}
		if mhz > 0 && en.Requests > 0 {
			en.Extra["cycles_per_request_est"] = en.CPUUsPerRequest * mhz
		}
		if sys == SysDirect || en.Requests == 0 {
			return
		}
		c := u.ByClass[sys] + u.ByClass["node-agent"]
		us := c * u.Wall.Seconds() / float64(en.Requests) * 1e6
		en.Extra["sidecar_us_per_request"], en.Extra["sidecar_cores"] = us, c
		if mhz > 0 {
			// Estimated: CPU time × the clock /proc/cpuinfo reports,
			// not a PMU count (the VM exposes no cycle counter).
			en.Extra["sidecar_cycles_per_request_est"] = us * mhz
		}
	}
	e.Logf("%s: up in netns %s at %s", sys, ns.Name, url)
	err = runWrkPlan(ctx, e, f, p)
	if sys == SysEProxy && sc != nil {
		if b, rerr := os.ReadFile(sc.LogPath); rerr == nil && !bytes.Contains(b, []byte("steering plain traffic")) {
			f.Problems = append(f.Problems, sys+": EPROXY did not steer (see its log): the row measures splicing")
		}
	}
	if sc != nil {
		if n := strings.TrimSpace(sidecarLogErrors(sc.LogPath)); n != "" {
			f.Notes = append(f.Notes, sys+": "+n)
		}
	}
	return err
}

// sidecarLogErrors summarises error lines of a sidecar's log.
func sidecarLogErrors(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	var n int
	var first string
	for _, l := range strings.Split(string(b), "\n") {
		ll := strings.ToLower(l)
		if strings.Contains(ll, `"severity":"error"`) || strings.Contains(ll, `"level":"error"`) || strings.HasPrefix(l, "panic:") {
			if n == 0 {
				first = l
			}
			n++
		}
	}
	if n == 0 {
		return ""
	}
	if len(first) > 300 {
		first = first[:300] + "..."
	}
	return fmt.Sprintf("%d error line(s) in its log; first: %s", n, first)
}

// cpuMHz is the first "cpu MHz" of /proc/cpuinfo (0 if absent).
func cpuMHz() float64 {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	for _, l := range strings.Split(string(b), "\n") {
		k, v, ok := strings.Cut(l, ":")
		if ok && strings.TrimSpace(k) == "cpu MHz" {
			var f float64
			fmt.Sscan(strings.TrimSpace(v), &f)
			return f
		}
	}
	return 0
}
