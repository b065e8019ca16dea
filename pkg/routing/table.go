package routing

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/spright-dev/spright/pkg/shm"
)

// Limits of the in-pool table.
const (
	MaxFunctions = 64 // including the gateway at index 0
	MaxInstances = 32 // per function
	MaxRoutes    = 256
	MaxNameLen   = 32
	maxTopicLen  = shm.MaxTopic
	// MaxHops bounds how many functions one request may visit (loop guard).
	MaxHops = 256
)

// Gateway is the function index of the gateway.
const Gateway uint8 = 0

// GatewayName is the reserved function name of the gateway in a Spec.
const GatewayName = "gateway"

// Wildcard is the default topic.
const Wildcard = "*"

const tableMagic uint32 = 0x52544232 // "RTB2": two route sets

type funcEntry struct {
	Name        [MaxNameLen]byte
	NameLen     uint32
	Concurrency uint32 // containerConcurrency; 0 = unlimited
	NInst       uint32
	RR          uint32 // round-robin cursor for ties (atomic)
	// Removed: the function left the chain in an Update. Its index is
	// never given to another function (requests in flight may still name
	// it), and its instances may finish what they hold; none may join.
	Removed uint32
	Inst    [MaxInstances]uint32
}

type routeEntry struct {
	From     uint8
	N        uint8
	TopicLen uint8
	_        uint8
	Topic    [maxTopicLen]byte
	To       [shm.MaxItinerary]uint8
}

type tableHeader struct {
	Magic  uint32
	Seq    uint32 // seqlock: odd while the gateway writes
	NFuncs uint32
	// Epoch is the route set new requests start on: routes[Epoch&1].
	// An Update writes the other set, then bumps Epoch.
	Epoch   uint32
	NRoutes [2]uint32
}

// The functions are shared by both route sets (an index means the same
// function in both); the routes are double-buffered so that a request
// keeps the routes it was dispatched with (SlotHeader.RouteEpoch) while new
// requests take the new ones.
type layout struct {
	hdr    tableHeader
	funcs  [MaxFunctions]funcEntry
	routes [2][MaxRoutes]routeEntry
}

// Size is the number of region bytes the table needs.
const Size = int(unsafe.Sizeof(layout{}))

// RegionEnd is the first page-aligned region offset after the table: where
// poll-mode rings start.
const RegionEnd = (Size + 4095) / 4096 * 4096

// FunctionSpec declares one chain member.
type FunctionSpec struct {
	Name        string
	Concurrency uint32
}

// Route declares one (function, topic) → itinerary entry.
type Route struct {
	From  string   // function name, or GatewayName for the chain entry
	Topic string   // exact topic or "*"
	To    []string // functions to visit in order
}

// Spec is a whole chain's routing.
type Spec struct {
	Functions []FunctionSpec
	Routes    []Route
}

// Errors.
var (
	ErrNoInstance  = errors.New("routing: no ready instance")
	ErrTooManyHops = errors.New("routing: itinerary too long or loop (hop limit reached)")
	ErrUnknownFunc = errors.New("routing: unknown function")
)

// RouteTable is a view of the table in a pool region.
type RouteTable struct {
	l  *layout
	mu sync.Mutex // serializes writers within the gateway process
	// epochMu orders the gateway's stamping of a request's epoch (Begin,
	// read-locked) against an Update's switch of epoch (locked), so an
	// Update that then finds no request on the old set really has none.
	epochMu sync.RWMutex
	// updateMu serializes Updates (which wait for requests to drain).
	updateMu sync.Mutex
}

// Validate checks a Spec without writing it anywhere.
func (s Spec) Validate() error {
	_, err := s.index()
	return err
}

func (s Spec) index() (map[string]uint8, error) {
	if len(s.Functions)+1 > MaxFunctions {
		return nil, fmt.Errorf("routing: %d functions, at most %d", len(s.Functions), MaxFunctions-1)
	}
	idx := map[string]uint8{GatewayName: Gateway}
	for i, f := range s.Functions {
		if f.Name == "" || len(f.Name) > MaxNameLen {
			return nil, fmt.Errorf("routing: function %d: name %q must be 1..%d bytes", i, f.Name, MaxNameLen)
		}
		if _, dup := idx[f.Name]; dup {
			return nil, fmt.Errorf("routing: function %q declared twice (or uses the reserved name %q)", f.Name, GatewayName)
		}
		idx[f.Name] = uint8(i + 1)
	}
	if len(s.Routes) > MaxRoutes {
		return nil, fmt.Errorf("routing: %d routes, at most %d", len(s.Routes), MaxRoutes)
	}
	seen := map[string]bool{}
	for _, r := range s.Routes {
		if _, ok := idx[r.From]; !ok {
			return nil, fmt.Errorf("%w: route from %q", ErrUnknownFunc, r.From)
		}
		if r.Topic == "" || len(r.Topic) > maxTopicLen {
			return nil, fmt.Errorf("routing: route from %q: topic %q must be 1..%d bytes (use %q for the default)", r.From, r.Topic, maxTopicLen, Wildcard)
		}
		if k := r.From + "\x00" + r.Topic; seen[k] {
			return nil, fmt.Errorf("routing: route from %q topic %q declared twice", r.From, r.Topic)
		} else {
			seen[k] = true
		}
		if len(r.To) == 0 || len(r.To) > shm.MaxItinerary {
			return nil, fmt.Errorf("routing: route from %q topic %q: 1..%d next functions", r.From, r.Topic, shm.MaxItinerary)
		}
		for _, to := range r.To {
			if i, ok := idx[to]; !ok || i == Gateway {
				return nil, fmt.Errorf("%w: route from %q topic %q goes to %q", ErrUnknownFunc, r.From, r.Topic, to)
			}
		}
	}
	return idx, nil
}

// Init writes spec into region (which must hold Size bytes) and returns the
// table. Only the gateway calls it.
func Init(region []byte, spec Spec) (*RouteTable, error) {
	idx, err := spec.index()
	if err != nil {
		return nil, err
	}
	if len(region) < Size {
		return nil, fmt.Errorf("routing: region of %d bytes, table needs %d", len(region), Size)
	}
	t := &RouteTable{l: (*layout)(unsafe.Pointer(&region[0]))}
	t.l.hdr.Seq = 0
	t.write(func(l *layout) {
		l.hdr.Magic = tableMagic
		l.hdr.Epoch = 0
		l.hdr.NRoutes = [2]uint32{}
		l.funcs = [MaxFunctions]funcEntry{}
		l.routes = [2][MaxRoutes]routeEntry{}
		setName(&l.funcs[0], GatewayName)
		for i, f := range spec.Functions {
			setName(&l.funcs[i+1], f.Name)
			l.funcs[i+1].Concurrency = f.Concurrency
		}
		l.hdr.NFuncs = uint32(len(spec.Functions) + 1)
		writeRoutes(l, 0, spec.Routes, idx)
	})
	return t, nil
}

// writeRoutes fills route set set from routes, names resolved by idx.
func writeRoutes(l *layout, set uint32, routes []Route, idx map[string]uint8) {
	rs := &l.routes[set&1]
	*rs = [MaxRoutes]routeEntry{}
	for i, r := range routes {
		e := &rs[i]
		e.From = idx[r.From]
		e.TopicLen = uint8(copy(e.Topic[:], r.Topic))
		e.N = uint8(len(r.To))
		for j, to := range r.To {
			e.To[j] = idx[to]
		}
	}
	l.hdr.NRoutes[set&1] = uint32(len(routes))
}

// ErrReconfigure wraps the reasons an Update is refused.
var ErrReconfigure = errors.New("routing: chain cannot be reconfigured in place")

// Busy reports whether a request dispatched on route epoch (as stamped in
// SlotHeader.RouteEpoch, low 16 bits) may still be in flight.
type Busy func(epoch uint16) bool

// Update replaces the chain's functions and routes while it serves.
// Functions keep their indices (instances stay registered); new ones get
// fresh indices; removed ones are marked Removed and their index is not
// reused until the table is Init-ed again, so a request still in flight
// never reaches a function it was not routed to. Routes are written into
// the route set no request uses, then new requests are switched to it;
// requests already dispatched finish on the routes they started with.
//
// Before writing, Update waits (up to drain) until busy reports no request
// left on the epoch whose set it overwrites: the one before the current.
// After drain it writes anyway and says so in the error it returns with
// the table updated (ErrDrainTimeout): such requests have outlived the
// chain's timeout and their answers are discarded by the gateway.
func (t *RouteTable) Update(spec Spec, busy Busy, drain time.Duration) error {
	if _, err := spec.index(); err != nil {
		return err
	}
	t.updateMu.Lock()
	defer t.updateMu.Unlock()

	// Indices: existing names keep theirs, new names are appended.
	var (
		idx     = map[string]uint8{GatewayName: Gateway}
		nfuncs  uint32
		current = map[string]uint8{}
	)
	t.read(func(l *layout) {
		nfuncs = min(l.hdr.NFuncs, MaxFunctions)
		clear(current)
		for i := uint32(1); i < nfuncs; i++ {
			f := &l.funcs[i]
			current[string(f.Name[:min(f.NameLen, MaxNameLen)])] = uint8(i)
		}
	})
	next := nfuncs
	var added []string
	for _, f := range spec.Functions {
		if i, ok := current[f.Name]; ok {
			idx[f.Name] = i
			continue
		}
		if next >= MaxFunctions {
			return fmt.Errorf("%w: adding function %q would make %d distinct functions since the table was created, at most %d (restart the gateway to start afresh)",
				ErrReconfigure, f.Name, next, MaxFunctions-1)
		}
		idx[f.Name] = uint8(next)
		added = append(added, f.Name)
		next++
	}

	t.epochMu.RLock()
	epoch := atomic.LoadUint32(&t.l.hdr.Epoch)
	t.epochMu.RUnlock()
	var drainErr error
	if epoch > 0 && busy != nil {
		old := uint16(epoch - 1)
		deadline := time.Now().Add(drain)
		for busy(old) {
			if !time.Now().Before(deadline) {
				drainErr = fmt.Errorf("%w: requests dispatched on route epoch %d were still in flight after %v; their route set was overwritten",
					ErrDrainTimeout, old, drain)
				break
			}
			time.Sleep(time.Millisecond)
		}
	}

	t.write(func(l *layout) {
		keep := map[uint8]FunctionSpec{}
		for _, f := range spec.Functions {
			keep[idx[f.Name]] = f
		}
		for i := uint32(1); i < next; i++ {
			f := &l.funcs[i]
			if i >= nfuncs {
				*f = funcEntry{}
			}
			if fs, ok := keep[uint8(i)]; ok {
				setName(f, fs.Name)
				f.Concurrency = fs.Concurrency
				atomic.StoreUint32(&f.Removed, 0)
			} else {
				atomic.StoreUint32(&f.Removed, 1)
			}
		}
		atomic.StoreUint32(&l.hdr.NFuncs, next)
		writeRoutes(l, epoch+1, spec.Routes, idx)
	})
	// Switch new requests to the new set.
	t.epochMu.Lock()
	atomic.StoreUint32(&t.l.hdr.Epoch, epoch+1)
	t.epochMu.Unlock()
	return drainErr
}

// ErrDrainTimeout: an Update overwrote a route set still in use.
var ErrDrainTimeout = errors.New("routing: drain timed out")

// Epoch is the route epoch new requests start on.
func (t *RouteTable) Epoch() uint32 { return atomic.LoadUint32(&t.l.hdr.Epoch) }

// Begin stamps a new request's slot with the current route epoch; the
// gateway calls it before the request's first NextHop.
func (t *RouteTable) Begin(h *shm.SlotHeader) {
	t.epochMu.RLock()
	h.RouteEpoch = uint16(atomic.LoadUint32(&t.l.hdr.Epoch))
	t.epochMu.RUnlock()
}

// Open returns a reader's view of a table the gateway initialised.
func Open(region []byte) (*RouteTable, error) {
	if len(region) < Size {
		return nil, fmt.Errorf("routing: region of %d bytes, table needs %d", len(region), Size)
	}
	l := (*layout)(unsafe.Pointer(&region[0]))
	if atomic.LoadUint32(&l.hdr.Magic) != tableMagic {
		return nil, errors.New("routing: pool region holds no route table")
	}
	return &RouteTable{l: l}, nil
}

func setName(f *funcEntry, n string) { f.NameLen = uint32(copy(f.Name[:], n)) }

func (t *RouteTable) write(fn func(*layout)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	atomic.AddUint32(&t.l.hdr.Seq, 1)
	fn(t.l)
	atomic.AddUint32(&t.l.hdr.Seq, 1)
}

// read runs fn until it saw a consistent table.
func (t *RouteTable) read(fn func(*layout)) {
	for {
		s := atomic.LoadUint32(&t.l.hdr.Seq)
		if s&1 == 0 {
			fn(t.l)
			if atomic.LoadUint32(&t.l.hdr.Seq) == s {
				return
			}
		}
	}
}

// FunctionIndex returns the index of the named function; ok is false for a
// name the chain does not have (or no longer has: Removed by an Update).
func (t *RouteTable) FunctionIndex(name string) (idx uint8, ok bool) {
	t.read(func(l *layout) {
		idx, ok = 0, false
		for i := uint32(0); i < l.hdr.NFuncs && i < MaxFunctions; i++ {
			f := &l.funcs[i]
			if string(f.Name[:min(f.NameLen, MaxNameLen)]) == name {
				idx, ok = uint8(i), atomic.LoadUint32(&f.Removed) == 0
				return
			}
		}
	})
	return idx, ok
}

// FunctionName returns the name of function idx ("" if unknown).
func (t *RouteTable) FunctionName(idx uint8) (name string) {
	t.read(func(l *layout) {
		name = ""
		if uint32(idx) < l.hdr.NFuncs && idx < MaxFunctions {
			f := &l.funcs[idx]
			name = string(f.Name[:min(f.NameLen, MaxNameLen)])
		}
	})
	return name
}

// Lookup returns the itinerary for (from, topic) on the current routes: the
// exact topic if there is a route for it, else the wildcard, else nil.
func (t *RouteTable) Lookup(from uint8, topic string) (itin []uint8) {
	return t.lookupEpoch(uint16(t.Epoch()), from, topic)
}

func (t *RouteTable) lookupEpoch(epoch uint16, from uint8, topic string) (itin []uint8) {
	t.read(func(l *layout) {
		itin = append(itin[:0], l.lookup(uint32(epoch), from, topic)...)
	})
	return itin
}

// lookup is Lookup in the route set of epoch on a table being read; the
// slice aliases the table.
func (l *layout) lookup(epoch uint32, from uint8, topic string) []uint8 {
	var wild *routeEntry
	set := epoch & 1
	for i := uint32(0); i < l.hdr.NRoutes[set] && i < MaxRoutes; i++ {
		e := &l.routes[set][i]
		if e.From != from {
			continue
		}
		tp := string(e.Topic[:min(e.TopicLen, maxTopicLen)])
		if tp == topic {
			return e.To[:min(e.N, shm.MaxItinerary)]
		}
		if tp == Wildcard {
			wild = e
		}
	}
	if wild != nil {
		return wild.To[:min(wild.N, shm.MaxItinerary)]
	}
	return nil
}

// NextHop advances a slot's itinerary after function cur finished with
// topic: cur's own route (in the request's route epoch, see Begin) is pushed
// in front of what is still pending, then the first pending function is
// popped. Gateway means "return the result".
func (t *RouteTable) NextHop(h *shm.SlotHeader, cur uint8, topic string) (uint8, error) {
	if h.Hops >= MaxHops {
		return Gateway, ErrTooManyHops
	}
	route := t.lookupEpoch(h.RouteEpoch, cur, topic)
	n := int(h.ItinLen)
	if n > shm.MaxItinerary {
		return Gateway, ErrTooManyHops
	}
	if n+len(route) > shm.MaxItinerary {
		return Gateway, ErrTooManyHops
	}
	// The itinerary is a stack: the next function is at the end.
	for i := len(route) - 1; i >= 0; i-- {
		h.Itinerary[n] = route[i]
		n++
	}
	if n == 0 {
		h.ItinLen = 0
		return Gateway, nil
	}
	next := h.Itinerary[n-1]
	h.ItinLen = uint8(n - 1)
	h.Hops++
	return next, nil
}

// InflightFunc reports an instance's in-flight requests (from the EPROXY map).
type InflightFunc func(instance uint32) int64

// Pick chooses the instance of function fn with the most residual capacity
// (concurrency − in-flight); ties go round-robin. inflight may be nil (all
// instances then count as idle).
func (t *RouteTable) Pick(fn uint8, inflight InflightFunc) (uint32, error) {
	var (
		ids  [MaxInstances]uint32
		n    int
		conc uint32
		rr   *uint32
	)
	t.read(func(l *layout) {
		n = 0
		if uint32(fn) >= l.hdr.NFuncs || fn >= MaxFunctions {
			return
		}
		f := &l.funcs[fn]
		n = int(min(atomic.LoadUint32(&f.NInst), MaxInstances))
		copy(ids[:n], f.Inst[:n])
		conc, rr = f.Concurrency, &f.RR
	})
	switch n {
	case 0:
		return 0, fmt.Errorf("%w for function %q", ErrNoInstance, t.FunctionName(fn))
	case 1:
		return ids[0], nil
	}
	start := int(atomic.AddUint32(rr, 1) % uint32(n))
	capacity := int64(conc)
	if conc == 0 {
		capacity = 1 << 40
	}
	// The instance with the most residual capacity, local ones first: a
	// remote instance (another node's, reached through the gateway) is
	// taken only when no local one has capacity left.
	const none = int64(-1 << 62)
	var best [2]uint32
	bestRes := [2]int64{none, none}
	for k := 0; k < n; k++ {
		id := ids[(start+k)%n]
		res := capacity
		if inflight != nil {
			res -= inflight(id)
		}
		where := 0
		if IsRemote(id) {
			where = 1
		}
		if res > bestRes[where] {
			best[where], bestRes[where] = id, res
		}
	}
	local, remote := bestRes[0] != none, bestRes[1] != none
	if local && (bestRes[0] > 0 || !remote || bestRes[0] >= bestRes[1]) {
		return best[0], nil
	}
	return best[1], nil
}

// RemoteBit marks the instance IDs a gateway gives to another node's
// instances of a function (package peer): a request routed to one crosses
// to that node.
const RemoteBit uint32 = 1 << 30

// IsRemote reports whether instance id stands for another node's instances.
func IsRemote(id uint32) bool { return id&RemoteBit != 0 && id&(1<<31) == 0 }

// Unserved returns the functions (by index, the gateway excluded) that a
// request entering with topic can reach and that have no registered
// instance; nil when every one has one. Reach follows the routes for topic
// from the gateway on, as if every function kept the topic it was given: a
// function that switches topics may still meet a member with no instance
// (and answer 503). Members no request with this topic reaches are not
// waited for, so a chain whose checkout branch is at zero still serves its
// other requests at once. It allocates only when some function has none.
func (t *RouteTable) Unserved(topic string) (fns []uint8) {
	epoch := t.Epoch()
	t.read(func(l *layout) {
		fns = fns[:0]
		var seen [MaxFunctions]bool
		var stack [MaxFunctions]uint8
		n := 0
		push := func(to []uint8) {
			for _, f := range to {
				if f != Gateway && f < MaxFunctions && uint32(f) < l.hdr.NFuncs && !seen[f] {
					seen[f] = true
					stack[n] = f
					n++
				}
			}
		}
		push(l.lookup(epoch, Gateway, topic))
		for n > 0 {
			n--
			f := stack[n]
			if atomic.LoadUint32(&l.funcs[f].NInst) == 0 {
				fns = append(fns, f)
			}
			push(l.lookup(epoch, f, topic))
		}
	})
	return fns
}

// Instances returns the registered instances of fn.
func (t *RouteTable) Instances(fn uint8) (ids []uint32) {
	t.read(func(l *layout) {
		ids = ids[:0]
		if uint32(fn) < l.hdr.NFuncs && fn < MaxFunctions {
			f := &l.funcs[fn]
			ids = append(ids, f.Inst[:min(f.NInst, MaxInstances)]...)
		}
	})
	return ids
}

// AddInstance makes instance id of function fn eligible for routing.
func (t *RouteTable) AddInstance(fn uint8, id uint32) error {
	var err error
	t.write(func(l *layout) {
		if fn == Gateway || uint32(fn) >= l.hdr.NFuncs {
			err = fmt.Errorf("%w: index %d", ErrUnknownFunc, fn)
			return
		}
		f := &l.funcs[fn]
		if f.NInst >= MaxInstances {
			err = fmt.Errorf("routing: function %q already has %d instances", string(f.Name[:f.NameLen]), MaxInstances)
			return
		}
		f.Inst[f.NInst] = id
		atomic.AddUint32(&f.NInst, 1)
	})
	return err
}

// RemoveInstance takes id out of fn's instance list (no-op if absent).
func (t *RouteTable) RemoveInstance(fn uint8, id uint32) {
	t.write(func(l *layout) {
		if uint32(fn) >= l.hdr.NFuncs || fn >= MaxFunctions {
			return
		}
		f := &l.funcs[fn]
		for i := uint32(0); i < f.NInst; i++ {
			if f.Inst[i] == id {
				copy(f.Inst[i:], f.Inst[i+1:f.NInst])
				f.NInst--
				return
			}
		}
	})
}
