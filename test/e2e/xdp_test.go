package e2e

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spright-dev/spright/internal/forwardlock"

	"github.com/cilium/ebpf"
	"github.com/cilium/ebpf/link"

	"github.com/spright-dev/spright/bpf/redirect"
	"github.com/spright-dev/spright/pkg/standalone"
)

// redirectYAML is the hello chain with the gateway in a namespace of its
// own and one client namespace: client -> gateway crosses two veths and the
// host, pod to pod, as an ingress pod talking to the gateway pod does.
const redirectYAML = `
name: hello
gatewayNetns: true
clientNetns: 1
pool: {slots: 256, slotSize: 16384, hugePages: false}
routes: {"*": [upper]}
functions:
  - name: upper
    routes: {"*": [reverse]}
  - name: reverse
`

// netnsClient makes its connections inside netns ns.
func netnsClient(ns string) *http.Client {
	tr := &http.Transport{DialContext: func(ctx context.Context, network, addr string) (c net.Conn, err error) {
		err = redirect.InNetns(ns, func() error {
			var d net.Dialer
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}}
	return &http.Client{Transport: tr, Timeout: 10 * time.Second}
}

// hostForwarded reads the host's forwarded-packet counter.
func hostForwarded(t *testing.T) uint64 {
	t.Helper()
	v, err := redirect.HostForwarded()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// linksOnPrograms counts kernel links running one of the programs ids.
func linksOnPrograms(t *testing.T, ids []ebpf.ProgramID) int {
	t.Helper()
	n, err := redirect.LinksRunning(ids)
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// runnerVeths are the host-side veths of the runner in this process
// (pkg/standalone names them sp<pid>h<k>).
func runnerVeths(t *testing.T) map[uint32]string {
	t.Helper()
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	prefix := fmt.Sprintf("sp%dh", os.Getpid()%100000)
	out := map[uint32]string{}
	for _, i := range ifs {
		if strings.HasPrefix(i.Name, prefix) {
			out[uint32(i.Index)] = i.Name
		}
	}
	return out
}

// xdpTCLinksOn lists the XDP and tcx links attached to ifindexes, whatever
// program they run.
func xdpTCLinksOn(t *testing.T, ifindexes map[uint32]string) []string {
	t.Helper()
	var found []string
	it := new(link.Iterator)
	defer it.Close()
	for it.Next() {
		l := it.Take()
		info, err := l.Info()
		l.Close()
		if err != nil {
			continue
		}
		if x := info.XDP(); x != nil && ifindexes[x.Ifindex] != "" {
			found = append(found, "xdp on "+ifindexes[x.Ifindex])
		}
		if x := info.TCX(); x != nil && ifindexes[x.Ifindex] != "" {
			found = append(found, "tcx on "+ifindexes[x.Ifindex])
		}
	}
	if err := it.Err(); err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("iterate links: %v", err)
	}
	return found
}

func helloFrom(t *testing.T, c *http.Client, url string, n int) {
	t.Helper()
	for i := 0; i < n; i++ {
		body := fmt.Sprintf("req-%d-abc", i)
		resp, err := c.Post(url, "text/plain", strings.NewReader(body))
		if err != nil {
			t.Fatalf("request %d from the client netns: %v", i, err)
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		want := reverseUpper(body)
		if err != nil || resp.StatusCode != 200 || string(b) != want {
			t.Fatalf("request %d: %d %q %v, want 200 %q", i, resp.StatusCode, b, err, want)
		}
	}
}

func reverseUpper(s string) string {
	b := []byte(strings.ToUpper(s))
	for i, j := 0, len(b)-1; i < j; i, j = i+1, j-1 {
		b[i], b[j] = b[j], b[i]
	}
	return string(b)
}

// TestRedirectXDP runs the hello chain with its gateway and a client in
// namespaces of their own, with eBPF forwarding off, tc and xdp: traffic
// flows in every mode; with forwarding on, the per-CPU counters show the
// packets were redirected and the host's IP forwarding path (where the
// iptables/nftables FORWARD hooks sit) saw none of them; with it off, no
// program is attached and the host forwards every packet. After Stop no
// link runs the programs and the namespaces are gone.
func TestRedirectXDP(t *testing.T) {
	needRoot(t)
	const n = 50
	var offForwarded uint64
	for _, mode := range []string{"off", "tc", "xdp"} {
		t.Run(mode, func(t *testing.T) {
			forwardingLock(t)
			c := startChainWith(t, redirectYAML, func(o *standalone.Options) { o.Redirect = mode })
			if c.GatewayNetns() == "" || len(c.ClientNetns()) != 1 {
				t.Fatalf("gateway netns %q, client netns %v", c.GatewayNetns(), c.ClientNetns())
			}
			if string(c.RedirectMode()) != mode {
				t.Fatalf("redirect mode %q, want %q", c.RedirectMode(), mode)
			}
			cl := netnsClient(c.ClientNetns()[0])
			defer cl.CloseIdleConnections()

			fw0 := hostForwarded(t)
			helloFrom(t, cl, c.url, n)
			forwarded := hostForwarded(t) - fw0

			if mode == "off" {
				if c.Forwarder() != nil {
					t.Fatal("redirect off, but a forwarder is loaded")
				}
				veths := runnerVeths(t)
				if len(veths) != 4 {
					t.Fatalf("found host veths %v, want 4 (2 functions, gateway, client)", veths)
				}
				if l := xdpTCLinksOn(t, veths); len(l) != 0 {
					t.Fatalf("redirect off, but programs are attached: %v", l)
				}
				// Each request is at least 2 packets each way on a keep-alive connection.
				if forwarded < 2*n {
					t.Fatalf("off: the host forwarded %d packets for %d requests", forwarded, n)
				}
				offForwarded = forwarded
				t.Logf("off: host forwarded %d packets for %d requests", forwarded, n)
				return
			}

			f := c.Forwarder()
			if f == nil {
				t.Fatal("no forwarder")
			}
			s, err := f.Stats()
			if err != nil {
				t.Fatal(err)
			}
			ids, err := f.ProgramIDs()
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("%s: host forwarded %d packets (off: %d); %v", mode, forwarded, offForwarded, s)
			if s.Redirected() < 2*n {
				t.Fatalf("%s: %d packets redirected for %d requests: %v", mode, s.Redirected(), n, s)
			}
			if mode == "xdp" && s[redirect.XDPRedirect] == 0 {
				t.Fatalf("xdp: nothing took XDP_REDIRECT: %v", s)
			}
			if mode == "tc" && s[redirect.TCRedirectPeer] == 0 {
				t.Fatalf("tc: nothing took bpf_redirect_peer: %v", s)
			}
			// A few packets may be forwarded by the stack (another
			// test's traffic on the host), not the requests.
			if forwarded > n/5 {
				t.Fatalf("%s: the host still forwarded %d packets for %d requests", mode, forwarded, n)
			}
			// 4 pods (2 functions, gateway, client): tc on each, and in xdp
			// mode xdp on both sides of each veth.
			want := 4
			if mode == "xdp" {
				want = 12
			}
			if got := linksOnPrograms(t, ids); got != want {
				t.Fatalf("%s: %d links run the forwarding programs, want %d", mode, got, want)
			}
			nets := append([]string{c.GatewayNetns()}, c.ClientNetns()...)
			if err := c.Stop(); err != nil {
				t.Fatal(err)
			}
			if got := linksOnPrograms(t, ids); got != 0 {
				t.Fatalf("after Stop: %d links still run the forwarding programs", got)
			}
			out, _ := exec.Command("ip", "netns", "list").Output()
			for _, ns := range nets {
				if strings.Contains(string(out), ns) {
					t.Fatalf("after Stop: netns %s still exists", ns)
				}
			}
		})
	}
}

// forwardingLock: see internal/forwardlock.
func forwardingLock(t *testing.T) { forwardlock.Hold(t) }

// TestRedirectCLI: `spright run --redirect xdp --gateway-netns
// --client-netns 1` as a user runs it: the chain answers from the client
// namespace, XDP and tc are attached to the runner's veths while it runs,
// and Ctrl-C leaves no attachment and no namespace behind.
func TestRedirectCLI(t *testing.T) {
	needRoot(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "chain.yaml")
	if err := os.WriteFile(file, []byte(strings.Replace(redirectYAML, "gatewayNetns: true\nclientNetns: 1\n", "", 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(spright, "run", "-f", file, "--listen", "127.0.0.1:0", "--admin-listen", "",
		"--pin-dir", fmt.Sprintf("/sys/fs/bpf/spright-redirect-cli-%d", os.Getpid()), "--control", filepath.Join(dir, "ctl.sock"),
		"--redirect", "xdp", "--gateway-netns", "--client-netns", "1")
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
		done <- cmd.Wait()
	}()
	t.Cleanup(func() {
		cmd.Process.Kill()
		for range lines {
		}
		<-done
	})
	var ns, url string
	deadline := time.After(30 * time.Second)
	for ns == "" {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatal("spright run exited before serving")
			}
			// spright: client netns NS — try: ip netns exec NS curl -d abc http://ADDR/
			if i := strings.Index(l, "client netns "); i >= 0 && strings.Contains(l, "http://") {
				ns = strings.Fields(l[i+len("client netns "):])[0]
				url = l[strings.Index(l, "http://"):]
			}
		case <-deadline:
			t.Fatal("no client netns line from spright run")
		}
	}
	cl := netnsClient(ns)
	helloFrom(t, cl, url, 10)
	cl.CloseIdleConnections()

	// sp<pid>h<k>: the runner's host-side veths (functions, gateway, client).
	ifs, err := net.Interfaces()
	if err != nil {
		t.Fatal(err)
	}
	veths := map[uint32]string{}
	prefix := fmt.Sprintf("sp%dh", cmd.Process.Pid%100000)
	for _, i := range ifs {
		if strings.HasPrefix(i.Name, prefix) {
			veths[uint32(i.Index)] = i.Name
		}
	}
	if len(veths) != 4 {
		t.Fatalf("runner veths %v, want 4", veths)
	}
	if l := xdpTCLinksOn(t, veths); len(l) != 8 {
		t.Fatalf("attachments on the runner's veths: %v, want xdp and tcx on each of 4", l)
	}
	cmd.Process.Signal(os.Interrupt)
	select {
	case err := <-done:
		done <- err
		if err != nil {
			t.Fatalf("spright run: %v", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("spright run did not stop on SIGINT")
	}
	if l := xdpTCLinksOn(t, veths); len(l) != 0 {
		t.Fatalf("after Ctrl-C: %v", l)
	}
	out, _ := exec.Command("ip", "netns", "list").Output()
	if strings.Contains(string(out), ns) {
		t.Fatalf("after Ctrl-C: netns %s still exists", ns)
	}
}
