package gateway

import (
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// metrics are the gateway's per-chain Prometheus series. Request counts and
// latency are observed once per HTTP request (the gateway is the L7 endpoint);
// everything inside the chain is counted by eBPF and read on scrape.
type metrics struct {
	requests *prometheus.CounterVec
	latency  *prometheus.HistogramVec
}

func newMetrics() *metrics {
	return &metrics{
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Namespace: "spright", Subsystem: "gateway", Name: "requests_total",
			Help: "HTTP requests served by the gateway, by chain and status code.",
		}, []string{"chain", "code"}),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Namespace: "spright", Subsystem: "gateway", Name: "request_duration_seconds",
			Help:    "Time from request arrival to response, by chain.",
			Buckets: []float64{.00005, .0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"chain"}),
	}
}

func (g *Gateway) observe(c *Chain, status int, d time.Duration) {
	g.metricsOnce.Do(g.initMetrics)
	g.m.requests.WithLabelValues(c.Name(), strconv.Itoa(status)).Inc()
	g.m.latency.WithLabelValues(c.Name()).Observe(d.Seconds())
}

func (g *Gateway) initMetrics() { g.m = newMetrics() }

var (
	descPoolFree   = prometheus.NewDesc("spright_pool_free_slots", "Free slots in the chain's shared-memory pool.", []string{"chain"}, nil)
	descPoolSlots  = prometheus.NewDesc("spright_pool_slots", "Slots in the chain's shared-memory pool.", []string{"chain"}, nil)
	descDispatched = prometheus.NewDesc("spright_gateway_dispatches_total", "Descriptors the gateway sent into the chain (one per request: the functions route among themselves).", []string{"chain"}, nil)
	descReturned   = prometheus.NewDesc("spright_gateway_returns_total", "Descriptors returned to the gateway by the chain.", []string{"chain"}, nil)
	descInvalid    = prometheus.NewDesc("spright_gateway_invalid_descriptors_total", "Descriptors the gateway dropped after its own checks.", []string{"chain"}, nil)
	descUpdates    = prometheus.NewDesc("spright_gateway_chain_updates_total", "Reconfigurations applied to the chain while it served (UpdateChain): new functions, routes or timeouts.", []string{"chain"}, nil)
	descReclaimed  = prometheus.NewDesc("spright_pool_reclaimed_slots_total", "Slots reclaimed from instances that died (and, after a restart, from the previous gateway and its members).", []string{"chain"}, nil)
	descInstances  = prometheus.NewDesc("spright_chain_instances", "Registered instances of the chain's functions.", []string{"chain"}, nil)
	descDrops      = prometheus.NewDesc("spright_bpf_dropped_descriptors_total", "Descriptors the sk_msg program dropped, by reason.", []string{"reason"}, nil)
	descPeer       = prometheus.NewDesc("spright_peer_requests_total", "Cross-node traffic: requests shipped to a peer for their next function, received from one, answers sent to and received from the node where a request entered, frames refused, requests failed because their peer went away or never answered.", []string{"event"}, nil)
	descPeerLinks  = prometheus.NewDesc("spright_peer_links", "Authenticated connections to peer nodes.", nil, nil)
	descSteered    = prometheus.NewDesc("spright_eproxy_steered_connections_total", "Connections the kernel steered straight to a pod's user container (EPROXY steering), per pod.", []string{"namespace", "revision", "pod"}, nil)
	descInstSent   = prometheus.NewDesc("spright_bpf_instance_sent_total", "Descriptors sent by an instance (eBPF count).", []string{"instance"}, nil)
)

// Describe implements prometheus.Collector.
func (g *Gateway) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descPoolFree, descPoolSlots, descDispatched, descReturned, descInvalid, descReclaimed, descUpdates, descInstances, descDrops, descInstSent, descPeer, descPeerLinks, descSteered} {
		ch <- d
	}
	g.metricsOnce.Do(g.initMetrics)
	g.m.requests.Describe(ch)
	g.m.latency.Describe(ch)
	describeActivation(ch)
}

// Collect implements prometheus.Collector.
func (g *Gateway) Collect(ch chan<- prometheus.Metric) {
	g.metricsOnce.Do(g.initMetrics)
	g.m.requests.Collect(ch)
	g.m.latency.Collect(ch)
	for _, c := range g.Chains() {
		n := c.Name()
		ch <- prometheus.MustNewConstMetric(descPoolFree, prometheus.GaugeValue, float64(c.pool.FreeCount()), n)
		ch <- prometheus.MustNewConstMetric(descPoolSlots, prometheus.GaugeValue, float64(c.pool.Slots()), n)
		ch <- prometheus.MustNewConstMetric(descDispatched, prometheus.CounterValue, float64(c.Dispatched.Load()), n)
		ch <- prometheus.MustNewConstMetric(descReturned, prometheus.CounterValue, float64(c.Returned.Load()), n)
		ch <- prometheus.MustNewConstMetric(descInvalid, prometheus.CounterValue, float64(c.Invalid.Load()), n)
		ch <- prometheus.MustNewConstMetric(descReclaimed, prometheus.CounterValue, float64(c.Reclaimed.Load()), n)
		ch <- prometheus.MustNewConstMetric(descUpdates, prometheus.CounterValue, float64(c.Updates.Load()), n)
		c.act.collect(ch, n)
		ch <- prometheus.MustNewConstMetric(descInstances, prometheus.GaugeValue, float64(g.instanceCount(c)), n)
	}
	ps := &g.rem.stats
	for ev, v := range map[string]uint64{"shipped": ps.Shipped.Load(), "received": ps.Received.Load(), "result_sent": ps.Results.Load(),
		"answered": ps.Answered.Load(), "refused": ps.Refused.Load(), "failed": ps.Failed.Load()} {
		ch <- prometheus.MustNewConstMetric(descPeer, prometheus.CounterValue, float64(v), ev)
	}
	g.rem.mu.Lock()
	links := len(g.rem.links)
	g.rem.mu.Unlock()
	ch <- prometheus.MustNewConstMetric(descPeerLinks, prometheus.GaugeValue, float64(links))
	g.collectSteered(ch)
	if g.dp != nil {
		if drops, err := g.dp.Drops(); err == nil {
			for r, v := range drops {
				ch <- prometheus.MustNewConstMetric(descDrops, prometheus.CounterValue, float64(v), r.String())
			}
		}
		if all, err := g.dp.AllMetrics(); err == nil {
			for id, m := range all {
				ch <- prometheus.MustNewConstMetric(descInstSent, prometheus.CounterValue, float64(m.Sent), strconv.FormatUint(uint64(id), 10))
			}
		}
	}
}

// MetricsHandler serves the gateway's metrics in Prometheus text format,
// with the process's own (go_goroutines, process_open_fds, ...): the fault
// tests watch them for leaks across kills and restarts.
func (g *Gateway) MetricsHandler() http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(g, collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

func (g *Gateway) instanceCount(c *Chain) int {
	g.mu.RLock()
	defer g.mu.RUnlock()
	n := 0
	for _, in := range g.instances {
		if in.chain == c {
			n++
		}
	}
	return n
}
