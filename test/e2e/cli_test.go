package e2e

import (
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// cliChain is `spright run` started as a user would, in its own process.
type cliChain struct {
	cmd  *exec.Cmd
	url  string
	pin  string
	ctl  string
	log  *syncBuffer // what it wrote to stderr (also copied to the test's)
	done chan error
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func runCLI(t *testing.T, yaml string) *cliChain {
	t.Helper()
	return runCLIWith(t, yaml)
}

// runCLIWith adds flags to the run command (a later flag wins over the
// defaults here, e.g. "--admin-listen", ADDR).
func runCLIWith(t *testing.T, yaml string, flags ...string) *cliChain {
	t.Helper()
	needRoot(t)
	dir := t.TempDir()
	file := filepath.Join(dir, "chain.yaml")
	if err := os.WriteFile(file, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	port := freePort(t)
	c := &cliChain{
		url:  fmt.Sprintf("http://127.0.0.1:%d/", port),
		pin:  "/sys/fs/bpf/spright-cli-" + strconv.Itoa(port),
		ctl:  filepath.Join(dir, "ctl.sock"),
		log:  &syncBuffer{},
		done: make(chan error, 1),
	}
	c.cmd = exec.Command(spright, append([]string{"run", "-f", file, "--listen", fmt.Sprintf("127.0.0.1:%d", port),
		"--admin-listen", "", "--pin-dir", c.pin, "--control", c.ctl}, flags...)...)
	c.cmd.Stdout, c.cmd.Stderr = os.Stderr, io.MultiWriter(os.Stderr, c.log)
	// The functions write into the same pipe; they die with the run
	// (Pdeathsig), but do not let Wait hang on one that lingers.
	c.cmd.WaitDelay = 10 * time.Second
	if err := c.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { c.done <- c.cmd.Wait() }()
	t.Cleanup(func() {
		c.cmd.Process.Kill()
		<-c.done
	})
	deadline := time.Now().Add(30 * time.Second)
	for {
		code, body, err := post(c.url, "abc")
		if err == nil && code == 200 && body == "CBA" {
			return c
		}
		select {
		case err := <-c.done:
			t.Fatalf("spright run exited before serving: %v", err)
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("chain not serving after 30s: %d %q %v", code, body, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// tree is the run process and its children (the function processes: `ip
// netns exec` execs in place, so they are direct children).
func (c *cliChain) tree(t *testing.T) []int {
	t.Helper()
	pids := []int{c.cmd.Process.Pid}
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			continue
		}
		s := string(b)
		f := strings.Fields(s[strings.LastIndexByte(s, ')')+1:])
		if len(f) > 1 && f[1] == strconv.Itoa(c.cmd.Process.Pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// stop sends SIGTERM and checks that the run cleaned up after itself.
func (c *cliChain) stop(t *testing.T) {
	t.Helper()
	c.stopWith(t, syscall.SIGTERM)
}

// stopWith stops the run with sig and checks that it exited with 0 and
// left no network namespace, veth, pin dir, control socket or pool file.
func (c *cliChain) stopWith(t *testing.T, sig syscall.Signal) {
	t.Helper()
	c.cmd.Process.Signal(sig)
	select {
	case err := <-c.done:
		if err != nil {
			t.Errorf("spright run exited with %v after %v", err, sig)
		}
		c.done <- nil
	case <-time.After(20 * time.Second):
		t.Fatalf("spright run did not stop within 20s of %v", sig)
	}
	pid := c.cmd.Process.Pid
	out, _ := exec.Command("ip", "netns", "list").Output()
	if prefix := fmt.Sprintf("spright-%d-", pid); strings.Contains(string(out), prefix) {
		t.Errorf("network namespaces left behind:\n%s", out)
	}
	// Host-side veths are named sp<pid>h<n> (standalone/netns.go).
	links, _ := exec.Command("ip", "-o", "link", "show").Output()
	for _, l := range strings.Split(string(links), "\n") {
		if strings.Contains(l, fmt.Sprintf(": sp%dh", pid%100000)) {
			t.Errorf("veth left behind: %s", l)
		}
	}
	if _, err := os.Stat(c.pin); !os.IsNotExist(err) {
		t.Errorf("pin dir %s still there (%v)", c.pin, err)
	}
	if _, err := os.Stat(c.ctl); !os.IsNotExist(err) {
		t.Errorf("control socket %s still there (%v)", c.ctl, err)
	}
	if left := poolFilesLeft(c.pin); len(left) > 0 {
		t.Errorf("pool files left behind: %v", left)
	}
}

// TestIdleCostsNothing: a warm chain with no traffic. In sk_msg mode the
// gateway and both functions together must stay under 20 ms of CPU in 10 s
// (everyone sleeps in read/epoll). The same chain in poll mode is measured
// too, to document what busy polling costs; that figure is logged, and only
// checked to be real (the pollers must actually have spun).
func TestIdleCostsNothing(t *testing.T) {
	var skmsgUsed time.Duration
	for _, tc := range []struct {
		mode   string
		window time.Duration
	}{{"skmsg", 10 * time.Second}, {"poll", 3 * time.Second}} {
		t.Run(tc.mode, func(t *testing.T) {
			c := runCLI(t, strings.Replace(helloYAML, "timeout: 10s", "timeout: 10s\nmode: "+tc.mode, 1))
			for i := 0; i < 200; i++ { // warm: every path has been taken
				if code, body, err := post(c.url, "abc"); err != nil || code != 200 || body != "CBA" {
					t.Fatalf("warm-up request: %d %q %v", code, body, err)
				}
			}
			pids := c.tree(t)
			if len(pids) != 3 {
				t.Fatalf("process tree %v: want the run process and 2 functions", pids)
			}
			time.Sleep(200 * time.Millisecond) // let keep-alive and GC settle
			measure := func() time.Duration {
				before := cpuOf(t, pids)
				time.Sleep(tc.window)
				return cpuOf(t, pids) - before
			}
			used := measure()
			t.Logf("mode %s: gateway + 2 functions used %v of CPU in %v idle", tc.mode, used, tc.window)
			if tc.mode == "skmsg" && used >= 20*time.Millisecond {
				// CPU time comes in 10 ms ticks charged to whoever runs
				// when the tick fires: on a machine busy with other tests
				// a few short wakeups can be charged 2-3 ticks. A chain
				// that really spends CPU while idle does so in every
				// window: take the lesser of two.
				again := measure()
				t.Logf("mode %s: second window %v", tc.mode, again)
				used = min(used, again)
			}
			switch tc.mode {
			case "skmsg":
				skmsgUsed = used
				if used >= 20*time.Millisecond {
					t.Errorf("idle sk_msg chain used %v of CPU in %v, want < 20ms", used, tc.window)
				}
			case "poll":
				// On a busy machine the pollers get less than their cores,
				// so the check is relative: far more than the event-driven
				// chain, and at least 100ms.
				if used < 100*time.Millisecond || used < 10*skmsgUsed {
					t.Errorf("poll mode used only %v in %v (sk_msg: %v): the pollers are not spinning", used, tc.window, skmsgUsed)
				}
			}
			c.stop(t)
		})
	}
}
