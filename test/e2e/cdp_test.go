package e2e

import (
	"bufio"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/gorilla/websocket"
)

// browserTab drives one page of a headless Chromium over the DevTools
// protocol (a websocket of JSON commands and events): navigate, run
// JavaScript, wait for page loads, take screenshots.
type browserTab struct {
	t      *testing.T
	cmd    *exec.Cmd
	conn   *websocket.Conn
	mu     sync.Mutex
	nextID int
	wait   map[int]chan cdpReply
	loads  chan struct{}
	closed chan struct{}
}

type cdpReply struct {
	Result json.RawMessage `json:"result"`
	Error  *struct {
		Message string `json:"message"`
	} `json:"error"`
}

var devtoolsRe = regexp.MustCompile(`DevTools listening on (ws://\S+)`)

// startChromium starts Debian's chromium headless (skipping the test when
// it is not installed) and attaches to its first page.
func startChromium(t *testing.T) *browserTab {
	t.Helper()
	bin := ""
	for _, n := range []string{"chromium", "chromium-browser"} {
		if p, err := exec.LookPath(n); err == nil {
			bin = p
			break
		}
	}
	if bin == "" {
		t.Skip("needs a headless Chromium: apt-get install chromium (Debian package chromium)")
	}
	// The profile is ours to remove: Chromium's helper processes may still
	// be writing into it for a moment after they are killed.
	profile, err := os.MkdirTemp("", "spright-chromium-")
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(bin, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
		"--disable-background-networking", "--disable-component-update", "--disable-sync", "--disable-extensions",
		"--hide-scrollbars", "--user-data-dir="+profile, "--remote-debugging-port=0", "--window-size=1280,1000", "about:blank")
	// Its own process group, so that its helpers (zygote, renderers,
	// crash handler) end with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		os.RemoveAll(profile)
		t.Fatal(err)
	}
	t.Cleanup(func() {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		cmd.Wait()
		for i := 0; i < 20; i++ {
			if os.RemoveAll(profile) == nil {
				return
			}
			time.Sleep(50 * time.Millisecond)
		}
		t.Logf("could not remove the browser profile %s", profile)
	})
	found := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			if m := devtoolsRe.FindStringSubmatch(sc.Text()); m != nil {
				select {
				case found <- m[1]:
				default:
				}
			}
		}
	}()
	var browserWS string
	select {
	case browserWS = <-found:
	case <-time.After(30 * time.Second):
		t.Fatal("chromium did not print its DevTools address within 30 s")
	}
	// The page targets are listed on the same port over HTTP.
	host := strings.TrimPrefix(browserWS, "ws://")
	host = host[:strings.IndexByte(host, '/')]
	var pageWS string
	for i := 0; i < 50 && pageWS == ""; i++ {
		resp, err := http.Get("http://" + host + "/json/list")
		if err == nil {
			var targets []struct{ Type, WebSocketDebuggerURL string }
			json.NewDecoder(resp.Body).Decode(&targets)
			resp.Body.Close()
			for _, tg := range targets {
				if tg.Type == "page" && tg.WebSocketDebuggerURL != "" {
					pageWS = tg.WebSocketDebuggerURL
					break
				}
			}
		}
		if pageWS == "" {
			time.Sleep(100 * time.Millisecond)
		}
	}
	if pageWS == "" {
		t.Fatal("chromium lists no page target")
	}
	conn, _, err := websocket.DefaultDialer.Dial(pageWS, nil)
	if err != nil {
		t.Fatal(err)
	}
	b := &browserTab{t: t, cmd: cmd, conn: conn, wait: map[int]chan cdpReply{}, loads: make(chan struct{}, 16), closed: make(chan struct{})}
	t.Cleanup(func() { conn.Close() })
	go b.read()
	b.call("Page.enable", nil, nil)
	b.call("Emulation.setDeviceMetricsOverride", map[string]any{"width": 1280, "height": 1000, "deviceScaleFactor": 1, "mobile": false}, nil)
	return b
}

func (b *browserTab) read() {
	defer close(b.closed)
	for {
		_, msg, err := b.conn.ReadMessage()
		if err != nil {
			return
		}
		var m struct {
			ID     int             `json:"id"`
			Method string          `json:"method"`
			Result json.RawMessage `json:"result"`
			Error  *struct {
				Message string `json:"message"`
			} `json:"error"`
		}
		if json.Unmarshal(msg, &m) != nil {
			continue
		}
		if m.ID != 0 {
			b.mu.Lock()
			ch := b.wait[m.ID]
			delete(b.wait, m.ID)
			b.mu.Unlock()
			if ch != nil {
				ch <- cdpReply{Result: m.Result, Error: m.Error}
			}
			continue
		}
		if m.Method == "Page.loadEventFired" {
			select {
			case b.loads <- struct{}{}:
			default:
			}
		}
	}
}

// call sends a DevTools command and decodes its result into out (may be nil).
func (b *browserTab) call(method string, params any, out any) {
	b.t.Helper()
	b.mu.Lock()
	b.nextID++
	id := b.nextID
	ch := make(chan cdpReply, 1)
	b.wait[id] = ch
	b.mu.Unlock()
	if params == nil {
		params = map[string]any{}
	}
	if err := b.conn.WriteJSON(map[string]any{"id": id, "method": method, "params": params}); err != nil {
		b.t.Fatalf("%s: %v", method, err)
	}
	select {
	case r := <-ch:
		if r.Error != nil {
			b.t.Fatalf("%s: %s", method, r.Error.Message)
		}
		if out != nil {
			if err := json.Unmarshal(r.Result, out); err != nil {
				b.t.Fatalf("%s: decoding %s: %v", method, r.Result, err)
			}
		}
	case <-b.closed:
		b.t.Fatalf("%s: the browser connection closed", method)
	case <-time.After(30 * time.Second):
		b.t.Fatalf("%s: no answer in 30 s", method)
	}
}

// drainLoads forgets load events seen so far.
func (b *browserTab) drainLoads() {
	for {
		select {
		case <-b.loads:
		default:
			return
		}
	}
}

func (b *browserTab) waitLoad(what string) {
	b.t.Helper()
	select {
	case <-b.loads:
	case <-time.After(30 * time.Second):
		b.t.Fatalf("%s: the page did not load within 30 s", what)
	}
}

// navigate loads url and waits for the load event.
func (b *browserTab) navigate(url string) {
	b.t.Helper()
	b.drainLoads()
	var r struct{ ErrorText string }
	b.call("Page.navigate", map[string]any{"url": url}, &r)
	if r.ErrorText != "" {
		b.t.Fatalf("navigate %s: %s", url, r.ErrorText)
	}
	b.waitLoad(url)
}

// eval runs a JavaScript expression and returns its value as JSON text.
func (b *browserTab) eval(expr string) string {
	b.t.Helper()
	var r struct {
		Result struct {
			Value json.RawMessage `json:"value"`
		} `json:"result"`
		ExceptionDetails *struct {
			Text string `json:"text"`
		} `json:"exceptionDetails"`
	}
	b.call("Runtime.evaluate", map[string]any{"expression": expr, "returnByValue": true, "awaitPromise": true}, &r)
	if r.ExceptionDetails != nil {
		b.t.Fatalf("evaluate %q: %s", expr, r.ExceptionDetails.Text)
	}
	return string(r.Result.Value)
}

// text is the page's visible text.
func (b *browserTab) text() string {
	var s string
	json.Unmarshal([]byte(b.eval("document.body.innerText")), &s)
	return s
}

// clickAndWait runs a script that navigates (clicks a link or a submit
// button) and waits for the next page to load.
func (b *browserTab) clickAndWait(script string) {
	b.t.Helper()
	b.drainLoads()
	b.eval(script)
	b.waitLoad(script)
}

// screenshot saves the viewport as a PNG file.
func (b *browserTab) screenshot(path string) {
	b.t.Helper()
	var r struct{ Data string }
	b.call("Page.captureScreenshot", map[string]any{"format": "png"}, &r)
	png, err := base64.StdEncoding.DecodeString(r.Data)
	if err != nil || len(png) < 8 || string(png[1:4]) != "PNG" {
		b.t.Fatalf("screenshot: %d bytes, %v", len(png), err)
	}
	if err := os.WriteFile(path, png, 0o644); err != nil {
		b.t.Fatal(err)
	}
	b.t.Logf("screenshot %s (%d bytes)", path, len(png))
}
