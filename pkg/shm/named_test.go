package shm

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"testing"

	"go.uber.org/zap/zaptest"
)

// TestNamedPoolSurvivesReopen: a named pool keeps its slots, owners and
// bytes across a close and reopen (a gateway restart), its free list is
// rebuilt from the slot states (here: a slot popped by an Alloc that died
// before marking it in use), and a different geometry is refused.
func TestNamedPoolSurvivesReopen(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root (hugetlbfs mount, /dev/shm)")
	}
	key := fmt.Sprintf("test-%d-%s", os.Getpid(), t.Name())
	t.Cleanup(func() { RemoveNamed(key) })
	cfg := Config{Slots: 8, SlotSize: 1024, RegionSize: 4096}
	p, err := CreateNamed(key, "c", 3, cfg, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("pool at %s (hugepages %v)", p.Path(), p.HugePages())
	a, _ := p.Alloc(0)
	b, _ := p.Alloc(7)
	copy(p.Data(b), "kept")
	// A gateway killed inside Alloc: the head moved, the state did not.
	old := atomic.LoadUint64(&p.hdr.FreeHead)
	lost := uint32(old) - 1
	nx := atomic.LoadUint32(&p.Header(lost).next)
	atomic.StoreUint64(&p.hdr.FreeHead, (old>>32+1)<<32|uint64(nx))
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}

	if _, err := OpenNamed(key, "c", 3, Config{Slots: 16, SlotSize: 1024, RegionSize: 4096}); !errors.Is(err, ErrGeometry) {
		t.Fatalf("reopen with other geometry: %v, want ErrGeometry", err)
	}
	if _, err := OpenNamed(key, "c", 4, cfg); !errors.Is(err, ErrGeometry) {
		t.Fatalf("reopen for another chain: %v, want ErrGeometry", err)
	}
	if _, err := OpenNamed(key, "nope", 3, cfg); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("reopen of a missing pool: %v", err)
	}
	q, err := OpenNamed(key, "c", 3, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	if q.FreeCount() != 6 {
		t.Fatalf("free count after reopen %d, want 6 (8 - 2 in use, the half-allocated slot back)", q.FreeCount())
	}
	owners := map[uint32]uint32{}
	q.InUse(func(s, o uint32) { owners[s] = o })
	if len(owners) != 2 || owners[a] != 0 || owners[b] != 7 || string(q.Data(b)[:4]) != "kept" {
		t.Fatalf("in use after reopen %v, data %q", owners, q.Data(b)[:4])
	}
	seen := map[uint32]bool{}
	for {
		s, err := q.Alloc(1)
		if err != nil {
			break
		}
		if s == a || s == b || seen[s] {
			t.Fatalf("slot %d handed out twice", s)
		}
		seen[s] = true
	}
	if len(seen) != 6 || !seen[lost] {
		t.Fatalf("allocated %d slots after reopen (lost slot %d back: %v), want 6", len(seen), lost, seen[lost])
	}
	path := q.Path()
	if err := RemoveNamed(key); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(path); !os.IsNotExist(err) {
		t.Fatalf("%s still there after RemoveNamed: %v", path, err)
	}
}
