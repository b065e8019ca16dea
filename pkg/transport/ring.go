package transport

import (
	"errors"
	"fmt"
	"runtime"
	"sync/atomic"
	"unsafe"

	"github.com/spright-dev/spright/pkg/descriptor"
)

// Ring geometry (poll mode).
const (
	MaxRings  = 64
	RingCells = 512
)

type cell struct {
	Seq  uint64
	Desc [descriptor.Size]byte
	_    [8]byte
}

type ring struct {
	Owner uint32 // instance ID + 1; 0 = unused (atomic)
	_     [60]byte
	Head  uint64 // next enqueue position (atomic, many producers)
	_     [56]byte
	Tail  uint64 // next dequeue position (single consumer)
	_     [56]byte
	Cells [RingCells]cell
}

// RingsSize is the number of pool-region bytes the rings need.
const RingsSize = int(unsafe.Sizeof([MaxRings]ring{}))

// Rings is the set of descriptor rings in a pool region.
type Rings struct{ r *[MaxRings]ring }

// InitRings formats region (RingsSize bytes) as empty, unowned rings.
func InitRings(region []byte) (*Rings, error) {
	rs, err := OpenRings(region)
	if err != nil {
		return nil, err
	}
	for i := range rs.r {
		rs.reset(i)
	}
	return rs, nil
}

// OpenRings maps rings the gateway formatted.
func OpenRings(region []byte) (*Rings, error) {
	if len(region) < RingsSize {
		return nil, fmt.Errorf("transport: region of %d bytes, rings need %d", len(region), RingsSize)
	}
	return &Rings{r: (*[MaxRings]ring)(unsafe.Pointer(&region[0]))}, nil
}

func (rs *Rings) reset(i int) {
	r := &rs.r[i]
	atomic.StoreUint32(&r.Owner, 0)
	atomic.StoreUint64(&r.Head, 0)
	atomic.StoreUint64(&r.Tail, 0)
	for c := range r.Cells {
		atomic.StoreUint64(&r.Cells[c].Seq, uint64(c))
	}
}

// Claim gives instance a fresh ring and returns its index.
func (rs *Rings) Claim(instance uint32) (int, error) {
	for i := range rs.r {
		if atomic.LoadUint32(&rs.r[i].Owner) == 0 {
			rs.reset(i)
			atomic.StoreUint32(&rs.r[i].Owner, instance+1)
			return i, nil
		}
	}
	return -1, fmt.Errorf("transport: all %d poll rings in use", MaxRings)
}

// Release frees ring i (its owner died or left).
func (rs *Rings) Release(i int) {
	if i >= 0 && i < MaxRings {
		atomic.StoreUint32(&rs.r[i].Owner, 0)
	}
}

func (rs *Rings) find(instance uint32) *ring {
	for i := range rs.r {
		if atomic.LoadUint32(&rs.r[i].Owner) == instance+1 {
			return &rs.r[i]
		}
	}
	return nil
}

// ErrNoRing means the receiver has no ring (not registered, or dead).
var ErrNoRing = errors.New("transport: receiver has no ring")

// ErrRingFull means the receiver's ring is full.
var ErrRingFull = errors.New("transport: receiver ring full")

func (r *ring) enqueue(b *[descriptor.Size]byte) bool {
	for {
		pos := atomic.LoadUint64(&r.Head)
		c := &r.Cells[pos%RingCells]
		seq := atomic.LoadUint64(&c.Seq)
		switch dif := int64(seq) - int64(pos); {
		case dif == 0:
			if atomic.CompareAndSwapUint64(&r.Head, pos, pos+1) {
				c.Desc = *b
				atomic.StoreUint64(&c.Seq, pos+1)
				return true
			}
		case dif < 0:
			return false
		}
	}
}

func (r *ring) dequeue(b *[descriptor.Size]byte) bool {
	pos := r.Tail
	c := &r.Cells[pos%RingCells]
	if atomic.LoadUint64(&c.Seq) != pos+1 {
		return false
	}
	*b = c.Desc
	r.Tail = pos + 1
	atomic.StoreUint64(&c.Seq, pos+RingCells)
	return true
}

// RingTransport is one member's endpoint in poll mode.
type RingTransport struct {
	rs     *Rings
	me     *ring
	closed atomic.Bool
}

// NewRingTransport returns the endpoint that receives on ring idx.
func NewRingTransport(rs *Rings, idx int) (*RingTransport, error) {
	if idx < 0 || idx >= MaxRings {
		return nil, fmt.Errorf("transport: ring %d out of range", idx)
	}
	return &RingTransport{rs: rs, me: &rs.r[idx]}, nil
}

// Send enqueues d on the ring of d.Next, spinning while it is full.
func (t *RingTransport) Send(d descriptor.Descriptor) error {
	b := d.Bytes()
	for spins := 0; ; spins++ {
		r := t.rs.find(d.Next)
		if r == nil {
			return fmt.Errorf("%w: instance %d", ErrNoRing, d.Next)
		}
		if r.enqueue(&b) {
			return nil
		}
		if t.closed.Load() || spins > 1<<22 {
			return fmt.Errorf("%w: instance %d", ErrRingFull, d.Next)
		}
		runtime.Gosched()
	}
}

// Recv busy-polls the ring: this is the CPU cost the sk_msg path avoids.
func (t *RingTransport) Recv() (descriptor.Descriptor, error) {
	var b [descriptor.Size]byte
	for !t.me.dequeue(&b) {
		if t.closed.Load() {
			return descriptor.Descriptor{}, ErrClosed
		}
		runtime.Gosched()
	}
	return descriptor.Unmarshal(b[:])
}

// Close stops Recv.
func (t *RingTransport) Close() error { t.closed.Store(true); return nil }
