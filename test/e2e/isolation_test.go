package e2e

import (
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/spright-dev/spright/pkg/function"
	"github.com/spright-dev/spright/pkg/standalone"
)

// TestOnlyStartedProcessesJoin: in standalone mode the gateway hands a
// chain's pool only to the processes the runner started as that chain's
// functions. A local process claiming to be `upper` (this test process) is
// refused before it sees any file descriptor; the chain keeps serving.
func TestOnlyStartedProcessesJoin(t *testing.T) {
	c := startChainWith(t, helloYAML, func(o *standalone.Options) { o.AllowUnlisted = false })
	for _, claim := range []struct{ chain, fn string }{{"hello", "upper"}, {"hello", "reverse"}, {"other", "upper"}} {
		in, err := function.Register(function.Options{ControlSocket: c.Gateway.ControlSocketPath(), Chain: claim.chain, Function: claim.fn, Logger: zaptest.NewLogger(t)})
		if err == nil {
			in.Close()
			t.Fatalf("an unstarted process joined as %s/%s", claim.chain, claim.fn)
		}
		t.Logf("%s/%s refused: %v", claim.chain, claim.fn, err)
	}
	if n := c.Chain.InstanceCount("upper"); n != 1 {
		t.Fatalf("%d upper instances, want the runner's 1", n)
	}
	if code, body, err := post(c.url, "abc"); err != nil || code != 200 || body != "CBA" {
		t.Fatalf("chain after refusals: %d %q %v", code, body, err)
	}
}
