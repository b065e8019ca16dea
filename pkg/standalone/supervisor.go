package standalone

import (
	"errors"
	"fmt"
	"strconv"
	"sync"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Supervision: `spright run` restarts a function process that exits while
// the runner is not stopping, as kubelet does for a pod with
// `restartPolicy: Always`. Without it a crashed instance was gone for good:
// its requests in flight got 502 (right), and then every request needing
// the function got 503 until the runner was restarted.
//
// Each instance of a function is a slot (function, index) that keeps its
// network namespace across restarts; the process in it is replaced. A
// restarted process joins the gateway under the same verification as the
// first one (Runner.verify: the pid must be one the runner started as that
// function), and the gateway gives it a new instance id. With several
// instances the others serve while one restarts: the gateway stops picking
// an instance as soon as its sockets close.

// RestartPolicy is the back-off between restarts of a slot's process:
// kubelet's CrashLoopBackOff, scaled down for processes that start in tens
// of milliseconds. The first restart after a crash is immediate; each
// further crash in a row waits twice as long as the one before, starting
// at Backoff and capped at MaxBackoff; a process that ran ResetAfter or
// longer before it exited ends the streak (its restart is immediate
// again). kubelet's values are 10 s, 5 min and 10 min.
type RestartPolicy struct {
	// Backoff is the delay before the second restart in a row (default
	// 100ms).
	Backoff time.Duration
	// MaxBackoff caps the delay (default 10s): a function that cannot
	// start costs at most one start every MaxBackoff.
	MaxBackoff time.Duration
	// ResetAfter is how long a process must run for its exit to count as
	// a new first crash (default 10s).
	ResetAfter time.Duration
}

// DefaultRestartPolicy is what Options.Restart's zero value means.
var DefaultRestartPolicy = RestartPolicy{Backoff: 100 * time.Millisecond, MaxBackoff: 10 * time.Second, ResetAfter: 10 * time.Second}

func (p RestartPolicy) withDefaults() RestartPolicy {
	d := DefaultRestartPolicy
	if p.Backoff > 0 {
		d.Backoff = p.Backoff
	}
	if p.MaxBackoff > 0 {
		d.MaxBackoff = p.MaxBackoff
	}
	if p.ResetAfter > 0 {
		d.ResetAfter = p.ResetAfter
	}
	d.MaxBackoff = max(d.MaxBackoff, d.Backoff)
	return d
}

// delay is the wait before the restart that follows streak restarts in a
// row: 0, then Backoff, 2×Backoff, 4×Backoff … up to MaxBackoff.
func (p RestartPolicy) delay(streak int) time.Duration {
	if streak <= 0 {
		return 0
	}
	d := p.Backoff
	for i := 1; i < streak && d < p.MaxBackoff; i++ {
		d *= 2
	}
	return min(d, p.MaxBackoff)
}

// slot is one instance of a function: the process running it now and its
// restart history. The network namespace outlives the processes.
type slot struct {
	fn    FunctionFile // the spec its processes run (a reload that changes it makes new slots)
	index int
	net   *podNet

	// stop is closed when a reload retires the slot (its function left
	// the chain, was scaled down or replaced): the supervisor returns and
	// never restarts it. retired is set with it, under Runner.stopMu, so
	// that respawn, which holds stopMu, cannot start a process after.
	stop    chan struct{}
	retired bool

	mu       sync.Mutex
	proc     *Proc // running, or the last one while a restart waits
	restarts int   // processes started after the first
	streak   int   // restarts in a row with no process running ResetAfter
	exits    int
	lastCode int           // of the last exit (exitStatus)
	backoff  time.Duration // waited before the latest restart
}

func newSlot(f FunctionFile, idx int, pn *podNet, p *Proc) *slot {
	return &slot{fn: f, index: idx, net: pn, proc: p, stop: make(chan struct{})}
}

func (s *slot) current() *Proc {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.proc
}

// exited records p's exit and returns the delay before its restart.
func (s *slot) exited(p *Proc, code int, pol RestartPolicy) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.exits++
	s.lastCode = code
	if p.exitedAt.Sub(p.startedAt) >= pol.ResetAfter {
		s.streak = 0
	}
	return s.next(pol)
}

// failedStart is a restart that could not even start the process: it
// counts as a crash in a row.
func (s *slot) failedStart(pol RestartPolicy) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.next(pol)
}

// next takes the delay for the streak's next restart (s.mu held).
func (s *slot) next(pol RestartPolicy) time.Duration {
	d := pol.delay(s.streak)
	s.streak++
	s.backoff = d
	return d
}

func (s *slot) replaced(p *Proc) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.proc = p
	s.restarts++
}

// exitStatus is how a process ended, as a shell (and kubelet's ExitCode)
// reports it: the exit code, or 128+N for a process killed by signal N
// (137 for kill -9); reason says it in words for the log.
func exitStatus(p *Proc) (code int, reason string) {
	ps := p.Cmd.ProcessState
	if ps == nil {
		return -1, fmt.Sprintf("wait failed: %v", p.err)
	}
	ws, ok := ps.Sys().(syscall.WaitStatus)
	if !ok {
		return ps.ExitCode(), ps.String()
	}
	switch {
	case ws.Signaled():
		name := unix.SignalName(ws.Signal())
		if name == "" {
			name = strconv.Itoa(int(ws.Signal()))
		}
		reason = "killed by signal " + name
		if ws.CoreDump() {
			reason += " (core dumped)"
		}
		return 128 + int(ws.Signal()), reason
	case ws.Exited():
		return ws.ExitStatus(), "exit code " + strconv.Itoa(ws.ExitStatus())
	}
	return ps.ExitCode(), ps.String()
}

// errStopping refuses a restart once Stop has begun.
var errStopping = errors.New("runner is stopping")

// supervise restarts s's process whenever it exits, until the runner
// stops. It is the only goroutine that replaces s.proc.
func (r *Runner) supervise(s *slot) {
	defer r.superWG.Done()
	pol := r.opts.Restart
	for {
		p := s.current()
		select {
		case <-p.done:
		case <-r.quit:
			return
		case <-s.stop:
			return
		}
		if r.isStopping() || r.isRetired(s) {
			return
		}
		code, reason := exitStatus(p)
		delay := s.exited(p, code, pol)
		r.log.Warn("function process exited; restarting it", zap.String("chain", r.File.Name),
			zap.String("function", s.fn.Name), zap.Int("index", s.index), zap.Int("pid", p.Cmd.Process.Pid),
			zap.String("reason", reason), zap.Int("exit_code", code), zap.Duration("ran", p.exitedAt.Sub(p.startedAt)),
			zap.Duration("backoff", delay))
		for {
			if delay > 0 {
				t := time.NewTimer(delay)
				select {
				case <-t.C:
				case <-r.quit:
					t.Stop()
					return
				case <-s.stop:
					t.Stop()
					return
				}
			}
			np, err := r.respawn(s)
			if errors.Is(err, errStopping) {
				return
			}
			if err == nil {
				r.log.Info("function process restarted", zap.String("chain", r.File.Name), zap.String("function", s.fn.Name),
					zap.Int("index", s.index), zap.Int("pid", np.Cmd.Process.Pid), zap.Duration("since_exit", time.Since(p.exitedAt)))
				break
			}
			delay = s.failedStart(pol)
			r.log.Error("function process could not be restarted", zap.String("chain", r.File.Name), zap.String("function", s.fn.Name),
				zap.Int("index", s.index), zap.Error(err), zap.Duration("backoff", delay))
		}
	}
}

// respawn starts s's next process unless Stop has begun or a reload
// retired s. It holds stopMu across the start, so Stop and retire, which
// set stopped and retired under the same lock, see every process that will
// ever run in the slot and have none started behind their back.
func (r *Runner) respawn(s *slot) (*Proc, error) {
	r.stopMu.Lock()
	defer r.stopMu.Unlock()
	if r.stopped || s.retired {
		return nil, errStopping
	}
	p, err := r.spawn(s.fn, s.index, s.net)
	if err != nil {
		return nil, err
	}
	s.replaced(p)
	return p, nil
}

// retire stops s's supervision for good: after it, no process starts in
// the slot again, and s.current() is the last one (running or exited).
func (r *Runner) retire(s *slot) {
	r.stopMu.Lock()
	defer r.stopMu.Unlock()
	if !s.retired {
		s.retired = true
		close(s.stop)
	}
}

func (r *Runner) isRetired(s *slot) bool {
	r.stopMu.Lock()
	defer r.stopMu.Unlock()
	return s.retired
}

func (r *Runner) isStopping() bool {
	select {
	case <-r.quit:
		return true
	default:
		return false
	}
}

// supervision exports the slots' restart state with the gateway's metrics
// on the admin listener's /metrics.
type supervision Runner

var (
	descRestarts = prometheus.NewDesc("spright_function_restarts_total",
		"Times the runner restarted a function instance's process after it exited (spright run's supervisor).",
		[]string{"chain", "function", "index"}, nil)
	descExitCode = prometheus.NewDesc("spright_function_last_exit_code",
		"How the instance's last process ended: its exit code, or 128+N when killed by signal N (137: SIGKILL). Absent until one exits.",
		[]string{"chain", "function", "index"}, nil)
	descBackoff = prometheus.NewDesc("spright_function_restart_backoff_seconds",
		"Back-off waited before the instance's latest restart: 0 for a first crash, then doubling while it keeps crashing.",
		[]string{"chain", "function", "index"}, nil)
)

// Describe implements prometheus.Collector.
func (v *supervision) Describe(ch chan<- *prometheus.Desc) {
	ch <- descRestarts
	ch <- descExitCode
	ch <- descBackoff
}

// Collect implements prometheus.Collector.
func (v *supervision) Collect(ch chan<- prometheus.Metric) {
	r := (*Runner)(v)
	r.slotsMu.RLock()
	defer r.slotsMu.RUnlock()
	// Retiring slots are left out, and while a reload replaces a
	// function, old and new slots share indices: the newer (later) one is
	// reported, as the series must be unique.
	latest := map[string]*slot{}
	for _, s := range r.slots {
		latest[s.fn.Name+"/"+strconv.Itoa(s.index)] = s
	}
	for _, s := range r.slots {
		if latest[s.fn.Name+"/"+strconv.Itoa(s.index)] != s {
			continue
		}
		s.mu.Lock()
		restarts, exits, code, backoff := s.restarts, s.exits, s.lastCode, s.backoff
		s.mu.Unlock()
		labels := []string{r.File.Name, s.fn.Name, strconv.Itoa(s.index)}
		ch <- prometheus.MustNewConstMetric(descRestarts, prometheus.CounterValue, float64(restarts), labels...)
		ch <- prometheus.MustNewConstMetric(descBackoff, prometheus.GaugeValue, backoff.Seconds(), labels...)
		if exits > 0 {
			ch <- prometheus.MustNewConstMetric(descExitCode, prometheus.GaugeValue, float64(code), labels...)
		}
	}
}

// pidGone forgets an exited process's pid, so that a process that later
// gets the same pid cannot join as the function.
func (r *Runner) pidGone(pid int) {
	r.pidMu.Lock()
	delete(r.pids, int32(pid))
	r.pidMu.Unlock()
}
