package standalone

// A chain split across nodes (issue 13 part 2, standalone side): chain.yaml
// lists the nodes and where each one's gateway listens for its peers, and
// says per function which node runs its instances. `spright run --node
// NAME` runs one node: its gateway (own pin dir, control socket and pool),
// the functions assigned to it, a peer listener, and a link to every other
// node (pkg/peer, Gateway.ServePeers / ConnectPeer). Every node's gateway
// knows every function of the chain (the route table is the same
// everywhere); a function with no instance here is reached through the
// peer that advertises instances of it.

import (
	"bytes"
	"fmt"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"go.uber.org/zap"

	"github.com/spright-dev/spright/pkg/gateway"
	"github.com/spright-dev/spright/pkg/routing"
)

// NodeFile is one node of a chain split across nodes.
type NodeFile struct {
	// Name is the node's name (`spright run --node NAME`, a function's
	// node).
	Name string `json:"name"`
	// Peer is the host:port this node's gateway listens on for the other
	// nodes' gateways (and where they dial it).
	Peer string `json:"peer"`
}

// minPeerKey is the shortest pre-shared key accepted (package peer's own
// bound: an HMAC key shorter than that is guessable).
const minPeerKey = 16

// checkNodes validates nodes, peerKeyFile and the functions' node fields.
func (cf *ChainFile) checkNodes() error {
	if len(cf.Nodes) == 0 {
		if cf.PeerKeyFile != "" {
			return fmt.Errorf("chain %q: peerKeyFile is set but no nodes are listed (it authenticates the nodes' gateways to each other)", cf.Name)
		}
		for _, f := range cf.Functions {
			if f.Node != "" {
				return fmt.Errorf("chain %q: function %q: node %q, but the chain lists no nodes (add nodes: [{name: %s, peer: HOST:PORT}, ...])", cf.Name, f.Name, f.Node, f.Node)
			}
		}
		return nil
	}
	names := map[string]bool{}
	peers := map[string]string{}
	for i, n := range cf.Nodes {
		switch {
		case n.Name == "":
			return fmt.Errorf("chain %q: nodes[%d]: name is required", cf.Name, i)
		case strings.ContainsAny(n.Name, "/ \t\n") || len(n.Name) > 64:
			// The name goes into the default pin dir and the peer
			// handshake: no path separators, nothing unprintable.
			return fmt.Errorf("chain %q: node %q: a name of at most 64 characters without '/' or spaces", cf.Name, n.Name)
		case names[n.Name]:
			return fmt.Errorf("chain %q: node %q is listed twice", cf.Name, n.Name)
		}
		names[n.Name] = true
		host, port, err := net.SplitHostPort(n.Peer)
		if err != nil {
			return fmt.Errorf("chain %q: node %q: peer %q: want HOST:PORT (where its gateway listens for the other nodes): %v", cf.Name, n.Name, n.Peer, err)
		}
		if p, err := strconv.Atoi(port); err != nil || p <= 0 || p > 65535 {
			// Port 0 would listen somewhere the other nodes cannot know.
			return fmt.Errorf("chain %q: node %q: peer %q: the port must be a number in 1..65535", cf.Name, n.Name, n.Peer)
		}
		if host == "" {
			return fmt.Errorf("chain %q: node %q: peer %q: the other nodes need a host to dial", cf.Name, n.Name, n.Peer)
		}
		if other, ok := peers[n.Peer]; ok {
			return fmt.Errorf("chain %q: nodes %q and %q have the same peer address %s", cf.Name, other, n.Name, n.Peer)
		}
		peers[n.Peer] = n.Name
	}
	if cf.PeerKeyFile == "" {
		return fmt.Errorf("chain %q: nodes are listed but peerKeyFile is not (a file of at least %d bytes, the same on every node, mode 0600)", cf.Name, minPeerKey)
	}
	for _, f := range cf.Functions {
		if f.Node != "" && !names[f.Node] {
			return fmt.Errorf("chain %q: function %q: node %q is not in nodes (%s)", cf.Name, f.Name, f.Node, strings.Join(cf.NodeNames(), ", "))
		}
	}
	return nil
}

// NodeNames are the listed nodes' names, in the file's order.
func (cf *ChainFile) NodeNames() []string {
	out := make([]string, len(cf.Nodes))
	for i, n := range cf.Nodes {
		out[i] = n.Name
	}
	return out
}

// Node is the listed node called name.
func (cf *ChainFile) Node(name string) (NodeFile, bool) {
	for _, n := range cf.Nodes {
		if n.Name == name {
			return n, true
		}
	}
	return NodeFile{}, false
}

// checkNode says whether node (`spright run --node`) fits the file: it
// must be one of the listed nodes when nodes are listed, and empty when
// they are not.
func (cf *ChainFile) checkNode(node string) error {
	switch {
	case len(cf.Nodes) == 0 && node != "":
		return fmt.Errorf("chain %q lists no nodes, so --node %q means nothing (add nodes: to chain.yaml, or drop --node)", cf.Name, node)
	case len(cf.Nodes) > 0 && node == "":
		return fmt.Errorf("chain %q is split across nodes %s: say which one this is with --node NAME", cf.Name, strings.Join(cf.NodeNames(), ", "))
	case len(cf.Nodes) > 0:
		if _, ok := cf.Node(node); !ok {
			return fmt.Errorf("chain %q: node %q is not one of its nodes (%s)", cf.Name, node, strings.Join(cf.NodeNames(), ", "))
		}
	}
	return nil
}

// runsOn reports whether f's instances run on node ("" = a chain that is
// not split: everything runs here).
func (f *FunctionFile) runsOn(node string) bool {
	return node == "" || f.Node == "" || f.Node == node
}

// forNode is the file as node runs it: functions assigned to another node
// have no instances here. It is what the runner starts, waits for and
// reloads processes by; the gateway's route table is made from the whole
// file (every node knows every function). cf itself is not changed.
func (cf *ChainFile) forNode(node string) *ChainFile {
	if node == "" {
		return cf
	}
	out := *cf
	out.Functions = slices.Clone(cf.Functions)
	for i := range out.Functions {
		if f := &out.Functions[i]; !f.runsOn(node) {
			zero := 0
			f.Instances = &zero
		}
	}
	return &out
}

// ReadPeerKey reads the cluster's pre-shared peer key. Like ssh with a
// private key, it refuses a file that others may read or write (mode bits
// 077) or that belongs to another user than the one running spright (or
// root): whoever can read the key can join the chain's nodes and inject
// requests into the chain, whoever can write it can cut nodes off. One
// trailing newline ("\n" or "\r\n", as `openssl rand -hex 32 > key`
// writes) is not part of the key.
func ReadPeerKey(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("peer key: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("peer key: %w", err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("peer key %s: not a regular file", path)
	}
	if perm := st.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("peer key %s: permissions %04o are too open: others could read it and join the chain's nodes (chmod 600 %s)", path, perm, path)
	}
	if sys, ok := st.Sys().(*syscall.Stat_t); ok && sys.Uid != 0 && int(sys.Uid) != os.Geteuid() {
		return nil, fmt.Errorf("peer key %s: owned by uid %d, not by this user (%d) or root", path, sys.Uid, os.Geteuid())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("peer key: %w", err)
	}
	b = bytes.TrimSuffix(b, []byte("\n"))
	b = bytes.TrimSuffix(b, []byte("\r"))
	if len(b) < minPeerKey {
		return nil, fmt.Errorf("peer key %s: %d bytes, at least %d needed (e.g. openssl rand -hex 32 > %s; chmod 600 %s)", path, len(b), minPeerKey, path, path)
	}
	return b, nil
}

// DefaultPinDir is where a chain's eBPF maps are pinned unless --pin-dir
// says otherwise: /sys/fs/bpf/spright/<chain>, or <chain>@<node> for one
// node of a split chain. bpffs is not per network namespace, and the pin
// dir also names the chain's pool file (in /dev/shm or on hugetlbfs) and
// its lock in /run/spright: two nodes of one chain on one host (network
// namespaces as nodes, as the tests run them) would otherwise take each
// other's pins and pool.
func DefaultPinDir(chain, node string) string {
	if node == "" {
		return "/sys/fs/bpf/spright/" + chain
	}
	return "/sys/fs/bpf/spright/" + chain + "@" + node
}

// localInstances counts chain c's instances of function name on this node
// (a peer's instances are proxies with routing.RemoteBit IDs).
func localInstances(c *gateway.Chain, name string) int {
	fn, ok := c.Routes().FunctionIndex(name)
	if !ok {
		return 0
	}
	n := 0
	for _, id := range c.Routes().Instances(fn) {
		if !routing.IsRemote(id) {
			n++
		}
	}
	return n
}

// startPeers makes this runner a node of a split chain: the gateway
// listens for the other nodes on this node's peer address and keeps a
// link to each of them (the node whose name sorts first dials; both sides
// are told, ConnectPeer sorts it out). Then it waits up to PeerWait for the
// functions this node has no instance of to be offered by a peer, so that
// a chain started on all its nodes at once serves its first requests
// whole; a node that does not come is logged and the chain serves anyway.
func (r *Runner) startPeers() error {
	if r.opts.Node == "" {
		return nil
	}
	self, _ := r.File.Node(r.opts.Node) // checkNode vouched for it
	ln, err := net.Listen("tcp", self.Peer)
	if err != nil {
		return fmt.Errorf("node %q: peer listener on %s: %w", self.Name, self.Peer, err)
	}
	r.peerLn = ln
	go func() {
		if err := r.Gateway.ServePeers(ln); err != nil {
			r.log.Error("peer listener stopped: other nodes can no longer link to this one", zap.String("node", self.Name),
				zap.String("addr", self.Peer), zap.Error(err))
		}
	}()
	for _, n := range r.File.Nodes {
		if n.Name == self.Name {
			continue
		}
		if err := r.Gateway.ConnectPeer(n.Name, n.Peer); err != nil {
			return fmt.Errorf("node %q: linking to node %q at %s: %w", self.Name, n.Name, n.Peer, err)
		}
	}
	deadline := time.Now().Add(r.opts.PeerWait)
	for {
		var missing []string
		for _, f := range r.File.Functions {
			if r.Chain.InstanceCount(f.Name) == 0 {
				missing = append(missing, f.Name)
			}
		}
		if len(missing) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			r.log.Warn("serving although no node offers some functions yet: requests that need them get 503 until one does",
				zap.String("node", self.Name), zap.Strings("functions", missing), zap.Duration("waited", r.opts.PeerWait))
			return nil
		}
		select {
		case <-r.quit:
			return errStopping
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// PeerAddr is the address the gateway listens on for the other nodes ("" when
// the chain is not split).
func (r *Runner) PeerAddr() string {
	if r.peerLn == nil {
		return ""
	}
	return r.peerLn.Addr().String()
}

// Node is the node this runner is ("" when the chain is not split).
func (r *Runner) Node() string { return r.opts.Node }
