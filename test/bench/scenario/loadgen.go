package scenario

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"math"
	"math/rand"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
)

// Request is one request the Go load generator sends.
type Request struct {
	Label  string
	URL    string
	Header http.Header
	Body   []byte
	// Check validates a 2xx answer's body (nil: any 2xx is right).
	Check func(body []byte) error
}

// recorder collects latencies per label and completions per second.
type recorder struct {
	mu       sync.Mutex
	start    time.Time
	lat      map[string][]time.Duration
	perSec   map[string][]int // label → completions in second i
	errs     map[string]int64
	firstErr string
}

func newRecorder(start time.Time) *recorder {
	return &recorder{start: start, lat: map[string][]time.Duration{}, perSec: map[string][]int{}, errs: map[string]int64{}}
}

func (r *recorder) add(label string, at time.Time, d time.Duration, err error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err != nil {
		r.errs[label]++
		if r.firstErr == "" {
			r.firstErr = fmt.Sprintf("%s: %v", label, err)
		}
		return
	}
	r.lat[label] = append(r.lat[label], d)
	sec := int(at.Sub(r.start) / time.Second)
	if sec < 0 {
		sec = 0
	}
	s := r.perSec[label]
	for len(s) <= sec {
		s = append(s, 0)
	}
	s[sec]++
	r.perSec[label] = s
}

// windowEntry is one system's entry for the requests of a measurement
// window: latencies, count and rate over wall.
func windowEntry(system string, concurrency int, label string, wall time.Duration, errs int64, lat []time.Duration) Entry {
	en := Entry{System: system, Concurrency: concurrency, Label: label, DurationS: wall.Seconds(), Errors: errs}
	latencyStats(&en, lat)
	en.RPS = float64(en.Requests) / wall.Seconds()
	return en
}

// latencyStats fills the latency and request fields of en from ds.
func latencyStats(en *Entry, ds []time.Duration) {
	en.Requests = int64(len(ds))
	if len(ds) == 0 {
		return
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	var sum time.Duration
	for _, d := range s {
		sum += d
	}
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	en.MeanMs = ms(sum / time.Duration(len(s)))
	en.P50Ms = ms(percentile(s, 50))
	en.P95Ms = ms(percentile(s, 95))
	en.P99Ms = ms(percentile(s, 99))
	en.MaxMs = ms(s[len(s)-1])
}

// percentile is the nearest-rank percentile of sorted s.
func percentile(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	k := int(math.Ceil(p/100*float64(len(s)))) - 1
	if k < 0 {
		k = 0
	}
	if k >= len(s) {
		k = len(s) - 1
	}
	return s[k]
}

// newClient is the load generator's HTTP client: keep-alive connections,
// up to conns to one host.
func newClient(conns int, timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:               nil,
			DialContext:         (&net.Dialer{Timeout: 5 * time.Second}).DialContext,
			MaxIdleConns:        conns * 2,
			MaxIdleConnsPerHost: conns * 2,
			MaxConnsPerHost:     0,
			DisableCompression:  true,
		},
	}
}

// send performs one request and checks it.
func send(ctx context.Context, c *http.Client, r Request) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, r.URL, bytes.NewReader(r.Body))
	if err != nil {
		return err
	}
	for k, v := range r.Header {
		req.Header[k] = v
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode/100 != 2 {
		if len(body) > 200 {
			body = body[:200]
		}
		return fmt.Errorf("%s: %q", resp.Status, body)
	}
	if r.Check != nil {
		return r.Check(body)
	}
	return nil
}

// closedLoop runs users that each send a request, wait for the answer,
// think, and repeat, for d. pick chooses the next request; think the
// pause after it.
func closedLoop(ctx context.Context, c *http.Client, rec *recorder, users int, d time.Duration, seed int64,
	pick func(*rand.Rand) Request, think func(*rand.Rand) time.Duration) {
	ctx, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	var wg sync.WaitGroup
	for u := 0; u < users; u++ {
		wg.Add(1)
		go func(u int) {
			defer wg.Done()
			rng := rand.New(rand.NewSource(seed + int64(u)*7919))
			// Stagger the start like a spawn rate, so users do not
			// arrive in lockstep.
			if sleepCtx(ctx, time.Duration(rng.Int63n(int64(time.Second)))) != nil {
				return
			}
			for ctx.Err() == nil {
				r := pick(rng)
				t0 := time.Now()
				err := send(ctx, c, r)
				if ctx.Err() != nil {
					return // cut off by the end of the window: not a failure
				}
				rec.add(r.Label, t0, time.Since(t0), err)
				if sleepCtx(ctx, think(rng)) != nil {
					return
				}
			}
		}(u)
	}
	wg.Wait()
}

// wrkEntry turns one wrk run and the system's CPU into an entry.
func wrkEntry(system string, conc int, w *benchutil.WrkResult, u cpuUse) Entry {
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	en := Entry{
		System: system, Concurrency: conc, RPS: w.RPS,
		MeanMs: ms(w.Mean), P50Ms: ms(w.Latency[50]), P99Ms: ms(w.Latency[99]),
		Requests: w.Requests, Errors: w.Non2xx + w.Errors.Total(), DurationS: w.Elapsed.Seconds(),
	}
	loadgen := 0.0
	if u.Wall > 0 {
		loadgen = w.CPU.Seconds() / u.Wall.Seconds()
	}
	fillCPU(&en, u, loadgen)
	return en
}

// probeHTTP sends readiness probes on fresh connections.
var probeHTTP = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
