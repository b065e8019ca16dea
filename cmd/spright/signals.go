package main

import (
	"os"
	"os/signal"
	"runtime/pprof"
	"syscall"

	"go.uber.org/zap"

	"github.com/spright-dev/spright/pkg/standalone"
)

// runSignals are the signals `spright run` handles, and this file is the
// one place that decides what each does. Go's default for SIGHUP, SIGINT,
// SIGTERM and SIGQUIT is to exit on the spot, which would leave the
// chain's network namespaces, veths, pinned maps and pool behind; the
// function processes would die with the runner (Pdeathsig) but nothing
// would clean up after them.
//
//	SIGHUP            reload (not implemented yet: logged, the chain serves on as started)
//	SIGINT, SIGTERM   stop: Runner.Stop drains HTTP, stops the functions, removes namespaces, veths, pins
//	SIGQUIT           the same, after writing every goroutine's stack to stderr (what Go's default prints)
//	SIGPIPE           ignored: stderr into a pipe whose reader went away must not kill the runner
//
// SIGKILL cannot be caught: after kill -9 the functions die with the runner
// (Pdeathsig) and the namespaces and pins stay until removed by hand.
var runSignals = []os.Signal{syscall.SIGHUP, syscall.SIGINT, syscall.SIGTERM, syscall.SIGQUIT, syscall.SIGPIPE}

// watchSignals starts catching runSignals. Call it before standalone.Start,
// so that a signal during start-up is not fatal either: it is acted on
// once the chain is up (Start has its own deadline).
func watchSignals() chan os.Signal {
	ch := make(chan os.Signal, 8)
	signal.Notify(ch, runSignals...)
	return ch
}

// serveUntilStopped acts on signals until one asks to stop, and returns it.
// Runner.Stop is the caller's; signals arriving while it runs are logged
// and otherwise ignored (see ignoreWhileStopping).
func serveUntilStopped(r *standalone.Runner, sigs <-chan os.Signal, log *zap.Logger) os.Signal {
	for sig := range sigs {
		switch sig {
		case syscall.SIGHUP:
			reload(r, log)
		case syscall.SIGPIPE:
			// Nothing to do: the write that raised it failed with EPIPE.
		case syscall.SIGQUIT:
			pprof.Lookup("goroutine").WriteTo(os.Stderr, 2)
			return sig
		default:
			return sig
		}
	}
	return nil
}

// reload is what SIGHUP does. Re-reading chain.yaml (a Runner.Reload
// applying the changes to the running chain) is not implemented yet; when
// it is, this is the place to call it. Until then the chain keeps serving
// as it was started, which is what a daemon asked to reload must not get
// wrong: SIGHUP used to kill `spright run` and leave its namespaces behind.
func reload(r *standalone.Runner, log *zap.Logger) {
	log.Warn("SIGHUP: reloading chain.yaml is not implemented yet; the chain keeps serving as started",
		zap.String("chain", r.File.Name))
}

// ignoreWhileStopping logs the signals that arrive while Runner.Stop runs:
// a second Ctrl-C must not cut the clean-up short (it is bounded: about
// 5 s of HTTP drain, then 5 s for the functions to exit).
func ignoreWhileStopping(sigs <-chan os.Signal, log *zap.Logger) {
	for sig := range sigs {
		if sig != syscall.SIGPIPE {
			log.Warn("already stopping: cleaning up the chain's namespaces and pins first", zap.Stringer("signal", sig))
		}
	}
}
