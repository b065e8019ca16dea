package cloudevents

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strings"
	"testing"

	ce "github.com/cloudevents/sdk-go/v2"
	"github.com/cloudevents/sdk-go/v2/binding"

	"github.com/spright-dev/spright/pkg/adapter"
	"github.com/spright-dev/spright/pkg/adapter/adaptertest"
)

func start(t *testing.T) (*httptest.Server, *adaptertest.Chain) {
	t.Helper()
	fc := &adaptertest.Chain{SlotSize: 1024}
	ac := adapter.NewChain("motion", fc, adapter.Options{})
	if _, err := ac.AttachNamed(context.Background(), "cloudevents"); err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(adapter.HTTPHandler(ac, nil))
	t.Cleanup(srv.Close)
	return srv, fc
}

// TestSDKClient: sdk-go's own client sends a binary-mode event and gets
// the chain's answer back as an event.
func TestSDKClient(t *testing.T) {
	srv, fc := start(t)
	c, err := ce.NewClientHTTP()
	if err != nil {
		t.Fatal(err)
	}
	for _, structured := range []bool{false, true} {
		ev := ce.NewEvent()
		ev.SetID("e1")
		ev.SetSource("/sensors/s1")
		ev.SetType("motion")
		ev.SetData(ce.ApplicationJSON, map[string]string{"sensor": "s1", "state": "on"})
		ctx := ce.ContextWithTarget(context.Background(), srv.URL)
		if structured {
			ctx = binding.WithForceStructured(ctx)
		}
		resp, res := c.Request(ctx, ev)
		if !ce.IsACK(res) {
			t.Fatalf("structured=%v: %v", structured, res)
		}
		if resp == nil || resp.Type() != "motion.response" || resp.Source() != "/spright/motion" || string(resp.Data()) != `{"light":"s1","state":"on"}` {
			t.Fatalf("structured=%v: answer %v", structured, resp)
		}
	}
	if got := fc.Topics(); len(got) != 2 || got[0] != "motion" || got[1] != "motion" {
		t.Fatalf("chain topics %q, want the event type", got)
	}
}

func curl(t *testing.T, args ...string) (int, string, string) {
	t.Helper()
	bin, err := exec.LookPath("curl")
	if err != nil {
		t.Skip("needs curl")
	}
	out, err := exec.Command(bin, append([]string{"-sS", "-D", "-", "-o", "-"}, args...)...).Output()
	if err != nil {
		t.Fatalf("curl: %v", err)
	}
	head, body, _ := strings.Cut(strings.ReplaceAll(string(out), "\r\n", "\n"), "\n\n")
	code := 0
	if f := strings.Fields(head); len(f) > 1 {
		code = atoi(f[1])
	}
	return code, head, body
}

func atoi(s string) int {
	n := 0
	for _, c := range s {
		n = n*10 + int(c-'0')
	}
	return n
}

// TestCurlStructured: a structured-mode event from curl gets a structured
// event back; mistakes get 400 with a reason.
func TestCurlStructured(t *testing.T) {
	srv, _ := start(t)
	code, head, body := curl(t, "-H", "Content-Type: application/cloudevents+json", "-d",
		`{"specversion":"1.0","id":"1","source":"/s/1","type":"motion","datacontenttype":"application/json","data":{"sensor":"s1","state":"on"}}`, srv.URL)
	if code != 200 || !strings.Contains(head, "application/cloudevents+json") {
		t.Fatalf("structured: %d %s %s", code, head, body)
	}
	var ev map[string]any
	if err := json.Unmarshal([]byte(body), &ev); err != nil {
		t.Fatalf("answer is not JSON: %q", body)
	}
	if ev["type"] != "motion.response" || ev["specversion"] != "1.0" || ev["id"] == "" {
		t.Fatalf("answer attributes: %v", ev)
	}
	if d, _ := json.Marshal(ev["data"]); string(d) != `{"light":"s1","state":"on"}` {
		t.Fatalf("answer data %s", d)
	}
	// Binary mode from curl: ce-* headers out.
	code, head, body = curl(t, "-H", "ce-specversion: 1.0", "-H", "ce-id: 2", "-H", "ce-source: /s/1", "-H", "ce-type: motion",
		"-H", "Content-Type: application/json", "-d", `{"sensor":"s2","state":"off"}`, srv.URL)
	if code != 200 || !strings.Contains(strings.ToLower(head), "ce-type: motion.response") || body != `{"light":"s2","state":"off"}` {
		t.Fatalf("binary: %d %s %q", code, head, body)
	}
}

// TestRejects: missing attributes, batch mode and plain HTTP get 400 with
// a message that says what is wrong; the chain is not called.
func TestRejects(t *testing.T) {
	srv, fc := start(t)
	cases := []struct {
		name    string
		headers map[string]string
		body    string
		status  int
		want    string
	}{
		{"structured without id", map[string]string{"Content-Type": "application/cloudevents+json"},
			`{"specversion":"1.0","source":"/s","type":"motion","data":{}}`, 400, "id"},
		{"structured without type", map[string]string{"Content-Type": "application/cloudevents+json"},
			`{"specversion":"1.0","id":"1","source":"/s"}`, 400, "type"},
		{"structured broken JSON", map[string]string{"Content-Type": "application/cloudevents+json"}, `{"specversion":`, 400, "invalid CloudEvent"},
		{"binary without source", map[string]string{"Ce-Specversion": "1.0", "Ce-Id": "1", "Ce-Type": "motion"}, `{}`, 400, "source"},
		{"unknown specversion", map[string]string{"Ce-Specversion": "9.9", "Ce-Id": "1", "Ce-Type": "motion", "Ce-Source": "/s"}, `{}`, 400, "specversion"},
		{"batch", map[string]string{"Content-Type": "application/cloudevents-batch+json"}, `[]`, 400, "batch mode"},
		{"plain HTTP", map[string]string{"Content-Type": "application/json"}, `{}`, 400, "not a CloudEvent"},
	}
	for _, tc := range cases {
		req, _ := http.NewRequest("POST", srv.URL, strings.NewReader(tc.body))
		for k, v := range tc.headers {
			req.Header.Set(k, v)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != tc.status || !strings.Contains(string(b), tc.want) {
			t.Errorf("%s: %d %q, want %d mentioning %q", tc.name, resp.StatusCode, b, tc.status, tc.want)
		}
	}
	if fc.Calls.Load() != 0 {
		t.Fatalf("chain called %d times for rejected events", fc.Calls.Load())
	}
}
