package control

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// DefaultSocket is where the gateway listens unless told otherwise.
const DefaultSocket = "/run/spright/control.sock"

// MaxMessage bounds one control message.
const MaxMessage = 4096

// maxFDs bounds the descriptors accepted with one message.
const maxFDs = 4

// Message types.
const (
	TypeHello   = "hello"
	TypeWelcome = "welcome"
	TypeJoin    = "join"
	TypeJoined  = "joined"
	TypeError   = "error"

	// An EPROXY sidecar registers its pod (plain revision), then asks for
	// each proxied connection to be spliced in the kernel.
	TypePod      = "pod"
	TypeSplice   = "splice"   // + 2 fds: client side, upstream side
	TypeSpliced  = "spliced"  // the agent's answer to splice and unsplice
	TypeUnsplice = "unsplice" // + 2 fds: take a spliced pair apart
	TypeCount    = "count"    // + 1 fd: count what is sent on it (Side says which side)
	// TypeCounters asks the agent for the pod's eBPF counters (Side
	// "proxied": the activator's connections) and is its answer, with
	// Counters set. EPROXY cannot read the map itself: Knative runs it with
	// the runtime's default seccomp profile, which refuses bpf(2) to a
	// container without CAP_BPF/CAP_SYS_ADMIN (and distributions set
	// kernel.unprivileged_bpf_disabled), so the agent reads it.
	TypeCounters = "counters"

	// TypeLeave: a joined instance that is stopping (SIGTERM, a pod
	// terminating) asks to be taken out of routing. It stays registered
	// and serves what reaches it until it closes the connection, so no
	// request routed to it just before fails.
	TypeLeave = "leave"

	// Steering (plain revisions): instead of splicing each connection,
	// the agent has the kernel rewrite new connections from learned
	// traffic sources to the user container's own port (package bpf,
	// "Steer"); EPROXY keeps the connections of everyone else (Knative's
	// probes, the activator).
	TypeSteer = "steer" // + 1 fd: EPROXY's traffic listener; Port: the user container's port
	// TypeSteerSource: Address is a client whose new connections are
	// steered (Side "add") or no longer (Side "remove").
	TypeSteerSource = "steer-source"
	// TypeSteerEnable: Side "off" stops steering new connections (EPROXY
	// drains), "on" resumes.
	TypeSteerEnable = "steer-enable"
)

// Counters is one instance's entry of the EPROXY metrics map, as the agent
// read it (one consistent snapshot, taken under the entry's lock).
type Counters struct {
	RequestsIn   uint64 `json:"requestsIn"`
	ResponsesOut uint64 `json:"responsesOut"`
	Inflight     int64  `json:"inflight"`
	Sent         uint64 `json:"sent"`
	LastNs       uint64 `json:"lastNs"`
	BusyNs       uint64 `json:"busyNs"`
}

// ProxiedInstance is the metrics entry where a pod's connections from the
// activator are counted: the pod's instance ID with the top bit set. EPROXY
// reports them as the Stat's proxied part, as queue-proxy does for requests
// carrying K-Proxy-Request: activator.
func ProxiedInstance(instance uint32) uint32 { return instance | 1<<31 }

// Message is every control message; Type says which fields matter.
type Message struct {
	Type string `json:"type"`

	// Hello
	Chain    string `json:"chain,omitempty"`
	Function string `json:"function,omitempty"`
	// Previous is the instance ID a member had with the gateway before
	// this one (it registers again after a gateway restart, done with its
	// old work): the slots still held under that ID are reclaimed. A pod
	// (EPROXY) sends it too, to get its metrics entries back.
	Previous uint32 `json:"previous,omitempty"`

	// Welcome
	Instance      uint32 `json:"instance,omitempty"`
	ChainID       uint16 `json:"chainID,omitempty"`
	FunctionIndex uint8  `json:"functionIndex,omitempty"`
	Mode          string `json:"mode,omitempty"`
	Concurrency   uint32 `json:"concurrency,omitempty"`
	// Ring is the member's receive ring in poll mode.
	Ring int `json:"ring,omitempty"`

	// Welcome to a pod: the chain its revision belongs to, if any.
	// (Chain and Function above carry it.)
	// Resumed: a pod registering with Previous got that instance back, its
	// metrics entries as they are (they kept counting while the agent was
	// away).
	Resumed bool `json:"resumed,omitempty"`

	// Pod (EPROXY): the Knative identity of the pod.
	Namespace string `json:"namespace,omitempty"`
	Revision  string `json:"revision,omitempty"`
	PodName   string `json:"podName,omitempty"`
	// Count: "client" (responses sent), "upstream" (requests sent) or
	// "arrival" (requests received, responses sent).
	Side string `json:"side,omitempty"`

	// Steer: the user container's port; steer-source: the client address.
	Port    int    `json:"port,omitempty"`
	Address string `json:"address,omitempty"`

	// Counters (the agent's answer).
	Counters *Counters `json:"counters,omitempty"`

	// Error
	Error string `json:"error,omitempty"`
}

// Conn is one end of a control connection.
type Conn struct{ c *net.UnixConn }

// Errors.
var (
	ErrTooManyFDs = errors.New("control: too many file descriptors attached")
	ErrMalformed  = errors.New("control: malformed message")
)

// Dial connects to the gateway's control socket.
func Dial(path string) (*Conn, error) {
	c, err := net.DialUnix("unixpacket", nil, &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("control: dial %s: %w", path, err)
	}
	return &Conn{c: c}, nil
}

// Listen creates the control socket at path (replacing a stale one) with
// mode 0660: only root and the socket's group can register functions.
// The directory is made searchable by that group too: a directory someone
// else created (kubelet makes a DirectoryOrCreate hostPath 0750 root:root)
// would otherwise refuse the group's members before the socket's own mode
// is even looked at.
func Listen(path string) (*net.UnixListener, error) {
	dir := dirOf(path)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("control: %w", err)
	}
	if err := groupSearchable(dir); err != nil {
		return nil, fmt.Errorf("control: socket directory %s: %w", dir, err)
	}
	_ = os.Remove(path)
	l, err := net.ListenUnix("unixpacket", &net.UnixAddr{Name: path, Net: "unixpacket"})
	if err != nil {
		return nil, fmt.Errorf("control: listen %s: %w", path, err)
	}
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("control: %w", err)
	}
	return l, nil
}

// groupSearchable gives dir to the process's group (keeping its owner) and
// adds group read and search permission, when either is missing.
func groupSearchable(dir string) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return err
	}
	gid := os.Getegid()
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Gid) != gid {
		if err := os.Chown(dir, -1, gid); err != nil {
			return err
		}
	}
	if mode := fi.Mode().Perm(); mode&0o050 != 0o050 {
		return os.Chmod(dir, mode|0o050)
	}
	return nil
}

func dirOf(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			if i == 0 {
				return "/"
			}
			return p[:i]
		}
	}
	return "."
}

// NewConn wraps an accepted connection.
func NewConn(c *net.UnixConn) *Conn { return &Conn{c: c} }

// Send writes m with fds attached (the caller keeps its copies of fds).
func (c *Conn) Send(m Message, fds ...int) error {
	b, err := json.Marshal(m)
	if err != nil {
		return fmt.Errorf("control: encode %s: %w", m.Type, err)
	}
	var oob []byte
	if len(fds) > 0 {
		oob = unix.UnixRights(fds...)
	}
	if _, _, err := c.c.WriteMsgUnix(b, oob, nil); err != nil {
		return fmt.Errorf("control: send %s: %w", m.Type, err)
	}
	return nil
}

// Recv reads one message and the fds that came with it. Received fds are
// owned by the caller; on any error they are closed.
func (c *Conn) Recv() (Message, []int, error) {
	buf := make([]byte, MaxMessage)
	oob := make([]byte, unix.CmsgSpace(maxFDs*4))
	n, oobn, flags, _, err := c.c.ReadMsgUnix(buf, oob)
	if err != nil {
		return Message{}, nil, err
	}
	if n == 0 && oobn == 0 {
		return Message{}, nil, fmt.Errorf("control: peer closed: %w", net.ErrClosed)
	}
	fds, ferr := parseFDs(oob[:oobn])
	closeAll := func() {
		for _, fd := range fds {
			unix.Close(fd)
		}
	}
	if flags&(unix.MSG_TRUNC|unix.MSG_CTRUNC) != 0 {
		closeAll()
		return Message{}, nil, fmt.Errorf("%w: message or descriptors truncated (max %d bytes, %d fds)", ErrMalformed, MaxMessage, maxFDs)
	}
	if ferr != nil {
		closeAll()
		return Message{}, nil, ferr
	}
	var m Message
	if err := json.Unmarshal(buf[:n], &m); err != nil || m.Type == "" {
		closeAll()
		if err == nil {
			err = errors.New("no type")
		}
		return Message{}, nil, fmt.Errorf("%w: %v", ErrMalformed, err)
	}
	return m, fds, nil
}

func parseFDs(oob []byte) ([]int, error) {
	if len(oob) == 0 {
		return nil, nil
	}
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return nil, fmt.Errorf("%w: control data: %v", ErrMalformed, err)
	}
	var fds []int
	for _, m := range msgs {
		rights, err := unix.ParseUnixRights(&m)
		if err != nil {
			continue // credentials or other ancillary data: ignored
		}
		fds = append(fds, rights...)
	}
	if len(fds) > maxFDs {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return nil, ErrTooManyFDs
	}
	return fds, nil
}

// PeerCred returns the connecting process's credentials (SO_PEERCRED).
func (c *Conn) PeerCred() (*unix.Ucred, error) {
	raw, err := c.c.SyscallConn()
	if err != nil {
		return nil, err
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return nil, err
	}
	return cred, serr
}

// SyscallConn gives access to the raw socket (e.g. to poll it for hang-up).
func (c *Conn) SyscallConn() (syscall.RawConn, error) { return c.c.SyscallConn() }

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// Expect reads one message and fails unless it has type typ; an Error
// message from the peer becomes a Go error.
func (c *Conn) Expect(typ string) (Message, []int, error) {
	m, fds, err := c.Recv()
	if err != nil {
		return m, nil, err
	}
	if m.Type == TypeError {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return m, nil, fmt.Errorf("control: gateway refused: %s", m.Error)
	}
	if m.Type != typ {
		for _, fd := range fds {
			unix.Close(fd)
		}
		return m, nil, fmt.Errorf("%w: got %q, want %q", ErrMalformed, m.Type, typ)
	}
	return m, fds, nil
}
