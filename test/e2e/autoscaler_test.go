package e2e

// The acceptance test: knative.dev/serving's own autoscaler code
// (stats scraper or stat server, metric collector, KPA scaling decider),
// run in-process, scales on the Stats EPROXY derives from eBPF counters.

import (
	"context"
	"fmt"
	"github.com/spright-dev/spright/internal/testlog"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	netcfg "knative.dev/networking/pkg/config"
	"knative.dev/pkg/websocket"
	"knative.dev/serving/pkg/apis/autoscaling"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	"knative.dev/serving/pkg/apis/serving"
	asconfig "knative.dev/serving/pkg/autoscaler/config"
	asmetrics "knative.dev/serving/pkg/autoscaler/metrics"
	"knative.dev/serving/pkg/autoscaler/scaling"
	"knative.dev/serving/pkg/autoscaler/statserver"
	smetrics "knative.dev/serving/pkg/metrics"
	kparesources "knative.dev/serving/pkg/reconciler/autoscaling/kpa/resources"
	aresources "knative.dev/serving/pkg/reconciler/autoscaling/resources"
	"knative.dev/serving/pkg/resources"

	"github.com/spright-dev/spright/pkg/eproxy"
)

const (
	// podIP is the pod's IP as the autoscaler's pod lister has it: a
	// loopback alias EPROXY binds (its stat port is podIP:9090, the port
	// the scraper uses).
	podIP = "127.0.0.42"
	// statServerIP stands in for autoscaler.knative-serving.
	statServerIP = "127.0.0.43"

	loadConcurrency = 30
	loadDuration    = 9 * time.Second
)

func TestAutoscalerScrapesEproxy(t *testing.T) { autoscalerScenario(t, false) }

func TestAutoscalerPushedStats(t *testing.T) { autoscalerScenario(t, true) }

// statRecord is one Stat as the autoscaler received it.
type statRecord struct {
	at   time.Time
	stat asmetrics.Stat
	err  error
}

type statLedger struct {
	mu   sync.Mutex
	recs []statRecord
}

func (l *statLedger) add(r statRecord) {
	l.mu.Lock()
	l.recs = append(l.recs, r)
	l.mu.Unlock()
}

func (l *statLedger) records() []statRecord {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]statRecord(nil), l.recs...)
}

// recordingScraper is Knative's scraper, with a copy of what it returns.
type recordingScraper struct {
	inner  asmetrics.StatsScraper
	ledger *statLedger
}

func (s *recordingScraper) Scrape(window time.Duration) (asmetrics.Stat, error) {
	st, err := s.inner.Scrape(window)
	s.ledger.add(statRecord{at: time.Now(), stat: st, err: err})
	return st, err
}

// scaleSample is one decision of the decider.
type scaleSample struct {
	at            time.Time
	res           scaling.ScaleResult
	stable, panic float64
}

func autoscalerScenario(t *testing.T, push bool) {
	needRoot(t)
	const ns, svc, cfg, rev = "default", "hello", "hello", "hello-00001"
	key := types.NamespacedName{Namespace: ns, Name: rev}
	// Knative's loggers: warnings and errors (failed scrapes) into the test log.
	klog := testlog.CleanupLogger(t, zapcore.WarnLevel).Sugar()

	// --- What Knative's controllers would build for this revision. ---
	asCfg, err := asconfig.NewConfigFromMap(nil) // config-autoscaler defaults
	if err != nil {
		t.Fatal(err)
	}
	annotations := map[string]string{
		autoscaling.ClassAnnotationKey:    autoscaling.KPA,
		autoscaling.MetricAnnotationKey:   autoscaling.Concurrency,
		autoscaling.WindowAnnotationKey:   "6s", // the shortest stable window Knative allows
		autoscaling.MinScaleAnnotationKey: "1",
	}
	if push {
		// No scraping: the autoscaler relies on pushed stats only.
		annotations[autoscaling.TargetBurstCapacityKey] = "-1"
	}
	labels := map[string]string{serving.RevisionLabelKey: rev, serving.ConfigurationLabelKey: cfg, serving.ServiceLabelKey: svc}
	pa := &autoscalingv1alpha1.PodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: rev, Labels: labels, Annotations: annotations},
		Spec: autoscalingv1alpha1.PodAutoscalerSpec{
			ContainerConcurrency: 10,
			ScaleTargetRef:       corev1.ObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: rev + "-deployment"},
			Reachability:         autoscalingv1alpha1.ReachabilityReachable,
			ProtocolType:         "http1",
		},
	}
	scrapeTarget := rev + "-private" // the SKS private service
	if push {
		scrapeTarget = "" // what the KPA reconciler's resolveScrapeTarget gives for TBC -1
	}
	metric := aresources.MakeMetric(pa, scrapeTarget, asCfg)
	decider := kparesources.MakeDecider(pa, asCfg)
	minScale, maxScale := pa.ScaleBounds(asCfg)
	t.Logf("Metric: stable window %v, panic window %v, scrape target %q", metric.Spec.StableWindow, metric.Spec.PanicWindow, metric.Spec.ScrapeTarget)
	t.Logf("DeciderSpec: %+v; min-scale %d, max-scale %d", decider.Spec, minScale, maxScale)
	if decider.Spec.TargetValue != 7 || decider.Spec.TotalValue != 10 {
		t.Fatalf("Knative's target for containerConcurrency 10 = %v of %v, want 7 (70%%) of 10", decider.Spec.TargetValue, decider.Spec.TotalValue)
	}

	// --- The pod: node agent, user container, EPROXY. ---
	ledger := &statLedger{}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	var reporter *eproxy.Reporter
	var statCh <-chan asmetrics.StatMessage
	if push {
		addr := net.JoinHostPort(statServerIP, freePortOn(t, statServerIP))
		var stopServer func()
		statCh, stopServer = runStatServer(t, addr, klog)
		conn := websocket.NewDurableSendingConnection("ws://"+addr, klog)
		t.Cleanup(func() { stopServer(); conn.Shutdown() }) // server first: the client's read then ends at once
		waitUntil(t, 10*time.Second, "websocket to the stat server", func() bool { return conn.Status() == nil })
		reporter = eproxy.NewReporter(conn, zaptest.NewLogger(t))
		done := make(chan struct{})
		go func() { reporter.Run(ctx); close(done) }()
		t.Cleanup(func() { cancel(); <-done })
	}
	agent := startPodAgent(t, "autoscaler-"+map[bool]string{false: "scrape", true: "push"}[push], reporter)
	user := newUserContainer(t, func(n int64) time.Duration { return 1500*time.Millisecond + time.Duration(n%6)*100*time.Millisecond })
	user.start(t)
	env := eproxyEnv(t, podIP, agent.ControlSocketPath(), user)
	ep := startEproxy(t, env)
	if ep.agentLost() {
		t.Fatalf("eproxy could not register with the node agent:\n%s", ep.log.String())
	}
	url := "http://" + ep.traffic + "/"

	// --- The autoscaler, in-process: pod lister, scraper, collector, decider. ---
	lister := podListerWith(t, readyPodOf(ns, rev, env["SERVING_POD"], podIP, time.Now().Add(-time.Minute), labels))
	podAccessor := resources.NewPodAccessor(lister, ns, rev)
	// As cmd/autoscaler's statsScraperFactoryFunc (no mesh: direct pod scraping).
	factory := func(m *autoscalingv1alpha1.Metric, l *zap.SugaredLogger) (asmetrics.StatsScraper, error) {
		if m.Spec.ScrapeTarget == "" {
			return nil, nil
		}
		r := m.Labels[serving.RevisionLabelKey]
		inner := asmetrics.NewStatsScraper(m, r, resources.NewPodAccessor(lister, m.Namespace, r), false, netcfg.MeshCompatibilityModeDisabled, l)
		return &recordingScraper{inner: inner, ledger: ledger}, nil
	}
	collector := asmetrics.NewMetricCollector(factory, klog)
	if err := collector.CreateOrUpdate(metric); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { collector.Delete(ns, rev) })
	if push {
		// As cmd/autoscaler: stamp on receipt, then Record.
		go func() {
			for {
				select {
				case <-ctx.Done():
					return
				case sm := <-statCh:
					if sm.Stat.Timestamp == 0 {
						sm.Stat.Timestamp = time.Now().Unix()
					}
					if sm.Key == key {
						ledger.add(statRecord{at: time.Now(), stat: sm.Stat})
					}
					collector.Record(sm.Key, time.Unix(sm.Stat.Timestamp, 0), sm.Stat)
				}
			}
		}()
	}
	scaler := scaling.New(smetrics.RevisionContext(ns, svc, cfg, rev), ns, rev, collector, podAccessor, &decider.Spec)

	var smu sync.Mutex
	var samples []scaleSample
	last := func() scaleSample {
		smu.Lock()
		defer smu.Unlock()
		if len(samples) == 0 {
			return scaleSample{}
		}
		return samples[len(samples)-1]
	}
	go func() {
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case now := <-tick.C:
				res := scaler.Scale(klog, now)
				stable, panic, _ := collector.StableAndPanicConcurrency(key, now)
				smu.Lock()
				samples = append(samples, scaleSample{at: now, res: res, stable: stable, panic: panic})
				smu.Unlock()
			}
		}
	}()

	// Idle revision: a valid decision of 0 before any load.
	waitUntil(t, 10*time.Second, "a valid scale decision for the idle revision", func() bool { s := last(); return s.res.ScaleValid })
	if s := last(); s.res.DesiredPodCount != 0 {
		t.Errorf("idle revision: desired %d, want 0", s.res.DesiredPodCount)
	}
	before := ep.promCounters(t)

	// --- Load: 30 requests held open at once. ---
	loadStart := time.Now()
	res := holdLoad(ctx, url, loadConcurrency, loadDuration)
	loadEnd := time.Now()
	t.Logf("load: %d requests issued, %d answered 200, %d failed (first error: %v) in %v; user container served %d, max %d in flight at once (CONTAINER_CONCURRENCY=10)",
		res.issued, res.ok, res.failed, res.firstErr, loadEnd.Sub(loadStart).Round(time.Millisecond), user.served.Load(), user.maxInflight.Load())
	if res.failed != 0 {
		t.Errorf("%d of %d requests through EPROXY failed: %v", res.failed, res.issued, res.firstErr)
	}

	// --- After the load: back to the minimum once the stable window has passed. ---
	var scaledDownAt time.Time
	waitUntil(t, 30*time.Second, "the decider to scale back down", func() bool {
		s := last()
		if s.res.ScaleValid && s.res.DesiredPodCount == 0 && s.at.After(loadEnd) {
			scaledDownAt = s.at
			return true
		}
		return false
	})
	after := ep.promCounters(t)
	// One more second of decisions so the series shows it staying down.
	time.Sleep(1100 * time.Millisecond)
	cancel()

	// --- The series. ---
	smu.Lock()
	series := append([]scaleSample(nil), samples...)
	smu.Unlock()
	var b strings.Builder
	maxDesired := int32(0)
	for _, s := range series {
		fmt.Fprintf(&b, "  t=%+6.1fs desired=%d valid=%v stable=%.2f panic=%.2f\n", s.at.Sub(loadStart).Seconds(), s.res.DesiredPodCount, s.res.ScaleValid, s.stable, s.panic)
		if s.res.ScaleValid && s.at.After(loadStart) && !s.at.After(loadEnd) && s.res.DesiredPodCount > maxDesired {
			maxDesired = s.res.DesiredPodCount
		}
	}
	t.Logf("decider series (t from the start of the load, which ran for %.1fs):\n%s", loadEnd.Sub(loadStart).Seconds(), b.String())
	if maxDesired < 3 {
		t.Errorf("desired scale under load peaked at %d, want ≥ 3 (30 concurrent requests, target 7 per pod)", maxDesired)
	}
	final := last()
	bounded := max(final.res.DesiredPodCount, minScale) // what the KPA's scaler applies (min-scale 1)
	t.Logf("after the load: decider desired %d at t=%+.1fs (%.1fs after the last answer); with the KPA's bounds [%d, %d] the revision keeps %d pod(s)",
		final.res.DesiredPodCount, scaledDownAt.Sub(loadStart).Seconds(), scaledDownAt.Sub(loadEnd).Seconds(), minScale, maxScale, bounded)
	if bounded != 1 {
		t.Errorf("after the load the bounded scale is %d, want the minimum 1", bounded)
	}

	// --- Counts: generator vs eBPF counter vs the Stats the autoscaler got. ---
	ebpfReqs := after["eproxy_requests_total"] - before["eproxy_requests_total"]
	ebpfResps := after["eproxy_responses_total"] - before["eproxy_responses_total"]
	t.Logf("requests: generator %d answered, eBPF requests_total +%.0f, responses_total +%.0f, in flight now %.0f",
		res.ok, ebpfReqs, ebpfResps, after["eproxy_inflight_requests"])
	within(t, "eBPF requests_total vs the generator", ebpfReqs, float64(res.ok), 0.05)
	within(t, "eBPF responses_total vs the generator", ebpfResps, float64(res.ok), 0.05)
	recs := ledger.records()
	wins, repeats := distinctWindows(recs)
	var total float64
	for _, w := range wins {
		total += w.requests()
	}
	t.Logf("Stats the autoscaler %s: %d, of which %d distinct windows with traffic and %d repeats of the previous window; over the whole run they imply %.1f requests (the first window's start is not known exactly)",
		map[bool]string{false: "scraped", true: "received by push"}[push], len(recs), len(wins), repeats, total)
	if len(wins) < 4 {
		t.Fatalf("only %d windows with traffic", len(wins))
	}
	// The windows strictly inside the load have known bounds: compare them
	// with what the generator sent in the same interval.
	inner := wins[1 : len(wins)-1]
	var implied float64
	for _, w := range inner {
		implied += w.requests()
	}
	from, to := inner[0].start, inner[len(inner)-1].end
	sent := res.sentIn(from, to)
	t.Logf("windows %+.1fs..%+.1fs: Stats imply %.1f requests, the generator sent %d", from.Sub(loadStart).Seconds(), to.Sub(loadStart).Seconds(), implied, sent)
	within(t, "requests implied by the Stats vs the generator over the same windows", implied, float64(sent), 0.05)
}

// statWindow is one distinct window of a pod's Stats.
type statWindow struct {
	start, end time.Time
	stat       asmetrics.Stat
}

func (w statWindow) requests() float64 { return w.stat.RequestCount * w.end.Sub(w.start).Seconds() }

// distinctWindows returns the windows with traffic in recs. A Window
// answers a read less than a Period after its last snapshot with the same
// Stat again: such a repeat (the same non-zero values as the previous
// record) is not a new window, and the next window starts at the last new
// one. Windows are bounded by the records' receipt times.
func distinctWindows(recs []statRecord) (wins []statWindow, repeats int) {
	var prev *statRecord
	var prevNew time.Time
	for i := range recs {
		r := &recs[i]
		if r.err != nil {
			continue
		}
		if prev != nil && r.stat.RequestCount == prev.stat.RequestCount && r.stat.AverageConcurrentRequests == prev.stat.AverageConcurrentRequests &&
			(r.stat.RequestCount != 0 || r.stat.AverageConcurrentRequests != 0) {
			repeats++
			prev = r
			continue
		}
		if !prevNew.IsZero() && (r.stat.RequestCount != 0 || r.stat.AverageConcurrentRequests != 0) {
			wins = append(wins, statWindow{start: prevNew, end: r.at, stat: r.stat})
		}
		prevNew = r.at
		prev = r
	}
	return wins, repeats
}

func within(t *testing.T, what string, got, want, tol float64) {
	t.Helper()
	if want == 0 || math.Abs(got-want)/want > tol {
		t.Errorf("%s: %.1f vs %.0f, want within %.0f%%", what, got, want, tol*100)
	}
}

func waitUntil(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for %s", d, what)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// runStatServer runs knative.dev/serving's autoscaler stat server.
func runStatServer(t *testing.T, addr string, log *zap.SugaredLogger) (<-chan asmetrics.StatMessage, func()) {
	t.Helper()
	ch := make(chan asmetrics.StatMessage, 1024)
	srv := statserver.New(addr, ch, log, nil)
	errc := make(chan error, 1)
	go func() { errc <- srv.ListenAndServe() }()
	waitUntil(t, 5*time.Second, "the stat server on "+addr, func() bool {
		select {
		case err := <-errc:
			t.Fatalf("stat server: %v", err)
		default:
		}
		c, err := net.DialTimeout("tcp", addr, 100*time.Millisecond)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	var once sync.Once
	stop := func() { once.Do(func() { srv.Shutdown(time.Second) }) }
	t.Cleanup(stop)
	return ch, stop
}

// podListerWith is the autoscaler's pod informer, as a lister over an indexer.
func podListerWith(t *testing.T, pods ...*corev1.Pod) corev1listers.PodLister {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, p := range pods {
		if err := idx.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	return corev1listers.NewPodLister(idx)
}

func readyPodOf(ns, rev, name, ip string, started time.Time, labels map[string]string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: labels},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			PodIP:      ip,
			StartTime:  &metav1.Time{Time: started},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
}
