package main

import (
	"path/filepath"
	"strings"
	"testing"

	"github.com/spright-dev/spright/pkg/eproxy"
)

// TestAgentHint: the errors a real registration attempt returns map to a
// hint naming what to check.
func TestAgentHint(t *testing.T) {
	_, err := eproxy.RegisterPod(filepath.Join(t.TempDir(), "missing.sock"), eproxy.PodIdentity{Namespace: "ns", Revision: "r", Pod: "p"})
	if err == nil {
		t.Fatal("registered on a socket that does not exist")
	}
	if h := agentHint(err); !strings.Contains(h, "spright-webhook") {
		t.Errorf("missing socket: hint %q (error %v)", h, err)
	}
}
