package main

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"knative.dev/serving/pkg/autoscaler/metrics"

	"github.com/spright-dev/spright/bpf"
	"github.com/spright-dev/spright/pkg/eproxy"
	"github.com/spright-dev/spright/pkg/function"
)

// errNoAgent is what stats and counters say while no agent is registered.
var errNoAgent = errors.New("no eBPF stats: the node agent is unreachable")

// agentState is EPROXY's registration with the node agent, kept alive
// across agent restarts: when the agent's control connection ends, EPROXY
// registers again (with backoff) and switches to the new instance's
// counters and splicer. Meanwhile traffic is relayed in userspace and the
// stat endpoint answers 500 (the autoscaler keeps its last decision).
type agentState struct {
	cfg      eproxy.Config
	start    time.Time
	srv      *eproxy.Server
	log      *zap.Logger
	userAddr string
	ctx      context.Context
	traffic  *net.TCPListener

	mu        sync.RWMutex
	agent     *eproxy.AgentClient
	window    *eproxy.Window
	shimStart sync.Once
}

// register tries once; it reports whether an agent is registered now.
func (s *agentState) register() bool {
	a, err := eproxy.RegisterPod(s.cfg.ControlSocket, eproxy.PodIdentity{Namespace: s.cfg.ServingNamespace, Revision: s.cfg.ServingRevision, Pod: s.cfg.ServingPod})
	if err != nil {
		s.log.Warn("node agent unreachable: relaying in userspace without eBPF stats until it is back",
			zap.String("socket", s.cfg.ControlSocket), zap.Error(err), zap.String("hint", agentHint(err)))
		return false
	}
	s.mu.Lock()
	s.agent = a
	s.window = eproxy.NewWindow(s.cfg.ServingPod, s.start, a.OwnCounters, nil)
	s.window.Proxied = a.ProxiedCounters
	s.window.Probes = s.srv.Probes
	s.mu.Unlock()
	s.srv.SetSplicer(a)
	s.startSteering(a)
	s.log.Info("registered with the node agent", zap.Uint32("instance", a.Instance), zap.String("chain", a.Chain), zap.String("function", a.Function))
	if a.Chain != "" && s.cfg.Shim {
		s.shimStart.Do(func() { go s.runShim(a.Chain, a.Function) })
	}
	return true
}

// maintain re-registers whenever the agent goes away, until ctx ends.
func (s *agentState) maintain(ctx context.Context) {
	backoff := 50 * time.Millisecond
	for ctx.Err() == nil {
		s.mu.RLock()
		a := s.agent
		s.mu.RUnlock()
		if a != nil {
			a.WaitClosed() // parked in poll(2) until the agent hangs up
			if ctx.Err() != nil {
				return
			}
			s.log.Warn("node agent went away: registering again")
			s.srv.SetSplicer(nil)
			s.srv.SetSteering(nil, nil)
			s.mu.Lock()
			s.agent, s.window = nil, nil
			s.mu.Unlock()
			a.Close()
			backoff = 50 * time.Millisecond
		}
		if s.register() {
			continue
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

// runShim joins the chain with the HTTP shim (function.Run re-registers on
// its own when the gateway restarts).
func (s *agentState) runShim(chain, fn string) {
	err := function.Run(s.ctx, function.Options{ControlSocket: s.cfg.ControlSocket, Chain: chain, Function: fn, Logger: s.log},
		eproxy.Shim(s.userAddr, time.Duration(s.cfg.RevisionTimeoutSeconds)*time.Second))
	if err != nil && !errors.Is(err, context.Canceled) {
		s.log.Error("chain shim stopped", zap.Error(err))
	}
}

// Stat implements eproxy.StatSource.
func (s *agentState) Stat() (metrics.Stat, error) {
	s.mu.RLock()
	w := s.window
	s.mu.RUnlock()
	if w == nil {
		return metrics.Stat{}, errNoAgent
	}
	return w.Stat()
}

// Counters reads the current instance's eBPF counters.
func (s *agentState) Counters() (bpf.InstanceMetrics, error) {
	s.mu.RLock()
	a := s.agent
	s.mu.RUnlock()
	if a == nil {
		return bpf.InstanceMetrics{}, errNoAgent
	}
	return a.Counters()
}

func (s *agentState) close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.agent != nil {
		s.agent.Close()
	}
}

// agentHint says what usually causes a registration error on Kubernetes.
func agentHint(err error) string {
	switch {
	case errors.Is(err, unix.ENOENT):
		return "no control socket: is the spright-gateway DaemonSet running on this node, and did the spright-webhook (config/600-webhook.yaml) mount /run/spright into this queue-proxy container?"
	case errors.Is(err, unix.EACCES):
		return "permission denied on the control socket: the pod needs the gateway's group (SPRIGHT_CONTROL_GID, added by spright-webhook) as a supplemental group"
	case errors.Is(err, unix.ECONNREFUSED):
		return "the socket exists but no gateway listens on it: the node agent is restarting or gone"
	}
	return ""
}

// startSteering asks the new agent to steer (package bpf, "Steer"): only
// for a revision without a breaker (a steered request would pass it by).
func (s *agentState) startSteering(a *eproxy.AgentClient) {
	if !s.cfg.Steer || s.cfg.ContainerConcurrency != 0 || s.traffic == nil || a.Chain != "" {
		return
	}
	port, err := strconv.Atoi(s.cfg.UserPort)
	if err == nil {
		err = a.Steer(s.traffic, port)
	}
	if err != nil {
		s.log.Warn("no steering: every connection is spliced", zap.Error(err))
		return
	}
	s.srv.SetSteering(a, eproxy.DefaultGateways())
	s.log.Info("steering plain traffic to the user container in the kernel")
}

// stopSteering: new connections reach EPROXY again (draining).
func (s *agentState) stopSteering() {
	s.srv.SetSteering(nil, nil)
	s.mu.RLock()
	a := s.agent
	s.mu.RUnlock()
	if a == nil || !s.cfg.Steer {
		return
	}
	if err := a.SteerEnabled(false); err != nil {
		s.log.Debug("stop steering", zap.Error(err))
	}
}
