package gateway_test

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spright-dev/spright/pkg/control"
	"github.com/spright-dev/spright/pkg/gateway"
)

// FuzzIngest feeds raw HTTP/1.1 requests (as a client could send them)
// through the gateway's handler and a real chain: whatever the bytes, the
// gateway answers with a status it documents, and no slot leaks.
func FuzzIngest(f *testing.F) {
	f.Add([]byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\nX-Spright-Topic: nope\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + string(bytes.Repeat([]byte("a"), 5000))))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfff\r\n"))
	e := start(f, gateway.ModeSkMsg, 16, 2*time.Second)
	e.fn(f, "upper", upper)
	e.fn(f, "reverse", reverse)
	h := e.g.Handler(e.c)
	free := e.c.Pool().FreeCount()
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return // net/http's parser refused it: never reaches the gateway
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case 200, 400, 404, 413, 503:
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, raw, rec.Body.String())
		}
		if rec.Code == 200 && rec.Body.Len() > 4096 {
			t.Fatalf("response of %d bytes from 4 KiB slots", rec.Body.Len())
		}
		if n := e.c.Pool().FreeCount(); n != free {
			t.Fatalf("free slots %d after %q, want %d", n, raw, free)
		}
	})
}

// FuzzControl drives a live gateway's control socket with a session of two
// raw messages (hello/pod first, then join/splice/count/... or garbage), as
// a local process could: the gateway answers or hangs up, never crashes,
// never registers a member that did not join properly, and when the session
// ends nothing is left of it (members, eBPF metrics entries, pool slots).
// Seeds in testdata/fuzz/FuzzControl.
func FuzzControl(f *testing.F) {
	msg := func(m control.Message) []byte { b, _ := json.Marshal(m); return b }
	hello := msg(control.Message{Type: control.TypeHello, Chain: "hello", Function: "upper"})
	pod := msg(control.Message{Type: control.TypePod, Namespace: "default", Revision: "r-00001", PodName: "p"})
	for _, s := range [][2][]byte{
		{hello, msg(control.Message{Type: control.TypeJoin})},
		{msg(control.Message{Type: control.TypeHello, Chain: "hello", Function: "reverse", Previous: 1}), msg(control.Message{Type: control.TypeJoined})},
		{pod, msg(control.Message{Type: control.TypeCount, Side: "arrival"})},
		{pod, msg(control.Message{Type: control.TypeSplice, Side: "proxied"})},
		{pod, msg(control.Message{Type: control.TypeUnsplice})},
		{msg(control.Message{Type: control.TypeWelcome, Instance: 1}), msg(control.Message{Type: control.TypeError, Error: "x"})},
		{msg(control.Message{Type: control.TypeSpliced}), nil},
		{[]byte(`{"type":"pod","namespace":"a"}`), nil},
		{[]byte{0xff, 0}, []byte(`{}`)},
	} {
		f.Add(s[0], s[1])
	}
	e := start(f, gateway.ModeSkMsg, 16, 2*time.Second)
	e.fn(f, "upper", upper)
	e.fn(f, "reverse", reverse)
	free := e.c.Pool().FreeCount()
	base, err := e.g.Datapath().AllMetrics()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, first, second []byte) {
		if len(first) == 0 || len(first) > control.MaxMessage || len(second) > control.MaxMessage {
			return
		}
		c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: e.sock, Net: "unixpacket"})
		if err != nil {
			t.Fatal(err)
		}
		conn := control.NewConn(c)
		exchange := func(raw []byte) {
			if _, _, err := c.WriteMsgUnix(raw, nil, nil); err != nil {
				return // the gateway hung up already
			}
			c.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
			_, fds, _ := conn.Recv()
			for _, fd := range fds {
				unix.Close(fd)
			}
		}
		exchange(first)
		if len(second) > 0 {
			exchange(second)
		}
		c.Close()
		// The session's traces go once the gateway has seen it end.
		deadline := time.Now().Add(2 * time.Second)
		for {
			all, err := e.g.Datapath().AllMetrics()
			if err != nil {
				t.Fatal(err)
			}
			if len(all) == len(base) && e.c.InstanceCount("upper") == 1 && e.c.InstanceCount("reverse") == 1 {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("after %q, %q: %d metrics entries (want %d), %d upper and %d reverse instances (want 1 each)",
					first, second, len(all), len(base), e.c.InstanceCount("upper"), e.c.InstanceCount("reverse"))
			}
			time.Sleep(5 * time.Millisecond)
		}
		if n := e.c.Pool().FreeCount(); n != free {
			t.Fatalf("free slots %d after %q, %q, want %d", n, first, second, free)
		}
		// The real members still serve.
		if resp, err := e.g.Invoke(e.c, "", strings.NewReader("abc"), 3, nil); err != nil || string(resp.Body) != "CBA" {
			t.Fatalf("after %q, %q: %v", first, second, err)
		} else {
			resp.Release()
		}
	})
}
