// Command gateway is the SPRIGHT node agent: one per node (the DaemonSet in
// config/), owning the eBPF datapath and the control socket.
//
// It serves the chains given with -f (chain.yaml files; their functions
// register over the control socket themselves — on Kubernetes, EPROXY's
// shim or SDK functions in pods), accepts EPROXY sidecars of plain
// revisions (splicing their connections in the kernel), exposes metrics,
// and optionally pushes pod Stats to Knative's autoscaler like the
// activator. `spright run` is the all-in-one standalone variant.
//
// With --kube it serves the cluster's Chains (pkg/chainwatch) and, unless
// --kingress=false, is Knative's networking layer for the ingress class
// spright.ingress.networking.knative.dev (pkg/ingresswatch,
// pkg/gateway/ingress): --listen is the external listener (ExternalIP
// rules), --listen-local the cluster-local one (every rule), --listen-tls
// the external one over TLS (the certificates of the KIngresses' spec.tls,
// by SNI). Hosts no KIngress serves still reach the chains as before.
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	netclientset "knative.dev/networking/pkg/client/clientset/versioned"
	"knative.dev/pkg/websocket"

	"github.com/spright-dev/spright/bpf/redirect"
	"github.com/spright-dev/spright/pkg/chainwatch"
	"github.com/spright-dev/spright/pkg/control"
	"github.com/spright-dev/spright/pkg/eproxy"
	"github.com/spright-dev/spright/pkg/gateway"
	gwingress "github.com/spright-dev/spright/pkg/gateway/ingress"
	"github.com/spright-dev/spright/pkg/ingressconfig"
	"github.com/spright-dev/spright/pkg/ingresswatch"
	"github.com/spright-dev/spright/pkg/peerwatch"
	"github.com/spright-dev/spright/pkg/shm"
	"github.com/spright-dev/spright/pkg/standalone"
)

type files []string

func (f *files) String() string     { return strings.Join(*f, ",") }
func (f *files) Set(v string) error { *f = append(*f, v); return nil }

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "gateway:", err)
		os.Exit(1)
	}
}

func run() error {
	var chains files
	flag.Var(&chains, "f", "chain file to serve (repeatable)")
	ctl := flag.String("control", control.DefaultSocket, "control socket for functions and EPROXY sidecars")
	pin := flag.String("pin-dir", "/sys/fs/bpf/spright", "bpffs directory for the eBPF maps (kept across restarts)")
	listen := flag.String("listen", "127.0.0.1:8080", "HTTP address for chain traffic (Host header picks the chain; one chain: all traffic); with --kube, also the external listener of the KIngresses' ExternalIP rules")
	listenLocal := flag.String("listen-local", "", "--kube: the cluster-local listener, serving every KIngress rule (ClusterLocal and ExternalIP) and the chains (empty: off)")
	listenTLS := flag.String("listen-tls", "", "--kube --kingress: the external listener over TLS (HTTP/2 and HTTP/1.1), presenting the certificates of the KIngresses' spec.tls by SNI (Secrets labeled "+gwingress.SecretLabel+"; empty: off)")
	kingress := flag.Bool("kingress", true, "--kube: serve the KIngresses of class "+ingressconfig.Class+" (Knative's networking layer; needs the RBAC of config/200-rbac.yaml)")
	readHeaderTimeout := flag.Duration("read-header-timeout", gwingress.DefaultLimits().ReadHeaderTimeout, "listeners: close a connection whose request headers take longer (slowloris)")
	idleTimeout := flag.Duration("idle-timeout", gwingress.DefaultLimits().IdleTimeout, "listeners: close keep-alive connections idle this long")
	maxHeaderBytes := flag.Int("max-header-bytes", gwingress.DefaultLimits().MaxHeaderBytes, "listeners: largest request header (431 beyond)")
	maxStreams := flag.Int("max-concurrent-streams", gwingress.DefaultLimits().MaxConcurrentStreams, "listeners: HTTP/2 (h2c) streams per connection")
	admin := flag.String("admin-listen", "127.0.0.1:9091", "address for /metrics (empty: off)")
	drain := flag.Duration("drain-timeout", 0, "on SIGTERM, how long in-flight requests may take to finish (default: the longest chain timeout + 1s)")
	memberWait := flag.Duration("member-wait", 10*time.Second, "after a restart (pools kept), how long to wait for the chains' members to register again before taking HTTP traffic")
	statURL := flag.String("stat-push-url", "", "autoscaler stat server to push pod Stats to, e.g. ws://autoscaler.knative-serving.svc.cluster.local:8080 (empty: off)")
	kube := flag.Bool("kube", false, "Kubernetes mode: serve the cluster's Chain objects (published by the SPRIGHT controller) instead of -f files")
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig for --kube (empty: in-cluster config)")
	hold := flag.Duration("hold-timeout", 30*time.Second, "--kube: how long a request waits for a chain member with no ready instance (the gateway acts as the activator)")
	slots := flag.Uint("pool-slots", 1024, "--kube: slots per chain pool")
	slotSize := flag.Uint("slot-size", 64<<10, "--kube: bytes per slot (largest request or response)")
	redirectMode := flag.String("redirect", "off", "eBPF forwarding between this node's pods and to the NIC: off, tc or xdp (off keeps iptables/nftables in the path)")
	redirectVeths := flag.String("redirect-veths", "veth*", "with --redirect: host-side pod veths to attach to (comma-separated globs, rescanned every 2s)")
	redirectNIC := flag.String("redirect-nic", "", "with --redirect: the node's uplink, for traffic to and from other nodes (empty: none)")
	peerListen := flag.String("peer-listen", "", "--kube: address where the other nodes' gateways connect for chains that span nodes, e.g. :9095 (empty: this node's chains stay on it)")
	peerSecret := flag.String("peer-key-secret", "spright-peer-key", "--kube --peer-listen: Secret (in the gateway's namespace) holding the cluster's peer key; created with random bytes if absent")
	peerSelector := flag.String("peer-selector", "app=spright-gateway", "--kube --peer-listen: label selector of the gateway pods (in the gateway's namespace) that are peers")
	flag.Parse()
	mode, err := redirect.ParseMode(*redirectMode)
	if err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root (eBPF, bpffs)")
	}
	log, err := zap.NewProduction()
	if err != nil {
		return err
	}
	defer log.Sync()
	if *kube && len(chains) > 0 {
		return errors.New("--kube and -f are exclusive: in Kubernetes mode chains come from the cluster")
	}
	name := os.Getenv("POD_NAME")
	if name == "" {
		name = "spright-gateway-" + os.Getenv("NODE_NAME")
	}
	// Chains across nodes (--kube --peer-listen): the node's name and the
	// cluster's peer key, before the gateway exists.
	var (
		peerKey  []byte
		peerKube kubernetes.Interface
		peerNS   = os.Getenv("POD_NAMESPACE")
		nodeName = os.Getenv("NODE_NAME")
	)
	if *peerListen != "" {
		if !*kube {
			return errors.New("--peer-listen needs --kube (standalone chains across nodes: spright run's nodes in chain.yaml)")
		}
		if nodeName == "" {
			return errors.New("--peer-listen: NODE_NAME is not set (the DaemonSet sets it from spec.nodeName)")
		}
		if peerNS == "" {
			peerNS = "spright-system"
		}
		cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
		if err != nil {
			return fmt.Errorf("--peer-listen: %w", err)
		}
		if peerKube, err = kubernetes.NewForConfig(cfg); err != nil {
			return fmt.Errorf("--peer-listen: %w", err)
		}
		kctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		peerKey, err = peerwatch.EnsureKey(kctx, peerKube, peerNS, *peerSecret)
		cancel()
		if err != nil {
			return fmt.Errorf("--peer-listen: %w", err)
		}
	}
	g, err := gateway.New(gateway.Config{ControlSocket: *ctl, PinDir: *pin, Logger: log, Name: name, Node: nodeName, PeerKey: peerKey})
	if err != nil {
		return err
	}
	byHost := map[string]*gateway.Chain{}
	var only *gateway.Chain
	var longest time.Duration
	members := map[*gateway.Chain][]string{}
	for i, f := range chains {
		cf, err := standalone.Load(f)
		if err != nil {
			return err
		}
		cc, err := cf.GatewayConfig()
		if err != nil {
			return err
		}
		if cc.ID == 1 && i > 0 {
			cc.ID = uint16(i + 1) // chain files rarely set ids; keep them distinct
		}
		c, err := g.AddChain(cc)
		if err != nil {
			return err
		}
		byHost[cf.Name] = c
		only = c
		longest = max(longest, cc.Timeout)
		for _, f := range cf.Functions {
			if f.Instances == nil || *f.Instances > 0 {
				members[c] = append(members[c], f.Name)
			}
		}
	}
	if len(chains) != 1 {
		only = nil
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if *statURL != "" {
		if err := gateway.ValidStatURL(*statURL); err != nil {
			return err
		}
		conn := websocket.NewDurableSendingConnection(*statURL, log.Sugar())
		defer conn.Shutdown()
		r := eproxy.NewReporter(conn, log)
		g.EnableStatPush(r)
		go r.Run(ctx)
	}
	if err := g.Start(); err != nil {
		return err
	}
	defer func() { g.Close() }()
	if peerKey != nil {
		pl, err := net.Listen("tcp", *peerListen)
		if err != nil {
			return fmt.Errorf("--peer-listen: %w", err)
		}
		_, port, _ := net.SplitHostPort(pl.Addr().String())
		portNum, _ := strconv.Atoi(port)
		go func() {
			if err := g.ServePeers(pl); err != nil {
				log.Error("peer listener", zap.Error(err))
			}
		}()
		go func() {
			err := peerwatch.Run(ctx, peerKube, g, peerwatch.Options{Namespace: peerNS, Selector: *peerSelector, Port: portNum, Self: nodeName}, log.Named("peers"))
			if err != nil {
				log.Error("peer watcher", zap.Error(err))
			}
		}()
		log.Info("chains may span nodes", zap.String("node", nodeName), zap.String("peer_listen", pl.Addr().String()))
	}
	if mode != redirect.ModeOff {
		fwd, err := startRedirect(ctx, log, mode, *redirectNIC, strings.Split(*redirectVeths, ","))
		if err != nil {
			return err
		}
		defer fwd.Close()
	}

	// A restarted gateway kept the pools: the members are registering again.
	// Take traffic once they are back (bounded), not with 503s meanwhile.
	for c, fns := range members {
		if !c.Reopened() {
			continue
		}
		wctx, cancel := context.WithTimeout(ctx, *memberWait)
		start := time.Now()
		if err := c.WaitMembers(wctx, fns); err != nil {
			log.Warn("serving before every member is back", zap.Error(err))
		} else {
			log.Info("members registered again after the restart", zap.String("chain", c.Name()), zap.Duration("after", time.Since(start)))
		}
		cancel()
	}

	// route picks the chain of a request: by host among the -f chains, or
	// from the cluster's Chains with --kube.
	var route http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c := only
		if c == nil {
			host, _, err := net.SplitHostPort(r.Host)
			if err != nil {
				host = r.Host
			}
			c = byHost[strings.SplitN(host, ".", 2)[0]]
		}
		if c == nil {
			http.Error(w, fmt.Sprintf("no chain for host %q", r.Host), http.StatusNotFound)
			return
		}
		g.Handler(c).ServeHTTP(w, r)
	})
	// The listeners: --listen (external) and --listen-local (cluster-local).
	// Without KIngresses both serve the chains alone.
	routes := map[ingressconfig.Listener]http.Handler{ingressconfig.External: route, ingressconfig.Local: route}
	var tlsConfig *tls.Config // the KIngresses' certificates (--listen-tls)
	if *kube {
		cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
		if err != nil {
			return fmt.Errorf("--kube: %w", err)
		}
		client, err := dynamic.NewForConfig(cfg)
		if err != nil {
			return fmt.Errorf("--kube: %w", err)
		}
		w := chainwatch.New(g, chainwatch.Options{
			Pool:        shm.Config{Slots: uint32(*slots), SlotSize: uint32(*slotSize)},
			HoldTimeout: *hold,
		}, log)
		go func() {
			if err := w.Run(ctx, client); err != nil {
				log.Error("chain watcher", zap.Error(err))
				stop()
			}
		}()
		routes[ingressconfig.External], routes[ingressconfig.Local] = w.Handler(), w.Handler()
		if *kingress {
			kc, err := kubernetes.NewForConfig(cfg)
			if err != nil {
				return fmt.Errorf("--kube: %w", err)
			}
			nc, err := netclientset.NewForConfig(cfg)
			if err != nil {
				return fmt.Errorf("--kube: %w", err)
			}
			// A KIngress host is served by the KIngress (a chain's own
			// KIngress enters the chain in-process); any other host goes
			// to the chain lookup exactly as without KIngresses.
			chainOf := w.ChainHandler
			iw := ingresswatch.New(nc, kc, ingresswatch.Options{Chains: chainOf, TLS: *listenTLS != ""}, log)
			tlsConfig = iw.TLSConfig()
			go func() {
				if err := iw.Run(ctx); err != nil {
					log.Error("KIngress watcher", zap.Error(err))
					stop()
				}
			}()
			routes[ingressconfig.External], routes[ingressconfig.Local] = iw.Handler(ingressconfig.External), iw.Handler(ingressconfig.Local)
		}
	}
	var draining atomic.Bool
	var open atomic.Int64 // client connections, all listeners
	lim := gwingress.Limits{ReadHeaderTimeout: *readHeaderTimeout, IdleTimeout: *idleTimeout,
		MaxHeaderBytes: *maxHeaderBytes, MaxConcurrentStreams: *maxStreams}
	type listener struct {
		ln  net.Listener
		srv *http.Server
	}
	var listeners []listener
	type spec struct {
		name  string
		addr  string
		route http.Handler
		tls   *tls.Config
	}
	specs := []spec{
		{ingressconfig.External.String(), *listen, routes[ingressconfig.External], nil},
		{ingressconfig.Local.String(), *listenLocal, routes[ingressconfig.Local], nil},
	}
	if *listenTLS != "" {
		if tlsConfig == nil {
			return errors.New("--listen-tls needs --kube and --kingress (the certificates are the KIngresses')")
		}
		// The external listener's routes (a request over TLS is never
		// redirected to https).
		specs = append(specs, spec{ingressconfig.External.String() + " TLS", *listenTLS, routes[ingressconfig.External], tlsConfig})
	}
	for _, sp := range specs {
		if sp.addr == "" {
			continue
		}
		route := sp.route
		handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if draining.Load() {
				// Tell keep-alive clients to go: the connection closes after
				// this response, never under a request being written to it.
				w.Header().Set("Connection", "close")
			}
			route.ServeHTTP(w, r)
		})
		srv := gwingress.NewServer(handler, lim, log)
		srv.ConnState = func(_ net.Conn, st http.ConnState) {
			switch st {
			case http.StateNew:
				open.Add(1)
			case http.StateClosed, http.StateHijacked:
				open.Add(-1)
			}
		}
		ln, err := net.Listen("tcp", sp.addr)
		if err != nil {
			return fmt.Errorf("listen %s: %w", sp.addr, err)
		}
		listeners = append(listeners, listener{ln, srv})
		go func() {
			var err error
			if sp.tls != nil {
				srv.TLSConfig = sp.tls
				err = srv.ServeTLS(ln, "", "")
			} else {
				err = srv.Serve(ln)
			}
			if err != nil && !errors.Is(err, http.ErrServerClosed) && !draining.Load() {
				log.Error("listener", zap.String("listener", sp.name), zap.Error(err))
				stop()
			}
		}()
	}
	if *admin != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", g.MetricsHandler())
		a := &http.Server{Addr: *admin, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go a.ListenAndServe()
		defer a.Close()
	}
	log.Info("gateway ready", zap.String("control", *ctl), zap.String("listen", *listen), zap.String("listen_local", *listenLocal), zap.String("listen_tls", *listenTLS),
		zap.Bool("kingress", *kube && *kingress), zap.Int("chains", len(chains)))
	<-ctx.Done()
	// Graceful drain: stop accepting, let every request in flight finish
	// (each is bounded by its chain's timeout), then close the control
	// socket. Pins and pools stay: a restarted gateway picks them up again
	// and the members register with it.
	if *drain == 0 {
		*drain = longest + time.Second
	}
	log.Info("draining", zap.Duration("timeout", *drain))
	start := time.Now()
	sctx, cancel := context.WithTimeout(context.Background(), *drain)
	defer cancel()
	// First refuse new connections and let the open ones end on their
	// own: each gets "Connection: close" on its next response (HTTP/2
	// connections get GOAWAY from Shutdown). Closing an idle keep-alive
	// connection could cut a request the client is writing at that moment.
	// Connections that stay idle are closed after a grace. (Connections
	// still in the kernel's accept queue when the listener closes are
	// reset: the one loss a graceful stop can cause.)
	draining.Store(true)
	for _, l := range listeners {
		l.ln.Close()
	}
	grace := time.NewTimer(min(*drain, 2*time.Second))
	for open.Load() > 0 {
		select {
		case <-grace.C:
		case <-time.After(10 * time.Millisecond):
			continue
		}
		break
	}
	grace.Stop()
	log.Info("connections closed by their clients", zap.Int64("still_open", open.Load()), zap.Duration("after", time.Since(start)))
	var wg sync.WaitGroup
	for _, l := range listeners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := l.srv.Shutdown(sctx); err != nil {
				log.Warn("drain incomplete: closing with requests in flight", zap.Error(err))
			}
		}()
	}
	wg.Wait()
	if sctx.Err() == nil {
		log.Info("drained", zap.Duration("after", time.Since(start)))
	}
	return nil
}

// startRedirect loads the XDP/TC forwarder, attaches it to the uplink and
// to the pods' veths, and keeps following the veths until ctx ends. The
// attachments go away with the process (or Close).
func startRedirect(ctx context.Context, log *zap.Logger, mode redirect.Mode, nic string, veths []string) (*redirect.Forwarder, error) {
	fwd, err := redirect.New(mode)
	if err != nil {
		return nil, err
	}
	if nic != "" {
		if err := fwd.AddNIC(nic, mode == redirect.ModeXDP); err != nil {
			fwd.Close()
			return nil, err
		}
	}
	sync := func() {
		added, removed, err := fwd.SyncVeths(veths)
		if err != nil {
			log.Warn("redirect: attaching to pod veths", zap.Error(err))
		}
		if len(added)+len(removed) > 0 {
			log.Info("redirect: pod veths", zap.Strings("added", added), zap.Strings("removed", removed))
		}
	}
	sync()
	go func() {
		t := time.NewTicker(2 * time.Second)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				sync()
			}
		}
	}()
	log.Info("redirect on", zap.String("mode", string(mode)), zap.String("nic", nic), zap.Strings("veths", veths))
	return fwd, nil
}
