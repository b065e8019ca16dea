package redirect

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
)

// HostForwarded reads Ip: ForwDatagrams of the calling process's network
// namespace: the packets its IP stack forwarded, each through the netfilter
// FORWARD hook. With redirection on, pod-to-pod traffic no longer adds to it
// — how tests and benchmarks see that the host stack was bypassed.
func HostForwarded() (uint64, error) {
	f, err := os.Open("/proc/self/net/snmp")
	if err != nil {
		return 0, fmt.Errorf("redirect: %w", err)
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) == 0 || fields[0] != "Ip:" {
			continue
		}
		if names == nil {
			names = fields
			continue
		}
		for i, n := range names {
			if n == "ForwDatagrams" && i < len(fields) {
				v, err := strconv.ParseUint(fields[i], 10, 64)
				if err != nil {
					return 0, fmt.Errorf("redirect: ForwDatagrams %q: %w", fields[i], err)
				}
				return v, nil
			}
		}
	}
	if err := sc.Err(); err != nil {
		return 0, fmt.Errorf("redirect: reading /proc/self/net/snmp: %w", err)
	}
	return 0, errors.New("redirect: no Ip: ForwDatagrams in /proc/self/net/snmp")
}
