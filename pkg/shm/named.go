package shm

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"unsafe"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// Named pools outlive the process that created them: the node agent keeps
// them, like its pinned eBPF maps, across a restart, so the chain members
// that still map a pool keep working and a restarted gateway picks the same
// memory up again (DESIGN §3: "a hugetlbfs file"). They live in a root-only
// directory (0700) per gateway, on hugetlbfs when the node has it, on tmpfs
// (/dev/shm, normal pages, logged) otherwise. The file is never handed out
// by name: members still get the fd over the control socket.

// HugeMount is where the gateway mounts hugetlbfs when no hugetlbfs is
// mounted (systemd's dev-hugepages.mount uses the same place).
var HugeMount = "/dev/hugepages"

// ShmDir is the normal-pages fallback (tmpfs).
var ShmDir = "/dev/shm"

// ErrGeometry is returned by OpenNamed for a pool whose header does not
// match the configuration it is opened with (a different chain file).
var ErrGeometry = errors.New("shm: pool geometry differs")

// hugetlbfsMount returns a mounted hugetlbfs with the default page size,
// mounting one at HugeMount if there is none.
func hugetlbfsMount() (string, error) {
	f, err := os.Open("/proc/self/mounts")
	if err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fl := strings.Fields(sc.Text())
			if len(fl) >= 4 && fl[2] == "hugetlbfs" && !strings.Contains(fl[3], "pagesize=1G") {
				f.Close()
				return fl[1], nil
			}
		}
		f.Close()
	}
	if err := os.MkdirAll(HugeMount, 0o755); err != nil {
		return "", fmt.Errorf("create %s: %w", HugeMount, err)
	}
	if err := unix.Mount("hugetlbfs", HugeMount, "hugetlbfs", 0, "mode=0755"); err != nil {
		return "", fmt.Errorf("mount hugetlbfs at %s: %w", HugeMount, err)
	}
	return HugeMount, nil
}

// NamedDirs returns the directories where the pools of gateway key live:
// the hugetlbfs one ("" if hugetlbfs is unavailable) and the tmpfs one.
func NamedDirs(key string) (huge, normal string) {
	if m, err := hugetlbfsMount(); err == nil {
		huge = filepath.Join(m, "spright", key)
	}
	return huge, filepath.Join(ShmDir, "spright", key)
}

// RemoveNamed deletes every pool file of gateway key (a clean stop). A
// process that still maps a pool keeps its memory until it unmaps it.
func RemoveNamed(key string) error {
	var errs []error
	huge, normal := NamedDirs(key)
	for _, d := range []string{huge, normal} {
		if d == "" {
			continue
		}
		if err := os.RemoveAll(d); err != nil {
			errs = append(errs, fmt.Errorf("shm: remove pools in %s: %w", d, err))
		}
		os.Remove(filepath.Dir(d)) // the shared "spright" parent, if now empty
	}
	return errors.Join(errs...)
}

// Path is the pool's file, "" for an anonymous (memfd) pool.
func (p *ChainPool) Path() string { return p.path }

// CreateNamed makes a new pool as file name of gateway key (replacing an
// old one): on hugetlbfs if possible, on tmpfs otherwise (logged).
func CreateNamed(key, name string, chain uint16, cfg Config, log *zap.Logger) (*ChainPool, error) {
	if log == nil {
		log = zap.NewNop()
	}
	l, err := layoutFor(name, cfg)
	if err != nil {
		return nil, err
	}
	huge, normal := NamedDirs(key)
	var why error
	if !cfg.NoHugePages && huge != "" {
		size := roundUp(l.Total, hugePageSize)
		p, err := createFile(filepath.Join(huge, name), size)
		if err == nil {
			os.Remove(filepath.Join(normal, name))
			l.Total = size
			p.huge = true
			p.init(chain, l)
			log.Info("pool created", zap.String("pool", name), zap.String("path", p.path), zap.Uint16("chain", chain), zap.Uint32("slots", cfg.Slots),
				zap.Uint64("bytes", size), zap.Bool("hugepages", true))
			return p, nil
		}
		why = err
	} else if !cfg.NoHugePages {
		why = errors.New("no hugetlbfs")
	}
	if why != nil {
		log.Warn("hugepages unavailable, pool falls back to normal pages; reserve some with: echo N > /proc/sys/vm/nr_hugepages",
			zap.String("pool", name), zap.Error(why))
	}
	if huge != "" {
		os.Remove(filepath.Join(huge, name))
	}
	p, err := createFile(filepath.Join(normal, name), l.Total)
	if err != nil {
		return nil, fmt.Errorf("shm: create pool %q: %w", name, err)
	}
	p.init(chain, l)
	log.Info("pool created", zap.String("pool", name), zap.String("path", p.path), zap.Uint16("chain", chain), zap.Uint32("slots", cfg.Slots),
		zap.Uint64("bytes", l.Total), zap.Bool("hugepages", false))
	return p, nil
}

func createFile(path string, size uint64) (*ChainPool, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return nil, err
	}
	_ = os.Remove(path)
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CREAT|unix.O_EXCL|unix.O_CLOEXEC, 0o600)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	if err := unix.Ftruncate(fd, int64(size)); err != nil {
		unix.Close(fd)
		os.Remove(path)
		return nil, fmt.Errorf("ftruncate %s to %d: %w", path, size, err)
	}
	mem, err := unix.Mmap(fd, 0, int(size), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED)
	if err != nil {
		unix.Close(fd)
		os.Remove(path)
		return nil, fmt.Errorf("mmap %s (%d bytes): %w", path, size, err)
	}
	return &ChainPool{mem: mem, fd: fd, owned: true, path: path}, nil
}

// OpenNamed maps an existing pool file of gateway key (a restarted
// gateway). It checks the header (magic, version, chain, geometry) against
// chain and cfg; a pool that does not match is ErrGeometry, a missing one
// os.ErrNotExist. The free list is rebuilt from the slot states (the old
// gateway may have died half-way through an Alloc or Free; only the
// gateway allocates and frees, so nobody else touches the list).
func OpenNamed(key, name string, chain uint16, cfg Config) (*ChainPool, error) {
	l, err := layoutFor(name, cfg)
	if err != nil {
		return nil, err
	}
	huge, normal := NamedDirs(key)
	var path string
	for _, d := range []string{huge, normal} {
		if d == "" {
			continue
		}
		if _, err := os.Stat(filepath.Join(d, name)); err == nil {
			path = filepath.Join(d, name)
			break
		}
	}
	if path == "" {
		return nil, fmt.Errorf("shm: pool %q: %w", name, os.ErrNotExist)
	}
	fd, err := unix.Open(path, unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("shm: open pool %s: %w", path, err)
	}
	p, err := Open(fd)
	if err != nil {
		return nil, fmt.Errorf("shm: pool %s: %w", path, err)
	}
	p.path, p.owned = path, true
	h := p.hdr
	if h.Chain != chain || h.Slots != cfg.Slots || uint64(h.SlotSize) != l.SlotSize || h.RegionSize != l.RegionSize ||
		h.SlotHdrOff != l.SlotHdrOff || h.RegionOff != l.RegionOff || h.DataOff != l.DataOff {
		got := fmt.Sprintf("chain %d, %d slots of %d bytes, region %d", h.Chain, h.Slots, h.SlotSize, h.RegionSize)
		p.Close()
		return nil, fmt.Errorf("%w: %s holds %s, want chain %d, %d slots of %d bytes, region %d",
			ErrGeometry, path, got, chain, cfg.Slots, l.SlotSize, l.RegionSize)
	}
	p.rebuildFreeList()
	return p, nil
}

// layout is a pool's geometry.
type layout struct {
	SlotSize, SlotHdrOff, RegionOff, RegionSize, DataOff, Total uint64
	Slots                                                       uint32
}

func layoutFor(name string, cfg Config) (layout, error) {
	if cfg.Slots == 0 || cfg.SlotSize == 0 {
		return layout{}, fmt.Errorf("shm: create pool %q: slots and slot size must be > 0", name)
	}
	if cfg.Slots > 1<<24 {
		return layout{}, fmt.Errorf("shm: create pool %q: %d slots is more than the %d supported", name, cfg.Slots, 1<<24)
	}
	var l layout
	l.Slots = cfg.Slots
	l.SlotSize = roundUp(uint64(cfg.SlotSize), 64)
	l.SlotHdrOff = uint64(headerSize)
	l.RegionOff = roundUp(l.SlotHdrOff+uint64(cfg.Slots)*SlotHeaderSize, 4096)
	l.RegionSize = roundUp(uint64(cfg.RegionSize), 4096)
	l.DataOff = roundUp(l.RegionOff+l.RegionSize, 4096)
	l.Total = l.DataOff + uint64(cfg.Slots)*l.SlotSize
	return l, nil
}

// init writes a fresh header and free list (slot 0 is popped first).
func (p *ChainPool) init(chain uint16, l layout) {
	p.hdr = (*poolHeader)(unsafe.Pointer(&p.mem[0]))
	*p.hdr = poolHeader{
		Magic: poolMagic, Version: poolVersion, Chain: chain,
		Slots: l.Slots, SlotSize: uint32(l.SlotSize),
		SlotHdrOff: l.SlotHdrOff, RegionOff: l.RegionOff, RegionSize: l.RegionSize,
		DataOff: l.DataOff, Total: l.Total,
	}
	if p.huge {
		p.hdr.HugePages = 1
	}
	for i := int(l.Slots) - 1; i >= 0; i-- {
		h := p.Header(uint32(i))
		*h = SlotHeader{Owner: OwnerNone, State: SlotFree}
		h.next = uint32(p.hdr.FreeHead & 0xffffffff)
		p.hdr.FreeHead = uint64(i + 1)
	}
	p.hdr.FreeCount = int64(l.Slots)
}

// rebuildFreeList relinks every free slot and recounts them. Only for a
// pool nobody else allocates from or frees to at the moment.
func (p *ChainPool) rebuildFreeList() {
	var head uint32
	var n int64
	for i := int(p.hdr.Slots) - 1; i >= 0; i-- {
		h := p.Header(uint32(i))
		if atomic.LoadUint32(&h.State) != SlotInUse {
			atomic.StoreUint32(&h.State, SlotFree)
			atomic.StoreUint32(&h.Owner, OwnerNone)
			atomic.StoreUint32(&h.next, head)
			head = uint32(i + 1)
			n++
		}
	}
	tag := atomic.LoadUint64(&p.hdr.FreeHead) >> 32
	atomic.StoreUint64(&p.hdr.FreeHead, (tag+1)<<32|uint64(head))
	atomic.StoreInt64(&p.hdr.FreeCount, n)
}

// InUse calls fn for every slot in use, with its owner.
func (p *ChainPool) InUse(fn func(slot, owner uint32)) {
	for i := uint32(0); i < p.hdr.Slots; i++ {
		h := p.Header(i)
		if atomic.LoadUint32(&h.State) == SlotInUse {
			fn(i, atomic.LoadUint32(&h.Owner))
		}
	}
}
