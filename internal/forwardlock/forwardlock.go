// Package forwardlock serializes the tests that read the host's Ip
// ForwDatagrams counter across test binaries (bpf/redirect and test/e2e run
// in parallel under go test ./...): one test's stack-path traffic must not
// show up in another's "nothing was forwarded" check.
package forwardlock

import (
	"os"
	"testing"

	"golang.org/x/sys/unix"
)

// Path is the lock file shared by every test binary on the host.
const Path = "/run/spright-forwdatagrams-test.lock"

// Hold takes the lock until t ends.
func Hold(t testing.TB) {
	t.Helper()
	f, err := os.OpenFile(Path, os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		t.Fatalf("forwarding test lock: %v", err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX); err != nil {
		f.Close()
		t.Fatalf("forwarding test lock: %v", err)
	}
	t.Cleanup(func() { f.Close() }) // closing releases the lock
}
