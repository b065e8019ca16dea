package transport

import (
	"errors"
	"sync"
	"testing"

	"github.com/spright-dev/spright/pkg/descriptor"
)

func TestRingsManyProducers(t *testing.T) {
	rs, err := InitRings(make([]byte, RingsSize))
	if err != nil {
		t.Fatal(err)
	}
	idx, err := rs.Claim(5)
	if err != nil {
		t.Fatal(err)
	}
	rx, _ := NewRingTransport(rs, idx)
	const producers, each = 4, 5000
	var wg sync.WaitGroup
	for p := 0; p < producers; p++ {
		wg.Add(1)
		go func(p int) {
			defer wg.Done()
			tx := &RingTransport{rs: rs}
			for i := 0; i < each; i++ {
				if err := tx.Send(descriptor.Descriptor{Next: 5, Slot: uint32(p), Len: uint32(i)}); err != nil {
					t.Error(err)
					return
				}
			}
		}(p)
	}
	next := make([]uint32, producers)
	for n := 0; n < producers*each; n++ {
		d, err := rx.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if d.Next != 5 || d.Len != next[d.Slot] {
			t.Fatalf("out of order or corrupt: %v, want len %d", d, next[d.Slot])
		}
		next[d.Slot]++
	}
	wg.Wait()
	tx := &RingTransport{rs: rs}
	if err := tx.Send(descriptor.Descriptor{Next: 6}); !errors.Is(err, ErrNoRing) {
		t.Fatalf("send to an unknown instance: %v", err)
	}
	rs.Release(idx)
	if err := tx.Send(descriptor.Descriptor{Next: 5}); !errors.Is(err, ErrNoRing) {
		t.Fatalf("send to a released ring: %v", err)
	}
	rx.Close()
	if _, err := rx.Recv(); !errors.Is(err, ErrClosed) {
		t.Fatalf("Recv after Close: %v", err)
	}
}
