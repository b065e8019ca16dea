package standalone

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const splitYAML = `
name: x
nodes:
  - {name: a, peer: "10.0.0.1:7946"}
  - {name: b, peer: "10.0.0.2:7946"}
peerKeyFile: /etc/spright/key
routes: {"*": [upper]}
functions:
  - {name: upper, node: a, routes: {"*": [reverse]}}
  - {name: reverse, node: b, instances: 2}
  - {name: again, behavior: reverse}
`

func TestNodesParse(t *testing.T) {
	cf, err := Parse([]byte(splitYAML))
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(cf.NodeNames(), ","); got != "a,b" {
		t.Errorf("nodes %s", got)
	}
	// What each node runs: its own functions and those of every node;
	// the file itself keeps its instance counts.
	for node, want := range map[string][]int{"a": {1, 0, 1}, "b": {0, 2, 1}, "": {1, 2, 1}} {
		v := cf.forNode(node)
		for i, f := range v.Functions {
			if *f.Instances != want[i] {
				t.Errorf("node %q: %s has %d instances, want %d", node, f.Name, *f.Instances, want[i])
			}
		}
	}
	if *cf.Functions[1].Instances != 2 || *cf.Functions[0].Instances != 1 {
		t.Error("forNode changed the file's own instance counts")
	}
	// The gateway's route table knows every function on every node.
	cc, err := cf.GatewayConfig()
	if err != nil || len(cc.Routing.Functions) != 3 {
		t.Errorf("gateway config: %d functions, %v", len(cc.Routing.Functions), err)
	}
}

func TestNodesParseErrors(t *testing.T) {
	base := "name: x\nroutes: {'*': [upper]}\n"
	for name, tc := range map[string]struct{ yaml, want string }{
		"node without nodes": {base + "functions: [{name: upper, node: a}]", `node "a", but the chain lists no nodes`},
		"key without nodes":  {base + "peerKeyFile: /k\nfunctions: [{name: upper}]", "peerKeyFile is set but no nodes"},
		"nodes without key":  {base + "nodes: [{name: a, peer: 'h:1'}]\nfunctions: [{name: upper}]", "peerKeyFile is not"},
		"unlisted node": {base + "peerKeyFile: /k\nnodes: [{name: a, peer: 'h:1'}, {name: b, peer: 'h:2'}]\nfunctions: [{name: upper, node: c}]",
			`node "c" is not in nodes (a, b)`},
		"nameless node":   {base + "peerKeyFile: /k\nnodes: [{peer: 'h:1'}]\nfunctions: [{name: upper}]", "nodes[0]: name is required"},
		"slash in name":   {base + "peerKeyFile: /k\nnodes: [{name: a/b, peer: 'h:1'}]\nfunctions: [{name: upper}]", "without '/'"},
		"twice":           {base + "peerKeyFile: /k\nnodes: [{name: a, peer: 'h:1'}, {name: a, peer: 'h:2'}]\nfunctions: [{name: upper}]", "listed twice"},
		"no port":         {base + "peerKeyFile: /k\nnodes: [{name: a, peer: h}]\nfunctions: [{name: upper}]", "want HOST:PORT"},
		"port 0":          {base + "peerKeyFile: /k\nnodes: [{name: a, peer: 'h:0'}]\nfunctions: [{name: upper}]", "1..65535"},
		"no host":         {base + "peerKeyFile: /k\nnodes: [{name: a, peer: ':7'}]\nfunctions: [{name: upper}]", "need a host"},
		"same peer":       {base + "peerKeyFile: /k\nnodes: [{name: a, peer: 'h:1'}, {name: b, peer: 'h:1'}]\nfunctions: [{name: upper}]", "same peer address"},
		"unknown field":   {base + "peerKeyFile: /k\nnodes: [{name: a, peer: 'h:1', port: 3}]\nfunctions: [{name: upper}]", "port"},
		"function typo'd": {base + "functions: [{name: upper, nodes: a}]", "nodes"},
	} {
		_, err := Parse([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, tc.want)
		}
	}
}

func TestCheckNode(t *testing.T) {
	split, err := Parse([]byte(splitYAML))
	if err != nil {
		t.Fatal(err)
	}
	one, err := Parse([]byte("name: y\nroutes: {'*': [upper]}\nfunctions: [{name: upper}]"))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		cf   *ChainFile
		node string
		want string // "" = accepted
	}{
		{split, "a", ""},
		{split, "b", ""},
		{split, "", "say which one this is with --node NAME"},
		{split, "c", `node "c" is not one of its nodes (a, b)`},
		{one, "", ""},
		{one, "a", "lists no nodes"},
	} {
		err := tc.cf.checkNode(tc.node)
		if (tc.want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), tc.want)) {
			t.Errorf("chain %s, --node %q: %v, want %q", tc.cf.Name, tc.node, err, tc.want)
		}
	}
}

func TestDefaultPinDir(t *testing.T) {
	if a, b := DefaultPinDir("x", "a"), DefaultPinDir("x", "b"); a == b {
		t.Errorf("two nodes of one chain share the pin dir %s", a)
	}
	if d := DefaultPinDir("x", ""); d != "/sys/fs/bpf/spright/x" {
		t.Errorf("a chain that is not split moved its pin dir to %s", d)
	}
}

func TestReadPeerKey(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // past the umask
			t.Fatal(err)
		}
		return p
	}
	const key = "0123456789abcdef0123"
	for _, tc := range []struct {
		name, content string
		mode          os.FileMode
		want          string // error text; "" = the key
	}{
		{"ok", key, 0o600, ""},
		{"newline", key + "\n", 0o400, ""},
		{"crlf", key + "\r\n", 0o600, ""},
		{"world", key, 0o604, "permissions 0604 are too open"},
		{"group", key, 0o640, "permissions 0640 are too open"},
		{"short", "0123456789\n", 0o600, "10 bytes, at least 16"},
	} {
		got, err := ReadPeerKey(write(tc.name, tc.content, tc.mode))
		switch {
		case tc.want == "" && (err != nil || string(got) != key):
			t.Errorf("%s: %q, %v", tc.name, got, err)
		case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
			t.Errorf("%s: err = %v, want it to mention %q", tc.name, err, tc.want)
		}
	}
	if _, err := ReadPeerKey(filepath.Join(dir, "missing")); err == nil {
		t.Error("a missing key file was accepted")
	}
	if _, err := ReadPeerKey(dir); err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("a directory as key file: %v", err)
	}
}

// TestReloadNodes: a reload may move a function between nodes (each node
// sees an instance count change) but not change the nodes or the key.
func TestReloadNodes(t *testing.T) {
	old, err := Parse([]byte(splitYAML))
	if err != nil {
		t.Fatal(err)
	}
	moved, err := Parse([]byte(strings.Replace(splitYAML, "{name: reverse, node: b,", "{name: reverse, node: a,", 1)))
	if err != nil {
		t.Fatal(err)
	}
	if bad := fixedChanges(old, moved); len(bad) > 0 {
		t.Errorf("moving a function refused: %v", bad)
	}
	for node, want := range map[string]string{"a": "function reverse instances 0 → 2", "b": "function reverse instances 2 → 0"} {
		plans, changes := diffFunctions(old.forNode(node), moved.forNode(node))
		all := strings.Join(changes, "; ")
		if !strings.Contains(all, want) || !strings.Contains(all, "function reverse node b → a") {
			t.Errorf("node %s: changes %q, want %q and the node change", node, all, want)
		}
		for _, p := range plans {
			if p.replace {
				t.Errorf("node %s: function %s replaced by a move", node, p.name)
			}
		}
	}
	for what, yaml := range map[string]string{
		"nodes":       strings.Replace(splitYAML, "10.0.0.2:7946", "10.0.0.3:7946", 1),
		"peerKeyFile": strings.Replace(splitYAML, "/etc/spright/key", "/etc/spright/key2", 1),
	} {
		nw, err := Parse([]byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		bad := fixedChanges(old, nw)
		if len(bad) != 1 || !strings.HasPrefix(bad[0], what+" (") {
			t.Errorf("changing %s: fixed changes %q", what, bad)
		}
	}
}
