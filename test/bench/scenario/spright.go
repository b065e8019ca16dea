package scenario

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
)

// writeChainConfig copies the chain file with mode and listen replaced and
// returns the chain's name. It goes through a generic map rather than the
// standalone package's types so that the benchmark neither depends on nor
// second-guesses the code under test: `spright run` validates the result.
func writeChainConfig(src, dst, mode, listen string, mutate func(map[string]any)) (name string, err error) {
	b, err := os.ReadFile(src)
	if err != nil {
		return "", fmt.Errorf("read chain file: %w", err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		return "", fmt.Errorf("parse chain file %s: %w", src, err)
	}
	name, _ = m["name"].(string)
	if name == "" {
		return "", fmt.Errorf("chain file %s: no name", src)
	}
	m["mode"], m["listen"] = mode, listen
	if mutate != nil {
		mutate(m)
	}
	out, err := yaml.Marshal(m)
	if err != nil {
		return "", fmt.Errorf("encode chain file: %w", err)
	}
	if err := os.WriteFile(dst, out, 0o644); err != nil {
		return "", fmt.Errorf("write chain file: %w", err)
	}
	return name, nil
}

// freeLoopbackAddr picks a port the kernel considers free. Another process
// could take it before spright binds it; spright then fails to listen and
// the benchmark reports that, which is rare enough not to retry.
func freeLoopbackAddr() (string, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("find a free port: %w", err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr, nil
}

// chain is one `spright run` child process and what is needed to check
// that it cleaned up after itself.
type chain struct {
	name    string
	pinDir  string
	logPath string
	cmd     *exec.Cmd
	pid     int
	done    chan struct{}
	waitErr error
	// functions are the function processes seen once the chain was ready.
	functions []benchutil.ProcKey
}

func startChain(spright, cfgPath, name, pinDir, logPath string, extra ...string) (*chain, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create chain log: %w", err)
	}
	// extra comes last: a flag in it (e.g. --admin-listen ADDR) overrides.
	cmd := exec.Command(spright, append([]string{"run", "-f", cfgPath, "--admin-listen", "", "--pin-dir", pinDir}, extra...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: terminal signals go to the benchmark,
		// which stops the chain the way an operator would (SIGTERM to
		// `spright run` only), and a SIGKILL fallback can take the whole
		// group, functions included.
		Setpgid: true,
		// If the benchmark dies without stopping the chain, let spright
		// clean up its namespaces and pins rather than leak them.
		Pdeathsig: syscall.SIGTERM,
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s run: %w", spright, err)
	}
	c := &chain{name: name, pinDir: pinDir, logPath: logPath, cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		c.waitErr = cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	return c, nil
}

func (c *chain) exited() bool {
	select {
	case <-c.done:
		return true
	default:
		return false
	}
}

// probeClient opens a fresh connection per probe, so no probe connection
// lingers in the gateway during the idle measurement.
var probeClient = &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}

// probeHello checks the hello chain's contract: POST "abc" returns "CBA".
func probeHello(ctx context.Context, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, strings.NewReader("abc"))
	if err != nil {
		return err
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
	if err != nil {
		return fmt.Errorf("read response: %w", err)
	}
	if resp.StatusCode != http.StatusOK || string(body) != "CBA" {
		return fmt.Errorf("POST abc: got %s %q, want 200 \"CBA\"", resp.Status, body)
	}
	return nil
}

// waitReady polls until the chain answers correctly, it exits, or timeout.
func (c *chain) waitReady(ctx context.Context, probe func(context.Context) error, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var last error
	for {
		if c.exited() {
			return fmt.Errorf("spright run exited before serving (%v)", c.waitErr)
		}
		if last = probe(ctx); last == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("chain not answering after %v: %w", timeout, last)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// stop sends SIGTERM to `spright run` and waits for it; past timeout the
// whole process group is killed, which skips spright's own cleanup, so
// that is reported as a problem.
func (c *chain) stop(timeout time.Duration) error {
	if c.exited() {
		return fmt.Errorf("spright run had already exited (%v)", c.waitErr)
	}
	if err := c.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		return fmt.Errorf("SIGTERM spright run (pid %d): %w", c.pid, err)
	}
	select {
	case <-c.done:
		if c.waitErr != nil {
			return fmt.Errorf("spright run exited with %v after SIGTERM", c.waitErr)
		}
		return nil
	case <-time.After(timeout):
		syscall.Kill(-c.pid, syscall.SIGKILL)
		<-c.done
		return fmt.Errorf("spright run (pid %d) still running %v after SIGTERM; killed its process group", c.pid, timeout)
	}
}

// leftovers lists what a stopped chain left behind: function processes,
// network namespaces, pinned maps, the control socket. Namespace names
// carry the runner's pid (spright-<pid>-<k>), so this run's are told apart
// from other runs on the same host.
func (c *chain) leftovers() (problems, notes []string) {
	for _, k := range c.functions {
		alive, err := benchutil.Proc.Alive(k)
		if err != nil {
			problems = append(problems, fmt.Sprintf("check function pid %d: %v", k.PID, err))
			continue
		}
		if alive {
			problems = append(problems, fmt.Sprintf("function process %d still running after spright run exited", k.PID))
		}
	}
	ns, err := netnsList()
	if err != nil {
		problems = append(problems, err.Error())
	}
	ours := fmt.Sprintf("spright-%d-", c.pid)
	for _, n := range ns {
		switch {
		case strings.HasPrefix(n, ours):
			problems = append(problems, fmt.Sprintf("leftover network namespace %s (ip netns del %s)", n, n))
		case strings.HasPrefix(n, "spright-"):
			notes = append(notes, fmt.Sprintf("network namespace %s exists but is not from this run", n))
		}
	}
	if _, err := os.Stat(c.pinDir); err == nil {
		problems = append(problems, fmt.Sprintf("leftover eBPF pin directory %s", c.pinDir))
	}
	// The gateway removes its pin-directory lock file when it unpins.
	lock := "/run/spright/pins" + strings.ReplaceAll(filepath.Clean(c.pinDir), "/", "_") + ".lock"
	if _, err := os.Stat(lock); err == nil {
		problems = append(problems, fmt.Sprintf("leftover pin-directory lock file %s", lock))
	}
	sock := fmt.Sprintf("/run/spright/%s-%d.sock", c.name, c.pid)
	if _, err := os.Stat(sock); err == nil {
		problems = append(problems, fmt.Sprintf("leftover control socket %s", sock))
	}
	return problems, notes
}

func netnsList() ([]string, error) {
	out, err := exec.Command("ip", "netns", "list").CombinedOutput()
	if err != nil {
		return nil, fmt.Errorf("ip netns list: %w: %s", err, strings.TrimSpace(string(out)))
	}
	var names []string
	for _, l := range strings.Split(string(out), "\n") {
		// "spright-123-0 (id: 0)"
		if f := strings.Fields(l); len(f) > 0 {
			names = append(names, f[0])
		}
	}
	return names, nil
}

// logFindings returns the warning and error lines of the chain's log
// (zap console format: the level is the first tab-separated field; Go
// panics and `spright: <error>` exit messages are caught by prefix).
func (c *chain) logFindings() (errs, warns []string, err error) {
	f, err := os.Open(c.logPath)
	if err != nil {
		return nil, nil, fmt.Errorf("read chain log: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		level, _, _ := strings.Cut(line, "\t")
		switch {
		case level == "warn":
			warns = append(warns, line)
		case level == "error", level == "dpanic", level == "panic", level == "fatal",
			strings.HasPrefix(line, "panic:"), strings.HasPrefix(line, "fatal error:"),
			strings.HasPrefix(line, "spright: ") && !runnerInfo(line):
			errs = append(errs, line)
		}
	}
	return errs, warns, sc.Err()
}

// runnerInfo reports whether a "spright: " line of `spright run` is one of
// its informational lines (cmd/spright: serving, redirect, node, netns,
// adapters, "<signal>: stopping") rather than the error it exits with.
func runnerInfo(line string) bool {
	for _, p := range []string{"spright: chain ", "spright: eBPF redirect ", "spright: node ", "spright: gateway in netns ",
		"spright: client netns ", "spright: MQTT on ", "spright: CoAP on "} {
		if strings.HasPrefix(line, p) {
			return true
		}
	}
	return strings.HasSuffix(line, ": stopping")
}

// poolHugepages reports whether the chain's pool got hugepages, from the
// runner's "chain ready" log line: it changes the numbers (TLB misses on
// the pool), and the pool silently falls back to normal pages.
func (c *chain) poolHugepages() string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return "unknown"
	}
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.Contains(line, "chain ready") {
			continue
		}
		switch {
		case strings.Contains(line, `"hugepages": true`):
			return "true"
		case strings.Contains(line, `"hugepages": false`):
			return "false"
		}
	}
	return "unknown"
}

// logTail returns the last n lines of the chain's log for error messages.
func (c *chain) logTail(n int) string {
	b, err := os.ReadFile(c.logPath)
	if err != nil {
		return fmt.Sprintf("(log unreadable: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

// defaultPinDir keeps each benchmark run's maps apart from those of a
// `spright run` someone else has going with the same chain name (the
// default pin directory is per chain name, not per process).
func defaultPinDir(mode string) string {
	return filepath.Join("/sys/fs/bpf/spright", fmt.Sprintf("bench-%d-%s", os.Getpid(), mode))
}

// sprightSys is one `spright run` of a sample chain under benchmark.
type sprightSys struct {
	system string
	ch     *chain
	// URL is the gateway's HTTP address.
	URL string
	// fnPIDs are the function processes (children of spright run).
	fnPIDs []int
}

// startSpright runs config/samples/<sample>/chain.yaml in mode (skmsg |
// poll), with mutate applied to the file and extra added to `spright run`'s
// flags, and waits until probe passes.
func startSpright(ctx context.Context, e *Env, sample, mode string, mutate func(map[string]any),
	probe func(ctx context.Context, url string) error, extra ...string) (*sprightSys, error) {
	bin, err := e.Binary(ctx, "spright")
	if err != nil {
		return nil, err
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		return nil, err
	}
	src := filepath.Join(e.Opts.Root, "config/samples", sample, "chain.yaml")
	cfg := filepath.Join(e.Tmp, fmt.Sprintf("%s-%s.yaml", sample, mode))
	name, err := writeChainConfig(src, cfg, mode, addr, mutate)
	if err != nil {
		return nil, err
	}
	ch, err := startChain(bin, cfg, name, defaultPinDir(sample+"-"+mode), filepath.Join(e.Tmp, fmt.Sprintf("%s-%s.log", sample, mode)), extra...)
	if err != nil {
		return nil, err
	}
	s := &sprightSys{system: "spright-" + mode, ch: ch, URL: "http://" + addr + "/"}
	if err := ch.waitReady(ctx, func(ctx context.Context) error { return probe(ctx, s.URL) }, 60*time.Second); err != nil {
		s.stop(nil)
		return nil, fmt.Errorf("%s: %w\nchain log (tail):\n%s", s.system, err, ch.logTail(15))
	}
	tree, err := benchutil.Proc.Tree(ch.pid)
	if err != nil {
		s.stop(nil)
		return nil, err
	}
	for _, st := range tree[1:] {
		ch.functions = append(ch.functions, st.Key())
		s.fnPIDs = append(s.fnPIDs, st.PID)
	}
	e.Logf("%s: %s up at %s (pid %d, %d function processes, hugepages %s)", s.system, sample, s.URL, ch.pid, len(s.fnPIDs), ch.poolHugepages())
	return s, nil
}

// groups: the function processes, then the gateway (spright run itself,
// which hosts the gateway in-process).
func (s *sprightSys) groups() []Group {
	return []Group{{Class: "functions", PIDs: s.fnPIDs}, {Class: "gateway", PIDs: []int{s.ch.pid}}}
}

// alive reports an error if the chain has exited.
func (s *sprightSys) alive() error {
	if s.ch.exited() {
		return fmt.Errorf("%s: spright run exited (%v)\n%s", s.system, s.ch.waitErr, s.ch.logTail(15))
	}
	return nil
}

// stop stops the chain and records what went wrong (leftovers, error
// lines in its log) in f (nil: discard).
func (s *sprightSys) stop(f *File) {
	var problems, notes []string
	if err := s.ch.stop(20 * time.Second); err != nil {
		problems = append(problems, err.Error())
	}
	p, n := s.ch.leftovers()
	problems, notes = append(problems, p...), append(notes, n...)
	errs, warns, err := s.ch.logFindings()
	if err != nil {
		problems = append(problems, err.Error())
	}
	for _, l := range errs {
		problems = append(problems, "chain log: "+l)
	}
	if len(warns) > 0 {
		notes = append(notes, fmt.Sprintf("chain log: %d warning(s); first: %s", len(warns), warns[0]))
	}
	if f == nil {
		return
	}
	for _, p := range problems {
		f.Problems = append(f.Problems, s.system+": "+p)
	}
	for _, n := range notes {
		f.Notes = append(f.Notes, s.system+": "+n)
	}
}
