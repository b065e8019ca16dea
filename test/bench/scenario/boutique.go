package scenario

import (
	"context"
	"fmt"
	"math/rand"
	"sort"
	"strings"
	"time"
)

func init() {
	register(&Scenario{
		Name:  "boutique",
		Title: "Online Boutique (paper Fig. 8/9): six chains, closed-loop users, SPRIGHT vs the Knative path",
		Tools: map[string]string{"nginx": "nginx"},
		Run:   runBoutique,
	})
}

// boutiqueMix maps Online Boutique's default Locust tasks (weights: index
// 1, setCurrency 2, browseProduct 10, addToCart 2, viewCart 3, checkout 1)
// to the paper's chains by the services each task calls.
var boutiqueMix = []struct {
	Chain  string
	Task   string
	Weight int
}{
	{"ch1", "index (home page)", 1},
	{"ch2", "viewCart", 3},
	{"ch3", "addToCart", 2},
	{"ch4", "checkout", 1},
	{"ch5", "browseProduct", 10},
	{"ch6", "setCurrency", 2},
}

func runBoutique(ctx context.Context, e *Env, f *File) error {
	users := Pick(e, 200, 100)
	dur := Pick(e, 60*time.Second, 15*time.Second)
	thinkMin, thinkMax := time.Second, 10*time.Second
	fns, routes, err := loadSample(e.Opts.Root, "boutique-synthetic", 1)
	if err != nil {
		return err
	}
	chains := map[string][]string{}
	var mixDesc []string
	total := 0
	for _, m := range boutiqueMix {
		if routes[m.Chain] == nil {
			return fmt.Errorf("config/samples/boutique-synthetic: no route %s", m.Chain)
		}
		chains[m.Chain] = routes[m.Chain]
		total += m.Weight
		mixDesc = append(mixDesc, fmt.Sprintf("%s (%s) %d", m.Chain, m.Task, m.Weight))
	}
	var st []string
	for _, fn := range fns {
		st = append(st, fmt.Sprintf("%s %v", fn.Name, fn.ServiceTime))
	}
	f.Method = append([]string{
		"config/samples/boutique-synthetic/chain.yaml: nine functions burning the paper's CPU service times (" + strings.Join(st, ", ") +
			") and the six chains Ch-1…Ch-6 as routes; the Knative path runs the same functions and chains (httpfn --service-time).",
		fmt.Sprintf("Load: a closed-loop Go load generator (Locust-like) with %d users, started within the first second, each sending a "+
			"request, waiting for the answer, then thinking %v–%v (uniform; Locust's wait_time between(1, 10) of Online Boutique's load generator), "+
			"for %v per system. Chain mix by weight: %s. Body: a 100-byte JSON-ish payload.", users, thinkMin, thinkMax, dur, strings.Join(mixDesc, ", ")),
		fmt.Sprintf("Scaling: the paper drives 4K and 12K users on a many-core server; this machine has 2 cores shared by load and system, "+
			"so the population is scaled down to %d users while service times are kept (Ch-4's 260 ms checkout dominates the CPU).", users),
		"Entries: label \"\" is all requests of a system (its CPU is the system's over the window); one entry per chain carries that chain's latency " +
			"and rate (CPU is not split per chain: cpu_cores is 0 there). Series: rps and CPU per second.",
	}, KnativeBaseline...)
	f.Settings = map[string]any{"users": users, "duration_s": dur.Seconds(), "think_s": []float64{thinkMin.Seconds(), thinkMax.Seconds()}, "mix": boutiqueMix}

	pick := func(sys *system) func(*rand.Rand) Request {
		reqs := map[string]Request{}
		for _, m := range boutiqueMix {
			url, h := sys.request(m.Chain)
			reqs[m.Chain] = Request{Label: m.Chain, URL: url, Header: h, Body: []byte(`{"user":"u","product":"OLJCESPC7Z","quantity":1,"currency":"EUR","padding":"xxxxxxxxxxxx"}`)}
		}
		return func(r *rand.Rand) Request {
			n := r.Intn(total)
			for _, m := range boutiqueMix {
				if n < m.Weight {
					return reqs[m.Chain]
				}
				n -= m.Weight
			}
			return reqs["ch6"]
		}
	}
	think := func(r *rand.Rand) time.Duration {
		return thinkMin + time.Duration(r.Int63n(int64(thinkMax-thinkMin)))
	}
	run := func(sys *system) error {
		e.Logf("%s: %d users for %v", sys.name, users, dur)
		c := newClient(users, 60*time.Second)
		start := time.Now()
		rec := newRecorder(start)
		tl := startTimelineFor(ctx, e, sys)
		u, err := measureCPU(e.Tick, sys.groups, func() error {
			closedLoop(ctx, c, rec, users, dur, 1, pick(sys), think)
			return ctx.Err()
		})
		series := tl.stop(sys.name)
		c.CloseIdleConnections()
		if err != nil {
			return err
		}
		var all []time.Duration
		var errs int64
		var chainsSeen []string
		for l := range rec.lat {
			chainsSeen = append(chainsSeen, l)
		}
		sort.Strings(chainsSeen)
		for _, l := range chainsSeen {
			all = append(all, rec.lat[l]...)
		}
		for _, n := range rec.errs {
			errs += n
		}
		en := windowEntry(sys.name, users, "", u.Wall, errs, all)
		fillCPU(&en, u, -1)
		f.Entries = append(f.Entries, en)
		e.Logf("%s: %.1f rps, p50 %.1f ms, p95 %.1f ms, %.2f cores (%s), driver %.2f cores, %d errors",
			sys.name, en.RPS, en.P50Ms, en.P95Ms, en.CPUCores, fmtClasses(en.CPUByClass), en.LoadGenCPUCores, errs)
		for _, m := range boutiqueMix {
			f.Entries = append(f.Entries, windowEntry(sys.name, users, m.Chain, u.Wall, rec.errs[m.Chain], rec.lat[m.Chain]))
		}
		f.Series = append(f.Series, rpsSeries(sys.name, rec, ""))
		f.Series = append(f.Series, series...)
		if errs > 0 {
			f.Problems = append(f.Problems, fmt.Sprintf("%s: %d failed requests; first: %s", sys.name, errs, rec.firstErr))
		}
		return sys.alive()
	}

	return sprightThenKnative(f,
		func() (*sprightSys, error) {
			return startSpright(ctx, e, "boutique-synthetic", "skmsg", nil, func(ctx context.Context, url string) error {
				return send(ctx, probeHTTP, Request{URL: url, Header: map[string][]string{"X-Spright-Topic": {"ch3"}}, Body: []byte("{}")})
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
