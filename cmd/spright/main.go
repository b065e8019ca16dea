// Command spright runs SPRIGHT chains without a cluster.
//
//	spright run -f config/samples/hello/chain.yaml [--listen 127.0.0.1:8080]
//	spright function --chain hello --function upper --behavior upper
//
// `run` is standalone mode (DESIGN §7): gateway, eBPF datapath and one
// process per function instance, each in its own network namespace,
// restarted when it dies; signals.go says what each signal does to it.
// `function` is the sample function binary those processes run.
// `bench` runs the benchmark suite from the source tree (test/bench).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/spright-dev/spright/pkg/function"
	"github.com/spright-dev/spright/pkg/samples"
	"github.com/spright-dev/spright/pkg/standalone"
)

const usage = `spright: serverless function chains on shared memory and eBPF

Usage:
  spright run -f CHAIN.yaml [--listen ADDR] [--admin-listen ADDR] [--pin-dir DIR] [--no-netns]
              [--mqtt-listen ADDR] [--coap-listen ADDR]
              [--redirect off|tc|xdp] [--gateway-netns] [--client-netns N] [--node NAME]
  spright function --chain NAME --function NAME [--behavior B] [--service-time D] [--control SOCK]
  spright behaviors
  spright bench [--quick] [SCENARIO...]   (from the source tree: go run ./test/bench)

Run as root on Linux >= 5.15 with BTF. spright run restarts function processes
that die; SIGHUP re-reads the -f file and applies what changed while serving
(so does PUT /chain on the admin listener; GET /chain shows the file in force);
SIGINT, SIGTERM and SIGQUIT stop it and clean up. A chain.yaml with nodes:
is split across nodes: run it on each with --node NAME.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "run":
		err = cmdRun(os.Args[2:])
	case "function":
		err = cmdFunction(os.Args[2:])
	case "bench":
		err = cmdBench(os.Args[2:])
	case "behaviors":
		for _, n := range samples.Names() {
			fmt.Println(n)
		}
	case "-h", "--help", "help":
		fmt.Print(usage)
	default:
		fmt.Fprintf(os.Stderr, "spright: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "spright:", err)
		os.Exit(1)
	}
}

func logger(debug bool) *zap.Logger {
	cfg := zap.NewProductionConfig()
	cfg.Encoding = "console"
	cfg.EncoderConfig.TimeKey = "" // the journal / terminal adds its own
	cfg.DisableStacktrace = true
	if debug {
		cfg.Level = zap.NewAtomicLevelAt(zap.DebugLevel)
	}
	l, err := cfg.Build()
	if err != nil {
		return zap.NewExample()
	}
	return l
}

func cmdRun(args []string) error {
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	file := fs.String("f", "", "chain file (chain.yaml)")
	listen := fs.String("listen", "", "HTTP listen address (default: the file's, else 127.0.0.1:8080)")
	admin := fs.String("admin-listen", "127.0.0.1:9091", "address for /metrics, /adapters and /chain (GET; PUT reloads) (empty: off)")
	pin := fs.String("pin-dir", "", "bpffs directory for the eBPF maps (default /sys/fs/bpf/spright/<chain>, or <chain>@<node> with --node)")
	ctl := fs.String("control", "", "control socket path (default /run/spright/<chain>-<pid>.sock)")
	noNetns := fs.Bool("no-netns", false, "run functions in the host network namespace")
	mqttListen := fs.String("mqtt-listen", "", "serve MQTT (3.1.1 and 5) on this TCP address and attach the MQTT adapter (default: chain.yaml's mqtt.listen)")
	coapListen := fs.String("coap-listen", "", "serve CoAP on this UDP address and attach the CoAP adapter (default: chain.yaml's coap.listen)")
	stats := fs.String("stats-dir", "", "directory where functions write their counters on exit")
	redirectMode := fs.String("redirect", "", "eBPF forwarding between the chain's network namespaces: off, tc or xdp (default: chain.yaml's redirect, else off)")
	gwNetns := fs.Bool("gateway-netns", false, "serve HTTP from a network namespace of its own, reached across veths (default: chain.yaml's gatewayNetns)")
	clientNetns := fs.Int("client-netns", 0, "create this many client network namespaces joined by veth, for load generators (default: chain.yaml's clientNetns)")
	node := fs.String("node", "", "the node of a split chain (chain.yaml's nodes) this is: runs its functions and links to the other nodes")
	debug := fs.Bool("debug", false, "debug logging")
	fs.Parse(args)
	if *file == "" {
		return fmt.Errorf("run: -f CHAIN.yaml is required")
	}
	if os.Geteuid() != 0 {
		return fmt.Errorf("run: needs root (eBPF, network namespaces, hugepages)")
	}
	cf, err := standalone.Load(*file)
	if err != nil {
		return err
	}
	sigs := watchSignals()
	defer signal.Stop(sigs)
	log := logger(*debug)
	defer log.Sync()
	r, err := standalone.Start(cf, standalone.Options{Listen: *listen, AdminListen: *admin, PinDir: *pin, ControlSocket: *ctl,
		NoNetns: *noNetns, StatsDir: *stats, Logger: log, MQTTListen: *mqttListen, CoAPListen: *coapListen,
		Redirect: *redirectMode, GatewayNetns: *gwNetns, ClientNetns: *clientNetns, Node: *node})
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "spright: chain %q (%s) serving on http://%s — try: curl -d abc http://%s/\n", cf.Name, cf.Mode, r.Addr(), r.Addr())
	if m := r.RedirectMode(); m != "off" {
		fmt.Fprintf(os.Stderr, "spright: eBPF redirect %s between the chain's network namespaces\n", m)
	}
	if a := r.PeerAddr(); a != "" {
		fmt.Fprintf(os.Stderr, "spright: node %q of the chain; peers link to %s\n", r.Node(), a)
	}
	if ns := r.GatewayNetns(); ns != "" {
		fmt.Fprintf(os.Stderr, "spright: gateway in netns %s\n", ns)
	}
	for _, ns := range r.ClientNetns() {
		fmt.Fprintf(os.Stderr, "spright: client netns %s — try: ip netns exec %s curl -d abc http://%s/\n", ns, ns, r.Addr())
	}
	if a := r.MQTTAddr(); a != "" {
		fmt.Fprintf(os.Stderr, "spright: MQTT on %s\n", a)
	}
	if a := r.CoAPAddr(); a != "" {
		fmt.Fprintf(os.Stderr, "spright: CoAP on udp %s\n", a)
	}
	sig := serveUntilStopped(r, *file, sigs, log)
	fmt.Fprintf(os.Stderr, "spright: %v: stopping\n", sig)
	go ignoreWhileStopping(sigs, log)
	return r.Stop()
}

// FunctionStats is what `function --stats-file` writes on exit.
type FunctionStats struct {
	Handled   uint64 `json:"handled"`
	Forwarded uint64 `json:"forwarded"`
	Returned  uint64 `json:"returned"`
	Invalid   uint64 `json:"invalid"`
	Failed    uint64 `json:"failed"`
}

func cmdFunction(args []string) error {
	fs := flag.NewFlagSet("function", flag.ExitOnError)
	opts := function.OptionsFromEnv()
	fs.StringVar(&opts.Chain, "chain", opts.Chain, "chain name")
	fs.StringVar(&opts.Function, "function", opts.Function, "function name in the chain")
	fs.StringVar(&opts.ControlSocket, "control", opts.ControlSocket, "gateway control socket")
	fs.IntVar(&opts.Workers, "workers", 0, "concurrent handlers (default GOMAXPROCS)")
	behavior := fs.String("behavior", "", "built-in behavior (see `spright behaviors`; default: the function name)")
	st := fs.Duration("service-time", 0, "CPU time burned per message")
	statsFile := fs.String("stats-file", "", "write counters here on exit")
	health := fs.String("health-listen", "", "serve 200 on this address for readiness probes (default :$PORT when PORT is set: in a Knative pod, EPROXY's readiness probe dials the user port)")
	fs.Parse(args)
	knative := os.Getenv("PORT") != ""
	if *health == "" && knative {
		*health = ":" + os.Getenv("PORT")
	}
	if *behavior == "" {
		*behavior = opts.Function
	}
	h, err := samples.Lookup(*behavior, *st)
	if err != nil {
		return err
	}
	log := logger(false).With(zap.String("function", opts.Function))
	opts.Logger = log
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	stats := new(function.Stats)
	opts.Stats = stats
	if *health != "" {
		ln, err := net.Listen("tcp", *health)
		if err != nil {
			return fmt.Errorf("health listener: %w", err)
		}
		srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			io.WriteString(w, "ok")
		})}
		go srv.Serve(ln)
		defer srv.Close()
	}
	err = function.Run(ctx, opts, h)
	// In a pod the node gateway may not know the chain yet (the controller
	// publishes it after the members' Services exist), or may be
	// restarting: keep trying, as EPROXY does, instead of exiting into a
	// crash-loop back-off.
	for backoff := 500 * time.Millisecond; err != nil && knative && ctx.Err() == nil; backoff = min(2*backoff, 5*time.Second) {
		log.Warn("could not join the chain; retrying", zap.Error(err), zap.Duration("in", backoff))
		select {
		case <-ctx.Done():
		case <-time.After(backoff):
			err = function.Run(ctx, opts, h)
		}
	}
	if ctx.Err() != nil && knative {
		err = nil
	}
	if *statsFile != "" {
		s := FunctionStats{Handled: stats.Handled.Load(), Forwarded: stats.Forwarded.Load(),
			Returned: stats.Returned.Load(), Invalid: stats.Invalid.Load(), Failed: stats.Failed.Load()}
		b, _ := json.Marshal(s)
		if werr := os.WriteFile(*statsFile, b, 0o644); werr != nil && err == nil {
			err = werr
		}
	}
	return err
}
