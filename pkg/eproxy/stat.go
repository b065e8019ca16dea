package eproxy

import (
	"fmt"
	"sync"
	"time"

	"knative.dev/serving/pkg/autoscaler/metrics"

	"github.com/spright-dev/spright/bpf"
)

// Counters reads one instance's eBPF counters.
type Counters func() (bpf.InstanceMetrics, error)

// Clock returns CLOCK_MONOTONIC nanoseconds (the clock eBPF timestamps use).
type Clock func() (uint64, error)

// Period is the autoscaler's reporting period: Stats are averages over
// windows of about this length.
const Period = time.Second

// refreshSlack lets a scraper that reads every Period (the autoscaler does)
// get a fresh window each time despite jitter: without it about a third of
// 1 Hz reads would see the previous window again.
const refreshSlack = 100 * time.Millisecond

type snapshot struct {
	at       uint64 // monotonic ns
	requests uint64
	busy     uint64 // in-flight integral, ns
	// The part that came through the activator (Knative subtracts it: the
	// activator reported those requests already).
	proxiedRequests, proxiedBusy uint64
	// Knative's probes the kernel counted as requests (see Window.Probes).
	probes, probeBusy uint64
	probeInflight     int64 // probes being answered at the snapshot
	// The activator's requests the kernel counted in the own entry (see
	// Window.Activator).
	moved, movedBusy uint64
	inflight         int64 // at the snapshot, proxied included
}

// Window turns an instance's cumulative eBPF counters into Knative Stats.
//
// Snapshots are taken lazily, when a Stat is asked for and the newest
// snapshot is at least Period old; the Stat is the difference between the
// two newest snapshots. So two scrapers in the same second see the same
// Stat (reading does not reset it), and a pod nobody scrapes does no work.
type Window struct {
	pod     string
	started time.Time
	read    Counters
	clock   Clock
	// Proxied, if set, reads the counters of the pod's connections from the
	// activator (a separate eBPF entry); they are part of the Stat's totals
	// and its Proxied fields.
	Proxied Counters
	// Probes, if set, says how many of the requests the kernel counted
	// were Knative's probes, and how long EPROXY took to answer them. On a
	// connection counted from its first byte (containerConcurrency > 0)
	// the kernel cannot tell kubelet's readiness probe from traffic; left
	// in, one probe every few seconds is a concurrency just above zero,
	// which Knative rounds up to one pod: the revision never scales to
	// zero (seen on the real cluster). A window whose requests were all
	// probes reports none; otherwise probes are taken off the count and
	// their answering time off the concurrency.
	Probes func() (count, busyNs uint64)
	// ProbesInFlight, if set, says how many of the requests the kernel
	// has in flight are probes being answered: a window with no request
	// and nothing else in flight at either end reports exactly nothing,
	// even if the kernel saw a probe a little longer than EPROXY measured
	// it.
	ProbesInFlight func() int64
	// Activator, if set, says how many of the requests the kernel counted
	// in the own entry came from the activator (K-Proxy-Request:
	// activator on a connection counted from its first byte, whose origin
	// is not known when it is registered), and their time: they are moved
	// to the Stat's proxied part, as queue-proxy counts them.
	Activator func() (count, busyNs uint64)

	// fromStart: the counters were all zero at started, and the first
	// Stat covers the time since then (NewPodWindow).
	fromStart bool

	mu         sync.Mutex
	prev, last snapshot
}

// NewPodWindow is NewWindow for counters that start at zero when the pod
// starts (EPROXY's Server.OwnCounters): the first Stat covers the time
// since started, so the autoscaler's first scrape sees the traffic that
// came before it.
func NewPodWindow(pod string, started time.Time, read Counters, clock Clock) *Window {
	w := NewWindow(pod, started, read, clock)
	w.fromStart = true
	return w
}

// NewWindow returns a Window for pod reading counters with read.
func NewWindow(pod string, started time.Time, read Counters, clock Clock) *Window {
	if clock == nil {
		clock = bpf.MonotonicNs
	}
	return &Window{pod: pod, started: started, read: read, clock: clock}
}

// Stat returns the pod's Stat over the last complete window.
func (w *Window) Stat() (metrics.Stat, error) {
	// Clock and counters are read under the lock: a caller that lost the
	// race must not build a window dated before the newest snapshot.
	w.mu.Lock()
	defer w.mu.Unlock()
	now, err := w.clock()
	if err != nil {
		return metrics.Stat{}, err
	}
	if w.last.at == 0 || now-w.last.at >= uint64(Period-refreshSlack) {
		m, err := w.read()
		if err != nil {
			return metrics.Stat{}, fmt.Errorf("eproxy: read counters: %w", err)
		}
		s := snapshot{at: now, requests: m.RequestsIn, busy: m.BusyNsAt(now), inflight: m.Inflight}
		if w.Probes != nil {
			s.probes, s.probeBusy = w.Probes()
		}
		if w.ProbesInFlight != nil {
			s.probeInflight = w.ProbesInFlight()
		}
		if w.Activator != nil {
			s.moved, s.movedBusy = w.Activator()
		}
		if w.Proxied != nil {
			if pm, err := w.Proxied(); err == nil {
				s.proxiedRequests, s.proxiedBusy = pm.RequestsIn, pm.BusyNsAt(now)
				s.inflight += pm.Inflight
				s.requests += s.proxiedRequests
				s.busy += s.proxiedBusy
			}
		}
		if w.last.at == 0 && w.fromStart {
			// Everything was zero when the pod started.
			up := uint64(max(time.Since(w.started), 0))
			w.prev = snapshot{at: now - min(now-1, up)}
		} else if w.last.at == 0 || s.requests < w.last.requests || s.busy < w.last.busy ||
			s.proxiedRequests < w.last.proxiedRequests || s.proxiedBusy < w.last.proxiedBusy ||
			s.probes < w.last.probes || s.probeBusy < w.last.probeBusy ||
			s.moved < w.last.moved || s.movedBusy < w.last.movedBusy {
			// First look, or counters that went backwards (the agent
			// restarted and the entry was recreated): a zero-length
			// window starting now. History from before is not this
			// window's business.
			w.prev = s
		} else {
			w.prev = w.last
		}
		w.last = s
	}
	st := metrics.Stat{PodName: w.pod, ProcessUptime: time.Since(w.started).Seconds()}
	dt := w.last.at - w.prev.at
	if dt == 0 {
		return st, nil
	}
	requests, busy := w.last.requests-w.prev.requests, w.last.busy-w.prev.busy
	probes := w.last.probes - w.prev.probes
	probeBusy := w.last.probeBusy - w.prev.probeBusy
	requests -= min(requests, probes)
	if (probes > 0 || probeBusy > 0) && requests == 0 &&
		w.prev.inflight-w.prev.probeInflight <= 0 && w.last.inflight-w.last.probeInflight <= 0 {
		// Only probes arrived or were answered, and nothing else was in
		// flight at either end: all of the window's in-flight time was
		// theirs. Exactly zero, so an idle revision can scale to zero.
		busy = 0
	} else {
		// Requests in flight across the window (long ones, or arrivals
		// next to the probes) keep their time; the probes' answering time
		// is taken off.
		busy -= min(busy, probeBusy)
	}
	// The activator's requests the kernel counted in the own entry are
	// part of the totals already; they join the proxied part.
	proxied := w.last.proxiedRequests - w.prev.proxiedRequests + (w.last.moved - w.prev.moved)
	proxiedBusy := w.last.proxiedBusy - w.prev.proxiedBusy + (w.last.movedBusy - w.prev.movedBusy)
	st.AverageConcurrentRequests = float64(busy) / float64(dt)
	st.RequestCount = float64(requests) / (float64(dt) / float64(time.Second))
	st.AverageProxiedConcurrentRequests = float64(min(proxiedBusy, busy)) / float64(dt)
	st.ProxiedRequestCount = float64(min(proxied, requests)) / (float64(dt) / float64(time.Second))
	return st, nil
}
