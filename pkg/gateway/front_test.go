package gateway

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestListenHTTP serves through frontConn: kept-alive and Connection:
// close requests, a body large enough that writes meet a full socket
// (EAGAIN, the netpoller wait, the rest written after), and a read
// deadline (ReadHeaderTimeout) that must still end a silent connection.
func TestListenHTTP(t *testing.T) {
	ln, err := ListenHTTP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{ReadHeaderTimeout: 200 * time.Millisecond, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			http.Error(w, err.Error(), 400)
			return
		}
		w.Write(bytes.Repeat(b, 1+(4<<20)/max(1, len(b))))
	})}
	go srv.Serve(ln)
	defer srv.Close()
	url := "http://" + ln.Addr().String() + "/"
	for _, close := range []bool{false, true} {
		client := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: close}}
		for i := 0; i < 20; i++ {
			body := strings.Repeat("x", 1+i*997)
			resp, err := client.Post(url, "text/plain", strings.NewReader(body))
			if err != nil {
				t.Fatalf("close=%v request %d: %v", close, i, err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			want := len(body) * (1 + (4<<20)/len(body))
			if err != nil || resp.StatusCode != 200 || len(got) != want || strings.Trim(string(got), "x") != "" {
				t.Fatalf("close=%v request %d: %d, %d bytes, %v; want 200 and %d bytes of x", close, i, resp.StatusCode, len(got), err, want)
			}
		}
		client.CloseIdleConnections()
	}
	// A client that never sends its headers is cut off by the deadline.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	start := time.Now()
	if n, err := c.Read(make([]byte, 1)); err != io.EOF {
		t.Fatalf("silent client: read %d, %v; want EOF when the server gives up", n, err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("silent client cut off after %v, want about ReadHeaderTimeout (200ms)", d)
	}
}

// TestListenHTTPNoKeepAlive: accepted connections get no TCP keep-alive
// (what saves the setsockopt calls per connection).
func TestListenHTTPNoKeepAlive(t *testing.T) {
	ln, err := ListenHTTP("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		if c, err := net.Dial("tcp", ln.Addr().String()); err == nil {
			time.Sleep(time.Second)
			c.Close()
		}
	}()
	c, err := ln.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fc, ok := c.(*frontConn)
	if !ok {
		t.Fatalf("accepted %T, want *frontConn", c)
	}
	var ka int
	var serr error
	if err := fc.raw.Control(func(fd uintptr) { ka, serr = unix.GetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_KEEPALIVE) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
	if ka != 0 {
		t.Errorf("SO_KEEPALIVE = %d on an accepted connection, want 0", ka)
	}
}
