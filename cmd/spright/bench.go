package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// modulePath is SPRIGHT's Go module; `spright bench` runs the benchmark
// suite from its source tree.
const modulePath = "github.com/spright-dev/spright"

// cmdBench runs the benchmark suite: `go run ./test/bench ARGS...` in the
// SPRIGHT source tree (the current directory or a parent, or
// $SPRIGHT_SOURCE). The suite builds what it measures (spright, the
// real queue-proxy, the HTTP function) from that tree, so it needs it
// and Go; shelling out keeps the plotting and load-generation code out of
// this binary.
//
//	spright bench [--quick] [SCENARIO...]   (sidecar, chain2, boutique, motion, parking, xdp)
//	spright bench --report-only
//	spright bench --list
func cmdBench(args []string) error {
	root, err := sourceTree()
	if err != nil {
		return err
	}
	cmd := exec.Command("go", append([]string{"run", "./test/bench"}, args...)...)
	cmd.Dir = root
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return fmt.Errorf("benchmark failed (%v)", err)
		}
		return fmt.Errorf("go run ./test/bench: %w (is Go installed?)", err)
	}
	return nil
}

// sourceTree finds the SPRIGHT module directory.
func sourceTree() (string, error) {
	if d := os.Getenv("SPRIGHT_SOURCE"); d != "" {
		if isSourceTree(d) {
			return d, nil
		}
		return "", fmt.Errorf("SPRIGHT_SOURCE=%s is not the %s source tree", d, modulePath)
	}
	d, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if isSourceTree(d) {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("not inside the %s source tree (cd into it or set SPRIGHT_SOURCE)", modulePath)
		}
		d = parent
	}
}

func isSourceTree(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "go.mod"))
	if err != nil {
		return false
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if l := strings.TrimSpace(sc.Text()); strings.HasPrefix(l, "module ") {
			return strings.TrimSpace(strings.TrimPrefix(l, "module ")) == modulePath
		}
	}
	return false
}
