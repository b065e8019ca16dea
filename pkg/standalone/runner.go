package standalone

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/spright-dev/spright/bpf/redirect"
	"github.com/spright-dev/spright/pkg/adapter"
	"github.com/spright-dev/spright/pkg/gateway"
)

// Options tune a standalone run.
type Options struct {
	// Listen is the HTTP address (default: the file's listen, else 127.0.0.1:8080).
	Listen string
	// AdminListen serves /metrics ("" = off).
	AdminListen string
	// PinDir for the eBPF maps (default DefaultPinDir: /sys/fs/bpf/spright/<chain>,
	// or <chain>@<node> for one node of a split chain).
	PinDir string
	// ControlSocket (default /run/spright/<chain>-<pid>.sock).
	ControlSocket string
	// Executable provides the `function` subcommand (default: this binary).
	Executable string
	// NoNetns runs functions in the host network namespace.
	NoNetns bool
	// StatsDir, if set, makes each function write its counters there on
	// exit (<function>-<index>.json: after a restart, the last process's).
	StatsDir string
	// AllowUnlisted admits members the runner did not start (tests that
	// register in-process instances); by default only the runner's own
	// function processes may join the chain.
	AllowUnlisted bool
	// MQTTListen, CoAPListen start the MQTT (TCP) and CoAP (UDP) front
	// ends there and attach their adapters (default: chain.yaml's
	// mqtt.listen / coap.listen; none if neither is set).
	MQTTListen, CoAPListen string
	// Redirect overrides chain.yaml's redirect (off | tc | xdp; "" = the
	// file's).
	Redirect string
	// GatewayNetns puts the HTTP listener into a namespace of its own (or
	// chain.yaml's gatewayNetns).
	GatewayNetns bool
	// ClientNetns creates client namespaces (at least chain.yaml's).
	ClientNetns int
	// ReadyTimeout bounds the wait for all instances to register (default 20s).
	ReadyTimeout time.Duration
	// Restart is the back-off for restarting function processes that
	// exit while the chain runs (zero: DefaultRestartPolicy).
	Restart RestartPolicy
	// Node is the node of a split chain this runner is (chain.yaml's
	// nodes; `spright run --node`): it runs that node's functions, listens
	// for the other nodes' gateways on its peer address and links to
	// them. Required when the file lists nodes, refused when it does not.
	Node string
	// PeerWait bounds how long Start waits, once its own instances have
	// registered, for the other nodes to offer the functions this node
	// has no instance of (default 10s). It serves HTTP either way: a node
	// that is down must not keep the others from serving; requests that
	// need what nobody offers get 503 meanwhile.
	PeerWait time.Duration
	Logger   *zap.Logger
}

// Proc is one process of a function instance. A restart makes a new Proc
// for the same Function and Index, in the same network namespace.
type Proc struct {
	Function string
	Index    int
	Net      *podNet
	Cmd      *exec.Cmd
	done     chan struct{}
	err      error

	startedAt, exitedAt time.Time
}

// Done is closed when the process has exited.
func (p *Proc) Done() <-chan struct{} { return p.done }

// Netns is the instance's network namespace ("" without one).
func (p *Proc) Netns() string {
	if p.Net == nil {
		return ""
	}
	return p.Net.NS
}

// Runner is a running standalone chain.
type Runner struct {
	// File is the chain file the runner was started with; Config is the
	// one in force after reloads (the name never changes).
	File    *ChainFile
	Gateway *gateway.Gateway
	Chain   *gateway.Chain
	opts    Options
	log     *zap.Logger
	cur     atomic.Pointer[ChainFile] // the file in force (Reload swaps it)

	// slotsMu guards slots, retiring and nets: a reload adds and removes
	// slots while /metrics, Procs and Stop read them.
	slotsMu  sync.RWMutex
	slots    []*slot        // one per function instance, in chain.yaml order
	retiring map[*slot]bool // slots a reload is stopping (out of slots, not yet gone)
	nets     []*podNet
	srv      *http.Server
	admin    *http.Server
	ln       net.Listener
	adminLn  net.Listener
	peerLn   net.Listener // the gateway's peer listener (split chains)

	// stopMu orders Stop against restarts: Stop sets stopped and closes
	// quit under it, and respawn starts a process under it only while
	// stopped is false. superWG counts the supervisors (supervise).
	stopMu  sync.Mutex
	stopped bool
	quit    chan struct{}
	superWG sync.WaitGroup

	pidMu sync.Mutex
	pids  map[int32]string // pid -> function it was started as

	// reloadMu serializes reloads, and Stop waits for one in progress
	// (it gives up as soon as quit closes) before tearing down what it
	// works on.
	reloadMu                       sync.Mutex
	reloadsApplied, reloadsRefused atomic.Uint64
	lastReload                     atomic.Int64 // nanoseconds the last applied reload took

	// Adapters are the chain's protocol adapter hook points.
	Adapters *adapter.Chain
	fronts   adapterFronts

	mode    redirect.Mode
	fwd     *redirect.Forwarder // nil with redirect off
	gwNet   *podNet             // the gateway's namespace (GatewayNetns)
	clients []*podNet           // client namespaces (ClientNetns)
}

// RedirectMode is the forwarding mode in effect.
func (r *Runner) RedirectMode() redirect.Mode { return r.mode }

// Forwarder is the XDP/TC forwarder (nil when redirect is off): its Stats
// show what took the redirect path.
func (r *Runner) Forwarder() *redirect.Forwarder { return r.fwd }

// GatewayNetns is the namespace the HTTP listener lives in ("" = the
// host's).
func (r *Runner) GatewayNetns() string {
	if r.gwNet == nil {
		return ""
	}
	return r.gwNet.NS
}

// ClientNetns are the client namespaces (see Options.ClientNetns), e.g. for
// `ip netns exec NS wrk ...`.
func (r *Runner) ClientNetns() []string {
	out := make([]string, len(r.clients))
	for i, c := range r.clients {
		out[i] = c.NS
	}
	return out
}

// newPod creates a namespace joined by veth, enables forwarding for it
// when pods talk to each other, and attaches the forwarder.
func (r *Runner) newPod(what string, forwarding bool) (*podNet, error) {
	pn := newPodNet()
	if err := pn.create(); err != nil {
		return nil, fmt.Errorf("netns for %s: %w", what, err)
	}
	r.slotsMu.Lock()
	if r.isStopping() {
		// A reload's pod made after Stop took its list of namespaces
		// would be left behind: remove it here instead.
		r.slotsMu.Unlock()
		pn.delete()
		return nil, errStopping
	}
	r.nets = append(r.nets, pn)
	r.slotsMu.Unlock()
	if forwarding || r.fwd != nil {
		if err := pn.enableForwarding(); err != nil {
			return nil, fmt.Errorf("netns for %s: %w", what, err)
		}
	}
	if r.fwd != nil {
		if err := r.fwd.AddPod(pn.Host, pn.NS, pn.Peer); err != nil {
			return nil, fmt.Errorf("netns for %s: %w", what, err)
		}
	}
	return pn, nil
}

// verify admits a registering process only if this runner started it as
// that function of this chain (chain isolation, standalone flavour).
func (r *Runner) verify(cred unix.Ucred, m gateway.Member) error {
	if m.Chain != r.File.Name && !r.opts.AllowUnlisted {
		return fmt.Errorf("this gateway serves chain %q only", r.File.Name)
	}
	deadline := time.Now().Add(time.Second) // spawn records the pid right after fork
	for {
		r.pidMu.Lock()
		fn, ok := r.pids[cred.Pid]
		r.pidMu.Unlock()
		switch {
		case ok && fn == m.Function:
			return nil
		case ok:
			return fmt.Errorf("pid %d was started as function %q, not %q", cred.Pid, fn, m.Function)
		case r.opts.AllowUnlisted:
			return nil
		case time.Now().After(deadline):
			return fmt.Errorf("pid %d was not started by this runner", cred.Pid)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// Start brings the chain up and returns once every instance has registered
// and HTTP is being served.
func Start(cf *ChainFile, opts Options) (r *Runner, err error) {
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	if opts.Listen == "" {
		opts.Listen = cf.Listen
	}
	if opts.Listen == "" {
		opts.Listen = "127.0.0.1:8080"
	}
	if err := cf.checkNode(opts.Node); err != nil {
		return nil, err
	}
	if opts.PinDir == "" {
		opts.PinDir = DefaultPinDir(cf.Name, opts.Node)
	}
	if opts.PeerWait == 0 {
		opts.PeerWait = 10 * time.Second
	}
	var peerKey []byte
	if opts.Node != "" {
		if peerKey, err = ReadPeerKey(cf.PeerKeyFile); err != nil {
			return nil, fmt.Errorf("chain %q, node %q: %w", cf.Name, opts.Node, err)
		}
	}
	if opts.ControlSocket == "" {
		opts.ControlSocket = fmt.Sprintf("/run/spright/%s-%d.sock", cf.Name, os.Getpid())
	}
	if opts.Executable == "" {
		if opts.Executable, err = os.Executable(); err != nil {
			return nil, err
		}
	}
	if opts.ReadyTimeout == 0 {
		opts.ReadyTimeout = 20 * time.Second
	}
	cc, err := cf.GatewayConfig()
	if err != nil {
		return nil, err
	}
	opts.Restart = opts.Restart.withDefaults()
	r = &Runner{File: cf, opts: opts, log: opts.Logger, pids: map[int32]string{}, quit: make(chan struct{}), retiring: map[*slot]bool{}}
	r.cur.Store(cf)
	defer func() {
		if err != nil {
			r.Stop()
		}
	}()
	if opts.Redirect == "" {
		opts.Redirect = cf.Redirect
	}
	if r.mode, err = redirect.ParseMode(opts.Redirect); err != nil {
		return r, err
	}
	opts.GatewayNetns = opts.GatewayNetns || cf.GatewayNetns
	opts.ClientNetns = max(opts.ClientNetns, cf.ClientNetns)
	r.opts = opts
	podToPod := opts.GatewayNetns || opts.ClientNetns > 0
	if r.mode != redirect.ModeOff {
		if opts.NoNetns {
			return r, fmt.Errorf("redirect %s needs network namespaces (drop --no-netns)", r.mode)
		}
		if r.fwd, err = redirect.New(r.mode); err != nil {
			return r, err
		}
	}
	if r.Gateway, err = gateway.New(gateway.Config{ControlSocket: opts.ControlSocket, PinDir: opts.PinDir, Logger: opts.Logger, Verify: r.verify,
		Node: opts.Node, PeerKey: peerKey}); err != nil {
		return r, err
	}
	if r.Chain, err = r.Gateway.AddChain(cc); err != nil {
		return r, err
	}
	if err = r.Gateway.Start(); err != nil {
		return r, err
	}
	for _, f := range cf.forNode(opts.Node).Functions {
		for i := 0; i < *f.Instances; i++ {
			var pn *podNet
			if !opts.NoNetns {
				if pn, err = r.newPod(fmt.Sprintf("%s/%d", f.Name, i), podToPod); err != nil {
					return r, err
				}
			}
			p, err := r.spawn(f, i, pn)
			if err != nil {
				return r, err
			}
			r.slots = append(r.slots, newSlot(f, i, pn, p))
		}
	}
	if err = r.waitReady(); err != nil {
		return r, err
	}
	// Supervision starts once the chain is up: a process that cannot
	// register at all fails Start (a broken command is a configuration
	// error, better reported than retried); from here on, what exits is
	// restarted.
	for _, s := range r.slots {
		r.superWG.Add(1)
		go r.supervise(s)
	}
	if err = r.startPeers(); err != nil {
		return r, err
	}
	if err = r.startAdapters(); err != nil {
		return r, err
	}
	for i := 0; i < opts.ClientNetns; i++ {
		pn, err := r.newPod(fmt.Sprintf("client %d", i), true)
		if err != nil {
			return r, err
		}
		r.clients = append(r.clients, pn)
	}
	if opts.GatewayNetns {
		if r.gwNet, err = r.newPod("the gateway", true); err != nil {
			return r, err
		}
		_, port, err := net.SplitHostPort(opts.Listen)
		if err != nil {
			return r, fmt.Errorf("listen %s: %w", opts.Listen, err)
		}
		addr := net.JoinHostPort(r.gwNet.PodIP, port)
		err = redirect.InNetns(r.gwNet.NS, func() (err error) {
			r.ln, err = gateway.ListenHTTP(addr)
			return err
		})
		if err != nil {
			return r, fmt.Errorf("listen %s in netns %s: %w", addr, r.gwNet.NS, err)
		}
	} else if r.ln, err = gateway.ListenHTTP(opts.Listen); err != nil {
		return r, fmt.Errorf("listen %s: %w", opts.Listen, err)
	}
	r.srv = &http.Server{Handler: adapter.HTTPHandler(r.Adapters, r.Gateway.Handler(r.Chain)), ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	go r.srv.Serve(r.ln)
	if opts.AdminListen != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", r.metricsHandler())
		mux.Handle("/adapters", adapter.AdminHandler(r.Adapters))
		mux.Handle("/adapters/", adapter.AdminHandler(r.Adapters))
		mux.Handle("/chain", r.chainHandler())
		r.admin = &http.Server{Addr: opts.AdminListen, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		if r.adminLn, err = net.Listen("tcp", opts.AdminListen); err != nil {
			return r, fmt.Errorf("admin listen %s: %w", opts.AdminListen, err)
		}
		go r.admin.Serve(r.adminLn)
	}
	r.log.Info("chain ready", zap.String("chain", cf.Name), zap.String("mode", cf.Mode), zap.String("listen", r.ln.Addr().String()),
		zap.String("redirect", string(r.mode)), zap.String("gatewayNetns", r.GatewayNetns()), zap.Strings("clientNetns", r.ClientNetns()),
		zap.Int("instances", len(r.slots)), zap.Bool("hugepages", r.Chain.Pool().HugePages()),
		zap.String("node", opts.Node), zap.String("pinDir", opts.PinDir))
	return r, nil
}

// Addr is the HTTP listen address.
func (r *Runner) Addr() string { return r.ln.Addr().String() }

// AdminAddr is the admin listener's address (/metrics, /adapters, /chain;
// "" if off).
func (r *Runner) AdminAddr() string {
	if r.adminLn == nil {
		return ""
	}
	return r.adminLn.Addr().String()
}

// Procs are the function processes, one per instance in chain.yaml order:
// the process running it now, or, while its restart waits out a back-off,
// the one that exited (Done is closed).
func (r *Runner) Procs() []*Proc {
	r.slotsMu.RLock()
	defer r.slotsMu.RUnlock()
	return r.procsLocked()
}

// procsLocked is Procs with slotsMu held.
func (r *Runner) procsLocked() []*Proc {
	out := make([]*Proc, len(r.slots))
	for i, s := range r.slots {
		out[i] = s.current()
	}
	return out
}

// metricsHandler serves the gateway's metrics (with the Go runtime's and
// the process's own, as Gateway.MetricsHandler) and the supervisor's
// restart counters, in Prometheus text format.
func (r *Runner) metricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(r.Gateway, (*supervision)(r), (*reloads)(r), collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

func (r *Runner) spawn(f FunctionFile, idx int, pn *podNet) (*Proc, error) {
	var argv []string
	env := append(os.Environ(),
		"SPRIGHT_CONTROL_SOCKET="+r.opts.ControlSocket,
		"SPRIGHT_CHAIN="+r.File.Name, // a reload never changes the name
		"SPRIGHT_FUNCTION="+f.Name,
		"SPRIGHT_INSTANCE_INDEX="+strconv.Itoa(idx),
	)
	for k, v := range f.Env {
		env = append(env, k+"="+v)
	}
	if len(f.Command) > 0 {
		argv = f.Command
	} else {
		argv = []string{r.opts.Executable, "function",
			"--chain", r.File.Name, "--function", f.Name, "--control", r.opts.ControlSocket,
			"--behavior", f.Behavior, "--service-time", time.Duration(f.ServiceTime).String()}
		if f.Workers > 0 {
			argv = append(argv, "--workers", strconv.Itoa(f.Workers))
		}
		if r.opts.StatsDir != "" {
			argv = append(argv, "--stats-file", filepath.Join(r.opts.StatsDir, fmt.Sprintf("%s-%d.json", f.Name, idx)))
		}
	}
	if pn != nil {
		argv = append([]string{"ip", "netns", "exec", pn.NS}, argv...)
	}
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = env
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	cmd.SysProcAttr = &syscall.SysProcAttr{
		// The function dies with the runner, whatever kills the runner.
		Pdeathsig: syscall.SIGKILL,
		// A process group of its own: Ctrl-C and a terminal's hang-up
		// reach the runner only, which stops the functions after the
		// gateway has drained (and does not mistake their exit for a
		// crash to restart).
		Setpgid: true,
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s/%d: %w", f.Name, idx, err)
	}
	pid := cmd.Process.Pid
	r.pidMu.Lock()
	r.pids[int32(pid)] = f.Name
	r.pidMu.Unlock()
	p := &Proc{Function: f.Name, Index: idx, Net: pn, Cmd: cmd, done: make(chan struct{}), startedAt: time.Now()}
	go func() {
		err := cmd.Wait()
		p.exitedAt = time.Now()
		p.err = err
		r.pidGone(pid)
		close(p.done) // last: Stop returns once every done is closed
	}()
	return p, nil
}

// signal sends sig to the process's group (a Command may be a wrapper
// with children of its own), unless the process has been reaped: its pid
// may belong to someone else by then.
func (p *Proc) signal(sig syscall.Signal) {
	select {
	case <-p.done:
		return
	default:
	}
	if err := syscall.Kill(-p.Cmd.Process.Pid, sig); err != nil {
		p.Cmd.Process.Signal(sig)
	}
}

func (r *Runner) waitReady() error {
	deadline := time.Now().Add(r.opts.ReadyTimeout)
	for {
		missing := ""
		for _, f := range r.File.forNode(r.opts.Node).Functions {
			if n := localInstances(r.Chain, f.Name); n < *f.Instances {
				missing = fmt.Sprintf("%s has %d of %d instances", f.Name, n, *f.Instances)
				break
			}
		}
		if missing == "" {
			return nil
		}
		for _, s := range r.slots { // Start's own: no reload runs yet
			select {
			case <-s.proc.done:
				return fmt.Errorf("function %s/%d exited before registering: %v", s.fn.Name, s.index, s.proc.err)
			default:
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("chain %q not ready after %v: %s", r.File.Name, r.opts.ReadyTimeout, missing)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Stop shuts everything down: restarts (none begins once Stop has), HTTP
// (requests in flight finish, within 5s), functions (SIGTERM to each
// instance's current process group, then SIGKILL after 5s), the gateway,
// the pins, the namespaces. It is safe to call twice.
func (r *Runner) Stop() error {
	r.stopMu.Lock()
	if r.stopped {
		r.stopMu.Unlock()
		return nil
	}
	r.stopped = true
	close(r.quit)
	r.stopMu.Unlock()
	// Supervisors return at once now (one inside respawn has finished:
	// it held stopMu), and a reload gives up (every wait of its selects on
	// quit; it starts no process once stopped is set), so the slots are
	// final once it has returned.
	r.superWG.Wait()
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if r.srv != nil {
		r.srv.Shutdown(ctx)
	}
	if r.admin != nil {
		r.admin.Shutdown(ctx)
	}
	r.stopAdapters()
	r.slotsMu.RLock()
	procs := r.procsLocked()
	for s := range r.retiring {
		procs = append(procs, s.current())
	}
	nets := append([]*podNet(nil), r.nets...)
	r.slotsMu.RUnlock()
	for _, p := range procs {
		p.signal(syscall.SIGTERM)
	}
	for _, p := range procs {
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.signal(syscall.SIGKILL)
			<-p.done
		}
	}
	if r.fwd != nil {
		errs = append(errs, r.fwd.Close())
	}
	if r.Gateway != nil {
		errs = append(errs, r.Gateway.Close(), r.Gateway.Unpin())
	}
	for _, n := range nets {
		errs = append(errs, n.delete())
	}
	return errors.Join(errs...)
}

// Run starts the chain and serves until ctx ends.
func Run(ctx context.Context, cf *ChainFile, opts Options) error {
	r, err := Start(cf, opts)
	if err != nil {
		return err
	}
	<-ctx.Done()
	return r.Stop()
}
