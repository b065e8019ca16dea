package gateway

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"k8s.io/apimachinery/pkg/types"

	"github.com/spright-dev/spright/bpf"
	"github.com/spright-dev/spright/pkg/control"
	"github.com/spright-dev/spright/pkg/descriptor"
	"github.com/spright-dev/spright/pkg/eproxy"
	"github.com/spright-dev/spright/pkg/peer"
	"github.com/spright-dev/spright/pkg/routing"
	"github.com/spright-dev/spright/pkg/shm"
	"github.com/spright-dev/spright/pkg/transport"
)

// Config configures a node gateway.
type Config struct {
	// ControlSocket is the unix socket where instances register.
	ControlSocket string
	// PinDir is where the eBPF maps are pinned (bpffs), e.g. /sys/fs/bpf/spright.
	PinDir string
	Logger *zap.Logger
	// Verify, if set, decides whether the process on the other end of a
	// control connection may join as claimed (chain isolation: a pool fd
	// only goes to verified members). Standalone mode checks that the pid
	// is one it started for that function; on Kubernetes the pod is found
	// from the process's cgroup. nil admits every local process that can
	// open the control socket (mode 0660).
	Verify func(cred unix.Ucred, m Member) error
	// Name identifies this gateway in Stats it pushes (the pod name on
	// Kubernetes); default "spright-gateway".
	Name string
	// Node names this node to its peers, and PeerKey (at least 16 bytes,
	// the same on every node) proves it: both are needed for chains that
	// span nodes (ServePeers, ConnectPeer; package peer).
	Node    string
	PeerKey []byte
}

// Member is what a registering process claims to be.
type Member struct {
	Chain, Function          string // a chain function (SDK instance)
	Namespace, Revision, Pod string // an EPROXY sidecar
}

// Gateway serves chains on one node.
type Gateway struct {
	cfg Config
	log *zap.Logger

	dp      *bpf.Datapath     // nil until a sk_msg chain is added
	pinLock *os.File          // held from Load until Unpin or exit
	gwSock  *transport.Socket // the gateway's own sockhash member (instance 0)
	// roMetrics is a read-only handle on the EPROXY metrics map, for members.
	roMetrics *ebpf.Map
	// owners says which pod holds each pod instance ID (podowners.go).
	owners     *ebpf.Map
	ownersOnce sync.Once

	mu        sync.RWMutex
	chains    map[string]*Chain
	byID      map[uint16]*Chain
	instances map[uint32]*instance
	conns     map[*control.Conn]struct{} // every open control connection
	connWG    sync.WaitGroup
	nextInst  atomic.Uint32

	revChains map[types.NamespacedName]ChainMember
	// revPods are the registered EPROXY sidecars by revision, with the
	// chain membership their welcome carried.
	revPods  map[types.NamespacedName]map[*pod]ChainMember
	reporter *eproxy.Reporter
	pushRevs map[types.NamespacedName]bool

	verifyRefused atomic.Uint64

	metricsOnce sync.Once
	m           *metrics

	ctl     *net.UnixListener
	closing atomic.Bool
	done    chan struct{} // closed by Close
	wg      sync.WaitGroup

	poolKey string // names the chain pools kept across restarts

	rem remote // chains across nodes (remote.go)
}

// instance is a registered function instance.
type instance struct {
	id    uint32
	chain *Chain
	fn    uint8
	ring  int // poll mode
	conn  *control.Conn
	pid   int32
}

// New creates a gateway. Call AddChain for each chain, then Start.
func New(cfg Config) (*Gateway, error) {
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	if cfg.ControlSocket == "" {
		cfg.ControlSocket = control.DefaultSocket
	}
	if cfg.PinDir == "" {
		cfg.PinDir = "/sys/fs/bpf/spright"
	}
	g := &Gateway{
		cfg: cfg, log: cfg.Logger,
		chains: map[string]*Chain{}, byID: map[uint16]*Chain{}, instances: map[uint32]*instance{}, conns: map[*control.Conn]struct{}{},
		done: make(chan struct{}), poolKey: PoolKey(cfg.PinDir),
	}
	g.rem.links, g.rem.dialers, g.rem.proxies, g.rem.byTarget = map[string]*link{}, map[string]*dialer{}, map[uint32]*proxy{}, map[string]*proxy{}
	g.rem.shipped, g.rem.hops = map[shipKey]shipped{}, map[uint16]map[uint32]peer.Origin{}
	return g, nil
}

// ControlSocketPath is where instances register.
func (g *Gateway) ControlSocketPath() string { return g.cfg.ControlSocket }

// Datapath returns the eBPF datapath (nil if no sk_msg chain was added).
func (g *Gateway) Datapath() *bpf.Datapath { return g.dp }

func (g *Gateway) ensureDatapath() error {
	if g.dp != nil {
		return nil
	}
	if err := ensureBPFFS(); err != nil {
		return err
	}
	lock, err := lockPinDir(g.cfg.PinDir)
	if err != nil {
		return err
	}
	dp, err := bpf.Load(g.cfg.PinDir)
	if err != nil {
		lock.Close()
		return fmt.Errorf("gateway: load eBPF datapath (needs root, bpffs at /sys/fs/bpf, kernel with BTF and sockmap): %w", err)
	}
	sock, err := transport.NewSocket()
	if err != nil {
		dp.Close()
		lock.Close()
		return err
	}
	if err := sock.Control(func(fd int) error { return dp.AddSocket(descriptor.GatewayInstance, bpf.AnyChain, fd) }); err != nil {
		sock.Close()
		dp.Close()
		lock.Close()
		return fmt.Errorf("gateway: join sockhash: %w", err)
	}
	// Members get the metrics map read-only: they read residual capacity
	// and their own stats, and must not be able to forge them.
	ro, err := ebpf.LoadPinnedMap(filepath.Join(g.cfg.PinDir, "instance_metrics"), &ebpf.LoadPinOptions{ReadOnly: true})
	if err != nil {
		sock.Close()
		dp.Close()
		lock.Close()
		return fmt.Errorf("gateway: read-only metrics map: %w", err)
	}
	g.dp, g.gwSock, g.pinLock, g.roMetrics = dp, sock, lock, ro
	// After a restart on kept pins, hand out instance IDs above every one
	// still in the maps: a surviving member or sidecar must never share
	// its ID (and counters) with a newcomer.
	if all, err := dp.AllMetrics(); err == nil {
		for id := range all {
			if id&(1<<31) != 0 {
				continue // a pod's proxied entry (control.ProxiedInstance)
			}
			if id > g.nextInst.Load() {
				g.nextInst.Store(id)
			}
		}
	}
	g.wg.Add(1)
	go g.recvLoop(sock)
	return nil
}

// AddChain creates a chain's pool and route table and prepares its datapath.
func (g *Gateway) AddChain(cfg ChainConfig) (*Chain, error) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if _, dup := g.chains[cfg.Name]; dup {
		return nil, fmt.Errorf("gateway: chain %q already exists", cfg.Name)
	}
	if _, dup := g.byID[cfg.ID]; dup {
		return nil, fmt.Errorf("gateway: chain id %d already used", cfg.ID)
	}
	if (cfg.Mode == "" || cfg.Mode == ModeSkMsg) && cfg.Name != "" && cfg.ID != 0 && cfg.ID != 0xFFFF {
		// The pin-dir lock first: the named pool may belong to a gateway
		// that is still running, and must not be adopted from under it.
		if err := g.ensureDatapath(); err != nil {
			return nil, err
		}
	}
	c, err := newChain(cfg, g.poolKey, g.log)
	if err != nil {
		return nil, err
	}
	if c.reopened {
		// New instance IDs go above every owner left in the pool: a
		// member of the previous gateway must not share an ID with a
		// newcomer while it may still hold slots.
		if id := c.adoptPool(g.log); id > g.nextInst.Load() {
			g.nextInst.Store(id)
		}
	}
	if c.Mode() == ModeSkMsg {
		if err := g.ensureDatapath(); err != nil {
			c.pool.Close()
			return nil, err
		}
		if err := g.dp.SetChain(c.ID(), c.pool.Slots(), c.pool.SlotSize()); err != nil {
			c.pool.Close()
			return nil, fmt.Errorf("gateway: chain %q: %w", cfg.Name, err)
		}
	} else {
		g.wg.Add(1)
		go g.recvLoop(c.gwRing)
	}
	if c.reopened {
		g.wg.Add(1)
		go g.sweepOrphans(c)
	}
	c.peerHop = func(slot uint32, r result) bool { return g.hopDone(c, slot, r) }
	g.chains[c.Name()] = c
	g.byID[c.ID()] = c
	return c, nil
}

// UpdateChain reconfigures chain cfg.Name while it serves: functions added
// or removed, routes and topics, timeouts and hold bounds. Requests in
// flight finish on the routes they were dispatched with (routing.Update's
// two route sets); new requests take the new ones. Instances of kept
// functions stay registered; a removed function's instances finish what
// they hold and no new instance of it may join. The eBPF datapath needs no
// change: its maps know chains and instances, not functions.
//
// What cannot change in place is refused with an error naming it: the
// chain's ID, its delivery mode and its pool geometry (slots, slot size),
// because members map the pool and descriptors index it. Such a change
// needs the chain removed and added again (its requests in flight fail) or
// a gateway restart.
func (g *Gateway) UpdateChain(cfg ChainConfig) error {
	c := g.Chain(cfg.Name)
	if c == nil {
		return fmt.Errorf("gateway: chain %q is not loaded: nothing to update", cfg.Name)
	}
	cfg.defaults()
	if cfg.ID != 0 && cfg.ID != c.cfg.ID {
		return fmt.Errorf("gateway: chain %q: id %d cannot change to %d while it serves", cfg.Name, c.cfg.ID, cfg.ID)
	}
	if cfg.Mode != c.cfg.Mode {
		return fmt.Errorf("gateway: chain %q: delivery mode %q cannot change to %q while it serves", cfg.Name, c.cfg.Mode, cfg.Mode)
	}
	slots, size := cfg.Pool.Slots, cfg.Pool.SlotSize
	if slots == 0 {
		slots = shm.DefaultConfig.Slots
	}
	if size == 0 {
		size = shm.DefaultConfig.SlotSize
	}
	if slots != c.pool.Slots() || size != c.pool.SlotSize() {
		return fmt.Errorf("gateway: chain %q: pool geometry cannot change while it serves (%d slots of %d bytes now, %d of %d asked): "+
			"members map the pool and descriptors index it; remove the chain and add it again, or restart the gateway",
			cfg.Name, c.pool.Slots(), c.pool.SlotSize(), slots, size)
	}
	old := c.limits.Load()
	drain := old.Timeout + time.Second
	err := c.routes.Update(cfg.Routing, c.busyOnEpoch, drain)
	if err != nil && !errors.Is(err, routing.ErrDrainTimeout) {
		return fmt.Errorf("gateway: chain %q: %w", cfg.Name, err)
	}
	if err != nil {
		g.log.Warn("chain updated before every request on its older routes finished", zap.String("chain", cfg.Name), zap.Error(err))
	}
	c.limits.Store(limitsOf(cfg))
	c.Updates.Add(1)
	g.log.Info("chain updated", zap.String("chain", cfg.Name), zap.Uint32("route_epoch", c.routes.Epoch()),
		zap.Int("functions", len(cfg.Routing.Functions)), zap.Int("routes", len(cfg.Routing.Routes)), zap.Duration("timeout", cfg.Timeout))
	return nil
}

// Chain returns a chain by name.
func (g *Gateway) Chain(name string) *Chain {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.chains[name]
}

// Chains returns all chains.
func (g *Gateway) Chains() []*Chain {
	g.mu.RLock()
	defer g.mu.RUnlock()
	out := make([]*Chain, 0, len(g.chains))
	for _, c := range g.chains {
		out = append(out, c)
	}
	return out
}

// Start opens the control socket and accepts registrations.
func (g *Gateway) Start() error {
	l, err := control.Listen(g.cfg.ControlSocket)
	if err != nil {
		return err
	}
	g.ctl = l
	g.wg.Add(1)
	go func() {
		defer g.wg.Done()
		for {
			c, err := l.AcceptUnix()
			if err != nil {
				if !g.closing.Load() {
					g.log.Error("control socket accept failed", zap.Error(err))
				}
				return
			}
			conn := control.NewConn(c)
			g.mu.Lock()
			if g.closing.Load() {
				g.mu.Unlock()
				conn.Close()
				return
			}
			g.conns[conn] = struct{}{}
			g.connWG.Add(1)
			g.mu.Unlock()
			go func() {
				defer g.connWG.Done()
				g.serveControl(conn)
				g.mu.Lock()
				delete(g.conns, conn)
				g.mu.Unlock()
			}()
		}
	}()
	g.log.Info("gateway control socket ready", zap.String("path", g.cfg.ControlSocket))
	return nil
}

// Close stops the gateway: the control socket, the receive loops, the pools.
// Pinned maps and the pool files stay for a restarted gateway (Unpin
// removes them). Slots the members hold stay theirs: a member may still be
// working on them, and tells the next gateway when it is done (it registers
// again).
func (g *Gateway) Close() error {
	if g.closing.Swap(true) {
		return nil
	}
	close(g.done)
	if g.ctl != nil {
		g.ctl.Close()
		os.Remove(g.cfg.ControlSocket)
	}
	g.closePeers()
	g.mu.Lock()
	for conn := range g.conns {
		conn.Close()
	}
	g.mu.Unlock()
	g.connWG.Wait() // every instance unregistered: no one touches the pools any more
	if g.gwSock != nil {
		g.gwSock.Close()
	}
	for _, c := range g.Chains() {
		if c.gwRing != nil {
			c.gwRing.Close()
		}
	}
	g.wg.Wait()
	var err error
	if g.dp != nil {
		for _, c := range g.Chains() {
			if c.Mode() == ModeSkMsg {
				g.dp.DeleteChain(c.ID())
			}
		}
		g.dp.RemoveInstance(descriptor.GatewayInstance)
		g.roMetrics.Close()
		if g.owners != nil {
			g.owners.Close()
		}
		err = g.dp.Close()
	}

	for _, c := range g.Chains() {
		c.pool.Close()
	}
	if g.pinLock != nil {
		g.pinLock.Close() // the next gateway may take the pins now
		g.pinLock = nil
	}
	return err
}

// Unpin removes the pinned eBPF maps and the chain pool files (standalone
// shutdown: nothing is left behind). After Close it takes the pin-dir lock
// again first, and leaves everything alone if another gateway has it.
func (g *Gateway) Unpin() error {
	if g.dp == nil {
		return nil // never took the pins: nothing of ours to remove
	}
	if g.pinLock == nil {
		lock, err := lockPinDir(g.cfg.PinDir)
		if err != nil {
			return fmt.Errorf("gateway: unpin: %w", err)
		}
		g.pinLock = lock
	}
	errs := []error{g.unpinPodOwners(), g.dp.Unpin(), shm.RemoveNamed(g.poolKey)}
	if g.pinLock != nil {
		// Holding the lock: no other gateway can be using the file.
		os.Remove(g.pinLock.Name())
		g.pinLock.Close()
		g.pinLock = nil
	}
	return errors.Join(errs...)
}

// send puts a descriptor on the gateway's transport for its chain.
func (g *Gateway) send(c *Chain, d descriptor.Descriptor) error {
	if c.gwRing != nil {
		return c.gwRing.Send(d)
	}
	return g.gwSock.Send(d)
}

// recvLoop reads the descriptors that come back to the gateway.
func (g *Gateway) recvLoop(t transport.Transport) {
	defer g.wg.Done()
	for {
		d, err := t.Recv()
		if err != nil {
			if !g.closing.Load() {
				g.log.Error("gateway descriptor receive failed", zap.Error(err))
			}
			return
		}
		g.deliver(d)
	}
}

// deliver validates a returned descriptor and completes its request. A
// descriptor that fails any check is dropped and counted: it cannot be
// trusted to name a slot we may free.
func (g *Gateway) deliver(d descriptor.Descriptor) {
	g.mu.RLock()
	c := g.byID[d.Chain]
	g.mu.RUnlock()
	if c == nil {
		g.log.Warn("dropping descriptor for unknown chain", zap.Stringer("desc", d))
		return
	}
	if err := d.Validate(c.pool.Bounds()); err != nil {
		c.Invalid.Add(1)
		g.log.Warn("dropping invalid descriptor", zap.Stringer("desc", d), zap.Error(err))
		return
	}
	if reason, rejected := bpf.Rejected(d.Flags); rejected {
		// A descriptor the gateway sent was handed back by the kernel
		// (the receiver died between Pick and send): take the slot back.
		if !c.pool.Handoff(d.Slot, d.Next, descriptor.GatewayInstance) {
			return // reclaimed meanwhile
		}
		if reason == bpf.DropRedirect {
			// Its socket has left the sockhash: the instance is dead,
			// though its control connection may not have ended yet. Stop
			// picking it now (unregister does the rest when it ends), and
			// since the request never reached it, give it to another
			// instance of the same function.
			g.mu.RLock()
			in := g.instances[d.Next]
			g.mu.RUnlock()
			if in != nil && in.chain == c {
				c.routes.RemoveInstance(in.fn, in.id)
				if inst, err := c.routes.Pick(in.fn, g.inflight); err == nil && inst != d.Next {
					c.pool.Handoff(d.Slot, descriptor.GatewayInstance, inst)
					if g.send(c, descriptor.Descriptor{Next: inst, Chain: c.ID(), Slot: d.Slot, Len: d.Len}) == nil {
						c.Redispatched.Add(1)
						return
					}
					if !c.pool.Handoff(d.Slot, inst, descriptor.GatewayInstance) {
						return
					}
				}
			}
		}
		c.complete(d.Slot, result{status: 502, slot: d.Slot,
			err: fmt.Sprintf("instance %d refused the request: %v", d.Next, reason)})
		return
	}
	if owner := c.pool.Owner(d.Slot); owner != descriptor.GatewayInstance {
		// The sender did not hand the slot to the gateway (forged, or a
		// slot already reclaimed after a crash).
		c.Invalid.Add(1)
		g.log.Warn("dropping descriptor for a slot the gateway does not own", zap.Stringer("desc", d), zap.Uint32("owner", owner))
		return
	}
	c.Returned.Add(1)
	r := result{slot: d.Slot, len: d.Len}
	if d.Flags&descriptor.FlagError != 0 {
		r.status = int(c.pool.Header(d.Slot).Status)
		if r.status < 400 || r.status > 599 {
			r.status = 500
		}
	}
	c.complete(d.Slot, r)
}

// serveControl handles one instance's registration and then waits for its
// control connection to end.
func (g *Gateway) serveControl(conn *control.Conn) {
	first, fds, err := conn.Recv()
	closeFDs(fds)
	if err != nil {
		conn.Send(control.Message{Type: control.TypeError, Error: err.Error()})
		conn.Close()
		return
	}
	if first.Type == control.TypePod {
		g.servePod(conn, first)
		return
	}
	in, err := g.register(conn, first)
	if err != nil {
		g.log.Warn("registration refused", zap.Error(err))
		conn.Send(control.Message{Type: control.TypeError, Error: err.Error()})
		conn.Close()
		return
	}
	g.log.Info("instance registered", zap.String("chain", in.chain.Name()), zap.String("function", in.chain.routes.FunctionName(in.fn)),
		zap.Uint32("instance", in.id), zap.Int32("pid", in.pid))
	// Block until the instance goes away. A message after Joined is a
	// protocol error: it is logged (its fds closed) and ignored — ending a
	// serving instance over a stray message would cost its requests.
	for {
		m, fds, err := conn.Recv()
		for _, fd := range fds {
			unix.Close(fd)
		}
		if err != nil {
			break
		}
		if m.Type == control.TypeLeave {
			in.chain.routes.RemoveInstance(in.fn, in.id)
			g.advertise(in.chain, in.fn)
			g.log.Info("instance leaving: no new requests go to it", zap.String("chain", in.chain.Name()), zap.Uint32("instance", in.id))
			continue
		}
		g.log.Warn("unexpected control message from a joined instance", zap.Uint32("instance", in.id), zap.String("type", m.Type))
	}
	g.unregister(in)
}

func (g *Gateway) register(conn *control.Conn, hello control.Message) (*instance, error) {
	if hello.Type != control.TypeHello {
		return nil, fmt.Errorf("%w: got %q, want %q or %q", control.ErrMalformed, hello.Type, control.TypeHello, control.TypePod)
	}
	c := g.Chain(hello.Chain)
	if c == nil {
		return nil, fmt.Errorf("unknown chain %q", hello.Chain)
	}
	fn, ok := c.routes.FunctionIndex(hello.Function)
	if !ok || fn == routing.Gateway {
		return nil, fmt.Errorf("chain %q has no function %q", hello.Chain, hello.Function)
	}
	if err := g.verify(conn, Member{Chain: hello.Chain, Function: hello.Function}); err != nil {
		return nil, err
	}
	if hello.Previous != 0 {
		// A member of the previous gateway is back, done with its old
		// instance's work: what that instance still holds is free.
		if n := c.reclaimOrphan(hello.Previous); n > 0 {
			g.log.Info("slots of a member's previous instance reclaimed", zap.String("chain", c.Name()),
				zap.Uint32("previous", hello.Previous), zap.Int("slots", n))
		}
	}
	in := &instance{id: g.nextInst.Add(1), chain: c, fn: fn, conn: conn, ring: -1}
	var err error
	if cred, err := conn.PeerCred(); err == nil {
		in.pid = cred.Pid
	}
	welcome := control.Message{Type: control.TypeWelcome, Instance: in.id, ChainID: c.ID(), FunctionIndex: fn, Mode: c.Mode()}
	sendFDs := []int{c.pool.FD()}
	if c.Mode() == ModePoll {
		if in.ring, err = c.rings.Claim(in.id); err != nil {
			return nil, err
		}
		welcome.Ring = in.ring
	} else {
		sendFDs = append(sendFDs, g.roMetrics.FD())
	}
	if err := conn.Send(welcome, sendFDs...); err != nil {
		g.releaseRing(in)
		return nil, err
	}
	join, fds, err := conn.Expect(control.TypeJoin)
	defer closeFDs(fds)
	if err != nil {
		g.releaseRing(in)
		return nil, err
	}
	_ = join
	if c.Mode() == ModeSkMsg {
		if len(fds) != 1 {
			return nil, fmt.Errorf("join: want exactly 1 descriptor socket, got %d fds", len(fds))
		}
		if err := g.dp.AddSocket(in.id, c.ID(), fds[0]); err != nil {
			return nil, fmt.Errorf("join: %w", err)
		}
	}
	if err := c.routes.AddInstance(fn, in.id); err != nil {
		g.removeFromDatapath(in)
		g.releaseRing(in)
		return nil, err
	}
	g.mu.Lock()
	g.instances[in.id] = in
	g.mu.Unlock()
	if err := conn.Send(control.Message{Type: control.TypeJoined, Instance: in.id}); err != nil {
		g.unregister(in)
		return nil, err
	}
	c.act.joined(fn)
	g.advertise(c, fn)
	return in, nil
}

// ErrNotVerified is returned to a process that Config.Verify refused.
var ErrNotVerified = errors.New("not verified as a member")

func (g *Gateway) verify(conn *control.Conn, m Member) error {
	if g.cfg.Verify == nil {
		return nil
	}
	cred, err := conn.PeerCred()
	if err != nil {
		return fmt.Errorf("%w: peer credentials: %v", ErrNotVerified, err)
	}
	if err := g.cfg.Verify(*cred, m); err != nil {
		g.verifyRefused.Add(1)
		return fmt.Errorf("%w of %s/%s%s: %v", ErrNotVerified, m.Chain, m.Function, m.Pod, err)
	}
	return nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

func (g *Gateway) releaseRing(in *instance) {
	if in.ring >= 0 {
		in.chain.rings.Release(in.ring)
		in.ring = -1
	}
}

func (g *Gateway) removeFromDatapath(in *instance) {
	if g.dp != nil && in.chain.Mode() == ModeSkMsg {
		if err := g.dp.RemoveInstance(in.id); err != nil {
			g.log.Warn("removing instance from datapath", zap.Uint32("instance", in.id), zap.Error(err))
		}
	}
}

// unregister removes a dead or departed instance: it stops receiving new
// work, and every slot it still held is reclaimed and its request failed
// with 502. Requests elsewhere in the chain are untouched.
func (g *Gateway) unregister(in *instance) {
	g.mu.Lock()
	delete(g.instances, in.id)
	g.mu.Unlock()
	c := in.chain
	c.routes.RemoveInstance(in.fn, in.id)
	if !g.closing.Load() {
		g.advertise(c, in.fn)
	}
	g.removeFromDatapath(in)
	g.releaseRing(in)
	in.conn.Close()
	if g.closing.Load() {
		// The gateway stops, the member does not: it keeps its slots
		// until it registers with the next gateway (see restart.go).
		return
	}
	n := c.pool.ReclaimOwner(in.id, descriptor.GatewayInstance, func(slot uint32) {
		c.complete(slot, result{status: 502, slot: slot,
			err: fmt.Sprintf("function %q (instance %d) died while holding this request", c.routes.FunctionName(in.fn), in.id)})
	})
	c.Reclaimed.Add(uint64(n))
	if n > 0 {
		g.log.Warn("instance died holding requests: slots reclaimed, requests failed with 502",
			zap.String("chain", c.Name()), zap.Uint32("instance", in.id), zap.Int("slots_reclaimed", n))
		return
	}
	g.log.Info("instance left", zap.String("chain", c.Name()), zap.Uint32("instance", in.id))
}

// InstanceCount is the number of registered instances of function name.
func (c *Chain) InstanceCount(name string) int {
	fn, ok := c.routes.FunctionIndex(name)
	if !ok {
		return 0
	}
	return len(c.routes.Instances(fn))
}

// InstanceOf returns the instance that process pid registered in chain c
// (its ID and function index); ok is false if pid has none there. A
// supervisor uses it to take one instance out of routing
// (RouteTable.RemoveInstance) and let it finish what it holds before
// stopping its process: stopping it at once would fail its requests with
// 502.
func (g *Gateway) InstanceOf(c *Chain, pid int32) (id uint32, fn uint8, ok bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	for _, in := range g.instances {
		if in.chain == c && in.pid == pid {
			return in.id, in.fn, true
		}
	}
	return 0, 0, false
}
