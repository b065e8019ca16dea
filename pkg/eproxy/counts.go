package eproxy

import (
	"sync"

	"github.com/spright-dev/spright/bpf"
)

// A pod's counters over its whole life, whatever the node agent does.
//
// The kernel counts (package bpf) whenever it can: spliced connections, and
// the connections EPROXY proxies in userspace that the agent registered for
// counting. It cannot count a connection that EPROXY accepted while no
// agent was there (no agent to register it with), nor read anything to
// EPROXY while the agent is away. So:
//
//   - every connection is counted in one place for its whole life, chosen
//     when it starts carrying traffic: in the kernel (the agent registered
//     it), or in userspace (tally) when no agent could;
//   - the agent's counters of one kernel entry are read through the agent
//     while it is there; while it is away the last reading stands (frozen:
//     its busy time is not extrapolated, its in-flight count is taken as
//     0), and the requests the kernel counts meanwhile on old connections
//     show up when the agent is back and hands the same entry back
//     (registration with Previous: "resumed");
//   - an agent that comes back without the entry (its maps were removed)
//     starts a new epoch: the old entry's last reading is kept as a base,
//     and connections registered in an older epoch are counted in
//     userspace from then on (their kernel entry is no longer read).
//
// The Stat is then the sum of the three: base + current entry + tally.
// Each request is in exactly one of them, so there is no double counting;
// the gap is what the kernel counted on an entry that never came back
// (between its last reading and the agent's end).

// tally is a userspace counter with the kernel entry's semantics: requests
// in, responses out, in flight, and the time integral of in-flight
// (CLOCK_MONOTONIC ns, the clock eBPF uses), so it adds to kernel readings.
type tally struct {
	mu                  sync.Mutex
	requests, responses uint64
	inflight            int64
	busy, last          uint64
}

func (t *tally) advance(now uint64) {
	if t.inflight > 0 && now > t.last {
		t.busy += uint64(t.inflight) * (now - t.last)
	}
	if now > t.last {
		t.last = now
	}
}

// begin counts a request in; the returned func counts its response out.
func (t *tally) begin() func() {
	now, _ := bpf.MonotonicNs()
	t.mu.Lock()
	t.advance(now)
	t.requests++
	t.inflight++
	t.mu.Unlock()
	return func() {
		now, _ := bpf.MonotonicNs()
		t.mu.Lock()
		t.advance(now)
		t.responses++
		t.inflight--
		t.mu.Unlock()
	}
}

// at reads the tally at monotonic time now (busy time integrated up to now).
func (t *tally) at(now uint64) bpf.InstanceMetrics {
	t.mu.Lock()
	defer t.mu.Unlock()
	busy := t.busy
	if t.inflight > 0 && now > t.last {
		busy += uint64(t.inflight) * (now - t.last)
	}
	return bpf.InstanceMetrics{RequestsIn: t.requests, ResponsesOut: t.responses, Inflight: t.inflight, BusyNs: busy, LastNs: now}
}

// read returns the requests begun and their time up to now (the probes
// and activator requests the kernel counted: Window.Probes and
// Window.Activator take them from the kernel's counts at the same moments).
func (t *tally) read() (count, busyNs uint64) {
	now, _ := bpf.MonotonicNs()
	m := t.at(now)
	return m.RequestsIn, m.BusyNs
}

// entry is one kernel metrics entry as read through the agent.
type entry struct {
	read    Counters // nil while the agent is away
	last    bpf.InstanceMetrics
	lastAt  uint64 // when last was read (0: never)
	settled bpf.InstanceMetrics
}

// at returns the entry's counters at now: read afresh if the agent is
// there, else the last reading, frozen at its time.
func (e *entry) at(now uint64) bpf.InstanceMetrics {
	if e.read != nil {
		if m, err := e.read(); err == nil {
			// Never backwards (a reading racing with another one).
			if m.RequestsIn >= e.last.RequestsIn && m.BusyNsAt(now) >= e.last.BusyNsAt(e.lastAt) {
				e.last, e.lastAt = m, now
			}
			return add(e.settled, bpf.InstanceMetrics{RequestsIn: e.last.RequestsIn, ResponsesOut: e.last.ResponsesOut,
				Inflight: e.last.Inflight, BusyNs: e.last.BusyNsAt(now)})
		}
	}
	return add(e.settled, e.frozen())
}

func (e *entry) frozen() bpf.InstanceMetrics {
	if e.lastAt == 0 {
		return bpf.InstanceMetrics{}
	}
	return bpf.InstanceMetrics{RequestsIn: e.last.RequestsIn, ResponsesOut: e.last.ResponsesOut, BusyNs: e.last.BusyNsAt(e.lastAt)}
}

// settle keeps what the entry counted as a base and starts a new one.
func (e *entry) settle(read Counters) {
	e.settled = add(e.settled, e.frozen())
	e.last, e.lastAt, e.read = bpf.InstanceMetrics{}, 0, read
}

func add(a, b bpf.InstanceMetrics) bpf.InstanceMetrics {
	return bpf.InstanceMetrics{RequestsIn: a.RequestsIn + b.RequestsIn, ResponsesOut: a.ResponsesOut + b.ResponsesOut,
		Inflight: a.Inflight + b.Inflight, BusyNs: a.BusyNs + b.BusyNs, Sent: a.Sent + b.Sent}
}

// ledger is the Server's view of where its requests are counted.
type ledger struct {
	mu           sync.Mutex
	own, proxied entry
	epoch        uint64 // the kernel entry read now; bumped when it changes
	userOwn      tally  // requests counted in userspace
	userProxied  tally  // ... that came from the activator
}

// SetCounters tells the Server where the kernel counts its requests now:
// own and proxied read the agent's two entries for this pod (nil, nil:
// the agent went away). resumed says the agent handed back the entries of
// the previous registration (they kept counting meanwhile); otherwise the
// previous entries' last readings become a base and connections counted
// there are counted in userspace from now on.
func (s *Server) SetCounters(own, proxied Counters, resumed bool) {
	l := &s.ledger
	l.mu.Lock()
	defer l.mu.Unlock()
	if own == nil {
		l.own.read, l.proxied.read = nil, nil
		return
	}
	if resumed {
		l.own.read, l.proxied.read = own, proxied
		return
	}
	l.own.settle(own)
	l.proxied.settle(proxied)
	l.epoch++
}

// countingEpoch is the epoch of the kernel entry read now.
func (s *Server) countingEpoch() uint64 {
	s.ledger.mu.Lock()
	defer s.ledger.mu.Unlock()
	return s.ledger.epoch
}

// OwnCounters is the pod's requests that did not come through the
// activator, over the pod's life: kernel entries and userspace tally
// together (see the comment at the top of counts.go). It never fails.
func (s *Server) OwnCounters() (bpf.InstanceMetrics, error) {
	now, err := bpf.MonotonicNs()
	if err != nil {
		return bpf.InstanceMetrics{}, err
	}
	s.ledger.mu.Lock()
	k := s.ledger.own.at(now)
	s.ledger.mu.Unlock()
	m := add(k, s.ledger.userOwn.at(now))
	m.LastNs = now
	return m, nil
}

// ProxiedCounters is OwnCounters for the activator's requests.
func (s *Server) ProxiedCounters() (bpf.InstanceMetrics, error) {
	now, err := bpf.MonotonicNs()
	if err != nil {
		return bpf.InstanceMetrics{}, err
	}
	s.ledger.mu.Lock()
	k := s.ledger.proxied.at(now)
	s.ledger.mu.Unlock()
	m := add(k, s.ledger.userProxied.at(now))
	m.LastNs = now
	return m, nil
}

// Counters is OwnCounters plus ProxiedCounters (the Prometheus totals).
func (s *Server) Counters() (bpf.InstanceMetrics, error) {
	o, err := s.OwnCounters()
	if err != nil {
		return o, err
	}
	p, err := s.ProxiedCounters()
	if err != nil {
		return o, err
	}
	m := add(o, p)
	m.LastNs = o.LastNs
	return m, nil
}
