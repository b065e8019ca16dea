package eproxy

import (
	"errors"
	"testing"

	"github.com/spright-dev/spright/bpf"
)

// The Server's counters add the kernel entry read through the agent and
// the userspace tally, and stay monotonic when the agent goes away (the
// last reading stands, frozen), comes back with the same entry (resumed)
// or with a new one (the old one's last reading becomes a base).
func TestServerCountersAcrossAgents(t *testing.T) {
	s := NewServer("127.0.0.1:1", nil, func() bool { return true }, 0, 0, nil)
	defer s.Close()
	total := func() uint64 {
		m, err := s.OwnCounters()
		if err != nil {
			t.Fatal(err)
		}
		return m.RequestsIn
	}
	// No agent: userspace only.
	for i := 0; i < 3; i++ {
		s.ledger.userOwn.begin()()
	}
	if got := total(); got != 3 {
		t.Fatalf("no agent: %d requests, want 3", got)
	}
	kernel := &fakeCounters{}
	zero := func() (bpf.InstanceMetrics, error) { return bpf.InstanceMetrics{}, nil }
	s.SetCounters(kernel.read, zero, false)
	e1 := s.countingEpoch()
	kernel.set(bpf.InstanceMetrics{RequestsIn: 5, ResponsesOut: 5})
	if got := total(); got != 8 {
		t.Fatalf("agent 1: %d requests, want 3 + 5", got)
	}
	// The agent goes away: its last reading stands, even when reads fail.
	kernel.setErr(errors.New("gone"))
	s.SetCounters(nil, nil, false)
	s.ledger.userOwn.begin()()
	if got := total(); got != 9 {
		t.Fatalf("agent away: %d requests, want 9", got)
	}
	// It comes back with the same entry, which counted 2 more meanwhile.
	kernel.setErr(nil)
	kernel.set(bpf.InstanceMetrics{RequestsIn: 7, ResponsesOut: 7})
	s.SetCounters(kernel.read, zero, true)
	if got := total(); got != 11 || s.countingEpoch() != e1 {
		t.Fatalf("agent back (resumed): %d requests in epoch %d, want 4 + 7 in epoch %d", got, s.countingEpoch(), e1)
	}
	// A new agent without the entry: a new one from zero, the old as base.
	fresh := &fakeCounters{}
	s.SetCounters(fresh.read, zero, false)
	if got := total(); got != 11 || s.countingEpoch() == e1 {
		t.Fatalf("new entry: %d requests in epoch %d, want 11 in a new epoch", got, s.countingEpoch())
	}
	fresh.set(bpf.InstanceMetrics{RequestsIn: 4, ResponsesOut: 4})
	if got := total(); got != 15 {
		t.Fatalf("new entry counting: %d requests, want 15", got)
	}
}
