package benchutil

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"time"
)

// WrkOptions describe one wrk run.
type WrkOptions struct {
	// Binary is the wrk executable (default "wrk", looked up in PATH).
	Binary string
	// Prefix is a command that runs wrk, e.g. {"ip", "netns", "exec", NS}
	// to load a system that listens inside a network namespace. It must
	// exec wrk (not fork it) for CPU to be wrk's own rusage.
	Prefix      []string
	Threads     int
	Connections int
	Duration    time.Duration
	// Script is a Lua script (-s), e.g. one written by WritePostScript.
	Script string
	URL    string
	// Timeout is wrk's per-request timeout (--timeout); 0 keeps wrk's 2s.
	Timeout time.Duration
}

// SocketErrors is wrk's "Socket errors:" line. Timeouts count requests that
// took longer than the wrk timeout; they are excluded from the latency
// distribution, so a run with timeouts under-reports its tail.
type SocketErrors struct {
	Connect int64 `json:"connect"`
	Read    int64 `json:"read"`
	Write   int64 `json:"write"`
	Timeout int64 `json:"timeout"`
}

// Total is the sum of all socket errors.
func (e SocketErrors) Total() int64 { return e.Connect + e.Read + e.Write + e.Timeout }

// WrkResult is what wrk reported, plus the CPU wrk itself used.
type WrkResult struct {
	// Requests completed (any status) and the time wrk ran them in.
	Requests int64
	Elapsed  time.Duration
	// RPS is wrk's Requests/sec (Requests / Elapsed).
	RPS float64
	// Latency maps a percentile (50, 75, 90, 99) to its latency; it is
	// only filled when wrk ran with --latency.
	Latency map[float64]time.Duration
	// Mean is the "Latency" line's average of wrk's thread statistics.
	Mean time.Duration
	// Non2xx counts "Non-2xx or 3xx responses" (wrk's own wording: 3xx
	// responses are not counted there despite the name).
	Non2xx int64
	Errors SocketErrors
	// CPU is wrk's user+system time (RunWrk only): the load generator
	// competes with the system under test for the same cores.
	CPU time.Duration
	// Output is wrk's stdout, kept for the record and for error messages.
	Output string
}

// RunWrk runs wrk with --latency and parses its report. Cancelling ctx
// kills wrk.
func RunWrk(ctx context.Context, o WrkOptions) (*WrkResult, error) {
	if o.Binary == "" {
		o.Binary = "wrk"
	}
	if o.Connections < 1 || o.Threads < 1 {
		return nil, fmt.Errorf("wrk: need at least one thread and one connection (got -t%d -c%d)", o.Threads, o.Connections)
	}
	// wrk refuses fewer connections than threads; say so before it does.
	if o.Threads > o.Connections {
		return nil, fmt.Errorf("wrk: %d threads > %d connections", o.Threads, o.Connections)
	}
	if o.Duration < time.Second {
		// wrk's -d has whole-second resolution.
		return nil, fmt.Errorf("wrk: duration %v is below wrk's 1s resolution", o.Duration)
	}
	args := []string{
		"-t", strconv.Itoa(o.Threads),
		"-c", strconv.Itoa(o.Connections),
		"-d", fmt.Sprintf("%ds", int(o.Duration.Round(time.Second)/time.Second)),
		"--latency",
	}
	if o.Timeout > 0 {
		// wrk's time units are s, m and h: no milliseconds.
		args = append(args, "--timeout", fmt.Sprintf("%ds", max(1, int(o.Timeout.Round(time.Second)/time.Second))))
	}
	if o.Script != "" {
		args = append(args, "-s", o.Script)
	}
	args = append(args, o.URL)
	argv := append(append(append([]string{}, o.Prefix...), o.Binary), args...)
	cmd := exec.CommandContext(ctx, argv[0], argv[1:]...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return nil, fmt.Errorf("wrk %s: %w: %s%s", strings.Join(args, " "), err,
			strings.TrimSpace(stderr.String()), strings.TrimSpace(stdout.String()))
	}
	res, err := ParseWrk(stdout.String())
	if err != nil {
		return nil, fmt.Errorf("wrk %s: %w", strings.Join(args, " "), err)
	}
	if len(res.Latency) == 0 {
		return nil, fmt.Errorf("wrk %s: no latency distribution in output:\n%s", strings.Join(args, " "), stdout.String())
	}
	res.CPU = cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()
	return res, nil
}

// ParseWrk parses the text report wrk 4.x prints on stdout. The
// "Requests/sec" and "N requests in T" lines are required; the latency
// distribution, non-2xx and socket-error lines are optional because wrk
// omits them when they do not apply.
func ParseWrk(out string) (*WrkResult, error) {
	res := &WrkResult{Output: out, Latency: map[float64]time.Duration{}}
	var haveRPS, haveRequests, inDist bool
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		fields := strings.Fields(line)
		switch {
		case line == "Latency Distribution":
			inDist = true
			continue
		case inDist && len(fields) == 2 && strings.HasSuffix(fields[0], "%"):
			p, err := strconv.ParseFloat(strings.TrimSuffix(fields[0], "%"), 64)
			if err != nil {
				return nil, fmt.Errorf("wrk latency line %q: %w", line, err)
			}
			d, err := ParseWrkDuration(fields[1])
			if err != nil {
				return nil, fmt.Errorf("wrk latency line %q: %w", line, err)
			}
			res.Latency[p] = d
			continue
		}
		inDist = false
		switch {
		case len(fields) >= 3 && fields[0] == "Latency":
			// "Latency   570.00us  100.00us   5.00ms   90.00%" (thread stats)
			d, err := ParseWrkDuration(fields[1])
			if err != nil {
				return nil, fmt.Errorf("wrk latency line %q: %w", line, err)
			}
			res.Mean = d
		case strings.HasPrefix(line, "Requests/sec:"):
			v, err := strconv.ParseFloat(strings.TrimSpace(strings.TrimPrefix(line, "Requests/sec:")), 64)
			if err != nil {
				return nil, fmt.Errorf("wrk line %q: %w", line, err)
			}
			res.RPS, haveRPS = v, true
		case len(fields) >= 4 && fields[1] == "requests" && fields[2] == "in":
			// "38477 requests in 3.10s, 4.33MB read"
			n, err := strconv.ParseInt(fields[0], 10, 64)
			if err != nil {
				return nil, fmt.Errorf("wrk line %q: %w", line, err)
			}
			d, err := ParseWrkDuration(strings.TrimSuffix(fields[3], ","))
			if err != nil {
				return nil, fmt.Errorf("wrk line %q: %w", line, err)
			}
			res.Requests, res.Elapsed, haveRequests = n, d, true
		case strings.HasPrefix(line, "Non-2xx or 3xx responses:"):
			n, err := strconv.ParseInt(strings.TrimSpace(strings.TrimPrefix(line, "Non-2xx or 3xx responses:")), 10, 64)
			if err != nil {
				return nil, fmt.Errorf("wrk line %q: %w", line, err)
			}
			res.Non2xx = n
		case strings.HasPrefix(line, "Socket errors:"):
			e, err := parseSocketErrors(strings.TrimPrefix(line, "Socket errors:"))
			if err != nil {
				return nil, fmt.Errorf("wrk line %q: %w", line, err)
			}
			res.Errors = e
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if !haveRPS || !haveRequests {
		return nil, fmt.Errorf("wrk output has no Requests/sec or request count:\n%s", out)
	}
	return res, nil
}

// parseSocketErrors parses " connect 0, read 6, write 209035, timeout 0".
func parseSocketErrors(s string) (SocketErrors, error) {
	var e SocketErrors
	for _, part := range strings.Split(s, ",") {
		f := strings.Fields(part)
		if len(f) != 2 {
			return e, fmt.Errorf("socket errors: unexpected %q", part)
		}
		n, err := strconv.ParseInt(f[1], 10, 64)
		if err != nil {
			return e, fmt.Errorf("socket errors: %q: %w", part, err)
		}
		switch f[0] {
		case "connect":
			e.Connect = n
		case "read":
			e.Read = n
		case "write":
			e.Write = n
		case "timeout":
			e.Timeout = n
		default:
			return e, fmt.Errorf("socket errors: unknown kind %q", f[0])
		}
	}
	return e, nil
}

// wrkTimeUnits are the suffixes of wrk's time formatting (units.c): it
// scales microseconds up through ms and s, then to minutes and hours.
var wrkTimeUnits = []struct {
	suffix string
	unit   time.Duration
}{
	// Longest suffixes first so "ms" and "us" are not taken for "s".
	{"us", time.Microsecond},
	{"ms", time.Millisecond},
	{"s", time.Second},
	{"m", time.Minute},
	{"h", time.Hour},
}

// ParseWrkDuration parses a wrk time such as "570.00us", "0.86ms", "2.00s"
// or "1.02m". It is stricter than time.ParseDuration on purpose: one number
// and exactly one of wrk's units, so that a change in wrk's format fails
// loudly instead of being read as a plausible latency.
func ParseWrkDuration(s string) (time.Duration, error) {
	for _, u := range wrkTimeUnits {
		num, ok := strings.CutSuffix(s, u.suffix)
		if !ok {
			continue
		}
		v, err := strconv.ParseFloat(num, 64)
		if err != nil {
			return 0, fmt.Errorf("wrk time %q: %w", s, err)
		}
		if v < 0 || math.IsNaN(v) || math.IsInf(v, 0) {
			return 0, fmt.Errorf("wrk time %q: not a duration", s)
		}
		// Round: 4.1*1e9 is 4099999999.9999995 in floating point.
		return time.Duration(math.Round(v * float64(u.unit))), nil
	}
	return 0, fmt.Errorf("wrk time %q: unknown unit", s)
}

// WritePostScript writes a wrk Lua script that sends every request as a
// POST with the given body. The body is written as Lua decimal escapes so
// that any bytes survive quoting.
func WritePostScript(path, body string) error {
	var b strings.Builder
	for i := 0; i < len(body); i++ {
		fmt.Fprintf(&b, "\\%03d", body[i])
	}
	script := fmt.Sprintf("-- generated by test/bench: POST a fixed body\n"+
		"wrk.method = \"POST\"\n"+
		"wrk.body = \"%s\"\n"+
		"wrk.headers[\"Content-Type\"] = \"text/plain\"\n", b.String())
	if err := os.WriteFile(path, []byte(script), 0o644); err != nil {
		return fmt.Errorf("write wrk script: %w", err)
	}
	return nil
}

// ErrNotFound reports a missing external tool.
var ErrNotFound = errors.New("not found in PATH")

// LookWrk returns the path of wrk and its version line.
func LookWrk(bin string) (path, version string, err error) {
	if bin == "" {
		bin = "wrk"
	}
	path, err = exec.LookPath(bin)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w (apt-get install -y wrk)", bin, ErrNotFound)
	}
	// `wrk -v` prints its version and the usage, then exits 1: ignore the
	// status and keep the first line.
	out, _ := exec.Command(path, "-v").CombinedOutput()
	version, _, _ = strings.Cut(string(out), "\n")
	version, _, _ = strings.Cut(version, " Copyright")
	return path, strings.TrimSpace(version), nil
}
