package gateway

import (
	"fmt"
	"net/netip"
	"net/url"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"

	"github.com/spright-dev/spright/bpf"
	"github.com/spright-dev/spright/pkg/control"
	"github.com/spright-dev/spright/pkg/eproxy"
)

// ChainMember says which chain function a Knative revision implements.
type ChainMember struct {
	Chain, Function string
	// Routed: Knative routes the Service's traffic to this revision. A
	// held request wakes only routed revisions (all of the function's,
	// when none is marked).
	Routed bool
}

// SetRevisionChain records that pods of revision ns/rev are members of a
// chain: their EPROXY is told so at registration and joins the chain with
// its function shim. (The controller sets this from the revision's
// spright.dev annotations.)
//
// Pods of the revision that registered before (their welcome named no chain,
// or another one) are asked to register again: their control connection is
// closed, EPROXY registers at once and its new welcome names the chain. On
// a real cluster a member's pods are usually up before the controller has
// published the Chain and this gateway has loaded it.
func (g *Gateway) SetRevisionChain(rev types.NamespacedName, m ChainMember) {
	g.mu.Lock()
	if g.revChains == nil {
		g.revChains = map[types.NamespacedName]ChainMember{}
	}
	g.revChains[rev] = m
	var stale []*pod
	for p, welcomed := range g.revPods[rev] {
		if welcomed.Chain != m.Chain || welcomed.Function != m.Function {
			stale = append(stale, p)
		}
	}
	g.mu.Unlock()
	for _, p := range stale {
		g.log.Info("revision is now a chain member: its pod registers again to join",
			zap.String("namespace", rev.Namespace), zap.String("revision", rev.Name), zap.String("pod", p.pod),
			zap.String("chain", m.Chain), zap.String("function", m.Function))
		p.conn.Close()
	}
}

// UnsetRevisionChain forgets a revision's chain membership (its pods that
// register later are plain revisions).
func (g *Gateway) UnsetRevisionChain(rev types.NamespacedName) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.revChains, rev)
}

// RevisionChain returns the chain membership SetRevisionChain recorded.
func (g *Gateway) RevisionChain(rev types.NamespacedName) (ChainMember, bool) {
	return g.revisionChain(rev)
}

func (g *Gateway) revisionChain(rev types.NamespacedName) (ChainMember, bool) {
	g.mu.RLock()
	defer g.mu.RUnlock()
	m, ok := g.revChains[rev]
	return m, ok
}

// pod is a registered EPROXY sidecar.
type pod struct {
	id   uint32
	key  types.NamespacedName // namespace / revision
	pod  string
	conn *control.Conn
	// steered is the pod's network namespace cookie once it asked for
	// steering (0: not steered); read by the metrics collector.
	steered atomic.Uint64
}

// servePod registers an EPROXY sidecar (a pod of a Knative revision): it
// gets an instance ID and a metrics entry, then asks for its connections to
// be spliced or counted, and for its counters (which the agent reads for it:
// the sidecar may not call bpf(2)). When its control connection ends, the
// pod is gone.
func (g *Gateway) servePod(conn *control.Conn, m control.Message) {
	defer conn.Close()
	if m.Namespace == "" || m.Revision == "" || m.PodName == "" {
		conn.Send(control.Message{Type: control.TypeError, Error: "pod registration needs namespace, revision and podName"})
		return
	}
	if err := g.verify(conn, Member{Namespace: m.Namespace, Revision: m.Revision, Pod: m.PodName}); err != nil {
		conn.Send(control.Message{Type: control.TypeError, Error: err.Error()})
		return
	}
	g.mu.Lock()
	err := g.ensureDatapath()
	g.mu.Unlock()
	if err != nil {
		conn.Send(control.Message{Type: control.TypeError, Error: err.Error()})
		return
	}
	p := &pod{key: types.NamespacedName{Namespace: m.Namespace, Name: m.Revision}, pod: m.PodName, conn: conn}
	resumed := g.resumePod(p, m.Previous, m.Namespace, m.Revision, m.PodName)
	if !resumed {
		p.id = g.nextInst.Add(1)
		g.recordPodOwner(p.id, m.Namespace, m.Revision, m.PodName)
	}
	defer func() {
		g.mu.Lock()
		delete(g.revPods[p.key], p)
		if len(g.revPods[p.key]) == 0 {
			delete(g.revPods, p.key)
		}
		g.mu.Unlock()
	}()
	if err := g.dp.AddInstanceMetrics(control.ProxiedInstance(p.id)); err != nil {
		conn.Send(control.Message{Type: control.TypeError, Error: err.Error()})
		return
	}
	if err := g.dp.AddInstanceMetrics(p.id); err != nil {
		conn.Send(control.Message{Type: control.TypeError, Error: err.Error()})
		return
	}
	defer func() {
		// Connections steered so far keep going (the user container may
		// outlive this EPROXY: it restarts, or the agent does); new ones
		// go to EPROXY's port again. The namespace's links and policy go
		// with the namespace (pruned by a later Steer).
		if ns := p.steered.Load(); ns != 0 {
			if err := g.dp.SetSteerEnabled(ns, false); err != nil {
				g.log.Debug("stop steering for a pod that left", zap.Error(err))
			}
		}
		if g.closing.Load() {
			// The agent stops, not the pod: its entries stay (pinned)
			// and keep counting its spliced connections, for the next
			// agent to hand back (resumePod).
			return
		}
		g.dp.RemoveInstance(p.id)
		g.dp.RemoveInstance(control.ProxiedInstance(p.id))
		g.forgetPodOwner(p.id)
		// Splices of a sidecar that died without unsplicing.
		g.dp.PruneSplices()
	}()
	welcome := control.Message{Type: control.TypeWelcome, Instance: p.id, Resumed: resumed}
	// The membership sent and the pod's entry in revPods are taken under one
	// lock, so a SetRevisionChain either precedes this welcome (which then
	// carries it) or finds the pod and asks it to register again.
	g.mu.Lock()
	cm := g.revChains[p.key]
	welcome.Chain, welcome.Function = cm.Chain, cm.Function
	g.addRevPodLocked(p, cm)
	g.mu.Unlock()
	if err := conn.Send(welcome); err != nil {
		return
	}
	log := g.log.With(zap.String("namespace", m.Namespace), zap.String("revision", m.Revision), zap.String("pod", m.PodName), zap.Uint32("instance", p.id))
	log.Info("pod registered")
	if g.reporter != nil && g.pushes(p.key) {
		g.reporter.Track(p.id, p.key, eproxy.NewWindow(p.pod, time.Now(), func() (bpf.InstanceMetrics, error) { return g.dp.Metrics(p.id) }, nil))
		defer g.reporter.Untrack(p.id)
	}
	for {
		req, fds, err := conn.Recv()
		if err != nil {
			closeFDs(fds)
			break
		}
		if req.Type == control.TypeCounters {
			closeFDs(fds)
			id := p.id
			if req.Side == "proxied" {
				id = control.ProxiedInstance(p.id)
			}
			c, err := g.dp.Metrics(id)
			if err != nil {
				conn.Send(control.Message{Type: control.TypeError, Error: err.Error()})
				continue
			}
			conn.Send(control.Message{Type: control.TypeCounters, Counters: &control.Counters{RequestsIn: c.RequestsIn,
				ResponsesOut: c.ResponsesOut, Inflight: c.Inflight, Sent: c.Sent, LastNs: c.LastNs, BusyNs: c.BusyNs}})
			continue
		}
		if req.Type == control.TypeCount && len(fds) == 1 && (req.Side == "client" || req.Side == "upstream" || req.Side == "arrival") {
			if req.Side == "arrival" {
				err = g.dp.AddArrivalCounted(p.id, fds[0])
			} else {
				err = g.dp.AddCounted(p.id, fds[0], req.Side == "upstream")
			}
			closeFDs(fds)
			ack(conn, err)
			continue
		}
		if req.Type == control.TypeSteer || req.Type == control.TypeSteerSource || req.Type == control.TypeSteerEnable {
			err := g.steer(p, req, fds)
			closeFDs(fds)
			ack(conn, err)
			continue
		}
		if (req.Type != control.TypeSplice && req.Type != control.TypeUnsplice) || len(fds) != 2 {
			closeFDs(fds)
			conn.Send(control.Message{Type: control.TypeError, Error: fmt.Sprintf("want %q or %q with 2 sockets, got %q with %d fds",
				control.TypeSplice, control.TypeUnsplice, req.Type, len(fds))})
			continue
		}
		if req.Type == control.TypeSplice {
			id := p.id
			if req.Side == "proxied" {
				id = control.ProxiedInstance(p.id)
			}
			err = g.dp.AddSplice(id, fds[0], fds[1])
		} else {
			err = g.dp.RemoveSplice(fds[0], fds[1])
		}
		closeFDs(fds)
		ack(conn, err)
	}
	log.Info("pod left")
}

// resumePod gives a pod registering again after an agent restart its
// previous instance back (its metrics entries, pinned, kept counting its
// spliced connections while no agent was there), if that entry is still
// in the maps, was recorded for this pod (podowners.go) and no registered
// pod has it. The pod is then in revPods
// under that ID (so a second claim fails); the caller adds it again under
// the same lock later, which is harmless.
func (g *Gateway) resumePod(p *pod, previous uint32, namespace, revision, podName string) bool {
	if previous == 0 || previous&(1<<31) != 0 || previous > g.nextInst.Load() {
		return false
	}
	if _, err := g.dp.Metrics(previous); err != nil {
		return false
	}
	if !g.ownsPod(previous, namespace, revision, podName) {
		g.log.Warn("a pod named a previous instance that was not its own: not handed back",
			zap.String("namespace", namespace), zap.String("revision", revision), zap.String("pod", podName), zap.Uint32("previous", previous))
		return false
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	for _, pods := range g.revPods {
		for q := range pods {
			if q.id == previous {
				return false
			}
		}
	}
	p.id = previous
	g.addRevPodLocked(p, g.revChains[p.key])
	return true
}

func (g *Gateway) addRevPodLocked(p *pod, cm ChainMember) {
	if g.revPods == nil {
		g.revPods = map[types.NamespacedName]map[*pod]ChainMember{}
	}
	if g.revPods[p.key] == nil {
		g.revPods[p.key] = map[*pod]ChainMember{}
	}
	g.revPods[p.key][p] = cm
}

// EnableStatPush makes the gateway push the Stats of the pods of the
// revisions given to PushStats to the autoscaler's stat server
// (ws://autoscaler.knative-serving:8080), as the activator does.
func (g *Gateway) EnableStatPush(r *eproxy.Reporter) { g.reporter = r }

// PushStats marks revision rev's pods for pushing. Only mark revisions the
// autoscaler does not scrape (target-burst-capacity "-1"): it adds pushed
// and scraped Stats of a pod.
func (g *Gateway) PushStats(rev types.NamespacedName) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.pushRevs == nil {
		g.pushRevs = map[types.NamespacedName]bool{}
	}
	g.pushRevs[rev] = true
}

func (g *Gateway) pushes(rev types.NamespacedName) bool {
	g.mu.RLock()
	defer g.mu.RUnlock()
	return g.pushRevs[rev]
}

// ValidStatURL checks an autoscaler stat server URL.
func ValidStatURL(s string) error {
	u, err := url.Parse(s)
	if err != nil {
		return err
	}
	if u.Scheme != "ws" && u.Scheme != "wss" {
		return fmt.Errorf("stat server URL %q: want ws:// or wss://", s)
	}
	return nil
}

// steer serves an EPROXY's steering requests (package bpf, "Steer").
func (g *Gateway) steer(p *pod, req control.Message, fds []int) error {
	switch req.Type {
	case control.TypeSteer:
		if len(fds) != 1 || req.Port <= 0 || req.Port > 65535 {
			return fmt.Errorf("steer: want the traffic listener (1 fd) and the user container's port, got %d fds and port %d", len(fds), req.Port)
		}
		cookie, err := g.dp.Steer(p.id, fds[0], uint16(req.Port))
		if err != nil {
			return err
		}
		p.steered.Store(cookie)
		return nil
	case control.TypeSteerSource:
		ns := p.steered.Load()
		if ns == 0 {
			return fmt.Errorf("steer-source: this pod is not steered (send %q first)", control.TypeSteer)
		}
		addr, err := netip.ParseAddr(req.Address)
		if err != nil {
			return fmt.Errorf("steer-source: %w", err)
		}
		if req.Side != "add" && req.Side != "remove" {
			return fmt.Errorf("steer-source: side %q, want add or remove", req.Side)
		}
		return g.dp.SteerSource(ns, addr, req.Side == "add")
	default: // TypeSteerEnable
		ns := p.steered.Load()
		if ns == 0 {
			return fmt.Errorf("steer-enable: this pod is not steered (send %q first)", control.TypeSteer)
		}
		if req.Side != "on" && req.Side != "off" {
			return fmt.Errorf("steer-enable: side %q, want on or off", req.Side)
		}
		return g.dp.SetSteerEnabled(ns, req.Side == "on")
	}
}

// collectSteered reports each steered pod's count of steered connections.
func (g *Gateway) collectSteered(ch chan<- prometheus.Metric) {
	if g.dp == nil {
		return
	}
	g.mu.RLock()
	var pods []*pod
	for _, ps := range g.revPods {
		for p := range ps {
			pods = append(pods, p)
		}
	}
	g.mu.RUnlock()
	for _, p := range pods {
		ns := p.steered.Load()
		if ns == 0 {
			continue
		}
		if info, err := g.dp.SteerStats(ns); err == nil {
			ch <- prometheus.MustNewConstMetric(descSteered, prometheus.CounterValue, float64(info.Connections), p.key.Namespace, p.key.Name, p.pod)
		}
	}
}

// ack answers a pod's request: done, or why not.
func ack(conn *control.Conn, err error) {
	if err != nil {
		conn.Send(control.Message{Type: control.TypeError, Error: err.Error()})
		return
	}
	conn.Send(control.Message{Type: control.TypeSpliced})
}
