package eproxy

import (
	"context"
	"errors"
	"fmt"
	"github.com/spright-dev/spright/internal/testlog"
	"net"
	"runtime"
	"sort"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/pkg/websocket"
	"knative.dev/serving/pkg/autoscaler/metrics"
	"knative.dev/serving/pkg/autoscaler/statserver"

	"github.com/spright-dev/spright/bpf"
)

// statServerIP is a loopback alias standing in for autoscaler.knative-serving.
const statServerIP = "127.0.0.43"

func freePort(t *testing.T, ip string) string {
	t.Helper()
	l, err := net.Listen("tcp", net.JoinHostPort(ip, "0"))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return net.JoinHostPort(ip, fmt.Sprint(l.Addr().(*net.TCPAddr).Port))
}

// startStatServer runs knative.dev/serving's autoscaler stat server on addr
// and returns the channel it delivers StatMessages on.
// stop shuts it down (once); call it before shutting down a client
// connection, which otherwise waits out its read deadline (10 s).
func startStatServer(t *testing.T, addr string) (ch <-chan metrics.StatMessage, stop func()) {
	t.Helper()
	sink := make(chan metrics.StatMessage, 1024)
	srv := statserver.New(addr, sink, testlog.CleanupLogger(t, zapcore.DebugLevel).Sugar(), nil)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	deadline := time.Now().Add(5 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
			break
		}
		select {
		case err := <-errc:
			t.Fatalf("stat server on %s: %v", addr, err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("stat server on %s did not come up: %v", addr, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	var once sync.Once
	stop = func() { once.Do(func() { srv.Shutdown(time.Second) }) }
	t.Cleanup(stop)
	return sink, stop
}

// dialStatServer opens the activator's kind of connection to addr.
func dialStatServer(t *testing.T, addr string, log *zap.SugaredLogger) *websocket.ManagedConnection {
	t.Helper()
	conn := websocket.NewDurableSendingConnection("ws://"+addr, log)
	t.Cleanup(func() { conn.Shutdown() })
	return conn
}

func waitConnected(t *testing.T, conn *websocket.ManagedConnection) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for conn.Status() != nil {
		if time.Now().After(deadline) {
			t.Fatalf("websocket not established: %v", conn.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func recvStats(t *testing.T, ch <-chan metrics.StatMessage, n int) []metrics.StatMessage {
	t.Helper()
	var out []metrics.StatMessage
	timeout := time.After(5 * time.Second)
	for len(out) < n {
		select {
		case sm := <-ch:
			out = append(out, sm)
		case <-timeout:
			t.Fatalf("received %d of %d StatMessages: %+v", len(out), n, out)
		}
	}
	select {
	case sm := <-ch:
		t.Errorf("unexpected extra StatMessage %+v", sm)
	case <-time.After(100 * time.Millisecond):
	}
	return out
}

// Collect, Send and Poke arrive at the real stat server as StatMessages for
// the right revision and pod.
func TestReporterToStatServer(t *testing.T) {
	addr := freePort(t, statServerIP)
	ch, stop := startStatServer(t, addr)
	conn := dialStatServer(t, addr, zaptest.NewLogger(t).Sugar())
	t.Cleanup(stop)
	waitConnected(t, conn)
	r := NewReporter(conn, zaptest.NewLogger(t))

	keyA := types.NamespacedName{Namespace: "shop", Name: "cart-00001"}
	keyB := types.NamespacedName{Namespace: "shop", Name: "payment-00003"}
	wa, fca, clka := newTestWindow(t, "cart-00001-deployment-a", 100*sec, bpf.InstanceMetrics{})
	wb, fcb, clkb := newTestWindow(t, "payment-00003-deployment-b", 100*sec, bpf.InstanceMetrics{})
	r.Track(1, keyA, wa)
	r.Track(2, keyB, wb)

	// First window: zero length, nothing to report.
	if sms := r.Collect(); len(sms) != 0 {
		t.Fatalf("first Collect = %+v, want nothing (zero windows)", sms)
	}
	// One second with traffic on pod A, none on B.
	fca.set(bpf.InstanceMetrics{RequestsIn: 30, ResponsesOut: 27, Inflight: 3, LastNs: 100*sec + sec, BusyNs: 5 * sec / 2})
	clka.advance(time.Second)
	clkb.advance(time.Second)
	sms := r.Collect()
	if len(sms) != 1 || sms[0].Key != keyA {
		t.Fatalf("Collect = %+v, want one StatMessage for %v (B was idle)", sms, keyA)
	}
	if err := r.Send(sms); err != nil {
		t.Fatal(err)
	}
	got := recvStats(t, ch, 1)[0]
	if got.Key != keyA || got.Stat.PodName != "cart-00001-deployment-a" || got.Stat.RequestCount != 30 || got.Stat.AverageConcurrentRequests != 2.5 {
		t.Errorf("stat server got %+v, want %v pod cart-00001-deployment-a, 30 req/s, concurrency 2.5", got, keyA)
	}
	if got.Stat.Timestamp != 0 {
		t.Errorf("Timestamp = %d, want 0 (the autoscaler stamps it on receipt)", got.Stat.Timestamp)
	}

	// Both busy: one frame, two messages.
	fca.set(bpf.InstanceMetrics{RequestsIn: 40, ResponsesOut: 40, LastNs: 100*sec + 3*sec/2, BusyNs: 5*sec/2 + 3*sec/2})
	fcb.set(bpf.InstanceMetrics{RequestsIn: 1, ResponsesOut: 0, Inflight: 1, LastNs: 100*sec + 3*sec/2, BusyNs: 0})
	clka.advance(time.Second)
	clkb.advance(time.Second)
	if err := r.Send(r.Collect()); err != nil {
		t.Fatal(err)
	}
	two := recvStats(t, ch, 2)
	sort.Slice(two, func(i, j int) bool { return two[i].Key.Name < two[j].Key.Name })
	if two[0].Key != keyA || two[0].Stat.RequestCount != 10 || two[0].Stat.AverageConcurrentRequests != 1.5 {
		t.Errorf("pod A: %+v, want 10 req/s, concurrency 1.5", two[0])
	}
	if two[1].Key != keyB || two[1].Stat.PodName != "payment-00003-deployment-b" || two[1].Stat.RequestCount != 1 || two[1].Stat.AverageConcurrentRequests != 0.5 {
		t.Errorf("pod B: %+v, want 1 req/s, concurrency 0.5", two[1])
	}

	// Poke: what scales a cold revision from zero.
	keyC := types.NamespacedName{Namespace: "shop", Name: "email-00001"}
	if err := r.Poke(keyC, "spright-gateway-node1"); err != nil {
		t.Fatal(err)
	}
	poke := recvStats(t, ch, 1)[0]
	if poke.Key != keyC || poke.Stat.PodName != "spright-gateway-node1" || poke.Stat.AverageConcurrentRequests != 1 || poke.Stat.RequestCount != 1 {
		t.Errorf("Poke arrived as %+v, want %v {concurrency 1, 1 request}", poke, keyC)
	}

	// Untracked pods are no longer reported; an empty Collect sends nothing.
	r.Untrack(1)
	r.Untrack(2)
	clka.advance(time.Second)
	if sms := r.Collect(); len(sms) != 0 {
		t.Errorf("Collect after Untrack = %+v", sms)
	}
	if err := r.Send(nil); err != nil {
		t.Errorf("Send(nil) = %v", err)
	}
	if sent, failed := r.Counts(); sent != 3 || failed != 0 {
		t.Errorf("Counts = %d sent, %d failed; want 3, 0", sent, failed)
	}
}

// Run pushes once a Period for pods with traffic.
func TestReporterRun(t *testing.T) {
	addr := freePort(t, statServerIP)
	ch, stop := startStatServer(t, addr)
	conn := dialStatServer(t, addr, zaptest.NewLogger(t).Sugar())
	t.Cleanup(stop)
	waitConnected(t, conn)
	r := NewReporter(conn, zaptest.NewLogger(t))
	start, _ := bpf.MonotonicNs()
	// 100 requests per second, always 4 in flight.
	counters := func() (bpf.InstanceMetrics, error) {
		now, err := bpf.MonotonicNs()
		el := now - start
		return bpf.InstanceMetrics{RequestsIn: el / (sec / 100), Inflight: 4, LastNs: start, BusyNs: 0}, err
	}
	key := types.NamespacedName{Namespace: "default", Name: "hello-00001"}
	r.Track(9, key, NewWindow("hello-pod", time.Now(), counters, nil))
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { r.Run(ctx); close(done) }()
	select {
	case sm := <-ch:
		if sm.Key != key || sm.Stat.PodName != "hello-pod" || sm.Stat.RequestCount < 90 || sm.Stat.RequestCount > 110 || sm.Stat.AverageConcurrentRequests < 3.99 || sm.Stat.AverageConcurrentRequests > 4.01 {
			t.Errorf("Run pushed %+v, want %v hello-pod ≈100 req/s, concurrency 4", sm, key)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run pushed nothing in 5 s")
	}
	cancel()
	select {
	case <-done:
	case <-time.After(2 * time.Second):
		t.Fatal("Run did not return after its context ended")
	}
}

func heapAndGoroutines() (uint64, int) {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc, runtime.NumGoroutine()
}

// An unreachable autoscaler: Send fails at once with an error and keeps
// nothing (no heap or goroutine growth over 2000 attempts); when the stat
// server comes up, the durable connection reconnects and frames arrive.
func TestReporterUnreachableAutoscaler(t *testing.T) {
	addr := freePort(t, statServerIP) // nothing listens here (yet)
	conn := dialStatServer(t, addr, zap.NewNop().Sugar())
	dialed := time.Now()
	r := NewReporter(conn, zaptest.NewLogger(t))

	// A big frame (50 pods), so that buffering would show: 2000 frames
	// of it are ~5 MB.
	var sms []metrics.StatMessage
	for i := 0; i < 50; i++ {
		sms = append(sms, metrics.StatMessage{
			Key:  types.NamespacedName{Namespace: "default", Name: fmt.Sprintf("rev-%02d", i)},
			Stat: metrics.Stat{PodName: fmt.Sprintf("rev-%02d-deployment-7d9f8b6c5d-x2x4z", i), AverageConcurrentRequests: 3, RequestCount: 40, ProcessUptime: 12},
		})
	}
	frame := metrics.ToWireStatMessages(sms)
	size := frame.Size()

	for i := 0; i < 100; i++ { // warm up
		r.Send(sms)
	}
	heap0, gr0 := heapAndGoroutines()
	const attempts = 2000
	start := time.Now()
	for i := 0; i < attempts; i++ {
		err := r.Send(sms)
		if err == nil {
			t.Fatalf("Send %d to an unreachable autoscaler succeeded", i)
		}
		if i == 0 && !errors.Is(err, websocket.ErrConnectionNotEstablished) {
			t.Logf("Send error: %v", err)
		}
	}
	elapsed := time.Since(start)
	heap1, gr1 := heapAndGoroutines()
	t.Logf("%d failed Sends of a %d-byte frame in %v; heap %d → %d bytes, goroutines %d → %d", attempts, size, elapsed, heap0, heap1, gr0, gr1)
	if elapsed > 2*time.Second {
		t.Errorf("failed Sends took %v: they should fail at once, not wait", elapsed)
	}
	if grow := int64(heap1) - int64(heap0); grow > int64(attempts*size/10) {
		t.Errorf("heap grew by %d bytes over %d failed Sends (frames of %d bytes): frames are being kept", grow, attempts, size)
	}
	if gr1 > gr0+2 {
		t.Errorf("goroutines %d → %d over %d failed Sends", gr0, gr1, attempts)
	}
	if sent, failed := r.Counts(); sent != 0 || failed != attempts+100 {
		t.Errorf("Counts = %d sent, %d failed; want 0, %d", sent, failed, attempts+100)
	}

	// The autoscaler comes up: the connection is re-established with
	// backoff, and the next frames arrive (the dropped ones never do).
	// Stay away a few seconds so that the reconnect backoff has grown.
	time.Sleep(time.Until(dialed.Add(3 * time.Second)))
	down := time.Now()
	ch, _ := startStatServer(t, addr)
	one := sms[:1]
	var mu sync.Mutex
	var firstOK time.Time
	deadline := time.Now().Add(30 * time.Second)
	for {
		if err := r.Send(one); err == nil {
			mu.Lock()
			if firstOK.IsZero() {
				firstOK = time.Now()
			}
			mu.Unlock()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("no Send succeeded within 30 s of the stat server coming up")
		}
		time.Sleep(50 * time.Millisecond)
	}
	got := recvStats(t, ch, 1)[0]
	if got.Key != one[0].Key || got.Stat.PodName != one[0].Stat.PodName {
		t.Errorf("after reconnecting, got %+v, want %+v", got, one[0])
	}
	t.Logf("reconnected and delivered %v after the stat server came up", firstOK.Sub(down))
}
