package bpf

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/cilium/ebpf"
	"golang.org/x/sys/unix"
)

// CPU of the proxy per request (brief item 5). The client and the upstream
// run in a child process (this test binary, TestSpliceCPUChild), so the
// parent's getrusage is the proxy alone: the splicing proxy, and for
// comparison two userspace proxies over the same flow (first request read
// in userspace, then copying): io.Copy (which Go turns into splice(2)
// between TCP sockets) and a plain read/write loop.

const (
	cpuChildEnv    = "SPRIGHT_SPLICE_CPU_CHILD" // proxy address
	cpuRequestsEnv = "SPRIGHT_SPLICE_CPU_REQUESTS"
	cpuReqLen      = 200  // request body bytes
	cpuRespLen     = 2000 // response body bytes
)

// TestSpliceCPUChild is the child of TestSpliceCPU: an upstream and a
// keep-alive client of the proxy. It talks to the parent over stdin/stdout.
func TestSpliceCPUChild(t *testing.T) {
	proxy := os.Getenv(cpuChildEnv)
	if proxy == "" {
		t.Skip("helper process of TestSpliceCPU")
	}
	n, _ := strconv.Atoi(os.Getenv(cpuRequestsEnv))
	up := newUpstream(t)
	in := bufio.NewReader(os.Stdin)
	expect := func(word string) {
		if l, _ := in.ReadString('\n'); strings.TrimSpace(l) != word {
			t.Fatalf("child: got %q from the parent, want %s", l, word)
		}
	}
	fmt.Printf("UPSTREAM %s\n", up.ln.Addr())
	expect("GO")
	cl := dialClient(t, proxy, 0)
	if err := cl.do(0, cpuReqLen, cpuRespLen, 1, ""); err != nil {
		t.Fatal(err)
	}
	fmt.Println("READY")
	expect("RUN")
	r0 := rusage(t, unix.RUSAGE_SELF)
	t0 := time.Now()
	for i := 1; i <= n; i++ {
		if err := cl.do(i, cpuReqLen, cpuRespLen, 1, ""); err != nil {
			t.Fatal(err)
		}
	}
	wall := time.Since(t0)
	r1 := rusage(t, unix.RUSAGE_SELF)
	fmt.Printf("DONE %d %d\n", r1-r0, wall)
	expect("EXIT")
}

// rusage is user+system CPU time of who, in ns.
func rusage(t testing.TB, who int) time.Duration {
	var ru unix.Rusage
	if err := unix.Getrusage(who, &ru); err != nil {
		t.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// systemBusy is the CPU time of the whole machine, all CPUs, that was not
// idle (from /proc/stat; USER_HZ = 100).
func systemBusy(t testing.TB) time.Duration {
	b, err := os.ReadFile("/proc/stat")
	if err != nil {
		t.Fatal(err)
	}
	f := strings.Fields(strings.SplitN(string(b), "\n", 2)[0])
	var busy int64
	for i, v := range f[1:] {
		if i == 3 || i == 4 { // idle, iowait
			continue
		}
		n, _ := strconv.ParseInt(v, 10, 64)
		busy += n
	}
	return time.Duration(busy) * 10 * time.Millisecond
}

// kworkers is the CPU time of the kernel's workqueue threads (where the
// splice backlog sends the forwarded bytes), from /proc/*/stat.
func kworkers(t testing.TB) time.Duration {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		t.Fatal(err)
	}
	var ticks int64
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		st := string(b)
		i, j := strings.IndexByte(st, '('), strings.LastIndexByte(st, ')')
		if i < 0 || j < i || !strings.HasPrefix(st[i+1:j], "kworker") {
			continue
		}
		f := strings.Fields(st[j+1:]) // f[0] is field 3 (state)
		u, _ := strconv.ParseInt(f[11], 10, 64)
		s, _ := strconv.ParseInt(f[12], 10, 64)
		ticks += u + s
	}
	return time.Duration(ticks) * 10 * time.Millisecond
}

// copyProxy is the userspace baseline: the same first-request handling,
// then two copy loops.
func copyProxy(t testing.TB, upstream func() string, readWrite bool) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	cp := func(dst, src *net.TCPConn) {
		if readWrite {
			// Hide ReaderFrom/WriterTo: a read and a write per chunk.
			io.CopyBuffer(struct{ io.Writer }{dst}, struct{ io.Reader }{src}, make([]byte, 32<<10))
		} else {
			io.Copy(dst, src)
		}
		dst.CloseWrite()
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				a := c.(*net.TCPConn)
				defer a.Close()
				first, err := readFirstRequest(a)
				if err != nil {
					return
				}
				bc, err := net.Dial("tcp", upstream())
				if err != nil {
					return
				}
				b := bc.(*net.TCPConn)
				defer b.Close()
				if _, err := b.Write(first); err != nil {
					return
				}
				done := make(chan struct{})
				go func() { cp(a, b); close(done) }()
				cp(b, a)
				<-done
			}()
		}
	}()
	return ln
}

type cpuResult struct {
	mode                 string
	n                    int
	proxy, child, system time.Duration
	wall                 time.Duration
	wakeA, wakeB         int64
	verdictRuns, msgRuns uint64
	verdictTime, msgTime time.Duration
	in                   uint64 // requests counted before this run
	kworker              time.Duration
}

func (r cpuResult) String() string {
	per := func(d time.Duration) string {
		return fmt.Sprintf("%.2f µs", float64(d.Nanoseconds())/float64(r.n)/1e3)
	}
	s := fmt.Sprintf("%-10s %d requests in %v (%.0f req/s): proxy process %s/req, client+upstream process %s/req, kworkers %s/req, whole machine %s/req",
		r.mode, r.n, r.wall.Round(time.Millisecond), float64(r.n)/r.wall.Seconds(), per(r.proxy), per(r.child), per(r.kworker), per(r.system))
	if strings.HasPrefix(r.mode, "splice") {
		s += fmt.Sprintf("; watchers woken A %d, B %d; verdict %d runs %s/req, sk_msg %d runs %s/req (eBPF run time)",
			r.wakeA, r.wakeB, r.verdictRuns, per(r.verdictTime), r.msgRuns, per(r.msgTime))
	}
	return s
}

// runCPU runs n requests of the child's client through the proxy of mode
// on one connection and measures CPU.
func runCPU(t *testing.T, d *Datapath, mode string, n int) cpuResult {
	t.Helper()
	var upstreamAddr atomic.Value
	upstreamAddr.Store("")
	upstream := func() string { return upstreamAddr.Load().(string) }
	var (
		proxyAddr string
		sp        *spliceProxy
	)
	switch mode {
	case "splice", "splice+hangup":
		var w *HangupWatcher
		if mode == "splice+hangup" {
			var err error
			if w, err = NewHangupWatcher(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { w.Close() })
		}
		sp = newSpliceProxy(t, d, 100, "")
		sp.hangup = w
		proxyAddr = sp.ln.Addr().String()
	case "io.Copy":
		proxyAddr = copyProxy(t, upstream, false).Addr().String()
	case "read/write":
		proxyAddr = copyProxy(t, upstream, true).Addr().String()
	}

	cmd := exec.Command(os.Args[0], "-test.run=^TestSpliceCPUChild$", "-test.count=1")
	cmd.Env = append(os.Environ(), cpuChildEnv+"="+proxyAddr, cpuRequestsEnv+"="+strconv.Itoa(n))
	stdin, _ := cmd.StdinPipe()
	stdout, _ := cmd.StdoutPipe()
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	out := bufio.NewReader(stdout)
	line := func(prefix string) []string {
		t.Helper()
		for {
			l, err := out.ReadString('\n')
			if err != nil {
				t.Fatalf("child ended before %s: %v", prefix, err)
			}
			if f := strings.Fields(l); len(f) > 0 && f[0] == prefix {
				return f[1:]
			}
		}
	}
	addr := line("UPSTREAM")[0]
	upstreamAddr.Store(addr)
	if sp != nil {
		sp.upstream = addr
	}
	fmt.Fprintln(stdin, "GO")
	line("READY")
	var sc *splicedConn
	if sp != nil {
		sc = sp.next(t)
	}

	var vs0, ms0 *ebpf.ProgramStats
	var in0 uint64
	if sp != nil {
		in0 = metrics(t, d, 100).RequestsIn - 1 // the first request is counted already
		vs0, _ = d.objs.SprightSpliceVerdict.Stats()
		ms0, _ = d.objs.SprightSpliceMsg.Stats()
	}
	var ru0, ru1 unix.Rusage
	unix.Getrusage(unix.RUSAGE_SELF, &ru0)
	p0, s0, k0 := rusage(t, unix.RUSAGE_SELF), systemBusy(t), kworkers(t)
	fmt.Fprintln(stdin, "RUN")
	done := line("DONE")
	p1, s1, k1 := rusage(t, unix.RUSAGE_SELF), systemBusy(t), kworkers(t)
	unix.Getrusage(unix.RUSAGE_SELF, &ru1)
	t.Logf("%s: proxy user %v sys %v, voluntary switches %d, involuntary %d", mode,
		time.Duration(ru1.Utime.Nano()-ru0.Utime.Nano()), time.Duration(ru1.Stime.Nano()-ru0.Stime.Nano()), ru1.Nvcsw-ru0.Nvcsw, ru1.Nivcsw-ru0.Nivcsw)
	child, _ := strconv.ParseInt(done[0], 10, 64)
	wall, _ := strconv.ParseInt(done[1], 10, 64)
	r := cpuResult{mode: mode, n: n, proxy: p1 - p0, child: time.Duration(child), system: s1 - s0, wall: time.Duration(wall), in: in0, kworker: k1 - k0}
	if sc != nil {
		r.wakeA, r.wakeB = sc.wakeA.Load(), sc.wakeB.Load()
		if vs1, err := d.objs.SprightSpliceVerdict.Stats(); err == nil && vs0 != nil {
			r.verdictRuns, r.verdictTime = vs1.RunCount-vs0.RunCount, vs1.Runtime-vs0.Runtime
		}
		if ms1, err := d.objs.SprightSpliceMsg.Stats(); err == nil && ms0 != nil {
			r.msgRuns, r.msgTime = ms1.RunCount-ms0.RunCount, ms1.Runtime-ms0.Runtime
		}
	}
	fmt.Fprintln(stdin, "EXIT")
	if sc != nil {
		waitClosed(t, sc)
		m := metrics(t, d, 100)
		if m.RequestsIn != r.in+uint64(n+1) || m.ResponsesOut != r.in+uint64(n+1) || m.Inflight != 0 {
			t.Errorf("splice metrics %+v, want %d more requests and responses", m, n+1)
		}
	}
	return r
}

// TestSpliceCPU measures the proxy's CPU per request: spliced, the proxy
// process does nothing per request (its reads stay parked).
func TestSpliceCPU(t *testing.T) {
	if os.Getenv(cpuChildEnv) != "" {
		t.Skip("in the helper process")
	}
	if testing.Short() {
		t.Skip("-short")
	}
	d := loadSplice(t)
	if s, err := ebpf.EnableStats(uint32(unix.BPF_STATS_RUN_TIME)); err == nil {
		defer s.Close()
	}
	const n = 10000
	res := map[string]cpuResult{}
	for _, mode := range strings.Fields(envOr("SPRIGHT_SPLICE_CPU_MODES", "splice splice+hangup io.Copy read/write")) {
		r := runCPU(t, d, mode, n)
		res[mode] = r
		t.Log(r)
	}
	// Generous bounds; the figures are in the log. The spliced proxy's
	// process CPU is scheduling noise only.
	if len(res) < 4 {
		return
	}
	sp, cp := res["splice+hangup"].proxy, res["io.Copy"].proxy
	if sp > cp/4 {
		t.Errorf("splicing proxy used %v for %d requests, io.Copy proxy %v: want less than a quarter", sp, n, cp)
	}
	if per := sp / n; per > 2*time.Microsecond {
		t.Errorf("splicing proxy used %v per request, want near zero", per)
	}
}

// benchProxy runs b.N keep-alive requests (200-byte bodies, 2000-byte
// responses) through the proxy at addr, in this process, and reports the
// whole process's CPU and the kernel workqueue's CPU per request.
func benchProxy(b *testing.B, addr string, after func()) {
	cl := dialClient(b, addr, 0)
	if err := cl.do(0, cpuReqLen, cpuRespLen, 1, ""); err != nil {
		b.Fatal(err)
	}
	if after != nil {
		after()
	}
	p0, k0 := rusage(b, unix.RUSAGE_SELF), kworkers(b)
	b.ResetTimer()
	for i := 1; i <= b.N; i++ {
		if err := cl.do(i, cpuReqLen, cpuRespLen, 1, ""); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	p1, k1 := rusage(b, unix.RUSAGE_SELF), kworkers(b)
	b.ReportMetric(float64((p1-p0).Nanoseconds())/float64(b.N), "process-cpu-ns/op")
	b.ReportMetric(float64((k1-k0).Nanoseconds())/float64(b.N), "kworker-cpu-ns/op")
}

// BenchmarkSplice: client, spliced proxy (sockets watched by a
// HangupWatcher) and upstream in one process; process CPU includes the
// client and the upstream.
func BenchmarkSplice(b *testing.B) {
	d, err := Load(pinDir(b))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { d.Unpin(); d.Close() })
	w, err := NewHangupWatcher()
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { w.Close() })
	up := newUpstream(b)
	p := newSpliceProxy(b, d, 1, up.ln.Addr().String())
	p.hangup = w
	benchProxy(b, p.ln.Addr().String(), func() { p.next(b) })
}

// BenchmarkUserspaceCopy: the same with a userspace io.Copy proxy.
func BenchmarkUserspaceCopy(b *testing.B) {
	if os.Geteuid() != 0 {
		b.Skip("compared with BenchmarkSplice, which needs root")
	}
	up := newUpstream(b)
	addr := up.ln.Addr().String()
	benchProxy(b, copyProxy(b, func() string { return addr }, false).Addr().String(), nil)
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}
