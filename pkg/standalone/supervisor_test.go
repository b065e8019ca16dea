package standalone

import (
	"os/exec"
	"syscall"
	"testing"
	"time"
)

func TestRestartPolicyDelays(t *testing.T) {
	pol := RestartPolicy{}.withDefaults()
	if pol != DefaultRestartPolicy {
		t.Fatalf("zero policy = %+v, want the default %+v", pol, DefaultRestartPolicy)
	}
	want := []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 3200 * time.Millisecond, 6400 * time.Millisecond, 10 * time.Second, 10 * time.Second}
	for streak, w := range want {
		if got := pol.delay(streak); got != w {
			t.Errorf("delay after %d restarts in a row = %v, want %v", streak, got, w)
		}
	}
	if got := pol.delay(1 << 20); got != pol.MaxBackoff {
		t.Errorf("a long streak waits %v, want the cap %v", got, pol.MaxBackoff)
	}
	odd := RestartPolicy{Backoff: 3 * time.Second, MaxBackoff: time.Second}.withDefaults()
	if odd.MaxBackoff != 3*time.Second || odd.delay(1) != 3*time.Second {
		t.Errorf("a cap below the first back-off: %+v delay(1)=%v, want the cap raised to 3s", odd, odd.delay(1))
	}
}

// TestSlotStreak: crashes in a row wait longer each time; a process that
// ran ResetAfter before exiting starts the streak over (immediate restart),
// and a start that failed counts as a crash.
func TestSlotStreak(t *testing.T) {
	pol := RestartPolicy{Backoff: 10 * time.Millisecond, MaxBackoff: 40 * time.Millisecond, ResetAfter: time.Second}.withDefaults()
	s := &slot{}
	at := time.Now()
	ran := func(d time.Duration) *Proc { return &Proc{startedAt: at, exitedAt: at.Add(d)} }
	steps := []struct {
		p    *Proc // nil: a failed start
		want time.Duration
	}{
		{ran(5 * time.Second), 0},
		{ran(time.Millisecond), 10 * time.Millisecond},
		{ran(time.Millisecond), 20 * time.Millisecond},
		{nil, 40 * time.Millisecond},
		{ran(time.Millisecond), 40 * time.Millisecond},
		{ran(time.Second), 0}, // ran long enough: a first crash again
		{ran(time.Millisecond), 10 * time.Millisecond},
	}
	for i, st := range steps {
		var got time.Duration
		if st.p == nil {
			got = s.failedStart(pol)
		} else {
			got = s.exited(st.p, 1, pol)
		}
		if got != st.want {
			t.Errorf("step %d: delay %v, want %v", i, got, st.want)
		}
		if s.backoff != got {
			t.Errorf("step %d: backoff metric %v, want %v", i, s.backoff, got)
		}
	}
	if s.exits != 6 {
		t.Errorf("%d exits recorded, want 6", s.exits)
	}
}

// TestExitStatus: real processes ending by exit code and by signal are
// described as kubelet reports them.
func TestExitStatus(t *testing.T) {
	run := func(t *testing.T, cmd *exec.Cmd, kill bool) *Proc {
		t.Helper()
		if err := cmd.Start(); err != nil {
			t.Skipf("no %s: %v", cmd.Path, err)
		}
		if kill {
			cmd.Process.Signal(syscall.SIGKILL)
		}
		p := &Proc{Cmd: cmd}
		p.err = cmd.Wait()
		return p
	}
	for _, tc := range []struct {
		name   string
		cmd    *exec.Cmd
		kill   bool
		code   int
		reason string
	}{
		{"exit 0", exec.Command("true"), false, 0, "exit code 0"},
		{"exit 3", exec.Command("sh", "-c", "exit 3"), false, 3, "exit code 3"},
		{"kill -9", exec.Command("sleep", "60"), true, 137, "killed by signal SIGKILL"},
		{"SIGSEGV", exec.Command("sh", "-c", "kill -SEGV $$"), false, 128 + 11, "killed by signal SIGSEGV"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := run(t, tc.cmd, tc.kill)
			code, reason := exitStatus(p)
			// A core dump depends on the machine's ulimit and core_pattern.
			if code != tc.code || (reason != tc.reason && reason != tc.reason+" (core dumped)") {
				t.Errorf("exitStatus = %d %q, want %d %q", code, reason, tc.code, tc.reason)
			}
		})
	}
}
