package eproxy

import (
	"encoding/binary"
	"encoding/hex"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
	netheader "knative.dev/networking/pkg/http/header"
)

// SourceSteerer is the agent's side of steering as the Server uses it
// (AgentClient implements it).
type SourceSteerer interface {
	SteerSource(addr netip.Addr, on bool) error
}

// steering learns which clients to steer. The kernel decides per new
// connection, at its SYN, from the client's address alone (it cannot see
// the request), so EPROXY teaches it from the first requests it serves
// itself: a client whose first request on a connection is plain traffic is
// steered from its next connection on; a client that sends Knative probes
// (the kubelet, the activator) or the activator's traffic is never steered,
// so that its probes keep reaching EPROXY's prober and drainer and its
// requests the proxied counters. The pod's default gateways (the node,
// where the kubelet probes from and where NodePort traffic is masqueraded
// from) are never steered either.
//
// Clients keep their connections (the ingress pools them): a connection
// that reached EPROXY before its client was steered would stay on EPROXY
// for its whole life. So EPROXY answers the first request of a steerable
// client's connection itself, in userspace, with "Connection: close":
// the client opens a new connection for its next request, and that one
// is steered. The source is added before that answer leaves, so the new
// connection cannot arrive before the kernel knows it.
type steering struct {
	mu    sync.Mutex
	agent SourceSteerer
	state map[netip.Addr]bool // true: steered; false: never
	// late counts a steered client's connections that still reached
	// EPROXY: a few opened before it was steered are expected; many mean
	// the kernel does not steer it, and then every connection would carry
	// one request and close, so it is given up (maxLate).
	late   map[netip.Addr]int
	direct map[netip.Addr]bool // local address → the user container accepts there
	never  map[netip.Addr]bool
	log    *zap.Logger
}

// SetSteering turns steering on with the agent that steers (nil: off;
// what was learned is forgotten, since a new agent starts afresh).
func (s *Server) SetSteering(agent SourceSteerer, never []netip.Addr) {
	st := &steering{agent: agent, state: map[netip.Addr]bool{}, late: map[netip.Addr]int{}, direct: map[netip.Addr]bool{}, never: map[netip.Addr]bool{}, log: s.Log}
	for _, a := range never {
		st.never[a.Unmap()] = true
	}
	s.steerMu.Lock()
	if agent == nil {
		s.steer = nil
	} else {
		s.steer = st
	}
	s.steerMu.Unlock()
}

func (s *Server) steering() *steering {
	s.steerMu.RLock()
	defer s.steerMu.RUnlock()
	return s.steer
}

// maxLate bounds the connections of a steered client that may still reach
// EPROXY (see steering.late): more than a client opens at once.
const maxLate = 256

// handoff looks at the first request of a connection EPROXY got: true
// means its client is steered now, and this connection should carry only
// this request and then close (see steering).
func (st *steering) handoff(c net.Conn, req *http.Request, userPort string) bool {
	ra, ok1 := c.RemoteAddr().(*net.TCPAddr)
	la, ok2 := c.LocalAddr().(*net.TCPAddr)
	if !ok1 || !ok2 {
		return false
	}
	src, local := ra.AddrPort().Addr().Unmap(), la.AddrPort().Addr().Unmap()
	traffic := !isProbe(req) && netheader.GetKnativeProxyValue(req) != activatorName
	st.mu.Lock()
	defer st.mu.Unlock()
	steered, known := st.state[src]
	switch {
	case !traffic:
		st.state[src] = false
		if steered {
			// A steered client turned out to probe: its next connections
			// are EPROXY's again (this probe already reached EPROXY).
			st.set(src, false)
		}
		return false
	case known && steered:
		if st.late[src]++; st.late[src] > maxLate {
			st.log.Warn("giving up steering a client: its connections keep reaching EPROXY (the kernel does not steer them)",
				zap.String("source", src.String()), zap.Int("connections", st.late[src]))
			st.state[src] = false
			st.set(src, false)
			return false
		}
		return true
	case known:
		return false
	case st.never[src]:
		return false
	}
	direct, checked := st.direct[local]
	if !checked {
		// The kernel keeps the address the client dialled and changes
		// only the port: the user container must accept there too (it
		// may listen on 127.0.0.1 only). Checked once per address.
		d, err := net.DialTimeout("tcp", net.JoinHostPort(local.String(), userPort), time.Second)
		direct = err == nil
		if d != nil {
			d.Close()
		}
		st.direct[local] = direct
		if !direct {
			st.log.Warn("not steering connections to this address: the user container does not accept on it",
				zap.String("address", local.String()), zap.String("port", userPort), zap.Error(err))
		}
	}
	if !direct || !st.set(src, true) {
		st.state[src] = false
		return false
	}
	st.state[src] = true
	return true
}

// set asks the agent (st.mu held: one change at a time, in order).
func (st *steering) set(src netip.Addr, on bool) bool {
	if err := st.agent.SteerSource(src, on); err != nil {
		st.log.Warn("steer source", zap.String("source", src.String()), zap.Bool("on", on), zap.Error(err))
		return false
	}
	st.log.Debug("steer source", zap.String("source", src.String()), zap.Bool("on", on))
	return true
}

// DefaultGateways are the gateways of the default routes of EPROXY's
// network namespace (/proc/net/route, /proc/net/ipv6_route): in a pod, the
// node's address on the pod network.
func DefaultGateways() []netip.Addr {
	var out []netip.Addr
	if b, err := os.ReadFile("/proc/net/route"); err == nil {
		for _, line := range strings.Split(string(b), "\n")[1:] {
			f := strings.Fields(line)
			if len(f) < 3 || f[1] != "00000000" {
				continue
			}
			v, err := strconv.ParseUint(f[2], 16, 32)
			if err != nil || v == 0 {
				continue
			}
			var a [4]byte
			binary.LittleEndian.PutUint32(a[:], uint32(v)) // /proc prints the u32 in host order (x86, arm64: little endian)
			out = append(out, netip.AddrFrom4(a))
		}
	}
	if b, err := os.ReadFile("/proc/net/ipv6_route"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			f := strings.Fields(line)
			if len(f) < 5 || f[0] != strings.Repeat("0", 32) || f[1] != "00" {
				continue
			}
			raw, err := hex.DecodeString(f[4])
			if err != nil || len(raw) != 16 {
				continue
			}
			if a := netip.AddrFrom16([16]byte(raw)); !a.IsUnspecified() {
				out = append(out, a)
			}
		}
	}
	return out
}
