package sidecar

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// netnsDir is where `ip netns` keeps its named namespaces.
const netnsDir = "/run/netns"

// NetNS is a named network namespace (`ip netns add`) standing in for a pod.
type NetNS struct {
	Name string
}

// CreateNetNS creates the namespace and brings its loopback up. It fails if
// the name is taken, rather than share a namespace with someone else.
func CreateNetNS(name string) (*NetNS, error) {
	if name == "" || strings.ContainsAny(name, "/ \t\n") {
		return nil, fmt.Errorf("netns name %q", name)
	}
	if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
		return nil, fmt.Errorf("ip netns add %s: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	n := &NetNS{Name: name}
	if out, err := exec.Command("ip", "-n", name, "link", "set", "lo", "up").CombinedOutput(); err != nil {
		n.Delete()
		return nil, fmt.Errorf("ip -n %s link set lo up: %w: %s", name, err, strings.TrimSpace(string(out)))
	}
	return n, nil
}

// Delete removes the namespace. Processes still inside keep it alive (as an
// anonymous namespace) until they exit: stop them first.
func (n *NetNS) Delete() error {
	if out, err := exec.Command("ip", "netns", "del", n.Name).CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns del %s: %w: %s", n.Name, err, strings.TrimSpace(string(out)))
	}
	return nil
}

// Exists reports whether the namespace is still registered.
func (n *NetNS) Exists() bool {
	_, err := os.Stat(filepath.Join(netnsDir, n.Name))
	return err == nil
}

// Prefix is the command prefix that runs a program inside the namespace.
// `ip netns exec` execs the program, so it keeps the pid and rusage.
func (n *NetNS) Prefix() []string { return []string{"ip", "netns", "exec", n.Name} }

// Command is exec.Command for a program run inside the namespace.
func (n *NetNS) Command(name string, args ...string) *exec.Cmd {
	p := n.Prefix()
	return exec.Command(p[0], append(append(p[1:], name), args...)...)
}

// Do runs fn on an OS thread switched into the namespace: sockets fn
// creates belong to the namespace for their whole life. The thread is
// switched back before it is released; if that fails it stays locked and
// exits with its goroutine, so nothing else ever runs in the wrong
// namespace.
func (n *NetNS) Do(fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		restored, err := n.doLocked(fn)
		if restored {
			runtime.UnlockOSThread()
		}
		errc <- err
	}()
	return <-errc
}

// doLocked runs fn inside the namespace on the current, locked thread;
// restored says whether the thread is back in its own namespace.
func (n *NetNS) doLocked(fn func() error) (restored bool, err error) {
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		return true, fmt.Errorf("current netns: %w", err)
	}
	defer orig.Close()
	target, err := os.Open(filepath.Join(netnsDir, n.Name))
	if err != nil {
		return true, fmt.Errorf("netns %s: %w", n.Name, err)
	}
	defer target.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		return true, fmt.Errorf("setns %s: %w", n.Name, err)
	}
	err = fn()
	if rerr := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); rerr != nil {
		return false, err
	}
	return true, err
}

// Dial connects from inside the namespace.
func (n *NetNS) Dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var c net.Conn
	err := n.Do(func() (err error) {
		var d net.Dialer
		c, err = d.DialContext(ctx, network, addr)
		return err
	})
	return c, err
}

// KubeletClient is an HTTPClient whose connections come from 127.0.0.2,
// standing in for the kubelet, which probes a pod from the node's address,
// not from its clients' (EPROXY never steers a client that probes it).
func (n *NetNS) KubeletClient(timeout time.Duration) *http.Client {
	c := n.HTTPClient(timeout)
	c.Transport.(*http.Transport).DialContext = func(ctx context.Context, network, addr string) (net.Conn, error) {
		var conn net.Conn
		err := n.Do(func() (err error) {
			d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
			conn, err = d.DialContext(ctx, network, addr)
			return err
		})
		return conn, err
	}
	return c
}

// Listen listens inside the namespace.
func (n *NetNS) Listen(network, addr string) (net.Listener, error) {
	var ln net.Listener
	err := n.Do(func() (err error) {
		ln, err = net.Listen(network, addr)
		return err
	})
	return ln, err
}

// HTTPClient is a client whose connections are made inside the namespace.
// Keep-alives are off: a probe must not leave an idle connection in the
// system under test during an idle-CPU measurement.
func (n *NetNS) HTTPClient(timeout time.Duration) *http.Client {
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			DialContext:       n.Dial,
			DisableKeepAlives: true,
			Proxy:             nil,
		},
	}
}

// AddVeth connects the namespace to the host with a veth pair: hostIf
// (in the host, hostIP/30) and podIf (inside, podIP/30), both up. The
// pair goes away with the namespace.
func (n *NetNS) AddVeth(hostIf, podIf, hostIP, podIP string) error {
	steps := [][]string{
		{"link", "add", hostIf, "type", "veth", "peer", "name", podIf, "netns", n.Name},
		{"addr", "add", hostIP + "/30", "dev", hostIf},
		{"link", "set", hostIf, "up"},
		{"-n", n.Name, "addr", "add", podIP + "/30", "dev", podIf},
		{"-n", n.Name, "link", "set", podIf, "up"},
	}
	for _, s := range steps {
		if out, err := exec.Command("ip", s...).CombinedOutput(); err != nil {
			return fmt.Errorf("ip %s: %w: %s", strings.Join(s, " "), err, strings.TrimSpace(string(out)))
		}
	}
	return nil
}
