package scenario

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
)

func init() {
	register(&Scenario{
		Name:  "chain2",
		Title: "Two-function chain (paper Fig. 5): SPRIGHT sk_msg vs SPRIGHT polling vs the Knative path",
		Tools: map[string]string{"nginx": "nginx"},
		Run:   runChain2,
	})
}

func runChain2(ctx context.Context, e *Env, f *File) error {
	conc := Pick(e, []int{1, 8, 32, 64}, []int{1, 32})
	dur := Pick(e, 10*time.Second, 3*time.Second)
	idle := Pick(e, 10*time.Second, 3*time.Second)
	warm := Pick(e, 2*time.Second, time.Second)
	script := filepath.Join(e.Tmp, "chain2-mix.lua")
	if err := benchutil.WriteMixScript(script, benchutil.PaperMix, 1); err != nil {
		return err
	}
	f.Method = append([]string{
		"The hello chain (config/samples/hello/chain.yaml): `upper` then `reverse`, no added service time. " +
			"POST bodies drawn per request from the paper's mix, " + benchutil.DescribeMix(benchutil.PaperMix) + ", by a generated wrk Lua script; " +
			"after each run a probe checks POST abc → CBA.",
		"spright-skmsg / spright-poll: `spright run` of that chain with mode skmsg or poll (gateway in the spright process, " +
			"each function a process in its own network namespace). Process classes: gateway (the spright run process), functions.",
		fmt.Sprintf("Per system: idle CPU over %v, a %v warm-up, then wrk (2 threads, capped at the connection count) for %v at each concurrency %v.", idle, warm, dur, conc),
	}, KnativeBaseline...)
	f.Settings = map[string]any{"concurrency": conc, "duration_s": dur.Seconds(), "idle_s": idle.Seconds(), "mix": benchutil.PaperMix}

	plan := func(system, url string, g Groups, alive func() error) wrkPlan {
		return wrkPlan{System: system, URL: url, Script: script, Concurrency: conc, Duration: dur, Idle: idle, Warmup: warm,
			Groups: g, Alive: alive, Probe: func(ctx context.Context) error { return probeHello(ctx, url) }}
	}
	for _, mode := range []string{"skmsg", "poll"} {
		s, err := startSpright(ctx, e, "hello", mode, nil, probeHello)
		if err != nil {
			f.Problems = append(f.Problems, err.Error())
			continue
		}
		err = runWrkPlan(ctx, e, f, plan(s.system, s.URL, s.groups, s.alive))
		s.stop(f)
		if err != nil {
			f.Problems = append(f.Problems, err.Error())
		}
	}
	k, err := startKnative(ctx, e, []FnSpec{{Name: "upper", Behavior: "upper"}, {Name: "reverse", Behavior: "reverse"}},
		map[string][]string{"hello": {"upper", "reverse"}}, false)
	if err != nil {
		return err
	}
	err = runWrkPlan(ctx, e, f, plan(SysKnative, k.URL("hello"), k.groups, k.alive))
	k.stop(f)
	return err
}
