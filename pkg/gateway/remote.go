package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/spright-dev/spright/pkg/descriptor"
	"github.com/spright-dev/spright/pkg/peer"
	"github.com/spright-dev/spright/pkg/routing"
	"github.com/spright-dev/spright/pkg/shm"
	"github.com/spright-dev/spright/pkg/transport"
)

// Chains across nodes (package peer has the wire protocol and the design).
//
// On this node a function of another node is a proxy instance: an ID with
// routing.RemoteBit in the chain's route table and a descriptor socket of
// the gateway's own in the sockhash. A function that picks it sends its
// descriptor there like to any instance; shipHop sends the slot's header and
// payload to the peer. A request that entered here keeps its slot (the
// answer comes back into it); one that came from a peer is freed once it
// has crossed. A request that arrives from a peer (takeHop) gets a slot of
// this node's pool and goes to a local instance. When a chain ends on a
// node that is not the request's origin, Chain.complete hands the answer to
// hopDone, which sends it to the origin.

// PeerStats count the cross-node traffic (also exported to Prometheus).
type PeerStats struct {
	Shipped  atomic.Uint64 // requests sent to a peer for their next function
	Received atomic.Uint64 // requests received from a peer
	Results  atomic.Uint64 // answers sent to the node where a request entered
	Answered atomic.Uint64 // answers received for requests that entered here
	// Refused counts frames refused: unknown chain or function, a result
	// for a slot not shipped, a frame that failed authentication or
	// parsing (the connection is then closed).
	Refused atomic.Uint64
	// Failed counts requests failed because their peer went away (502) or
	// never answered (504).
	Failed atomic.Uint64
}

// link is an authenticated connection to a peer node.
type link struct {
	conn *peer.Conn
	node string
	done chan struct{}
}

// proxy stands for a peer's instances of one function of a chain.
type proxy struct {
	id    uint32
	link  *link
	chain *Chain
	fn    uint8
	sock  *transport.Socket
	// inflight counts this node's requests shipped through the proxy and
	// not answered yet: its residual capacity for Pick (Gateway.inflight).
	// The eBPF counter cannot serve: a descriptor to the proxy raises it
	// and none ever leaves the proxy's socket to lower it.
	inflight atomic.Int64
}

// shipped is a request that entered here and is on another node now.
type shipped struct {
	link  *link
	proxy *proxy
	since time.Time
}

// forget is called for each record taken out of remote.shipped.
func (s shipped) forget() { s.proxy.inflight.Add(-1) }

type shipKey struct {
	chain uint16
	slot  uint32
	gen   uint32
}

// remote is the gateway's cross-node state.
type remote struct {
	mu        sync.Mutex
	links     map[string]*link                  // by node name
	dialers   map[string]*dialer                // ConnectPeer's, by node name
	proxies   map[uint32]*proxy                 // by instance ID
	byTarget  map[string]*proxy                 // node/chain/function
	shipped   map[shipKey]shipped               // requests of this node elsewhere
	hops      map[uint16]map[uint32]peer.Origin // chain → slot → origin, requests from peers
	nhops     atomic.Int64                      // entries in hops: 0 keeps complete's check free
	nextID    atomic.Uint32
	sweepOnce sync.Once
	stats     PeerStats
	wg        sync.WaitGroup
}

// proxyInflight is proxy id's in-flight count (0 for one that is gone).
func (g *Gateway) proxyInflight(id uint32) int64 {
	g.rem.mu.Lock()
	p := g.rem.proxies[id]
	g.rem.mu.Unlock()
	if p == nil {
		return 0
	}
	return p.inflight.Load()
}

// PeerStats returns the cross-node counters.
func (g *Gateway) PeerStats() *PeerStats { return &g.rem.stats }

func (g *Gateway) peerKey() ([]byte, string, error) {
	if g.cfg.Node == "" || len(g.cfg.PeerKey) == 0 {
		return nil, "", errors.New("gateway: cross-node chains need Config.Node and Config.PeerKey")
	}
	return g.cfg.PeerKey, g.cfg.Node, nil
}

// ServePeers accepts peer nodes on l until the gateway closes.
func (g *Gateway) ServePeers(l net.Listener) error {
	key, self, err := g.peerKey()
	if err != nil {
		return err
	}
	g.rem.wg.Add(1)
	go func() {
		<-g.done
		l.Close()
		g.rem.wg.Done()
	}()
	for {
		nc, err := l.Accept()
		if err != nil {
			if g.closing.Load() {
				return nil
			}
			return fmt.Errorf("gateway: accepting peers: %w", err)
		}
		g.rem.wg.Add(1) // Close waits for it: it touches the pools
		go func() {
			defer g.rem.wg.Done()
			c, err := peer.Server(nc, self, key)
			if err != nil {
				g.rem.stats.Refused.Add(1)
				g.log.Warn("peer refused", zap.Stringer("addr", nc.RemoteAddr()), zap.Error(err))
				nc.Close()
				return
			}
			g.runLink(c)
		}()
	}
}

// ConnectPeer keeps a connection to peer node name at addr: it dials, and
// dials again (with back-off up to 5 s) whenever the connection ends, until
// ForgetPeer or the gateway closes. Calling it again for the same name
// changes the address (a peer pod that moved). Between two nodes one
// connection is enough; the node whose name sorts first dials (the other
// accepts), so list every peer on every node and let both run ConnectPeer.
func (g *Gateway) ConnectPeer(name, addr string) error {
	key, self, err := g.peerKey()
	if err != nil {
		return err
	}
	if name == self || self > name {
		return nil // ourselves, or the peer dials us
	}
	r := &g.rem
	r.mu.Lock()
	if d := r.dialers[name]; d != nil {
		if old := d.addr.Swap(&addr); *old != addr {
			g.log.Info("peer moved", zap.String("peer", name), zap.String("from", *old), zap.String("to", addr))
		}
		r.mu.Unlock()
		return nil
	}
	d := &dialer{stop: make(chan struct{})}
	d.addr.Store(&addr)
	r.dialers[name] = d
	r.wg.Add(1)
	r.mu.Unlock()
	go func() {
		defer r.wg.Done()
		backoff := 50 * time.Millisecond
		for !g.closing.Load() {
			at := *d.addr.Load()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			c, err := peer.Dial(ctx, at, self, key)
			cancel()
			if err == nil {
				if c.Peer != name {
					g.log.Warn("peer answered with another name", zap.String("want", name), zap.String("got", c.Peer))
				}
				backoff = 50 * time.Millisecond
				go func() {
					select {
					case <-d.stop:
						c.Close()
					case <-g.done:
					}
				}()
				g.runLink(c)
			} else {
				g.log.Debug("peer not reachable", zap.String("peer", name), zap.String("addr", at), zap.Error(err))
			}
			select {
			case <-g.done:
				return
			case <-d.stop:
				return
			case <-time.After(backoff):
			}
			backoff = min(2*backoff, 5*time.Second)
		}
	}()
	return nil
}

// ForgetPeer stops dialing peer node name and ends its link (a node that
// left the cluster).
func (g *Gateway) ForgetPeer(name string) {
	r := &g.rem
	r.mu.Lock()
	d := r.dialers[name]
	delete(r.dialers, name)
	l := r.links[name]
	r.mu.Unlock()
	if d != nil {
		close(d.stop)
	}
	if l != nil {
		l.conn.Close()
	}
}

// Peers lists the nodes this gateway has a link to now.
func (g *Gateway) Peers() []string {
	g.rem.mu.Lock()
	defer g.rem.mu.Unlock()
	out := make([]string, 0, len(g.rem.links))
	for n := range g.rem.links {
		out = append(out, n)
	}
	return out
}

type dialer struct {
	addr atomic.Pointer[string]
	stop chan struct{}
}

// runLink serves one peer connection until it ends.
func (g *Gateway) runLink(c *peer.Conn) {
	l := &link{conn: c, node: c.Peer, done: make(chan struct{})}
	r := &g.rem
	r.mu.Lock()
	if old := r.links[l.node]; old != nil {
		old.conn.Close() // the newer connection wins; the old one's requests fail
	}
	r.links[l.node] = l
	r.mu.Unlock()
	// The sweep ticks only once there are peers: a gateway alone costs no
	// CPU while idle.
	r.sweepOnce.Do(func() {
		r.wg.Add(1)
		go g.sweepShipped()
	})
	g.log.Info("peer connected", zap.String("peer", l.node), zap.Stringer("addr", c.RemoteAddr()))
	stop := make(chan struct{})
	go func() {
		select {
		case <-g.done:
			c.Close()
		case <-stop:
		}
	}()
	// Tell the peer what this node serves.
	for _, ch := range g.Chains() {
		for fn := uint8(1); ; fn++ {
			name := ch.routes.FunctionName(fn)
			if name == "" {
				break
			}
			g.advertiseTo(l, ch, fn)
		}
	}
	err := g.readLink(l)
	close(stop)
	c.Close()
	g.dropLink(l, err)
}

func (g *Gateway) readLink(l *link) error {
	var f peer.Frame
	for {
		var slot uint32
		var slotChain, answered *Chain
		alloc := func(n int) []byte {
			slotChain, answered = nil, nil
			c := g.Chain(f.Chain)
			if c == nil || n > int(c.pool.SlotSize()) {
				return nil
			}
			switch f.Type {
			case peer.TypeRequest:
				s, err := c.pool.Alloc(descriptor.GatewayInstance)
				if err != nil {
					return nil
				}
				slot, slotChain = s, c
				return c.pool.Data(s)
			case peer.TypeResult:
				// The answer is read straight into the slot the request
				// kept; its record is taken first, so the sweep cannot
				// free the slot meanwhile.
				if f.Origin.Node != g.cfg.Node || f.Origin.Slot >= c.pool.Slots() || !g.takeShipped(c, f.Origin) {
					return nil
				}
				answered = c
				return c.pool.Data(f.Origin.Slot)
			}
			return nil
		}
		if err := l.conn.Recv(&f, alloc); err != nil {
			if slotChain != nil {
				slotChain.pool.Free(slot)
			}
			if answered != nil {
				answered.complete(f.Origin.Slot, result{status: 502, slot: f.Origin.Slot,
					err: fmt.Sprintf("the answer from node %s was not authentic or incomplete: %v", l.node, err)})
			}
			// A link that ends — closed, or reset by a peer that died
			// with our data unread — is a peer gone, not a frame refused.
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !errors.Is(err, syscall.ECONNRESET) {
				g.rem.stats.Refused.Add(1)
			}
			return err
		}
		switch {
		case f.Type == peer.TypeServe:
			g.takeServe(l, &f)
		case f.Type == peer.TypeRequest:
			g.takeHop(l, &f, slotChain, slot)
		case answered != nil:
			g.finishShipped(answered, &f)
		default:
			g.takeAnswer(&f)
		}
	}
}

// dropLink forgets a connection that ended: its proxies leave the route
// tables, and the requests of this node that were on that peer fail (502).
func (g *Gateway) dropLink(l *link, err error) {
	r := &g.rem
	r.mu.Lock()
	if r.links[l.node] == l {
		delete(r.links, l.node)
	}
	var gone []*proxy
	for id, p := range r.proxies {
		if p.link == l {
			gone = append(gone, p)
			delete(r.proxies, id)
			delete(r.byTarget, targetKey(l.node, p.chain, p.fn))
		}
	}
	var failed []shipKey
	for k, s := range r.shipped {
		if s.link == l {
			failed = append(failed, k)
			delete(r.shipped, k)
			s.forget()
		}
	}
	r.mu.Unlock()
	close(l.done)
	for _, p := range gone {
		g.removeProxy(p)
	}
	for _, k := range failed {
		if c := g.chainByID(k.chain); c != nil {
			r.stats.Failed.Add(1)
			c.complete(k.slot, result{status: 502, slot: k.slot, err: fmt.Sprintf("node %s went away while it had the request", l.node)})
		}
	}
	if !g.closing.Load() {
		g.log.Warn("peer disconnected", zap.String("peer", l.node), zap.Int("requests_failed", len(failed)), zap.Error(err))
	}
}

func targetKey(node string, c *Chain, fn uint8) string {
	return node + "/" + c.Name() + "/" + c.routes.FunctionName(fn)
}

func (g *Gateway) chainByID(id uint16) *Chain {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.byID[id]
}

// localInstances counts fn's instances on this node.
func localInstances(c *Chain, fn uint8) (n uint32) {
	for _, id := range c.routes.Instances(fn) {
		if !routing.IsRemote(id) {
			n++
		}
	}
	return n
}

// advertise tells every peer how many instances of c's function fn this
// node has now.
func (g *Gateway) advertise(c *Chain, fn uint8) {
	g.rem.mu.Lock()
	links := make([]*link, 0, len(g.rem.links))
	for _, l := range g.rem.links {
		links = append(links, l)
	}
	g.rem.mu.Unlock()
	for _, l := range links {
		g.advertiseTo(l, c, fn)
	}
}

func (g *Gateway) advertiseTo(l *link, c *Chain, fn uint8) {
	f := &peer.Frame{Type: peer.TypeServe, Chain: c.Name(), Function: c.routes.FunctionName(fn), Instances: localInstances(c, fn)}
	if err := l.conn.Send(f); err != nil {
		l.conn.Close()
	}
}

// takeServe adds or removes the proxy for a peer's instances of a function.
func (g *Gateway) takeServe(l *link, f *peer.Frame) {
	c := g.Chain(f.Chain)
	if c == nil || c.Mode() != ModeSkMsg {
		return // a chain this node does not serve (yet): nothing to route
	}
	fn, ok := c.routes.FunctionIndex(f.Function)
	if !ok {
		return
	}
	key := targetKey(l.node, c, fn)
	r := &g.rem
	r.mu.Lock()
	p := r.byTarget[key]
	r.mu.Unlock()
	switch {
	case f.Instances > 0 && p == nil:
		if err := g.addProxy(l, c, fn); err != nil {
			g.log.Warn("cannot route to a peer's function", zap.String("peer", l.node), zap.String("chain", c.Name()),
				zap.String("function", f.Function), zap.Error(err))
		}
	case f.Instances == 0 && p != nil:
		r.mu.Lock()
		delete(r.byTarget, key)
		delete(r.proxies, p.id)
		r.mu.Unlock()
		g.removeProxy(p)
	}
}

func (g *Gateway) addProxy(l *link, c *Chain, fn uint8) error {
	if err := g.ensureDatapath(); err != nil {
		return err
	}
	id := routing.RemoteBit | g.rem.nextID.Add(1)
	sock, err := transport.NewSocket()
	if err != nil {
		return err
	}
	if err := sock.Control(func(fd int) error { return g.dp.AddSocket(id, c.ID(), fd) }); err != nil {
		sock.Close()
		return err
	}
	if err := c.routes.AddInstance(fn, id); err != nil {
		g.dp.RemoveInstance(id)
		sock.Close()
		return err
	}
	p := &proxy{id: id, link: l, chain: c, fn: fn, sock: sock}
	r := &g.rem
	r.mu.Lock()
	r.proxies[id] = p
	r.byTarget[targetKey(l.node, c, fn)] = p
	r.mu.Unlock()
	c.act.joined(fn)
	g.log.Info("routing to a peer's function", zap.String("peer", l.node), zap.String("chain", c.Name()),
		zap.String("function", c.routes.FunctionName(fn)), zap.Uint32("instance", id))
	g.rem.wg.Add(1)
	go g.proxyLoop(p)
	return nil
}

func (g *Gateway) removeProxy(p *proxy) {
	p.chain.routes.RemoveInstance(p.fn, p.id)
	if g.dp != nil {
		g.dp.RemoveInstance(p.id)
	}
	p.sock.Close()
	// Slots handed to the proxy that it never shipped go back.
	p.chain.pool.ReclaimOwner(p.id, descriptor.GatewayInstance, func(slot uint32) {
		p.chain.complete(slot, result{status: 502, slot: slot, err: fmt.Sprintf("node %s went away", p.link.node)})
	})
}

// proxyLoop ships the descriptors functions send to proxy p.
func (g *Gateway) proxyLoop(p *proxy) {
	defer g.rem.wg.Done()
	for {
		d, err := p.sock.Recv()
		if err != nil {
			return
		}
		g.shipHop(p, d)
	}
}

// shipHop sends the request in d's slot to the peer behind proxy p.
func (g *Gateway) shipHop(p *proxy, d descriptor.Descriptor) {
	c := p.chain
	if d.Chain != c.ID() || d.Validate(c.pool.Bounds()) != nil || !c.pool.Handoff(d.Slot, p.id, descriptor.GatewayInstance) {
		c.Invalid.Add(1)
		return
	}
	h := c.pool.Header(d.Slot)
	f := &peer.Frame{Type: peer.TypeRequest, Chain: c.Name(), Function: c.routes.FunctionName(p.fn),
		RequestID: h.RequestID, Topic: h.TopicString(), Hops: h.Hops, Status: h.Status,
		Payload: c.pool.Data(d.Slot)[:d.Len]}
	for _, fn := range h.Itinerary[:min(int(h.ItinLen), shm.MaxItinerary)] {
		f.Itinerary = append(f.Itinerary, c.routes.FunctionName(fn))
	}
	origin, fromPeer := g.hopOrigin(c, d.Slot)
	if !fromPeer {
		origin = peer.Origin{Node: g.cfg.Node, Slot: d.Slot, Gen: h.Gen}
	}
	f.Origin = origin
	var k shipKey
	if !fromPeer {
		// This node keeps the slot for the answer.
		k = shipKey{chain: c.ID(), slot: d.Slot, gen: h.Gen}
		g.rem.mu.Lock()
		g.rem.shipped[k] = shipped{link: p.link, proxy: p, since: time.Now()}
		p.inflight.Add(1)
		g.rem.mu.Unlock()
	}
	alive := true
	select {
	case <-p.link.done:
		alive = false
	default:
	}
	err := errLinkDown
	if alive {
		// Counted before the send: the answer may be back before Send returns.
		g.rem.stats.Shipped.Add(1)
		err = p.link.conn.Send(f)
	}
	if err == nil {
		if fromPeer {
			// Crossed: this node is done with it.
			g.forgetHop(c, d.Slot)
			c.pool.Free(d.Slot)
		}
		return
	}
	// The peer is gone (its link ended before dropLink took its proxies
	// out): not this request's fault. Stop routing there, and give the hop
	// to another instance of the function, if any is left.
	if !fromPeer {
		g.rem.mu.Lock()
		s, mine := g.rem.shipped[k]
		if mine {
			delete(g.rem.shipped, k)
			s.forget()
		}
		g.rem.mu.Unlock()
		if !mine {
			return // dropLink already failed it
		}
	}
	p.link.conn.Close()
	c.routes.RemoveInstance(p.fn, p.id)
	g.redispatch(c, p.fn, d.Slot, d.Len, fromPeer, origin, h.RequestID, p.link.node)
}

var errLinkDown = errors.New("peer link down")

// redispatch sends a hop that could not go to a peer to another instance of
// fn, or fails the request with 503 when none is left.
func (g *Gateway) redispatch(c *Chain, fn uint8, slot, n uint32, fromPeer bool, origin peer.Origin, reqID uint64, node string) {
	if inst, err := c.routes.Pick(fn, g.inflight); err == nil {
		c.pool.Handoff(slot, descriptor.GatewayInstance, inst)
		if g.send(c, descriptor.Descriptor{Next: inst, Chain: c.ID(), Slot: slot, Len: n}) == nil {
			return
		}
		if !c.pool.Handoff(slot, inst, descriptor.GatewayInstance) {
			return // the instance died and its reclaim took the slot
		}
	}
	msg := fmt.Sprintf("function %q has no instance left: node %s, which had one, went away", c.routes.FunctionName(fn), node)
	if fromPeer {
		g.forgetHop(c, slot)
		c.pool.Free(slot)
		g.failOrigin(c.Name(), origin, reqID, http.StatusServiceUnavailable, msg, nil)
		return
	}
	c.complete(slot, result{status: http.StatusServiceUnavailable, slot: slot, err: msg})
}

func (g *Gateway) hopOrigin(c *Chain, slot uint32) (peer.Origin, bool) {
	g.rem.mu.Lock()
	defer g.rem.mu.Unlock()
	o, ok := g.rem.hops[c.ID()][slot]
	return o, ok
}

func (g *Gateway) forgetHop(c *Chain, slot uint32) {
	g.rem.mu.Lock()
	defer g.rem.mu.Unlock()
	if _, ok := g.rem.hops[c.ID()][slot]; ok {
		delete(g.rem.hops[c.ID()], slot)
		g.rem.nhops.Add(-1)
	}
}

// takeHop starts a request that came from a peer on a local instance.
func (g *Gateway) takeHop(l *link, f *peer.Frame, c *Chain, slot uint32) {
	g.rem.stats.Received.Add(1)
	fail := func(status int, format string, a ...any) {
		g.rem.stats.Refused.Add(1)
		if c != nil {
			c.pool.Free(slot)
		}
		g.failOrigin(f.Chain, f.Origin, f.RequestID, status, fmt.Sprintf(format, a...), l)
	}
	if c == nil {
		if ch := g.Chain(f.Chain); ch == nil {
			fail(404, "node %s does not serve chain %q", g.cfg.Node, f.Chain)
		} else if len(f.Payload) > int(ch.pool.SlotSize()) {
			fail(413, "payload of %d bytes exceeds chain %q's slot size", len(f.Payload), f.Chain)
		} else {
			fail(503, "chain %q is at capacity on node %s", f.Chain, g.cfg.Node)
		}
		return
	}
	fn, ok := c.routes.FunctionIndex(f.Function)
	if !ok || fn == routing.Gateway {
		fail(502, "chain %q has no function %q on node %s", f.Chain, f.Function, g.cfg.Node)
		return
	}
	if len(f.Itinerary) > shm.MaxItinerary || len(f.Topic) > shm.MaxTopic {
		fail(502, "request's itinerary or topic too long")
		return
	}
	h := c.pool.Header(slot)
	for i, name := range f.Itinerary {
		idx, ok := c.routes.FunctionIndex(name)
		if !ok || idx == routing.Gateway {
			fail(502, "chain %q has no function %q on node %s", f.Chain, name, g.cfg.Node)
			return
		}
		h.Itinerary[i] = idx
	}
	h.ItinLen = uint8(len(f.Itinerary))
	h.RequestID, h.Hops, h.Status = f.RequestID, f.Hops, f.Status
	h.StartNs = time.Now().UnixNano()
	h.SetTopic(f.Topic)
	c.routes.Begin(h)
	inst, err := c.routes.Pick(fn, g.inflight)
	if err != nil {
		fail(503, "function %q has no instance on node %s", f.Function, g.cfg.Node)
		return
	}
	g.rem.mu.Lock()
	if g.rem.hops[c.ID()] == nil {
		g.rem.hops[c.ID()] = map[uint32]peer.Origin{}
	}
	g.rem.hops[c.ID()][slot] = f.Origin
	g.rem.nhops.Add(1)
	g.rem.mu.Unlock()
	c.pool.Handoff(slot, descriptor.GatewayInstance, inst)
	d := descriptor.Descriptor{Next: inst, Chain: c.ID(), Slot: slot, Len: uint32(len(f.Payload))}
	if err := g.send(c, d); err != nil {
		if c.pool.Handoff(slot, inst, descriptor.GatewayInstance) {
			c.complete(slot, result{status: 502, slot: slot, err: fmt.Sprintf("could not deliver to function %q on node %s: %v", f.Function, g.cfg.Node, err)})
		}
	}
}

// hopDone is Chain.complete for a slot that holds a request from a peer:
// the answer goes to the request's origin and the slot is freed. It
// reports false for this node's own requests.
func (g *Gateway) hopDone(c *Chain, slot uint32, r result) bool {
	if g.rem.nhops.Load() == 0 {
		return false
	}
	g.rem.mu.Lock()
	o, ok := g.rem.hops[c.ID()][slot]
	if ok {
		delete(g.rem.hops[c.ID()], slot)
		g.rem.nhops.Add(-1)
	}
	g.rem.mu.Unlock()
	if !ok {
		return false
	}
	h := c.pool.Header(slot)
	f := &peer.Frame{Type: peer.TypeResult, Chain: c.Name(), Origin: o, RequestID: h.RequestID}
	switch {
	case r.err != "":
		f.Type, f.Status, f.Msg = peer.TypeFail, uint16(r.status), r.err
	default:
		f.Status = uint16(r.status)
		f.Payload = c.pool.Data(slot)[:min(r.len, c.pool.SlotSize())]
	}
	if o.Node == g.cfg.Node {
		// The request came back to the node it entered: answer it here.
		g.answerLocal(c, f)
	} else if l := g.linkTo(o.Node); l != nil {
		g.rem.stats.Results.Add(1)
		l.conn.Send(f)
	}
	c.pool.Free(slot)
	return true
}

func (g *Gateway) linkTo(node string) *link {
	g.rem.mu.Lock()
	defer g.rem.mu.Unlock()
	return g.rem.links[node]
}

// failOrigin tells a request's origin (this node or a peer) it failed on
// this node. via, if not nil, is the link the request came on: the answer
// goes back there when this node has no link of its own to the origin.
func (g *Gateway) failOrigin(chain string, o peer.Origin, reqID uint64, status int, msg string, via *link) {
	f := &peer.Frame{Type: peer.TypeFail, Chain: chain, Origin: o, RequestID: reqID, Status: uint16(status), Msg: msg}
	if o.Node == g.cfg.Node {
		g.takeAnswer(f)
		return
	}
	to := g.linkTo(o.Node)
	if to == nil {
		to = via
	}
	if to != nil {
		to.conn.Send(f)
	}
}

// answerLocal completes this node's request with a peer's (or its own
// returning hop's) answer: the payload is copied into the kept slot.
func (g *Gateway) answerLocal(c *Chain, f *peer.Frame) {
	if f.Origin.Slot >= c.pool.Slots() || !g.takeShipped(c, f.Origin) {
		g.rem.stats.Refused.Add(1)
		return
	}
	g.finishShipped(c, f)
}

// finishShipped completes a shipped request whose record was taken.
func (g *Gateway) finishShipped(c *Chain, f *peer.Frame) {
	g.rem.stats.Answered.Add(1)
	if f.Type == peer.TypeFail {
		c.complete(f.Origin.Slot, result{status: int(f.Status), slot: f.Origin.Slot, err: f.Msg})
		return
	}
	dst := c.pool.Data(f.Origin.Slot)
	n := copy(dst, f.Payload) // no copy when the payload was read into the slot
	c.complete(f.Origin.Slot, result{status: int(f.Status), slot: f.Origin.Slot, len: uint32(n)})
}

// takeShipped removes a shipped request's record; false if there was none
// (a forged or late answer).
func (g *Gateway) takeShipped(c *Chain, o peer.Origin) bool {
	k := shipKey{chain: c.ID(), slot: o.Slot, gen: o.Gen}
	g.rem.mu.Lock()
	defer g.rem.mu.Unlock()
	s, ok := g.rem.shipped[k]
	if !ok {
		return false
	}
	delete(g.rem.shipped, k)
	s.forget()
	return true
}

// takeAnswer handles a Result or Fail frame for a request of this node.
func (g *Gateway) takeAnswer(f *peer.Frame) {
	c := g.Chain(f.Chain)
	if c == nil || f.Origin.Node != g.cfg.Node {
		g.rem.stats.Refused.Add(1)
		return
	}
	g.answerLocal(c, f)
}

// sweepShipped fails this node's requests that have been on a peer longer
// than their chain's timeout (a peer that lost them without going away):
// their slots would otherwise stay taken.
func (g *Gateway) sweepShipped() {
	defer g.rem.wg.Done()
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-g.done:
			return
		case <-t.C:
		}
		now := time.Now()
		var late []shipKey
		g.rem.mu.Lock()
		for k, s := range g.rem.shipped {
			if c := g.chainByID(k.chain); c != nil && now.Sub(s.since) > c.limits.Load().Timeout+time.Second {
				late = append(late, k)
				delete(g.rem.shipped, k)
				s.forget()
			}
		}
		g.rem.mu.Unlock()
		for _, k := range late {
			if c := g.chainByID(k.chain); c != nil {
				g.rem.stats.Failed.Add(1)
				c.complete(k.slot, result{status: 504, slot: k.slot, err: "the node the request went to never answered"})
			}
		}
	}
}

// closePeers ends every peer connection and proxy (Close).
func (g *Gateway) closePeers() {
	g.rem.mu.Lock()
	for _, l := range g.rem.links {
		l.conn.Close()
	}
	for _, p := range g.rem.proxies {
		p.sock.Close()
	}
	g.rem.mu.Unlock()
	g.rem.wg.Wait()
}
