package main

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"
)

func TestQuickKeepsExplicitFlags(t *testing.T) {
	o, err := parseFlags([]string{"--quick", "--duration", "5s"})
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != 5*time.Second || o.idle != 3*time.Second || !reflect.DeepEqual(o.concurrency, []int{1, 32}) {
		t.Errorf("quick with --duration 5s: duration %v, idle %v, concurrency %v", o.duration, o.idle, o.concurrency)
	}
	o, err = parseFlags(nil)
	if err != nil {
		t.Fatal(err)
	}
	if o.duration != 10*time.Second || o.idle != 10*time.Second || !reflect.DeepEqual(o.concurrency, []int{1, 8, 32, 64}) ||
		!reflect.DeepEqual(o.modes, []string{"skmsg", "poll"}) {
		t.Errorf("defaults: %+v", o)
	}
}

func TestParseFlagsRejects(t *testing.T) {
	for _, args := range [][]string{
		{"--concurrency", "1,x"},
		{"--concurrency", "0"},
		{"--duration", "1500ms"},
		{"--modes", ","},
		{"--threads", "0"},
		{"extra"},
	} {
		if _, err := parseFlags(args); err == nil {
			t.Errorf("parseFlags(%q): want an error", args)
		}
	}
}

func TestWriteChainConfig(t *testing.T) {
	dst := filepath.Join(t.TempDir(), "chain.yaml")
	name, err := writeChainConfig("../../../config/samples/hello/chain.yaml", dst, "poll", "127.0.0.1:12345")
	if err != nil {
		t.Fatal(err)
	}
	if name != "hello" {
		t.Errorf("name = %q", name)
	}
	b, err := os.ReadFile(dst)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	if m["mode"] != "poll" || m["listen"] != "127.0.0.1:12345" {
		t.Errorf("mode, listen = %v, %v", m["mode"], m["listen"])
	}
	// Everything else is carried over.
	if fns, _ := m["functions"].([]any); len(fns) != 2 || !strings.Contains(string(b), "reverse") {
		t.Errorf("functions lost:\n%s", b)
	}
}
