package e2e

// A chain split across two "nodes" (issue 13 part 2, standalone): two
// network namespaces joined by a veth pair (the NIC stand-in), each
// running its own `spright run --node X` (its own gateway, pin dir, pool
// and function namespaces), the chain's functions assigned to one node or
// to both. Client goroutines load both nodes throughout; the test checks
// every answer, reads the hop counters off each node's /metrics, kills one
// node's `spright run` with SIGKILL (its functions die with it) and
// restarts it, moves a function from one node to the other by reloading
// both nodes' chain.yaml while serving, and kills a node again when the
// survivor has every function.

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/spright-dev/spright/bpf/redirect"
	"github.com/spright-dev/spright/pkg/standalone"
)

// crossYAML is the chain; %[1]s is its name, %[2]s the key file,
// %[3]s/%[4]s the nodes' peer addresses, %[5]s reverse's node, %[6]s
// upper's node, %[7]d its concurrency and %[8]s its service time. "abc" → upper (node a) → reverse → again (a
// reverse again, on both nodes) → "ABC".
const crossYAML = `
name: %[1]s
timeout: 3s
pool: {slots: 256, slotSize: 4096}
nodes:
  - {name: a, peer: "%[3]s"}
  - {name: b, peer: "%[4]s"}
peerKeyFile: %[2]s
routes: {"*": [upper, reverse, again]}
functions:
  - {name: upper, node: "%[6]s", workers: 4, concurrency: %[7]d, serviceTime: %[8]s}
  - {name: reverse, node: "%[5]s", workers: 4}
  - {name: again, behavior: reverse, workers: 4}
`

// xnode is one node: a network namespace with an address on the shared
// veth, and the `spright run --node` in it (nil while it is down).
type xnode struct {
	name, ns, ip string
	file         string // its chain.yaml
	ctl          string
	client       *http.Client
	cmd          *exec.Cmd
	done         chan error
	log          *syncBuffer
}

func (n *xnode) url() string   { return "http://" + n.ip + ":8080/" }
func (n *xnode) admin() string { return "http://" + n.ip + ":9091" }

// xnodeClient is an HTTP client whose connections are made inside netns ns
// (the socket is created there; it stays there whatever thread uses it),
// keeping enough idle connections for the load's workers (netnsClient's
// transport keeps 2 and would dial anew for most requests).
func xnodeClient(ns string) *http.Client {
	dial := func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = redirect.InNetns(ns, func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
	return &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: dial, MaxIdleConnsPerHost: 64, DisableCompression: true}}
}

func ipRun(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
		t.Fatalf("ip %s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// twoNodes makes the two namespaces and the veth between them.
func twoNodes(t *testing.T) (a, b *xnode) {
	t.Helper()
	pid := os.Getpid()
	a = &xnode{name: "a", ns: fmt.Sprintf("spx-%d-a", pid), ip: fmt.Sprintf("10.251.%d.1", pid%250)}
	b = &xnode{name: "b", ns: fmt.Sprintf("spx-%d-b", pid), ip: fmt.Sprintf("10.251.%d.2", pid%250)}
	va, vb := fmt.Sprintf("spx%da", pid%100000), fmt.Sprintf("spx%db", pid%100000)
	for _, n := range []*xnode{a, b} {
		ipRun(t, "netns", "add", n.ns)
		ns := n.ns
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	}
	ipRun(t, "link", "add", va, "netns", a.ns, "type", "veth", "peer", "name", vb, "netns", b.ns)
	for _, x := range []struct {
		n *xnode
		v string
	}{{a, va}, {b, vb}} {
		ipRun(t, "-n", x.n.ns, "link", "set", "lo", "up")
		ipRun(t, "-n", x.n.ns, "addr", "add", x.n.ip+"/24", "dev", x.v)
		ipRun(t, "-n", x.n.ns, "link", "set", x.v, "up")
		x.n.client = xnodeClient(x.n.ns)
	}
	return a, b
}

// start runs `spright run --node` in n's namespace and waits until its
// admin listener answers.
func (n *xnode) start(t *testing.T) {
	t.Helper()
	n.log = &syncBuffer{}
	n.done = make(chan error, 1)
	n.cmd = exec.Command("ip", "netns", "exec", n.ns, spright, "run", "-f", n.file, "--node", n.name,
		"--listen", n.ip+":8080", "--admin-listen", n.ip+":9091", "--control", n.ctl)
	n.cmd.Stdout, n.cmd.Stderr = os.Stderr, io.MultiWriter(os.Stderr, n.log)
	n.cmd.WaitDelay = 10 * time.Second
	if err := n.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	cmd, done := n.cmd, n.done
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		select {
		case err := <-done:
			done <- err
		case <-time.After(15 * time.Second):
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		if resp, err := n.client.Get(n.admin() + "/metrics"); err == nil {
			resp.Body.Close()
			return
		}
		select {
		case err := <-n.done:
			t.Fatalf("node %s: spright run exited: %v\n%s", n.name, err, tail(n.log.String(), 30))
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("node %s not serving after 30s:\n%s", n.name, tail(n.log.String(), 30))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill9 kills the node's `spright run` (`ip netns exec` exec'd it, so the
// pid is spright's own); its functions die with it (Pdeathsig). What a
// runner killed so cannot clean up — its functions' network namespaces,
// spright-<pid>-N — is removed by hand, as the README tells users to.
func (n *xnode) kill9(t *testing.T) {
	t.Helper()
	pid := n.cmd.Process.Pid
	n.cmd.Process.Signal(syscall.SIGKILL)
	select {
	case err := <-n.done:
		n.done <- err
	case <-time.After(10 * time.Second):
		t.Fatalf("node %s did not die", n.name)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 && strings.HasPrefix(f[0], fmt.Sprintf("spright-%d-", pid)) {
			exec.Command("ip", "netns", "del", f[0]).Run()
		}
	}
}

// stop ends the node with SIGTERM; it must exit 0 after cleaning up.
func (n *xnode) stop(t *testing.T) {
	t.Helper()
	n.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-n.done:
		if err != nil {
			t.Errorf("node %s: spright run exited with %v after SIGTERM", n.name, err)
		}
		n.done <- err
	case <-time.After(20 * time.Second):
		t.Errorf("node %s did not stop within 20s of SIGTERM", n.name)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	if prefix := fmt.Sprintf("spright-%d-", n.cmd.Process.Pid); strings.Contains(string(out), prefix) {
		t.Errorf("node %s left network namespaces behind:\n%s", n.name, out)
	}
}

// peerCounters reads spright_peer_requests_total{event} and
// spright_peer_links off the node's /metrics.
func (n *xnode) peerCounters(t *testing.T) map[string]float64 {
	t.Helper()
	resp, err := n.client.Get(n.admin() + "/metrics")
	if err != nil {
		t.Fatalf("node %s metrics: %v", n.name, err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		m := metricLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, _ := strconv.ParseFloat(m[3], 64)
		switch {
		case m[1] == "spright_peer_requests_total":
			out[strings.TrimSuffix(strings.TrimPrefix(m[2], `{event="`), `"}`)] = v
		case m[1] == "spright_peer_links", m[1] == "spright_pool_free_slots", m[1] == "spright_pool_slots":
			out[m[1]] = v
		}
	}
	return out
}

func diff(after, before map[string]float64) map[string]float64 {
	out := map[string]float64{}
	for k, v := range after {
		out[k] = v - before[k]
	}
	return out
}

// put sends a chain file to the node's PUT /chain.
func (n *xnode) put(t *testing.T, yaml string) string {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPut, n.admin()+"/chain", strings.NewReader(yaml))
	resp, err := n.client.Do(req)
	if err != nil {
		t.Fatalf("PUT /chain on %s: %v", n.name, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		t.Fatalf("PUT /chain on %s: %s %s", n.name, resp.Status, b)
	}
	return strings.TrimSpace(string(b))
}

func (n *xnode) ask(in string) (int, string, error) {
	resp, err := n.client.Post(n.url(), "text/plain", strings.NewReader(in))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// outcome is one request of the load.
type outcome struct {
	node       string
	start, end time.Time
	code       int // 0: transport error
	ok         bool
}

// xload runs client goroutines against nodes until stopped.
type xload struct {
	mu   sync.Mutex
	outs []outcome
	stop chan struct{}
	wg   sync.WaitGroup
}

func startXLoad(workers int, nodes ...*xnode) *xload {
	l := &xload{stop: make(chan struct{})}
	for _, n := range nodes {
		for w := 0; w < workers; w++ {
			l.wg.Add(1)
			go func(n *xnode, w int) {
				defer l.wg.Done()
				for i := 0; ; i++ {
					select {
					case <-l.stop:
						return
					default:
					}
					in := fmt.Sprintf("%s-%d-%d-xyz", n.name, w, i)
					start := time.Now()
					code, body, err := n.ask(in)
					o := outcome{node: n.name, start: start, end: time.Now(), code: code, ok: err == nil && code == 200 && body == strings.ToUpper(in)}
					if err != nil {
						o.code = 0
						time.Sleep(10 * time.Millisecond) // a node that is down: do not spin
					}
					l.mu.Lock()
					l.outs = append(l.outs, o)
					l.mu.Unlock()
				}
			}(n, w)
		}
	}
	return l
}

func (l *xload) halt() []outcome {
	close(l.stop)
	l.wg.Wait()
	return l.outs
}

// tally counts outcomes by status ("bad" = 200 with a wrong answer,
// "conn" = transport error).
func tally(outs []outcome) map[string]int {
	m := map[string]int{}
	for _, o := range outs {
		switch {
		case o.ok:
			m["200"]++
		case o.code == 200:
			m["bad"]++
		case o.code == 0:
			m["conn"]++
		default:
			m[strconv.Itoa(o.code)]++
		}
	}
	return m
}

func TestChainAcrossTwoNodes(t *testing.T) {
	needRoot(t)
	a, b := twoNodes(t)
	dir := t.TempDir()
	key := filepath.Join(dir, "peer.key")
	if err := os.WriteFile(key, []byte("two-node-e2e-key-0123456789abcdef\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	name := fmt.Sprintf("x%d", os.Getpid())
	// A node killed with SIGKILL leaves its pool file (kept for a restart
	// to reopen) and the lock file of its pin dir; the test removes them.
	t.Cleanup(func() {
		for _, n := range []string{"a", "b"} {
			pin := standalone.DefaultPinDir(name, n)
			for _, d := range poolFilesLeft(pin) {
				os.RemoveAll(d)
			}
			os.Remove("/run/spright/pins" + strings.ReplaceAll(pin, "/", "_") + ".lock")
		}
	})
	yamlOf := func(reverseNode, upperNode string, upperConc int, upperTime string) string {
		return fmt.Sprintf(crossYAML, name, key, a.ip+":7946", b.ip+":7946", reverseNode, upperNode, upperConc, upperTime)
	}
	for _, n := range []*xnode{a, b} {
		n.file = filepath.Join(dir, n.name+".yaml")
		n.ctl = filepath.Join(dir, n.name+".sock")
		if err := os.WriteFile(n.file, []byte(yamlOf("b", "a", 0, "0s")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// A world-readable key is refused before anything starts.
	if err := os.Chmod(key, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ip", "netns", "exec", a.ns, spright, "run", "-f", a.file, "--node", "a", "--admin-listen", "").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "too open") {
		t.Fatalf("spright run with a world-readable key: %v\n%s", err, out)
	}
	t.Logf("world-readable key refused: %s", strings.TrimSpace(string(out)))
	os.Chmod(key, 0o600)
	// So is a run that does not say which node it is.
	out, err = exec.Command("ip", "netns", "exec", a.ns, spright, "run", "-f", a.file, "--admin-listen", "").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--node NAME") {
		t.Fatalf("spright run of a split chain without --node: %v\n%s", err, out)
	}

	a.start(t)
	b.start(t)
	waitUntil(t, 20*time.Second, "both nodes to serve the whole chain", func() bool {
		ca, ba, _ := a.ask("abc")
		cb, bb, _ := b.ask("abc")
		return ca == 200 && ba == "ABC" && cb == 200 && bb == "ABC"
	})

	// Hops, one request at a time: entering a, upper runs on a, reverse
	// crosses to b, again runs on b (local first), the answer returns to
	// a. Entering b: upper crosses to a, reverse crosses back to b,
	// again on b, answered on b.
	const each = 50
	ba0, bb0 := a.peerCounters(t), b.peerCounters(t)
	for i := 0; i < each; i++ {
		for _, n := range []*xnode{a, b} {
			in := fmt.Sprintf("hop-%s-%d", n.name, i)
			if code, body, err := n.ask(in); code != 200 || body != strings.ToUpper(in) {
				t.Fatalf("entering %s: %d %q %v", n.name, code, body, err)
			}
		}
	}
	da, db := diff(a.peerCounters(t), ba0), diff(b.peerCounters(t), bb0)
	t.Logf("%d requests entering each node; node a: %v; node b: %v", each, da, db)
	for _, c := range []struct {
		node      string
		got       map[string]float64
		ev        string
		want      float64
		crossings string
	}{
		{"a", da, "shipped", 2 * each, "a→b reverse (entered a) + a→b reverse (entered b)"},
		{"a", da, "received", each, "b→a upper (entered b)"},
		{"a", da, "answered", each, "answers from b (entered a)"},
		{"a", da, "result_sent", 0, "none: no chain ends on a"},
		{"b", db, "shipped", each, "b→a upper (entered b)"},
		{"b", db, "received", 2 * each, "reverse hops from a"},
		{"b", db, "result_sent", each, "b→a answers (entered a)"},
		{"b", db, "answered", each, "its own requests, back from the hop"},
		{"a", da, "failed", 0, ""}, {"b", db, "failed", 0, ""}, {"a", da, "refused", 0, ""}, {"b", db, "refused", 0, ""},
	} {
		if c.got[c.ev] != c.want {
			t.Errorf("node %s: %s %v, want %v (%s)", c.node, c.ev, c.got[c.ev], c.want, c.crossings)
		}
	}

	// Load on both nodes, then b's spright run is killed while a's
	// clients go on: a fails what b held (502), then answers 503 at once
	// (b had the only reverse).
	const workers = 4
	l := startXLoad(workers, a, b)
	time.Sleep(2 * time.Second)
	outs := l.halt()
	tl := tally(outs)
	t.Logf("split chain under load, 2 s: %v (%.0f req/s)", tl, float64(len(outs))/2)
	if tl["200"] != len(outs) || len(outs) < 100 {
		t.Fatalf("split chain under load: %v", tl)
	}

	la := startXLoad(workers, a)
	time.Sleep(time.Second)
	killed := time.Now()
	b.kill9(t)
	time.Sleep(1500 * time.Millisecond)
	restarted := time.Now()
	b.start(t)
	// The link is back once a routes reverse to b again.
	var firstCross time.Time
	waitUntil(t, 20*time.Second, "a request entering a answered through the restarted b", func() bool {
		la.mu.Lock()
		defer la.mu.Unlock()
		for _, o := range la.outs {
			if o.start.After(restarted) && o.ok {
				firstCross = o.end
				return true
			}
		}
		return false
	})
	time.Sleep(time.Second)
	outs = la.halt()
	var before, after, down []outcome
	for _, o := range outs {
		switch {
		case o.end.Before(killed):
			before = append(before, o)
		case o.start.After(firstCross):
			after = append(after, o)
		default:
			down = append(down, o)
		}
	}
	td := tally(down)
	var fail503 []time.Duration
	var first503 time.Time
	lastFail := killed
	for _, o := range down {
		if o.code == 503 {
			fail503 = append(fail503, o.end.Sub(o.start))
			if first503.IsZero() || o.end.Before(first503) {
				first503 = o.end
			}
		}
		if !o.ok && o.end.After(lastFail) {
			lastFail = o.end
		}
	}
	sort.Slice(fail503, func(i, j int) bool { return fail503[i] < fail503[j] })
	p99 := time.Duration(0)
	if len(fail503) > 0 {
		p99 = fail503[len(fail503)*99/100]
	}
	t.Logf("b killed under load entering a: before %v; while b was down or coming back %v (first 503 %v after the kill, 503 latency p99 %v); "+
		"b restarted %v after the kill, first answer through it %v after the restart; after: %v",
		tally(before), td, first503.Sub(killed).Round(time.Millisecond), p99, restarted.Sub(killed).Round(time.Millisecond),
		firstCross.Sub(restarted).Round(time.Millisecond), tally(after))
	if tally(before)["200"] != len(before) || tally(after)["200"] != len(after) || len(after) == 0 {
		t.Errorf("requests failed while both nodes were up")
	}
	if td["502"] > workers {
		t.Errorf("%d requests failed with 502 when b died; at most the %d in flight may", td["502"], workers)
	}
	if td["bad"] > 0 || td["conn"] > 0 || td["200"]+td["502"]+td["503"] != len(down) {
		t.Errorf("while b was down: %v (only 200, 502 and 503 expected)", td)
	}
	if td["503"] == 0 {
		t.Errorf("no 503 while b was down: %v", td)
	}
	if p99 > 100*time.Millisecond {
		t.Errorf("503 without a reverse took %v (p99): want it answered at once", p99)
	}

	// The nodes cannot change in a reload: refused (409), nothing changes.
	req, _ := http.NewRequest(http.MethodPut, a.admin()+"/chain", strings.NewReader(strings.Replace(yamlOf("b", "a", 0, "0s"), b.ip+":7946", b.ip+":7947", 1)))
	if resp, err := a.client.Do(req); err != nil {
		t.Fatal(err)
	} else {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusConflict || !strings.Contains(string(body), "nodes (") {
			t.Errorf("PUT /chain moving node b's peer address: %s %s, want 409 naming nodes", resp.Status, body)
		}
		t.Logf("a reload that changes the nodes: %s %s", resp.Status, strings.TrimSpace(string(body)))
	}

	// Move reverse from b to a while both serve: first every node runs it
	// (a starts one), then only a (b's leaves, drained).
	l = startXLoad(workers, a, b)
	time.Sleep(500 * time.Millisecond)
	both, onA := yamlOf("", "a", 0, "0s"), yamlOf("a", "a", 0, "0s")
	moveStart := time.Now()
	t.Logf("a, reverse on every node: %s", a.put(t, both))
	t.Logf("b, reverse on every node: %s", b.put(t, both))
	time.Sleep(500 * time.Millisecond)
	t.Logf("b, reverse on a: %s", b.put(t, onA))
	t.Logf("a, reverse on a: %s", a.put(t, onA))
	moved := time.Since(moveStart)
	time.Sleep(time.Second)
	outs = l.halt()
	tl = tally(outs)
	t.Logf("move of reverse b → a under load (%v of reloads): %v", moved.Round(time.Millisecond), tl)
	if tl["200"] != len(outs) {
		t.Errorf("moving reverse while serving: %v (want every request 200 with the right answer)", tl)
	}
	// After the move a has the whole chain: what enters a stays on a; what
	// enters b crosses to a once (upper, reverse and again on a, local
	// first) and its answer comes back.
	ba0, bb0 = a.peerCounters(t), b.peerCounters(t)
	for i := 0; i < each; i++ {
		for _, n := range []*xnode{a, b} {
			in := fmt.Sprintf("moved-%s-%d", n.name, i)
			if code, body, err := n.ask(in); code != 200 || body != strings.ToUpper(in) {
				t.Fatalf("after the move, entering %s: %d %q %v", n.name, code, body, err)
			}
		}
	}
	da, db = diff(a.peerCounters(t), ba0), diff(b.peerCounters(t), bb0)
	t.Logf("after the move, %d requests entering each node: a %v, b %v", each, da, db)
	if da["shipped"] != 0 || da["received"] != each || da["result_sent"] != each || db["shipped"] != each || db["answered"] != each || db["received"] != 0 {
		t.Errorf("hops after the move: a %v, b %v (want b→a only, answered back)", da, db)
	}

	// Kill b again, now that a runs every function; upper runs on both
	// nodes, with concurrency 1 and 2 ms per request: a's gateway, which
	// picks the first function by residual capacity (the eBPF in-flight
	// counters), sends the overflow to b, so some of a's requests are on
	// b when it dies. (Functions pick the next hop without in-flight
	// counts, local first, so a hop between functions does not overflow.)
	overflow := yamlOf("a", "", 1, "2ms")
	t.Logf("b, upper on every node, concurrency 1, 2 ms: %s", b.put(t, overflow))
	t.Logf("a, upper on every node, concurrency 1, 2 ms: %s", a.put(t, overflow))
	cStart := a.peerCounters(t)
	la = startXLoad(workers, a)
	time.Sleep(time.Second)
	c0 := diff(a.peerCounters(t), cStart)
	killed = time.Now()
	b.kill9(t)
	time.Sleep(2 * time.Second)
	outs = la.halt()
	c1 := diff(a.peerCounters(t), cStart)
	before, down = nil, nil
	lastFail = time.Time{}
	for _, o := range outs {
		if o.end.Before(killed) {
			before = append(before, o)
		} else {
			down = append(down, o)
			if !o.ok {
				lastFail = o.end
			}
		}
	}
	td = tally(down)
	recovery := time.Duration(0)
	if !lastFail.IsZero() {
		recovery = lastFail.Sub(killed)
	}
	t.Logf("b killed while a sent upper's overflow there (a shipped %v in the second before the kill): before %v, after %v; last failure %v after the kill; a's peer counters across the kill %v",
		c0["shipped"], tally(before), td, recovery.Round(time.Millisecond), diff(c1, c0))
	if c0["shipped"] < 10 {
		t.Errorf("a never sent upper's overflow to b: the kill tests nothing")
	}
	if td["502"] > workers || td["200"]+td["502"] != len(down) {
		t.Errorf("survivor with every function: %v after b died; want 200s but for at most %d × 502", td, workers)
	}
	if d := diff(c1, c0); d["refused"] != 0 {
		t.Errorf("b's death counted as %v refused frame(s) on a", d["refused"])
	}
	if recovery > time.Second {
		t.Errorf("a failed requests for %v after b died", recovery)
	}
	// Nothing a held is left behind: every slot of its pool is free.
	waitUntil(t, 5*time.Second, "a's slots all free", func() bool {
		m := a.peerCounters(t)
		return m["spright_pool_slots"] > 0 && m["spright_pool_free_slots"] == m["spright_pool_slots"]
	})
	a.stop(t)
	if left := poolFilesLeft(standalone.DefaultPinDir(name, "a")); len(left) > 0 {
		t.Errorf("node a left pool files behind after SIGTERM: %v", left)
	}
}
