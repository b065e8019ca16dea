package gateway

import (
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	asmetrics "knative.dev/serving/pkg/autoscaler/metrics"
)

// The gateway stands in for Knative's activator on a chain's path: when a
// member has no ready instance (scaled to zero, or not yet registered on
// this node) a request is held — up to ChainConfig.MaxHeld of them, each
// for at most ChainConfig.HoldTimeout — the autoscaler is poked with a
// pushed Stat for the member's revisions (what makes Knative scale from
// zero), and the request is delivered as soon as an instance joins. A chain
// with HoldTimeout 0 (standalone default) answers 503 at once instead.

// Activation is a chain's held-request state: Held, Activated, HoldTimeouts
// and HoldRejected count requests that waited for an instance, were then
// delivered, timed out, or were refused because MaxHeld were waiting.
type Activation struct {
	mu                                          sync.Mutex
	ready                                       map[uint8]chan struct{} // closed when an instance of the function joins
	held                                        atomic.Int64
	Held, Activated, HoldTimeouts, HoldRejected atomic.Uint64
}

// joined wakes the requests waiting for function fn.
func (a *Activation) joined(fn uint8) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if ch := a.ready[fn]; ch != nil {
		close(ch)
		delete(a.ready, fn)
	}
}

// wait returns a channel closed when the next instance of fn joins.
func (a *Activation) wait(fn uint8) <-chan struct{} {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ready == nil {
		a.ready = map[uint8]chan struct{}{}
	}
	ch := a.ready[fn]
	if ch == nil {
		ch = make(chan struct{})
		a.ready[fn] = ch
	}
	return ch
}

// Activation returns the chain's held-request counters.
func (c *Chain) Activation() *Activation { return &c.act }

// activate holds a request for function fn of chain c until an instance
// joins, the hold times out (503), too many are held (503) or the client
// goes away (499).
func (g *Gateway) activate(c *Chain, fn uint8, done <-chan struct{}) (uint32, error) {
	name := c.routes.FunctionName(fn)
	lim := c.limits.Load()
	if lim.HoldTimeout <= 0 {
		return 0, httpErr(http.StatusServiceUnavailable, "chain %q: function %q has no ready instance", c.Name(), name)
	}
	if n := c.act.held.Add(1); n > int64(lim.MaxHeld) {
		c.act.held.Add(-1)
		c.act.HoldRejected.Add(1)
		return 0, httpErr(http.StatusServiceUnavailable, "chain %q: function %q has no ready instance and %d requests are already waiting for one", c.Name(), name, lim.MaxHeld)
	}
	defer c.act.held.Add(-1)
	c.act.Held.Add(1)
	deadline := time.NewTimer(lim.HoldTimeout)
	defer deadline.Stop()
	// Like the activator's concurrency reports: poke now, then every
	// second while requests wait, so the demand stays in the autoscaler's
	// window however long the member takes to start.
	g.poke(c, name)
	repoke := time.NewTicker(time.Second)
	defer repoke.Stop()
	for {
		ready := c.act.wait(fn)
		// An instance may have joined between the caller's Pick and wait.
		if inst, err := c.routes.Pick(fn, g.inflight); err == nil {
			c.act.Activated.Add(1)
			return inst, nil
		}
		select {
		case <-ready:
		case <-repoke.C:
			g.poke(c, name)
		case <-deadline.C:
			c.act.HoldTimeouts.Add(1)
			return 0, httpErr(http.StatusServiceUnavailable, "chain %q: no instance of function %q became ready within %v", c.Name(), name, lim.HoldTimeout)
		case <-done:
			return 0, httpErr(499, "client went away while function %q was scaling up", name)
		}
	}
}

// awaitMembers holds a request with topic until every member of chain c it
// can reach has an instance. Only the gateway can hold a request: a member
// deeper in the chain that is at zero (a user-set min-scale 0) would
// otherwise be found missing by the function before it, which can only fail
// the request with 503 (seen on the real cluster). All missing members are
// poked at once, so they scale up together.
func (g *Gateway) awaitMembers(c *Chain, topic string, done <-chan struct{}) error {
	missing := c.routes.Unserved(topic)
	if len(missing) == 0 {
		return nil
	}
	for _, fn := range missing {
		g.poke(c, c.routes.FunctionName(fn))
	}
	for _, fn := range missing {
		if _, err := g.activate(c, fn, done); err != nil {
			return err
		}
	}
	return nil
}

// poke tells the autoscaler that the revisions implementing function name of
// chain c have demand, as the activator's first pushed Stat does for a
// revision at zero. Without a stat push connection it only logs.
func (g *Gateway) poke(c *Chain, name string) {
	if g.reporter == nil {
		return
	}
	held := float64(c.act.held.Load())
	var sms []asmetrics.StatMessage
	for _, rev := range g.revisionsOf(c.Name(), name) {
		sms = append(sms, asmetrics.StatMessage{Key: rev, Stat: asmetrics.Stat{
			PodName:                   g.podName(),
			AverageConcurrentRequests: held,
			RequestCount:              1,
		}})
	}
	if len(sms) == 0 {
		return
	}
	if err := g.reporter.Send(sms); err != nil {
		g.log.Warn("poking the autoscaler", zap.String("chain", c.Name()), zap.String("function", name), zap.Error(err))
	}
}

// revisionsOf lists the revisions SetRevisionChain mapped to a function
// that Knative routes traffic to, or all of them when none is marked
// routed (a route that has not reported yet).
func (g *Gateway) revisionsOf(chain, function string) []types.NamespacedName {
	g.mu.RLock()
	defer g.mu.RUnlock()
	var all, routed []types.NamespacedName
	for rev, m := range g.revChains {
		if m.Chain == chain && m.Function == function {
			all = append(all, rev)
			if m.Routed {
				routed = append(routed, rev)
			}
		}
	}
	if len(routed) > 0 {
		return routed
	}
	return all
}

func (g *Gateway) podName() string {
	if g.cfg.Name != "" {
		return g.cfg.Name
	}
	return "spright-gateway"
}

var (
	descHeldNow      = prometheus.NewDesc("spright_gateway_held_requests", "Requests waiting now for a chain member with no ready instance.", []string{"chain"}, nil)
	descHeld         = prometheus.NewDesc("spright_gateway_held_requests_total", "Requests that waited for a chain member with no ready instance.", []string{"chain"}, nil)
	descActivated    = prometheus.NewDesc("spright_gateway_activated_requests_total", "Held requests delivered once an instance joined.", []string{"chain"}, nil)
	descHoldTimeouts = prometheus.NewDesc("spright_gateway_hold_timeouts_total", "Held requests that timed out (503).", []string{"chain"}, nil)
	descHoldRejected = prometheus.NewDesc("spright_gateway_hold_rejected_total", "Requests refused because MaxHeld were already waiting (503).", []string{"chain"}, nil)
)

func describeActivation(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descHeldNow, descHeld, descActivated, descHoldTimeouts, descHoldRejected} {
		ch <- d
	}
}

func (a *Activation) collect(ch chan<- prometheus.Metric, chain string) {
	ch <- prometheus.MustNewConstMetric(descHeldNow, prometheus.GaugeValue, float64(a.held.Load()), chain)
	ch <- prometheus.MustNewConstMetric(descHeld, prometheus.CounterValue, float64(a.Held.Load()), chain)
	ch <- prometheus.MustNewConstMetric(descActivated, prometheus.CounterValue, float64(a.Activated.Load()), chain)
	ch <- prometheus.MustNewConstMetric(descHoldTimeouts, prometheus.CounterValue, float64(a.HoldTimeouts.Load()), chain)
	ch <- prometheus.MustNewConstMetric(descHoldRejected, prometheus.CounterValue, float64(a.HoldRejected.Load()), chain)
}
