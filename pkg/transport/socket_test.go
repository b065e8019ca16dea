package transport

import (
	"errors"
	"io"
	"testing"
	"time"

	"github.com/spright-dev/spright/pkg/descriptor"
)

// TestSocketFraming checks the socket's own reading and writing over the
// plain TCP pair (no sockhash: the peer end stands in for the program's
// redirect): descriptors split across writes, a burst larger than one
// read's batch, and Send's bytes.
func TestSocketFraming(t *testing.T) {
	s, err := NewSocket()
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	d := func(i int) descriptor.Descriptor {
		return descriptor.Descriptor{Next: uint32(i), Chain: 7, Flags: 1, Slot: uint32(i * 3), Len: uint32(i + 1)}
	}
	// One descriptor in two halves, a moment apart: Recv must wait for
	// the second half.
	b := d(1).Bytes()
	go func() {
		s.peer.Write(b[:5])
		time.Sleep(20 * time.Millisecond)
		s.peer.Write(b[5:])
	}()
	if got, err := s.Recv(); err != nil || got != d(1) {
		t.Fatalf("split descriptor: got %v, %v; want %v", got, err, d(1))
	}
	// A burst of 3×readBatch+5 descriptors in one write, then one more
	// descriptor's worth after a pause.
	n := 3*readBatch + 5
	var burst []byte
	for i := 0; i < n; i++ {
		x := d(i + 2).Bytes()
		burst = append(burst, x[:]...)
	}
	if _, err := s.peer.Write(burst); err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		if got, err := s.Recv(); err != nil || got != d(i+2) {
			t.Fatalf("burst %d: got %v, %v; want %v", i, got, err, d(i+2))
		}
	}
	if err := s.Send(d(9)); err != nil {
		t.Fatal(err)
	}
	var out [descriptor.Size]byte
	s.peer.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := io.ReadFull(s.peer, out[:]); err != nil || out != d(9).Bytes() {
		t.Fatalf("Send: peer read %x, %v; want %x", out, err, d(9).Bytes())
	}
	// Close ends a blocked Recv with ErrClosed.
	errc := make(chan error, 1)
	go func() { _, err := s.Recv(); errc <- err }()
	time.Sleep(20 * time.Millisecond)
	s.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("Recv after Close: %v, want ErrClosed", err)
		}
	case <-time.After(2 * time.Second):
		t.Fatal("Recv still blocked 2s after Close")
	}
	if err := s.Send(d(1)); err == nil {
		t.Fatal("Send after Close succeeded")
	}
}
