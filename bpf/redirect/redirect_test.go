package redirect

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spright-dev/spright/internal/forwardlock"

	"github.com/cilium/ebpf"
)

func TestParseMode(t *testing.T) {
	for in, want := range map[string]Mode{"": ModeOff, "off": ModeOff, "tc": ModeTC, "XDP": ModeXDP, " xdp ": ModeXDP} {
		got, err := ParseMode(in)
		if err != nil || got != want {
			t.Errorf("ParseMode(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := ParseMode("fast"); err == nil {
		t.Error("ParseMode(fast): no error")
	}
	if _, err := New(ModeOff); err == nil {
		t.Error("New(off): no error")
	}
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (eBPF, netns)")
	}
}

func run(t *testing.T, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%s: %v: %s", strings.Join(args, " "), err, out)
	}
}

// pod is a netns joined to the host by a veth pair, as a standalone
// runner's function namespace.
type pod struct {
	ns, host, peer, hostIP, podIP string
}

var podSeq int

func newPod(t *testing.T) *pod {
	t.Helper()
	podSeq++
	k := podSeq
	pid := os.Getpid() % 100000
	third := 200 + pid%50 // runs of different processes do not collide
	p := &pod{
		ns:     fmt.Sprintf("sprt-%d-%d", pid, k),
		host:   fmt.Sprintf("rt%dh%d", pid, k),
		peer:   fmt.Sprintf("rt%dp%d", pid, k),
		hostIP: fmt.Sprintf("10.%d.%d.1", third, k),
		podIP:  fmt.Sprintf("10.%d.%d.2", third, k),
	}
	run(t, "ip", "netns", "add", p.ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", p.ns).Run() })
	run(t, "ip", "link", "add", p.host, "type", "veth", "peer", "name", p.peer, "netns", p.ns)
	t.Cleanup(func() { exec.Command("ip", "link", "del", p.host).Run() })
	run(t, "ip", "addr", "add", p.hostIP+"/30", "dev", p.host)
	run(t, "ip", "link", "set", p.host, "up")
	run(t, "ip", "-n", p.ns, "link", "set", "lo", "up")
	run(t, "ip", "-n", p.ns, "addr", "add", p.podIP+"/30", "dev", p.peer)
	run(t, "ip", "-n", p.ns, "link", "set", p.peer, "up")
	run(t, "ip", "-n", p.ns, "route", "add", "default", "via", p.hostIP)
	if err := EnableForwarding(p.host); err != nil {
		t.Fatal(err)
	}
	return p
}

func forwDatagrams(t *testing.T) uint64 {
	t.Helper()
	v, err := HostForwarded()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// serve starts an HTTP echo server inside p's netns.
func serve(t *testing.T, p *pod) string {
	t.Helper()
	var ln net.Listener
	err := InNetns(p.ns, func() (err error) {
		ln, err = net.Listen("tcp", p.podIP+":8080")
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(bytes.ToUpper(b))
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// client returns an HTTP client whose connections are made inside p's
// netns (the socket keeps the netns it was created in).
func client(p *pod) *http.Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = InNetns(p.ns, func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

func exchange(t *testing.T, c *http.Client, addr string, n, size int) {
	t.Helper()
	body := bytes.Repeat([]byte("a"), size)
	want := bytes.ToUpper(body)
	for i := 0; i < n; i++ {
		resp, err := c.Post("http://"+addr+"/", "text/plain", bytes.NewReader(body))
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("request %d: %d bytes, %v; want %d bytes", i, len(got), err, len(want))
		}
	}
}

// attachedLinks counts the links in the kernel that run one of ids.
func attachedLinks(t *testing.T, ids []ebpf.ProgramID) int {
	t.Helper()
	n, err := LinksRunning(ids)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func TestForwarding(t *testing.T) {
	needRoot(t)
	for _, mode := range []Mode{ModeTC, ModeXDP} {
		t.Run(string(mode), func(t *testing.T) { testForwarding(t, mode) })
	}
}

func testForwarding(t *testing.T, mode Mode) {
	forwardingLock(t)
	a := newPod(t)
	b := newPod(t)
	addr := serve(t, b)
	c := client(a)

	f, err := New(mode)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	ids, err := f.ProgramIDs()
	if err != nil {
		t.Fatal(err)
	}

	// Off: loaded but not attached. Traffic is forwarded by the host stack.
	fw0 := forwDatagrams(t)
	exchange(t, c, addr, 20, 100)
	exchange(t, c, addr, 2, 1<<20)
	offFw := forwDatagrams(t) - fw0
	s, err := f.Stats()
	if err != nil {
		t.Fatal(err)
	}
	if s != (Stats{}) {
		t.Fatalf("not attached, counters moved: %v", s)
	}
	if offFw < 40 {
		t.Fatalf("off: host forwarded %d packets, want >= 40 (the stack path was not taken?)", offFw)
	}
	c.CloseIdleConnections()

	// On.
	for _, p := range []*pod{a, b} {
		if err := f.AddPod(p.host, p.ns, p.peer); err != nil {
			t.Fatal(err)
		}
	}
	if n := attachedLinks(t, ids); n == 0 {
		t.Fatal("attached, but no link runs our programs")
	}
	fw0 = forwDatagrams(t)
	exchange(t, c, addr, 20, 100)
	exchange(t, c, addr, 2, 1<<20)
	onFw := forwDatagrams(t) - fw0
	s, err = f.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%s: host forwarded %d packets off, %d on; counters %v", mode, offFw, onFw, s)
	if s.Redirected() < 40 {
		t.Fatalf("on: %d packets redirected, want >= 40: %v", s.Redirected(), s)
	}
	if mode == ModeXDP && s[XDPRedirect] == 0 {
		t.Fatalf("xdp: no XDP_REDIRECT: %v", s)
	}
	if onFw*10 > offFw {
		t.Fatalf("on: host still forwarded %d packets (off: %d)", onFw, offFw)
	}
	c.CloseIdleConnections()

	// Detach: counters freeze, no link left, traffic still flows.
	if err := f.Remove(a.host); err != nil {
		t.Fatal(err)
	}
	if err := f.Remove(b.host); err != nil {
		t.Fatal(err)
	}
	if n := attachedLinks(t, ids); n != 0 {
		t.Fatalf("after Remove: %d links still run our programs", n)
	}
	s0, _ := f.Stats()
	exchange(t, c, addr, 5, 100)
	s1, _ := f.Stats()
	if s1 != s0 {
		t.Fatalf("detached, counters moved: %v", s1.Sub(s0))
	}

	// Close detaches everything too.
	if err := f.AddPod(a.host, a.ns, a.peer); err != nil {
		t.Fatal(err)
	}
	if err := f.Close(); err != nil {
		t.Fatal(err)
	}
	if n := attachedLinks(t, ids); n != 0 {
		t.Fatalf("after Close: %d links still run our programs", n)
	}
	exchange(t, client(a), addr, 3, 100)
}

// TestNIC: traffic to and from "another node" through the NIC. The other
// node is a namespace behind a veth whose host side is registered with
// AddNIC (a stand-in uplink): pod -> NIC goes out by bpf_redirect to the
// NIC's egress (paper Fig. 6 ③), NIC -> pod is redirected into the pod
// from the NIC's receive path (①), by XDP_REDIRECT in ModeXDP.
func TestNIC(t *testing.T) {
	needRoot(t)
	for _, mode := range []Mode{ModeTC, ModeXDP} {
		t.Run(string(mode), func(t *testing.T) {
			forwardingLock(t)
			pod, node := newPod(t), newPod(t)
			addr := serve(t, node) // the server runs on the other node
			f, err := New(mode)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			if err := f.AddPod(pod.host, pod.ns, pod.peer); err != nil {
				t.Fatal(err)
			}
			// A real NIC delivers frames with complete checksums; the
			// veth standing in for it must too (see txChecksum).
			if err := InNetns(node.ns, func() error { off := false; _, err := txChecksum(node.peer, &off); return err }); err != nil {
				t.Fatal(err)
			}
			if err := f.AddNIC(node.host, false); err != nil {
				t.Fatal(err)
			}
			c := client(pod)
			defer c.CloseIdleConnections()
			fw0 := forwDatagrams(t)
			exchange(t, c, addr, 20, 100)
			fw := forwDatagrams(t) - fw0
			s, err := f.Stats()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: host forwarded %d; %v", mode, fw, s)
			if s[TCRedirect] < 20 {
				t.Fatalf("pod -> NIC: %d packets redirected to the NIC's egress, want >= 20", s[TCRedirect])
			}
			into := s[TCRedirectPeer]
			if mode == ModeXDP {
				into = s[XDPRedirect]
			}
			if into < 20 {
				t.Fatalf("NIC -> pod: %d packets redirected into the pod, want >= 20: %v", into, s)
			}
			if fw > 4 {
				t.Fatalf("the host forwarded %d packets", fw)
			}
		})
	}
}

// TestForeignVeth: a veth whose pod side the forwarder does not manage
// (AddPod without a namespace, as for a CNI plugin's veth): tc redirects
// into it and out of it; XDP is not attached to it and does not redirect
// into it (no XDP program on its peer): it leaves such packets to tc.
func TestForeignVeth(t *testing.T) {
	needRoot(t)
	a, b := newPod(t), newPod(t)
	addr := serve(t, b)
	f, err := New(ModeXDP)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.AddPod(a.host, a.ns, a.peer); err != nil {
		t.Fatal(err)
	}
	if err := f.AddPod(b.host, "", ""); err != nil {
		t.Fatal(err)
	}
	c := client(a)
	defer c.CloseIdleConnections()
	exchange(t, c, addr, 20, 100)
	s, err := f.Stats()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%v", s)
	if s[TCRedirectPeer] < 40 || s[XDPRedirect] != 0 || s[XDPPass] < 20 {
		t.Fatalf("want both ways by tc (redirect_peer), a's packets passed on by XDP: %v", s)
	}
}

// TestSyncVeths: the agent's rescan attaches to new matching veths and
// forgets deleted ones.
func TestSyncVeths(t *testing.T) {
	needRoot(t)
	f, err := New(ModeXDP)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	a := newPod(t)
	pattern := []string{strings.TrimSuffix(a.host, strconv.Itoa(podSeq)) + "*"}
	added, removed, err := f.SyncVeths(pattern)
	if err != nil || len(added) != 1 || added[0] != a.host || len(removed) != 0 {
		t.Fatalf("first sync: added %v removed %v: %v", added, removed, err)
	}
	if added, _, _ := f.SyncVeths(pattern); len(added) != 0 {
		t.Fatalf("second sync added %v again", added)
	}
	run(t, "ip", "link", "del", a.host)
	_, removed, err = f.SyncVeths(pattern)
	if err != nil || len(removed) != 1 || removed[0] != a.host {
		t.Fatalf("after delete: removed %v: %v", removed, err)
	}
	if len(f.Interfaces()) != 0 {
		t.Fatalf("still attached to %v", f.Interfaces())
	}
}

// forwardingLock: see internal/forwardlock.
func forwardingLock(t *testing.T) { forwardlock.Hold(t) }

// TestNftablesBypassed: an nftables rule on the host's forward hook counts
// the pods' packets while forwarding is off, and none once the forwarder is
// attached (tc and xdp): redirected packets never reach netfilter. Skips
// without nft.
func TestNftablesBypassed(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("needs nft (nftables)")
	}
	for _, mode := range []Mode{ModeTC, ModeXDP} {
		t.Run(string(mode), func(t *testing.T) {
			a, b := newPod(t), newPod(t)
			addr := serve(t, b)
			// Our pods' /16 (see newPod): only this process's packets count.
			subnet := strings.Join(strings.Split(a.hostIP, ".")[:2], ".") + ".0.0/16"
			table := fmt.Sprintf("spright_redirect_test_%d", os.Getpid())
			run(t, "nft", "add", "table", "inet", table)
			t.Cleanup(func() { exec.Command("nft", "delete", "table", "inet", table).Run() })
			run(t, "nft", "add", "chain", "inet", table, "sprfwd", "{ type filter hook forward priority 0 ; policy accept ; }")
			run(t, "nft", "add", "rule", "inet", table, "sprfwd", "ip", "saddr", subnet, "counter")
			counter := func() uint64 {
				out, err := exec.Command("nft", "list", "chain", "inet", table, "sprfwd").CombinedOutput()
				if err != nil {
					t.Fatalf("nft list chain: %v: %s", err, out)
				}
				f := strings.Fields(string(out))
				for i := 0; i+2 < len(f); i++ {
					if f[i] == "counter" && f[i+1] == "packets" {
						n, err := strconv.ParseUint(f[i+2], 10, 64)
						if err != nil {
							t.Fatal(err)
						}
						return n
					}
				}
				t.Fatalf("no counter in:\n%s", out)
				return 0
			}
			c := client(a)
			defer c.CloseIdleConnections()
			exchange(t, c, addr, 20, 100)
			c.CloseIdleConnections()
			time.Sleep(100 * time.Millisecond) // the FIN exchange, still on the stack path
			off := counter()
			if off < 40 {
				t.Fatalf("off: the nftables forward rule counted %d packets, want >= 40", off)
			}

			f, err := New(mode)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			for _, p := range []*pod{a, b} {
				if err := f.AddPod(p.host, p.ns, p.peer); err != nil {
					t.Fatal(err)
				}
			}
			exchange(t, c, addr, 20, 100)
			on := counter() - off
			s, _ := f.Stats()
			t.Logf("%s: nftables forward rule counted %d packets off, %d on; redirected %d", mode, off, on, s.Redirected())
			if on != 0 || s.Redirected() < 40 {
				t.Fatalf("%s: netfilter saw %d packets with forwarding on (%d redirected)", mode, on, s.Redirected())
			}
		})
	}
}
