package bpf

import (
	"errors"
	"fmt"
	"sync"

	"github.com/cilium/ebpf"
)

// Pausing a splice: backpressure for the upstream → client direction (see
// the package doc, "Splice: bounded memory").
//
// The only place where bytes wait in order, with TCP's own flow control,
// is a socket's TCP receive queue of a socket that has no psock: the
// upstream socket (B) leaves splice_map, its bytes stay queued, its window
// closes and the user container's writes block; put back and kicked, the
// verdict forwards what waited, in order, ahead of new bytes. But while B is
// out, the client socket's (A) verdict would redirect the client's bytes to
// a socket that is not in splice_map, which drops them; so A's verdict
// record (splice_peer[A]) is parked for the pause: A's verdict then passes
// the client's bytes to A's own queue, where EPROXY reads them at resume.
// A's record also holds the connection's outstanding requests, which the
// sk_msg program keeps up to date through A's socket storage (its conn
// field): during the pause the record lives under a parking key (A's cookie
// with the top bit set, never a socket cookie) and A's storage points there.

// parkedBit marks a splice_peer key that is a parked connection record.
const parkedBit = uint64(1) << 63

// pausedSplice is what a pause saved (the agent's memory: a restarted agent
// cannot resume a splice paused by its predecessor).
type pausedSplice struct {
	client, upstream sprightSpliceInfo // the records as they were
	clientCookie     uint64
	upstreamCookie   uint64
}

var pauses sync.Map // *Datapath → *sync.Map (client cookie → *pausedSplice)

func (d *Datapath) pausedSet() *sync.Map {
	v, _ := pauses.LoadOrStore(d, &sync.Map{})
	return v.(*sync.Map)
}

// isPaused: cookie is a record PruneSplices must leave alone (a paused
// splice's upstream record, or its parked connection record).
func (d *Datapath) isPaused(cookie uint64) bool {
	found := false
	d.pausedSet().Range(func(_, v any) bool {
		p := v.(*pausedSplice)
		if cookie == p.upstreamCookie || cookie == p.clientCookie|parkedBit {
			found = true
			return false
		}
		return true
	})
	return found
}

// PauseSplice takes the upstream socket of a splice out of splice_map, so
// that the user container's bytes stay in its TCP receive queue
// (backpressure), and parks the client socket's verdict record, so that the
// client's bytes stay in the client socket's own queue meanwhile (readable
// by its owner; SIOCINQ counts them). Bytes of the upstream → client
// direction already taken off B (the backlog of A's psock) are still
// delivered. Bytes of the client → upstream direction the kernel took off A
// but has not yet written to B are discarded with B's psock: call it only
// while that direction has nothing in flight, and check afterwards (a
// chunk may have slipped in between the check and the call). Counting goes
// on (responses going out of A are counted; nothing goes out of B).
func (d *Datapath) PauseSplice(clientFD, upstreamFD int) error {
	ca, err := socketCookie(clientFD)
	if err != nil {
		return fmt.Errorf("bpf: pause splice: client side: %w", err)
	}
	cb, err := socketCookie(upstreamFD)
	if err != nil {
		return fmt.Errorf("bpf: pause splice: upstream side: %w", err)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	d.spliceMu.RLock()
	defer d.spliceMu.RUnlock()
	if v, ok := d.pausedSet().Load(ca); ok {
		// The client's direction is still held from the last pause (it
		// waits for the backlog to drain): only the upstream goes out.
		if v.(*pausedSplice).upstreamCookie != cb {
			return fmt.Errorf("bpf: pause splice: the sockets are not spliced to each other")
		}
		if err := d.objs.SpliceMap.Delete(cb); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
			return fmt.Errorf("bpf: pause splice: upstream out of splice_map: %w", err)
		}
		return nil
	}
	p := &pausedSplice{clientCookie: ca, upstreamCookie: cb}
	if err := d.objs.SplicePeer.Lookup(ca, &p.client); err != nil {
		return fmt.Errorf("bpf: pause splice: record of the client socket: %w", err)
	}
	if err := d.objs.SplicePeer.Lookup(cb, &p.upstream); err != nil {
		return fmt.Errorf("bpf: pause splice: record of the upstream socket: %w", err)
	}
	if p.client.PeerCookie != cb || p.upstream.PeerCookie != ca || p.client.Conn != ca {
		return fmt.Errorf("bpf: pause splice: the sockets are not spliced to each other")
	}
	if _, dup := d.pausedSet().LoadOrStore(ca, p); dup {
		return fmt.Errorf("bpf: pause splice: already paused")
	}
	undo := func() { d.pausedSet().Delete(ca) }
	// Park the connection record, then point A's storage at it: from
	// then on the sk_msg program counts A's responses there.
	parked := p.client
	parked.Conn = ca | parkedBit
	if err := d.objs.SplicePeer.Update(ca|parkedBit, &parked, ebpf.UpdateAny); err != nil {
		undo()
		return fmt.Errorf("bpf: pause splice: park the connection record: %w", err)
	}
	storage := p.client
	storage.Outstanding = 0
	storage.Conn = ca | parkedBit
	if err := d.objs.SpliceSock.Update(int32(clientFD), &storage, ebpf.UpdateAny); err != nil {
		d.objs.SplicePeer.Delete(ca | parkedBit)
		undo()
		return fmt.Errorf("bpf: pause splice: client storage: %w", err)
	}
	// A response that started between the copy and the switch was
	// counted in the old record: carry it over.
	var now sprightSpliceInfo
	if err := d.objs.SplicePeer.Lookup(ca, &now); err == nil && now.Outstanding < p.client.Outstanding {
		parked.Outstanding = max(0, parked.Outstanding-(p.client.Outstanding-now.Outstanding))
		d.objs.SplicePeer.Update(ca|parkedBit, &parked, ebpf.UpdateExist)
	}
	// A's verdict finds no record from now on: the client's bytes stay
	// with A.
	if err := d.objs.SplicePeer.Delete(ca); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("bpf: pause splice: client record: %w", err)
	}
	if err := d.objs.SpliceMap.Delete(cb); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		return fmt.Errorf("bpf: pause splice: upstream out of splice_map: %w", err)
	}
	return nil
}

// ResumeUpstream puts a paused splice's upstream socket back into
// splice_map and kicks it: what waited in its receive queue is forwarded
// to the client, in order, ahead of new bytes. The client's direction stays
// paused (its bytes stay with A) until ResumeClient: write what the client
// sent during the pause to B in between (B is spliced again, so that write
// is counted like a forwarded one).
func (d *Datapath) ResumeUpstream(clientFD, upstreamFD int) error {
	ca, cb, p, err := d.paused(clientFD, upstreamFD)
	if err != nil {
		return fmt.Errorf("bpf: resume splice: %w", err)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	_ = ca
	if err := d.objs.SplicePeer.Update(cb, &p.upstream, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bpf: resume splice: upstream record: %w", err)
	}
	if err := d.objs.SpliceMap.Update(cb, uint64(upstreamFD), ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bpf: resume splice: upstream into splice_map: %w", err)
	}
	return KickSplice(upstreamFD)
}

// ResumeClient ends a pause: the client socket's record is back (with the
// outstanding count the sk_msg program kept in the parked one), and the
// client's new bytes are forwarded again. Call it after ResumeUpstream, once
// the upstream → client backlog is empty: the bytes the client sent during
// the pause wait in A's psock queue behind that backlog (the same queue) and
// reach A's own queue, where SIOCINQ shows them and a read gets them, only
// when it has drained; read them and write them to B first. Bytes in A's
// queue after this call (SIOCINQ > 0) arrived between the caller's last
// read and the call: they can no longer be put in order with what follows
// them.
func (d *Datapath) ResumeClient(clientFD, upstreamFD int) error {
	ca, _, p, err := d.paused(clientFD, upstreamFD)
	if err != nil {
		return fmt.Errorf("bpf: resume splice: %w", err)
	}
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	rec := p.client
	var parked sprightSpliceInfo
	if err := d.objs.SplicePeer.Lookup(ca|parkedBit, &parked); err == nil {
		rec.Outstanding = parked.Outstanding
	}
	if err := d.objs.SplicePeer.Update(ca, &rec, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bpf: resume splice: client record: %w", err)
	}
	storage := p.client
	storage.Outstanding = 0
	if err := d.objs.SpliceSock.Update(int32(clientFD), &storage, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("bpf: resume splice: client storage: %w", err)
	}
	// A response that started between the copy and the switch.
	if err := d.objs.SplicePeer.Lookup(ca|parkedBit, &parked); err == nil && parked.Outstanding < rec.Outstanding {
		rec.Outstanding = max(0, rec.Outstanding-(rec.Outstanding-parked.Outstanding))
		d.objs.SplicePeer.Update(ca, &rec, ebpf.UpdateExist)
	}
	d.objs.SplicePeer.Delete(ca | parkedBit)
	d.pausedSet().Delete(ca)
	return nil
}

func (d *Datapath) paused(clientFD, upstreamFD int) (uint64, uint64, *pausedSplice, error) {
	ca, err := socketCookie(clientFD)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("client side: %w", err)
	}
	cb, err := socketCookie(upstreamFD)
	if err != nil {
		return 0, 0, nil, fmt.Errorf("upstream side: %w", err)
	}
	v, ok := d.pausedSet().Load(ca)
	if !ok {
		return 0, 0, nil, fmt.Errorf("not paused (or paused by another agent)")
	}
	p := v.(*pausedSplice)
	if p.upstreamCookie != cb {
		return 0, 0, nil, fmt.Errorf("the sockets are not spliced to each other")
	}
	return ca, cb, p, nil
}
