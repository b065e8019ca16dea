package sidecar

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// BuildQueueProxy builds Knative's queue-proxy (knative.dev/serving
// cmd/queue at ServingVersion) into dir and returns the binary's path.
//
// It builds inside serving's own module, with serving's go.mod and go.sum:
// the binary then has the dependency versions Knative released it with,
// and the SPRIGHT module's go.mod (which need not list queue-proxy's
// dependencies) is neither read nor touched. `go install pkg@version`
// cannot do this because serving's go.mod has a replace directive. As
// Knative's images (ko), the binary is static (CGO_ENABLED=0). The first
// build downloads serving's dependencies into the module cache; later ones
// come from the build cache in seconds.
func BuildQueueProxy(dir string) (string, error) {
	return BuildQueueProxyContext(context.Background(), dir)
}

// BuildQueueProxyContext is BuildQueueProxy with a context.
func BuildQueueProxyContext(ctx context.Context, dir string) (string, error) {
	src, err := servingDir(ctx)
	if err != nil {
		return "", err
	}
	out, err := filepath.Abs(filepath.Join(dir, "queue-proxy"))
	if err != nil {
		return "", err
	}
	// -mod=mod: the module cache copy of serving has an empty vendor/
	// (only modules.txt), which would otherwise make go build insist on
	// vendoring. Its go.mod and go.sum are complete, so nothing is
	// written to the (read-only) module directory.
	cmd := exec.CommandContext(ctx, "go", "build", "-mod=mod", "-trimpath", "-o", out, "./cmd/queue")
	cmd.Dir = src
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOFLAGS=-buildvcs=false", "GOWORK=off")
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build %s@%s/cmd/queue (in %s): %w\n%s", servingModule, ServingVersion, src, err, b)
	}
	return out, nil
}

// servingDir is knative.dev/serving@ServingVersion in the module cache,
// downloaded if needed. `go mod download` runs outside any module so that
// it cannot add to the SPRIGHT module's go.sum.
func servingDir(ctx context.Context) (string, error) {
	tmp, err := os.MkdirTemp("", "spright-qp-download-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.CommandContext(ctx, "go", "mod", "download", "-json", servingModule+"@"+ServingVersion)
	cmd.Dir = tmp
	cmd.Env = append(os.Environ(), "GO111MODULE=on", "GOWORK=off", "GOFLAGS=")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	b, err := cmd.Output()
	var info struct {
		Dir   string
		Error string
	}
	if jerr := json.Unmarshal(b, &info); jerr == nil && info.Error != "" {
		return "", fmt.Errorf("go mod download %s@%s: %s", servingModule, ServingVersion, info.Error)
	}
	if err != nil {
		return "", fmt.Errorf("go mod download %s@%s: %w: %s", servingModule, ServingVersion, err, strings.TrimSpace(stderr.String()))
	}
	if info.Dir == "" {
		return "", errors.New("go mod download: no module directory in its answer")
	}
	return info.Dir, nil
}

// BuildUserFunction builds the HTTP function fixture (test/fixtures/httpfn)
// into dir. moduleDir is a directory of the SPRIGHT module ("" for the
// current directory).
func BuildUserFunction(ctx context.Context, moduleDir, dir string) (string, error) {
	out, err := filepath.Abs(filepath.Join(dir, "httpfn"))
	if err != nil {
		return "", err
	}
	cmd := exec.CommandContext(ctx, "go", "build", "-o", out, "github.com/spright-dev/spright/test/fixtures/httpfn")
	cmd.Dir = moduleDir
	if b, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build test/fixtures/httpfn: %w\n%s", err, b)
	}
	return out, nil
}
