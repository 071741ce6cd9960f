// Command testenv-pause is the pod sandbox ("pause") container of testenv's real node: it
// holds the pod's namespaces open, reaps the zombies it inherits as the pod's PID 1, and
// exits on SIGINT/SIGTERM. Built static (CGO_ENABLED=0) into an image FROM scratch, because
// no registry is reachable to pull registry.k8s.io/pause.
package main

import (
	"os"
	"os/signal"
	"syscall"
)

func main() {
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for s := range sigs {
		if s != syscall.SIGCHLD {
			os.Exit(0)
		}
		// Reap every exited child; WNOHANG so a live one does not block the loop.
		for {
			pid, err := syscall.Wait4(-1, nil, syscall.WNOHANG, nil)
			if pid <= 0 || err != nil {
				break
			}
		}
	}
}
