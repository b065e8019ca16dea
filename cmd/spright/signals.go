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
//	SIGHUP            reload: re-read the -f file and apply it (Runner.ReloadFile); a refused
//	                  reload is logged with its reason and the chain serves on unchanged
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
func serveUntilStopped(r *standalone.Runner, file string, sigs <-chan os.Signal, log *zap.Logger) os.Signal {
	for sig := range sigs {
		switch sig {
		case syscall.SIGHUP:
			// In the background: a stop signal must not wait for a
			// reload (Stop makes one in progress give up).
			go reload(r, file, log)
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

// reload is what SIGHUP does: re-read the chain file and apply what
// changed while the chain serves. Reloads run one at a time (a second
// SIGHUP waits for the first). The runner logs what changed, or why it
// refused: a file
// that does not parse or changes what cannot change in place leaves the
// chain serving as before — SIGHUP used to kill `spright run` outright.
func reload(r *standalone.Runner, file string, log *zap.Logger) {
	log.Info("SIGHUP: reloading the chain file", zap.String("chain", r.File.Name), zap.String("file", file))
	if err := r.ReloadFile(file); err != nil {
		log.Error("SIGHUP: reload not applied; the chain serves on as before", zap.String("chain", r.File.Name),
			zap.String("file", file), zap.Error(err))
	}
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
