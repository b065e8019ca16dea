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

// agentState is EPROXY's registration with the node agent, kept alive
// across agent restarts: when the agent's control connection ends, EPROXY
// registers again (with backoff, naming its previous instance so that an
// agent restarted on kept pins hands back its counters) and switches to the
// new registration's counters and splicer. Meanwhile traffic is proxied in
// userspace and counted there (eproxy.Server.SetCounters): the stat
// endpoint always answers, from one Window over the pod's life.
type agentState struct {
	cfg      eproxy.Config
	start    time.Time
	srv      *eproxy.Server
	log      *zap.Logger
	userAddr string
	ctx      context.Context
	traffic  *net.TCPListener

	window *eproxy.Window

	mu        sync.RWMutex
	agent     *eproxy.AgentClient
	previous  uint32 // the last registration's instance
	shimStart sync.Once
}

// newAgentState builds the state with the pod's Window: it reads the
// Server's counters, which start at zero with the process and add up the
// kernel's and userspace's counts across registrations.
func newAgentState(cfg eproxy.Config, start time.Time, srv *eproxy.Server, log *zap.Logger, userAddr string, ctx context.Context) *agentState {
	w := eproxy.NewPodWindow(cfg.ServingPod, start, srv.OwnCounters, nil)
	w.Proxied = srv.ProxiedCounters
	w.Probes = srv.Probes
	w.ProbesInFlight = srv.ProbesInFlight
	w.Activator = srv.Activator
	return &agentState{cfg: cfg, start: start, srv: srv, log: log, userAddr: userAddr, ctx: ctx, window: w}
}

// register tries once; it reports whether an agent is registered now.
func (s *agentState) register() bool {
	s.mu.RLock()
	previous := s.previous
	s.mu.RUnlock()
	a, err := eproxy.RegisterPod(s.cfg.ControlSocket, eproxy.PodIdentity{Namespace: s.cfg.ServingNamespace, Revision: s.cfg.ServingRevision, Pod: s.cfg.ServingPod, Previous: previous})
	if err != nil {
		s.log.Warn("node agent unreachable: proxying in userspace and counting there until it is back",
			zap.String("socket", s.cfg.ControlSocket), zap.Error(err), zap.String("hint", agentHint(err)))
		return false
	}
	s.mu.Lock()
	s.agent = a
	s.previous = a.Instance
	s.mu.Unlock()
	// Counters first: connections the splicer registers are counted in
	// the entry read from now on.
	s.srv.SetCounters(a.OwnCounters, a.ProxiedCounters, a.Resumed)
	s.srv.SetSplicer(a)
	s.startSteering(a)
	s.log.Info("registered with the node agent", zap.Uint32("instance", a.Instance), zap.Bool("resumed", a.Resumed),
		zap.String("chain", a.Chain), zap.String("function", a.Function))
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
			s.srv.SetCounters(nil, nil, false)
			s.mu.Lock()
			s.agent = nil
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
func (s *agentState) Stat() (metrics.Stat, error) { return s.window.Stat() }

// Counters reads the pod's counters (kernel and userspace, see
// eproxy.Server.OwnCounters).
func (s *agentState) Counters() (bpf.InstanceMetrics, error) { return s.srv.Counters() }

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
