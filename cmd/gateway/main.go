// Command gateway is the SPRIGHT node agent: one per node (the DaemonSet in
// config/), owning the eBPF datapath and the control socket.
//
// It serves the chains given with -f (chain.yaml files; their functions
// register over the control socket themselves — on Kubernetes, EPROXY's
// shim or SDK functions in pods), accepts EPROXY sidecars of plain
// revisions (splicing their connections in the kernel), exposes metrics,
// and optionally pushes pod Stats to Knative's autoscaler like the
// activator. `spright run` is the all-in-one standalone variant.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/tools/clientcmd"
	"knative.dev/pkg/websocket"

	"github.com/spright-dev/spright/bpf/redirect"
	"github.com/spright-dev/spright/pkg/chainwatch"
	"github.com/spright-dev/spright/pkg/control"
	"github.com/spright-dev/spright/pkg/eproxy"
	"github.com/spright-dev/spright/pkg/gateway"
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
	listen := flag.String("listen", "127.0.0.1:8080", "HTTP address for chain traffic (Host header picks the chain; one chain: all traffic)")
	admin := flag.String("admin-listen", "127.0.0.1:9091", "address for /metrics (empty: off)")
	statURL := flag.String("stat-push-url", "", "autoscaler stat server to push pod Stats to, e.g. ws://autoscaler.knative-serving.svc.cluster.local:8080 (empty: off)")
	kube := flag.Bool("kube", false, "Kubernetes mode: serve the cluster's Chain objects (published by the SPRIGHT controller) instead of -f files")
	kubeconfig := flag.String("kubeconfig", "", "kubeconfig for --kube (empty: in-cluster config)")
	hold := flag.Duration("hold-timeout", 30*time.Second, "--kube: how long a request waits for a chain member with no ready instance (the gateway acts as the activator)")
	slots := flag.Uint("pool-slots", 1024, "--kube: slots per chain pool")
	slotSize := flag.Uint("slot-size", 64<<10, "--kube: bytes per slot (largest request or response)")
	redirectMode := flag.String("redirect", "off", "eBPF forwarding between this node's pods and to the NIC: off, tc or xdp (off keeps iptables/nftables in the path)")
	redirectVeths := flag.String("redirect-veths", "veth*", "with --redirect: host-side pod veths to attach to (comma-separated globs, rescanned every 2s)")
	redirectNIC := flag.String("redirect-nic", "", "with --redirect: the node's uplink, for traffic to and from other nodes (empty: none)")
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
	g, err := gateway.New(gateway.Config{ControlSocket: *ctl, PinDir: *pin, Logger: log, Name: name})
	if err != nil {
		return err
	}
	byHost := map[string]*gateway.Chain{}
	var only *gateway.Chain
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
	if mode != redirect.ModeOff {
		fwd, err := startRedirect(ctx, log, mode, *redirectNIC, strings.Split(*redirectVeths, ","))
		if err != nil {
			return err
		}
		defer fwd.Close()
	}

	var handler http.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
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
		handler = w.Handler()
	}
	srv := &http.Server{Addr: *listen, Handler: handler, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.Error("chain listener", zap.Error(err))
			stop()
		}
	}()
	if *admin != "" {
		mux := http.NewServeMux()
		mux.Handle("/metrics", g.MetricsHandler())
		a := &http.Server{Addr: *admin, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		go a.ListenAndServe()
		defer a.Close()
	}
	log.Info("gateway ready", zap.String("control", *ctl), zap.String("listen", *listen), zap.Int("chains", len(chains)))
	<-ctx.Done()
	sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	srv.Shutdown(sctx)
	// Pins stay: a restarted gateway picks the datapath up again.
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
