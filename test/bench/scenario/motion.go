package scenario

import (
	"bytes"
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
)

func init() {
	register(&Scenario{
		Name:  "motion",
		Title: "Intermittent IoT motion events (paper Fig. 10): SPRIGHT kept warm vs the Knative path with cold starts",
		Tools: map[string]string{"nginx": "nginx"},
		Run:   runMotion,
	})
}

// burst is n events 0.5 s apart, after an idle gap.
type burst struct {
	Gap time.Duration
	N   int
}

// motionTrace expands bursts into event offsets from the start.
func motionTrace(bursts []burst, spacing time.Duration) []time.Duration {
	var out []time.Duration
	var t time.Duration
	for i, b := range bursts {
		if i > 0 {
			t += b.Gap
		}
		for j := 0; j < b.N; j++ {
			if j > 0 || (i > 0 && b.Gap == 0) {
				t += spacing
			}
			out = append(out, t)
		}
	}
	return out
}

func runMotion(ctx context.Context, e *Env, f *File) error {
	bursts := Pick(e,
		[]burst{{0, 5}, {8 * time.Second, 3}, {2 * time.Second, 6}, {12 * time.Second, 2}, {7 * time.Second, 4}, {3 * time.Second, 5}, {10 * time.Second, 3}},
		[]burst{{0, 3}, {5 * time.Second, 2}, {1500 * time.Millisecond, 3}})
	window := Pick(e, 5*time.Second, 3*time.Second)
	spacing := 500 * time.Millisecond
	trace := motionTrace(bursts, spacing)
	tail := 2 * time.Second
	fns, _, err := loadSample(e.Opts.Root, "motion", 1)
	if err != nil {
		return err
	}
	f.Method = append([]string{
		fmt.Sprintf("config/samples/motion/chain.yaml: sensor (1 ms CPU) → actuator (1 ms CPU). A synthetic trace of %d events in bursts "+
			"(events %v apart) separated by idle gaps (%v), replayed open-loop: each event is sent at its time whatever the previous one is doing. "+
			"Body {\"sensor\":\"s1\",\"state\":\"on\"}.", len(trace), spacing, burstGaps(bursts)),
		"spright-skmsg: the chain is started before the trace and kept warm throughout; what that costs while idle is in its CPU series.",
		fmt.Sprintf("knative: cold starts are EMULATED. The pods start scaled to zero; when an event arrives and the pods are down, the "+
			"benchmark starts each function process and its queue-proxy on demand (as the activator would hold the request), waits for "+
			"queue-proxy's readiness probe, then sends the event, so the event's latency includes the start. After %v without a request "+
			"(a scaled-down stand-in for Knative's scale-to-zero window, 60 s stable window + grace by default), the pods are stopped. "+
			"Not included: pod scheduling, image pulls, container runtime and Kubernetes API latency, which make real cold starts far longer.", window),
		"Entries: label \"\" is every event; \"cold\" the events that waited for a start, \"warm\" the rest. Series: latency per event and CPU per second.",
	}, KnativeBaseline...)
	f.Settings = map[string]any{"events": len(trace), "bursts": bursts, "scale_to_zero_window_s": window.Seconds(), "spacing_s": spacing.Seconds()}
	body := []byte(`{"sensor":"s1","state":"on"}`)

	replay := func(sys *system) error {
		url, h := sys.request("")
		req := Request{URL: url, Header: h, Body: body}
		if sys.knative == nil {
			req.Check = func(b []byte) error {
				if !bytes.Contains(b, []byte(`"light"`)) {
					return fmt.Errorf("answer %q is not a light command", b)
				}
				return nil
			}
		}
		c := newClient(8, 60*time.Second)
		defer c.CloseIdleConnections()
		var inflight atomic.Int64
		var lastDone atomic.Int64
		lastDone.Store(time.Now().UnixNano())
		var coldStarts atomic.Int64
		actx, stopScaler := context.WithCancel(ctx)
		var scalerWG sync.WaitGroup
		if k := sys.knative; k != nil {
			scalerWG.Add(1)
			go func() {
				defer scalerWG.Done()
				for sleepCtx(actx, 100*time.Millisecond) == nil {
					if inflight.Load() == 0 && time.Since(time.Unix(0, lastDone.Load())) > window && k.running() {
						e.Logf("knative: idle for %v: scaling to zero", window)
						k.scaleToZero()
						c.CloseIdleConnections()
					}
				}
			}()
		}
		type result struct {
			at   time.Duration
			lat  time.Duration
			cold bool
			err  error
		}
		results := make([]result, len(trace))
		start := time.Now()
		tl := startTimelineFor(ctx, e, sys)
		u, err := measureCPU(e.Tick, sys.groups, func() error {
			var wg sync.WaitGroup
			for i, at := range trace {
				if err := sleepCtx(ctx, time.Until(start.Add(at))); err != nil {
					return err
				}
				wg.Add(1)
				inflight.Add(1)
				go func(i int, at time.Duration) {
					defer wg.Done()
					defer inflight.Add(-1)
					t0 := time.Now()
					r := result{at: at}
					if k := sys.knative; k != nil && !k.running() {
						r.cold = true
						coldStarts.Add(1)
						if err := k.startPods(ctx); err != nil {
							r.err = err
						}
					}
					if r.err == nil {
						r.err = send(ctx, c, req)
					}
					r.lat = time.Since(t0)
					lastDone.Store(time.Now().UnixNano())
					results[i] = r
				}(i, at)
			}
			wg.Wait()
			return sleepCtx(ctx, tail)
		})
		stopScaler()
		scalerWG.Wait()
		series := tl.stop(sys.name)
		if err != nil {
			return err
		}
		lat := Series{System: sys.name, Metric: "latency_ms", Unit: "ms"}
		var all, cold, warm []time.Duration
		var errs int64
		for _, r := range results {
			if r.err != nil {
				errs++
				f.Problems = append(f.Problems, fmt.Sprintf("%s: event at %v: %v", sys.name, r.at, r.err))
				continue
			}
			lat.T = append(lat.T, r.at.Seconds())
			lat.V = append(lat.V, float64(r.lat)/1e6)
			all = append(all, r.lat)
			if r.cold {
				cold = append(cold, r.lat)
			} else {
				warm = append(warm, r.lat)
			}
		}
		en := windowEntry(sys.name, 0, "", u.Wall, errs, all)
		en.Extra = map[string]float64{"cold_starts": float64(coldStarts.Load())}
		fillCPU(&en, u, -1)
		f.Entries = append(f.Entries, en)
		for _, part := range []struct {
			label string
			ds    []time.Duration
		}{{"cold", cold}, {"warm", warm}} {
			pe := Entry{System: sys.name, Label: part.label, DurationS: u.Wall.Seconds()}
			latencyStats(&pe, part.ds)
			f.Entries = append(f.Entries, pe)
		}
		f.Series = append(f.Series, lat)
		f.Series = append(f.Series, series...)
		e.Logf("%s: %d events, p50 %.1f ms, p99 %.1f ms, max %.1f ms, %d cold starts, %.3f cores (%s)",
			sys.name, en.Requests, en.P50Ms, en.P99Ms, en.MaxMs, coldStarts.Load(), en.CPUCores, fmtClasses(en.CPUByClass))
		return nil
	}

	return sprightThenKnative(f,
		func() (*sprightSys, error) {
			return startSpright(ctx, e, "motion", "skmsg", nil, func(ctx context.Context, url string) error {
				return send(ctx, probeHTTP, Request{URL: url, Body: body})
			})
		},
		func() (*system, error) {
			k, err := startKnative(ctx, e, fns, map[string][]string{"motion": {fns[0].Name, fns[1].Name}}, true)
			if err != nil {
				return nil, err
			}
			sys := knativeSystem(k)
			sys.request = func(string) (string, map[string][]string) { return k.URL("motion"), nil }
			return sys, nil
		},
		replay)
}

func burstGaps(bs []burst) []time.Duration {
	var out []time.Duration
	for _, b := range bs[1:] {
		out = append(out, b.Gap)
	}
	return out
}
