package shm

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"

	"go.uber.org/zap/zaptest"

	"github.com/spright-dev/spright/pkg/descriptor"
)

func newPool(t *testing.T, slots uint32) *ChainPool {
	t.Helper()
	p, err := Create(t.Name(), 5, Config{Slots: slots, SlotSize: 1000, RegionSize: 4096, NoHugePages: true}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

func TestAllocFreeExhaust(t *testing.T) {
	p := newPool(t, 8)
	if p.SlotSize() != 1024 {
		t.Fatalf("slot size %d, want rounded to 1024", p.SlotSize())
	}
	seen := map[uint32]bool{}
	for i := 0; i < 8; i++ {
		s, err := p.Alloc(7)
		if err != nil {
			t.Fatal(err)
		}
		if seen[s] {
			t.Fatalf("slot %d handed out twice", s)
		}
		seen[s] = true
		if p.Owner(s) != 7 {
			t.Fatalf("owner %d", p.Owner(s))
		}
	}
	if _, err := p.Alloc(7); !errors.Is(err, ErrPoolFull) {
		t.Fatalf("Alloc on full pool = %v, want ErrPoolFull", err)
	}
	if p.FreeCount() != 0 {
		t.Fatalf("free count %d", p.FreeCount())
	}
	for s := range seen {
		if err := p.Free(s); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Free(3); !errors.Is(err, ErrDoubleFree) {
		t.Fatalf("double free = %v", err)
	}
	if err := p.Free(99); !errors.Is(err, ErrSlotRange) {
		t.Fatalf("free out of range = %v", err)
	}
	if p.FreeCount() != 8 {
		t.Fatalf("free count %d, want 8", p.FreeCount())
	}
}

func TestHandoffAndReclaim(t *testing.T) {
	p := newPool(t, 16)
	var mine []uint32
	for i := 0; i < 10; i++ {
		s, _ := p.Alloc(0)
		owner := uint32(1 + i%2)
		if !p.Handoff(s, 0, owner) {
			t.Fatal("handoff failed")
		}
		if owner == 2 {
			mine = append(mine, s)
		}
	}
	if p.Handoff(mine[0], 1, 3) {
		t.Fatal("handoff from a non-owner succeeded")
	}
	var got []uint32
	n := p.ReclaimOwner(2, 0, func(s uint32) { got = append(got, s); p.Free(s) })
	if n != 5 || fmt.Sprint(got) != fmt.Sprint(mine) {
		t.Fatalf("reclaimed %d %v, want %v", n, got, mine)
	}
	if p.FreeCount() != 11 {
		t.Fatalf("free count %d, want 11", p.FreeCount())
	}
}

func TestPayloadValidates(t *testing.T) {
	p := newPool(t, 4)
	s, _ := p.Alloc(0)
	copy(p.Data(s), "hello")
	b, err := p.Payload(descriptor.Descriptor{Chain: 5, Slot: s, Len: 5})
	if err != nil || string(b) != "hello" || !p.Contains(b) {
		t.Fatalf("payload %q %v contains=%v", b, err, p.Contains(b))
	}
	for _, d := range []descriptor.Descriptor{{Chain: 6, Slot: s, Len: 1}, {Chain: 5, Slot: 4, Len: 1}, {Chain: 5, Slot: 0, Len: 1025}} {
		if _, err := p.Payload(d); err == nil {
			t.Errorf("Payload(%v) accepted", d)
		}
	}
	if p.Contains(make([]byte, 4)) {
		t.Fatal("heap slice reported inside pool")
	}
}

func TestOpenRejectsGarbage(t *testing.T) {
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	f.Truncate(8192)
	fd, _ := dupFD(int(f.Fd()))
	if _, err := Open(fd); !errors.Is(err, ErrBadPool) {
		t.Fatalf("Open(garbage) = %v", err)
	}
}

func hugePagesFree(t *testing.T) int {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if f := strings.Fields(l); len(f) == 2 && f[0] == "HugePages_Free:" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	return 0
}

func TestHugePagesOrFallback(t *testing.T) {
	free := hugePagesFree(t)
	p, err := Create("huge", 1, Config{Slots: 4, SlotSize: 4096, RegionSize: 4096}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	t.Logf("hugepages free before: %d; pool on hugepages: %v", free, p.HugePages())
	// Other test packages run in parallel and take hugepages too: only a
	// fallback while pages are still free afterwards is a failure.
	if free >= 1 && !p.HugePages() && hugePagesFree(t) >= 1 {
		t.Fatalf("%d hugepages free but the pool fell back to normal pages", hugePagesFree(t))
	}
	if free == 0 && p.HugePages() {
		t.Fatal("pool claims hugepages with none free")
	}
	s, err := p.Alloc(0)
	if err != nil {
		t.Fatal(err)
	}
	p.Data(s)[0] = 1
}

// TestCrossProcess hammers one pool from this process and a child process
// (the test binary re-executed, with the pool fd inherited): every slot must
// be handed out to one holder at a time, and the free count must come back.
func TestCrossProcess(t *testing.T) {
	if os.Getenv("SHM_CHILD") != "" {
		fd, _ := strconv.Atoi(os.Getenv("SHM_CHILD"))
		p, err := Open(fd)
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		hammer(p, 100, 20000)
		os.Exit(0)
	}
	p := newPool(t, 64)
	f, err := p.File()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestCrossProcess$")
	cmd.Env = append(os.Environ(), "SHM_CHILD=3")
	cmd.ExtraFiles = []*os.File{f}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < 2; g++ {
		wg.Add(1)
		go func(g int) { defer wg.Done(); hammer(p, uint32(200+g), 20000) }(g)
	}
	wg.Wait()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("child: %v", err)
	}
	if p.FreeCount() != 64 {
		t.Fatalf("free count %d after hammer, want 64", p.FreeCount())
	}
}

// hammer allocates, marks, checks and frees slots; a slot seen with someone
// else's mark means two holders had it at once.
func hammer(p *ChainPool, me uint32, n int) {
	for i := 0; i < n; i++ {
		s, err := p.Alloc(me)
		if err != nil {
			continue
		}
		d := p.Data(s)
		d[0], d[1] = byte(me), byte(me>>8)
		if p.Owner(s) != me || d[0] != byte(me) || d[1] != byte(me>>8) {
			panic(fmt.Sprintf("slot %d shared: owner %d", s, p.Owner(s)))
		}
		if err := p.Free(s); err != nil {
			panic(err)
		}
	}
}
