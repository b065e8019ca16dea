package e2e

// `spright run` restarts what dies (issue 13, part 3): kill -9 of a
// function process, restarts with back-off, the restart counters in
// /metrics, the survivor of two instances serving meanwhile, Stop during a
// back-off; and the signals a real `spright run` process gets (SIGHUP
// re-reads an unchanged file and keeps it serving; SIGTERM, SIGINT,
// SIGQUIT stop it and clean up).

import (
	"bufio"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spright-dev/spright/bpf"
	"github.com/spright-dev/spright/pkg/standalone"
)

// scrape reads a Prometheus text endpoint into name{labels} -> value.
func scrape(addr string) (map[string]float64, error) {
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return nil, fmt.Errorf("metrics: %s", resp.Status)
	}
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		if m := metricLine.FindStringSubmatch(sc.Text()); m != nil {
			v, _ := strconv.ParseFloat(m[3], 64)
			out[m[1]+m[2]] = v
		}
	}
	return out, sc.Err()
}

func mustScrape(t *testing.T, addr string) map[string]float64 {
	t.Helper()
	m, err := scrape(addr)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func slotLabels(chain, fn string, idx int) string {
	return fmt.Sprintf(`{chain=%q,function=%q,index="%d"}`, chain, fn, idx)
}

// proc is the current process of function fn's instance idx.
func proc(t *testing.T, r *standalone.Runner, fn string, idx int) *standalone.Proc {
	t.Helper()
	for _, p := range r.Procs() {
		if p.Function == fn && p.Index == idx {
			return p
		}
	}
	t.Fatalf("no process for %s/%d", fn, idx)
	return nil
}

// load posts to url from n goroutines until stop is closed and counts the
// answers by status (-1: a transport error, 0: a 200 with a wrong body).
type load struct {
	mu    sync.Mutex
	codes map[int]int
	stop  chan struct{}
	once  sync.Once
	wg    sync.WaitGroup
}

func startLoad(url string, n int) *load {
	l := &load{codes: map[int]int{}, stop: make(chan struct{})}
	for w := 0; w < n; w++ {
		l.wg.Add(1)
		go func(w int) {
			defer l.wg.Done()
			for i := 0; ; i++ {
				select {
				case <-l.stop:
					return
				default:
				}
				in := fmt.Sprintf("load-%d-%d", w, i)
				code, body, err := post(url, in)
				switch {
				case err != nil:
					code = -1
				case code == 200 && body != reverseString(strings.ToUpper(in)):
					code = 0
				}
				l.mu.Lock()
				l.codes[code]++
				l.mu.Unlock()
				if code != 200 {
					time.Sleep(2 * time.Millisecond) // a 503 comes back at once: don't spin
				}
			}
		}(w)
	}
	return l
}

// snapshot returns the counts so far and starts counting afresh.
func (l *load) snapshot() map[int]int {
	l.mu.Lock()
	defer l.mu.Unlock()
	c := l.codes
	l.codes = map[int]int{}
	return c
}

// end stops the load (once; later calls return what came since) and
// returns the counts since the last snapshot.
func (l *load) end() map[int]int {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
	return l.snapshot()
}

const restartYAML = `
name: restart
timeout: 2s
pool: {slots: 256, slotSize: 4096}
routes: {"*": [upper]}
functions:
  - name: upper
    workers: 4
    routes: {"*": [reverse]}
  - name: reverse
    workers: 4
`

// TestStandaloneRestartAfterKill: kill -9 the only `upper` three times in a
// row, under load. Each time the runner restarts it in the same network
// namespace, it joins the gateway under the runner's verification (no
// unlisted members here) and the chain answers 200 again; the first
// restart is immediate, the second and third wait out a growing back-off
// (100 ms, 200 ms by default), and /metrics counts the restarts and says
// how the process died (137 = SIGKILL).
func TestStandaloneRestartAfterKill(t *testing.T) {
	c := startChainWith(t, restartYAML, func(o *standalone.Options) {
		o.AllowUnlisted = false
		o.AdminListen = "127.0.0.1:0"
	})
	admin := c.AdminAddr()
	lbl := slotLabels("restart", "upper", 0)
	if m := mustScrape(t, admin); m["spright_function_restarts_total"+lbl] != 0 {
		t.Fatalf("restarts before any kill: %v", m["spright_function_restarts_total"+lbl])
	}
	first := proc(t, c.Runner, "upper", 0)
	netns := first.Netns()
	l := startLoad(c.url, 4)
	defer l.end()
	time.Sleep(200 * time.Millisecond)
	if got := l.snapshot(); got[200] == 0 || len(got) != 1 {
		t.Fatalf("before the kills: %v", got)
	}
	wantBackoff := []time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond}
	for k, backoff := range wantBackoff {
		old := proc(t, c.Runner, "upper", 0)
		killed := time.Now()
		if err := syscall.Kill(old.Cmd.Process.Pid, syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-old.Done()
		var next *standalone.Proc
		deadline := time.Now().Add(10 * time.Second)
		for next = proc(t, c.Runner, "upper", 0); next == old; next = proc(t, c.Runner, "upper", 0) {
			if time.Now().After(deadline) {
				t.Fatalf("kill %d: upper not restarted within 10s", k+1)
			}
			time.Sleep(time.Millisecond)
		}
		started := time.Since(killed)
		// Answers resume: a fresh request (not one of the load's) gets 200.
		var serving time.Duration
		for {
			if code, body, err := post(c.url, "abc"); err == nil && code == 200 && body == "CBA" {
				serving = time.Since(killed)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("kill %d: the chain does not answer 200 within 10s", k+1)
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(100 * time.Millisecond) // the load's requests get through too
		codes := l.snapshot()
		m := mustScrape(t, admin)
		t.Logf("kill %d of upper (pid %d -> %d): new process after %v, chain answering 200 after %v; load's answers since the previous kill %v; backoff metric %vs",
			k+1, old.Cmd.Process.Pid, next.Cmd.Process.Pid, started.Round(time.Millisecond), serving.Round(time.Millisecond), codes,
			m["spright_function_restart_backoff_seconds"+lbl])
		if started < backoff {
			t.Errorf("kill %d: restarted after %v, before its back-off of %v", k+1, started, backoff)
		}
		if got := m["spright_function_restart_backoff_seconds"+lbl]; got != backoff.Seconds() {
			t.Errorf("kill %d: restart_backoff_seconds %v, want %v", k+1, got, backoff.Seconds())
		}
		if got := m["spright_function_restarts_total"+lbl]; got != float64(k+1) {
			t.Errorf("kill %d: restarts_total %v, want %d", k+1, got, k+1)
		}
		if got := m["spright_function_last_exit_code"+lbl]; got != 137 {
			t.Errorf("kill %d: last_exit_code %v, want 137 (SIGKILL)", k+1, got)
		}
		if next.Netns() != netns {
			t.Errorf("kill %d: the restarted process runs in netns %q, not its instance's %q", k+1, next.Netns(), netns)
		}
		for code := range codes {
			// 502: requests upper held when it died; 503: no instance
			// of upper until the restarted one joined; 504: see
			// stranded below.
			if code != 200 && code != 502 && code != 503 && code != 504 {
				t.Errorf("kill %d: unexpected answers %v", k+1, codes)
			}
		}
	}
	if got := l.end(); got[200] == 0 || len(got) != 1+min(got[504], 1) {
		t.Errorf("after the restarts: %v", got)
	}
	if n := c.Chain.InstanceCount("upper"); n != 1 {
		t.Errorf("%d instances of upper registered, want 1 (the dead ones gone)", n)
	}
	if m := mustScrape(t, admin); m["spright_function_restarts_total"+slotLabels("restart", "reverse", 0)] != 0 {
		t.Errorf("reverse was restarted too")
	}
}

// stranded explains the 504s a kill -9 can cause (seen here only with the
// machine's two cores loaded, about one kill in six then): a function
// hands its slot to the next function in the pool (Handoff) and then
// writes the descriptor; killed in between, the slot belongs to the next
// function, which never receives it, so the request is not among the dead
// instance's reclaimed slots and times out instead of failing with 502.
// It is the dead instance's own request either way; the gap is in the data
// path (pkg/function's forward), not in the supervisor.
const stranded = "the killed instance's requests it had handed to the next function but not yet sent (504 at the chain timeout instead of 502)"

const survivorYAML = `
name: survivor
timeout: 2s
pool: {slots: 256, slotSize: 4096}
routes: {"*": [upper]}
functions:
  - name: upper
    instances: 2
    serviceTime: 2ms
    workers: 4
    routes: {"*": [reverse]}
  - name: reverse
    workers: 4
`

// TestStandaloneRestartSurvivorServes: with two instances of upper, kill -9
// one under load: only the requests it held fail (502, as many as the slots
// reclaimed from it); the other instance serves every request meanwhile (no
// 503), and the restarted instance joins again and takes traffic.
func TestStandaloneRestartSurvivorServes(t *testing.T) {
	c := startChainWith(t, survivorYAML, func(o *standalone.Options) {
		o.AllowUnlisted = false
		o.AdminListen = "127.0.0.1:0"
	})
	l := startLoad(c.url, 8)
	defer l.end()
	time.Sleep(300 * time.Millisecond)
	if got := l.snapshot(); got[200] == 0 || len(got) != 1 {
		t.Fatalf("before the kill: %v", got)
	}
	reclaimed := c.Chain.Reclaimed.Load()
	dp := c.Gateway.Datapath()
	ids, err := dp.AllMetrics()
	if err != nil {
		t.Fatal(err)
	}
	drops, err := dp.Drops()
	if err != nil {
		t.Fatal(err)
	}
	old := proc(t, c.Runner, "upper", 0)
	killed := time.Now()
	if err := syscall.Kill(old.Cmd.Process.Pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "upper/0 restarted", func() bool { return proc(t, c.Runner, "upper", 0) != old })
	started := time.Since(killed)
	deadline := time.Now().Add(10 * time.Second)
	for c.Chain.InstanceCount("upper") != 2 {
		if time.Now().After(deadline) {
			t.Fatal("the restarted upper did not join within 10s")
		}
		time.Sleep(time.Millisecond)
	}
	joined := time.Since(killed)
	time.Sleep(300 * time.Millisecond)
	codes := l.end()
	// The killed instance's requests: those it held (their slots were
	// reclaimed) and any the gateway sent it in the instant between its
	// sockets closing and the gateway unregistering it (handed back by
	// the kernel: redirect drops).
	lost := c.Chain.Reclaimed.Load() - reclaimed
	after, err := dp.Drops()
	if err != nil {
		t.Fatal(err)
	}
	refused := after[bpf.DropRedirect] - drops[bpf.DropRedirect]
	t.Logf("kill -9 of upper/0 under 8 clients: restarted after %v, joined after %v; answers %v; slots reclaimed from it %d, requests refused by its closed socket %d",
		started.Round(time.Millisecond), joined.Round(time.Millisecond), codes, lost, refused)
	if codes[503] != 0 {
		t.Errorf("%d × 503: the survivor should have served while upper/0 restarted", codes[503])
	}
	if uint64(codes[502]) > lost+refused {
		t.Errorf("%d × 502 but the killed instance held only %d requests (+%d sent to it as it died)", codes[502], lost, refused)
	}
	if codes[504] > 0 {
		t.Logf("%d × 504: %s", codes[504], stranded)
	}
	if n := codes[502] + codes[504]; n > 8 {
		t.Errorf("%d requests failed, more than the 8 clients can have had in flight", n)
	}
	for code := range codes {
		if code != 200 && code != 502 && code != 504 {
			t.Errorf("unexpected answers %v", codes)
		}
	}
	// The restarted instance (the one id the datapath did not know before
	// the kill) takes its share again.
	l = startLoad(c.url, 8)
	time.Sleep(500 * time.Millisecond)
	if got := l.end(); len(got) != 1 || got[200] == 0 {
		t.Errorf("after the restart: %v", got)
	}
	all, err := dp.AllMetrics()
	if err != nil {
		t.Fatal(err)
	}
	var fresh []uint32
	for id, m := range all {
		if _, ok := ids[id]; !ok {
			fresh = append(fresh, id)
			t.Logf("restarted upper/0 is instance %d: sent %d descriptors", id, m.Sent)
			if m.Sent == 0 {
				t.Errorf("the restarted instance %d took no request", id)
			}
		}
	}
	if len(fresh) != 1 {
		t.Errorf("new instances %v in the datapath after one restart, want one", fresh)
	}
	if got := mustScrape(t, c.AdminAddr())["spright_function_restarts_total"+slotLabels("survivor", "upper", 0)]; got != 1 {
		t.Errorf("restarts_total of upper/0 = %v, want 1", got)
	}
}

// TestStandaloneStopDuringBackoff: Stop while a restart waits out its
// back-off returns without starting the process, and no function process
// of the chain is left running (nor started later).
func TestStandaloneStopDuringBackoff(t *testing.T) {
	c := startChainWith(t, restartYAML, func(o *standalone.Options) {
		o.Restart = standalone.RestartPolicy{Backoff: 3 * time.Second}
	})
	for k := 0; k < 2; k++ {
		old := proc(t, c.Runner, "upper", 0)
		syscall.Kill(old.Cmd.Process.Pid, syscall.SIGKILL)
		<-old.Done()
		if k == 0 {
			waitFor(t, "first restart (immediate)", func() bool { return proc(t, c.Runner, "upper", 0) != old })
		}
	}
	waiting := proc(t, c.Runner, "upper", 0) // dead; its restart is 3 s away
	t0 := time.Now()
	if err := c.Stop(); err != nil {
		t.Fatal(err)
	}
	t.Logf("Stop during a 3 s back-off took %v", time.Since(t0).Round(time.Millisecond))
	if p := proc(t, c.Runner, "upper", 0); p != waiting {
		t.Fatalf("a process was started during Stop (pid %d)", p.Cmd.Process.Pid)
	}
	for _, p := range c.Procs() {
		select {
		case <-p.Done():
		default:
			t.Errorf("%s/%d (pid %d) still running after Stop", p.Function, p.Index, p.Cmd.Process.Pid)
		}
	}
	time.Sleep(3500 * time.Millisecond) // past the back-off
	if left := processesUsing(c.Gateway.ControlSocketPath()); len(left) > 0 {
		t.Errorf("function processes running after Stop: %v", left)
	}
}

// processesUsing lists the pids whose command line mentions s.
func processesUsing(s string) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err == nil && strings.Contains(string(b), s) {
			out = append(out, pid)
		}
	}
	return out
}

// TestStandaloneSignals: a real `spright run` process. SIGHUP does not stop
// it (it re-reads an unchanged file: nothing changes, it says so and serves
// on, its functions untouched; reload_test.go has the reloads that change
// things); kill -9 of a function is repaired by the
// supervisor, several times, with no goroutine or fd growth in the runner;
// SIGTERM, SIGINT and SIGQUIT each stop it with exit code 0 and no
// namespace, veth, pin dir, control socket or pool file left behind.
func TestStandaloneSignals(t *testing.T) {
	t.Run("SIGHUP then SIGTERM", func(t *testing.T) {
		admin := "127.0.0.1:" + freePortOn(t, "127.0.0.1")
		c := runCLIWith(t, helloYAML, "--admin-listen", admin)
		children := func() []int { return c.tree(t)[1:] }
		fns := children()
		if len(fns) != 2 {
			t.Fatalf("function processes %v, want 2", fns)
		}
		for i := 0; i < 3; i++ {
			if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			time.Sleep(200 * time.Millisecond)
			select {
			case err := <-c.done:
				t.Fatalf("spright run exited after SIGHUP: %v", err)
			default:
			}
			if code, body, err := post(c.url, "abc"); err != nil || code != 200 || body != "CBA" {
				t.Fatalf("after SIGHUP %d: %d %q %v", i+1, code, body, err)
			}
		}
		if n := strings.Count(c.log.String(), "chain reloaded: nothing changed"); n != 3 {
			t.Errorf("%d SIGHUPs logged as reloads that changed nothing, want 3", n)
		}
		if got := children(); fmt.Sprint(got) != fmt.Sprint(fns) {
			t.Errorf("function processes %v after SIGHUP, want the same %v", got, fns)
		}

		// Kill -9 a function again and again; measure the runner's
		// goroutines and fds once all is settled, against before.
		base := mustScrape(t, admin)
		const kills = 5
		for k := 0; k < kills; k++ {
			victim := children()[0]
			killed := time.Now()
			syscall.Kill(victim, syscall.SIGKILL)
			deadline := time.Now().Add(20 * time.Second)
			for {
				if code, body, err := post(c.url, "abc"); err == nil && code == 200 && body == "CBA" {
					if now := children(); len(now) == 2 && now[0] != victim && now[1] != victim {
						break
					}
				}
				if time.Now().After(deadline) {
					t.Fatalf("kill %d: not serving again within 20s", k+1)
				}
				time.Sleep(2 * time.Millisecond)
			}
			t.Logf("kill %d (pid %d): serving again after %v", k+1, victim, time.Since(killed).Round(time.Millisecond))
		}
		var restarts float64
		m := mustScrape(t, admin)
		for _, fn := range []string{"upper", "reverse"} {
			restarts += m["spright_function_restarts_total"+slotLabels("hello", fn, 0)]
		}
		if restarts != kills {
			t.Errorf("restarts_total sums to %v, want %d", restarts, kills)
		}
		settled := func() bool {
			m = mustScrape(t, admin)
			return m[mGoroutine] <= base[mGoroutine] && m[mFDs] <= base[mFDs]
		}
		deadline := time.Now().Add(10 * time.Second)
		ok := settled()
		for !ok && time.Now().Before(deadline) {
			time.Sleep(100 * time.Millisecond)
			ok = settled()
		}
		t.Logf("runner goroutines %v → %v, open fds %v → %v across %d restarts", base[mGoroutine], m[mGoroutine], base[mFDs], m[mFDs], kills)
		if !ok {
			t.Errorf("goroutines or fds grew across restarts (see above)")
		}
		c.stopWith(t, syscall.SIGTERM)
	})
	for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGQUIT} {
		t.Run(unix.SignalName(sig), func(t *testing.T) {
			c := runCLI(t, helloYAML)
			c.stopWith(t, sig)
			if sig == syscall.SIGQUIT && !strings.Contains(c.log.String(), "goroutine ") {
				t.Errorf("SIGQUIT did not dump the goroutines")
			}
		})
	}
}
