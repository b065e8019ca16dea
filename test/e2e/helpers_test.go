package e2e

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/spright-dev/spright/pkg/standalone"
)

// chain is a running standalone chain and the directory where its
// functions write their counters on exit.
type chain struct {
	*standalone.Runner
	dir string
	url string
}

// startChain runs chain yaml in-process (gateway here, functions as spright
// processes in their own netns) and stops it when the test ends.
func startChain(t *testing.T, yaml string) *chain {
	t.Helper()
	return startChainWith(t, yaml, nil)
}

// startChainWith lets a test adjust the runner's options.
func startChainWith(t *testing.T, yaml string, adjust func(*standalone.Options)) *chain {
	t.Helper()
	needRoot(t)
	cf, err := standalone.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	opts := standalone.Options{
		Listen:        "127.0.0.1:0",
		PinDir:        "/sys/fs/bpf/spright-e2e-" + strconv.Itoa(os.Getpid()) + "-" + cf.Name,
		ControlSocket: filepath.Join(dir, "control.sock"),
		Executable:    spright,
		StatsDir:      dir,
		AllowUnlisted: true, // tests register in-process members too
		Logger:        zaptest.NewLogger(t),
	}
	if adjust != nil {
		adjust(&opts)
	}
	r, err := standalone.Start(cf, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return &chain{Runner: r, dir: dir, url: "http://" + r.Addr() + "/"}
}

func post(url, body string) (int, string, error) {
	resp, err := http.Post(url, "text/plain", strings.NewReader(body))
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// cpuTicks returns utime+stime of pid (all threads) in clock ticks.
func cpuTicks(pid int) (int64, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, fmt.Errorf("bad /proc/%d/stat", pid)
	}
	f := strings.Fields(s[i+1:])
	// After the comm: state(0) ppid(1) ... utime(11) stime(12)
	if len(f) < 13 {
		return 0, fmt.Errorf("short /proc/%d/stat", pid)
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return u + st, nil
}

// clkTck is USER_HZ; 100 on every Linux this runs on (checked in a test).
const clkTck = 100

func ticksToDuration(t int64) time.Duration { return time.Duration(t) * time.Second / clkTck }

// cpuOf sums the CPU time of pids.
func cpuOf(t *testing.T, pids []int) time.Duration {
	t.Helper()
	var total int64
	for _, p := range pids {
		v, err := cpuTicks(p)
		if err != nil {
			t.Fatalf("cpu of %d: %v", p, err)
		}
		total += v
	}
	return ticksToDuration(total)
}

// stats reads the counters a function instance wrote on exit (call after Stop).
func (c *chain) stats(t *testing.T, fn string, idx int) map[string]uint64 {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(c.dir, fmt.Sprintf("%s-%d.json", fn, idx)))
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]uint64
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}
