package scenario

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
	"github.com/spright-dev/spright/test/bench/internal/sidecar"
)

// KnativeBaseline describes the Knative path as the benchmark builds it;
// RESULTS.md quotes it.
var KnativeBaseline = []string{
	"Knative path (DESIGN §9): nginx from Debian as the front-end that coordinates the chain, and for each function a pod " +
		"stand-in (a network namespace joined to the host by a veth pair) running Knative's real queue-proxy " +
		"(knative.dev/serving " + sidecar.ServingVersion + " cmd/queue, built in serving's own module, with the environment " +
		"the revision reconciler gives it) in front of the HTTP function test/fixtures/httpfn doing the same CPU work.",
	"A request enters nginx at /chain/<name>; nginx sends it to the first function's queue-proxy with the rest of " +
		"the chain in the X-Chain-Next header; each function, after its work, POSTs its output back to nginx at " +
		"/fn/<next>, which forwards it to that function's queue-proxy; the last function answers and the answer " +
		"unwinds back through every hop. Every hop therefore crosses nginx and a queue-proxy over TCP, as Online " +
		"Boutique's front-end coordinates its calls. No Kubernetes, activator or autoscaler is involved.",
}

// FnSpec is one function of a chain on the Knative path.
type FnSpec struct {
	Name        string
	Behavior    string // httpfn --behavior (echo, upper, reverse)
	ServiceTime time.Duration
	// Binary runs instead of httpfn (it takes httpfn's command line; e.g.
	// cmd/boutique for the shop's services).
	Binary string
}

type pod struct {
	spec          FnSpec
	ns            *sidecar.NetNS
	hostIP, podIP string
	fn, qp        *sidecar.Process
	hostIf, podIf string
	idx           int
	starts        int
}

// knativePath is nginx plus one pod per function.
type knativePath struct {
	e      *Env
	dir    string
	port   int
	pods   []*pod
	byName map[string]*pod
	chains map[string][]string
	nginx  *exec.Cmd
	ngDone chan struct{}
	ngErr  error
	httpfn string
	qpBin  string
	// root is the function nginx sends every other path to, the URI
	// kept ("": none): a web application's front end.
	root  string
	qpEnv sidecar.QueueProxyEnv

	mu sync.Mutex // pods' processes (cold starts)
	// retired is the CPU ticks of stopped pods' processes by class.
	retired map[string]uint64
	// problems seen while running (stop adds them to the file).
	problems []string
}

var knSeq int

// startKnative builds the Knative path for fns and chains (chain name →
// function names in order) and starts every pod unless cold.
func startKnative(ctx context.Context, e *Env, fns []FnSpec, chains map[string][]string, cold bool) (*knativePath, error) {
	return startKnativeRoot(ctx, e, fns, chains, cold, "")
}

// startKnativeRoot is startKnative with function root behind nginx's "/"
// (every path but /fn/ and /chain/, with its URI): the client's requests
// reach it through nginx and its queue-proxy, as an ingress would route a
// web application's host to its front end.
func startKnativeRoot(ctx context.Context, e *Env, fns []FnSpec, chains map[string][]string, cold bool, root string) (*knativePath, error) {
	httpfn, err := e.Binary(ctx, "httpfn")
	if err != nil {
		return nil, err
	}
	qp, err := e.Binary(ctx, "queue-proxy")
	if err != nil {
		return nil, err
	}
	nginxBin, err := lookTool("nginx")
	if err != nil {
		return nil, err
	}
	knSeq++
	k := &knativePath{e: e, byName: map[string]*pod{}, retired: map[string]uint64{}, chains: chains, httpfn: httpfn, qpBin: qp, root: root}
	k.dir = filepath.Join(e.Tmp, fmt.Sprintf("knative-%d", knSeq))
	for _, d := range []string{"tmp/body", "tmp/proxy", "tmp/fcgi", "tmp/uwsgi", "tmp/scgi", "logs"} {
		if err := os.MkdirAll(filepath.Join(k.dir, d), 0o755); err != nil {
			return nil, err
		}
	}
	env := sidecar.DefaultQueueProxyEnv()
	// As in the sidecar scenario: without full duplex, queue-proxy
	// v0.42.2 aborts some answers to 10 KB POSTs (knative/serving#12387).
	env.EnableHTTPFullDuplex = true
	k.qpEnv = env
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	k.port = ln.Addr().(*net.TCPAddr).Port
	ln.Close()

	pid := os.Getpid()
	third := 210 + pid%40
	for i, f := range fns {
		if f.Behavior == "" {
			f.Behavior = "echo"
		}
		p := &pod{spec: f, idx: i,
			hostIP: fmt.Sprintf("10.%d.%d.1", third, i+knSeq*16%200),
			podIP:  fmt.Sprintf("10.%d.%d.2", third, i+knSeq*16%200),
			hostIf: fmt.Sprintf("kn%dh%d", pid%10000, knSeq*16+i),
			podIf:  fmt.Sprintf("kn%dp%d", pid%10000, knSeq*16+i),
		}
		ns, err := sidecar.CreateNetNS(fmt.Sprintf("kn-bench-%d-%d-%s", pid, knSeq, f.Name))
		if err != nil {
			k.stop(nil)
			return nil, err
		}
		p.ns = ns
		k.pods = append(k.pods, p)
		k.byName[f.Name] = p
		if err := ns.AddVeth(p.hostIf, p.podIf, p.hostIP, p.podIP); err != nil {
			k.stop(nil)
			return nil, err
		}
	}
	if root != "" && k.byName[root] == nil {
		k.stop(nil)
		return nil, fmt.Errorf("root: no function %q", root)
	}
	for name, fs := range chains {
		for _, f := range fs {
			if k.byName[f] == nil {
				k.stop(nil)
				return nil, fmt.Errorf("chain %s: no function %q", name, f)
			}
		}
	}
	conf := filepath.Join(k.dir, "nginx.conf")
	if err := os.WriteFile(conf, []byte(k.nginxConf()), 0o644); err != nil {
		k.stop(nil)
		return nil, err
	}
	logf, err := os.Create(filepath.Join(k.dir, "logs/nginx.out"))
	if err != nil {
		k.stop(nil)
		return nil, err
	}
	cmd := exec.Command(nginxBin, "-p", k.dir, "-c", conf)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		logf.Close()
		k.stop(nil)
		return nil, fmt.Errorf("start nginx: %w", err)
	}
	k.nginx, k.ngDone = cmd, make(chan struct{})
	go func() { k.ngErr = cmd.Wait(); logf.Close(); close(k.ngDone) }()
	if err := waitTCP(ctx, fmt.Sprintf("127.0.0.1:%d", k.port), 10*time.Second, k.ngDone); err != nil {
		b, _ := os.ReadFile(filepath.Join(k.dir, "logs/error.log"))
		k.stop(nil)
		return nil, fmt.Errorf("nginx: %w\n%s", err, b)
	}
	if !cold {
		if err := k.startPods(ctx); err != nil {
			k.stop(nil)
			return nil, err
		}
	}
	e.Logf("knative: nginx on 127.0.0.1:%d (pid %d), %d pods (%s)", k.port, cmd.Process.Pid, len(k.pods),
		map[bool]string{true: "scaled to zero", false: "running"}[cold])
	return k, nil
}

// nginxConf is the front-end's configuration.
func (k *knativePath) nginxConf() string {
	var b strings.Builder
	fmt.Fprintf(&b, `# generated by test/bench: the Knative path's front-end
daemon off;
master_process on;
worker_processes auto;
pid %[1]s/nginx.pid;
error_log %[1]s/logs/error.log warn;
events { worker_connections 8192; }
http {
  access_log off;
  client_body_temp_path %[1]s/tmp/body;
  proxy_temp_path %[1]s/tmp/proxy;
  fastcgi_temp_path %[1]s/tmp/fcgi;
  uwsgi_temp_path %[1]s/tmp/uwsgi;
  scgi_temp_path %[1]s/tmp/scgi;
  client_body_buffer_size 64k;
  client_max_body_size 4m;
  proxy_buffer_size 64k;
  proxy_buffers 8 64k;
  proxy_http_version 1.1;
  proxy_read_timeout 120s;
  keepalive_requests 1000000;
  keepalive_timeout 120s;
`, k.dir)
	for _, p := range k.pods {
		fmt.Fprintf(&b, "  upstream fn_%s { server %s:%d; keepalive 256; }\n", ident(p.spec.Name), p.podIP, k.qpEnv.ServingPort)
	}
	fmt.Fprintf(&b, "  server {\n    listen 127.0.0.1:%d;\n", k.port)
	for _, p := range k.pods {
		fmt.Fprintf(&b, "    listen %s:%d;\n", p.hostIP, k.port)
	}
	for _, p := range k.pods {
		fmt.Fprintf(&b, "    location = /fn/%s { proxy_set_header Connection \"\"; proxy_pass http://fn_%s/; }\n", p.spec.Name, ident(p.spec.Name))
	}
	if k.root != "" {
		// No URI in proxy_pass: the path and query go through as sent.
		fmt.Fprintf(&b, "    location / { proxy_set_header Connection \"\"; proxy_pass http://fn_%s; }\n", ident(k.root))
	}
	var names []string
	for n := range k.chains {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fs := k.chains[n]
		fmt.Fprintf(&b, "    location = /chain/%s { proxy_set_header Connection \"\"; proxy_set_header X-Chain-Next \"%s\"; proxy_pass http://fn_%s/; }\n",
			n, strings.Join(fs[1:], ","), ident(fs[0]))
	}
	b.WriteString("  }\n}\n")
	return b.String()
}

func ident(s string) string { return strings.NewReplacer("-", "_", ".", "_").Replace(s) }

// RootURL is the front-end's address of the root function ("/").
func (k *knativePath) RootURL() string { return fmt.Sprintf("http://127.0.0.1:%d/", k.port) }

// URL is the front-end's address for a chain.
func (k *knativePath) URL(chain string) string {
	return fmt.Sprintf("http://127.0.0.1:%d/chain/%s", k.port, chain)
}

// startPods starts every pod's function and queue-proxy that is not
// running, and waits for queue-proxy's readiness probe: a cold start.
func (k *knativePath) startPods(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	var wg sync.WaitGroup
	errs := make([]error, len(k.pods))
	for i, p := range k.pods {
		if p.fn != nil {
			continue
		}
		wg.Add(1)
		go func(i int, p *pod) {
			defer wg.Done()
			errs[i] = k.startPod(ctx, p)
		}(i, p)
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func (k *knativePath) startPod(ctx context.Context, p *pod) error {
	p.starts++
	bin := k.httpfn
	if p.spec.Binary != "" {
		bin = p.spec.Binary
	}
	fn, err := sidecar.StartUserFunction(ctx, sidecar.UserFunctionOptions{
		Binary: bin, NetNS: p.ns, Port: k.qpEnv.UserPort, Behavior: p.spec.Behavior, ServiceTime: p.spec.ServiceTime,
		LogPath:      filepath.Join(k.dir, "logs", fmt.Sprintf("%s-fn-%d.log", p.spec.Name, p.starts)),
		StartTimeout: 30 * time.Second,
		ExtraArgs:    []string{"--front", fmt.Sprintf("http://%s:%d", p.hostIP, k.port)},
	})
	if err != nil {
		return fmt.Errorf("pod %s: %w", p.spec.Name, err)
	}
	qp, err := sidecar.StartQueueProxy(ctx, sidecar.SidecarOptions{
		Binary: k.qpBin, NetNS: p.ns, Env: k.qpEnv, StartTimeout: 30 * time.Second,
		LogPath: filepath.Join(k.dir, "logs", fmt.Sprintf("%s-qp-%d.log", p.spec.Name, p.starts)),
	})
	if err != nil {
		fn.Stop(time.Second)
		return fmt.Errorf("pod %s: %w", p.spec.Name, err)
	}
	client := p.ns.HTTPClient(2 * time.Second)
	deadline := time.Now().Add(30 * time.Second)
	for {
		err = sidecar.Probe(ctx, client, qp.Addr)
		if err == nil {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			qp.Stop(0)
			fn.Stop(time.Second)
			return fmt.Errorf("pod %s: queue-proxy not ready: %w", p.spec.Name, err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	p.fn, p.qp = fn, qp
	return nil
}

// scaleToZero stops every pod's processes (the namespaces stay: the node's
// network is not part of a cold start here).
func (k *knativePath) scaleToZero() {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range k.pods {
		k.stopPod(p)
	}
}

func (k *knativePath) stopPod(p *pod) {
	// Keep the CPU the processes used: once they exit /proc forgets it.
	for class, x := range map[string]*sidecar.Process{"queue-proxy": p.qp, "functions": p.fn} {
		if x != nil {
			if st, err := benchutil.Proc.Stat(x.PID); err == nil {
				k.retired[class] += st.CPUTicks()
			}
		}
	}
	if p.qp != nil {
		// queue-proxy drains for 30s on SIGTERM; a pod being scaled
		// down here is idle, so 200ms is plenty.
		if err := p.qp.Stop(200 * time.Millisecond); err != nil {
			k.problems = append(k.problems, "queue-proxy "+p.spec.Name+": "+err.Error())
		}
		p.qp = nil
	}
	if p.fn != nil {
		if err := p.fn.Stop(5 * time.Second); err != nil {
			k.problems = append(k.problems, "function "+p.spec.Name+": "+err.Error())
		}
		p.fn = nil
	}
}

// running reports whether every pod is up.
func (k *knativePath) running() bool {
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range k.pods {
		if p.fn == nil || p.fn.Exited() || p.qp == nil || p.qp.Exited() {
			return false
		}
	}
	return true
}

// alive returns an error if a running pod's process or nginx died.
func (k *knativePath) alive() error {
	select {
	case <-k.ngDone:
		return fmt.Errorf("nginx exited: %v", k.ngErr)
	default:
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	for _, p := range k.pods {
		for _, x := range []*sidecar.Process{p.fn, p.qp} {
			if x != nil && x.Exited() {
				return fmt.Errorf("pod %s: %s exited: %v\n%s", p.spec.Name, x.Name, x.WaitErr(), x.LogTail(10))
			}
		}
	}
	return nil
}

// groups: nginx, the queue-proxies, the functions.
func (k *knativePath) groups() []Group {
	k.mu.Lock()
	defer k.mu.Unlock()
	var qps, fns []int
	for _, p := range k.pods {
		if p.qp != nil {
			qps = append(qps, p.qp.PID)
		}
		if p.fn != nil {
			fns = append(fns, p.fn.PID)
		}
	}
	g := []Group{{Class: "queue-proxy", PIDs: qps, Retired: k.retired["queue-proxy"]}, {Class: "functions", PIDs: fns, Retired: k.retired["functions"]}}
	if k.nginx != nil {
		g = append(g, Group{Class: "nginx", PIDs: []int{k.nginx.Process.Pid}})
	}
	return g
}

// stop tears everything down and records problems in f (nil: discard).
func (k *knativePath) stop(f *File) {
	k.scaleToZero()
	if k.nginx != nil {
		select {
		case <-k.ngDone:
			k.problems = append(k.problems, fmt.Sprintf("nginx had exited: %v", k.ngErr))
		default:
			k.nginx.Process.Signal(syscall.SIGQUIT)
			select {
			case <-k.ngDone:
			case <-time.After(5 * time.Second):
				syscall.Kill(-k.nginx.Process.Pid, syscall.SIGKILL)
				<-k.ngDone
				k.problems = append(k.problems, "nginx did not quit within 5s of SIGQUIT; killed")
			}
		}
	}
	for _, p := range k.pods {
		if p.ns == nil {
			continue
		}
		if err := p.ns.Delete(); err != nil {
			k.problems = append(k.problems, err.Error())
		} else if p.ns.Exists() {
			k.problems = append(k.problems, "leftover network namespace "+p.ns.Name)
		}
	}
	if b, err := os.ReadFile(filepath.Join(k.dir, "logs/error.log")); err == nil {
		var errs []string
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, "[error]") || strings.Contains(l, "[crit]") || strings.Contains(l, "[alert]") || strings.Contains(l, "[emerg]") {
				errs = append(errs, l)
			}
		}
		if len(errs) > 0 {
			k.problems = append(k.problems, fmt.Sprintf("nginx error log: %d error line(s); first: %s", len(errs), errs[0]))
		}
	}
	if f != nil {
		for _, p := range k.problems {
			f.Problems = append(f.Problems, SysKnative+": "+p)
		}
	}
}

// waitTCP waits until addr accepts a connection.
func waitTCP(ctx context.Context, addr string, timeout time.Duration, done <-chan struct{}) error {
	deadline := time.Now().Add(timeout)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("exited before listening on %s", addr)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not accepting after %v: %w", addr, timeout, err)
		}
		if err := sleepCtx(ctx, 20*time.Millisecond); err != nil {
			return err
		}
	}
}

var _ = strconv.Itoa
