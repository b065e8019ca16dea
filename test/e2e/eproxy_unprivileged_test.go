package e2e

import (
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"

	"github.com/spright-dev/spright/pkg/gateway"
)

const (
	asQueueProxyEnv      = "SPRIGHT_E2E_AS_QUEUE_PROXY"       // binary to exec
	asQueueProxyGroupEnv = "SPRIGHT_E2E_AS_QUEUE_PROXY_GROUP" // supplemental group
)

// asQueueProxy becomes what Knative makes of the queue-proxy container —
// uid/gid 65532, one supplemental group, no capabilities, no new
// privileges, bpf(2) refused by seccomp — and execs the binary named by
// asQueueProxyEnv. It runs in a re-exec of the test binary (TestMain).
func asQueueProxy() {
	fail := func(what string, err error) {
		fmt.Fprintf(os.Stderr, "asQueueProxy: %s: %v\n", what, err)
		os.Exit(111)
	}
	bin := os.Getenv(asQueueProxyEnv)
	group, err := strconv.Atoi(os.Getenv(asQueueProxyGroupEnv))
	if err != nil {
		fail("group", err)
	}
	// syscall's (not unix's) credential calls change every thread.
	if err := syscall.Setgroups([]int{group}); err != nil {
		fail("setgroups", err)
	}
	if err := syscall.Setgid(65532); err != nil {
		fail("setgid", err)
	}
	if err := syscall.Setuid(65532); err != nil {
		fail("setuid", err)
	}
	// The filter is installed on this thread and execve keeps it: the new
	// program's only thread starts with it.
	runtime.LockOSThread()
	if err := unix.Prctl(unix.PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0); err != nil {
		fail("no_new_privs", err)
	}
	filter := []unix.SockFilter{
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 4}, // seccomp_data.arch
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 3, K: unix.AUDIT_ARCH_X86_64},
		{Code: unix.BPF_LD | unix.BPF_W | unix.BPF_ABS, K: 0}, // seccomp_data.nr
		{Code: unix.BPF_JMP | unix.BPF_JEQ | unix.BPF_K, Jt: 0, Jf: 1, K: unix.SYS_BPF},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ERRNO | uint32(unix.EPERM)},
		{Code: unix.BPF_RET | unix.BPF_K, K: unix.SECCOMP_RET_ALLOW},
	}
	prog := unix.SockFprog{Len: uint16(len(filter)), Filter: &filter[0]}
	if _, _, errno := unix.RawSyscall(unix.SYS_SECCOMP, unix.SECCOMP_SET_MODE_FILTER, 0, uintptr(unsafe.Pointer(&prog))); errno != 0 {
		fail("seccomp", errno)
	}
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SPRIGHT_E2E_AS_QUEUE_PROXY") {
			env = append(env, kv)
		}
	}
	fail("exec "+bin, syscall.Exec(bin, []string{bin}, env))
}

// TestEproxyUnprivileged runs EPROXY the way Knative runs queue-proxy: not
// root, no capabilities, only the gateway's group for the control socket,
// and under the container runtime's default seccomp profile, which refuses
// bpf(2) to a container without CAP_BPF or CAP_SYS_ADMIN (here a seccomp
// filter that refuses exactly bpf(2) with EPERM, as that profile does). So
// EPROXY cannot read the metrics map itself. Before the agent read the
// counters for it, EPROXY on the real one-node cluster failed to register
// ("metrics map from agent: get map info: operation not permitted") and the
// autoscaler never got a counted request; here it must register and count
// what it serves.
func TestEproxyUnprivileged(t *testing.T) {
	needRoot(t)
	if runtime.GOARCH != "amd64" {
		t.Skip("the test's seccomp filter is written for amd64")
	}
	// A socket directory and a binary a uid-65532 process can reach
	// (t.TempDir's parent is 0700).
	dir, err := os.MkdirTemp("", "spright-unpriv-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	bin, err := os.ReadFile(eproxyBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	eproxyCopy := filepath.Join(dir, "eproxy")
	if err := os.WriteFile(eproxyCopy, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	g := startPodAgent(t, "unpriv", nil, func(c *gateway.Config) { c.ControlSocket = filepath.Join(dir, "run", "control.sock") })
	user := newUserContainer(t, nil)
	user.start(t)
	env := eproxyEnv(t, podIP, g.ControlSocketPath(), user)
	env["SPRIGHT_METRICS_PORT"] = freePortOn(t, podIP)
	ep := startEproxy(t, env, func(c *exec.Cmd) {
		// This test binary, re-executed, drops to uid 65532 with the
		// gateway's group (the pod webhook's supplemental group), installs
		// the filter and execs EPROXY.
		c.Path = os.Args[0]
		c.Args = []string{os.Args[0]}
		c.Env = append(c.Env, asQueueProxyEnv+"="+eproxyCopy, fmt.Sprintf("%s=%d", asQueueProxyGroupEnv, os.Getegid()))
	})
	waitUntil(t, 10*time.Second, "eproxy registered with the node agent", func() bool {
		return strings.Contains(ep.log.String(), "registered with the node agent")
	})
	if ep.agentLost() {
		t.Fatalf("eproxy (uid 65532) could not use the node agent:\n%s", ep.log.String())
	}
	const n = 20
	for i := 0; i < n; i++ {
		resp, err := http.Post("http://"+ep.traffic+"/", "text/plain", strings.NewReader("x"))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("request %d: %s", i, resp.Status)
		}
	}
	waitUntil(t, 5*time.Second, "the requests counted in eBPF and read through the agent", func() bool {
		return ep.requestsTotal(t) >= n
	})
	if got := ep.requestsTotal(t); got != n {
		t.Errorf("eproxy_requests_total %v, want %d", got, n)
	}
}
