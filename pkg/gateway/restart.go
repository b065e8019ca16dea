package gateway

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/spright-dev/spright/pkg/descriptor"
	"github.com/spright-dev/spright/pkg/shm"
)

// A gateway restart keeps the data path: the eBPF maps stay pinned in
// PinDir and the chain pools stay as files named after PinDir (package shm,
// named pools). The restarted gateway reopens each pool (header and
// geometry checked), and takes back the slots of the requests that died
// with the previous gateway:
//
//   - slots the previous gateway held (its HTTP requests, gone with it) are
//     freed at once: no member writes a slot the gateway holds;
//   - slots a member held are left alone while the member may still write
//     them: they are freed when the member registers again naming its old
//     instance (hello.Previous; the SDK does so after its workers are done),
//     or by a sweep one request timeout after the reopen, for members that
//     died while the gateway was away;
//   - a slot of that era a member hands to the gateway after the reopen (it
//     finished a message as the gateway went away) is freed at the next
//     registration or the sweep: no descriptor will come for it. The era is
//     told by the slot's generation, which every Alloc bumps.
//
// Members notice the restart on their control connection and register
// again (function.Run); they keep their old mapping until then.

// PoolKey names the directory of the pools of the gateway pinning in pinDir.
func PoolKey(pinDir string) string {
	return strings.Trim(strings.ReplaceAll(filepath.Clean(pinDir), "/", "_"), "_")
}

// openPool reopens chain cfg's pool if a previous gateway left one with the
// same geometry, else creates it. Poll-mode chains keep an anonymous pool:
// their rings are claimed per gateway lifetime.
func openPool(cfg ChainConfig, key string, pc shm.Config, log *zap.Logger) (*shm.ChainPool, bool, error) {
	if cfg.Mode == ModePoll || key == "" {
		p, err := shm.Create(cfg.Name, cfg.ID, pc, log)
		return p, false, err
	}
	p, err := shm.OpenNamed(key, cfg.Name, cfg.ID, pc)
	switch {
	case err == nil:
		log.Info("pool reopened from the previous gateway", zap.String("chain", cfg.Name), zap.String("path", p.Path()),
			zap.Int("free", p.FreeCount()), zap.Uint32("slots", p.Slots()))
		return p, true, nil
	case errors.Is(err, os.ErrNotExist):
	default:
		log.Warn("not reusing the previous gateway's pool: creating a new one (members register again with it)",
			zap.String("chain", cfg.Name), zap.Error(err))
	}
	p, err = shm.CreateNamed(key, cfg.Name, cfg.ID, pc, log)
	return p, false, err
}

// adoptPool takes back what the previous gateway held in a reopened pool,
// records the slots its members hold (with their generation) and returns
// the highest instance ID seen in it (new IDs go above it).
func (c *Chain) adoptPool(log *zap.Logger) uint32 {
	var maxID uint32
	freed := 0
	old := map[uint32]uint32{}
	owners := map[uint32]int{}
	c.pool.InUse(func(slot, owner uint32) {
		switch owner {
		case descriptor.GatewayInstance:
			if c.pool.Free(slot) == nil {
				freed++
			}
		case shm.OwnerNone:
		default:
			old[slot] = c.pool.Header(slot).Gen
			owners[owner]++
			maxID = max(maxID, owner)
		}
	})
	c.orphanMu.Lock()
	c.oldSlots = old
	c.orphanMu.Unlock()
	c.Reclaimed.Add(uint64(freed))
	log.Info("pool adopted", zap.String("chain", c.Name()), zap.Int("gateway_slots_freed", freed),
		zap.Any("member_slots", owners), zap.Int("free", c.pool.FreeCount()))
	return maxID
}

// reclaimOld frees the slots of the previous gateway's era (in use since
// the reopen: same generation) that are safe to free: those held by
// instance prev (a member that registered again, so its old work is done),
// those handed to the gateway after the reopen (a member finishing a
// message as the gateway went away: no descriptor will ever come for
// them), and with all, every one of them (the sweep) except those a
// registered instance holds now (an old member's forward that reached a new
// one: it answers as usual). It returns how many.
func (c *Chain) reclaimOld(prev uint32, all bool, registered func(uint32) bool) int {
	c.orphanMu.Lock()
	defer c.orphanMu.Unlock()
	n := 0
	for slot, gen := range c.oldSlots {
		h := c.pool.Header(slot)
		owner := c.pool.Owner(slot)
		if h.Gen != gen || owner == shm.OwnerNone {
			delete(c.oldSlots, slot) // freed (and maybe reused) meanwhile
			continue
		}
		if owner != prev && owner != descriptor.GatewayInstance && (!all || registered(owner)) {
			continue
		}
		if owner == descriptor.GatewayInstance || c.pool.Handoff(slot, owner, descriptor.GatewayInstance) {
			if c.pool.Free(slot) == nil {
				n++
			}
		}
		delete(c.oldSlots, slot)
	}
	c.Reclaimed.Add(uint64(n))
	return n
}

// reclaimOrphan frees what old instance id (and the previous era's
// gateway-owned leftovers) still hold. It returns how many.
func (c *Chain) reclaimOrphan(id uint32) int { return c.reclaimOld(id, false, nil) }

// sweepOrphans frees, one chain timeout after the reopen, every slot of the
// previous era still in use: its holder did not come back (it died while
// the gateway was away) or overran the timeout.
func (g *Gateway) sweepOrphans(c *Chain) {
	defer g.wg.Done()
	t := time.NewTimer(max(c.limits.Load().Timeout, time.Second))
	defer t.Stop()
	select {
	case <-t.C:
	case <-g.done:
		return
	}
	registered := func(id uint32) bool {
		g.mu.RLock()
		defer g.mu.RUnlock()
		_, ok := g.instances[id]
		return ok
	}
	if n := c.reclaimOld(0, true, registered); n > 0 {
		g.log.Warn("slots of the previous gateway's members that did not register again are reclaimed",
			zap.String("chain", c.Name()), zap.Int("slots", n))
	}
}

// Reopened reports whether the chain's pool was kept from a previous
// gateway (its members are expected to register again).
func (c *Chain) Reopened() bool { return c.reopened }

// WaitMembers waits until each of functions has an instance in chain c, or
// ctx ends. A restarted gateway uses it before it takes HTTP traffic again,
// so the requests after a restart do not fail while members re-register.
func (c *Chain) WaitMembers(ctx context.Context, functions []string) error {
	for {
		missing := ""
		for _, f := range functions {
			if c.InstanceCount(f) == 0 {
				missing = f
				break
			}
		}
		if missing == "" {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("chain %q: function %q has no instance: %w", c.Name(), missing, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}
