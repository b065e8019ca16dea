package e2e

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestEproxyBoundsWhatASlowReaderHolds: a client reading a 1 GB answer
// slowly must not make the pod's node hold the answer. The user container
// writes 1 GiB as fast as the socket takes it; the client, with a small
// receive window, reads 2 MiB a second for 3 s; what the user container
// got rid of minus what the client read is what the system holds for the
// connection. Steered, that is the user container's own send buffer (as
// without a sidecar); through EPROXY in userspace (the activator's
// connections), the send buffer plus EPROXY's bounded buffers
// (SPRIGHT_PROXY_BUFFER_BYTES, 1 MiB by default). Spliced, as before,
// the kernel took the whole answer into the splice's backlog.
func TestEproxyBoundsWhatASlowReaderHolds(t *testing.T) {
	var written atomic.Int64
	const total = 1 << 30
	chunk := make([]byte, 64<<10)
	pod, ep, _ := startSteeredPod(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path != "/big" {
			io.WriteString(w, "user")
			return
		}
		w.Header().Set("Content-Length", fmt.Sprint(total))
		for n := 0; n < total; n += len(chunk) {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			written.Add(int64(len(chunk)))
		}
	}))
	_ = ep

	// A slow reader: 64 KiB receive buffer, 2 MiB a second.
	slowRead := func(t *testing.T, from string, header string) int64 {
		t.Helper()
		written.Store(0)
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(from)}, Control: func(_, _ string, rc syscall.RawConn) error {
			rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUF, 64<<10) })
			return nil
		}}
		c, err := d.Dial("tcp", net.JoinHostPort(pod.podIP, "8012"))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		fmt.Fprintf(c, "GET /big HTTP/1.1\r\nHost: hello.default\r\n%s\r\n", header)
		br := bufio.NewReaderSize(c, 4096)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		var read int64
		buf := make([]byte, 64<<10)
		for range 30 {
			for n := 0; n < 200<<10; {
				k, err := resp.Body.Read(buf)
				if err != nil {
					t.Fatalf("slow read: %v", err)
				}
				n += k
				read += int64(k)
			}
			time.Sleep(100 * time.Millisecond)
		}
		held := written.Load() - read
		t.Logf("%s: the user container wrote %d MiB, the client read %d MiB: %.1f MiB held for it", from, written.Load()>>20, read>>20, float64(held)/(1<<20))
		return held
	}

	// Steered: the client's first request teaches EPROXY (answered with
	// Connection: close), its next connection is the kernel's.
	c, err := (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(pod.clientIP)}}).Dial("tcp", net.JoinHostPort(pod.podIP, "8012"))
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: hello.default\r\n\r\n")
	if resp, err := http.ReadResponse(bufio.NewReader(c), nil); err != nil || !resp.Close {
		t.Fatalf("first request of a new client: %v (want an answer with Connection: close)", err)
	}
	c.Close()
	// The user container's send buffer (net.ipv4.tcp_wmem's maximum is 4
	// MiB) and the small client window: 8 MiB leaves room for the
	// kernel's accounting overhead.
	if held := slowRead(t, pod.clientIP, ""); held > 8<<20 {
		t.Errorf("steered: %d MiB held for a slow reader, want at most 8", held>>20)
	}
	// The node's own address (never steered) with the activator's header:
	// EPROXY proxies it in userspace. User container's send buffer, 2×1 MiB
	// upstream receive buffer, 2×1 MiB client send buffer, Go's copy buffer.
	if held := slowRead(t, pod.hostIP, "K-Proxy-Request: activator\r\n"); held > 12<<20 {
		t.Errorf("through EPROXY: %d MiB held for a slow reader, want at most 12", held>>20)
	}
}
