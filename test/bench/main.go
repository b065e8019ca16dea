// Command bench runs the benchmark suite (see package scenario):
//
//	go run ./test/bench [--quick] [--out DIR] [--profile] [scenario...]   # run, then regenerate the report
//	go run ./test/bench --report-only                         # RESULTS.md, CSV and PNGs from the JSON
//	go run ./test/bench --list
//
// It needs root. Missing Debian tools (wrk, nginx) are installed with
// apt-get. The exit status is non-zero if any scenario failed or reported
// a problem (non-2xx answers, wrong answers, leftovers), after the
// results and the report have been written.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
	"github.com/spright-dev/spright/test/bench/scenario"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("bench", flag.ContinueOnError)
	quick := fs.Bool("quick", false, "smoke run: every window shortened (figures are not a measurement)")
	out := fs.String("out", "", "results directory (default <module>/test/bench/results)")
	reportOnly := fs.Bool("report-only", false, "only regenerate RESULTS.md, CSV and PNG plots from the JSON")
	noReport := fs.Bool("no-report", false, "do not regenerate the report after running")
	list := fs.Bool("list", false, "list the scenarios")
	keep := fs.Bool("keep-tmp", false, "keep the temporary directory (binaries, configs, logs)")
	systems := fs.String("systems", "", "comma-separated: measure only these systems where a scenario supports it (chain2: spright-skmsg, spright-poll, direct, knative, skmsg-hop); for development")
	profile := fs.Bool("profile", false, "chain2: also record perf profiles of the gateway, a function and the whole host at c=1, c=32 and c=32 with Connection: close, in extra windows, into OUT/profiles")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	if *list {
		for _, s := range scenario.All() {
			fmt.Printf("%-10s %s\n", s.Name, s.Title)
		}
		return nil
	}
	root, err := benchutil.ModuleRoot()
	if err != nil {
		return err
	}
	if *out == "" {
		*out = filepath.Join(root, "test/bench/results")
	}
	report := func() error {
		md := filepath.Join(root, "test/bench/RESULTS.md")
		if *out != filepath.Join(root, "test/bench/results") {
			md = filepath.Join(*out, "RESULTS.md")
		}
		if err := scenario.Report(*out, md); err != nil {
			return fmt.Errorf("report: %w", err)
		}
		fmt.Fprintf(os.Stderr, "bench: wrote %s\n", md)
		return nil
	}
	if *reportOnly {
		return report()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := &scenario.Options{Quick: *quick, Out: *out, Root: root, KeepTmp: *keep, Profile: *profile, Args: append([]string{"go run ./test/bench"}, args...)}
	if *systems != "" {
		o.Systems = strings.Split(*systems, ",")
	}
	runErr := scenario.Run(ctx, o, fs.Args())
	if !*noReport {
		if err := report(); err != nil && runErr == nil {
			runErr = err
		}
	}
	return runErr
}
