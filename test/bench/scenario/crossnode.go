package scenario

// crossnode: what a hop between nodes costs (issue 13). The hello chain
// (upper → reverse) on two "nodes" — network namespaces joined by a veth
// pair, the NIC stand-in — each running its own `spright run --node`:
// once with both functions on node a (every hop is a local sk_msg
// redirect; node b runs but holds nothing), once split (upper on a,
// reverse on b: each request crosses a→b for reverse and its answer b→a).
// wrk runs inside node a's namespace against a's gateway. The CPU is that
// of both nodes' gateways and functions.

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
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spright-dev/spright/bpf/redirect"
	"github.com/spright-dev/spright/test/bench/internal/benchutil"
)

func init() {
	register(&Scenario{
		Name:  "crossnode",
		Title: "A chain across two nodes (network namespaces joined by a veth): the hello chain all on one node vs split across both",
		Tools: map[string]string{"ip": "iproute2"},
		Run:   runCrossnode,
	})
}

// Systems of the crossnode scenario.
const (
	SysCrossLocal = "spright-local" // both functions on node a
	SysCrossSplit = "spright-split" // upper on a, reverse on b
)

// xnodeNet names the two node namespaces, the veth between them and their
// addresses. The names carry the benchmark's pid, so that runs (and their
// leftovers) never collide; veth names stay within IFNAMSIZ (15).
type xnodeNet struct {
	NS, Veth, IP [2]string
}

func newXnodeNet(pid int) xnodeNet {
	var n xnodeNet
	for i, side := range []string{"a", "b"} {
		n.NS[i] = fmt.Sprintf("spbx-%d-%s", pid, side)
		n.Veth[i] = fmt.Sprintf("spbx%d%s", pid%1000000, side)
		n.IP[i] = fmt.Sprintf("10.252.%d.%d", pid%250, i+1)
	}
	return n
}

// setup is the ip(8) commands that make the two nodes and join them.
func (n xnodeNet) setup() [][]string {
	cmds := [][]string{
		{"netns", "add", n.NS[0]},
		{"netns", "add", n.NS[1]},
		{"link", "add", n.Veth[0], "netns", n.NS[0], "type", "veth", "peer", "name", n.Veth[1], "netns", n.NS[1]},
	}
	for i := range n.NS {
		cmds = append(cmds,
			[]string{"-n", n.NS[i], "link", "set", "lo", "up"},
			[]string{"-n", n.NS[i], "addr", "add", n.IP[i] + "/24", "dev", n.Veth[i]},
			[]string{"-n", n.NS[i], "link", "set", n.Veth[i], "up"})
	}
	return cmds
}

// teardown removes them (the veth goes with its namespaces).
func (n xnodeNet) teardown() [][]string {
	return [][]string{{"netns", "del", n.NS[0]}, {"netns", "del", n.NS[1]}}
}

func (n xnodeNet) url(i int) string   { return "http://" + n.IP[i] + ":8080/" }
func (n xnodeNet) admin(i int) string { return n.IP[i] + ":9091" }

// crossnodeYAML is the chain file both nodes run: the hello chain with
// upper on node a and reverse on a ("local") or b ("split").
func crossnodeYAML(name, keyFile string, n xnodeNet, placement string) (string, error) {
	reverseOn := map[string]string{"local": "a", "split": "b"}[placement]
	if reverseOn == "" {
		return "", fmt.Errorf("crossnode: placement %q: want local or split", placement)
	}
	return fmt.Sprintf(`name: %s
timeout: 10s
pool: {slots: 1024, slotSize: 16384}
nodes:
  - {name: a, peer: "%s:7946"}
  - {name: b, peer: "%s:7946"}
peerKeyFile: %s
routes: {"*": [upper]}
functions:
  - {name: upper, node: a, routes: {"*": [reverse]}}
  - {name: reverse, node: %s}
`, name, n.IP[0], n.IP[1], keyFile, reverseOn), nil
}

// parsePeerCounters reads spright_peer_requests_total{event="…"} from a
// gateway's Prometheus text.
func parsePeerCounters(r io.Reader) (map[string]float64, error) {
	out := map[string]float64{}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	const prefix = `spright_peer_requests_total{event="`
	for sc.Scan() {
		line := sc.Text()
		rest, ok := strings.CutPrefix(line, prefix)
		if !ok {
			continue
		}
		ev, val, ok := strings.Cut(rest, `"} `)
		if !ok {
			return nil, fmt.Errorf("peer counter line %q: unexpected format", line)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil {
			return nil, fmt.Errorf("peer counter line %q: %w", line, err)
		}
		out[ev] = v
	}
	return out, sc.Err()
}

// crossingsPerRequest is how many frames with a request or an answer went
// between the nodes per completed request: what both nodes shipped (hops)
// plus the answers they sent to the entry node, between two readings.
func crossingsPerRequest(before, after [2]map[string]float64, requests float64) float64 {
	if requests <= 0 {
		return 0
	}
	var n float64
	for i := range after {
		n += after[i]["shipped"] - before[i]["shipped"] + after[i]["result_sent"] - before[i]["result_sent"]
	}
	return n / requests
}

// nsClient makes its connections inside netns ns (the socket is created
// there and stays there).
func nsClient(ns string) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true,
		DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
			err = redirect.InNetns(ns, func() error {
				var d net.Dialer
				c, err = d.DialContext(ctx, network, addr)
				return err
			})
			return c, err
		}}}
}

func runCrossnode(ctx context.Context, e *Env, f *File) error {
	conc := Pick(e, []int{1, 8, 32}, []int{8})
	dur := Pick(e, 10*time.Second, 3*time.Second)
	idle := Pick(e, 5*time.Second, 2*time.Second)
	warm := Pick(e, 2*time.Second, time.Second)
	bin, err := e.Binary(ctx, "spright")
	if err != nil {
		return err
	}
	script := filepath.Join(e.Tmp, "crossnode-mix.lua")
	if err := benchutil.WriteMixScript(script, benchutil.PaperMix, 1); err != nil {
		return err
	}
	key := filepath.Join(e.Tmp, "crossnode-peer.key")
	if err := os.WriteFile(key, []byte(fmt.Sprintf("crossnode-bench-%d-%d\n", os.Getpid(), time.Now().UnixNano())), 0o600); err != nil {
		return fmt.Errorf("crossnode: peer key: %w", err)
	}
	n := newXnodeNet(os.Getpid())
	defer func() {
		for _, c := range n.teardown() {
			exec.Command("ip", c...).Run()
		}
	}()
	for _, c := range n.setup() {
		if out, err := exec.Command("ip", c...).CombinedOutput(); err != nil {
			return fmt.Errorf("crossnode: ip %s: %v: %s", strings.Join(c, " "), err, strings.TrimSpace(string(out)))
		}
	}
	f.Method = []string{
		"Two nodes: network namespaces joined by a veth pair (the NIC stand-in), each running its own `spright run -f chain.yaml --node a|b` " +
			"(its own gateway, eBPF pins, pool and function namespaces), linked by the gateways' authenticated peer connection.",
		"The hello chain (upper → reverse, no service time). " + SysCrossLocal + ": both functions on node a, every hop a local sk_msg redirect " +
			"(node b runs, holding nothing). " + SysCrossSplit + ": upper on a, reverse on b: each request's payload crosses a→b once for reverse " +
			"and its answer b→a (extra crossings_per_request: frames with a request or an answer between the nodes, per request, from both " +
			"gateways' spright_peer_requests_total).",
		"POST bodies drawn per request from the paper's mix, " + benchutil.DescribeMix(benchutil.PaperMix) + "; wrk (2 threads, capped at the " +
			"connection count) runs inside node a's namespace against a's gateway; after each run a probe checks POST abc → CBA.",
		fmt.Sprintf("Per placement: idle CPU over %v, a %v warm-up, then wrk for %v at each concurrency %v. CPU: both nodes' gateways "+
			"(the spright run processes) and functions.", idle, warm, dur, conc),
	}
	f.Settings = map[string]any{"concurrency": conc, "duration_s": dur.Seconds(), "idle_s": idle.Seconds(), "mix": benchutil.PaperMix,
		"ratio_pairs": []any{[]any{SysCrossSplit, SysCrossLocal}}}
	for _, placement := range []string{"local", "split"} {
		if err := runCrossPlacement(ctx, e, f, bin, key, script, n, placement, conc, dur, idle, warm); err != nil {
			f.Problems = append(f.Problems, err.Error())
		}
	}
	return nil
}

// runCrossPlacement starts both nodes with the placement's chain file,
// measures it and stops them.
func runCrossPlacement(ctx context.Context, e *Env, f *File, bin, key, script string, n xnodeNet, placement string,
	conc []int, dur, idle, warm time.Duration) error {
	system := map[string]string{"local": SysCrossLocal, "split": SysCrossSplit}[placement]
	name := fmt.Sprintf("xbench%d%s", os.Getpid(), placement)
	yml, err := crossnodeYAML(name, key, n, placement)
	if err != nil {
		return err
	}
	cfg := filepath.Join(e.Tmp, "crossnode-"+placement+".yaml")
	if err := os.WriteFile(cfg, []byte(yml), 0o644); err != nil {
		return fmt.Errorf("%s: write chain file: %w", system, err)
	}
	clients := [2]*http.Client{nsClient(n.NS[0]), nsClient(n.NS[1])}
	probe := func(ctx context.Context) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.url(0), strings.NewReader("abc"))
		if err != nil {
			return err
		}
		resp, err := clients[0].Do(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<10))
		if resp.StatusCode != http.StatusOK || string(b) != "CBA" {
			return fmt.Errorf("POST abc: got %s %q, want 200 \"CBA\"", resp.Status, b)
		}
		return nil
	}
	var nodes [2]*chain
	defer func() {
		for i := len(nodes) - 1; i >= 0; i-- {
			c := nodes[i]
			if c == nil {
				continue
			}
			label := fmt.Sprintf("%s: node %c", system, 'a'+i)
			if err := c.stop(20 * time.Second); err != nil {
				f.Problems = append(f.Problems, label+": "+err.Error())
			}
			p, notes := c.leftovers()
			for _, x := range p {
				f.Problems = append(f.Problems, label+": "+x)
			}
			for _, x := range notes {
				f.Notes = append(f.Notes, label+": "+x)
			}
			if errs, _, err := c.logFindings(); err != nil {
				f.Problems = append(f.Problems, label+": "+err.Error())
			} else {
				for _, l := range errs {
					f.Problems = append(f.Problems, label+": chain log: "+l)
				}
			}
		}
	}()
	// b first: a, which has upper, then finds reverse offered at once.
	for _, i := range []int{1, 0} {
		node := string(rune('a' + i))
		c, err := startNodeChain(bin, cfg, name, n.NS[i], node, n.IP[i]+":8080", n.admin(i), filepath.Join(e.Tmp, fmt.Sprintf("crossnode-%s-%s.log", placement, node)))
		if err != nil {
			return fmt.Errorf("%s: node %s: %w", system, node, err)
		}
		nodes[i] = c
	}
	if err := nodes[0].waitReady(ctx, probe, 60*time.Second); err != nil {
		return fmt.Errorf("%s: %w\nnode a log (tail):\n%s\nnode b log (tail):\n%s", system, err, nodes[0].logTail(15), nodes[1].logTail(15))
	}
	var fnPIDs []int
	for _, c := range nodes {
		tree, err := benchutil.Proc.Tree(c.pid)
		if err != nil {
			return fmt.Errorf("%s: %w", system, err)
		}
		for _, st := range tree[1:] {
			c.functions = append(c.functions, st.Key())
			fnPIDs = append(fnPIDs, st.PID)
		}
	}
	e.Logf("%s: nodes up (a pid %d, b pid %d, %d function processes)", system, nodes[0].pid, nodes[1].pid, len(fnPIDs))
	groups := func() []Group {
		// Functions first: a process is counted in the first class that
		// lists it or an ancestor, and the gateways are the functions'
		// parents.
		return []Group{{Class: "functions", PIDs: fnPIDs}, {Class: "gateway", PIDs: []int{nodes[0].pid, nodes[1].pid}}}
	}
	counters := func() ([2]map[string]float64, error) {
		var out [2]map[string]float64
		for i := range out {
			resp, err := clients[i].Get("http://" + n.admin(i) + "/metrics")
			if err != nil {
				return out, err
			}
			out[i], err = parsePeerCounters(resp.Body)
			resp.Body.Close()
			if err != nil {
				return out, err
			}
		}
		return out, nil
	}
	prev, err := counters()
	if err != nil {
		return fmt.Errorf("%s: peer counters: %w", system, err)
	}
	plan := wrkPlan{System: system, URL: n.url(0), Prefix: []string{"ip", "netns", "exec", n.NS[0]}, Script: script,
		Concurrency: conc, Duration: dur, Idle: idle, Warmup: warm, Groups: groups, Probe: probe,
		Alive: func() error {
			for i, c := range nodes {
				if c.exited() {
					return fmt.Errorf("%s: node %c: spright run exited (%v)\n%s", system, 'a'+i, c.waitErr, c.logTail(15))
				}
			}
			return nil
		},
		Extra: func(en *Entry, u cpuUse) {
			// The window's requests, plus the warm-up's and the previous
			// probe's (a handful next to thousands).
			now, err := counters()
			if err != nil {
				f.Notes = append(f.Notes, fmt.Sprintf("%s: c=%d: peer counters: %v", system, en.Concurrency, err))
				return
			}
			if en.Extra == nil {
				en.Extra = map[string]float64{}
			}
			en.Extra["crossings_per_request"] = crossingsPerRequest(prev, now, float64(en.Requests))
			prev = now
		}}
	return runWrkPlan(ctx, e, f, plan)
}

// startNodeChain runs `spright run --node` inside netns ns, as startChain
// runs a one-node chain (`ip netns exec` execs spright in place, so the pid
// is the runner's own).
func startNodeChain(bin, cfg, name, ns, node, listen, admin, logPath string) (*chain, error) {
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("create chain log: %w", err)
	}
	pin := "/sys/fs/bpf/spright/" + name + "@" + node // spright's default for a node; checked for leftovers
	cmd := exec.Command("ip", "netns", "exec", ns, bin, "run", "-f", cfg, "--node", node, "--listen", listen, "--admin-listen", admin)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGTERM}
	if err := cmd.Start(); err != nil {
		logf.Close()
		return nil, fmt.Errorf("start %s run in netns %s: %w", bin, ns, err)
	}
	c := &chain{name: name, pinDir: pin, logPath: logPath, cmd: cmd, pid: cmd.Process.Pid, done: make(chan struct{})}
	go func() {
		c.waitErr = cmd.Wait()
		logf.Close()
		close(c.done)
	}()
	return c, nil
}
