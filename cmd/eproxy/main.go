// Command eproxy is EPROXY, SPRIGHT's replacement for Knative's
// queue-proxy: set it as config-deployment's queue-sidecar-image.
//
// It reads the environment Knative gives queue-proxy, answers Knative's
// probes on QUEUE_SERVING_PORT exactly as queue-proxy does, has the node
// agent splice traffic connections to the user container in the kernel
// (eBPF counts the requests), serves the autoscaler's Stat on :9090 and
// Prometheus text on :9091, /wait-for-drain on :8022, and drains on
// SIGTERM. For a revision that is a chain member it also runs the function
// shim that joins the user container to the chain.
package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"knative.dev/serving/pkg/queue/readiness"

	"github.com/spright-dev/spright/pkg/eproxy"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "eproxy:", err)
		os.Exit(1)
	}
}

func run() error {
	cfg, err := eproxy.ConfigFromEnv()
	if err != nil {
		return err
	}
	zcfg := zap.NewProductionConfig()
	if cfg.ServingLoggingLevel == "debug" {
		zcfg.Level = zap.NewAtomicLevelAt(zap.DebugLevel)
	}
	log, err := zcfg.Build()
	if err != nil {
		return err
	}
	log = log.With(zap.String("pod", cfg.ServingPod), zap.String("revision", cfg.ServingRevision))
	start := time.Now()
	userAddr := net.JoinHostPort("127.0.0.1", cfg.UserPort)

	probe, err := readinessProbe(cfg)
	if err != nil {
		return err
	}
	srv := eproxy.NewServer(userAddr, nil, probe.ProbeContainer, time.Duration(cfg.DrainQuietSeconds)*time.Second, cfg.ContainerConcurrency, log)
	srv.ConnBuffer = cfg.ProxyBufferBytes

	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	bind := func(port string) string { return net.JoinHostPort(cfg.BindAddress, port) }
	traffic, err := net.Listen("tcp", bind(cfg.QueueServingPort))
	if err != nil {
		return err
	}
	// The listener exists before the agent hears of the pod: steering
	// names the pod's network namespace and traffic port by it.
	agent := newAgentState(cfg, start, srv, log, userAddr, ctx)
	agent.traffic = traffic.(*net.TCPListener)
	agent.register() // first try now: most pods find their agent at once
	go agent.maintain(ctx)
	defer agent.close()
	go srv.Serve(traffic)

	statMux := http.NewServeMux()
	statMux.Handle("/", eproxy.StatHandler(agent))
	promMux := http.NewServeMux()
	promMux.Handle("/metrics", eproxy.PrometheusHandler(cfg.ServingNamespace, cfg.ServingRevision, cfg.ServingPod, agent.Counters))
	adminMux := http.NewServeMux()
	adminMux.HandleFunc("/wait-for-drain", func(w http.ResponseWriter, _ *http.Request) {
		// As queue-proxy: the user container's preStop drains, and if no
		// SIGTERM follows (it was only restarted) probes recover.
		go func() {
			select {
			case <-ctx.Done():
			case <-time.After(time.Second):
				srv.Drainer().Reset()
			}
		}()
		srv.Drainer().Drain()
		w.WriteHeader(http.StatusOK)
	})
	servers := []*http.Server{}
	for port, h := range map[string]http.Handler{cfg.MetricsPort: statMux, cfg.PromPort: promMux, cfg.AdminPort: adminMux} {
		l, err := net.Listen("tcp", bind(port))
		if err != nil {
			return err
		}
		s := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		servers = append(servers, s)
		go s.Serve(l)
	}

	log.Info("eproxy ready", zap.String("traffic", traffic.Addr().String()))

	<-ctx.Done()
	log.Info("SIGTERM: failing probes and draining")
	agent.stopSteering() // new connections to the drainer, steered ones finish
	dctx, cancel := context.WithTimeout(context.Background(), time.Duration(cfg.DrainTimeoutSeconds)*time.Second)
	defer cancel()
	drained := make(chan struct{})
	go func() { srv.Drainer().Drain(); close(drained) }()
	waitIdle(dctx, agent, log)
	select {
	case <-drained:
	case <-dctx.Done():
	}
	traffic.Close()
	srv.Close()
	for _, s := range servers {
		s.Close()
	}
	return nil
}

// waitIdle returns when the kernel counts no request in flight for this
// pod, or when ctx ends. It polls only while draining.
func waitIdle(ctx context.Context, agent *agentState, log *zap.Logger) {
	for {
		m, err := agent.Counters()
		if err != nil || m.Inflight <= 0 {
			return
		}
		select {
		case <-ctx.Done():
			log.Warn("drain timeout with requests in flight", zap.Int64("inflight", m.Inflight))
			return
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// readinessProbe is the user container's readiness probe from
// SERVING_READINESS_PROBE, run only when Knative's probe asks (no periodic
// probing of our own); without one, a TCP connect to the user port.
func readinessProbe(cfg eproxy.Config) (*readiness.Probe, error) {
	var probes []*corev1.Probe
	if cfg.ServingReadinessProbe != "" {
		var err error
		if probes, err = readiness.DecodeProbes(cfg.ServingReadinessProbe, cfg.EnableMultiContainerProbes); err != nil {
			return nil, fmt.Errorf("SERVING_READINESS_PROBE: %w", err)
		}
	}
	if len(probes) == 0 {
		probes = []*corev1.Probe{{ProbeHandler: corev1.ProbeHandler{TCPSocket: &corev1.TCPSocketAction{
			Host: "127.0.0.1", Port: intstr.Parse(cfg.UserPort)}}}}
	}
	if cfg.EnableHTTP2AutoDetection {
		return readiness.NewProbeWithHTTP2AutoDetection(probes), nil
	}
	return readiness.NewProbe(probes), nil
}
