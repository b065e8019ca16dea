package standalone

import (
	"path/filepath"
	"strings"
	"testing"
)

// TestSamplesLoad: every shipped sample parses and validates.
func TestSamplesLoad(t *testing.T) {
	files, _ := filepath.Glob("../../config/samples/*/chain.yaml")
	if len(files) < 4 {
		t.Fatalf("found %d sample chains, want hello, boutique, parking, motion", len(files))
	}
	for _, f := range files {
		cf, err := Load(f)
		if err != nil {
			t.Errorf("%s: %v", f, err)
			continue
		}
		if _, err := cf.GatewayConfig(); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

func TestParseErrors(t *testing.T) {
	for name, tc := range map[string]struct{ yaml, want string }{
		"no name":          {`functions: [{name: a}]`, "name is required"},
		"no functions":     {`name: x`, "no functions"},
		"no routes":        {"name: x\nfunctions: [{name: upper}]", "no gateway routes"},
		"bad mode":         {"name: x\nmode: fast\nroutes: {'*': [upper]}\nfunctions: [{name: upper}]", "mode"},
		"unknown field":    {"name: x\nbogus: 1\nroutes: {'*': [upper]}\nfunctions: [{name: upper}]", "bogus"},
		"unknown behavior": {"name: x\nroutes: {'*': [f]}\nfunctions: [{name: f}]", "unknown behavior"},
		"route to nowhere": {"name: x\nroutes: {'*': [nope]}\nfunctions: [{name: upper}]", "nope"},
		"bad duration":     {"name: x\nroutes: {'*': [upper]}\nfunctions: [{name: upper, serviceTime: soon}]", "soon"},
		"too many":         {"name: x\nroutes: {'*': [upper]}\nfunctions: [{name: upper, instances: 99}]", "instances"},
		"bad redirect":     {"name: x\nredirect: dpdk\nroutes: {'*': [upper]}\nfunctions: [{name: upper}]", "redirect mode"},
		"many clients":     {"name: x\nclientNetns: 99\nroutes: {'*': [upper]}\nfunctions: [{name: upper}]", "clientNetns"},
	} {
		_, err := Parse([]byte(tc.yaml))
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want it to mention %q", name, err, tc.want)
		}
	}
}

func TestRedirectField(t *testing.T) {
	for in, want := range map[string]string{"": "off", "redirect: off\n": "off", "redirect: tc\n": "tc", "redirect: XDP\n": "xdp"} {
		cf, err := Parse([]byte("name: x\n" + in + "routes: {'*': [upper]}\nfunctions: [{name: upper}]"))
		if err != nil {
			t.Fatalf("%q: %v", in, err)
		}
		if cf.Redirect != want {
			t.Errorf("%q: redirect = %q, want %q", in, cf.Redirect, want)
		}
	}
}
