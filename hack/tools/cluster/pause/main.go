// Command pause is the pod sandbox's process (kubelet's pause image): it
// holds the pod's namespaces open and does nothing else. Built here by ko
// because no image can be pulled from outside this machine.
//
// As PID 1 of the sandbox it reaps zombies (children re-parented to it) and
// exits 0 on SIGINT/SIGTERM, like Kubernetes' own pause.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sig := make(chan os.Signal, 4)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sig {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		for {
			var ws syscall.WaitStatus
			pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
