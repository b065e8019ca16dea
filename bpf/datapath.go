package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// AnyChain as a socket's chain makes it a member of every chain, as sender
// and as receiver. The gateway registers with it.
const AnyChain uint16 = 0xFFFF

// GatewayInstance is the reserved instance ID of the node gateway. It may
// receive descriptors of every chain.
const GatewayInstance uint32 = 0

// DefaultPinDir is where the node agent pins the data path's maps.
const DefaultPinDir = "/sys/fs/bpf/spright"

// DropReason indexes the drops counters; it mirrors enum drop_reason in
// spright.c.
type DropReason int

const (
	// DropShort: the message is not exactly one 16-byte descriptor (or
	// could not be read).
	DropShort DropReason = 0
	// DropUnknownSender: the sending socket has no registered identity.
	DropUnknownSender DropReason = 1
	// DropSenderChain: the sender is not a member of the descriptor's chain.
	DropSenderChain DropReason = 2
	// DropNextChain: next is unknown or not a member of the descriptor's chain.
	DropNextChain DropReason = 3
	// DropPoolRange: the chain has no pool, or slot/len is out of its range.
	DropPoolRange DropReason = 4
	// DropRedirect: next has no socket in the sockhash.
	DropRedirect DropReason = 5
	// DropSplicePeer: bytes arrived on a spliced socket whose peer is gone
	// (closed); they were discarded (see AddSplice).
	DropSplicePeer DropReason = 6
)

// FlagRejected is set in the flags of a descriptor that the sk_msg program
// handed back to its sender instead of delivering it (a NACK); bits 12-14 of
// the flags then hold the DropReason and bits 0-11 are the sender's own. See
// Rejected.
const FlagRejected uint16 = 0x8000

const (
	rejectReasonShift = 12
	rejectReasonMask  = 0x7000
)

// Rejected reports whether a descriptor with these flags was handed back by
// the data path, and why.
func Rejected(flags uint16) (DropReason, bool) {
	if flags&FlagRejected == 0 {
		return 0, false
	}
	return DropReason((flags & rejectReasonMask) >> rejectReasonShift), true
}

// numDropReasons is the number of reasons defined above; the drops array in
// the kernel has room for more (dropSlots).
const (
	numDropReasons = 7
	dropSlots      = 16
)

// DropReasons lists every defined drop reason in index order.
func DropReasons() []DropReason {
	r := make([]DropReason, numDropReasons)
	for i := range r {
		r[i] = DropReason(i)
	}
	return r
}

func (r DropReason) String() string {
	switch r {
	case DropShort:
		return "short-message"
	case DropUnknownSender:
		return "unknown-sender"
	case DropSenderChain:
		return "sender-not-in-chain"
	case DropNextChain:
		return "next-not-in-chain"
	case DropPoolRange:
		return "slot-or-len-out-of-range"
	case DropRedirect:
		return "next-not-connected"
	case DropSplicePeer:
		return "splice-peer-gone"
	}
	return fmt.Sprintf("drop-reason-%d", int(r))
}

// InstanceMetrics are the EPROXY counters of one instance, written only by
// the sk_msg program.
//
// RequestsIn counts descriptors redirected to the instance, ResponsesOut the
// descriptors it sent on (to the next function or back to the gateway),
// Sent every descriptor it sent (for the gateway: requests injected).
// Inflight is requests in minus responses out, clamped at 0. BusyNs is the
// integral of Inflight over time up to LastNs (CLOCK_MONOTONIC nanoseconds,
// bpf_ktime_get_ns); see BusyNsAt.
type InstanceMetrics struct {
	RequestsIn   uint64
	ResponsesOut uint64
	Inflight     int64
	Sent         uint64
	LastNs       uint64
	BusyNs       uint64
}

// MetricsValueSize is the size of a value of the map returned by
// MetricsMap: the six 64-bit counters of InstanceMetrics in order, then a
// bpf_spin_lock and 4 bytes of padding.
const MetricsValueSize = 56

// UnmarshalBinary decodes a raw instance_metrics value (MetricsValueSize
// bytes, or at least the first 48), so that an InstanceMetrics can be passed
// directly to (*ebpf.Map).Lookup on MetricsMap().
func (m *InstanceMetrics) UnmarshalBinary(b []byte) error {
	if len(b) < 48 {
		return fmt.Errorf("bpf: instance metrics value has %d bytes, want %d", len(b), MetricsValueSize)
	}
	le := binary.LittleEndian // the objects are built for bpfel only
	m.RequestsIn = le.Uint64(b[0:])
	m.ResponsesOut = le.Uint64(b[8:])
	m.Inflight = int64(le.Uint64(b[16:]))
	m.Sent = le.Uint64(b[24:])
	m.LastNs = le.Uint64(b[32:])
	m.BusyNs = le.Uint64(b[40:])
	return nil
}

// BusyNsAt extends the concurrency integral from LastNs to now (a
// MonotonicNs reading): the in-flight requests kept the instance busy since
// the last event. Average concurrency over [t0, t1] is
// (BusyNsAt(t1) - BusyNsAt(t0)) / (t1 - t0), taken from two snapshots.
func (m InstanceMetrics) BusyNsAt(now uint64) uint64 {
	if m.Inflight <= 0 || now <= m.LastNs {
		return m.BusyNs
	}
	return m.BusyNs + uint64(m.Inflight)*(now-m.LastNs)
}

// MonotonicNs reads the clock used by the sk_msg program for LastNs
// (CLOCK_MONOTONIC, what bpf_ktime_get_ns returns).
func MonotonicNs() (uint64, error) {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &ts); err != nil {
		return 0, fmt.Errorf("bpf: read CLOCK_MONOTONIC: %w", err)
	}
	return uint64(ts.Nano()), nil
}

// ErrClosed is returned by methods of a closed Datapath.
var ErrClosed = errors.New("bpf: datapath is closed")

// Datapath is the loaded sk_msg program and its pinned maps. Its methods are
// safe for concurrent use.
type Datapath struct {
	pinDir string

	mu     sync.RWMutex
	objs   sprightObjects
	closed bool

	// spliceMu orders AddSplice (shared) against PruneSplices (exclusive);
	// taken after mu.
	spliceMu sync.RWMutex
}

// pinnedMaps are the names of the maps pinned under the pin directory.
var pinnedMaps = []string{
	sprightMapSockHash,
	sprightMapSenderIdentity,
	sprightMapInstanceChain,
	sprightMapChainPools,
	sprightMapInstanceMetrics,
	sprightMapDrops,
	sprightMapSpliceMap,
	sprightMapSplicePeer,
	sprightMapSpliceSock,
	sprightMapArrivalCounted,
	sprightMapSteerNs,
	sprightMapSteerSrc,
	sprightMapSteerFlows,
}

// Load loads the sk_msg program, the splice programs and their maps,
// pinning the maps under pinDir (e.g. DefaultPinDir). pinDir must be on a bpf
// filesystem (mount -t bpf bpf /sys/fs/bpf); it is created if missing. Maps
// already pinned there with a compatible layout are reused, so a restarted
// gateway keeps the sockets, registrations, splices and counters of the
// running data path. The sk_msg program is attached to sock_hash as its
// BPF_SK_MSG_VERDICT program, the splice programs to splice_map (see
// AddSplice); the attachments live as long as the pinned maps (they survive
// Close).
func Load(pinDir string) (*Datapath, error) {
	if err := checkBPFFS(pinDir); err != nil {
		return nil, err
	}
	if err := os.MkdirAll(pinDir, 0o700); err != nil {
		return nil, fmt.Errorf("bpf: create pin directory: %w", err)
	}
	// A no-op on kernels that account BPF memory to the cgroup (5.11+).
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("bpf: remove memlock rlimit: %w", err)
	}

	d := &Datapath{pinDir: pinDir}
	opts := &ebpf.CollectionOptions{Maps: ebpf.MapOptions{PinPath: pinDir}}
	if err := loadSprightObjects(&d.objs, opts); err != nil {
		var verr *ebpf.VerifierError
		switch {
		case errors.As(err, &verr):
			return nil, fmt.Errorf("bpf: load sk_msg program: %+v", verr)
		case errors.Is(err, ebpf.ErrMapIncompatible):
			return nil, fmt.Errorf("bpf: maps pinned in %s are from an incompatible version (remove them to start afresh): %w", pinDir, err)
		}
		return nil, fmt.Errorf("bpf: load objects (pinned in %s): %w", pinDir, err)
	}

	// Replaces a program attached by an earlier Load. Sockets already in
	// sock_hash keep running the program they were added under; all
	// versions share the pinned maps.
	err := link.RawAttachProgram(link.RawAttachProgramOptions{
		Target:  d.objs.SockHash.FD(),
		Program: d.objs.SprightSkMsg,
		Attach:  ebpf.AttachSkMsgVerdict,
	})
	if err != nil {
		d.objs.Close()
		return nil, fmt.Errorf("bpf: attach sk_msg program to sock_hash: %w", err)
	}
	if err := d.attachSplice(); err != nil {
		d.objs.Close()
		return nil, err
	}
	return d, nil
}

// checkBPFFS makes sure that dir, or its deepest existing ancestor, is on a
// bpf filesystem.
func checkBPFFS(dir string) error {
	p, err := filepath.Abs(dir)
	if err != nil {
		return fmt.Errorf("bpf: pin directory %q: %w", dir, err)
	}
	for {
		var st unix.Statfs_t
		err := unix.Statfs(p, &st)
		if err == nil {
			if st.Type != unix.BPF_FS_MAGIC {
				return fmt.Errorf("bpf: pin directory %s: %s is not on a bpf filesystem (mount -t bpf bpf /sys/fs/bpf)", dir, p)
			}
			return nil
		}
		if !errors.Is(err, unix.ENOENT) {
			return fmt.Errorf("bpf: statfs %s: %w", p, err)
		}
		parent := filepath.Dir(p)
		if parent == p {
			return fmt.Errorf("bpf: pin directory %s: no existing ancestor", dir)
		}
		p = parent
	}
}

// PinDir is the directory the maps are pinned in.
func (d *Datapath) PinDir() string { return d.pinDir }

// Close releases the program and map file descriptors held by d. Pins, the
// program's attachment and the sockets in sock_hash stay: the data path keeps
// working without the loader. Close is idempotent.
func (d *Datapath) Close() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.closed {
		return nil
	}
	d.closed = true
	if err := d.objs.Close(); err != nil {
		return fmt.Errorf("bpf: close objects: %w", err)
	}
	return nil
}

// Unpin removes the map pins and then the pin directory if it is empty. Once
// the pins are gone and every Datapath using them is closed the kernel frees
// the maps, detaches the program and releases the sockets. It works on a
// closed Datapath too.
func (d *Datapath) Unpin() error {
	d.mu.Lock()
	defer d.mu.Unlock()
	var errs []error
	if !d.closed {
		for _, m := range d.maps() {
			if err := m.Unpin(); err != nil {
				errs = append(errs, fmt.Errorf("bpf: unpin %s: %w", mapName(m), err))
			}
		}
	}
	errs = append(errs, unpinSteerLinks(d.pinDir))
	// By name as well: d may be closed, or the maps may have been reused
	// from pins its ebpf.Map values do not know about.
	for _, name := range pinnedMaps {
		err := os.Remove(filepath.Join(d.pinDir, name))
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, fmt.Errorf("bpf: unpin %s: %w", name, err))
		}
	}
	err := os.Remove(d.pinDir)
	if err != nil && !errors.Is(err, os.ErrNotExist) && !errors.Is(err, unix.ENOTEMPTY) && !errors.Is(err, unix.EEXIST) {
		errs = append(errs, fmt.Errorf("bpf: remove pin directory: %w", err))
	}
	return errors.Join(errs...)
}

func (d *Datapath) maps() []*ebpf.Map {
	m := &d.objs.sprightMaps
	return []*ebpf.Map{m.SockHash, m.SenderIdentity, m.InstanceChain, m.ChainPools, m.InstanceMetrics, m.Drops,
		m.SpliceMap, m.SplicePeer, m.SpliceSock, m.ArrivalCounted, m.SteerNs, m.SteerSrc, m.SteerFlows}
}

// SetChain creates or updates the pool bounds of chain: descriptors of that
// chain must have slot < slots and len <= slotSize.
func (d *Datapath) SetChain(chain uint16, slots, slotSize uint32) error {
	if chain == AnyChain {
		return fmt.Errorf("bpf: set chain: %#x is reserved (AnyChain)", chain)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	v := sprightPool{Slots: slots, SlotSize: slotSize}
	if err := d.objs.ChainPools.Update(chain, &v, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bpf: set pool of chain %d: %w", chain, err)
	}
	return nil
}

// DeleteChain removes the pool bounds of chain; from then on every
// descriptor of the chain is dropped. A missing chain is not an error.
func (d *Datapath) DeleteChain(chain uint16) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	if err := d.objs.ChainPools.Delete(chain); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("bpf: delete pool of chain %d: %w", chain, err)
	}
	return nil
}

// AddSocket registers the connected TCP socket fd as instance's socket in
// chain (AnyChain for the gateway): it records the socket's sender identity,
// instance's chain membership, a zeroed metrics entry if there is none yet,
// and finally puts fd into sock_hash[instance], replacing an earlier socket
// of the instance. Adding the same socket again only refreshes the identity;
// to re-arm a socket that got SK_DROP (see the package doc), call
// RemoveInstance first.
//
// The caller keeps ownership of fd; the kernel holds its own reference to the
// socket, which leaves the sockhash when the socket is closed.
func (d *Datapath) AddSocket(instance uint32, chain uint16, fd int) error {
	if fd < 0 {
		return fmt.Errorf("bpf: add socket of instance %d: bad fd %d", instance, fd)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}

	// The identity first, so that the program never sees a sockhash member
	// without one.
	id := sprightSenderId{Instance: instance, Chain: chain}
	if err := d.objs.SenderIdentity.Update(int32(fd), &id, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bpf: record identity of instance %d (fd %d): %w", instance, fd, err)
	}
	if err := d.objs.InstanceChain.Update(instance, chain, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bpf: record chain of instance %d: %w", instance, err)
	}
	var zero sprightMetrics
	err := d.objs.InstanceMetrics.Update(instance, &zero, ebpf.UpdateNoExist)
	if err != nil && !errors.Is(err, ebpf.ErrKeyExist) {
		return fmt.Errorf("bpf: create metrics of instance %d: %w", instance, err)
	}

	// A socket can be in a sockhash with a verdict program only once: if this
	// very socket is already the instance's, there is nothing to do.
	cookie, err := unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_COOKIE)
	if err != nil {
		return fmt.Errorf("bpf: socket cookie of instance %d (fd %d): %w", instance, fd, err)
	}
	var cur uint64
	if err := d.objs.SockHash.Lookup(instance, &cur); err == nil && cur == cookie {
		return nil
	}
	if err := d.objs.SockHash.Update(instance, uint64(fd), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bpf: put socket of instance %d (fd %d) into sock_hash (must be a connected TCP socket): %w", instance, fd, err)
	}
	return nil
}

// RemoveInstance removes instance from sock_hash, its chain membership and
// its metrics. Entries that do not exist are not an error.
//
// The sender identity stays in the socket's storage until the socket is
// closed (it can only be addressed by fd); it is inert, because the program
// only runs for sockets that are in sock_hash, and AddSocket overwrites it.
func (d *Datapath) RemoveInstance(instance uint32) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	var errs []error
	for _, m := range []*ebpf.Map{d.objs.SockHash, d.objs.InstanceChain, d.objs.InstanceMetrics} {
		if err := m.Delete(instance); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			errs = append(errs, fmt.Errorf("bpf: remove instance %d from %s: %w", instance, mapName(m), err))
		}
	}
	return errors.Join(errs...)
}

func mapName(m *ebpf.Map) string {
	if info, err := m.Info(); err == nil {
		return info.Name
	}
	return m.String()
}

// Metrics returns a consistent snapshot of instance's counters. The error
// wraps ebpf.ErrKeyNotExist if the instance has no metrics entry.
func (d *Datapath) Metrics(instance uint32) (InstanceMetrics, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return InstanceMetrics{}, ErrClosed
	}
	var m InstanceMetrics
	if err := d.objs.InstanceMetrics.LookupWithFlags(instance, &m, ebpf.LookupLock); err != nil {
		return InstanceMetrics{}, fmt.Errorf("bpf: metrics of instance %d: %w", instance, err)
	}
	return m, nil
}

// AllMetrics returns a snapshot of every instance's counters (each entry
// consistent in itself).
func (d *Datapath) AllMetrics() (map[uint32]InstanceMetrics, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, ErrClosed
	}
	var (
		keys []uint32
		key  uint32
		raw  sprightMetrics
	)
	it := d.objs.InstanceMetrics.Iterate()
	for it.Next(&key, &raw) {
		keys = append(keys, key)
	}
	if err := it.Err(); err != nil {
		return nil, fmt.Errorf("bpf: iterate instance metrics: %w", err)
	}
	out := make(map[uint32]InstanceMetrics, len(keys))
	for _, k := range keys {
		var m InstanceMetrics
		err := d.objs.InstanceMetrics.LookupWithFlags(k, &m, ebpf.LookupLock)
		if errors.Is(err, ebpf.ErrKeyNotExist) {
			continue // removed meanwhile
		}
		if err != nil {
			return nil, fmt.Errorf("bpf: metrics of instance %d: %w", k, err)
		}
		out[k] = m
	}
	return out, nil
}

// Drops returns the drop counters of every defined reason (zeros included).
func (d *Datapath) Drops() (map[DropReason]uint64, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return nil, ErrClosed
	}
	out := make(map[DropReason]uint64, numDropReasons)
	for _, r := range DropReasons() {
		var n uint64
		if err := d.objs.Drops.Lookup(uint32(r), &n); err != nil {
			return nil, fmt.Errorf("bpf: drop counter %s: %w", r, err)
		}
		out[r] = n
	}
	return out, nil
}

// MetricsMap returns the instance_metrics map (key uint32 instance ID, value
// MetricsValueSize bytes that decode into InstanceMetrics). It is owned by d;
// callers must only read it (use ebpf.LookupLock for consistent values) and
// must not use it after d is closed; Clone it to keep it longer.
func (d *Datapath) MetricsMap() *ebpf.Map {
	return d.objs.InstanceMetrics
}
