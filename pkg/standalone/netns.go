package standalone

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"

	"github.com/spright-dev/spright/bpf/redirect"
)

// podNet is one function instance's network namespace and veth pair.
type podNet struct {
	NS      string // netns name
	Host    string // host-side veth
	Peer    string // pod-side veth (inside NS)
	HostIP  string
	PodIP   string
	created bool
}

// ip runs iproute2; its output goes into the error.
func ip(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// podSeq numbers the namespaces of this process: the kernel tears a deleted
// namespace's veth down asynchronously, so names are never reused.
var podSeq atomic.Int32

// newPodNet names a new namespace. Names carry the pid so that runners
// (and their leftovers) never collide.
func newPodNet() *podNet {
	k := int(podSeq.Add(1)-1) % 256
	pid := os.Getpid()
	third := 100 + pid%100
	return &podNet{
		NS:     fmt.Sprintf("spright-%d-%d", pid, k),
		Host:   fmt.Sprintf("sp%dh%d", pid%100000, k),
		Peer:   fmt.Sprintf("sp%dp%d", pid%100000, k),
		HostIP: fmt.Sprintf("10.%d.%d.1", third, k),
		PodIP:  fmt.Sprintf("10.%d.%d.2", third, k),
	}
}

// create makes the namespace, the veth pair, addresses and routes. The
// loopback inside is brought up: the function's descriptor socket lives on it.
func (p *podNet) create() error {
	if err := ip("netns", "add", p.NS); err != nil {
		return err
	}
	p.created = true
	steps := [][]string{
		{"link", "add", p.Host, "type", "veth", "peer", "name", p.Peer, "netns", p.NS},
		{"addr", "add", p.HostIP + "/30", "dev", p.Host},
		{"link", "set", p.Host, "up"},
		{"-n", p.NS, "link", "set", "lo", "up"},
		{"-n", p.NS, "addr", "add", p.PodIP + "/30", "dev", p.Peer},
		{"-n", p.NS, "link", "set", p.Peer, "up"},
		{"-n", p.NS, "route", "add", "default", "via", p.HostIP},
	}
	for _, s := range steps {
		if err := ip(s...); err != nil {
			p.delete()
			return err
		}
	}
	return nil
}

// enableForwarding lets the host forward packets arriving from the pod
// (net.ipv4.conf.<host veth>.forwarding=1; the global ip_forward is left
// alone): pod-to-pod traffic needs it, with or without eBPF redirect.
func (p *podNet) enableForwarding() error {
	return redirect.EnableForwarding(p.Host)
}

// delete removes the veth pair and the namespace. Deleting the namespace
// alone would take the veth with it, but only when the kernel gets round
// to destroying the namespace: `ip link` would still show the host end
// after `spright run` has exited.
func (p *podNet) delete() error {
	if !p.created {
		return nil
	}
	p.created = false
	ip("link", "del", p.Host) // gone already if create failed before making it
	return ip("netns", "del", p.NS)
}
