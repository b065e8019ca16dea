package standalone

// Reload: `spright run` re-reads chain.yaml (SIGHUP, or PUT /chain on the
// admin listener) and applies the difference while the chain serves
// (issue 13, part 1, standalone side). The gateway does the routing half
// (Gateway.UpdateChain: two route sets and an epoch stamped in each slot,
// so a request in flight finishes on the routes it started with); this
// file does the process half: instances of added functions start before
// any route names them, and instances leave only once nothing can reach
// them and they hold nothing.

import (
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"reflect"
	"slices"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"sigs.k8s.io/yaml"

	"github.com/spright-dev/spright/pkg/routing"
	"github.com/spright-dev/spright/pkg/shm"
)

var (
	// ErrReloadRefused: the new file is invalid, or changes something the
	// running chain cannot change in place (see fixedChanges). Nothing was
	// touched; the chain serves on as before.
	ErrReloadRefused = errors.New("reload refused")
	// ErrReloadFailed: applying the new file failed (e.g. a new function
	// process exited or did not register) and what had been started was
	// taken back; the chain serves on as before.
	ErrReloadFailed = errors.New("reload failed")
)

// drainQuiet is how long an instance taken out of routing must hold no
// slot before its process is stopped. A sender that picked the instance
// just before it left the route table hands it the slot a moment later
// (Pick, then Handoff, then send); a single look at the pool could miss
// that and stop the process with a request on its way to it (a 502).
const drainQuiet = 100 * time.Millisecond

// Config is the chain file in force: the one Start was given, or the last
// one a reload applied.
func (r *Runner) Config() *ChainFile { return r.cur.Load() }

// ReloadFile reads path and applies it as Reload does; a file that does
// not parse is a refused reload (counted, and logged like the others).
func (r *Runner) ReloadFile(path string) error {
	cf, err := Load(path)
	if err != nil {
		err = fmt.Errorf("%w: %v", ErrReloadRefused, err)
		r.refused("file "+path, err)
		return err
	}
	_, err = r.reload(cf, "file "+path)
	return err
}

// Reload applies newFile to the running chain, or refuses it and leaves
// the chain as it was. Refused (ErrReloadRefused), because the runner
// cannot change them while it serves: the chain's name and id, mode,
// listen address, pool geometry (slots, slot size, huge pages), protocol
// adapters and their listeners (protocol, mqtt, coap, cloudevents: switch
// adapters on /adapters instead), redirect, gatewayNetns and clientNetns,
// and a split chain's nodes and peerKeyFile (the links to the other nodes
// are made at start). Applied:
//   - routes, a function's routes and concurrency, the timeout: the
//     gateway's route table only (UpdateChain); requests in flight finish
//     on their routes, new ones take the new routes;
//   - a function added: its instances start and register first, while the
//     old routes are still in force, then the routes switch;
//   - a function removed: the routes switch, then once no request from
//     before the switch is in flight (Chain.WaitDrained, bounded by the
//     timeout + 1 s) its processes stop, for good (no restart);
//   - instances up: new ones start and register before the switch;
//     instances down: the highest indices leave as below;
//   - a function's command, behavior, serviceTime, workers or env changed:
//     its instances are replaced; all new processes start and register
//     first (old and new serve side by side for a moment), then the old
//     ones leave one by one;
//   - a function's node (split chains): this node runs only the functions
//     assigned to it or to every node, so a function moving here starts
//     its instances as if added, and one moving away leaves as if removed
//     while the other nodes' instances serve on (reload the target node
//     first, then the source: see the README).
//
// An instance leaves by being taken out of the route table, then waiting
// until it holds no slot (for drainQuiet, bounded by the timeout + 1 s),
// then SIGTERM (SIGKILL after 5 s). If a new process cannot start or
// register (ReadyTimeout), what the reload started is taken back and the
// error wraps ErrReloadFailed.
func (r *Runner) Reload(newFile *ChainFile) error {
	_, err := r.reload(newFile, "Reload")
	return err
}

// fnPlan is what a reload does to one function.
type fnPlan struct {
	name     string
	old, new *FunctionFile // nil: absent on that side
	replace  bool          // the processes' spec changed: new processes replace the old ones
}

// reload is Reload; it returns the changes it applied, in words.
func (r *Runner) reload(nw *ChainFile, source string) (changes []string, err error) {
	r.reloadMu.Lock()
	defer r.reloadMu.Unlock()
	start := time.Now()
	if r.isStopping() {
		return nil, errStopping
	}
	old := r.Config()
	if nw == nil {
		err := fmt.Errorf("%w: no chain file", ErrReloadRefused)
		r.refused(source, err)
		return nil, err
	}
	// A file from Parse/Load is validated already; one built by hand may
	// not be (defaults fills in instances, behaviour, mode, id).
	if err := nw.defaults(); err != nil {
		err = fmt.Errorf("%w: %v", ErrReloadRefused, err)
		r.refused(source, err)
		return nil, err
	}
	newCC, err := nw.GatewayConfig()
	if err != nil {
		err = fmt.Errorf("%w: %v", ErrReloadRefused, err)
		r.refused(source, err)
		return nil, err
	}
	oldCC, err := old.GatewayConfig()
	if err != nil {
		return nil, fmt.Errorf("the chain's current config: %w", err) // validated when it was applied
	}
	if bad := fixedChanges(old, nw); len(bad) > 0 {
		err := fmt.Errorf("%w: chain %q: %s cannot change while the chain serves (restart spright run for that)",
			ErrReloadRefused, old.Name, strings.Join(bad, "; "))
		r.refused(source, err)
		return nil, err
	}
	// Processes are this node's only: a function another node runs has no
	// instance here (forNode), and moving one between nodes is an instance
	// count change on each of them.
	plans, changes := diffFunctions(old.forNode(r.opts.Node), nw.forNode(r.opts.Node))
	changes = append(diffRouting(old, nw), changes...)
	for _, p := range plans {
		if p.replace && p.old != nil && *p.old.Instances+*p.new.Instances > routing.MaxInstances {
			err := fmt.Errorf("%w: chain %q: replacing function %q runs old and new instances side by side (%d + %d), at most %d",
				ErrReloadRefused, old.Name, p.name, *p.old.Instances, *p.new.Instances, routing.MaxInstances)
			r.refused(source, err)
			return nil, err
		}
	}
	if len(changes) == 0 {
		r.reloadsApplied.Add(1)
		r.log.Info("chain reloaded: nothing changed", zap.String("chain", old.Name), zap.String("source", source))
		return nil, nil
	}
	ctx, cancel := r.quitContext()
	defer cancel()

	// Phase 1: new processes start and register while the old routes are
	// in force, so that no request is routed to a function with no
	// instance yet. The gateway must know an added function for its
	// instances to register: an interim update adds the functions, with
	// the old routes.
	var addedFns []routing.FunctionSpec
	for _, p := range plans {
		if p.old == nil {
			addedFns = append(addedFns, routing.FunctionSpec{Name: p.name, Concurrency: p.new.Concurrency})
		}
	}
	if len(addedFns) > 0 {
		interim := oldCC
		interim.Routing.Functions = append(slices.Clone(oldCC.Routing.Functions), addedFns...)
		if err := r.Gateway.UpdateChain(interim); err != nil {
			err = fmt.Errorf("%w: adding functions: %v", ErrReloadRefused, err)
			r.refused(source, err)
			return nil, err
		}
	}
	var started []*slot
	rollback := func(cause error) ([]string, error) {
		if r.isStopping() {
			// Stop, waiting for this reload, stops every process and
			// removes every namespace anyway, at once.
			return nil, errStopping
		}
		// Instances of kept functions may already serve requests: they
		// leave as any other does (drained first).
		for _, s := range started {
			r.leave(context.Background(), s, chainTimeout(oldCC.Timeout))
		}
		if len(addedFns) > 0 {
			if err := r.Gateway.UpdateChain(oldCC); err != nil {
				r.log.Error("rolling back a failed reload: the gateway refused the old config", zap.Error(err))
			}
		}
		err := fmt.Errorf("%w: %v; the chain serves as before", ErrReloadFailed, cause)
		r.refused(source, err)
		return nil, err
	}
	for _, p := range plans {
		if p.new == nil {
			continue
		}
		from := 0 // new processes get indices from..n-1
		if p.old != nil && !p.replace {
			from = *p.old.Instances
		}
		for i := from; i < *p.new.Instances; i++ {
			s, err := r.startSlot(*p.new, i)
			if err != nil {
				return rollback(err)
			}
			started = append(started, s)
		}
	}
	if err := r.waitRegistered(ctx, started); err != nil {
		return rollback(err)
	}
	for _, s := range started {
		r.supervise1(s)
	}

	// Phase 2: the new routes. From here on the new file is in force;
	// what follows takes processes away.
	if err := r.Gateway.UpdateChain(newCC); err != nil {
		return rollback(err)
	}
	r.cur.Store(nw)
	switched := time.Since(start)

	var leaving []*slot // old processes to stop, in this order
	var removed bool
	r.slotsMu.RLock()
	for _, p := range plans {
		var olds []*slot
		for _, s := range r.slots {
			if s.fn.Name == p.name && !slices.Contains(started, s) {
				olds = append(olds, s)
			}
		}
		slices.SortFunc(olds, func(a, b *slot) int { return a.index - b.index })
		switch {
		case p.new == nil:
			removed = true
			leaving = append(leaving, olds...)
		case p.replace:
			leaving = append(leaving, olds...)
		case len(olds) > *p.new.Instances:
			leaving = append(leaving, olds[*p.new.Instances:]...)
		}
	}
	r.slotsMu.RUnlock()
	timeout := max(chainTimeout(oldCC.Timeout), chainTimeout(newCC.Timeout))
	if removed {
		// No request on the new routes reaches a removed function; wait
		// for those on the old ones before its processes stop.
		dctx, dcancel := context.WithTimeout(ctx, timeout+time.Second)
		err := r.Chain.WaitDrained(dctx)
		dcancel()
		if err != nil {
			r.log.Warn("removed functions are stopped with requests from before the reload still in flight", zap.Error(err))
		}
	}
	for _, s := range leaving {
		if ctx.Err() != nil {
			break // Stop stops them
		}
		r.leave(ctx, s, timeout)
	}
	r.sortSlots(nw)
	r.reloadsApplied.Add(1)
	took := time.Since(start)
	r.lastReload.Store(int64(took))
	r.log.Info("chain reloaded", zap.String("chain", nw.Name), zap.String("source", source), zap.Strings("changes", changes),
		zap.Int("processes_started", len(started)), zap.Int("processes_stopped", len(leaving)),
		zap.Duration("routes_switched_after", switched), zap.Duration("took", took))
	return changes, nil
}

// chainTimeout is a chain's request timeout as the gateway applies it (0:
// its default, 30 s).
func chainTimeout(d time.Duration) time.Duration {
	if d <= 0 {
		return 30 * time.Second
	}
	return d
}

// refused counts and logs a reload that did not happen.
func (r *Runner) refused(source string, err error) {
	r.reloadsRefused.Add(1)
	r.log.Warn("reload refused; the chain serves on as before", zap.String("chain", r.File.Name), zap.String("source", source), zap.Error(err))
}

// quitContext is a context that ends when Stop begins.
func (r *Runner) quitContext() (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		select {
		case <-r.quit:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx, cancel
}

// fixedChanges lists what differs between old and nw that the running
// chain cannot change in place, each with its old and new values.
func fixedChanges(old, nw *ChainFile) []string {
	var out []string
	add := func(what string, a, b any) {
		if !reflect.DeepEqual(a, b) {
			out = append(out, fmt.Sprintf("%s (%v → %v)", what, show(a), show(b)))
		}
	}
	add("name", old.Name, nw.Name)
	add("id", old.ID, nw.ID)
	add("mode", old.Mode, nw.Mode)
	add("listen", old.Listen, nw.Listen)
	add("pool geometry: slots", poolSlots(old), poolSlots(nw))
	add("pool geometry: slotSize", poolSlotSize(old), poolSlotSize(nw))
	add("pool hugePages", old.Pool.HugePages == nil || *old.Pool.HugePages, nw.Pool.HugePages == nil || *nw.Pool.HugePages)
	add("protocol", strings.Join(old.Protocols(), ","), strings.Join(nw.Protocols(), ","))
	add("mqtt", old.MQTT, nw.MQTT)
	add("coap", old.CoAP, nw.CoAP)
	add("cloudevents", old.CloudEvents, nw.CloudEvents)
	add("redirect", old.Redirect, nw.Redirect)
	add("gatewayNetns", old.GatewayNetns, nw.GatewayNetns)
	add("clientNetns", old.ClientNetns, nw.ClientNetns)
	// The nodes and their key are refused rather than applied: the
	// links to the other nodes are made when the runner starts, and a
	// node renamed or readdressed on one node only would split the
	// chain's nodes into groups that no longer agree. Moving functions
	// between the listed nodes (a function's node) is applied.
	add("nodes", old.Nodes, nw.Nodes)
	add("peerKeyFile", old.PeerKeyFile, nw.PeerKeyFile)
	return out
}

func poolSlots(cf *ChainFile) uint32 {
	if cf.Pool.Slots == 0 {
		return shm.DefaultConfig.Slots
	}
	return cf.Pool.Slots
}

func poolSlotSize(cf *ChainFile) uint32 {
	if cf.Pool.SlotSize == 0 {
		return shm.DefaultConfig.SlotSize
	}
	return cf.Pool.SlotSize
}

// show prints a value for a log line: pointers to structs as JSON.
func show(v any) string {
	switch rv := reflect.ValueOf(v); {
	case !rv.IsValid():
		return "none"
	case rv.Kind() == reflect.Pointer && rv.IsNil():
		return "none"
	case rv.Kind() == reflect.Pointer || rv.Kind() == reflect.Map || rv.Kind() == reflect.Slice:
		b, _ := json.Marshal(v)
		return string(b)
	case rv.Kind() == reflect.String && rv.String() == "":
		return `""`
	}
	return fmt.Sprint(v)
}

// diffRouting describes what changes in the gateway's routes and timeout.
func diffRouting(old, nw *ChainFile) []string {
	var out []string
	if !reflect.DeepEqual(old.Routes, nw.Routes) {
		out = append(out, fmt.Sprintf("gateway routes %s → %s", show(old.Routes), show(nw.Routes)))
	}
	if old.Timeout != nw.Timeout {
		out = append(out, fmt.Sprintf("timeout %v → %v", time.Duration(old.Timeout), time.Duration(nw.Timeout)))
	}
	return out
}

// processSpec is what a function's processes are started with: a change
// in it replaces them.
type processSpec struct {
	Behavior    string            `json:"behavior,omitempty"`
	ServiceTime Duration          `json:"serviceTime,omitempty"`
	Workers     int               `json:"workers,omitempty"`
	Command     []string          `json:"command,omitempty"`
	Env         map[string]string `json:"env,omitempty"`
}

func specOf(f *FunctionFile) processSpec {
	s := processSpec{Behavior: f.Behavior, ServiceTime: f.ServiceTime, Workers: f.Workers, Command: f.Command, Env: f.Env}
	if len(s.Command) > 0 {
		s.Behavior, s.ServiceTime = "", 0 // ignored with a command
	}
	if len(s.Command) == 0 {
		s.Command = nil
	}
	if len(s.Env) == 0 {
		s.Env = nil
	}
	return s
}

// masked is s for a log line or an HTTP reply: env values may be secrets,
// and a changed value shows as a changed hash.
func (s processSpec) masked() *processSpec {
	if len(s.Env) > 0 {
		m := make(map[string]string, len(s.Env))
		for k, v := range s.Env {
			m[k] = fmt.Sprintf("sha256:%x", sha256.Sum256([]byte(v)))[:15]
		}
		s.Env = m
	}
	return &s
}

// diffFunctions plans each function of either file, in nw's order (then
// the removed ones), and says what changes.
func diffFunctions(old, nw *ChainFile) (plans []fnPlan, changes []string) {
	oldBy := map[string]*FunctionFile{}
	for i := range old.Functions {
		oldBy[old.Functions[i].Name] = &old.Functions[i]
	}
	seen := map[string]bool{}
	for i := range nw.Functions {
		n := &nw.Functions[i]
		seen[n.Name] = true
		o := oldBy[n.Name]
		p := fnPlan{name: n.Name, old: o, new: n}
		if o == nil {
			changes = append(changes, fmt.Sprintf("function %s added (%d instance(s))", n.Name, *n.Instances))
			plans = append(plans, p)
			continue
		}
		if a, b := specOf(o), specOf(n); !reflect.DeepEqual(a, b) {
			p.replace = true
			changes = append(changes, fmt.Sprintf("function %s replaced: %s → %s (%d → %d instance(s))", n.Name, show(a.masked()), show(b.masked()), *o.Instances, *n.Instances))
		} else if *o.Instances != *n.Instances {
			changes = append(changes, fmt.Sprintf("function %s instances %d → %d", n.Name, *o.Instances, *n.Instances))
		}
		if o.Node != n.Node {
			changes = append(changes, fmt.Sprintf("function %s node %s → %s", n.Name, nodeOrEvery(o.Node), nodeOrEvery(n.Node)))
		}
		if o.Concurrency != n.Concurrency {
			changes = append(changes, fmt.Sprintf("function %s concurrency %d → %d", n.Name, o.Concurrency, n.Concurrency))
		}
		if !reflect.DeepEqual(o.Routes, n.Routes) {
			changes = append(changes, fmt.Sprintf("function %s routes %s → %s", n.Name, show(o.Routes), show(n.Routes)))
		}
		plans = append(plans, p)
	}
	for i := range old.Functions {
		if o := &old.Functions[i]; !seen[o.Name] {
			plans = append(plans, fnPlan{name: o.Name, old: o})
			changes = append(changes, fmt.Sprintf("function %s removed (%d instance(s) stop)", o.Name, *o.Instances))
		}
	}
	return plans, changes
}

// startSlot starts a new instance of f (index idx) in a namespace of its
// own, unsupervised until it has registered (waitRegistered, supervise1):
// a reload whose process cannot even join is taken back, as Start fails.
func (r *Runner) startSlot(f FunctionFile, idx int) (*slot, error) {
	var pn *podNet
	if !r.opts.NoNetns {
		var err error
		if pn, err = r.newPod(fmt.Sprintf("%s/%d", f.Name, idx), r.opts.GatewayNetns || r.opts.ClientNetns > 0); err != nil {
			return nil, err
		}
	}
	r.stopMu.Lock()
	if r.stopped {
		r.stopMu.Unlock()
		return nil, errStopping // Stop deletes pn with the others
	}
	p, err := r.spawn(f, idx, pn)
	r.stopMu.Unlock()
	if err != nil {
		if pn != nil {
			r.removePod(pn)
		}
		return nil, err
	}
	s := newSlot(f, idx, pn, p)
	r.slotsMu.Lock()
	r.slots = append(r.slots, s)
	r.slotsMu.Unlock()
	return s, nil
}

// supervise1 starts s's supervisor, unless Stop has begun (superWG must
// not grow once Stop waits on it).
func (r *Runner) supervise1(s *slot) {
	r.stopMu.Lock()
	defer r.stopMu.Unlock()
	if r.stopped {
		return
	}
	r.superWG.Add(1)
	go r.supervise(s)
}

// waitRegistered waits until each slot's process has joined the gateway.
func (r *Runner) waitRegistered(ctx context.Context, slots []*slot) error {
	deadline := time.Now().Add(r.opts.ReadyTimeout)
	for _, s := range slots {
		p := s.current()
		for {
			if _, _, ok := r.Gateway.InstanceOf(r.Chain, int32(p.Cmd.Process.Pid)); ok {
				break
			}
			select {
			case <-p.done:
				code, reason := exitStatus(p)
				return fmt.Errorf("function %s/%d exited before registering (%s, exit status %d)", s.fn.Name, s.index, reason, code)
			case <-ctx.Done():
				return errStopping
			case <-time.After(10 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("function %s/%d did not register within %v", s.fn.Name, s.index, r.opts.ReadyTimeout)
			}
		}
	}
	return nil
}

// leave stops s for good: no restart; out of the route table; once it
// holds no slot (for drainQuiet, at most timeout + 1 s) SIGTERM, SIGKILL
// after 5 s; then its namespace goes.
func (r *Runner) leave(ctx context.Context, s *slot, timeout time.Duration) {
	r.retire(s)
	r.slotsMu.Lock()
	if i := slices.Index(r.slots, s); i >= 0 {
		r.slots = slices.Delete(r.slots, i, i+1)
	}
	r.retiring[s] = true // Stop still sees it
	r.slotsMu.Unlock()
	p := s.current()
	if id, fn, ok := r.Gateway.InstanceOf(r.Chain, int32(p.Cmd.Process.Pid)); ok {
		r.Chain.Routes().RemoveInstance(fn, id)
		if held := r.drainInstance(ctx, id, timeout+time.Second); held > 0 {
			r.log.Warn("stopping an instance that still holds requests (they fail with 502)", zap.String("function", s.fn.Name),
				zap.Int("index", s.index), zap.Uint32("instance", id), zap.Int("slots", held))
		}
	}
	p.signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		p.signal(syscall.SIGKILL)
		<-p.done
	}
	if s.net != nil {
		r.removePod(s.net)
	}
	r.slotsMu.Lock()
	delete(r.retiring, s)
	r.slotsMu.Unlock()
	r.log.Info("function instance stopped by a reload", zap.String("chain", r.File.Name), zap.String("function", s.fn.Name),
		zap.Int("index", s.index), zap.Int("pid", p.Cmd.Process.Pid))
}

// drainInstance waits until instance id has held no slot for drainQuiet,
// or bound passes, or ctx ends; it returns how many slots it still holds.
func (r *Runner) drainInstance(ctx context.Context, id uint32, bound time.Duration) int {
	deadline := time.Now().Add(bound)
	var idleSince time.Time
	for {
		held := 0
		r.Chain.Pool().InUse(func(_, owner uint32) {
			if owner == id {
				held++
			}
		})
		now := time.Now()
		switch {
		case held > 0:
			idleSince = time.Time{}
		case idleSince.IsZero():
			idleSince = now
		case now.Sub(idleSince) >= drainQuiet:
			return 0
		}
		if now.After(deadline) || ctx.Err() != nil {
			return held
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// removePod forgets and deletes a retired slot's namespace.
func (r *Runner) removePod(pn *podNet) {
	r.slotsMu.Lock()
	if i := slices.Index(r.nets, pn); i >= 0 {
		r.nets = slices.Delete(r.nets, i, i+1)
	}
	r.slotsMu.Unlock()
	if r.fwd != nil {
		if err := r.fwd.Remove(pn.Host); err != nil {
			r.log.Warn("detaching the forwarder from a stopped instance's veth", zap.String("veth", pn.Host), zap.Error(err))
		}
	}
	if err := pn.delete(); err != nil {
		r.log.Warn("removing a stopped instance's network namespace", zap.String("netns", pn.NS), zap.Error(err))
	}
}

// sortSlots puts the slots in cf's function order, then by index (Procs'
// order).
func (r *Runner) sortSlots(cf *ChainFile) {
	pos := map[string]int{}
	for i, f := range cf.Functions {
		pos[f.Name] = i
	}
	r.slotsMu.Lock()
	slices.SortStableFunc(r.slots, func(a, b *slot) int {
		if d := pos[a.fn.Name] - pos[b.fn.Name]; d != 0 {
			return d
		}
		return a.index - b.index
	})
	r.slotsMu.Unlock()
}

// chainHandler serves /chain on the admin listener: GET the chain file in
// force (YAML), PUT a new one (reload). A refused or failed reload answers
// 4xx with the reason; the chain serves on as before.
func (r *Runner) chainHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		switch req.Method {
		case http.MethodGet, http.MethodHead:
			b, err := yaml.Marshal(r.Config())
			if err != nil {
				http.Error(w, err.Error(), http.StatusInternalServerError)
				return
			}
			w.Header().Set("Content-Type", "application/yaml")
			w.Write(b)
		case http.MethodPut:
			b, err := io.ReadAll(http.MaxBytesReader(w, req.Body, 1<<20))
			if err != nil {
				http.Error(w, "reading the chain file: "+err.Error(), http.StatusBadRequest)
				return
			}
			cf, err := Parse(b)
			if err != nil {
				err = fmt.Errorf("%w: %v", ErrReloadRefused, err)
				r.refused("PUT /chain", err)
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			if err := commandsUnchanged(r.Config(), cf); err != nil {
				r.refused("PUT /chain", err)
				http.Error(w, err.Error(), http.StatusForbidden)
				return
			}
			start := time.Now()
			changes, err := r.reload(cf, "PUT /chain")
			switch {
			case errors.Is(err, ErrReloadRefused):
				http.Error(w, err.Error(), http.StatusConflict)
			case errors.Is(err, ErrReloadFailed):
				http.Error(w, err.Error(), http.StatusUnprocessableEntity)
			case errors.Is(err, errStopping):
				http.Error(w, "the chain is stopping", http.StatusServiceUnavailable)
			case err != nil:
				http.Error(w, err.Error(), http.StatusInternalServerError)
			case len(changes) == 0:
				fmt.Fprintf(w, "chain %q: nothing changed\n", cf.Name)
			default:
				fmt.Fprintf(w, "chain %q reloaded in %v:\n", cf.Name, time.Since(start).Round(time.Millisecond))
				for _, c := range changes {
					fmt.Fprintf(w, "- %s\n", c)
				}
			}
		default:
			w.Header().Set("Allow", "GET, HEAD, PUT")
			http.Error(w, "GET or PUT a chain.yaml", http.StatusMethodNotAllowed)
		}
	})
}

// commandsUnchanged refuses a file sent over HTTP that would start a
// command, or set an environment, that the chain in force does not
// already run: the admin listener has no authentication, and the runner
// starts function processes as root, so such a PUT would let anyone who
// reaches the listener run anything as root (a command, or LD_PRELOAD in
// env). Those changes go through the file and SIGHUP, which need the
// rights to write the file and signal the runner.
func commandsUnchanged(cur, nw *ChainFile) error {
	have := map[string]processSpec{}
	for i := range cur.Functions {
		have[cur.Functions[i].Name] = specOf(&cur.Functions[i])
	}
	for i := range nw.Functions {
		f := &nw.Functions[i]
		if len(f.Command) == 0 && len(f.Env) == 0 {
			continue
		}
		want, old := specOf(f), have[f.Name]
		if !reflect.DeepEqual(want.Command, old.Command) || !reflect.DeepEqual(want.Env, old.Env) {
			return fmt.Errorf("%w: function %q: a command or env that is not already in force can only be set through the chain file and SIGHUP, not over HTTP (the admin listener has no authentication and functions run as root)",
				ErrReloadRefused, f.Name)
		}
	}
	return nil
}

// reloads exports the reload counters with the other metrics.
type reloads Runner

var (
	descReloads = prometheus.NewDesc("spright_standalone_reloads_total",
		"chain.yaml reloads (SIGHUP, PUT /chain): applied, or refused (invalid, a change the running chain cannot make, or a failure that was taken back).",
		[]string{"chain", "result"}, nil)
	descReloadSeconds = prometheus.NewDesc("spright_standalone_last_reload_seconds",
		"How long the last applied reload took, from the request to the last old process stopped.",
		[]string{"chain"}, nil)
)

// Describe implements prometheus.Collector.
func (v *reloads) Describe(ch chan<- *prometheus.Desc) {
	ch <- descReloads
	ch <- descReloadSeconds
}

// Collect implements prometheus.Collector.
func (v *reloads) Collect(ch chan<- prometheus.Metric) {
	r := (*Runner)(v)
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(r.reloadsApplied.Load()), r.File.Name, "applied")
	ch <- prometheus.MustNewConstMetric(descReloads, prometheus.CounterValue, float64(r.reloadsRefused.Load()), r.File.Name, "refused")
	ch <- prometheus.MustNewConstMetric(descReloadSeconds, prometheus.GaugeValue, time.Duration(r.lastReload.Load()).Seconds(), r.File.Name)
}

// nodeOrEvery names a function's node for a change description.
func nodeOrEvery(node string) string {
	if node == "" {
		return "(every node)"
	}
	return node
}
