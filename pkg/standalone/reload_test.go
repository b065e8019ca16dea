package standalone

import (
	"strings"
	"testing"
)

const planBase = `
name: c
pool: {slots: 64, slotSize: 4096}
routes: {"*": [a]}
functions:
  - name: a
    behavior: upper
    routes: {"*": [b]}
  - {name: b, behavior: echo, instances: 2}
  - {name: gone, behavior: echo}
`

func mustParse(t *testing.T, s string) *ChainFile {
	t.Helper()
	cf, err := Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return cf
}

// TestReloadFixedChanges: what a reload refuses is named with its old and new
// values; what it can apply is not listed.
func TestReloadFixedChanges(t *testing.T) {
	old := mustParse(t, planBase)
	for _, tc := range []struct{ edit, want string }{
		{"slots: 64", "pool geometry: slots (64 → 128)"},
		{"slotSize: 4096", "pool geometry: slotSize (4096 → 8192)"},
		{"name: c", "name (c → d)"},
		{"pool:", "mode (skmsg → poll)"},
		{"pool:", "listen (\"\" → 127.0.0.1:9)"},
		{"pool:", "redirect (off → tc)"},
		{"pool:", "protocol (http → http,mqtt)"},
	} {
		repl := map[string]string{
			"slots: 64": "slots: 128", "slotSize: 4096": "slotSize: 8192", "name: c": "name: d",
		}[tc.edit]
		if repl == "" {
			extra := map[string]string{"mode": "mode: poll\n", "listen": "listen: 127.0.0.1:9\n", "redirect": "redirect: tc\n", "protocol": "protocol: mqtt\n"}
			for k, v := range extra {
				if strings.HasPrefix(tc.want, k) {
					repl = v + "pool:"
				}
			}
		}
		nw := mustParse(t, strings.Replace(planBase, tc.edit, repl, 1))
		got := strings.Join(fixedChanges(old, nw), "; ")
		if got != tc.want {
			t.Errorf("%q → %q: refused %q, want %q", tc.edit, repl, got, tc.want)
		}
	}
	same := mustParse(t, strings.Replace(planBase, "routes: {\"*\": [a]}", "routes: {\"*\": [b]}\ntimeout: 3s", 1))
	if got := fixedChanges(old, same); len(got) != 0 {
		t.Errorf("routes and timeout changed: refused %v, want nothing", got)
	}
}

// TestReloadDiffFunctions: added, removed, scaled and replaced functions, and
// changes that only touch the route table.
func TestReloadDiffFunctions(t *testing.T) {
	old := mustParse(t, planBase)
	nw := mustParse(t, `
name: c
pool: {slots: 64, slotSize: 4096}
routes: {"*": [a]}
functions:
  - name: a
    behavior: upper
    routes: {"*": [b, nu]}
    concurrency: 4
  - {name: b, behavior: echo, instances: 3}
  - {name: nu, behavior: reverse}
`)
	plans, changes := diffFunctions(old, nw)
	got := map[string]string{}
	for _, p := range plans {
		switch {
		case p.old == nil:
			got[p.name] = "added"
		case p.new == nil:
			got[p.name] = "removed"
		case p.replace:
			got[p.name] = "replaced"
		default:
			got[p.name] = "kept"
		}
	}
	want := map[string]string{"a": "kept", "b": "kept", "nu": "added", "gone": "removed"}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("function %s: %s, want %s (plans %v)", k, got[k], v, got)
		}
	}
	all := strings.Join(changes, "\n")
	for _, s := range []string{"function a concurrency 0 → 4", "function a routes", "function b instances 2 → 3", "function nu added", "function gone removed"} {
		if !strings.Contains(all, s) {
			t.Errorf("changes lack %q:\n%s", s, all)
		}
	}
	// A changed behaviour, service time, workers, command or env replaces
	// the processes; a command makes behaviour and service time moot.
	for _, edit := range []string{"{name: b, behavior: upper, instances: 2}", "{name: b, behavior: echo, instances: 2, workers: 3}",
		"{name: b, behavior: echo, instances: 2, serviceTime: 1ms}", "{name: b, behavior: echo, instances: 2, env: {X: y}}",
		"{name: b, command: [/bin/true], instances: 2}"} {
		nw := mustParse(t, strings.Replace(planBase, "{name: b, behavior: echo, instances: 2}", edit, 1))
		plans, _ := diffFunctions(old, nw)
		if p := plans[1]; p.name != "b" || !p.replace {
			t.Errorf("%s: plan %+v, want b replaced", edit, p)
		}
	}
	_, changes = diffFunctions(old, mustParse(t, strings.Replace(planBase, "{name: b, behavior: echo, instances: 2}", "{name: b, behavior: echo, instances: 2, env: {TOKEN: s3cret}}", 1)))
	if all := strings.Join(changes, "\n"); strings.Contains(all, "s3cret") || !strings.Contains(all, `"TOKEN":"sha256:`) {
		t.Errorf("an env change is described as %q: want the key, and not the value", all)
	}
	if _, changes := diffFunctions(old, mustParse(t, planBase)); len(changes) != 0 {
		t.Errorf("the same file: changes %v", changes)
	}
}
