package samples

import (
	"testing"
	"time"
)

func TestBurnUsesCPU(t *testing.T) {
	start := threadCPUTotal()
	Burn(20 * time.Millisecond)
	if used := threadCPUTotal() - start; used < 15*time.Millisecond {
		t.Fatalf("Burn(20ms) used %v of CPU", used)
	}
}

func TestLookup(t *testing.T) {
	for _, n := range Names() {
		if _, err := Lookup(n, 0); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := Lookup("nope", 0); err == nil {
		t.Fatal("unknown behavior accepted")
	}
	if _, err := Lookup("burn", -1); err == nil {
		t.Fatal("negative service time accepted")
	}
}

func TestTransforms(t *testing.T) {
	p := []byte("abc-Z")
	upper(p)
	reverse(p)
	if string(p) != "Z-CBA" {
		t.Fatalf("got %q", p)
	}
	if _, err := parseMotion([]byte(`{"sensor":"s1","state":"on"}`)); err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{``, `{}`, `{"sensor":"s1","state":"maybe"}`, `{"sensor":"s1","state":"on","x":1}`, `[`} {
		if _, err := parseMotion([]byte(bad)); err == nil {
			t.Errorf("accepted %q", bad)
		}
	}
}
