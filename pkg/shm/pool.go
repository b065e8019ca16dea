package shm

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/spright-dev/spright/pkg/descriptor"
)

const (
	poolMagic   uint64 = 0x3154484749525053 // "SPRIGHT1" in memory (little endian)
	poolVersion uint32 = 1

	headerSize     = 4096
	SlotHeaderSize = 128
	hugePageSize   = 2 << 20

	// MaxTopic is the longest topic a slot header can carry.
	MaxTopic = 48
	// MaxItinerary is the longest list of pending hops a slot can carry.
	MaxItinerary = 32
)

// Slot states.
const (
	SlotFree  uint32 = 0
	SlotInUse uint32 = 1
)

// OwnerNone marks a free slot's owner field.
const OwnerNone uint32 = 0xFFFFFFFF

// Errors.
var (
	ErrPoolFull   = errors.New("shm: pool full")
	ErrBadPool    = errors.New("shm: not a SPRIGHT pool")
	ErrSlotRange  = errors.New("shm: slot out of range")
	ErrDoubleFree = errors.New("shm: slot already free")
)

// Config is a pool's geometry.
type Config struct {
	Slots      uint32 // number of slots
	SlotSize   uint32 // bytes per slot (rounded up to 64)
	RegionSize uint32 // bytes reserved for route table / rings (rounded up to a page)
	// NoHugePages forces normal pages (tests, nodes without hugepages).
	NoHugePages bool
}

// DefaultConfig is used when a chain does not say otherwise.
var DefaultConfig = Config{Slots: 1024, SlotSize: 16 << 10, RegionSize: 1 << 20}

// poolHeader is the first bytes of the pool. Fields written once at creation
// are plain; fields shared at run time are accessed with sync/atomic.
type poolHeader struct {
	Magic      uint64
	Version    uint32
	Chain      uint16
	_          uint16
	Slots      uint32
	SlotSize   uint32
	SlotHdrOff uint64
	RegionOff  uint64
	RegionSize uint64
	DataOff    uint64
	Total      uint64
	FreeHead   uint64 // tag<<32 | (index+1); low word 0 = empty
	FreeCount  int64
	HugePages  uint32
	_          uint32
}

// SlotHeader is the per-slot metadata in shared memory. Fields that change
// hands between processes (State, Owner, Next) are accessed atomically; the
// rest are written by the current owner only, before it sends the descriptor
// (the socket send/receive orders the memory accesses).
type SlotHeader struct {
	State     uint32 // SlotFree / SlotInUse (atomic)
	Owner     uint32 // instance ID holding the slot (atomic)
	next      uint32 // free-list link: index+1, 0 = end (atomic)
	Gen       uint32 // bumped on every Alloc
	RequestID uint64
	Status    uint16 // HTTP-like status set by a function (0 = OK)
	TopicLen  uint8
	ItinLen   uint8
	Hops      uint16 // functions visited so far
	// RouteEpoch is the route-table epoch the gateway dispatched the
	// request on: every hop of the request follows that epoch's routes,
	// so a chain reconfigured while it runs changes only new requests.
	RouteEpoch uint16
	StartNs    int64 // when the gateway dispatched
	Topic      [MaxTopic]byte
	Itinerary  [MaxItinerary]uint8 // pending function indices, consumed from the end
	_          [8]byte
}

func init() {
	if s := unsafe.Sizeof(SlotHeader{}); s != SlotHeaderSize {
		panic(fmt.Sprintf("shm: SlotHeader is %d bytes, want %d", s, SlotHeaderSize))
	}
}

// SetTopic stores t (truncated to MaxTopic bytes).
func (h *SlotHeader) SetTopic(t string) {
	n := copy(h.Topic[:], t)
	h.TopicLen = uint8(n)
}

// TopicString returns the topic.
func (h *SlotHeader) TopicString() string { return string(h.Topic[:h.TopicLen]) }

// ChainPool is one chain's mapped pool.
type ChainPool struct {
	mem   []byte
	fd    int
	hdr   *poolHeader
	huge  bool
	owned bool   // created here (vs. opened from a received fd)
	path  string // the pool's file (named pools), "" for a memfd
}

func roundUp(v, to uint64) uint64 { return (v + to - 1) / to * to }

// Create makes a new anonymous (memfd) pool for chain: it lives as long as
// a process maps it or holds its fd. It tries hugepages first and falls back
// to normal pages, with a warning saying why (log may be nil). CreateNamed
// makes a pool that outlives the gateway.
func Create(name string, chain uint16, cfg Config, log *zap.Logger) (*ChainPool, error) {
	l, err := layoutFor(name, cfg)
	if err != nil {
		return nil, err
	}
	if log == nil {
		log = zap.NewNop()
	}
	var (
		fd   int
		mem  []byte
		huge bool
	)
	if !cfg.NoHugePages {
		hsize := roundUp(l.Total, hugePageSize)
		fd, mem, err = mapNew(name, hsize, unix.MFD_HUGETLB)
		if err == nil {
			huge, l.Total = true, hsize
		} else {
			log.Warn("hugepages unavailable, pool falls back to normal pages; reserve some with: echo N > /proc/sys/vm/nr_hugepages",
				zap.String("pool", name), zap.Uint64("bytes", hsize), zap.Error(err))
		}
	}
	if !huge {
		fd, mem, err = mapNew(name, l.Total, 0)
		if err != nil {
			return nil, fmt.Errorf("shm: create pool %q (%d bytes): %w", name, l.Total, err)
		}
	}
	p := &ChainPool{mem: mem, fd: fd, huge: huge, owned: true}
	p.init(chain, l)
	log.Info("pool created", zap.String("pool", name), zap.Uint16("chain", chain), zap.Uint32("slots", cfg.Slots),
		zap.Uint64("slot_size", l.SlotSize), zap.Uint64("bytes", l.Total), zap.Bool("hugepages", huge))
	return p, nil
}

func mapNew(name string, size uint64, flags int) (int, []byte, error) {
	fd, err := unix.MemfdCreate("spright-pool-"+name, flags|unix.MFD_CLOEXEC)
	if err != nil {
		return -1, nil, fmt.Errorf("memfd_create: %w", err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("ftruncate %d: %w", size, err)
	}
	// For hugetlbfs, mmap reserves the pages, so a node without enough
	// hugepages fails here (ENOMEM) rather than with SIGBUS on first touch.
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return -1, nil, fmt.Errorf("mmap %d bytes: %w", size, err)
	}
	return fd, mem, nil
}

// Open maps a pool from an fd received from the gateway. The pool takes
// ownership of fd (closed on error too).
func Open(fd int) (*ChainPool, error) {
	var st unix.Stat_t
	if err := unix.Fstat(fd, &st); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: fstat pool fd: %w", err)
	}
	if st.Size < headerSize {
		unix.Close(fd)
		return nil, fmt.Errorf("%w: %d bytes", ErrBadPool, st.Size)
	}
	mem, err := unix.Mmap(fd, 0, int(st.Size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("shm: mmap pool fd (%d bytes): %w", st.Size, err)
	}
	p := &ChainPool{mem: mem, fd: fd}
	p.hdr = (*poolHeader)(unsafe.Pointer(&mem[0]))
	h := p.hdr
	if h.Magic != poolMagic || h.Version != poolVersion || h.Total != uint64(st.Size) ||
		h.DataOff+uint64(h.Slots)*uint64(h.SlotSize) > h.Total ||
		h.SlotHdrOff+uint64(h.Slots)*SlotHeaderSize > h.RegionOff ||
		h.RegionOff+h.RegionSize > h.DataOff {
		magic, version := h.Magic, h.Version
		unix.Munmap(mem)
		unix.Close(fd)
		return nil, fmt.Errorf("%w: bad header (magic %#x version %d)", ErrBadPool, magic, version)
	}
	p.huge = h.HugePages == 1
	return p, nil
}

// Close unmaps the pool and closes its fd. A named pool's file stays
// (Remove deletes it).
func (p *ChainPool) Close() error {
	if p.mem == nil {
		return nil
	}
	err := unix.Munmap(p.mem)
	p.mem = nil
	if cerr := unix.Close(p.fd); err == nil {
		err = cerr
	}
	return err
}

// Remove deletes a named pool's file (after Close, or before: the memory
// lives on while mapped). No-op for a memfd pool.
func (p *ChainPool) Remove() error {
	if p.path == "" {
		return nil
	}
	if err := os.Remove(p.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("shm: remove pool %s: %w", p.path, err)
	}
	return nil
}

// FD is the pool's memfd, to be passed to chain members with SCM_RIGHTS.
func (p *ChainPool) FD() int { return p.fd }

// File returns a dup of the pool fd as an *os.File.
func (p *ChainPool) File() (*os.File, error) {
	nfd, err := unix.Dup(p.fd)
	if err != nil {
		return nil, err
	}
	return os.NewFile(uintptr(nfd), "spright-pool"), nil
}

// Chain is the pool's chain ID.
func (p *ChainPool) Chain() uint16 { return p.hdr.Chain }

// Slots is the number of slots.
func (p *ChainPool) Slots() uint32 { return p.hdr.Slots }

// SlotSize is the capacity of one slot in bytes.
func (p *ChainPool) SlotSize() uint32 { return p.hdr.SlotSize }

// HugePages reports whether the pool is backed by hugepages.
func (p *ChainPool) HugePages() bool { return p.huge }

// Bounds is what descriptor.Validate needs.
func (p *ChainPool) Bounds() descriptor.Bounds {
	return descriptor.Bounds{Chain: p.hdr.Chain, Slots: p.hdr.Slots, SlotSize: p.hdr.SlotSize}
}

// FreeCount is the number of free slots.
func (p *ChainPool) FreeCount() int { return int(atomic.LoadInt64(&p.hdr.FreeCount)) }

// Header returns slot i's header. i must be < Slots (checked).
func (p *ChainPool) Header(i uint32) *SlotHeader {
	if i >= p.hdr.Slots {
		panic(fmt.Sprintf("shm: slot %d out of range (%d slots)", i, p.hdr.Slots))
	}
	off := p.hdr.SlotHdrOff + uint64(i)*SlotHeaderSize
	return (*SlotHeader)(unsafe.Pointer(&p.mem[off]))
}

// Data returns slot i's whole data area (capacity SlotSize) as a slice into
// the mapping: writing to it writes shared memory.
func (p *ChainPool) Data(i uint32) []byte {
	if i >= p.hdr.Slots {
		panic(fmt.Sprintf("shm: slot %d out of range (%d slots)", i, p.hdr.Slots))
	}
	off := p.hdr.DataOff + uint64(i)*uint64(p.hdr.SlotSize)
	return p.mem[off : off+uint64(p.hdr.SlotSize) : off+uint64(p.hdr.SlotSize)]
}

// Payload validates d against this pool and returns the bytes it points at.
func (p *ChainPool) Payload(d descriptor.Descriptor) ([]byte, error) {
	if err := d.Validate(p.Bounds()); err != nil {
		return nil, err
	}
	return p.Data(d.Slot)[:d.Len], nil
}

// Region returns the pool's fixed region (route table, rings).
func (p *ChainPool) Region() []byte {
	return p.mem[p.hdr.RegionOff : p.hdr.RegionOff+p.hdr.RegionSize : p.hdr.RegionOff+p.hdr.RegionSize]
}

// Contains reports whether b's backing memory lies inside this pool's
// mapping (used to prove zero copy).
func (p *ChainPool) Contains(b []byte) bool {
	if len(b) == 0 || len(p.mem) == 0 {
		return false
	}
	start := uintptr(unsafe.Pointer(&p.mem[0]))
	ptr := uintptr(unsafe.Pointer(&b[0]))
	return ptr >= start && ptr+uintptr(len(b)) <= start+uintptr(len(p.mem))
}

// Alloc takes a free slot for owner. It returns ErrPoolFull when none is left.
func (p *ChainPool) Alloc(owner uint32) (uint32, error) {
	for {
		old := atomic.LoadUint64(&p.hdr.FreeHead)
		idx1 := uint32(old)
		if idx1 == 0 {
			return 0, ErrPoolFull
		}
		h := p.Header(idx1 - 1)
		next := atomic.LoadUint32(&h.next)
		nw := (old>>32+1)<<32 | uint64(next)
		if atomic.CompareAndSwapUint64(&p.hdr.FreeHead, old, nw) {
			i := idx1 - 1
			atomic.StoreUint32(&h.Owner, owner)
			h.Gen++
			h.RequestID, h.Status, h.TopicLen, h.ItinLen, h.Hops, h.StartNs = 0, 0, 0, 0, 0, 0
			atomic.StoreUint32(&h.State, SlotInUse)
			atomic.AddInt64(&p.hdr.FreeCount, -1)
			return i, nil
		}
	}
}

// Free returns slot i to the pool. Freeing a free slot is an error, never a
// corruption: the state flips with compare-and-swap.
func (p *ChainPool) Free(i uint32) error {
	if i >= p.hdr.Slots {
		return fmt.Errorf("%w: %d", ErrSlotRange, i)
	}
	h := p.Header(i)
	if !atomic.CompareAndSwapUint32(&h.State, SlotInUse, SlotFree) {
		return fmt.Errorf("%w: %d", ErrDoubleFree, i)
	}
	atomic.StoreUint32(&h.Owner, OwnerNone)
	for {
		old := atomic.LoadUint64(&p.hdr.FreeHead)
		atomic.StoreUint32(&h.next, uint32(old))
		nw := (old>>32+1)<<32 | uint64(i+1)
		if atomic.CompareAndSwapUint64(&p.hdr.FreeHead, old, nw) {
			atomic.AddInt64(&p.hdr.FreeCount, 1)
			return nil
		}
	}
}

// Owner returns the instance holding slot i.
func (p *ChainPool) Owner(i uint32) uint32 { return atomic.LoadUint32(&p.Header(i).Owner) }

// Handoff moves slot i from instance from to instance to, atomically. It
// fails if the slot is no longer held by from (e.g. reclaimed after a crash).
func (p *ChainPool) Handoff(i, from, to uint32) bool {
	h := p.Header(i)
	return atomic.LoadUint32(&h.State) == SlotInUse && atomic.CompareAndSwapUint32(&h.Owner, from, to)
}

// ReclaimOwner takes back every in-use slot held by owner (a dead instance):
// each is handed to newOwner and passed to fn, which decides what to do
// (typically: fail the request waiting on it, then Free). It returns how many
// slots were reclaimed.
func (p *ChainPool) ReclaimOwner(owner, newOwner uint32, fn func(slot uint32)) int {
	n := 0
	for i := uint32(0); i < p.hdr.Slots; i++ {
		h := p.Header(i)
		if atomic.LoadUint32(&h.State) != SlotInUse {
			continue
		}
		if atomic.CompareAndSwapUint32(&h.Owner, owner, newOwner) {
			n++
			if fn != nil {
				fn(i)
			}
		}
	}
	return n
}
