package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"

	"github.com/spright-dev/spright/bpf/redirect"
)

// pod is a network namespace joined to the host by a veth pair, laid out
// as the standalone runner lays out its function namespaces.
type pod struct {
	ns, host, peer, hostIP, podIP string
	created                       bool
}

var podSeq int

func ipCmd(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

func newPod() (*pod, error) {
	podSeq++
	pid := os.Getpid() % 100000
	second := 250 + pid%6 // apart from the runner's 10.100-199.x.x and the tests' 10.200-249.x.x
	p := &pod{
		ns:     fmt.Sprintf("spbx-%d-%d", pid, podSeq),
		host:   fmt.Sprintf("bx%dh%d", pid, podSeq),
		peer:   fmt.Sprintf("bx%dp%d", pid, podSeq),
		hostIP: fmt.Sprintf("10.%d.%d.1", second, podSeq),
		podIP:  fmt.Sprintf("10.%d.%d.2", second, podSeq),
	}
	if err := ipCmd("netns", "add", p.ns); err != nil {
		return nil, err
	}
	p.created = true
	for _, s := range [][]string{
		{"link", "add", p.host, "type", "veth", "peer", "name", p.peer, "netns", p.ns},
		{"addr", "add", p.hostIP + "/30", "dev", p.host},
		{"link", "set", p.host, "up"},
		{"-n", p.ns, "link", "set", "lo", "up"},
		{"-n", p.ns, "addr", "add", p.podIP + "/30", "dev", p.peer},
		{"-n", p.ns, "link", "set", p.peer, "up"},
		{"-n", p.ns, "route", "add", "default", "via", p.hostIP},
	} {
		if err := ipCmd(s...); err != nil {
			p.delete()
			return nil, err
		}
	}
	if err := redirect.EnableForwarding(p.host); err != nil {
		p.delete()
		return nil, err
	}
	return p, nil
}

func (p *pod) delete() error {
	if !p.created {
		return nil
	}
	p.created = false
	return ipCmd("netns", "del", p.ns)
}

// newEchoPods: a client pod and a server pod running an HTTP echo server
// (upper-cases the body) in this process, with the forwarder attached to
// both pods unless mode is off.
func newEchoPods(mode redirect.Mode) (t *target, err error) {
	var pods []*pod
	var fwd *redirect.Forwarder
	var srv *http.Server
	cleanup := func() error {
		var errs []error
		if srv != nil {
			errs = append(errs, srv.Close())
		}
		if fwd != nil {
			errs = append(errs, fwd.Close())
		}
		for _, p := range pods {
			errs = append(errs, p.delete())
		}
		pods, fwd, srv = nil, nil, nil
		return errors.Join(errs...)
	}
	defer func() {
		if err != nil {
			cleanup()
		}
	}()
	for i := 0; i < 2; i++ {
		p, err := newPod()
		if err != nil {
			return nil, err
		}
		pods = append(pods, p)
	}
	if mode != redirect.ModeOff {
		if fwd, err = redirect.New(mode); err != nil {
			return nil, err
		}
		for _, p := range pods {
			if err := fwd.AddPod(p.host, p.ns, p.peer); err != nil {
				return nil, err
			}
		}
	}
	server := pods[1]
	var ln net.Listener
	if err := redirect.InNetns(server.ns, func() (err error) {
		ln, err = net.Listen("tcp", server.podIP+":8080")
		return err
	}); err != nil {
		return nil, fmt.Errorf("listen in %s: %w", server.ns, err)
	}
	srv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(bytes.ToUpper(b))
	})}
	go srv.Serve(ln)
	f := fwd
	return &target{
		url:       "http://" + ln.Addr().String() + "/",
		clientNS:  pods[0].ns,
		forwarder: func() *redirect.Forwarder { return f },
		stop:      cleanup,
	}, nil
}
