// Package scenario is the benchmark suite: one framework, one result type
// (Entry, in File) and one report writer for every scenario of issue 5:
//
//	sidecar   one HTTP function alone, behind the real queue-proxy, behind EPROXY
//	chain2    the hello chain: SPRIGHT sk_msg vs polling vs the Knative path
//	boutique  Online Boutique's six chains under a closed-loop user population
//	boutique-shop  the real Online Boutique (pkg/samples/boutique) under
//	          Locust-like users with sessions, every answer's content checked
//	motion    intermittent IoT events: SPRIGHT warm vs Knative cold starts
//	parking   bursts of 164 image-sized requests per period
//	xdp       XDP/TC redirect on/off (run from test/bench/xdp when it exists)
//	crossnode the hello chain on two netns nodes: all on one node vs split
//	reconfig  the hello chain under wrk while its routes or members change
//	          every second (PUT /chain) vs nothing changing
//	cluster   the hello chain and a plain service on the real one-node Knative
//	          (hack/cluster-up.sh): stock Knative vs SPRIGHT, queue-proxy vs EPROXY
//
// `go run ./test/bench [--quick] [scenario...]` runs them; results go to
// test/bench/results/<scenario>.json and .csv, and Report regenerates
// RESULTS.md and the PNG plots from the JSON alone.
package scenario

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
	"github.com/spright-dev/spright/test/bench/internal/sidecar"
)

// Scenario is one benchmark.
type Scenario struct {
	Name  string
	Title string
	// Tools are Debian packages the scenario needs (binary name → package).
	Tools map[string]string
	Run   func(ctx context.Context, e *Env, f *File) error
	// External scenarios write their own <name>.json (when Run returns
	// errExternalWrote); the runner then only reads it back.
	External bool
}

var registry []*Scenario

func register(s *Scenario) { registry = append(registry, s) }

// order is the order `make bench` runs the scenarios in.
var order = []string{"sidecar", "chain2", "boutique", "boutique-shop", "motion", "parking", "xdp", "crossnode", "reconfig", "cluster"}

func rank(name string) int {
	for i, n := range order {
		if n == name {
			return i
		}
	}
	return len(order)
}

// All lists the scenarios in the order `make bench` runs them.
func All() []*Scenario {
	out := append([]*Scenario(nil), registry...)
	sort.SliceStable(out, func(i, j int) bool { return rank(out[i].Name) < rank(out[j].Name) })
	return out
}

// Lookup finds a scenario by name.
func Lookup(name string) (*Scenario, bool) {
	for _, s := range All() {
		if s.Name == name {
			return s, true
		}
	}
	return nil, false
}

// Names are the registered scenario names.
func Names() []string {
	var out []string
	for _, s := range All() {
		out = append(out, s.Name)
	}
	return out
}

// Options are the suite's settings.
type Options struct {
	// Quick shortens every window (a smoke run, not a measurement).
	Quick bool
	// Out is the results directory.
	Out string
	// Root is the module directory.
	Root string
	// KeepTmp keeps binaries and logs.
	KeepTmp bool
	// Args is the command line, recorded in each file.
	Args []string
	// Profile: scenarios that support it (chain2) record perf profiles
	// in extra, unmeasured windows, into Out/profiles.
	Profile bool
	// Systems, when not empty, limits the systems a scenario that
	// supports it (chain2) measures: for development, side-by-side
	// before/after runs of one system.
	Systems []string
}

// WantSystem reports whether the run measures system (Options.Systems).
func (o *Options) WantSystem(system string) bool {
	if len(o.Systems) == 0 {
		return true
	}
	for _, s := range o.Systems {
		if s == system {
			return true
		}
	}
	return false
}

// Env is what a scenario gets: the options, a temporary directory, the
// binaries it asks for (built once per suite run) and the clock tick.
type Env struct {
	Opts *Options
	Tmp  string
	Tick time.Duration
	Wrk  string

	mu     sync.Mutex
	built  map[string]string
	wrkVer string
}

// Logf prints progress on stderr.
func (e *Env) Logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "%s bench: "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

// Pick returns quick when the run is --quick, else full.
func Pick[T any](e *Env, full, quick T) T {
	if e.Opts.Quick {
		return quick
	}
	return full
}

// Binary builds (once) and returns one of: spright, gateway, eproxy,
// httpfn (test/fixtures/httpfn), hop (test/bench/hop), boutique (cmd/boutique), queue-proxy (knative.dev/serving
// cmd/queue, see internal/sidecar). SPRIGHT_QUEUE_PROXY=PATH reuses a
// queue-proxy build; SPRIGHT_BENCH_SPRIGHT=PATH uses that spright binary
// (e.g. one built from another revision, for a before/after comparison).
func (e *Env) Binary(ctx context.Context, name string) (string, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if p, ok := e.built[name]; ok {
		return p, nil
	}
	var pkg string
	switch name {
	case "spright":
		if p := os.Getenv("SPRIGHT_BENCH_SPRIGHT"); p != "" {
			// A build of another revision: before/after runs side by side.
			e.Logf("using %s as spright (SPRIGHT_BENCH_SPRIGHT)", p)
			e.built[name] = p
			return p, nil
		}
		pkg = "./cmd/spright"
	case "gateway":
		pkg = "./cmd/gateway"
	case "eproxy":
		pkg = "./cmd/eproxy"
	case "httpfn":
		pkg = "./test/fixtures/httpfn"
	case "hop":
		pkg = "./test/bench/hop"
	case "boutique":
		pkg = "./cmd/boutique"
	case "queue-proxy":
		if p := os.Getenv("SPRIGHT_QUEUE_PROXY"); p != "" {
			e.built[name] = p
			return p, nil
		}
		e.Logf("building knative.dev/serving/cmd/queue@%s (slow the first time)", sidecar.ServingVersion)
		p, err := sidecar.BuildQueueProxyContext(ctx, e.Tmp)
		if err != nil {
			return "", err
		}
		e.built[name] = p
		return p, nil
	default:
		return "", fmt.Errorf("unknown binary %q", name)
	}
	out := filepath.Join(e.Tmp, name)
	e.Logf("go build %s", pkg)
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, pkg)
	cmd.Dir = e.Opts.Root
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go build %s: %w\n%s", pkg, err, b)
	}
	e.built[name] = out
	return out, nil
}

// EnsureTools installs missing tools from Debian (apt-get install -y).
func EnsureTools(tools map[string]string) error {
	var missing []string
	for bin, pkg := range tools {
		if _, err := lookTool(bin); err != nil {
			missing = append(missing, pkg)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	fmt.Fprintf(os.Stderr, "bench: installing %s from Debian\n", strings.Join(missing, " "))
	args := append([]string{"install", "-y", "--no-install-recommends"}, missing...)
	cmd := exec.Command("apt-get", args...)
	cmd.Env = append(os.Environ(), "DEBIAN_FRONTEND=noninteractive")
	if out, err := cmd.CombinedOutput(); err != nil {
		// The package lists may be missing on a fresh machine.
		if out2, err2 := exec.Command("apt-get", "update").CombinedOutput(); err2 != nil {
			return fmt.Errorf("apt-get update: %w\n%s", err2, out2)
		}
		if out, err = cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("apt-get %s: %w\n%s", strings.Join(args, " "), err, out)
		}
		_ = out
	}
	for bin := range tools {
		if _, err := lookTool(bin); err != nil {
			return fmt.Errorf("%s still missing after apt-get install", bin)
		}
	}
	return nil
}

// lookTool finds a binary in PATH or the sbin directories (nginx lives in
// /usr/sbin, which a non-login PATH may lack).
func lookTool(bin string) (string, error) {
	if p, err := exec.LookPath(bin); err == nil {
		return p, nil
	}
	for _, d := range []string{"/usr/sbin", "/sbin", "/usr/local/sbin"} {
		p := filepath.Join(d, bin)
		if st, err := os.Stat(p); err == nil && !st.IsDir() {
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: %w", bin, benchutil.ErrNotFound)
}

// Run runs the named scenarios (all when names is empty), writing each
// file as soon as it is done. It returns an error if any scenario failed
// or reported problems; the files are written regardless.
func Run(ctx context.Context, o *Options, names []string) error {
	if len(names) == 0 {
		names = Names()
	}
	var scs []*Scenario
	for _, n := range names {
		s, ok := Lookup(n)
		if !ok {
			return fmt.Errorf("unknown scenario %q (known: %s)", n, strings.Join(Names(), ", "))
		}
		scs = append(scs, s)
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root: eBPF, network namespaces (and for the cluster scenario, hack/cluster-up.sh: kubelet, containerd, CNI)")
	}
	tools := map[string]string{"wrk": "wrk", "ip": "iproute2"}
	for _, s := range scs {
		for k, v := range s.Tools {
			tools[k] = v
		}
	}
	if err := EnsureTools(tools); err != nil {
		return err
	}
	wrkPath, wrkVer, err := benchutil.LookWrk("wrk")
	if err != nil {
		return err
	}
	tick, err := benchutil.ClockTicks()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "spright-bench-")
	if err != nil {
		return err
	}
	if o.KeepTmp {
		fmt.Fprintf(os.Stderr, "bench: keeping %s\n", tmp)
	} else {
		defer os.RemoveAll(tmp)
	}
	e := &Env{Opts: o, Tmp: tmp, Tick: tick, Wrk: wrkPath, built: map[string]string{}, wrkVer: wrkVer}
	var failed []string
	for _, s := range scs {
		if ctx.Err() != nil {
			failed = append(failed, s.Name+": interrupted")
			continue
		}
		f := &File{
			Scenario: s.Name, Title: s.Title, Quick: o.Quick, Started: time.Now().UTC(),
			Machine: benchutil.DescribeMachine(o.Root, wrkVer, tick),
			Command: strings.Join(o.Args, " "),
		}
		e.Logf("=== %s: %s", s.Name, s.Title)
		start := time.Now()
		err := s.Run(ctx, e, f)
		f.DurationS = time.Since(start).Seconds()
		if err != nil && !errors.Is(err, errExternalWrote) {
			f.Problems = append(f.Problems, err.Error())
		}
		if s.External && errors.Is(err, errExternalWrote) {
			rf, rerr := ReadFile(filepath.Join(o.Out, s.Name+".json"))
			if rerr != nil {
				f.Problems = []string{fmt.Sprintf("%s wrote no readable results: %v", s.Name, rerr)}
				if werr := f.Write(o.Out); werr != nil {
					return werr
				}
			} else {
				f = rf
				if err != errExternalWrote { // joined with the program's exit status
					f.Problems = append(f.Problems, err.Error())
				}
				if werr := f.WriteCSV(filepath.Join(o.Out, s.Name+".csv")); werr != nil {
					return werr
				}
			}
		} else if werr := f.Write(o.Out); werr != nil {
			return werr
		}
		e.Logf("=== %s done in %.0fs: %d entries, %d problem(s); wrote %s", s.Name, f.DurationS, len(f.Entries), len(f.Problems),
			filepath.Join(o.Out, s.Name+".json"))
		for _, p := range f.Problems {
			e.Logf("  problem: %s", p)
		}
		if len(f.Problems) > 0 {
			failed = append(failed, fmt.Sprintf("%s (%d problem(s))", s.Name, len(f.Problems)))
		}
	}
	if len(failed) > 0 {
		return fmt.Errorf("failed: %s", strings.Join(failed, "; "))
	}
	return nil
}

// sleepCtx waits d or until ctx ends.
func sleepCtx(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
