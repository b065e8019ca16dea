// Command hop measures the per-hop floor of SPRIGHT's descriptor path: two
// sockets in the real eBPF sockhash bouncing a 16-byte descriptor through
// the real sk_msg program (test/bench/internal/hop). It prints one JSON
// object per mode (hop.Result). Needs root (it loads the program).
//
//	go run ./test/bench/hop [--mode thread,netpoll] [--duration 3s] [--pin-dir DIR]
//
// The chain2 benchmark runs it and reports the result as the hop floor.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"strings"
	"time"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
	"github.com/spright-dev/spright/test/bench/internal/hop"
)

func main() {
	modes := flag.String("mode", hop.ModeThread+","+hop.ModeNetpoll, "comma-separated modes: "+hop.ModeThread+" (blocking read on an OS thread), "+hop.ModeNetpoll+" (net.Conn, Go's netpoller)")
	dur := flag.Duration("duration", 3*time.Second, "how long to bounce per mode")
	pin := flag.String("pin-dir", "", "where to pin the maps for the run (on bpffs; removed after); empty: a private bpffs on a temporary directory")
	flag.Parse()
	tick, err := benchutil.ClockTicks()
	if err != nil {
		fmt.Fprintln(os.Stderr, "hop:", err)
		os.Exit(1)
	}
	enc := json.NewEncoder(os.Stdout)
	for _, m := range strings.Split(*modes, ",") {
		r, err := hop.Run(hop.Options{PinDir: *pin, Mode: m, Duration: *dur, Tick: tick})
		if err != nil {
			fmt.Fprintln(os.Stderr, "hop:", err)
			os.Exit(1)
		}
		enc.Encode(r)
	}
}
