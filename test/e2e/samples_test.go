package e2e

import (
	"net/http"
	"os"
	"strings"
	"testing"
	"time"
)

func sample(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile("../../config/samples/" + name + "/chain.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func postTopic(t *testing.T, url, topic, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest("POST", url, strings.NewReader(body))
	if topic != "" {
		req.Header.Set("X-Spright-Topic", topic)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b := new(strings.Builder)
	buf := make([]byte, 4096)
	for {
		n, err := resp.Body.Read(buf)
		b.Write(buf[:n])
		if err != nil {
			break
		}
	}
	return resp.StatusCode, b.String()
}

// TestSampleMotion: the IoT chain turns a motion event into a light command.
func TestSampleMotion(t *testing.T) {
	c := startChain(t, sample(t, "motion"))
	code, body := postTopic(t, c.url, "", `{"sensor":"s1","state":"on"}`)
	if code != 200 || body != `{"light":"s1","state":"on"}` {
		t.Fatalf("motion: %d %q", code, body)
	}
	if code, body := postTopic(t, c.url, "", `{"sensor":"s1"}`); code != 400 {
		t.Fatalf("bad event: %d %q, want 400 from the sensor function", code, body)
	}
}

// TestSampleBoutique: each of the six chains answers, and takes at least the
// CPU its services burn (so the itinerary really visited them all).
func TestSampleBoutique(t *testing.T) {
	c := startChain(t, sample(t, "boutique-synthetic"))
	for topic, min := range map[string]time.Duration{
		"ch1": 10 * time.Millisecond, "ch2": 10 * time.Millisecond, "ch3": 1800 * time.Microsecond,
		"ch4": 260 * time.Millisecond, "ch5": 8 * time.Millisecond, "ch6": 900 * time.Microsecond,
	} {
		start := time.Now()
		code, body := postTopic(t, c.url, topic, `{"user":"u1"}`)
		took := time.Since(start)
		if code != 200 || body != `{"user":"u1"}` {
			t.Errorf("%s: %d %q", topic, code, body)
		}
		if took < min {
			t.Errorf("%s answered in %v, less than its services' CPU time %v", topic, took, min)
		}
	}
}

// TestSampleParking: both parking chains answer with the snapshot.
func TestSampleParking(t *testing.T) {
	c := startChain(t, sample(t, "parking"))
	img := strings.Repeat("\xff\xd8jpeg", 500) // ~3 KB
	for _, topic := range []string{"new", "known"} {
		if code, body := postTopic(t, c.url, topic, img); code != 200 || body != img {
			t.Errorf("%s: %d (%d bytes)", topic, code, len(body))
		}
	}
}
