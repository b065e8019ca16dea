package sidecar

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// containerPath is the PATH a container image typically has; processes get
// it and their own environment, nothing of the benchmark's.
const containerPath = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

// Process is one program running in a namespace: a sidecar or a function.
type Process struct {
	Name string
	// Addr is the address it serves on, inside NetNS.
	Addr  string
	PID   int
	NetNS *NetNS
	// LogPath holds its stdout and stderr.
	LogPath string

	cmd     *exec.Cmd
	done    chan struct{}
	waitErr error
	killed  bool
}

func startProcess(name, addr string, ns *NetNS, env []string, logPath, bin string, args ...string) (*Process, error) {
	if ns == nil {
		return nil, fmt.Errorf("start %s: no network namespace", name)
	}
	if logPath == "" {
		logPath = os.DevNull
	}
	logf, err := os.OpenFile(logPath, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return nil, fmt.Errorf("start %s: log: %w", name, err)
	}
	cmd := ns.Command(bin, args...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// Its own process group: Ctrl-C reaches the benchmark, which
		// stops what it started; Stop's SIGKILL takes the whole group.
		Setpgid: true,
		// Nothing outlives the benchmark or test that started it.
		Pdeathsig: syscall.SIGKILL,
	}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s (%s): %w", name, bin, err)
	}
	p := &Process{Name: name, Addr: addr, PID: cmd.Process.Pid, NetNS: ns, LogPath: logPath, cmd: cmd, done: make(chan struct{})}
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	return p, nil
}

// Exited reports whether the process has exited.
func (p *Process) Exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// WaitErr is the process's exit status once Done.
func (p *Process) WaitErr() error { return p.waitErr }

// Killed reports whether Stop had to SIGKILL it.
func (p *Process) Killed() bool { return p.killed }

// Stop sends SIGTERM, waits up to grace for the process to exit, then
// SIGKILLs its process group. Knative's queue-proxy never exits within a
// short grace: on SIGTERM it drains for 30s (as a pod would until kubelet's
// terminationGracePeriod), so for it Killed() is normal. Stop returns an
// error if the process had exited before it was asked to.
func (p *Process) Stop(grace time.Duration) error {
	if p.Exited() {
		return fmt.Errorf("%s (pid %d) had already exited: %v", p.Name, p.PID, p.waitErr)
	}
	if grace > 0 {
		p.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-p.done:
			return nil
		case <-time.After(grace):
		}
	}
	p.killed = true
	syscall.Kill(-p.PID, syscall.SIGKILL)
	<-p.done
	return nil
}

// LogTail returns the last n lines of the process's log, indented.
func (p *Process) LogTail(n int) string {
	b, err := os.ReadFile(p.LogPath)
	if err != nil {
		return fmt.Sprintf("    (log unreadable: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}

// failStart stops a process that did not come up and explains why.
func (p *Process) failStart(err error) error {
	exited := p.Exited()
	if !exited {
		p.Stop(0)
	} else {
		err = fmt.Errorf("%w (exited: %v)", err, p.waitErr)
	}
	return fmt.Errorf("%s did not come up: %w\n  log tail (%s):\n%s", p.Name, err, p.LogPath, p.LogTail(10))
}

// SidecarOptions start a queue-proxy or anything with its contract.
type SidecarOptions struct {
	// Binary is the sidecar executable.
	Binary string
	// NetNS is the pod stand-in; the user function runs in it too.
	NetNS *NetNS
	// Env is the queue-proxy contract's environment.
	Env QueueProxyEnv
	// ExtraEnv is added after Env (KEY=VALUE; a later key wins).
	ExtraEnv []string
	// LogPath receives stdout and stderr ("": discarded).
	LogPath string
	// StartTimeout bounds the wait for the serving port (default 10s).
	StartTimeout time.Duration
}

// StartQueueProxy starts Knative's queue-proxy and waits until its serving
// port accepts connections. It does not wait for readiness, which needs
// the user function: see Probe.
func StartQueueProxy(ctx context.Context, o SidecarOptions) (*Process, error) {
	return StartSidecar(ctx, "queue-proxy", o)
}

// StartSidecar is StartQueueProxy for any binary with queue-proxy's
// environment contract (EPROXY), named name in errors.
func StartSidecar(ctx context.Context, name string, o SidecarOptions) (*Process, error) {
	if o.Binary == "" {
		return nil, fmt.Errorf("start %s: no binary", name)
	}
	env := append(append([]string{containerPath}, o.Env.Environ()...), o.ExtraEnv...)
	p, err := startProcess(name, o.Env.Addr(), o.NetNS, env, o.LogPath, o.Binary)
	if err != nil {
		return nil, err
	}
	if err := p.waitListening(ctx, o.StartTimeout); err != nil {
		return nil, p.failStart(err)
	}
	return p, nil
}

// waitListening waits until a TCP connection to Addr succeeds.
func (p *Process) waitListening(ctx context.Context, timeout time.Duration) error {
	return p.poll(ctx, timeout, func(ctx context.Context) error {
		c, err := p.NetNS.Dial(ctx, "tcp", p.Addr)
		if err == nil {
			c.Close()
		}
		return err
	})
}

// poll retries check every 20ms until it succeeds, the process exits, ctx
// ends or timeout (default 10s) passes.
func (p *Process) poll(ctx context.Context, timeout time.Duration, check func(context.Context) error) error {
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var last error
	for {
		if p.Exited() {
			return fmt.Errorf("exited before serving on %s", p.Addr)
		}
		cctx, ccancel := context.WithTimeout(ctx, time.Second)
		last = check(cctx)
		ccancel()
		if last == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("not serving on %s after %v: %w", p.Addr, timeout, last)
		case <-p.done:
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// UserFunctionOptions start the HTTP function fixture (test/fixtures/httpfn).
type UserFunctionOptions struct {
	// Binary is httpfn (see BuildUserFunction).
	Binary string
	NetNS  *NetNS
	// Port is its port on 127.0.0.1 (default DefaultUserPort), the
	// sidecar's USER_PORT.
	Port        int
	Behavior    string // echo (default), upper or reverse
	ServiceTime time.Duration
	LogPath     string
	// StartTimeout bounds the wait for its readiness endpoint (default 10s).
	StartTimeout time.Duration
	// ExtraArgs are added to httpfn's command line (e.g. --front URL).
	ExtraArgs []string
}

// HealthPath is httpfn's readiness endpoint.
const HealthPath = "/healthz"

// StartUserFunction starts httpfn and waits until GET /healthz answers 200.
func StartUserFunction(ctx context.Context, o UserFunctionOptions) (*Process, error) {
	if o.Binary == "" {
		return nil, errors.New("start function: no binary")
	}
	if o.Port == 0 {
		o.Port = DefaultUserPort
	}
	if o.Behavior == "" {
		o.Behavior = "echo"
	}
	addr := "127.0.0.1:" + strconv.Itoa(o.Port)
	args := append([]string{"--listen", addr, "--behavior", o.Behavior, "--service-time", o.ServiceTime.String()}, o.ExtraArgs...)
	p, err := startProcess("function", addr, o.NetNS, []string{containerPath}, o.LogPath, o.Binary, args...)
	if err != nil {
		return nil, err
	}
	client := o.NetNS.HTTPClient(time.Second)
	err = p.poll(ctx, o.StartTimeout, func(ctx context.Context) error {
		_, _, err := Get(ctx, client, "http://"+addr+HealthPath, nil)
		return err
	})
	if err != nil {
		return nil, p.failStart(err)
	}
	return p, nil
}

// KubeletUserAgent is what kubelet's HTTP probes send. The queue-proxy
// answers K-Network-Probe: queue itself only from a health checker: a
// User-Agent starting "kube-probe/" (kubelet), "Knative-Activator-Probe"
// or "Knative-Autoscaling-Probe". Without one, the request is proxied to
// the user container like any other.
const KubeletUserAgent = "kube-probe/1.30"

// Probe sends the queue-proxy container's readiness probe as kubelet does
// (GET / on the serving port, K-Network-Probe: queue, kubelet's
// User-Agent) and wants 200 with body "queue", which the queue-proxy only
// gives once the user container's own readiness probe
// (SERVING_READINESS_PROBE) passes.
func Probe(ctx context.Context, client *http.Client, addr string) error {
	status, body, err := Get(ctx, client, "http://"+addr+"/", http.Header{
		"K-Network-Probe": {"queue"},
		"User-Agent":      {KubeletUserAgent},
	})
	if err != nil {
		return fmt.Errorf("readiness probe: %w", err)
	}
	if status != http.StatusOK || string(body) != "queue" {
		return fmt.Errorf("readiness probe: got %d %q, want 200 \"queue\"", status, body)
	}
	return nil
}

// Get sends a GET with the given headers; a non-2xx status is an error.
func Get(ctx context.Context, client *http.Client, url string, h http.Header) (int, []byte, error) {
	return Do(ctx, client, http.MethodGet, url, h, nil)
}

// Do sends a request and reads up to 1 MiB of the answer. Any status is
// returned; err is set for transport errors and for non-2xx statuses.
func Do(ctx context.Context, client *http.Client, method, url string, h http.Header, body []byte) (int, []byte, error) {
	var rd io.Reader
	if body != nil {
		rd = strings.NewReader(string(body))
	}
	req, err := http.NewRequestWithContext(ctx, method, url, rd)
	if err != nil {
		return 0, nil, err
	}
	for k, v := range h {
		req.Header[http.CanonicalHeaderKey(k)] = v
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if err != nil {
		return resp.StatusCode, b, fmt.Errorf("%s %s: read answer: %w", method, url, err)
	}
	if resp.StatusCode/100 != 2 {
		return resp.StatusCode, b, fmt.Errorf("%s %s: %s: %q", method, url, resp.Status, truncate(b, 200))
	}
	return resp.StatusCode, b, nil
}

func truncate(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "..."
	}
	return string(b)
}
