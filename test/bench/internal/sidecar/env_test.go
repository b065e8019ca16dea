package sidecar

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
)

func environMap(t *testing.T, env []string) map[string]string {
	t.Helper()
	m := map[string]string{}
	for _, kv := range env {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			t.Fatalf("not KEY=VALUE: %q", kv)
		}
		if _, dup := m[k]; dup {
			t.Errorf("%s set twice", k)
		}
		m[k] = v
	}
	return m
}

func TestDefaultEnviron(t *testing.T) {
	m := environMap(t, DefaultQueueProxyEnv().Environ())
	want := map[string]string{
		"SERVING_NAMESPACE":               "default",
		"SERVING_REVISION":                "hello-00001",
		"SERVING_CONFIGURATION":           "hello",
		"SERVING_SERVICE":                 "hello",
		"QUEUE_SERVING_PORT":              "8012",
		"QUEUE_SERVING_TLS_PORT":          "8112",
		"USER_PORT":                       "8080",
		"CONTAINER_CONCURRENCY":           "0",
		"REVISION_TIMEOUT_SECONDS":        "300",
		"SERVING_POD_IP":                  "127.0.0.1",
		"SERVING_READINESS_PROBE":         `{"tcpSocket":{"port":8080,"host":"127.0.0.1"},"successThreshold":1}`,
		"SERVING_REQUEST_METRICS_BACKEND": "prometheus",
		"TRACING_CONFIG_BACKEND":          "none",
		"TRACING_CONFIG_SAMPLE_RATE":      "0.1",
		"METRICS_DOMAIN":                  "knative.dev/internal/serving",
		"SYSTEM_NAMESPACE":                "knative-serving",
		"SERVING_LOGGING_LEVEL":           "",
		"ENABLE_PROFILING":                "false",
		"SERVING_ENABLE_REQUEST_LOG":      "false",
	}
	for k, v := range want {
		if got, ok := m[k]; !ok || got != v {
			t.Errorf("%s = %q (set: %v), want %q", k, got, ok, v)
		}
	}
	if len(m) != 34 {
		t.Errorf("%d variables, want the reconciler's 34", len(m))
	}
	var zap map[string]any
	if err := json.Unmarshal([]byte(m["SERVING_LOGGING_CONFIG"]), &zap); err != nil || zap["encoding"] != "json" {
		t.Errorf("SERVING_LOGGING_CONFIG is not config-logging's zap JSON: %v %v", zap, err)
	}
}

func TestEnvironOverrides(t *testing.T) {
	e := DefaultQueueProxyEnv()
	e.ServingPort, e.UserPort, e.ContainerConcurrency = 18012, 18080, 10
	e.ReadinessProbe = HTTPGetProbe(18080, "/healthz")
	m := environMap(t, e.Environ())
	if m["QUEUE_SERVING_PORT"] != "18012" || m["USER_PORT"] != "18080" || m["CONTAINER_CONCURRENCY"] != "10" {
		t.Errorf("overrides lost: %v", m)
	}
	if e.Addr() != "127.0.0.1:18012" || e.UserAddr() != "127.0.0.1:18080" {
		t.Errorf("Addr, UserAddr = %s, %s", e.Addr(), e.UserAddr())
	}
	if want := `{"httpGet":{"path":"/healthz","port":18080,"host":"127.0.0.1","scheme":"HTTP"},"successThreshold":1}`; m["SERVING_READINESS_PROBE"] != want {
		t.Errorf("probe = %s\nwant    %s", m["SERVING_READINESS_PROBE"], want)
	}
}

// envconfigName is envconfig's split_words name of a struct field:
// "QueueServingTLSPort" -> "QUEUE_SERVING_TLS_PORT".
func envconfigName(field string) string {
	gather := regexp.MustCompile("([^A-Z]+|[A-Z]+[^A-Z]+|[A-Z]+)")
	acronym := regexp.MustCompile("([A-Z]+)([A-Z][^A-Z]+)")
	var words []string
	for _, w := range gather.FindAllString(field, -1) {
		if m := acronym.FindStringSubmatch(w); m != nil {
			words = append(words, m[1], m[2])
			continue
		}
		words = append(words, w)
	}
	return strings.ToUpper(strings.Join(words, "_"))
}

func TestEnvconfigName(t *testing.T) {
	for in, want := range map[string]string{
		"QueueServingTLSPort":  "QUEUE_SERVING_TLS_PORT",
		"ServingPodIP":         "SERVING_POD_IP",
		"ContainerConcurrency": "CONTAINER_CONCURRENCY",
		"ServingLoggingConfig": "SERVING_LOGGING_CONFIG",
	} {
		if got := envconfigName(in); got != want {
			t.Errorf("envconfigName(%s) = %s, want %s", in, got, want)
		}
	}
}

// TestCoversQueueProxyConfig reads the queue-proxy's config struct from
// the module cache and checks that Environ sets every variable it reads,
// required or not, so a serving upgrade that adds one fails here.
func TestCoversQueueProxyConfig(t *testing.T) {
	out, err := exec.Command("go", "env", "GOMODCACHE").Output()
	if err != nil {
		t.Skip("go env GOMODCACHE:", err)
	}
	src := filepath.Join(strings.TrimSpace(string(out)), "knative.dev", "serving@"+ServingVersion, "pkg/queue/sharedmain/main.go")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Skipf("serving %s not in the module cache: %v", ServingVersion, err)
	}
	// Fields of `type config struct` and `type Env struct` with tags:
	//	QueueServingPort string `split_words:"true" required:"true"`
	//	EnableHTTP2AutoDetection bool `envconfig:"ENABLE_HTTP2_AUTO_DETECTION"`
	field := regexp.MustCompile("(?m)^\\s+([A-Z][A-Za-z0-9]*)\\s+[^`\\n]+`([^`]*)`")
	explicit := regexp.MustCompile(`envconfig:"([^"]+)"`)
	var read, required []string
	for _, m := range field.FindAllStringSubmatch(string(b), -1) {
		name, tag := m[1], m[2]
		if !strings.Contains(tag, "split_words") && !strings.Contains(tag, "envconfig:") {
			continue
		}
		key := envconfigName(name)
		if e := explicit.FindStringSubmatch(tag); e != nil {
			key = e[1]
		}
		read = append(read, key)
		if strings.Contains(tag, `required:"true"`) {
			required = append(required, key)
		}
	}
	wantRequired := []string{"CONTAINER_CONCURRENCY", "QUEUE_SERVING_PORT", "QUEUE_SERVING_TLS_PORT", "USER_PORT",
		"REVISION_TIMEOUT_SECONDS", "SERVING_LOGGING_CONFIG", "SERVING_LOGGING_LEVEL",
		"SERVING_NAMESPACE", "SERVING_CONFIGURATION", "SERVING_REVISION", "SERVING_POD", "SERVING_POD_IP"}
	if !reflect.DeepEqual(required, wantRequired) {
		t.Errorf("queue-proxy's required variables:\n got %v\nwant %v", required, wantRequired)
	}
	if len(read) < 30 {
		t.Fatalf("parsed only %d variables from %s: %v", len(read), src, read)
	}
	m := environMap(t, DefaultQueueProxyEnv().Environ())
	for _, k := range read {
		if _, ok := m[k]; !ok {
			t.Errorf("queue-proxy reads %s; Environ does not set it", k)
		}
	}
}
