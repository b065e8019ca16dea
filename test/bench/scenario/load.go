package scenario

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"time"

	"sigs.k8s.io/yaml"
)

// system is a system under test driven by the Go load generator.
type system struct {
	name   string
	groups Groups
	alive  func() error
	stop   func(f *File)
	// url builds the request URL and headers for a chain (topic).
	request func(chain string) (url string, header map[string][]string)
	knative *knativePath
}

func sprightSystem(s *sprightSys) *system {
	return &system{name: s.system, groups: s.groups, alive: s.alive, stop: s.stop,
		request: func(chain string) (string, map[string][]string) {
			if chain == "" || chain == "*" {
				return s.URL, nil
			}
			return s.URL, map[string][]string{"X-Spright-Topic": {chain}}
		}}
}

func knativeSystem(k *knativePath) *system {
	return &system{name: SysKnative, groups: k.groups, alive: k.alive, stop: k.stop, knative: k,
		request: func(chain string) (string, map[string][]string) { return k.URL(chain), nil }}
}

// sampleChain is what the benchmark reads of a sample chain.yaml: the
// functions (with service times) and the gateway routes.
type sampleChain struct {
	Routes    map[string][]string `json:"routes"`
	Functions []struct {
		Name        string `json:"name"`
		ServiceTime string `json:"serviceTime"`
	} `json:"functions"`
}

// loadSample reads config/samples/<name>/chain.yaml and returns its
// functions with service times multiplied by scale, and its routes.
func loadSample(root, name string, scale float64) ([]FnSpec, map[string][]string, error) {
	b, err := os.ReadFile(filepath.Join(root, "config/samples", name, "chain.yaml"))
	if err != nil {
		return nil, nil, err
	}
	var c sampleChain
	if err := yaml.Unmarshal(b, &c); err != nil {
		return nil, nil, fmt.Errorf("%s chain.yaml: %w", name, err)
	}
	var fns []FnSpec
	for _, f := range c.Functions {
		var st time.Duration
		if f.ServiceTime != "" {
			if st, err = time.ParseDuration(f.ServiceTime); err != nil {
				return nil, nil, fmt.Errorf("%s: function %s: %w", name, f.Name, err)
			}
		}
		fns = append(fns, FnSpec{Name: f.Name, Behavior: "echo", ServiceTime: time.Duration(float64(st) * scale)})
	}
	return fns, c.Routes, nil
}

// scaleServiceTimes returns a chain-file mutator multiplying every
// function's serviceTime by scale (for `spright run`).
func scaleServiceTimes(scale float64) func(map[string]any) {
	return func(m map[string]any) {
		fs, _ := m["functions"].([]any)
		for _, x := range fs {
			f, _ := x.(map[string]any)
			if s, ok := f["serviceTime"].(string); ok {
				if d, err := time.ParseDuration(s); err == nil {
					f["serviceTime"] = time.Duration(float64(d) * scale).String()
				}
			}
		}
	}
}

// rpsSeries turns per-second completions into a series.
func rpsSeries(system string, rec *recorder, label string) Series {
	s := Series{System: system, Metric: "rps", Label: label, Unit: "req/s"}
	var total []int
	labels := []string{label}
	if label == "" {
		labels = nil
		for l := range rec.perSec {
			labels = append(labels, l)
		}
		sort.Strings(labels)
	}
	for _, l := range labels {
		for i, n := range rec.perSec[l] {
			for len(total) <= i {
				total = append(total, 0)
			}
			total[i] += n
		}
	}
	for i, n := range total {
		s.T = append(s.T, float64(i)+0.5)
		s.V = append(s.V, float64(n))
	}
	return s
}

// startTimelineFor samples sys's CPU every second from now.
func startTimelineFor(ctx context.Context, e *Env, sys *system) *timeline {
	return startTimeline(ctx, e.Tick, sys.groups, time.Second)
}

// sprightThenKnative measures a scenario on the SPRIGHT chain, then on the
// Knative path, stopping each after its run. A SPRIGHT chain that fails to
// start or run is recorded as a problem and the Knative side still runs; the
// Knative side's error is the scenario's.
func sprightThenKnative(f *File, startSpright func() (*sprightSys, error), startKnative func() (*system, error), run func(*system) error) error {
	if s, err := startSpright(); err != nil {
		f.Problems = append(f.Problems, err.Error())
	} else {
		sys := sprightSystem(s)
		if err := run(sys); err != nil {
			f.Problems = append(f.Problems, fmt.Sprintf("%s: %v", sys.name, err))
		}
		sys.stop(f)
	}
	sys, err := startKnative()
	if err != nil {
		return err
	}
	err = run(sys)
	sys.stop(f)
	return err
}
