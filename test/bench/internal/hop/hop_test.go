package hop

import (
	"os"
	"testing"
	"time"
)

// TestRun bounces descriptors through the real program in both modes: the
// descriptors must arrive where they were sent (Run checks each one) and
// nothing may be dropped.
func TestRun(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("loads eBPF: needs root")
	}
	for _, m := range []string{ModeThread, ModeNetpoll} {
		r, err := Run(Options{Mode: m, Duration: 200 * time.Millisecond, Tick: 10 * time.Millisecond})
		if err != nil {
			t.Fatalf("%s: %v", m, err)
		}
		if r.Hops < 100 || r.NsPerHop <= 0 || r.CPUNsPerHop <= 0 || r.Drops != 0 {
			t.Errorf("%s: %+v: want at least 100 hops, positive times, no drops", m, r)
		}
	}
	if _, err := Run(Options{Mode: "spin", Duration: time.Second, Tick: time.Millisecond}); err == nil {
		t.Error("unknown mode: want an error")
	}
}
