package bpf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"golang.org/x/sys/unix"
)

// steerPinPrefix names the pinned TCX links of steered namespaces:
// steer-<netns cookie>-<ifindex>-<in|out>.
const steerPinPrefix = "steer-"

// Steer starts steering for the network namespace of sock, EPROXY's
// listening socket on the pod's traffic port (QUEUE_SERVING_PORT): new
// connections to that port from a steered source (SteerSource) are
// rewritten to toPort, the user container's own port, and counted for
// instance (see "Steer" in the package doc). It attaches spright_steer to
// ingress and egress of every interface of that namespace (TCX; lo: ingress only), pins the
// links under the pin directory so that they survive the agent, and
// returns the namespace's cookie, the key of the other Steer methods. A
// namespace already steered (a restarted agent, a restarted EPROXY) keeps
// its links and gets the new policy.
func (d *Datapath) Steer(instance uint32, sockFD int, toPort uint16) (uint64, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return 0, ErrClosed
	}
	cookie, err := unix.GetsockoptUint64(sockFD, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
	if err != nil {
		return 0, fmt.Errorf("bpf: steer: netns cookie of the listening socket: %w", err)
	}
	// One policy per namespace: a pod's. In the agent's own namespace
	// (EPROXYs without a pod of their own, as in tests) several EPROXYs
	// would share, and overwrite, it.
	if own, err := ownNetnsCookie(); err == nil && own == cookie {
		return 0, fmt.Errorf("bpf: steer: the listening socket is in the agent's own network namespace; steering needs the pod's own")
	}
	sa, err := unix.Getsockname(sockFD)
	if err != nil {
		return 0, fmt.Errorf("bpf: steer: address of the listening socket: %w", err)
	}
	var from int
	switch a := sa.(type) {
	case *unix.SockaddrInet4:
		from = a.Port
	case *unix.SockaddrInet6:
		from = a.Port
	default:
		return 0, fmt.Errorf("bpf: steer: the listening socket is not TCP/IP")
	}
	if from == 0 || toPort == 0 || int(toPort) == from {
		return 0, fmt.Errorf("bpf: steer: bad ports %d -> %d", from, toPort)
	}
	nsfd, err := unix.IoctlRetInt(sockFD, unix.SIOCGSKNS)
	if err != nil {
		return 0, fmt.Errorf("bpf: steer: network namespace of the listening socket (SIOCGSKNS): %w", err)
	}
	defer unix.Close(nsfd)
	d.pruneSteer()
	if err := d.attachSteer(cookie, nsfd); err != nil {
		return 0, err
	}
	pol := sprightSteerPolicy{Instance: instance, FromPort: uint16(from), ToPort: toPort, Enabled: 1}
	var old sprightSteerPolicy
	if d.objs.SteerNs.Lookup(cookie, &old) == nil {
		pol.Flows = old.Flows // the namespace's count goes on
	}
	if err := d.objs.SteerNs.Update(cookie, &pol, ebpf.UpdateAny); err != nil {
		return 0, fmt.Errorf("bpf: steer: set policy of netns %d: %w", cookie, err)
	}
	return cookie, nil
}

// attachSteer attaches spright_steer to every interface of the namespace
// nsfd (cookie) that has no pinned link yet.
func (d *Datapath) attachSteer(cookie uint64, nsfd int) error {
	return inNetns(nsfd, func() error {
		ifs, err := net.Interfaces()
		if err != nil {
			return fmt.Errorf("bpf: steer: interfaces of netns %d: %w", cookie, err)
		}
		var prog *ebpf.Program // this namespace's copy, loaded when first needed
		for _, ifc := range ifs {
			dirs := []struct {
				name   string
				attach ebpf.AttachType
			}{{"in", ebpf.AttachTCXIngress}, {"out", ebpf.AttachTCXEgress}}
			if ifc.Flags&net.FlagLoopback != 0 {
				// Every loopback packet passes lo's ingress too, both
				// ways: one run per packet is enough.
				dirs = dirs[:1]
			}
			for _, dir := range dirs {
				pin := filepath.Join(d.pinDir, fmt.Sprintf("%s%d-%d-%s", steerPinPrefix, cookie, ifc.Index, dir.name))
				if l, err := link.LoadPinnedLink(pin, nil); err == nil {
					l.Close() // attached by an earlier agent: keep it
					continue
				}
				os.Remove(pin) // a stale pin (the interface is gone)
				if prog == nil {
					if prog, err = d.steerProgram(cookie); err != nil {
						return err
					}
					defer prog.Close() // the links hold it
				}
				l, err := link.AttachTCX(link.TCXOptions{Interface: ifc.Index, Program: prog, Attach: dir.attach})
				if err != nil {
					return fmt.Errorf("bpf: steer: attach to %s %s in netns %d: %w", ifc.Name, dir.name, cookie, err)
				}
				err = l.Pin(pin)
				l.Close()
				if err != nil {
					return fmt.Errorf("bpf: steer: pin link of %s: %w", ifc.Name, err)
				}
			}
		}
		return nil
	})
}

// steerProgram loads a copy of spright_steer that serves the namespace
// cookie (its steer_netns_cookie), sharing the loaded maps.
func (d *Datapath) steerProgram(cookie uint64) (*ebpf.Program, error) {
	spec, err := loadSpright()
	if err != nil {
		return nil, fmt.Errorf("bpf: steer: program spec: %w", err)
	}
	v, ok := spec.Variables["steer_netns_cookie"]
	if !ok {
		return nil, fmt.Errorf("bpf: steer: the object has no steer_netns_cookie")
	}
	if err := v.Set(cookie); err != nil {
		return nil, fmt.Errorf("bpf: steer: set steer_netns_cookie: %w", err)
	}
	var objs struct {
		Prog *ebpf.Program `ebpf:"spright_steer"`
	}
	err = spec.LoadAndAssign(&objs, &ebpf.CollectionOptions{MapReplacements: map[string]*ebpf.Map{
		sprightMapSteerNs: d.objs.SteerNs, sprightMapSteerSrc: d.objs.SteerSrc, sprightMapSteerFlows: d.objs.SteerFlows,
		sprightMapInstanceMetrics: d.objs.InstanceMetrics,
	}})
	if err != nil {
		return nil, fmt.Errorf("bpf: steer: load the program for netns %d: %w", cookie, err)
	}
	return objs.Prog, nil
}

// SetSteerEnabled switches steering of new connections in a namespace on
// or off; connections already steered stay steered (and counted) either
// way. EPROXY switches it off when it starts draining, so that new
// connections reach its drainer.
func (d *Datapath) SetSteerEnabled(netns uint64, on bool) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	var pol sprightSteerPolicy
	if err := d.objs.SteerNs.Lookup(netns, &pol); err != nil {
		return fmt.Errorf("bpf: steer: netns %d is not steered: %w", netns, err)
	}
	pol.Enabled = 0
	if on {
		pol.Enabled = 1
	}
	if err := d.objs.SteerNs.Update(netns, &pol, ebpf.UpdateExist); err != nil {
		return fmt.Errorf("bpf: steer: netns %d: %w", netns, err)
	}
	return nil
}

// SteerSource adds (on) or removes a client address whose new connections
// a namespace steers.
func (d *Datapath) SteerSource(netns uint64, addr netip.Addr, on bool) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	key := steerSourceKey(netns, addr)
	var err error
	if on {
		err = d.objs.SteerSrc.Update(&key, uint8(1), ebpf.UpdateAny)
	} else if err = d.objs.SteerSrc.Delete(&key); errors.Is(err, ebpf.ErrKeyNotExist) {
		err = nil
	}
	if err != nil {
		return fmt.Errorf("bpf: steer source %s in netns %d: %w", addr, netns, err)
	}
	return nil
}

func steerSourceKey(netns uint64, addr netip.Addr) sprightSteerSource {
	key := sprightSteerSource{Netns: netns}
	addr = addr.Unmap()
	if addr.Is4() {
		b := addr.As4()
		key.Family = 4
		key.Addr[0] = binary.NativeEndian.Uint32(b[:])
	} else {
		b := addr.As16()
		key.Family = 6
		for i := range key.Addr {
			key.Addr[i] = binary.NativeEndian.Uint32(b[4*i:])
		}
	}
	return key
}

// Unsteer ends steering of a namespace (its EPROXY left for good): the
// policy, its sources and its links go, so connections it steered break.
// An unknown namespace is not an error.
func (d *Datapath) Unsteer(netns uint64) error {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return ErrClosed
	}
	return d.unsteerLocked(netns)
}

func (d *Datapath) unsteerLocked(netns uint64) error {
	var errs []error
	if err := d.objs.SteerNs.Delete(netns); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		errs = append(errs, fmt.Errorf("bpf: unsteer netns %d: %w", netns, err))
	}
	var key sprightSteerSource
	var stale []sprightSteerSource
	it := d.objs.SteerSrc.Iterate()
	var v uint8
	for it.Next(&key, &v) {
		if key.Netns == netns {
			stale = append(stale, key)
		}
	}
	for i := range stale {
		d.objs.SteerSrc.Delete(&stale[i])
	}
	matches, _ := filepath.Glob(filepath.Join(d.pinDir, fmt.Sprintf("%s%d-*", steerPinPrefix, netns)))
	for _, pin := range matches {
		if err := unpinLink(pin); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// pruneSteer forgets namespaces that are gone: the kernel detached their
// links when their interfaces went away (a TCX link whose interface is
// gone reports ifindex 0), which leaves the pins, the policy and the
// sources behind. Run on each Steer, so the state is bounded by the pods
// alive on the node plus the ones that went since the last registration.
func (d *Datapath) pruneSteer() {
	ents, err := os.ReadDir(d.pinDir)
	if err != nil {
		return
	}
	live := map[uint64]bool{}
	dead := map[uint64]bool{}
	for _, e := range ents {
		name := e.Name()
		if !strings.HasPrefix(name, steerPinPrefix) {
			continue
		}
		var cookie uint64
		var ifindex int
		var dir string
		if _, err := fmt.Sscanf(strings.ReplaceAll(strings.TrimPrefix(name, steerPinPrefix), "-", " "), "%d %d %s", &cookie, &ifindex, &dir); err != nil {
			continue
		}
		pin := filepath.Join(d.pinDir, name)
		l, err := link.LoadPinnedLink(pin, nil)
		if err == nil {
			info, ierr := l.Info()
			l.Close()
			if ierr == nil && info.TCX() != nil && info.TCX().Ifindex != 0 {
				live[cookie] = true
				continue
			}
		}
		unpinLink(pin)
		dead[cookie] = true
	}
	for cookie := range dead {
		if !live[cookie] {
			d.unsteerLocked(cookie)
		}
	}
}

// unpinLink removes a pinned link, detaching it.
func unpinLink(pin string) error {
	l, err := link.LoadPinnedLink(pin, nil)
	if err != nil {
		// Not a live link any more (its interface is gone): drop the pin.
		if rerr := os.Remove(pin); rerr != nil && !errors.Is(rerr, os.ErrNotExist) {
			return fmt.Errorf("bpf: remove pin %s: %w", pin, rerr)
		}
		return nil
	}
	defer l.Close()
	if err := l.Unpin(); err != nil {
		return fmt.Errorf("bpf: unpin %s: %w", pin, err)
	}
	return nil
}

// unpinSteerLinks detaches every steered namespace's links (Unpin).
func unpinSteerLinks(pinDir string) error {
	ents, err := os.ReadDir(pinDir)
	if err != nil {
		return nil
	}
	var errs []error
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), steerPinPrefix) {
			if err := unpinLink(filepath.Join(pinDir, e.Name())); err != nil {
				errs = append(errs, err)
			}
		}
	}
	return errors.Join(errs...)
}

// inNetns runs fn on an OS thread switched to the network namespace nsfd.
// It runs in a goroutine of its own: if the thread cannot be switched back,
// it stays locked and the runtime ends it with the goroutine.
func inNetns(nsfd int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("bpf: own network namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("bpf: enter network namespace: %w", err)
			return
		}
		ferr := fn()
		if err := unix.Setns(orig, unix.CLONE_NEWNET); err != nil {
			errc <- errors.Join(ferr, fmt.Errorf("bpf: return from network namespace: %w", err))
			return // the thread stays locked and dies with this goroutine
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}

// SteerInfo is a steered namespace's policy and count.
type SteerInfo struct {
	Instance         uint32
	FromPort, ToPort uint16
	Enabled          bool
	// Connections steered in this namespace so far.
	Connections uint64
}

// SteerStats reads a namespace's policy and count.
func (d *Datapath) SteerStats(netns uint64) (SteerInfo, error) {
	d.mu.RLock()
	defer d.mu.RUnlock()
	if d.closed {
		return SteerInfo{}, ErrClosed
	}
	var pol sprightSteerPolicy
	if err := d.objs.SteerNs.Lookup(netns, &pol); err != nil {
		return SteerInfo{}, fmt.Errorf("bpf: steer: netns %d: %w", netns, err)
	}
	return SteerInfo{Instance: pol.Instance, FromPort: pol.FromPort, ToPort: pol.ToPort, Enabled: pol.Enabled != 0, Connections: pol.Flows}, nil
}

// ownNetnsCookie is the cookie of the calling thread's network namespace.
func ownNetnsCookie() (uint64, error) {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return 0, err
	}
	defer unix.Close(fd)
	return unix.GetsockoptUint64(fd, unix.SOL_SOCKET, unix.SO_NETNS_COOKIE)
}
