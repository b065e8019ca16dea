package control

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

func pair(t *testing.T) (*Conn, *Conn) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ctl.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if st, err := os.Stat(path); err != nil || st.Mode().Perm() != 0o660 {
		t.Fatalf("socket mode %v %v, want 0660", st.Mode(), err)
	}
	ch := make(chan *net.UnixConn, 1)
	go func() {
		c, _ := l.AcceptUnix()
		ch <- c
	}()
	client, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	server := NewConn(<-ch)
	t.Cleanup(func() { client.Close(); server.Close() })
	return client, server
}

func TestMessageWithFDs(t *testing.T) {
	client, server := pair(t)
	f, err := os.CreateTemp(t.TempDir(), "x")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("hello")
	if err := server.Send(Message{Type: TypeWelcome, Instance: 7, ChainID: 3}, int(f.Fd())); err != nil {
		t.Fatal(err)
	}
	m, fds, err := client.Expect(TypeWelcome)
	if err != nil {
		t.Fatal(err)
	}
	if m.Instance != 7 || m.ChainID != 3 || len(fds) != 1 {
		t.Fatalf("got %+v fds=%v", m, fds)
	}
	buf := make([]byte, 5)
	if n, _ := unix.Pread(fds[0], buf, 0); string(buf[:n]) != "hello" {
		t.Fatalf("received fd reads %q", buf[:n])
	}
	unix.Close(fds[0])
	cred, err := server.PeerCred()
	if err != nil || int(cred.Pid) != os.Getpid() {
		t.Fatalf("peer cred %+v %v", cred, err)
	}
}

func TestErrorsAndMalformed(t *testing.T) {
	client, server := pair(t)
	server.Send(Message{Type: TypeError, Error: "no such chain"})
	if _, _, err := client.Expect(TypeWelcome); err == nil || err.Error() != "control: gateway refused: no such chain" {
		t.Fatalf("error message: %v", err)
	}
	server.Send(Message{Type: TypeJoined})
	if _, _, err := client.Expect(TypeWelcome); !errors.Is(err, ErrMalformed) {
		t.Fatalf("unexpected type: %v", err)
	}
	for _, raw := range [][]byte{[]byte("not json"), []byte(`{"chain":"x"}`), make([]byte, MaxMessage+10)} {
		if _, _, err := server.c.WriteMsgUnix(raw, nil, nil); err != nil {
			t.Fatal(err)
		}
		if _, _, err := client.Recv(); !errors.Is(err, ErrMalformed) {
			t.Fatalf("Recv(%.20q) = %v, want ErrMalformed", raw, err)
		}
	}
	// More descriptors than allowed: refused, and none leaks to the receiver.
	var fds []int
	for i := 0; i < maxFDs+2; i++ {
		fd, _ := unix.Dup(0)
		fds = append(fds, fd)
	}
	server.Send(Message{Type: TypeJoin}, fds...)
	if _, got, err := client.Recv(); err == nil || got != nil {
		t.Fatalf("too many fds: %v %v", got, err)
	}
}

// FuzzRecv: whatever bytes arrive on the control socket, Recv returns a
// message or an error and never panics.
func FuzzRecv(f *testing.F) {
	f.Add([]byte(`{"type":"hello","chain":"hello","function":"upper"}`))
	f.Add([]byte(`{"type":"join"}`))
	f.Add([]byte(`{"type":""}`))
	f.Add([]byte(`{"type":"welcome","instance":-1}`))
	f.Add([]byte{0})
	path := filepath.Join(f.TempDir(), "ctl.sock")
	l, err := Listen(path)
	if err != nil {
		f.Fatal(err)
	}
	defer l.Close()
	ch := make(chan *net.UnixConn, 1)
	go func() {
		c, _ := l.AcceptUnix()
		ch <- c
	}()
	client, err := Dial(path)
	if err != nil {
		f.Fatal(err)
	}
	server := <-ch
	f.Fuzz(func(t *testing.T, raw []byte) {
		if len(raw) == 0 || len(raw) > MaxMessage {
			return
		}
		if _, _, err := server.WriteMsgUnix(raw, nil, nil); err != nil {
			t.Fatal(err)
		}
		m, fds, err := client.Recv()
		if err == nil && (m.Type == "" || fds != nil) {
			t.Fatalf("accepted %q as %+v", raw, m)
		}
	})
}
