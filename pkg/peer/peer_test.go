package peer

import (
	"bytes"
	"context"
	"errors"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"
)

var key = []byte("0123456789abcdef-cluster-key")

// pair returns both ends of an authenticated connection over TCP loopback.
func pair(t *testing.T, clientKey, serverKey []byte) (*Conn, *Conn, error, error) {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	type res struct {
		c   *Conn
		err error
	}
	srv := make(chan res, 1)
	go func() {
		nc, err := l.Accept()
		if err != nil {
			srv <- res{nil, err}
			return
		}
		c, err := Server(nc, "node-b", serverKey)
		if err != nil {
			nc.Close()
		}
		srv <- res{c, err}
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, cerr := Dial(ctx, l.Addr().String(), "node-a", clientKey)
	s := <-srv
	if c != nil {
		t.Cleanup(func() { c.Close() })
	}
	if s.c != nil {
		t.Cleanup(func() { s.c.Close() })
	}
	return c, s.c, cerr, s.err
}

func TestFramesRoundTrip(t *testing.T) {
	a, b, err1, err2 := pair(t, key, key)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	if a.Peer != "node-b" || b.Peer != "node-a" {
		t.Fatalf("peers %q %q", a.Peer, b.Peer)
	}
	frames := []*Frame{
		{Type: TypeServe, Chain: "default.hello", Function: "reverse", Instances: 3, Concurrency: 10},
		{Type: TypeRequest, Chain: "default.hello", Function: "reverse", Origin: Origin{Node: "node-a", Slot: 7, Gen: 99},
			RequestID: 1 << 40, Topic: "checkout", Itinerary: []string{"email", "payment"}, Hops: 3, Payload: []byte("ABC")},
		{Type: TypeResult, Chain: "default.hello", Origin: Origin{Node: "node-a", Slot: 7, Gen: 99}, RequestID: 5, Status: 0, Payload: bytes.Repeat([]byte("x"), 70000)},
		{Type: TypeFail, Chain: "c", Origin: Origin{Node: "node-a", Slot: 1, Gen: 2}, Status: 503, Msg: "no instance"},
		{Type: TypeRequest, Chain: "c", Function: "f", Origin: Origin{Node: "n"}},
	}
	go func() {
		for _, f := range frames {
			if err := a.Send(f); err != nil {
				t.Error(err)
			}
		}
	}()
	for i, want := range frames {
		var got Frame
		var slot []byte
		if err := b.Recv(&got, func(n int) []byte { slot = make([]byte, n+10); return slot }); err != nil {
			t.Fatalf("frame %d: %v", i, err)
		}
		if len(want.Payload) > 0 && &got.Payload[0] != &slot[0] {
			t.Errorf("frame %d: payload not read into the buffer alloc gave", i)
		}
		if len(got.Payload) == 0 {
			got.Payload = nil
		}
		if len(got.Itinerary) == 0 {
			got.Itinerary = nil
		}
		if !reflect.DeepEqual(&got, want) {
			t.Errorf("frame %d: got %+v, want %+v", i, got, *want)
		}
	}
}

// TestWrongKey: a node without the cluster's key is refused, whichever side
// it is on.
func TestWrongKey(t *testing.T) {
	other := []byte("another-key-of-16-or-more")
	for _, keys := range [][2][]byte{{other, key}, {key, other}} {
		_, _, cerr, serr := pair(t, keys[0], keys[1])
		if cerr == nil || serr == nil || !(errors.Is(cerr, ErrAuth) || errors.Is(serr, ErrAuth)) {
			t.Errorf("keys differ: client %v, server %v; want both refused, one with ErrAuth", cerr, serr)
		}
	}
	// A client that does not hold the key and answers the server's
	// challenge with a guess.
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		nc, err := net.Dial("tcp", l.Addr().String())
		if err != nil {
			return
		}
		defer nc.Close()
		nc.Write(appendHello(nil, "intruder", make([]byte, nonceSize)))
		buf := make([]byte, 512)
		nc.Read(buf)
		nc.Write(bytes.Repeat([]byte{7}, macSize))
		nc.Read(buf)
	}()
	nc, err := l.Accept()
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	if _, err := Server(nc, "node-b", key); !errors.Is(err, ErrAuth) || !strings.Contains(err.Error(), "intruder") {
		t.Errorf("guessing client: %v, want ErrAuth naming it", err)
	}
	if _, err := Client(nil, "n", []byte("short")); err == nil {
		t.Error("a 5-byte key was accepted")
	}
}

// TestTamperedAndReplayed: a frame changed on the wire, or an authentic
// frame sent again, fails authentication.
func TestTamperedAndReplayed(t *testing.T) {
	// Capture what a client sends, after the handshake, on a real pair.
	a, b, err1, err2 := pair(t, key, key)
	if err1 != nil || err2 != nil {
		t.Fatal(err1, err2)
	}
	f := &Frame{Type: TypeResult, Chain: "c", Origin: Origin{Node: "n", Slot: 1, Gen: 1}, Payload: []byte("hello")}
	var wire bytes.Buffer
	a.sendMu.Lock()
	hdr, _ := appendHeader(make([]byte, 8), f)
	putLens(hdr, len(f.Payload))
	sum := a.frameMAC(a.sendKey, a.sendSeq, hdr, f.Payload)
	a.sendMu.Unlock()
	wire.Write(hdr)
	wire.Write(f.Payload)
	wire.Write(sum)
	raw := wire.Bytes()

	// Replayed: the same bytes twice; the second has the wrong sequence.
	go a.c.Write(append(append([]byte(nil), raw...), raw...))
	var got Frame
	if err := b.Recv(&got, nil); err != nil {
		t.Fatalf("authentic frame: %v", err)
	}
	if err := b.Recv(&got, nil); !errors.Is(err, ErrAuth) {
		t.Errorf("replayed frame: %v, want ErrAuth", err)
	}

	// Tampered: one payload byte flipped.
	a2, b2, _, _ := pair(t, key, key)
	bad := append([]byte(nil), raw...)
	bad[len(hdr)+1] ^= 0x20
	go a2.c.Write(bad)
	if err := b2.Recv(&got, nil); !errors.Is(err, ErrAuth) {
		t.Errorf("tampered frame: %v, want ErrAuth", err)
	}
}

func putLens(hdr []byte, payload int) {
	hl := len(hdr) - 8
	hdr[0], hdr[1], hdr[2], hdr[3] = byte(hl), byte(hl>>8), byte(hl>>16), byte(hl>>24)
	hdr[4], hdr[5], hdr[6], hdr[7] = byte(payload), byte(payload>>8), byte(payload>>16), byte(payload>>24)
}

func TestOversizedAndGarbage(t *testing.T) {
	// A length beyond MaxFrame is refused before anything is allocated.
	a, b, _, _ := pair(t, key, key)
	go a.c.Write([]byte{0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0})
	var f Frame
	if err := b.Recv(&f, nil); !errors.Is(err, ErrTooLarge) {
		t.Errorf("huge length: %v, want ErrTooLarge", err)
	}
	// A peer that goes away mid-stream: an error, not a hang.
	a2, b2, _, _ := pair(t, key, key)
	a2.Close()
	if err := b2.Recv(&f, nil); err == nil {
		t.Error("closed stream gave no error")
	}
	if _, err := appendHeader(nil, &Frame{Type: 9}); !errors.Is(err, ErrMalformed) {
		t.Errorf("unknown type encoded: %v", err)
	}
	long := string(bytes.Repeat([]byte("n"), MaxName+1))
	if _, err := appendHeader(nil, &Frame{Type: TypeServe, Chain: long}); !errors.Is(err, ErrMalformed) {
		t.Errorf("overlong name encoded: %v", err)
	}
	if err := (&Conn{}).Send(&Frame{Type: TypeResult, Payload: make([]byte, MaxFrame+1)}); !errors.Is(err, ErrTooLarge) {
		t.Errorf("oversized payload: %v", err)
	}
}

// FuzzDecode: any bytes as a frame header: an error or a frame that
// encodes back to the same bytes; never a panic.
func FuzzDecode(f *testing.F) {
	for _, fr := range []*Frame{
		{Type: TypeServe, Chain: "c", Function: "f", Instances: 1},
		{Type: TypeRequest, Chain: "c", Function: "f", Origin: Origin{Node: "n", Slot: 1}, Topic: "t", Itinerary: []string{"a", "b"}},
		{Type: TypeResult, Chain: "c", Origin: Origin{Node: "n"}},
		{Type: TypeFail, Chain: "c", Origin: Origin{Node: "n"}, Status: 503, Msg: "m"},
	} {
		b, _ := appendHeader(nil, fr)
		f.Add(b)
	}
	f.Add([]byte{2, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		var fr Frame
		n, err := decodeHeader(b, &fr)
		if err != nil {
			return
		}
		if n != 0 {
			return // a payload after the header: not a header alone
		}
		again, err := appendHeader(nil, &fr)
		if err != nil {
			t.Fatalf("decoded %+v does not encode: %v", fr, err)
		}
		if !bytes.Equal(again, b) {
			t.Fatalf("round trip: %x -> %+v -> %x", b, fr, again)
		}
	})
}

// FuzzConn: a peer that completed the handshake (it had the key) then sends
// garbage: Recv returns an error, never panics, never allocates beyond
// MaxFrame.
func FuzzConn(f *testing.F) {
	f.Add([]byte{1, 0, 0, 0, 0, 0, 0, 0, 1})
	f.Add([]byte{0xff, 0xff, 0xff, 0x7f, 0, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		x, y := net.Pipe()
		defer x.Close()
		defer y.Close()
		go func() { x.Write(b); x.Close() }()
		c := &Conn{c: y, recvKey: key}
		c.r = newReader(y)
		var fr Frame
		for i := 0; i < 4; i++ {
			if err := c.Recv(&fr, nil); err != nil {
				return
			}
		}
	})
}
