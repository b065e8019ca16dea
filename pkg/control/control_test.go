package control

import (
	"encoding/json"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
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

// FuzzRecv: whatever bytes (and however many fds, 0..5) arrive on the
// control socket, Recv returns a message or an error, never panics, never
// leaks a received fd (more than maxFDs, or with a malformed message: all
// closed), and what it decodes survives a Send/Recv round trip unchanged.
// Seeds for every message type are in testdata/fuzz/FuzzRecv.
func FuzzRecv(f *testing.F) {
	for _, m := range []Message{
		{Type: TypeHello, Chain: "hello", Function: "upper", Previous: 7},
		{Type: TypeWelcome, Instance: 3, ChainID: 1, FunctionIndex: 2, Mode: "skmsg", Concurrency: 10, Ring: 4},
		{Type: TypeJoin}, {Type: TypeJoined, Instance: 3}, {Type: TypeError, Error: "no"},
		{Type: TypePod, Namespace: "default", Revision: "hello-00001", PodName: "hello-abc"},
		{Type: TypeSplice, Side: "proxied"}, {Type: TypeSpliced}, {Type: TypeUnsplice}, {Type: TypeCount, Side: "arrival"},
	} {
		b, _ := json.Marshal(m)
		f.Add(b, uint8(0))
	}
	f.Add([]byte(`{"type":"welcome","instance":-1}`), uint8(1))
	f.Add([]byte(`{"type":""}`), uint8(2))
	f.Add([]byte{0}, uint8(5))
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
	devnull, err := os.Open(os.DevNull)
	if err != nil {
		f.Fatal(err)
	}
	defer devnull.Close()
	f.Fuzz(func(t *testing.T, raw []byte, nfds uint8) {
		if len(raw) == 0 || len(raw) > MaxMessage {
			return
		}
		n := int(nfds % 6)
		var oob []byte
		if n > 0 {
			fds := make([]int, n)
			for i := range fds {
				fds[i] = int(devnull.Fd())
			}
			oob = unix.UnixRights(fds...)
		}
		open0 := openFDs(t)
		if _, _, err := server.WriteMsgUnix(raw, oob, nil); err != nil {
			t.Fatal(err)
		}
		m, fds, err := client.Recv()
		switch {
		case err != nil && fds != nil:
			t.Fatalf("error %v with fds %v", err, fds)
		case err == nil && m.Type == "":
			t.Fatalf("accepted %q as %+v", raw, m)
		case err == nil && len(fds) != n:
			t.Fatalf("%d fds sent, %d received", n, len(fds))
		case n > maxFDs && !errors.Is(err, ErrTooManyFDs) && !errors.Is(err, ErrMalformed):
			t.Fatalf("%d fds: %v, want ErrTooManyFDs or ErrMalformed (truncated)", n, err)
		}
		for _, fd := range fds {
			unix.Close(fd)
		}
		if got := openFDs(t); got != open0 {
			t.Fatalf("%d open fds after %q with %d fds, %d before: leaked", got, raw, n, open0)
		}
		if err != nil {
			return
		}
		// Round trip: what was decoded is what gets encoded and decoded.
		if err := (&Conn{c: server}).Send(m); err != nil {
			t.Fatal(err)
		}
		m2, _, err := client.Recv()
		if err != nil || m2 != m {
			t.Fatalf("round trip of %+v: %+v %v", m, m2, err)
		}
	})
}

func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}
	return len(ents)
}

// TestListenDirectoryForGroup: the socket directory was made by someone else
// (kubelet creates a DirectoryOrCreate hostPath 0750 root:root; here 0700 with
// another group), yet a non-root process whose only link is the gateway's
// group — EPROXY in a revision pod — can connect. Before Listen fixed the
// directory, connect(2) failed with EACCES on the real one-node cluster.
func TestListenDirectoryForGroup(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root: chown and a child with other credentials")
	}
	// Not t.TempDir: its parent is 0700, and the child must reach base.
	base, err := os.MkdirTemp("", "spright-control-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(base) })
	if err := os.Chmod(base, 0o755); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "run")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 0, 4242); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "control.sock")
	l, err := Listen(path)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	st, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm()&0o050 != 0o050 {
		t.Errorf("directory mode %v: group cannot search it", st.Mode().Perm())
	}
	if gid := st.Sys().(*syscall.Stat_t).Gid; int(gid) != os.Getegid() {
		t.Errorf("directory group %d, want the gateway's %d", gid, os.Getegid())
	}
	// A child as nobody-like user 65532 with the gateway's group as its only
	// supplementary group dials the socket.
	// (The test binary sits in a 0700 build directory: run a copy.)
	self, err := os.ReadFile(os.Args[0])
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(base, "control.test")
	if err := os.WriteFile(bin, self, 0o755); err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "-test.run=^TestDialHelper$")
	cmd.Env = append(os.Environ(), "SPRIGHT_CONTROL_DIAL="+path)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: &syscall.Credential{
		Uid: 65532, Gid: 65532, Groups: []uint32{uint32(os.Getegid())},
	}}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("dial as uid 65532 in the socket's group: %v\n%s", err, out)
	}
}

// TestDialHelper is TestListenDirectoryForGroup's child.
func TestDialHelper(t *testing.T) {
	path := os.Getenv("SPRIGHT_CONTROL_DIAL")
	if path == "" {
		t.Skip("child of TestListenDirectoryForGroup")
	}
	c, err := Dial(path)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}
