package scenario

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"time"
)

func init() {
	register(&Scenario{
		Name:  "parking",
		Title: "Parking image detection & charging (paper Fig. 11): bursts of 164 image-sized requests per period",
		Tools: map[string]string{"nginx": "nginx"},
		Run:   runParking,
	})
}

func runParking(ctx context.Context, e *Env, f *File) error {
	const spots = 164
	const imageSize = 3 << 10
	periods := Pick(e, 3, 1)
	period := 10 * time.Second
	scale := 0.1
	newEvery := 10 // one snapshot in ten shows a plate not seen before
	fns, routes, err := loadSample(e.Opts.Root, "parking", scale)
	if err != nil {
		return err
	}
	if routes["new"] == nil || routes["*"] == nil {
		return fmt.Errorf("config/samples/parking: want routes new and *")
	}
	chains := map[string][]string{"new": routes["new"], "known": routes["*"]}
	var st []string
	for _, fn := range fns {
		st = append(st, fmt.Sprintf("%s %v", fn.Name, fn.ServiceTime))
	}
	f.Method = append([]string{
		fmt.Sprintf("config/samples/parking/chain.yaml: every %v, %d snapshots (one per parking spot, %d-byte bodies) are sent at once; "+
			"one in %d takes the new-plate chain (%s), the rest the known-plate chain (%s). %d period(s).",
			period, spots, imageSize, newEvery, strings.Join(routes["new"], " → "), strings.Join(routes["*"], " → "), periods),
		fmt.Sprintf("Scaling: the paper's service times (plate-detection 435 ms …) are multiplied by %.2g so that a burst of %d fits in a "+
			"period on 2 cores (%d × 435 ms alone is 71 CPU-seconds): %s.", scale, spots, spots, strings.Join(st, ", ")),
		"Entries: label \"\" is every request of a system; \"new\" and \"known\" split by chain. max_ms is the slowest answer of a burst, " +
			"i.e. the time to process all spots. Series: CPU per second and response time per request (t = send time).",
	}, KnativeBaseline...)
	f.Settings = map[string]any{"spots": spots, "image_bytes": imageSize, "periods": periods, "period_s": period.Seconds(),
		"service_time_scale": scale, "new_plate_every": newEvery}
	img := make([]byte, imageSize)
	for i := range img {
		img[i] = byte(i*7 + i/13)
	}

	run := func(sys *system) error {
		c := newClient(spots, 120*time.Second)
		defer c.CloseIdleConnections()
		start := time.Now()
		rec := newRecorder(start)
		tl := startTimelineFor(ctx, e, sys)
		rt := Series{System: sys.name, Metric: "response_ms", Unit: "ms"}
		var mu sync.Mutex
		u, err := measureCPU(e.Tick, sys.groups, func() error {
			for p := 0; p < periods; p++ {
				if err := sleepCtx(ctx, time.Until(start.Add(time.Duration(p)*period))); err != nil {
					return err
				}
				var wg sync.WaitGroup
				for i := 0; i < spots; i++ {
					chain := "known"
					if i%newEvery == 0 {
						chain = "new"
					}
					url, h := sys.request(chain)
					if sys.knative == nil && chain == "known" {
						url, h = sys.request("")
					}
					wg.Add(1)
					go func(chain, url string, h map[string][]string) {
						defer wg.Done()
						t0 := time.Now()
						err := send(ctx, c, Request{URL: url, Header: h, Body: img})
						d := time.Since(t0)
						rec.add(chain, t0, d, err)
						if err == nil {
							mu.Lock()
							rt.T, rt.V = append(rt.T, t0.Sub(start).Seconds()), append(rt.V, float64(d)/1e6)
							mu.Unlock()
						}
					}(chain, url, h)
				}
				wg.Wait()
			}
			return sleepCtx(ctx, time.Until(start.Add(time.Duration(periods)*period)))
		})
		series := tl.stop(sys.name)
		if err != nil {
			return err
		}
		all := append(append([]time.Duration{}, rec.lat["new"]...), rec.lat["known"]...)
		en := windowEntry(sys.name, spots, "", u.Wall, rec.errs["new"]+rec.errs["known"], all)
		fillCPU(&en, u, -1)
		f.Entries = append(f.Entries, en)
		for _, l := range []string{"new", "known"} {
			f.Entries = append(f.Entries, windowEntry(sys.name, spots, l, u.Wall, rec.errs[l], rec.lat[l]))
		}
		f.Series = append(f.Series, rt)
		f.Series = append(f.Series, series...)
		if en.Errors > 0 {
			f.Problems = append(f.Problems, fmt.Sprintf("%s: %d failed requests; first: %s", sys.name, en.Errors, rec.firstErr))
		}
		e.Logf("%s: %d requests, p50 %.0f ms, p95 %.0f ms, max %.0f ms, %.2f cores (%s)", sys.name, en.Requests, en.P50Ms, en.P95Ms, en.MaxMs,
			en.CPUCores, fmtClasses(en.CPUByClass))
		return sys.alive()
	}

	return sprightThenKnative(f,
		func() (*sprightSys, error) {
			return startSpright(ctx, e, "parking", "skmsg", scaleServiceTimes(scale), func(ctx context.Context, url string) error {
				return send(ctx, probeHTTP, Request{URL: url, Body: []byte("probe")})
			})
		},
		func() (*system, error) {
			k, err := startKnative(ctx, e, fns, chains, false)
			if err != nil {
				return nil, err
			}
			return knativeSystem(k), nil
		},
		run)
}
