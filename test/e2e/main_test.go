// Package e2e runs whole chains the way a user does: the spright binary,
// real eBPF programs, real network namespaces and veths, real shared memory.
// Every test needs root; they skip (saying why) without it.
package e2e

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// spright is the binary under test, built once by TestMain.
var spright string

func TestMain(m *testing.M) {
	if os.Getenv(asQueueProxyEnv) != "" {
		asQueueProxy() // a re-exec of this binary; does not return
	}
	dir, err := os.MkdirTemp("", "spright-e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	spright = filepath.Join(dir, "spright")
	build := exec.Command("go", "build", "-o", spright, "github.com/spright-dev/spright/cmd/spright")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building spright:", err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root: eBPF, bpffs, network namespaces")
	}
	if _, err := exec.LookPath("ip"); err != nil {
		t.Skip("needs iproute2 (ip)")
	}
}
