package peer

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"time"
)

const (
	magic        = "SPRP1"
	nonceSize    = 32
	macSize      = sha256.Size
	maxHeader    = 64 << 10
	handshakeFor = 5 * time.Second
)

// ErrAuth is a handshake or frame that fails authentication.
var ErrAuth = errors.New("peer: authentication failed")

// Conn is an authenticated connection to a peer node. Send may be called
// from many goroutines; Recv from one.
type Conn struct {
	c    net.Conn
	r    *bufio.Reader
	Peer string // the peer's node name, as it proved it

	sendMu  sync.Mutex
	sendKey []byte
	sendSeq uint64
	recvKey []byte
	recvSeq uint64
	scratch []byte
}

// Dial connects to a peer at addr as node self, both proving they hold key.
func Dial(ctx context.Context, addr, self string, key []byte) (*Conn, error) {
	var d net.Dialer
	nc, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("peer: dial %s: %w", addr, err)
	}
	c, err := Client(nc, self, key)
	if err != nil {
		nc.Close()
		return nil, fmt.Errorf("peer %s: %w", addr, err)
	}
	return c, nil
}

// Client runs the handshake on nc as the connecting side.
func Client(nc net.Conn, self string, key []byte) (*Conn, error) {
	if err := checkIdentity(self, key); err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Now().Add(handshakeFor))
	defer nc.SetDeadline(time.Time{})
	r := bufio.NewReader(nc)
	nonceC := make([]byte, nonceSize)
	rand.Read(nonceC)
	if _, err := nc.Write(appendHello(nil, self, nonceC)); err != nil {
		return nil, fmt.Errorf("peer: handshake: %w", err)
	}
	server, nonceS, err := readHello(r)
	if err != nil {
		return nil, err
	}
	proof := make([]byte, macSize)
	if _, err := io.ReadFull(r, proof); err != nil {
		return nil, fmt.Errorf("peer: handshake: %w", err)
	}
	if !hmac.Equal(proof, mac(key, "server", nonceC, nonceS, []byte(server), []byte(self))) {
		return nil, fmt.Errorf("%w: node %q does not hold the cluster's peer key", ErrAuth, server)
	}
	if _, err := nc.Write(mac(key, "client", nonceC, nonceS, []byte(self), []byte(server))); err != nil {
		return nil, fmt.Errorf("peer: handshake: %w", err)
	}
	return &Conn{c: nc, r: r, Peer: server,
		sendKey: mac(key, "client->server", nonceC, nonceS), recvKey: mac(key, "server->client", nonceC, nonceS)}, nil
}

// Server runs the handshake on an accepted nc as node self.
func Server(nc net.Conn, self string, key []byte) (*Conn, error) {
	if err := checkIdentity(self, key); err != nil {
		return nil, err
	}
	nc.SetDeadline(time.Now().Add(handshakeFor))
	defer nc.SetDeadline(time.Time{})
	r := bufio.NewReader(nc)
	client, nonceC, err := readHello(r)
	if err != nil {
		return nil, err
	}
	nonceS := make([]byte, nonceSize)
	rand.Read(nonceS)
	out := appendHello(nil, self, nonceS)
	out = append(out, mac(key, "server", nonceC, nonceS, []byte(self), []byte(client))...)
	if _, err := nc.Write(out); err != nil {
		return nil, fmt.Errorf("peer: handshake: %w", err)
	}
	proof := make([]byte, macSize)
	if _, err := io.ReadFull(r, proof); err != nil {
		return nil, fmt.Errorf("peer: handshake with %q: %w", client, err)
	}
	if !hmac.Equal(proof, mac(key, "client", nonceC, nonceS, []byte(client), []byte(self))) {
		return nil, fmt.Errorf("%w: node %q does not hold the cluster's peer key", ErrAuth, client)
	}
	return &Conn{c: nc, r: r, Peer: client,
		sendKey: mac(key, "server->client", nonceC, nonceS), recvKey: mac(key, "client->server", nonceC, nonceS)}, nil
}

func checkIdentity(self string, key []byte) error {
	if self == "" || len(self) > MaxName {
		return fmt.Errorf("peer: node name %q must be 1..%d bytes", self, MaxName)
	}
	if len(key) < 16 {
		return fmt.Errorf("peer: the cluster's peer key has %d bytes, at least 16 needed", len(key))
	}
	return nil
}

func appendHello(b []byte, name string, nonce []byte) []byte {
	b = append(b, magic...)
	b = append(b, byte(len(name)))
	b = append(b, name...)
	return append(b, nonce...)
}

func readHello(r *bufio.Reader) (name string, nonce []byte, err error) {
	head := make([]byte, len(magic)+1)
	if _, err := io.ReadFull(r, head); err != nil {
		return "", nil, fmt.Errorf("peer: handshake: %w", err)
	}
	if string(head[:len(magic)]) != magic {
		return "", nil, fmt.Errorf("%w: not a SPRIGHT peer (greeting %q)", ErrAuth, head[:len(magic)])
	}
	n := int(head[len(magic)])
	if n == 0 || n > MaxName {
		return "", nil, fmt.Errorf("%w: node name of %d bytes", ErrAuth, n)
	}
	rest := make([]byte, n+nonceSize)
	if _, err := io.ReadFull(r, rest); err != nil {
		return "", nil, fmt.Errorf("peer: handshake: %w", err)
	}
	return string(rest[:n]), rest[n:], nil
}

func mac(key []byte, label string, parts ...[]byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(label))
	for _, p := range parts {
		var l [4]byte
		binary.LittleEndian.PutUint32(l[:], uint32(len(p)))
		m.Write(l[:])
		m.Write(p)
	}
	return m.Sum(nil)
}

// Send writes f (its payload straight from f.Payload, e.g. a pool slot).
func (c *Conn) Send(f *Frame) error {
	hdr, err := appendHeader(make([]byte, 8, 128), f)
	if err != nil {
		return err
	}
	hl, pl := len(hdr)-8, len(f.Payload)
	if hl > maxHeader || hl+pl > MaxFrame {
		return fmt.Errorf("%w: %d header + %d payload bytes", ErrTooLarge, hl, pl)
	}
	binary.LittleEndian.PutUint32(hdr[0:4], uint32(hl))
	binary.LittleEndian.PutUint32(hdr[4:8], uint32(pl))
	c.sendMu.Lock()
	defer c.sendMu.Unlock()
	sum := c.frameMAC(c.sendKey, c.sendSeq, hdr, f.Payload)
	c.sendSeq++
	bufs := net.Buffers{hdr, f.Payload, sum}
	_, err = bufs.WriteTo(c.c)
	return err
}

func (c *Conn) frameMAC(key []byte, seq uint64, hdr, payload []byte) []byte {
	m := hmac.New(sha256.New, key)
	var s [8]byte
	binary.LittleEndian.PutUint64(s[:], seq)
	m.Write(s[:])
	m.Write(hdr)
	m.Write(payload)
	return m.Sum(nil)
}

// Recv reads the next frame into f. Its payload is read into the buffer
// alloc returns for its length (a pool slot; nil: a scratch buffer the
// next Recv reuses). On any error the connection must be closed: the
// stream can no longer be trusted, and a payload already read into alloc's
// buffer is not authentic.
func (c *Conn) Recv(f *Frame, alloc func(n int) []byte) error {
	var lens [8]byte
	if _, err := io.ReadFull(c.r, lens[:]); err != nil {
		return err
	}
	hl := int(binary.LittleEndian.Uint32(lens[0:4]))
	pl := int(binary.LittleEndian.Uint32(lens[4:8]))
	if hl > maxHeader || pl > MaxFrame || hl+pl > MaxFrame {
		return fmt.Errorf("%w: %d header + %d payload bytes from %q", ErrTooLarge, hl, pl, c.Peer)
	}
	hdr := make([]byte, 8+hl)
	copy(hdr, lens[:])
	if _, err := io.ReadFull(c.r, hdr[8:]); err != nil {
		return err
	}
	payloadAfter, err := decodeHeader(hdr[8:], f)
	if err != nil {
		return err
	}
	if payloadAfter != 0 {
		return malformed("header length %d does not match its fields", hl)
	}
	var dst []byte
	if pl > 0 {
		if alloc != nil {
			dst = alloc(pl)
		}
		if len(dst) < pl {
			if cap(c.scratch) < pl {
				c.scratch = make([]byte, pl)
			}
			dst = c.scratch[:pl]
		}
		dst = dst[:pl]
		if _, err := io.ReadFull(c.r, dst); err != nil {
			return err
		}
	}
	f.Payload = dst
	sum := make([]byte, macSize)
	if _, err := io.ReadFull(c.r, sum); err != nil {
		return err
	}
	if !hmac.Equal(sum, c.frameMAC(c.recvKey, c.recvSeq, hdr, dst)) {
		return fmt.Errorf("%w: frame %d from %q", ErrAuth, c.recvSeq, c.Peer)
	}
	c.recvSeq++
	return nil
}

// Close ends the connection.
func (c *Conn) Close() error { return c.c.Close() }

// RemoteAddr is the peer's address.
func (c *Conn) RemoteAddr() net.Addr { return c.c.RemoteAddr() }

func newReader(nc net.Conn) *bufio.Reader { return bufio.NewReader(nc) }

// SetReadDeadline bounds the next Recv.
func (c *Conn) SetReadDeadline(t time.Time) error { return c.c.SetReadDeadline(t) }
