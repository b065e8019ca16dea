package scenario

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
)

// errExternalWrote tells the runner an external program wrote the file.
var errExternalWrote = errors.New("results written by the external program")

func init() {
	register(&Scenario{
		Name:     "xdp",
		Title:    "XDP/TC redirect on/off (paper Appendix B): RPS and latency",
		External: true,
		Run:      runXDP,
	})
}

// runXDP runs `go run ./test/bench/xdp --out DIR [--quick]`, a separate
// program (built with the XDP/TC redirect feature) that writes xdp.json
// in this package's schema. Without it the scenario is recorded as not
// available.
func runXDP(ctx context.Context, e *Env, f *File) error {
	src := filepath.Join(e.Opts.Root, "test/bench/xdp")
	if st, err := os.Stat(src); err != nil || !st.IsDir() {
		f.Unavailable = "test/bench/xdp does not exist in this tree yet: the XDP/TC redirect feature (paper Appendix B) has not landed. " +
			"Once it does, this scenario runs `go run ./test/bench/xdp --out <results> [--quick]`."
		return nil
	}
	args := []string{"run", "./test/bench/xdp", "--out", e.Opts.Out}
	if e.Opts.Quick {
		args = append(args, "--quick")
	} else {
		// Two load levels keep the whole suite inside its 15 minutes on
		// 2 cores; run the program alone for 1,8,32,64.
		args = append(args, "--concurrency", "8,32", "--duration", "6s")
	}
	e.Logf("xdp: go %v", args)
	cmd := exec.CommandContext(ctx, "go", args...)
	cmd.Dir = e.Opts.Root
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	runErr := cmd.Run()
	if _, err := os.Stat(filepath.Join(e.Opts.Out, "xdp.json")); err != nil {
		if runErr != nil {
			return fmt.Errorf("go run ./test/bench/xdp: %w (and no xdp.json)", runErr)
		}
		return errors.New("go run ./test/bench/xdp wrote no xdp.json")
	}
	if runErr != nil {
		// The program's own problems are in its file; the exit status
		// is the runner's signal.
		return errors.Join(errExternalWrote, fmt.Errorf("go run ./test/bench/xdp: %w", runErr))
	}
	return errExternalWrote
}
