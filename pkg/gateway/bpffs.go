package gateway

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"golang.org/x/sys/unix"
)

const bpffsRoot = "/sys/fs/bpf"

// lockDir holds one lock file per pin directory in use.
const lockDir = "/run/spright"

// lockPinDir makes sure one gateway at a time owns a pin directory: two
// gateways sharing a sockhash would hand out the same instance IDs and
// steal each other's descriptors. The lock dies with the process.
func lockPinDir(pinDir string) (*os.File, error) {
	if err := os.MkdirAll(lockDir, 0o750); err != nil {
		return nil, fmt.Errorf("gateway: %w", err)
	}
	name := filepath.Join(lockDir, "pins"+strings.ReplaceAll(filepath.Clean(pinDir), "/", "_")+".lock")
	f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("gateway: lock for %s: %w", pinDir, err)
	}
	if err := unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB); err != nil {
		f.Close()
		return nil, fmt.Errorf("gateway: another gateway is using the eBPF pins in %s (lock %s): %w", pinDir, name, err)
	}
	return f, nil
}

// ensureBPFFS mounts the bpf filesystem at /sys/fs/bpf when the node (or a
// fresh CI machine) has not: pinning the datapath's maps needs it.
func ensureBPFFS() error {
	var st unix.Statfs_t
	if err := unix.Statfs(bpffsRoot, &st); err == nil && st.Type == unix.BPF_FS_MAGIC {
		return nil
	}
	if err := os.MkdirAll(bpffsRoot, 0o755); err != nil {
		return fmt.Errorf("gateway: create %s: %w", bpffsRoot, err)
	}
	if err := unix.Mount("bpf", bpffsRoot, "bpf", 0, "mode=0700"); err != nil {
		return fmt.Errorf("gateway: mount bpffs at %s: %w", bpffsRoot, err)
	}
	return nil
}
