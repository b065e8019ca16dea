package gateway

import (
	"crypto/sha256"
	"errors"
	"os"
	"path/filepath"

	"github.com/cilium/ebpf"
)

// podOwnersPin is the pinned map (next to the data path's maps) that says
// which pod holds each pod instance ID. A restarted agent hands an ID and
// its metrics entries back only to the pod that held it (resumePod): any
// pod could name any previous ID, and would otherwise read another pod's
// counters and add its own traffic to them.
const podOwnersPin = "pod_owners"

// podOwnerKey is what is recorded for a pod: a hash of its Knative identity.
func podOwnerKey(namespace, revision, pod string) [32]byte {
	return sha256.Sum256([]byte(namespace + "\x00" + revision + "\x00" + pod))
}

// podOwners opens (or creates) the pinned owner map. The caller holds g.mu
// or is the only user; nil when it cannot be had (no resumption then).
func (g *Gateway) podOwnersMap() *ebpf.Map {
	g.ownersOnce.Do(func() {
		m, err := ebpf.NewMapWithOptions(&ebpf.MapSpec{Name: podOwnersPin, Type: ebpf.Hash, KeySize: 4, ValueSize: 32,
			MaxEntries: 65536, Pinning: ebpf.PinByName}, ebpf.MapOptions{PinPath: g.cfg.PinDir})
		if err != nil {
			g.log.Sugar().Warnw("no pod owner map: pods are not handed their entries back after an agent restart", "error", err)
			return
		}
		g.owners = m
	})
	return g.owners
}

// recordPodOwner notes that pod holds instance id.
func (g *Gateway) recordPodOwner(id uint32, namespace, revision, pod string) {
	if m := g.podOwnersMap(); m != nil {
		k := podOwnerKey(namespace, revision, pod)
		m.Update(id, k, ebpf.UpdateAny)
	}
}

// forgetPodOwner drops id's owner (the pod left for good).
func (g *Gateway) forgetPodOwner(id uint32) {
	if m := g.podOwnersMap(); m != nil {
		m.Delete(id)
	}
}

// ownsPod reports whether id was recorded for this pod.
func (g *Gateway) ownsPod(id uint32, namespace, revision, pod string) bool {
	m := g.podOwnersMap()
	if m == nil {
		return false
	}
	var k [32]byte
	if err := m.Lookup(id, &k); err != nil {
		return false
	}
	return k == podOwnerKey(namespace, revision, pod)
}

// unpinPodOwners removes the owner map's pin (Unpin).
func (g *Gateway) unpinPodOwners() error {
	err := os.Remove(filepath.Join(g.cfg.PinDir, podOwnersPin))
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	return err
}
