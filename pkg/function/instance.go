package function

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"github.com/cilium/ebpf"
	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/spright-dev/spright/bpf"
	"github.com/spright-dev/spright/pkg/control"
	"github.com/spright-dev/spright/pkg/descriptor"
	"github.com/spright-dev/spright/pkg/routing"
	"github.com/spright-dev/spright/pkg/shm"
	"github.com/spright-dev/spright/pkg/transport"
)

// Environment variables read by OptionsFromEnv.
const (
	EnvControl  = "SPRIGHT_CONTROL_SOCKET"
	EnvChain    = "SPRIGHT_CHAIN"
	EnvFunction = "SPRIGHT_FUNCTION"
)

// Options say which chain and function this process serves.
type Options struct {
	ControlSocket string // default control.DefaultSocket
	Chain         string
	Function      string
	// Workers is how many messages are handled concurrently (default
	// GOMAXPROCS). With 1, the goroutine that reads the descriptors
	// handles each one itself (run to completion): no hand-off to a worker
	// goroutine, which costs the Go scheduler a thread wake-up and sleep
	// per descriptor when the process is otherwise idle — more than a
	// handler of a few microseconds does. With more, a reader hands the
	// descriptors to that many worker goroutines.
	Workers int
	Logger  *zap.Logger
	// Stats, if set, is where instances count (shared across the
	// re-registrations Run makes); otherwise each instance has its own.
	Stats *Stats
	// LeaveQuiet and LeaveTimeout shape the end of Serve: when its context
	// ends the instance asks the gateway to route nothing more to it, then
	// serves on until no descriptor has come for LeaveQuiet (default
	// 200ms) with nothing in hand, at most LeaveTimeout (default 10s).
	// A request another function routed to it just before it left is
	// served, not failed.
	LeaveQuiet, LeaveTimeout time.Duration
}

// OptionsFromEnv fills Options from SPRIGHT_* variables.
func OptionsFromEnv() Options {
	return Options{ControlSocket: os.Getenv(EnvControl), Chain: os.Getenv(EnvChain), Function: os.Getenv(EnvFunction)}
}

// Stats are an instance's own counters.
type Stats struct {
	Handled   atomic.Uint64 // messages given to the handler
	Forwarded atomic.Uint64 // descriptors sent to another function
	Returned  atomic.Uint64 // descriptors sent back to the gateway
	Invalid   atomic.Uint64 // descriptors dropped by validation
	Failed    atomic.Uint64 // handler errors / delivery failures
}

// Instance is a registered function instance.
type Instance struct {
	ID    uint32
	Chain uint16
	Fn    uint8
	Pool  *shm.ChainPool
	Stats *Stats

	opts    Options
	log     *zap.Logger
	ctl     *control.Conn
	routes  *routing.RouteTable
	tr      transport.Transport
	metrics *ebpf.Map // EPROXY map, read-only: residual capacity
	// gone: the control connection ended (the gateway went away, or this
	// instance is stopping). Results are then not handed to the gateway:
	// the descriptor could not be sent, and a slot the gateway owns with
	// no descriptor coming would never be freed. The slot stays this
	// instance's, and the gateway reclaims it: at once if this instance
	// is leaving (unregister), or when this process registers again with
	// a restarted gateway (see gateway/restart.go).
	gone atomic.Bool
}

// Register connects to the gateway, maps the chain pool and joins the data
// path. The instance is routable when Register returns.
func Register(opts Options) (*Instance, error) { return register(opts, 0) }

// register registers; prev is the instance ID this process had with the
// previous gateway (0: none), whose slots the gateway may now reclaim.
func register(opts Options, prev uint32) (*Instance, error) {
	if opts.ControlSocket == "" {
		opts.ControlSocket = control.DefaultSocket
	}
	if opts.Chain == "" || opts.Function == "" {
		return nil, errors.New("function: chain and function name are required")
	}
	if opts.Workers <= 0 {
		opts.Workers = runtime.GOMAXPROCS(0)
	}
	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}
	ctl, err := control.Dial(opts.ControlSocket)
	if err != nil {
		return nil, err
	}
	if opts.Stats == nil {
		opts.Stats = new(Stats)
	}
	in := &Instance{opts: opts, ctl: ctl, log: opts.Logger, Stats: opts.Stats}
	if err := in.handshake(prev); err != nil {
		in.Close()
		return nil, fmt.Errorf("function %s/%s: register: %w", opts.Chain, opts.Function, err)
	}
	in.log = in.log.With(zap.String("chain", opts.Chain), zap.String("function", opts.Function), zap.Uint32("instance", in.ID))
	in.log.Info("joined the chain")
	return in, nil
}

func (in *Instance) handshake(prev uint32) error {
	if err := in.ctl.Send(control.Message{Type: control.TypeHello, Chain: in.opts.Chain, Function: in.opts.Function, Previous: prev}); err != nil {
		return err
	}
	w, fds, err := in.ctl.Expect(control.TypeWelcome)
	if err != nil {
		return err
	}
	want := 2
	if w.Mode == "poll" {
		want = 1
	}
	if len(fds) != want {
		closeFDs(fds)
		return fmt.Errorf("welcome carried %d fds, want %d", len(fds), want)
	}
	in.ID, in.Chain, in.Fn = w.Instance, w.ChainID, w.FunctionIndex
	if in.Pool, err = shm.Open(fds[0]); err != nil {
		closeFDs(fds[1:])
		return err
	}
	if in.Pool.Chain() != in.Chain {
		closeFDs(fds[1:])
		return fmt.Errorf("pool is for chain %d, welcome says %d", in.Pool.Chain(), in.Chain)
	}
	if in.routes, err = routing.Open(in.Pool.Region()); err != nil {
		closeFDs(fds[1:])
		return err
	}
	if w.Mode == "poll" {
		rs, err := transport.OpenRings(in.Pool.Region()[routing.RegionEnd:])
		if err != nil {
			return err
		}
		if in.tr, err = transport.NewRingTransport(rs, w.Ring); err != nil {
			return err
		}
	} else {
		if in.metrics, err = ebpf.NewMapFromFD(fds[1]); err != nil {
			// A process that may not call bpf(2) — a container under the
			// runtime's default seccomp profile, as Knative runs EPROXY and
			// its shim, or any non-root process where
			// kernel.unprivileged_bpf_disabled is set — still serves the
			// chain; it picks among next instances round-robin instead of
			// by residual capacity.
			unix.Close(fds[1])
			in.metrics = nil
			in.log.Warn("EPROXY metrics map not readable here (bpf(2) refused): next-hop choice is round-robin, not by residual capacity", zap.Error(err))
		}
		sock, err := transport.NewSocket()
		if err != nil {
			return err
		}
		in.tr = sock
		if err := sock.Control(func(fd int) error {
			return in.ctl.Send(control.Message{Type: control.TypeJoin}, fd)
		}); err != nil {
			return err
		}
	}
	if w.Mode == "poll" {
		if err := in.ctl.Send(control.Message{Type: control.TypeJoin}); err != nil {
			return err
		}
	}
	if _, _, err := in.ctl.Expect(control.TypeJoined); err != nil {
		return err
	}
	return nil
}

func closeFDs(fds []int) {
	for _, fd := range fds {
		unix.Close(fd)
	}
}

// Close leaves the chain: the gateway sees the control connection end.
func (in *Instance) Close() error {
	var errs []error
	if in.tr != nil {
		errs = append(errs, in.tr.Close())
	}
	if in.ctl != nil {
		errs = append(errs, in.ctl.Close())
	}
	if in.metrics != nil {
		errs = append(errs, in.metrics.Close())
	}
	if in.Pool != nil {
		errs = append(errs, in.Pool.Close())
	}
	return errors.Join(errs...)
}

// Serve handles descriptors until ctx ends or the transport fails.
func (in *Instance) Serve(ctx context.Context, h Handler) error {
	inline := in.opts.Workers == 1
	work := make(chan descriptor.Descriptor, in.opts.Workers)
	var (
		lastRecv atomic.Int64 // unix ns of the last descriptor received
		inHand   atomic.Int64 // descriptors received and not yet processed
	)
	var wg sync.WaitGroup
	for i := 0; i < in.opts.Workers && !inline; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for d := range work {
				in.process(h, d)
				inHand.Add(-1)
			}
		}()
	}
	stop := context.AfterFunc(ctx, func() { in.leave(&lastRecv, &inHand) })
	defer stop()
	// The gateway never writes to the control socket after Joined: a read
	// returns only when the gateway went away (or refused us).
	gatewayGone := make(chan struct{})
	go func() {
		in.ctl.Recv()
		in.gone.Store(true)
		close(gatewayGone)
		in.tr.Close()
	}()
	var err error
	for {
		var d descriptor.Descriptor
		d, err = in.tr.Recv()
		if err != nil {
			break
		}
		lastRecv.Store(time.Now().UnixNano())
		inHand.Add(1)
		if inline {
			in.process(h, d)
			inHand.Add(-1)
			continue
		}
		work <- d
	}
	close(work)
	wg.Wait()
	select {
	case <-gatewayGone:
		if ctx.Err() == nil {
			return ErrGatewayGone
		}
	default:
	}
	if ctx.Err() != nil || errors.Is(err, transport.ErrClosed) {
		return nil
	}
	return err
}

// leave takes the instance out of routing, waits until it has been quiet
// with nothing in hand (LeaveQuiet), at most LeaveTimeout, then closes its
// transport and control connection (the gateway then unregisters it).
func (in *Instance) leave(lastRecv, inHand *atomic.Int64) {
	quiet, limit := in.opts.LeaveQuiet, in.opts.LeaveTimeout
	if quiet <= 0 {
		quiet = 200 * time.Millisecond
	}
	if limit <= 0 {
		limit = 10 * time.Second
	}
	if !in.gone.Load() {
		if err := in.ctl.Send(control.Message{Type: control.TypeLeave, Instance: in.ID}); err == nil {
			start := time.Now()
			deadline := start.Add(limit)
			for time.Now().Before(deadline) {
				idle := time.Since(time.Unix(0, max(lastRecv.Load(), start.UnixNano())))
				if inHand.Load() == 0 && idle >= quiet {
					break
				}
				time.Sleep(10 * time.Millisecond)
			}
			in.log.Info("left the chain", zap.Duration("drained", time.Since(start).Round(time.Millisecond)))
		}
	}
	in.tr.Close()
	in.ctl.Close()
}

// ErrGatewayGone is returned by Serve when the gateway's control
// connection ended (the gateway restarted or stopped).
var ErrGatewayGone = errors.New("function: the gateway closed the control connection")

// process runs the handler on one descriptor and sends the result on.
func (in *Instance) process(h Handler, d descriptor.Descriptor) {
	if err := d.Validate(in.Pool.Bounds()); err != nil {
		in.Stats.Invalid.Add(1)
		in.log.Warn("dropping invalid descriptor", zap.Stringer("desc", d), zap.Error(err))
		return
	}
	if reason, rejected := bpf.Rejected(d.Flags); rejected {
		in.rejected(d, reason)
		return
	}
	if owner := in.Pool.Owner(d.Slot); owner != in.ID {
		in.Stats.Invalid.Add(1)
		in.log.Warn("dropping descriptor for a slot not handed to this instance", zap.Stringer("desc", d), zap.Uint32("owner", owner))
		return
	}
	m := &Message{pool: in.Pool, hdr: in.Pool.Header(d.Slot), slot: d.Slot, data: in.Pool.Data(d.Slot), n: int(d.Len)}
	in.Stats.Handled.Add(1)
	if err := safeHandle(h, m); err != nil {
		in.Stats.Failed.Add(1)
		status, msg := statusOf(err)
		in.fail(m, status, msg)
		return
	}
	next, err := in.routes.NextHop(m.hdr, in.Fn, m.Topic())
	if err != nil {
		in.Stats.Failed.Add(1)
		in.fail(m, http.StatusLoopDetected, err.Error())
		return
	}
	if next == routing.Gateway {
		in.toGateway(m, 0)
		return
	}
	target, err := in.routes.Pick(next, in.inflight)
	if err != nil {
		in.Stats.Failed.Add(1)
		in.fail(m, http.StatusServiceUnavailable, err.Error())
		return
	}
	if !in.Pool.Handoff(m.slot, in.ID, target) {
		return // reclaimed under us (we were declared dead): not ours any more
	}
	if err := in.tr.Send(descriptor.Descriptor{Next: target, Chain: in.Chain, Slot: m.slot, Len: uint32(m.n)}); err != nil {
		in.Stats.Failed.Add(1)
		if in.Pool.Handoff(m.slot, target, in.ID) {
			in.fail(m, http.StatusBadGateway, fmt.Sprintf("could not deliver to function %q (instance %d): %v", in.routes.FunctionName(next), target, err))
		}
		return
	}
	in.Stats.Forwarded.Add(1)
}

// rejected handles a descriptor this instance sent that the kernel handed
// back (the receiver died, or the descriptor broke a rule): the slot is
// taken back from the would-be receiver and the request fails with 502.
func (in *Instance) rejected(d descriptor.Descriptor, reason bpf.DropReason) {
	in.Stats.Failed.Add(1)
	if d.Next == descriptor.GatewayInstance {
		// Returning to the gateway failed: the gateway owns the slot
		// already, only its own timeout or reclaim can end the request.
		in.log.Error("the kernel refused a result for the gateway", zap.Stringer("desc", d), zap.Stringer("reason", reason))
		return
	}
	if !in.Pool.Handoff(d.Slot, d.Next, in.ID) {
		return // reclaimed by the gateway meanwhile
	}
	m := &Message{pool: in.Pool, hdr: in.Pool.Header(d.Slot), slot: d.Slot, data: in.Pool.Data(d.Slot), n: int(d.Len)}
	in.fail(m, http.StatusBadGateway, fmt.Sprintf("instance %d refused the request: %v", d.Next, reason))
}

// safeHandle recovers a panicking handler: one bad request must not take
// the instance (and every request it holds) down.
func safeHandle(h Handler, m *Message) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("handler panicked: %v", r)
		}
	}()
	return h.Handle(m)
}

// fail writes msg into the slot and returns it to the gateway as an error.
func (in *Instance) fail(m *Message, status int, msg string) {
	in.log.Warn("request failed", zap.Int("status", status), zap.String("error", msg), zap.Uint64("request", m.RequestID()))
	m.hdr.Status = uint16(status)
	m.n = copy(m.data, msg)
	in.toGateway(m, descriptor.FlagError)
}

func (in *Instance) toGateway(m *Message, flags uint16) {
	if in.gone.Load() {
		return // nobody waits for it; the slot stays ours until we register again
	}
	if !in.Pool.Handoff(m.slot, in.ID, descriptor.GatewayInstance) {
		return
	}
	d := descriptor.Descriptor{Next: descriptor.GatewayInstance, Chain: in.Chain, Flags: flags | descriptor.FlagLast, Slot: m.slot, Len: uint32(m.n)}
	if err := in.tr.Send(d); err != nil {
		// The gateway is gone; it will rebuild its state from the pool.
		in.log.Error("could not return a result to the gateway", zap.Error(err))
		return
	}
	in.Stats.Returned.Add(1)
}

// inflight reads an instance's concurrency from the EPROXY map.
func (in *Instance) inflight(id uint32) int64 {
	if in.metrics == nil {
		return 0
	}
	var m bpf.InstanceMetrics
	if err := in.metrics.Lookup(id, &m); err != nil {
		return 0
	}
	return m.Inflight
}

// SendRaw sends d as is, bypassing the SDK's routing and ownership
// bookkeeping. The kernel program and the receiver still validate it; it
// exists for tools and for tests that must show what happens to a bad
// descriptor.
func (in *Instance) SendRaw(d descriptor.Descriptor) error { return in.tr.Send(d) }

// Run registers and serves until ctx ends.
//
// If the gateway goes away (a restart), Run finishes the messages it holds,
// registers again, with backoff, and serves the new gateway, which keeps the
// chain's pool: requests in flight at the restart are lost (their HTTP
// connections died with the gateway) and their slots reclaimed; the
// instance is not. The first registration must succeed.
func Run(ctx context.Context, opts Options, h Handler) error {
	in, err := Register(opts)
	if err != nil {
		return err
	}
	for {
		err := in.Serve(ctx, h)
		in.Close()
		if !errors.Is(err, ErrGatewayGone) {
			return err
		}
		log := opts.Logger
		if log == nil {
			log = zap.NewNop()
		}
		log.Warn("gateway gone: registering again", zap.String("chain", opts.Chain), zap.String("function", opts.Function))
		if in, err = reregister(ctx, opts, in.ID); err != nil {
			return nil // ctx ended while the gateway was away
		}
	}
}

// reregister retries Register with exponential backoff (20 ms .. 250 ms: a
// failed attempt is one connect on a unix socket, and every member waits
// for the gateway to come back, so the cap is the restart's added downtime)
// until it succeeds or ctx ends.
func reregister(ctx context.Context, opts Options, prev uint32) (*Instance, error) {
	backoff := 20 * time.Millisecond
	for {
		in, err := register(opts, prev)
		if err == nil {
			return in, nil
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 250*time.Millisecond)
	}
}
