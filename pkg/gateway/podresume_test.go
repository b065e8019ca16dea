package gateway_test

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/spright-dev/spright/pkg/eproxy"
	"github.com/spright-dev/spright/pkg/gateway"
)

// TestRestartHandsPodsTheirEntriesBack: an agent that closes keeps its
// pods' metrics entries (pinned); the next agent on the same pins gives a
// pod registering with its previous instance that instance back (Resumed),
// and refuses it to another pod naming it, and to a second claim while the
// first holds it.
func TestRestartHandsPodsTheirEntriesBack(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	sock := filepath.Join(dir, "ctl.sock")
	pin := filepath.Join("/sys/fs/bpf", fmt.Sprintf("spright-test-%d-%s", os.Getpid(), t.Name()))
	start := func() *gateway.Gateway {
		g, err := gateway.New(gateway.Config{ControlSocket: sock, PinDir: pin, Logger: testLogger(t)})
		if err != nil {
			t.Fatal(err)
		}
		if err := g.Start(); err != nil {
			t.Fatal(err)
		}
		return g
	}
	g1 := start()
	t.Cleanup(func() { g1.Close(); g1.Unpin() }) // runs last: the pins go whatever happened
	a := eproxy.PodIdentity{Namespace: "ns", Revision: "rev-1", Pod: "pod-a"}
	b := eproxy.PodIdentity{Namespace: "ns", Revision: "rev-1", Pod: "pod-b"}
	ca, err := eproxy.RegisterPod(sock, a)
	if err != nil {
		t.Fatal(err)
	}
	if ca.Resumed {
		t.Errorf("a first registration resumed")
	}
	g1.Close() // the agent stops; pod-a's EPROXY lives on
	ca.Close()
	g2 := start()
	t.Cleanup(func() { g2.Close(); g2.Unpin() })
	// Another pod naming pod-a's instance does not get it.
	b.Previous = ca.Instance
	cb, err := eproxy.RegisterPod(sock, b)
	if err != nil {
		t.Fatal(err)
	}
	defer cb.Close()
	if _, err := g2.Datapath().Metrics(ca.Instance); err != nil {
		t.Fatalf("pod-a's entry did not survive the agent's close: %v", err)
	}
	if cb.Resumed || cb.Instance == ca.Instance {
		t.Errorf("pod-b naming pod-a's instance %d got instance %d, resumed %v", ca.Instance, cb.Instance, cb.Resumed)
	}
	// pod-a does.
	a.Previous = ca.Instance
	ca2, err := eproxy.RegisterPod(sock, a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca2.Close()
	if !ca2.Resumed || ca2.Instance != ca.Instance {
		t.Errorf("pod-a registering again got instance %d (resumed %v), want its previous %d back", ca2.Instance, ca2.Resumed, ca.Instance)
	}
	// A second claim while pod-a holds it does not.
	ca3, err := eproxy.RegisterPod(sock, a)
	if err != nil {
		t.Fatal(err)
	}
	defer ca3.Close()
	if ca3.Resumed || ca3.Instance == ca.Instance {
		t.Errorf("a second claim of instance %d got it (instance %d, resumed %v)", ca.Instance, ca3.Instance, ca3.Resumed)
	}
}
