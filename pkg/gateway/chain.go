package gateway

import (
	"context"
	"fmt"
	"go.uber.org/zap"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spright-dev/spright/pkg/routing"
	"github.com/spright-dev/spright/pkg/shm"
	"github.com/spright-dev/spright/pkg/transport"
)

// Modes of descriptor delivery.
const (
	ModeSkMsg = "skmsg"
	ModePoll  = "poll"
)

// ChainConfig declares one chain served by the gateway.
type ChainConfig struct {
	Name    string
	ID      uint16 // 1..0xFFFE, unique on the node
	Mode    string // ModeSkMsg (default) or ModePoll
	Pool    shm.Config
	Routing routing.Spec
	// Timeout bounds a request from dispatch to response (default 30s).
	Timeout time.Duration
	// HoldTimeout > 0 makes the gateway act as the activator for the
	// chain: a request for a function with no ready instance waits up to
	// this long for one to join (and pokes the autoscaler) instead of
	// failing with 503 at once. MaxHeld bounds the waiting requests
	// (default 100).
	HoldTimeout time.Duration
	MaxHeld     int
}

func (cfg *ChainConfig) defaults() {
	if cfg.Mode == "" {
		cfg.Mode = ModeSkMsg
	}
	if cfg.HoldTimeout > 0 && cfg.MaxHeld <= 0 {
		cfg.MaxHeld = 100
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 30 * time.Second
	}
}

// chainLimits are the parts of a ChainConfig an update may change besides
// the routing.
type chainLimits struct {
	Timeout, HoldTimeout time.Duration
	MaxHeld              int
}

func limitsOf(cfg ChainConfig) *chainLimits {
	return &chainLimits{Timeout: cfg.Timeout, HoldTimeout: cfg.HoldTimeout, MaxHeld: cfg.MaxHeld}
}

// result is what the receive path hands to a waiting HTTP handler.
type result struct {
	status int    // 0 = OK
	slot   uint32 // slot holding the body (owned by the gateway)
	len    uint32
	err    string // gateway-side failure text; the slot's bytes are then not a body
}

// pending tracks the request waiting on one slot.
type pending struct {
	mu     sync.Mutex
	active bool
	gen    uint32
	ch     chan result
}

// Chain is the gateway's state for one chain.
type Chain struct {
	cfg ChainConfig // Name, ID, Mode, Pool: fixed for the chain's life
	// limits are the timeouts and hold bounds in effect: an UpdateChain
	// replaces them while requests run (each request reads them once).
	limits  atomic.Pointer[chainLimits]
	pool    *shm.ChainPool
	routes  *routing.RouteTable
	rings   *transport.Rings // poll mode only
	gwRing  *transport.RingTransport
	pending []pending
	reqID   atomic.Uint64

	// Counters (also exported to Prometheus).
	Dispatched atomic.Uint64 // descriptors the gateway sent into the chain
	Returned   atomic.Uint64 // descriptors that came back to the gateway
	Invalid    atomic.Uint64 // descriptors dropped by the gateway's own checks
	Reclaimed  atomic.Uint64 // slots taken back from dead instances
	Updates    atomic.Uint64 // reconfigurations applied (UpdateChain)
	// Redispatched counts requests the kernel handed back because their
	// instance had just died, given to another instance instead of 502.
	Redispatched atomic.Uint64

	act Activation // requests held for a function with no instance (activator.go)

	// peerHop takes the answer of a request that came from another node
	// (remote.go); set by the gateway.
	peerHop func(slot uint32, r result) bool

	// reopened: the pool was kept from a gateway that ran before this one.
	reopened bool
	// oldSlots are the slots the previous gateway's members held when this
	// one reopened the pool (slot -> generation), until they are freed:
	// their holder comes back (hello.Previous) or the sweep takes them.
	orphanMu sync.Mutex
	oldSlots map[uint32]uint32
}

func newChain(cfg ChainConfig, poolKey string, log *zap.Logger) (*Chain, error) {
	if cfg.Name == "" {
		return nil, fmt.Errorf("gateway: chain needs a name")
	}
	if cfg.ID == 0 || cfg.ID == 0xFFFF {
		return nil, fmt.Errorf("gateway: chain %q: id %d is reserved (use 1..65534)", cfg.Name, cfg.ID)
	}
	if cfg.Mode == "" {
		cfg.Mode = ModeSkMsg
	}
	if cfg.Mode != ModeSkMsg && cfg.Mode != ModePoll {
		return nil, fmt.Errorf("gateway: chain %q: unknown mode %q (want %q or %q)", cfg.Name, cfg.Mode, ModeSkMsg, ModePoll)
	}
	cfg.defaults()
	if err := cfg.Routing.Validate(); err != nil {
		return nil, fmt.Errorf("gateway: chain %q: %w", cfg.Name, err)
	}
	pc := cfg.Pool
	if pc.Slots == 0 {
		pc.Slots = shm.DefaultConfig.Slots
	}
	if pc.SlotSize == 0 {
		pc.SlotSize = shm.DefaultConfig.SlotSize
	}
	need := uint32(routing.Size)
	if cfg.Mode == ModePoll {
		need = uint32(routing.RegionEnd + transport.RingsSize)
	}
	if pc.RegionSize < need {
		pc.RegionSize = need
	}
	pool, reopened, err := openPool(cfg, poolKey, pc, log)
	if err != nil {
		return nil, fmt.Errorf("gateway: chain %q: %w", cfg.Name, err)
	}
	rt, err := routing.Init(pool.Region(), cfg.Routing)
	if err != nil {
		pool.Close()
		return nil, fmt.Errorf("gateway: chain %q: %w", cfg.Name, err)
	}
	c := &Chain{cfg: cfg, pool: pool, routes: rt, pending: make([]pending, pool.Slots()), reopened: reopened}
	c.limits.Store(limitsOf(cfg))
	for i := range c.pending {
		c.pending[i].ch = make(chan result, 1)
	}
	if cfg.Mode == ModePoll {
		c.rings, err = transport.InitRings(pool.Region()[routing.RegionEnd:])
		if err == nil {
			var idx int
			idx, err = c.rings.Claim(0)
			if err == nil {
				c.gwRing, err = transport.NewRingTransport(c.rings, idx)
			}
		}
		if err != nil {
			pool.Close()
			return nil, fmt.Errorf("gateway: chain %q: %w", cfg.Name, err)
		}
	}
	return c, nil
}

// Name is the chain's name.
func (c *Chain) Name() string { return c.cfg.Name }

// ID is the chain's ID.
func (c *Chain) ID() uint16 { return c.cfg.ID }

// Pool is the chain's pool.
func (c *Chain) Pool() *shm.ChainPool { return c.pool }

// Routes is the chain's route table.
func (c *Chain) Routes() *routing.RouteTable { return c.routes }

// Mode is the chain's delivery mode.
func (c *Chain) Mode() string { return c.cfg.Mode }

// busyOnEpoch reports whether a slot in use was dispatched on route epoch
// e (routing.Update waits for none to be before overwriting its routes).
func (c *Chain) busyOnEpoch(e uint16) bool {
	for i := uint32(0); i < c.pool.Slots(); i++ {
		h := c.pool.Header(i)
		if atomic.LoadUint32(&h.State) == shm.SlotInUse && h.RouteEpoch == e {
			return true
		}
	}
	return false
}

// WaitDrained waits until no request dispatched before the chain's last
// UpdateChain is still in flight (a removed function's instances may then
// stop), or ctx ends.
func (c *Chain) WaitDrained(ctx context.Context) error {
	cur := uint16(c.routes.Epoch())
	for {
		old := false
		for i := uint32(0); i < c.pool.Slots() && !old; i++ {
			h := c.pool.Header(i)
			old = atomic.LoadUint32(&h.State) == shm.SlotInUse && h.RouteEpoch != cur
		}
		if !old {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("chain %q: requests from before its update still in flight: %w", c.Name(), ctx.Err())
		case <-time.After(time.Millisecond):
		}
	}
}

// arm registers a waiter on slot and returns its channel.
func (c *Chain) arm(slot uint32) <-chan result {
	p := &c.pending[slot]
	p.mu.Lock()
	p.active = true
	p.gen = c.pool.Header(slot).Gen
	select { // drain a stale result, if any
	case <-p.ch:
	default:
	}
	p.mu.Unlock()
	return p.ch
}

// complete hands r to the request waiting on slot. If nobody waits any more
// (timeout, client gone) the slot is freed here: a late answer never leaks.
func (c *Chain) complete(slot uint32, r result) {
	if c.peerHop != nil && c.peerHop(slot, r) {
		return // a request from another node: its answer went there
	}
	p := &c.pending[slot]
	p.mu.Lock()
	if p.active && p.gen == c.pool.Header(slot).Gen {
		p.active = false
		p.ch <- r
		p.mu.Unlock()
		return
	}
	p.mu.Unlock()
	c.pool.Free(slot)
}

// abandon is called by a handler that stops waiting. It reports whether the
// result had already arrived (then the caller still owns and must free the
// slot); otherwise the slot is freed by complete when the answer comes.
func (c *Chain) abandon(slot uint32) (result, bool) {
	p := &c.pending[slot]
	p.mu.Lock()
	defer p.mu.Unlock()
	if !p.active {
		select {
		case r := <-p.ch:
			return r, true
		default:
		}
	}
	p.active = false
	return result{}, false
}
