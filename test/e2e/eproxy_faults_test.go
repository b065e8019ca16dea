package e2e

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"testing"
	"time"
)

// TestEproxyUserContainerClosesConnections: a user container that drops
// connections mid-request (reads the request, closes without answering).
// On the kernel-spliced path (containerConcurrency 0) and on the breaker
// path (10), every such request ends promptly with an error for its client
// (the connection closes, or 502 from the userspace proxy), EPROXY keeps
// serving the next requests, and the eBPF in-flight count comes back to 0
// (a dropped connection's unanswered requests are taken out of it).
func TestEproxyUserContainerClosesConnections(t *testing.T) {
	for i, cc := range []string{"0", "10"} {
		t.Run("containerConcurrency="+cc, func(t *testing.T) {
			ip := fmt.Sprintf("127.0.0.%d", 60+i)
			agent := startPodAgent(t, "faults-"+cc, nil)
			user := newUserContainer(t, nil) // for its port
			l, err := net.Listen("tcp", user.addr)
			if err != nil {
				t.Fatal(err)
			}
			srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/drop" {
					io.Copy(io.Discard, r.Body)
					c, _, err := w.(http.Hijacker).Hijack()
					if err == nil {
						c.Close()
					}
					return
				}
				io.WriteString(w, "ok")
			})}
			go srv.Serve(l)
			t.Cleanup(func() { srv.Close() })

			env := eproxyEnv(t, ip, agent.ControlSocketPath(), user)
			env["CONTAINER_CONCURRENCY"] = cc
			env["SPRIGHT_METRICS_PORT"] = freePortOn(t, ip)
			ep := startEproxy(t, env)
			base := "http://" + ep.traffic

			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
			for n := 0; n < 10; n++ {
				resp, err := client.Post(base+"/drop", "text/plain", nil)
				if err == nil {
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != http.StatusBadGateway {
						t.Fatalf("dropped request %d: %d %q, want an error or 502", n, resp.StatusCode, b)
					}
				} else if ne, ok := err.(net.Error); ok && ne.Timeout() {
					t.Fatalf("dropped request %d hung: %v", n, err)
				}
			}
			for n := 0; n < 10; n++ {
				resp, err := client.Get(base + "/")
				if err != nil {
					t.Fatalf("request after the drops: %v", err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != "ok" {
					t.Fatalf("request after the drops: %d %q", resp.StatusCode, b)
				}
			}
			select {
			case <-ep.done:
				t.Fatalf("eproxy exited:\n%s", ep.log.String())
			default:
			}
			eventually(t, 5*time.Second, "eBPF in-flight back to 0", func() (bool, error) {
				return ep.promCounters(t)["eproxy_inflight_requests"] == 0, nil
			})
		})
	}
}
