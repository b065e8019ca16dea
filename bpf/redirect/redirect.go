// Package redirect is SPRIGHT's XDP/TC packet forwarding between pods of a
// node and to the NIC (DESIGN.md §4, paper §3.4 and Appendix B), and its
// loader.
//
// Descriptors of a chain travel by sk_msg (package bpf) and never touch a
// veth, but HTTP does: a client or ingress pod talking to a gateway pod, an
// HTTP member of a chain, adapters. Without this package such a packet
// crosses the host's IP stack between the two veths (routing, the
// netfilter/iptables FORWARD path, a second backlog pass). With it:
//
//   - spright_tc_fwd, on tcx ingress of every host-side veth, looks the
//     packet up in the kernel FIB (bpf_fib_lookup) and, if the egress device
//     is one registered here, rewrites the MACs, decrements the TTL and
//     redirects: bpf_redirect_peer into the destination pod (host-side veth
//     targets), bpf_redirect to the egress of a registered NIC (other
//     nodes), or bpf_redirect_neigh while the neighbour is unresolved.
//   - spright_xdp_fwd (ModeXDP), on XDP of every host-side veth and of a
//     registered NIC, does the same earlier, with XDP_REDIRECT. XDP cannot
//     resolve neighbours: such packets, and everything else it does not
//     redirect, pass on to the tc program and the stack.
//   - spright_xdp_pass, on the pod side of each veth (ModeXDP): a frame
//     XDP_REDIRECTed into a veth is handed to the veth's peer with
//     ndo_xdp_xmit, which is dropped unless the peer's NAPI runs, that is,
//     unless the peer has an XDP program. This one passes everything.
//     AddPod also turns TX checksum offload off on the pod side in ModeXDP:
//     an XDP frame carries no "checksum still to be done" mark, so packets
//     a pod sends with offloaded checksums would arrive corrupt after an
//     XDP_REDIRECT (TcpInCsumErrors on 6.18); the pod computes them in
//     software instead.
//
// Packets the programs do not redirect (not IPv4, local destinations such
// as a gateway listening in the host netns, TTL <= 1, no route, MTU,
// unregistered egress devices) continue unchanged. IPv6 is passed (not
// accelerated).
//
// # What it costs
//
// Redirected packets skip netfilter: iptables/nftables FORWARD rules and
// conntrack do not see pod-to-pod traffic any more, so a node that relies
// on iptables network policy must run with ModeOff (the default). The FIB
// lookup needs IPv4 forwarding enabled on the ingress device (the
// per-device net.ipv4.conf.<dev>.forwarding is enough; see
// EnableForwarding), as the normal forwarding path does. Attaching XDP to a
// veth turns the pair's GSO off (the kernel does that for XDP on veth), so
// ModeXDP trades TSO for an earlier hook; ModeTC keeps GSO. Measured in
// TestForwarding: two 1 MiB requests and their answers took ~3500 XDP
// redirects against ~220 tc redirects (super-packets) for the same traffic.
//
// # Counters
//
// fwd_stats is a per-CPU array (Counter indexes it); Stats sums the CPUs.
// Redirected() is the number of packets that skipped the host stack.
//
// # Lifetime
//
// Attachments are BPF links held by the Forwarder (tcx and XDP links, not
// pinned): Close, or the exit of the process that holds them, detaches
// everything, so a crashed agent leaves the node on the normal stack path,
// never half-forwarding. Nothing is pinned in bpffs.
package redirect

import (
	"errors"
	"fmt"
	"net"
	"os"
	"path"
	"runtime"
	"strings"
	"sync"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"
	"github.com/cilium/ebpf/rlimit"
	"golang.org/x/sys/unix"
)

// Mode is the per-node forwarding switch.
type Mode string

const (
	// ModeOff: no programs, packets take the host stack (iptables apply).
	ModeOff Mode = "off"
	// ModeTC: tcx ingress on host-side veths only.
	ModeTC Mode = "tc"
	// ModeXDP: XDP on host-side veths and NICs, plus tc behind it for what
	// XDP cannot do (unresolved neighbours), plus the pod-side XDP_PASS.
	ModeXDP Mode = "xdp"
)

// ParseMode accepts "off" (or ""), "tc" and "xdp".
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case "", ModeOff:
		return ModeOff, nil
	case ModeTC, ModeXDP:
		return m, nil
	}
	return ModeOff, fmt.Errorf("redirect mode %q: want off, tc or xdp", s)
}

// Counter indexes fwd_stats; it mirrors enum stat in redirect.c.
type Counter int

const (
	TCRedirectPeer  Counter = 0 // tc: bpf_redirect_peer into a pod
	TCRedirect      Counter = 1 // tc: bpf_redirect to a NIC's egress
	TCRedirectNeigh Counter = 2 // tc: bpf_redirect_neigh (neighbour unresolved)
	TCPass          Counter = 3 // tc: passed, not for us
	TCFibMiss       Counter = 4 // tc: bpf_fib_lookup gave no forwarding route (local destinations, e.g. a gateway in the host netns, included)
	XDPRedirect     Counter = 5 // xdp: XDP_REDIRECT
	XDPPass         Counter = 6 // xdp: passed, not for us
	XDPFibMiss      Counter = 7 // xdp: no forwarding route (local included), or neighbour unresolved
	PeerPass        Counter = 8 // pod-side XDP_PASS: frames entering a pod (both paths)
	numCounters             = 9
)

var counterNames = [numCounters]string{"tc-redirect-peer", "tc-redirect", "tc-redirect-neigh", "tc-pass", "tc-fib-miss",
	"xdp-redirect", "xdp-pass", "xdp-fib-miss", "peer-pass"}

func (c Counter) String() string {
	if c >= 0 && c < numCounters {
		return counterNames[c]
	}
	return fmt.Sprintf("counter-%d", int(c))
}

// Stats are the counters summed over CPUs.
type Stats [numCounters]uint64

// Redirected is the number of packets that skipped the host stack.
func (s Stats) Redirected() uint64 {
	return s[TCRedirectPeer] + s[TCRedirect] + s[TCRedirectNeigh] + s[XDPRedirect]
}

// Passed is the number of packets the forwarding programs left to the stack
// for reasons other than a FIB miss.
func (s Stats) Passed() uint64 { return s[TCPass] + s[XDPPass] }

// FibMiss is the number of packets bpf_fib_lookup found no forwarding
// route (or, in XDP, no resolved neighbour) for.
func (s Stats) FibMiss() uint64 { return s[TCFibMiss] + s[XDPFibMiss] }

// Sub returns s - o counter by counter.
func (s Stats) Sub(o Stats) Stats {
	var d Stats
	for i := range s {
		d[i] = s[i] - o[i]
	}
	return d
}

// Map returns the counters by name.
func (s Stats) Map() map[string]uint64 {
	m := make(map[string]uint64, numCounters)
	for i, v := range s {
		m[Counter(i).String()] = v
	}
	return m
}

func (s Stats) String() string {
	var b strings.Builder
	for i, v := range s {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s=%d", Counter(i), v)
	}
	return b.String()
}

// fwd_targets flags; mirror TARGET_* in redirect.c.
const (
	targetPeer uint32 = 1
	targetXDP  uint32 = 2
)

// ErrClosed is returned by methods of a closed Forwarder.
var ErrClosed = errors.New("redirect: forwarder is closed")

// Forwarder holds the loaded programs, the counters and the attachments of
// one node. Its methods are safe for concurrent use.
type Forwarder struct {
	mode Mode

	mu     sync.Mutex
	objs   redirectObjects
	ifaces map[string]*attachment // by host-netns interface name
	closed bool
}

type attachment struct {
	ifindex int
	synced  bool // added by SyncVeths
	links   []link.Link
	// restore undoes changes to the pod side (TX checksum offload), best
	// effort: the pod's netns may be gone already.
	restore func() error
}

// New loads the programs for mode (ModeTC or ModeXDP); nothing is attached
// yet. ModeOff is refused: with forwarding off there is nothing to load.
func New(mode Mode) (*Forwarder, error) {
	if mode != ModeTC && mode != ModeXDP {
		return nil, fmt.Errorf("redirect: load programs for mode %q: want tc or xdp", mode)
	}
	if err := rlimit.RemoveMemlock(); err != nil {
		return nil, fmt.Errorf("redirect: remove memlock rlimit: %w", err)
	}
	f := &Forwarder{mode: mode, ifaces: map[string]*attachment{}}
	if err := loadRedirectObjects(&f.objs, nil); err != nil {
		var verr *ebpf.VerifierError
		if errors.As(err, &verr) {
			return nil, fmt.Errorf("redirect: load forwarding programs: %+v", verr)
		}
		return nil, fmt.Errorf("redirect: load forwarding programs: %w", err)
	}
	return f, nil
}

// Mode is the mode the Forwarder was loaded for.
func (f *Forwarder) Mode() Mode { return f.mode }

// AddPod attaches the forwarding programs to the host side (hostIf, in the
// caller's netns) of a pod's veth pair and registers it as a redirect
// target; in ModeXDP it also attaches spright_xdp_pass to the pod side
// (podIf inside the network namespace podNetns: a name under /run/netns or
// a path). Adding an interface again is a no-op.
//
// With podNetns "" (a veth made by someone else, e.g. a CNI plugin, whose
// pod side the agent does not manage) the pod side is left alone and only
// tc is attached, in every mode: XDP never redirects into such a pod (its
// peer has no XDP program) nor out of it (its packets may carry offloaded
// checksums, which XDP_REDIRECT would turn into corrupt ones).
func (f *Forwarder) AddPod(hostIf, podNetns, podIf string) (err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	if _, ok := f.ifaces[hostIf]; ok {
		return nil
	}
	ifi, err := net.InterfaceByName(hostIf)
	if err != nil {
		return fmt.Errorf("redirect: pod interface %s: %w", hostIf, err)
	}
	a := &attachment{ifindex: ifi.Index}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifi.Index, Program: f.objs.SprightTcFwd, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return fmt.Errorf("redirect: attach tc ingress to %s: %w", hostIf, err)
	}
	a.links = append(a.links, l)
	flags := targetPeer
	if f.mode == ModeXDP && podNetns != "" {
		// The pod side first: from the moment the host side redirects into
		// this veth, its peer must be able to take XDP frames.
		err := InNetns(podNetns, func() error {
			pi, err := net.InterfaceByName(podIf)
			if err != nil {
				return err
			}
			off := false
			if _, err := txChecksum(podIf, &off); err != nil {
				return err
			}
			a.restore = func() error {
				return InNetns(podNetns, func() error {
					on := true
					_, err := txChecksum(podIf, &on)
					return err
				})
			}
			l, err := link.AttachXDP(link.XDPOptions{Program: f.objs.SprightXdpPass, Interface: pi.Index})
			if err != nil {
				return err
			}
			a.links = append(a.links, l)
			return nil
		})
		if err != nil {
			return fmt.Errorf("redirect: attach xdp pass to %s in netns %s: %w", podIf, podNetns, err)
		}
		l, err := link.AttachXDP(link.XDPOptions{Program: f.objs.SprightXdpFwd, Interface: ifi.Index})
		if err != nil {
			return fmt.Errorf("redirect: attach xdp to %s: %w", hostIf, err)
		}
		a.links = append(a.links, l)
		flags |= targetXDP
	}
	if err := f.objs.FwdTargets.Update(uint32(ifi.Index), flags, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("redirect: register %s (ifindex %d) as target: %w", hostIf, ifi.Index, err)
	}
	f.ifaces[hostIf] = a
	return nil
}

// AddNIC registers the node's uplink nicIf as a redirect target for traffic
// to other nodes (tc redirects to its egress), attaches spright_tc_fwd to
// its tcx ingress and, in ModeXDP, spright_xdp_fwd to its receive path, so
// that packets from other nodes are redirected straight into the
// destination pod (bpf_redirect_peer from tc; XDP_REDIRECT into pods
// added with their namespace). xdpTarget says
// whether the NIC's driver accepts XDP_REDIRECT frames (ndo_xdp_xmit; most
// physical NIC drivers and virtio_net do): if false, XDP never redirects to
// it and tc does instead.
func (f *Forwarder) AddNIC(nicIf string, xdpTarget bool) (err error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	if _, ok := f.ifaces[nicIf]; ok {
		return nil
	}
	ifi, err := net.InterfaceByName(nicIf)
	if err != nil {
		return fmt.Errorf("redirect: NIC %s: %w", nicIf, err)
	}
	a := &attachment{ifindex: ifi.Index}
	defer func() {
		if err != nil {
			a.close()
		}
	}()
	var flags uint32
	// tc behind XDP: packets XDP passes (unresolved neighbours, targets
	// that take no XDP frames) are still redirected into the pods.
	l, err := link.AttachTCX(link.TCXOptions{Interface: ifi.Index, Program: f.objs.SprightTcFwd, Attach: ebpf.AttachTCXIngress})
	if err != nil {
		return fmt.Errorf("redirect: attach tc ingress to NIC %s: %w", nicIf, err)
	}
	a.links = append(a.links, l)
	if f.mode == ModeXDP {
		l, err := link.AttachXDP(link.XDPOptions{Program: f.objs.SprightXdpFwd, Interface: ifi.Index})
		if err != nil {
			return fmt.Errorf("redirect: attach xdp to NIC %s: %w", nicIf, err)
		}
		a.links = append(a.links, l)
		if xdpTarget {
			flags |= targetXDP
		}
	}
	if err := f.objs.FwdTargets.Update(uint32(ifi.Index), flags, ebpf.UpdateAny); err != nil {
		return fmt.Errorf("redirect: register NIC %s (ifindex %d) as target: %w", nicIf, ifi.Index, err)
	}
	f.ifaces[nicIf] = a
	return nil
}

// Remove detaches the programs from an interface added with AddPod or
// AddNIC and unregisters it. An unknown interface is not an error.
func (f *Forwarder) Remove(ifname string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return ErrClosed
	}
	a, ok := f.ifaces[ifname]
	if !ok {
		return nil
	}
	delete(f.ifaces, ifname)
	return f.remove(ifname, a)
}

func (f *Forwarder) remove(ifname string, a *attachment) error {
	var errs []error
	if err := f.objs.FwdTargets.Delete(uint32(a.ifindex)); err != nil && !errors.Is(err, ebpf.ErrKeyNotExist) {
		errs = append(errs, fmt.Errorf("redirect: unregister %s: %w", ifname, err))
	}
	if err := a.close(); err != nil {
		errs = append(errs, fmt.Errorf("redirect: detach from %s: %w", ifname, err))
	}
	return errors.Join(errs...)
}

func (a *attachment) close() error {
	var errs []error
	// Reverse order: the host side before the pod side.
	for i := len(a.links) - 1; i >= 0; i-- {
		if err := a.links[i].Close(); err != nil {
			errs = append(errs, err)
		}
	}
	a.links = nil
	if a.restore != nil {
		a.restore() // best effort: fails when the pod is gone
		a.restore = nil
	}
	return errors.Join(errs...)
}

// SyncVeths makes the attachments follow the host-side pod veths whose
// names match one of patterns (path.Match globs, e.g. "veth*", "cali*",
// "lxc*"): a node agent calls it now and then, as a CNI plugin creates and
// deletes pods' veths. New matches are added as with AddPod(name, "", "")
// (tc only, pod side untouched); interfaces it added that are gone are
// removed. It returns what changed.
func (f *Forwarder) SyncVeths(patterns []string) (added, removed []string, err error) {
	ifs, err := net.Interfaces()
	if err != nil {
		return nil, nil, fmt.Errorf("redirect: list interfaces: %w", err)
	}
	present := map[string]bool{}
	var errs []error
	for _, ifi := range ifs {
		if !matchAny(patterns, ifi.Name) {
			continue
		}
		present[ifi.Name] = true
		f.mu.Lock()
		_, known := f.ifaces[ifi.Name]
		f.mu.Unlock()
		if known {
			continue
		}
		if err := f.AddPod(ifi.Name, "", ""); err != nil {
			errs = append(errs, err)
			continue
		}
		f.mu.Lock()
		if a, ok := f.ifaces[ifi.Name]; ok {
			a.synced = true
		}
		f.mu.Unlock()
		added = append(added, ifi.Name)
	}
	f.mu.Lock()
	var gone []string
	for n, a := range f.ifaces {
		if a.synced && !present[n] {
			gone = append(gone, n)
		}
	}
	f.mu.Unlock()
	for _, n := range gone {
		// The kernel detached the links with the device; this drops the
		// target entry and our handles.
		if err := f.Remove(n); err != nil {
			errs = append(errs, err)
			continue
		}
		removed = append(removed, n)
	}
	return added, removed, errors.Join(errs...)
}

func matchAny(patterns []string, name string) bool {
	for _, p := range patterns {
		if ok, _ := path.Match(p, name); ok {
			return true
		}
	}
	return false
}

// Interfaces lists the interfaces programs are attached to.
func (f *Forwarder) Interfaces() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	out := make([]string, 0, len(f.ifaces))
	for n := range f.ifaces {
		out = append(out, n)
	}
	return out
}

// Stats reads the counters, summed over CPUs.
func (f *Forwarder) Stats() (Stats, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var s Stats
	if f.closed {
		return s, ErrClosed
	}
	for i := range s {
		var per []uint64
		if err := f.objs.FwdStats.Lookup(uint32(i), &per); err != nil {
			return s, fmt.Errorf("redirect: read counter %s: %w", Counter(i), err)
		}
		for _, v := range per {
			s[i] += v
		}
	}
	return s, nil
}

// ProgramIDs are the kernel IDs of the three programs (tc, xdp, xdp pass),
// e.g. to check that no link refers to them any more after Close.
func (f *Forwarder) ProgramIDs() ([]ebpf.ProgramID, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil, ErrClosed
	}
	var ids []ebpf.ProgramID
	for _, p := range []*ebpf.Program{f.objs.SprightTcFwd, f.objs.SprightXdpFwd, f.objs.SprightXdpPass} {
		info, err := p.Info()
		if err != nil {
			return nil, fmt.Errorf("redirect: program info: %w", err)
		}
		id, ok := info.ID()
		if !ok {
			return nil, fmt.Errorf("redirect: program %s has no ID", info.Name)
		}
		ids = append(ids, id)
	}
	return ids, nil
}

// LinksRunning counts the kernel's links (of any process) that run one of
// the programs ids: with ProgramIDs, how a caller checks that nothing of a
// closed Forwarder is still attached.
func LinksRunning(ids []ebpf.ProgramID) (int, error) {
	want := map[ebpf.ProgramID]bool{}
	for _, id := range ids {
		want[id] = true
	}
	n := 0
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		l := it.Take()
		info, err := l.Info()
		l.Close()
		if err == nil && want[info.Program] { // err: gone meanwhile
			n++
		}
	}
	if err := it.Err(); err != nil && !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("redirect: iterate links: %w", err)
	}
	return n, nil
}

// Close detaches every program and releases the objects. It is idempotent.
func (f *Forwarder) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.closed {
		return nil
	}
	f.closed = true
	var errs []error
	for n, a := range f.ifaces {
		if err := f.remove(n, a); err != nil {
			errs = append(errs, err)
		}
	}
	f.ifaces = nil
	if err := f.objs.Close(); err != nil {
		errs = append(errs, fmt.Errorf("redirect: close objects: %w", err))
	}
	return errors.Join(errs...)
}

// EnableForwarding sets net.ipv4.conf.<ifname>.forwarding=1 in the
// caller's netns: the per-device switch both bpf_fib_lookup and the
// kernel's forwarding path check on the ingress device. It leaves the
// global net.ipv4.ip_forward alone.
func EnableForwarding(ifname string) error {
	if strings.ContainsAny(ifname, "/.") || ifname == "" {
		return fmt.Errorf("redirect: enable forwarding: bad interface name %q", ifname)
	}
	p := "/proc/sys/net/ipv4/conf/" + ifname + "/forwarding"
	if err := os.WriteFile(p, []byte("1"), 0o644); err != nil {
		return fmt.Errorf("redirect: enable forwarding on %s: %w", ifname, err)
	}
	return nil
}

// InNetns runs fn on an OS thread switched into the network namespace ns
// (a name under /run/netns, or a path). The thread is discarded if it
// cannot be switched back.
func InNetns(ns string, fn func() error) error {
	path := ns
	if !strings.Contains(ns, "/") {
		path = "/run/netns/" + ns
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := os.Open("/proc/thread-self/ns/net")
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open current netns: %w", err)
			return
		}
		defer orig.Close()
		target, err := os.Open(path)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open netns: %w", err)
			return
		}
		defer target.Close()
		if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("setns %s: %w", path, err)
			return
		}
		ferr := fn()
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			// Leave the thread locked: Go ends it with this goroutine.
			errc <- errors.Join(ferr, fmt.Errorf("switch back from netns %s: %w", path, err))
			return
		}
		runtime.UnlockOSThread()
		errc <- ferr
	}()
	return <-errc
}
