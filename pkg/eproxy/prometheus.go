package eproxy

import (
	"github.com/spright-dev/spright/bpf"
	"net/http"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// PrometheusHandler exposes the pod's eBPF counters in Prometheus text
// format (what queue-proxy serves on :9091), read at scrape time.
func PrometheusHandler(namespace, revision, pod string, read Counters) http.Handler {
	labels := prometheus.Labels{"namespace": namespace, "revision": revision, "pod": pod}
	reg := prometheus.NewRegistry()
	gauge := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: "eproxy", Name: name, Help: help, ConstLabels: labels}, f))
	}
	counter := func(name, help string, f func() float64) {
		reg.MustRegister(prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: "eproxy", Name: name, Help: help, ConstLabels: labels}, f))
	}
	val := func(pick func(m *bpf.InstanceMetrics) float64) func() float64 {
		return func() float64 {
			m, err := read()
			if err != nil {
				return 0
			}
			return pick(&m)
		}
	}
	counter("requests_total", "Requests that reached the user container (eBPF count).", val(func(m *bpf.InstanceMetrics) float64 { return float64(m.RequestsIn) }))
	counter("responses_total", "Responses from the user container (eBPF count).", val(func(m *bpf.InstanceMetrics) float64 { return float64(m.ResponsesOut) }))
	gauge("inflight_requests", "Requests in flight (eBPF count).", val(func(m *bpf.InstanceMetrics) float64 { return float64(m.Inflight) }))
	counter("busy_seconds_total", "Time integral of in-flight requests, seconds.", val(func(m *bpf.InstanceMetrics) float64 { return float64(m.BusyNs) / 1e9 }))
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{})
}
