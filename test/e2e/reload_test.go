package e2e

// `spright run` applies a changed chain.yaml while it serves (issue 13,
// part 1, standalone side): a route change, a member added, a member
// removed, instances scaled and replaced — under load from several client
// goroutines, with every answer checked against the routes in force when
// the request was made — and refused reloads that leave the chain as it
// was. In process (Runner.Reload) and through a real `spright run` process
// (SIGHUP and PUT /chain on its admin listener).

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/spright-dev/spright/pkg/standalone"
)

// reloadYAML is version 0 of the chain: "abc" → upper → reverse → "CBA".
const reloadYAML = `
name: reload
timeout: 2s
pool: {slots: 256, slotSize: 4096}
routes: {"*": [upper, reverse]}
functions:
  - name: upper
    workers: 4
  - name: reverse
    workers: 4
`

// The versions a reload test goes through, each with the answer it gives.
var reloadSteps = []struct {
	what   string
	yaml   string
	answer func(string) string
}{
	{"route change", `
name: reload
timeout: 2s
pool: {slots: 256, slotSize: 4096}
routes: {"*": [reverse]}
functions:
  - name: upper
    workers: 4
  - name: reverse
    workers: 4
`, reverseString},
	{"member added", `
name: reload
timeout: 2s
pool: {slots: 256, slotSize: 4096}
routes: {"*": [upper, reverse, again]}
functions:
  - name: upper
    workers: 4
  - name: reverse
    workers: 4
  - name: again
    behavior: reverse
    workers: 4
`, strings.ToUpper},
	{"member removed", `
name: reload
timeout: 2s
pool: {slots: 256, slotSize: 4096}
routes: {"*": [reverse, again]}
functions:
  - name: reverse
    workers: 4
  - name: again
    behavior: reverse
    workers: 4
`, func(s string) string { return s }},
}

// answerV0 is reloadYAML's answer.
func answerV0(s string) string { return reverseString(strings.ToUpper(s)) }

// versions records when each reload began and returned, so that an answer
// can be checked against the configs that may have served its request: one
// made after reload k returned must come from version k or later; one that
// ended before reload k began, from before k.
type versions struct {
	mu      sync.Mutex
	answers []func(string) string
	began   []time.Time
	done    []time.Time
}

func newVersions(v0 func(string) string) *versions {
	return &versions{answers: []func(string) string{v0}, began: []time.Time{{}}, done: []time.Time{{}}}
}

// begin is called just before reload k is asked for; end when it has
// returned (or was seen applied).
func (v *versions) begin(answer func(string) string) int {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.answers = append(v.answers, answer)
	v.began = append(v.began, time.Now())
	v.done = append(v.done, time.Time{})
	return len(v.answers) - 1
}

func (v *versions) end(k int) {
	v.mu.Lock()
	defer v.mu.Unlock()
	v.done[k] = time.Now()
}

// valid reports whether body is a right answer to in for a request made
// from start to stop.
func (v *versions) valid(in, body string, start, stop time.Time) bool {
	v.mu.Lock()
	defer v.mu.Unlock()
	lo, hi := 0, 0
	for k := range v.answers {
		if !v.done[k].IsZero() && !v.done[k].After(start) {
			lo = k
		}
		if !v.began[k].After(stop) {
			hi = k
		}
	}
	for k := lo; k <= hi; k++ {
		if body == v.answers[k](in) {
			return true
		}
	}
	return false
}

// reloadLoad posts to url from n goroutines until end, checking each
// answer against v.
type reloadLoad struct {
	mu     sync.Mutex
	codes  map[int]int
	bad    []string // the first wrong answers
	stop   chan struct{}
	once   sync.Once
	wg     sync.WaitGroup
	client *http.Client
}

func startReloadLoad(t *testing.T, url string, n int, v *versions) *reloadLoad {
	l := &reloadLoad{codes: map[int]int{}, stop: make(chan struct{}),
		client: &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: n}}}
	t.Cleanup(l.halt) // before the chain stops, if the test ends early
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
				start := time.Now()
				code, body := -1, ""
				resp, err := l.client.Post(url, "text/plain", strings.NewReader(in))
				if err == nil {
					b, rerr := io.ReadAll(resp.Body)
					resp.Body.Close()
					code, body = resp.StatusCode, string(b)
					if rerr != nil {
						code = -1
					}
				}
				if code == 200 && !v.valid(in, body, start, time.Now()) {
					code = 0
				}
				l.mu.Lock()
				l.codes[code]++
				if code != 200 && len(l.bad) < 10 {
					l.bad = append(l.bad, fmt.Sprintf("%q → %d %q %v", in, code, strings.TrimSpace(body), err))
				}
				l.mu.Unlock()
				if code != 200 {
					time.Sleep(2 * time.Millisecond)
				}
			}
		}(w)
	}
	return l
}

// total is the number of answers so far.
func (l *reloadLoad) total() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, c := range l.codes {
		n += c
	}
	return n
}

func (l *reloadLoad) halt() {
	l.once.Do(func() { close(l.stop) })
	l.wg.Wait()
}

// end stops the load and checks that every answer was a valid 200.
func (l *reloadLoad) end(t *testing.T) {
	t.Helper()
	l.halt()
	l.mu.Lock()
	defer l.mu.Unlock()
	t.Logf("answers under load: %v (-1: transport error, 0: 200 with a wrong body)", l.codes)
	if l.codes[200] < 100 {
		t.Errorf("only %d answers under load: the load did not run", l.codes[200])
	}
	for code, n := range l.codes {
		if code != 200 {
			t.Errorf("%d answers with status %d under load; first failures: %s", n, code, strings.Join(l.bad, "; "))
		}
	}
}

// waitAnswers waits until the load has made n more requests, so that each
// version serves a while before the next reload.
func waitAnswers(t *testing.T, l *reloadLoad, n int) {
	t.Helper()
	want := l.total() + n
	deadline := time.Now().Add(20 * time.Second)
	for l.total() < want {
		if time.Now().After(deadline) {
			t.Fatalf("the load made fewer than %d requests in 20s", n)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// functionPids lists the processes whose command line runs function fn
// with control socket ctl (`spright function ... --function fn --control ctl`).
func functionPids(fn, ctl string) []int {
	var out []int
	for _, pid := range processesUsing(ctl) {
		b, err := os.ReadFile(filepath.Join("/proc", strconv.Itoa(pid), "cmdline"))
		if err == nil && strings.Contains(string(b), "\x00--function\x00"+fn+"\x00") {
			out = append(out, pid)
		}
	}
	return out
}

// checkGone fails unless function fn's processes are all gone, now and a
// while later (the supervisor must not restart them).
func checkGone(t *testing.T, fn, ctl string, old []int) {
	t.Helper()
	if len(old) == 0 {
		t.Fatalf("no %s process before the reload: the test cannot tell", fn)
	}
	for _, wait := range []time.Duration{0, 1500 * time.Millisecond} {
		time.Sleep(wait)
		if now := functionPids(fn, ctl); len(now) > 0 {
			t.Errorf("%v after the reload: processes of the removed function %s still there (%v; before: %v)", wait, fn, now, old)
		}
		for _, pid := range old {
			if err := syscall.Kill(pid, 0); err == nil {
				t.Errorf("removed function %s's process %d still alive %v after the reload", fn, pid, wait)
			}
		}
	}
}

func mustParse(t *testing.T, yaml string) *standalone.ChainFile {
	t.Helper()
	cf, err := standalone.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	return cf
}

// TestStandaloneReload: Runner.Reload under load from 6 client goroutines:
// a route change, a member added, a member removed (its processes gone and
// not restarted), then a member scaled from 1 to 2 instances and another
// replaced (its behaviour's service time changed: new processes), the
// removed member added back (its tombstoned index revived) while the
// other goes back to 1 instance, a
// refused reload (pool geometry) and a failed one taken back (an added
// function that exits before registering). No request fails; each answer is one of
// the versions that could have served it; after each reload the new
// routes are in force; /metrics counts the reloads.
func TestStandaloneReload(t *testing.T) {
	c := startChainWith(t, reloadYAML, func(o *standalone.Options) {
		o.AdminListen = "127.0.0.1:0"
		o.AllowUnlisted = false // only the runner's processes may join
	})
	ctl := filepath.Join(c.dir, "control.sock")
	v := newVersions(answerV0)
	l := startReloadLoad(t, c.url, 6, v)
	waitAnswers(t, l, 200)

	steps := append(reloadSteps[:len(reloadSteps):len(reloadSteps)], struct {
		what   string
		yaml   string
		answer func(string) string
	}{"instances 1 → 2 and a replacement", `
name: reload
timeout: 2s
pool: {slots: 256, slotSize: 4096}
routes: {"*": [reverse, again]}
functions:
  - name: reverse
    workers: 4
    serviceTime: 10us
  - name: again
    behavior: reverse
    workers: 4
    instances: 2
`, func(s string) string { return s }}, struct {
		what   string
		yaml   string
		answer func(string) string
	}{"removed member added back, instances 2 → 1", `
name: reload
timeout: 2s
pool: {slots: 256, slotSize: 4096}
routes: {"*": [upper, reverse, again]}
functions:
  - name: upper
    workers: 4
  - name: reverse
    workers: 4
    serviceTime: 10us
  - name: again
    behavior: reverse
    workers: 4
`, strings.ToUpper})
	for _, st := range steps {
		var upper []int
		upperNS := ""
		if st.what == "member removed" {
			upper = functionPids("upper", ctl)
			upperNS = proc(t, c.Runner, "upper", 0).Netns()
		}
		var reversePids []int
		if strings.Contains(st.what, "replacement") {
			reversePids = functionPids("reverse", ctl)
		}
		k := v.begin(st.answer)
		began := time.Now()
		if err := c.Reload(mustParse(t, st.yaml)); err != nil {
			t.Fatalf("%s: %v", st.what, err)
		}
		v.end(k)
		t.Logf("%s: reload took %v", st.what, time.Since(began).Round(time.Millisecond))
		for i := 0; i < 20; i++ {
			in := fmt.Sprintf("after-%d", i)
			if code, body, err := post(c.url, in); err != nil || code != 200 || body != st.answer(in) {
				t.Fatalf("%s: right after the reload %q → %d %q %v, want %q", st.what, in, code, body, err, st.answer(in))
			}
		}
		if upper != nil {
			checkGone(t, "upper", ctl, upper)
			out, _ := exec.Command("ip", "netns", "list").Output()
			for _, line := range strings.Split(string(out), "\n") {
				if f := strings.Fields(line); upperNS == "" || len(f) > 0 && f[0] == upperNS {
					t.Errorf("the removed function's network namespace %q is still there:\n%s", upperNS, out)
					break
				}
			}
		}
		if reversePids != nil {
			for _, pid := range reversePids {
				if syscall.Kill(pid, 0) == nil {
					t.Errorf("reverse's old process %d still runs after its replacement", pid)
				}
			}
			if now := functionPids("reverse", ctl); len(now) != 1 {
				t.Errorf("reverse processes after the replacement: %v, want 1", now)
			}
			if now := functionPids("again", ctl); len(now) != 2 {
				t.Errorf("again processes after scaling to 2: %v, want 2", now)
			}
		}
		waitAnswers(t, l, 300)
	}
	procs := c.Procs()
	var names []string
	for _, p := range procs {
		names = append(names, fmt.Sprintf("%s/%d", p.Function, p.Index))
	}
	if got := strings.Join(names, " "); got != "upper/0 reverse/0 again/0" {
		t.Errorf("Procs after the reloads: %s, want upper/0 reverse/0 again/0", got)
	}
	if now := functionPids("again", ctl); len(now) != 1 {
		t.Errorf("again processes after scaling back to 1: %v, want 1", now)
	}

	// Refused: the pool's geometry cannot change in place.
	before := c.Config()
	err := c.Reload(mustParse(t, strings.Replace(steps[len(steps)-1].yaml, "slots: 256", "slots: 512", 1)))
	if !errors.Is(err, standalone.ErrReloadRefused) || !strings.Contains(err.Error(), "pool geometry") {
		t.Errorf("pool geometry change: %v, want ErrReloadRefused naming the pool geometry", err)
	}
	if c.Config() != before {
		t.Errorf("a refused reload changed the config in force")
	}
	// Failed and taken back: an added function whose process exits
	// before it registers. The routes never name it; the chain serves on.
	procsBefore := fmt.Sprint(c.Procs())
	broken := strings.Replace(steps[len(steps)-1].yaml, `routes: {"*": [upper, reverse, again]}`, `routes: {"*": [upper, broken, reverse, again]}`, 1) +
		"  - {name: broken, command: [/bin/false]}\n"
	err = c.Reload(mustParse(t, broken))
	if !errors.Is(err, standalone.ErrReloadFailed) || !strings.Contains(err.Error(), "broken/0 exited before registering") {
		t.Errorf("a function that cannot start: %v, want ErrReloadFailed saying broken/0 exited", err)
	}
	if c.Config() != before || fmt.Sprint(c.Procs()) != procsBefore {
		t.Errorf("a failed reload changed the config in force or the processes: %v, want %v", c.Procs(), procsBefore)
	}
	waitAnswers(t, l, 200)
	l.end(t)

	m := mustScrape(t, c.AdminAddr())
	applied := m[`spright_standalone_reloads_total{chain="reload",result="applied"}`]
	refused := m[`spright_standalone_reloads_total{chain="reload",result="refused"}`]
	if applied != float64(len(steps)) || refused != 2 {
		t.Errorf("reloads_total applied=%v refused=%v, want %d and 2", applied, refused, len(steps))
	}
	if c.Chain.Updates.Load() < uint64(len(steps)) {
		t.Errorf("gateway chain updates %d, want at least %d", c.Chain.Updates.Load(), len(steps))
	}
}

// countIn counts s's occurrences in the run's log.
func (c *cliChain) countIn(s string) int { return strings.Count(c.log.String(), s) }

// waitLog waits until the run's log holds s more than n times.
func (c *cliChain) waitLog(t *testing.T, s string, n int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for c.countIn(s) <= n {
		if time.Now().After(deadline) {
			t.Fatalf("no new %q in the log within 30s", s)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// put sends a chain file to the admin listener's /chain.
func put(t *testing.T, admin, yaml string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPut, "http://"+admin+"/chain", strings.NewReader(yaml))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestStandaloneReloadCLI: a real `spright run` under load from 6 client
// goroutines. The route change arrives by SIGHUP (the -f file rewritten),
// the member added by PUT /chain, the member removed by SIGHUP again (its
// processes gone, not restarted): no request fails and the answers follow
// the routes. Then refused reloads: a pool geometry change by PUT (409
// naming it, logged, the chain serving as before), a new command by PUT
// (403: function processes run as root, so only the file and SIGHUP may
// set a command or env) and a file that does not parse by SIGHUP (logged;
// still serving). GET /chain shows the file in force; /metrics counts 3
// applied and 3 refused; SIGTERM still cleans up
// everything, the namespaces of added and removed functions included.
func TestStandaloneReloadCLI(t *testing.T) {
	admin := "127.0.0.1:" + freePortOn(t, "127.0.0.1")
	c := runCLIWith(t, reloadYAML, "--admin-listen", admin)
	file := c.cmd.Args[3] // run -f FILE
	v := newVersions(answerV0)
	l := startReloadLoad(t, c.url, 6, v)
	waitAnswers(t, l, 200)

	const applied = "chain reloaded"
	for i, st := range reloadSteps {
		byPut := i == 1
		var upper []int
		if st.what == "member removed" {
			upper = functionPids("upper", c.ctl)
		}
		n := c.countIn(applied)
		k := v.begin(st.answer)
		began := time.Now()
		if byPut {
			code, body := put(t, admin, st.yaml)
			if code != 200 || !strings.Contains(body, "function again added") {
				t.Fatalf("%s by PUT: %d %s", st.what, code, body)
			}
			t.Logf("%s by PUT /chain: %v; the reply: %s", st.what, time.Since(began).Round(time.Millisecond), strings.TrimSpace(body))
		} else {
			if err := os.WriteFile(file, []byte(st.yaml), 0o644); err != nil {
				t.Fatal(err)
			}
			if err := c.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
			c.waitLog(t, applied, n)
			t.Logf("%s by SIGHUP: applied after %v", st.what, time.Since(began).Round(time.Millisecond))
		}
		v.end(k)
		for j := 0; j < 20; j++ {
			in := fmt.Sprintf("after-%d", j)
			if code, body, err := post(c.url, in); err != nil || code != 200 || body != st.answer(in) {
				t.Fatalf("%s: right after the reload %q → %d %q %v, want %q", st.what, in, code, body, err, st.answer(in))
			}
		}
		if upper != nil {
			checkGone(t, "upper", c.ctl, upper)
		}
		waitAnswers(t, l, 300)
	}

	// Refused by PUT: the pool geometry.
	last := reloadSteps[len(reloadSteps)-1]
	code, body := put(t, admin, strings.Replace(last.yaml, "slotSize: 4096", "slotSize: 8192", 1))
	if code != http.StatusConflict || !strings.Contains(body, "pool geometry: slotSize (4096 → 8192)") {
		t.Errorf("pool geometry change by PUT: %d %q, want 409 naming the slot size", code, body)
	}
	c.waitLog(t, "pool geometry: slotSize (4096 → 8192)", 0)
	// Refused by PUT: a command (it would run as root) is for the file
	// and SIGHUP only.
	code, body = put(t, admin, last.yaml+"  - {name: sh, command: [/bin/sh, -c, 'touch /tmp/pwned-by-put']}\n")
	if code != http.StatusForbidden || !strings.Contains(body, "only be set through the chain file and SIGHUP") {
		t.Errorf("a new command by PUT: %d %q, want 403", code, body)
	}
	// Refused by SIGHUP: a file that does not parse.
	n := c.countIn("reload not applied")
	os.WriteFile(file, []byte("name: reload\nfunctions: [oops\n"), 0o644)
	c.cmd.Process.Signal(syscall.SIGHUP)
	c.waitLog(t, "reload not applied", n)
	waitAnswers(t, l, 300)
	l.end(t)
	if code, body, err := post(c.url, "abc"); err != nil || code != 200 || body != "abc" {
		t.Errorf("after the refused reloads: %d %q %v, want the last version's answer", code, body, err)
	}

	resp, err := http.Get("http://" + admin + "/chain")
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if cf, err := standalone.Parse(got); err != nil || len(cf.Functions) != 2 || cf.Functions[1].Name != "again" || cf.Routes["*"][0] != "reverse" {
		t.Errorf("GET /chain: %v\n%s", err, got)
	}
	m := mustScrape(t, admin)
	if a, r := m[`spright_standalone_reloads_total{chain="reload",result="applied"}`],
		m[`spright_standalone_reloads_total{chain="reload",result="refused"}`]; a != 3 || r != 3 {
		t.Errorf("reloads_total applied=%v refused=%v, want 3 and 3", a, r)
	}
	if u := m[`spright_gateway_chain_updates_total{chain="reload"}`]; u < 3 {
		t.Errorf("spright_gateway_chain_updates_total %v, want at least 3", u)
	}
	c.stopWith(t, syscall.SIGTERM)
}

// TestStandaloneStopDuringReload: Stop while a reload waits for a new
// function that never registers. Stop does not wait out the reload's 20 s
// registration deadline, the reload returns, and no process or network
// namespace of the chain is left.
func TestStandaloneStopDuringReload(t *testing.T) {
	needRoot(t)
	cf, err := standalone.Parse([]byte(reloadYAML))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ctl := filepath.Join(dir, "control.sock")
	r, err := standalone.Start(cf, standalone.Options{Listen: "127.0.0.1:0", PinDir: "/sys/fs/bpf/spright-e2e-stopreload-" + strconv.Itoa(os.Getpid()),
		ControlSocket: ctl, Executable: spright, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	// A process that joins nothing: the reload waits for it to register.
	nw := mustParse(t, reloadYAML+"  - {name: mute, command: [/bin/sh, -c, 'sleep 60', "+strconv.Quote(ctl)+"]}\n")
	done := make(chan error, 1)
	go func() { done <- r.Reload(nw) }()
	deadline := time.Now().Add(10 * time.Second)
	for len(processesUsing(ctl)) < 3 { // upper, reverse, and mute's shell (its $0 is ctl)
		if time.Now().After(deadline) {
			r.Stop()
			t.Fatalf("the reload's new process did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	start := time.Now()
	if err := r.Stop(); err != nil {
		t.Errorf("stop: %v", err)
	}
	took := time.Since(start)
	t.Logf("Stop during a reload took %v", took.Round(time.Millisecond))
	if took > 8*time.Second {
		t.Errorf("Stop took %v: it waited for the reload", took)
	}
	select {
	case err := <-done:
		if err == nil {
			t.Errorf("the reload succeeded although the runner stopped")
		}
	case <-time.After(5 * time.Second):
		t.Fatalf("Reload did not return after Stop")
	}
	if left := processesUsing(ctl); len(left) > 0 {
		t.Errorf("processes left after Stop: %v", left)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	if prefix := fmt.Sprintf("spright-%d-", os.Getpid()); strings.Contains(string(out), prefix) {
		t.Errorf("network namespaces left after Stop:\n%s", out)
	}
}
