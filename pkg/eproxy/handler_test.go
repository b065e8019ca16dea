package eproxy

import (
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	netcfg "knative.dev/networking/pkg/config"
	autoscalingv1alpha1 "knative.dev/serving/pkg/apis/autoscaling/v1alpha1"
	"knative.dev/serving/pkg/apis/serving"
	"knative.dev/serving/pkg/autoscaler/metrics"
	"knative.dev/serving/pkg/resources"

	"github.com/spright-dev/spright/bpf"
)

// maxScrapeBody is what knative.dev/serving's scrape client reads of a
// Stat (statFromProto: 6 8-byte fields + 2, a hostname, 20 spare).
const maxScrapeBody = 6*10 + 256 + 20

// busyWindow returns a Window that has seen one second with traffic.
func busyWindow(t *testing.T, pod string) (*Window, *fakeCounters, *fakeClock) {
	t.Helper()
	t0 := 1000 * sec
	w, fc, clk := newTestWindow(t, pod, t0, bpf.InstanceMetrics{})
	mustStat(t, w)
	fc.set(bpf.InstanceMetrics{RequestsIn: 123456, ResponsesOut: 123400, Inflight: 56, LastNs: t0 + sec, BusyNs: 98765 * sec / 1000})
	clk.advance(time.Second)
	return w, fc, clk
}

func TestStatHandlerGET(t *testing.T) {
	// The longest pod name Kubernetes allows (a DNS subdomain) must still
	// fit what the scraper reads.
	pod := strings.Repeat("p", 253)
	w, _, _ := busyWindow(t, pod)
	want := mustStat(t, w)
	srv := httptest.NewServer(StatHandler(w))
	defer srv.Close()

	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
	req.Header.Set("Accept", "application/protobuf")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET = %d %q, want 200", resp.StatusCode, body)
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/protobuf" {
		t.Errorf("Content-Type = %q, want exactly application/protobuf", ct)
	}
	if len(body) > maxScrapeBody {
		t.Errorf("body is %d bytes, the scraper reads only %d", len(body), maxScrapeBody)
	}
	var st metrics.Stat
	if err := st.Unmarshal(body); err != nil {
		t.Fatalf("body does not decode as metrics.Stat: %v", err)
	}
	if st.PodName != pod {
		t.Errorf("PodName = %q, want %q", st.PodName, pod)
	}
	if st.AverageConcurrentRequests != want.AverageConcurrentRequests || st.RequestCount != want.RequestCount {
		t.Errorf("decoded %+v, want %+v", st, want)
	}
	if st.AverageConcurrentRequests <= 0 || st.RequestCount != 123456 || st.ProcessUptime <= 0 {
		t.Errorf("decoded %+v: want concurrency > 0, 123456 req/s, uptime > 0", st)
	}
	t.Logf("%d-byte Stat for a 253-character pod name: %+v", len(body), st)

	// The path does not matter (the autoscaler asks for /metrics).
	resp2, err := http.Get(srv.URL + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp2.Body.Close()
	if resp2.StatusCode != http.StatusOK {
		t.Errorf("GET / = %d, want 200", resp2.StatusCode)
	}
}

func TestStatHandlerMethods(t *testing.T) {
	w, _, _ := busyWindow(t, "pod-a")
	srv := httptest.NewServer(StatHandler(w))
	defer srv.Close()
	for _, m := range []string{http.MethodPost, http.MethodPut, http.MethodDelete, http.MethodPatch} {
		req, _ := http.NewRequest(m, srv.URL+"/metrics", strings.NewReader("x"))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s = %d, want 405", m, resp.StatusCode)
		}
		if a := resp.Header.Get("Allow"); !strings.Contains(a, "GET") {
			t.Errorf("%s: Allow = %q, want it to list GET", m, a)
		}
	}
	resp, err := http.Head(srv.URL + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Errorf("HEAD = %d, want 200", resp.StatusCode)
	}
}

func TestStatHandlerCounterError(t *testing.T) {
	w, fc, clk := busyWindow(t, "pod-a")
	mustStat(t, w)
	clk.advance(time.Second) // the next request needs a new snapshot
	fc.setErr(errors.New("bpf: metrics of instance 3: key does not exist"))
	rec := httptest.NewRecorder()
	StatHandler(w).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	if rec.Code != http.StatusInternalServerError {
		t.Errorf("GET with a failing counter read = %d %q, want 500 (503 reads as a mesh symptom)", rec.Code, rec.Body.String())
	}
	if ct := rec.Header().Get("Content-Type"); ct == "application/protobuf" {
		t.Errorf("error answer claims Content-Type %q", ct)
	}
}

// podLister returns a lister with pods in it, as the autoscaler's informer
// would have them.
func podLister(t *testing.T, pods ...*corev1.Pod) corev1listers.PodLister {
	t.Helper()
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, p := range pods {
		if err := idx.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	return corev1listers.NewPodLister(idx)
}

func readyPod(ns, rev, name, ip string, started time.Time) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{serving.RevisionLabelKey: rev}},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			PodIP:      ip,
			StartTime:  &metav1.Time{Time: started},
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
}

// knative.dev/serving's own stats scraper (direct pod scraping, as the
// autoscaler does without a mesh) reads StatHandler at http://<podIP>:9090.
func TestStatHandlerRealScraper(t *testing.T) {
	const podIP = "127.0.0.44" // a loopback alias: the scraper's port is fixed at 9090
	l, err := net.Listen("tcp", net.JoinHostPort(podIP, "9090"))
	if err != nil {
		t.Skipf("cannot listen on %s:9090: %v", podIP, err)
	}
	w, _, _ := busyWindow(t, "hello-00001-deployment-abc")
	want := mustStat(t, w)
	srv := &http.Server{Handler: StatHandler(w)}
	go srv.Serve(l)
	defer srv.Close()

	metric := &autoscalingv1alpha1.Metric{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "hello-00001", Labels: map[string]string{serving.RevisionLabelKey: "hello-00001"}},
		Spec:       autoscalingv1alpha1.MetricSpec{StableWindow: 6 * time.Second, PanicWindow: time.Second, ScrapeTarget: "hello-00001-private"},
	}
	pa := resources.NewPodAccessor(podLister(t, readyPod("default", "hello-00001", "hello-00001-deployment-abc", podIP, time.Now().Add(-time.Minute))), "default", "hello-00001")
	scraper := metrics.NewStatsScraper(metric, "hello-00001", pa, false, netcfg.MeshCompatibilityModeDisabled, zaptest.NewLogger(t).Sugar())
	st, err := scraper.Scrape(metric.Spec.StableWindow)
	if err != nil {
		t.Fatalf("Knative's scraper: %v", err)
	}
	if st.AverageConcurrentRequests != want.AverageConcurrentRequests || st.RequestCount != want.RequestCount {
		t.Errorf("scraped %+v, want %+v", st, want)
	}
	t.Logf("scraped by knative.dev/serving: %+v", st)
}

// Formerly a bug (handler.go:24, and cmd/eproxy/main.go:92 for "node agent
// unreachable"): a stat endpoint that cannot read its counters answers 503,
// which knative.dev/serving's scraper takes for a mesh symptom
// (networking's IsPotentialMeshErrorResponse: 502 or 503). In the default
// mesh-compatibility-mode "auto", when every pod answers 503 the scraper
// falls back to scraping the revision's private service, and once that
// works it turns direct pod scraping off for the revision for good
// (serviceScraper.podsAddressable = false). DESIGN §6a wants "no data →
// invalid scale" instead. Fix: answer 500 (http.StatusInternalServerError)
// when the counters cannot be read; the scraper then reports "pods
// exhausted" and the autoscaler keeps its decision.
func TestStatHandlerErrorIsNotAMeshSymptom(t *testing.T) {
	const podIP = "127.0.0.44"
	l, err := net.Listen("tcp", net.JoinHostPort(podIP, "9090"))
	if err != nil {
		t.Skipf("cannot listen on %s:9090: %v", podIP, err)
	}
	w, fc, clk := busyWindow(t, "hello-00001-deployment-abc")
	mustStat(t, w)
	clk.advance(time.Second)
	fc.setErr(errors.New("bpf: metrics of instance 1: key does not exist"))
	srv := &http.Server{Handler: StatHandler(w)}
	go srv.Serve(l)
	defer srv.Close()

	metric := &autoscalingv1alpha1.Metric{
		ObjectMeta: metav1.ObjectMeta{Namespace: "default", Name: "hello-00001", Labels: map[string]string{serving.RevisionLabelKey: "hello-00001"}},
		Spec:       autoscalingv1alpha1.MetricSpec{StableWindow: 6 * time.Second, PanicWindow: time.Second, ScrapeTarget: "hello-00001-private"},
	}
	pa := resources.NewPodAccessor(podLister(t, readyPod("default", "hello-00001", "hello-00001-deployment-abc", podIP, time.Now().Add(-time.Minute))), "default", "hello-00001")
	scraper := metrics.NewStatsScraper(metric, "hello-00001", pa, false, netcfg.MeshCompatibilityModeAuto, zaptest.NewLogger(t).Sugar())
	_, err = scraper.Scrape(metric.Spec.StableWindow)
	t.Logf("Knative's scraper (mesh mode auto) on a pod whose counters fail: %v", err)
	if err == nil || err.Error() != "pods exhausted" {
		t.Errorf("scrape error %v: want \"pods exhausted\" (a non-mesh pod error), not a fallback to scraping the private service", err)
	}
}
