package benchutil

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// The testdata files are real wrk 4.1.0 reports captured against
// `spright run -f config/samples/hello/chain.yaml`:
//   - wrk-c8.txt, wrk-c1.txt: POST "abc" (wrk -t2 -c8, wrk -t1 -c1);
//   - wrk-non2xx-413.txt: a 20000-byte body, which the gateway answers 413;
//   - wrk-socket-errors.txt: the chain stopped with SIGTERM mid-run.
func readTestdata(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestParseWrk(t *testing.T) {
	us, ms := time.Microsecond, time.Millisecond
	tests := []struct {
		file     string
		requests int64
		elapsed  time.Duration
		rps      float64
		p50, p99 time.Duration
		p90      time.Duration
		non2xx   int64
		errs     SocketErrors
	}{
		{file: "wrk-c8.txt", requests: 38477, elapsed: 3100 * ms, rps: 12414.40,
			p50: 570 * us, p90: 1080 * us, p99: 2280 * us},
		{file: "wrk-c1.txt", requests: 7082, elapsed: 2100 * ms, rps: 3372.85,
			p50: 272 * us, p90: 446 * us, p99: 2310 * us},
		{file: "wrk-non2xx-413.txt", requests: 64068, elapsed: 2000 * ms, rps: 32011.21,
			p50: 87 * us, p90: 1450 * us, p99: 5710 * us, non2xx: 64068},
		{file: "wrk-socket-errors.txt", requests: 15608, elapsed: 4100 * ms, rps: 3804.63,
			p50: 572 * us, p90: 1340 * us, p99: 4700 * us,
			errs: SocketErrors{Connect: 0, Read: 6, Write: 209035, Timeout: 0}},
	}
	for _, tc := range tests {
		t.Run(tc.file, func(t *testing.T) {
			out := readTestdata(t, tc.file)
			r, err := ParseWrk(out)
			if err != nil {
				t.Fatal(err)
			}
			if r.Requests != tc.requests || r.Elapsed != tc.elapsed || r.RPS != tc.rps {
				t.Errorf("requests, elapsed, rps = %d, %v, %v; want %d, %v, %v",
					r.Requests, r.Elapsed, r.RPS, tc.requests, tc.elapsed, tc.rps)
			}
			// Float parsing of "1.08ms" may be off by a nanosecond.
			for _, p := range []struct {
				pct  float64
				want time.Duration
			}{{50, tc.p50}, {90, tc.p90}, {99, tc.p99}} {
				if got := r.Latency[p.pct]; got.Round(us) != p.want {
					t.Errorf("p%v = %v, want %v", p.pct, got, p.want)
				}
			}
			if len(r.Latency) != 4 {
				t.Errorf("latency percentiles = %v, want 50/75/90/99", r.Latency)
			}
			if r.Non2xx != tc.non2xx {
				t.Errorf("non2xx = %d, want %d", r.Non2xx, tc.non2xx)
			}
			if r.Errors != tc.errs {
				t.Errorf("socket errors = %+v, want %+v", r.Errors, tc.errs)
			}
		})
	}
}

func TestParseWrkWithoutLatency(t *testing.T) {
	// Without --latency wrk prints no distribution; the totals still parse.
	out := readTestdata(t, "wrk-c8.txt")
	var kept []string
	for _, l := range strings.Split(out, "\n") {
		if strings.Contains(l, "%  ") || strings.Contains(l, "Latency Distribution") {
			continue
		}
		kept = append(kept, l)
	}
	r, err := ParseWrk(strings.Join(kept, "\n"))
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Latency) != 0 || r.Requests != 38477 {
		t.Errorf("got latency %v, requests %d", r.Latency, r.Requests)
	}
}

func TestParseWrkRejectsGarbage(t *testing.T) {
	for _, out := range []string{
		"",
		"unable to connect to 127.0.0.1:1 Connection refused\n",
		// Truncated before the Requests/sec line.
		strings.Split(readTestdata(t, "wrk-c8.txt"), "Requests/sec")[0],
		strings.Replace(readTestdata(t, "wrk-c8.txt"), "570.00us", "570.00xs", 1),
		strings.Replace(readTestdata(t, "wrk-socket-errors.txt"), "read 6", "read six", 1),
	} {
		if r, err := ParseWrk(out); err == nil {
			t.Errorf("ParseWrk(%q) = %+v, want an error", out, r)
		}
	}
}

func TestParseWrkDuration(t *testing.T) {
	tests := []struct {
		in   string
		want time.Duration
	}{
		{"570.00us", 570 * time.Microsecond},
		{"0.86ms", 860 * time.Microsecond},
		{"1.08ms", 1080 * time.Microsecond},
		{"2.00s", 2 * time.Second},
		{"3.10s", 3100 * time.Millisecond},
		{"1.50m", 90 * time.Second},
		{"1.00h", time.Hour},
		{"0.00us", 0},
	}
	for _, tc := range tests {
		got, err := ParseWrkDuration(tc.in)
		if err != nil {
			t.Errorf("ParseWrkDuration(%q): %v", tc.in, err)
			continue
		}
		if got.Round(time.Microsecond) != tc.want {
			t.Errorf("ParseWrkDuration(%q) = %v, want %v", tc.in, got, tc.want)
		}
	}
	for _, bad := range []string{"", "12", "us", "1.0ns", "-1.00ms", "1.0 ms", "nanus"} {
		if d, err := ParseWrkDuration(bad); err == nil {
			t.Errorf("ParseWrkDuration(%q) = %v, want an error", bad, d)
		}
	}
}

func TestWritePostScript(t *testing.T) {
	path := filepath.Join(t.TempDir(), "post.lua")
	if err := WritePostScript(path, "a\"\\\n"); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), `wrk.body = "\097\034\092\010"`) || !strings.Contains(string(b), `wrk.method = "POST"`) {
		t.Errorf("script:\n%s", b)
	}
}

func TestParseWrkMean(t *testing.T) {
	r, err := ParseWrk(readTestdata(t, "wrk-c8.txt"))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := r.Mean.Round(10*time.Nanosecond), 665680*time.Nanosecond; got != want {
		t.Errorf("mean = %v, want %v (the thread stats' Latency avg)", got, want)
	}
}
