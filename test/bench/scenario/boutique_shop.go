package scenario

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/spright-dev/spright/pkg/samples/boutique"
	"github.com/spright-dev/spright/pkg/samples/boutique/shopper"
)

func init() {
	register(&Scenario{
		Name:  "boutique-shop",
		Title: "Online Boutique, the real shop: Locust-like users with sessions, every answer checked, SPRIGHT vs the Knative path",
		Tools: map[string]string{"nginx": "nginx"},
		Run:   runBoutiqueShop,
	})
}

// boutiqueShopFns are the shop's services as Knative-path pods: cmd/boutique
// in httpfn's place, one pod per service.
func boutiqueShopFns(bin string) []FnSpec {
	var fns []FnSpec
	for _, svc := range boutique.Services {
		fns = append(fns, FnSpec{Name: svc, Behavior: "boutique-" + svc, Binary: bin})
	}
	return fns
}

// boutiqueShopMethod describes the scenario for RESULTS.md.
func boutiqueShopMethod(users int, dur, thinkMin, thinkMax time.Duration) []string {
	var tasks []string
	for _, t := range shopper.Tasks {
		tasks = append(tasks, fmt.Sprintf("%s %d", t.Name, t.Weight))
	}
	return []string{
		"The real Online Boutique (pkg/samples/boutique, docs/boutique.md): ten Go services — frontend, productcatalog, currency, cart, " +
			"recommendation, ad, shipping, payment, email, checkout — with their own behaviour (HTML pages, sessions, carts in memory, money " +
			"arithmetic, card validation), the same code on both systems.",
		"SPRIGHT: `spright run` of config/samples/boutique/chain.yaml (each service an SDK function in its own network namespace) with the " +
			"web protocol adapter attached at the gateway; each user action is one chain: the frontend reads the request, picks the action " +
			"(topic), the services add their parts to one document in the same shared-memory slot, the frontend renders the page.",
		"Knative path: a pod stand-in per service running `boutique --behavior boutique-<service>` (cmd/boutique, httpfn's command line) " +
			"behind Knative's real queue-proxy; nginx routes the client's requests (every path) to the frontend's queue-proxy, and the " +
			"frontend calls each service of the action's itinerary with the document as an HTTP body through nginx (/fn/<service>) and " +
			"that service's queue-proxy: the paper's coordinating front end.",
		fmt.Sprintf("Load: pkg/samples/boutique/shopper, like Online Boutique's locustfile: %d closed-loop users started within the first "+
			"second, each with its own cookie session, starting on the home page, then tasks by weight (%s), thinking %v–%v between them, "+
			"for %v per system. Every answer's content is checked (the product page is that product's, the cart holds exactly what the "+
			"user added, a checkout shows an order ID and the cart's lines); a failed check counts as an error.",
			users, strings.Join(tasks, ", "), thinkMin, thinkMax, dur),
		"Entries: label \"\" is all tasks of a system (its CPU is the system's over the window); one entry per task (addToCart and " +
			"checkout are two and three HTTP requests: the task's latency is the sum). Series: rps and CPU per second.",
	}
}

// attachWeb returns a probe for the shop's chain: it attaches the web
// adapter through the admin endpoint (once), then wants the frontend's
// health page through the chain.
func attachWeb(admin string) func(ctx context.Context, url string) error {
	attached := false
	return func(ctx context.Context, url string) error {
		c := &http.Client{Timeout: 5 * time.Second}
		if !attached {
			req, _ := http.NewRequestWithContext(ctx, http.MethodPut, "http://"+admin+"/adapters/http?name=web", nil)
			resp, err := c.Do(req)
			if err != nil {
				return fmt.Errorf("attaching the web adapter: %w", err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK || !strings.Contains(string(b), `"http":"web"`) {
				return fmt.Errorf("attaching the web adapter: %d %s", resp.StatusCode, b)
			}
			attached = true
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(url, "/")+"/_healthz", nil)
		resp, err := c.Do(req)
		if err != nil {
			return err
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK || string(b) != "ok" {
			return fmt.Errorf("frontend health through the chain: %d %q", resp.StatusCode, b)
		}
		return nil
	}
}

func runBoutiqueShop(ctx context.Context, e *Env, f *File) error {
	users := Pick(e, 100, 20)
	dur := Pick(e, 60*time.Second, 15*time.Second)
	thinkMin, thinkMax := time.Second, 10*time.Second
	bin, err := e.Binary(ctx, "boutique")
	if err != nil {
		return err
	}
	fns := boutiqueShopFns(bin)
	f.Method = append(boutiqueShopMethod(users, dur, thinkMin, thinkMax), KnativeBaseline...)
	f.Settings = map[string]any{"users": users, "duration_s": dur.Seconds(), "think_s": []float64{thinkMin.Seconds(), thinkMax.Seconds()}, "tasks": shopper.Tasks}

	run := func(sys *system, base string) error {
		e.Logf("%s: %d shoppers for %v on %s", sys.name, users, dur, base)
		start := time.Now()
		rec := newRecorder(start)
		tl := startTimelineFor(ctx, e, sys)
		var rep *shopper.Report
		u, err := measureCPU(e.Tick, sys.groups, func() error {
			var err error
			rep, err = shopper.Run(ctx, shopper.Config{BaseURL: base, Users: users, Duration: dur, ThinkMin: thinkMin, ThinkMax: thinkMax,
				Seed: 1, Observe: func(action string, at time.Time, d time.Duration, err error) { rec.add(action, at, d, err) }})
			if err != nil {
				return err
			}
			return ctx.Err()
		})
		series := tl.stop(sys.name)
		if err != nil {
			return err
		}
		var all []time.Duration
		var errs int64
		for _, t := range shopper.Tasks {
			all = append(all, rec.lat[t.Name]...)
			errs += rec.errs[t.Name]
		}
		en := windowEntry(sys.name, users, "", u.Wall, errs, all)
		fillCPU(&en, u, -1)
		f.Entries = append(f.Entries, en)
		e.Logf("%s: %.1f tasks/s, p50 %.1f ms, p95 %.1f ms, %.2f cores (%s), %d failed checks",
			sys.name, en.RPS, en.P50Ms, en.P95Ms, en.CPUCores, fmtClasses(en.CPUByClass), errs)
		for _, t := range shopper.Tasks {
			f.Entries = append(f.Entries, windowEntry(sys.name, users, t.Name, u.Wall, rec.errs[t.Name], rec.lat[t.Name]))
		}
		f.Series = append(f.Series, rpsSeries(sys.name, rec, ""))
		f.Series = append(f.Series, series...)
		if errs > 0 {
			f.Problems = append(f.Problems, fmt.Sprintf("%s: %d failed checks; first: %s", sys.name, errs, rec.firstErr))
		}
		if rep != nil {
			e.Logf("%s:\n%s", sys.name, rep)
		}
		return sys.alive()
	}

	var k *knativePath
	return sprightThenKnative(f,
		func() (*sprightSys, error) {
			admin, err := freeLoopbackAddr()
			if err != nil {
				return nil, err
			}
			return startSpright(ctx, e, "boutique", "skmsg", nil, attachWeb(admin), "--admin-listen", admin)
		},
		func() (*system, error) {
			var err error
			if k, err = startKnativeRoot(ctx, e, fns, nil, false, boutique.SvcFrontend); err != nil {
				return nil, err
			}
			return knativeSystem(k), nil
		},
		func(sys *system) error {
			if sys.knative != nil {
				return run(sys, strings.TrimSuffix(sys.knative.RootURL(), "/"))
			}
			url, _ := sys.request("")
			return run(sys, strings.TrimSuffix(url, "/"))
		})
}
