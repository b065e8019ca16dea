package sidecar

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// Knative's fixed queue-proxy ports (knative.dev/serving/pkg/networking).
// Only the serving ports come from the environment; admin and metrics are
// compiled in, which is why every stack runs in a namespace of its own.
const (
	QueueHTTPPort      = 8012 // QUEUE_SERVING_PORT for HTTP/1 revisions
	QueueHTTPSPort     = 8112 // QUEUE_SERVING_TLS_PORT (serves only if certs are mounted)
	QueueAdminPort     = 8022 // /wait-for-drain
	QueueMetricsPort   = 9090 // autoscaler scrape (protobuf Stat)
	UserMetricsPort    = 9091 // request metrics (Prometheus), if a backend is set
	DefaultUserPort    = 8080 // Knative's default container port
	ServingVersion     = "v0.42.2"
	servingModule      = "knative.dev/serving"
	defaultZapConfig   = `{"level":"info","development":false,"outputPaths":["stdout"],"errorOutputPaths":["stderr"],"encoding":"json","encoderConfig":{"timeKey":"timestamp","levelKey":"severity","nameKey":"logger","callerKey":"caller","messageKey":"message","stacktraceKey":"stacktrace","lineEnding":"","levelEncoder":"","timeEncoder":"iso8601","durationEncoder":"","callerEncoder":""}}`
	defaultRequestLogT = `{"httpRequest": {"requestMethod": "{{.Request.Method}}", "requestUrl": "{{js .Request.RequestURI}}", "requestSize": "{{.Request.ContentLength}}", "status": {{.Response.Code}}, "responseSize": "{{.Response.Size}}", "userAgent": "{{js .Request.UserAgent}}", "remoteIp": "{{js .Request.RemoteAddr}}", "serverIp": "{{.Revision.PodIP}}", "referer": "{{js .Request.Referer}}", "latency": "{{.Response.Latency}}s", "protocol": "{{.Request.Proto}}"}, "traceId": "{{index .Request.Header "X-B3-Traceid"}}"}`
)

// QueueProxyEnv is the environment Knative's revision reconciler gives the
// queue-proxy container (makeQueueContainer in serving v0.42.2
// pkg/reconciler/revision/resources/queue.go), in its terms. Pod fields
// that Kubernetes fills from the downward API (SERVING_POD, SERVING_POD_IP,
// HOST_IP) are plain values here.
//
// Which of these the queue-proxy requires (envconfig `required`: present,
// possibly empty): CONTAINER_CONCURRENCY, QUEUE_SERVING_PORT,
// QUEUE_SERVING_TLS_PORT, USER_PORT, REVISION_TIMEOUT_SECONDS,
// SERVING_LOGGING_CONFIG, SERVING_LOGGING_LEVEL, SERVING_NAMESPACE,
// SERVING_CONFIGURATION, SERVING_REVISION, SERVING_POD, SERVING_POD_IP.
// The rest are optional but set, as in a cluster, to a default
// installation's values (config-observability, config-logging,
// config-tracing, config-features), because they change what it does per
// request: SERVING_REQUEST_METRICS_BACKEND=prometheus in particular wraps
// every request in two OpenCensus metric handlers and opens port 9091.
type QueueProxyEnv struct {
	Namespace     string // SERVING_NAMESPACE
	Service       string // SERVING_SERVICE
	Configuration string // SERVING_CONFIGURATION
	Revision      string // SERVING_REVISION
	Pod           string // SERVING_POD
	PodIP         string // SERVING_POD_IP
	HostIP        string // HOST_IP

	ServingPort int // QUEUE_SERVING_PORT
	TLSPort     int // QUEUE_SERVING_TLS_PORT
	UserPort    int // USER_PORT

	ContainerConcurrency        int // CONTAINER_CONCURRENCY (0: unlimited, no breaker)
	TimeoutSeconds              int // REVISION_TIMEOUT_SECONDS
	ResponseStartTimeoutSeconds int // REVISION_RESPONSE_START_TIMEOUT_SECONDS
	IdleTimeoutSeconds          int // REVISION_IDLE_TIMEOUT_SECONDS

	// ReadinessProbe is SERVING_READINESS_PROBE: the user container's
	// readiness probe as JSON (a corev1.Probe), run for K-Network-Probe:
	// queue. See TCPSocketProbe and HTTPGetProbe.
	ReadinessProbe string

	LoggingConfig         string // SERVING_LOGGING_CONFIG (zap JSON)
	LoggingLevel          string // SERVING_LOGGING_LEVEL
	RequestLogTemplate    string // SERVING_REQUEST_LOG_TEMPLATE
	EnableRequestLog      bool   // SERVING_ENABLE_REQUEST_LOG
	EnableProbeRequestLog bool   // SERVING_ENABLE_PROBE_REQUEST_LOG

	RequestMetricsBackend                string // SERVING_REQUEST_METRICS_BACKEND ("prometheus", "opencensus" or "")
	RequestMetricsReportingPeriodSeconds int    // SERVING_REQUEST_METRICS_REPORTING_PERIOD_SECONDS
	MetricsCollectorAddress              string // METRICS_COLLECTOR_ADDRESS

	TracingBackend        string  // TRACING_CONFIG_BACKEND ("none", "zipkin")
	TracingZipkinEndpoint string  // TRACING_CONFIG_ZIPKIN_ENDPOINT
	TracingDebug          bool    // TRACING_CONFIG_DEBUG
	TracingSampleRate     float64 // TRACING_CONFIG_SAMPLE_RATE

	SystemNamespace string // SYSTEM_NAMESPACE
	MetricsDomain   string // METRICS_DOMAIN

	EnableProfiling            bool   // ENABLE_PROFILING (opens :8008)
	EnableHTTP2AutoDetection   bool   // ENABLE_HTTP2_AUTO_DETECTION
	EnableHTTPFullDuplex       bool   // ENABLE_HTTP_FULL_DUPLEX
	EnableMultiContainerProbes bool   // ENABLE_MULTI_CONTAINER_PROBES
	RootCA                     string // ROOT_CA
}

// DefaultQueueProxyEnv is what a default Knative 1.15 install gives the
// queue-proxy of revision hello-00001 of Service hello in namespace
// default, whose container listens on 8080 and declares no readiness probe
// (so the webhook defaults it to a TCP probe of the user port).
func DefaultQueueProxyEnv() QueueProxyEnv {
	return QueueProxyEnv{
		Namespace:     "default",
		Service:       "hello",
		Configuration: "hello",
		Revision:      "hello-00001",
		Pod:           "hello-00001-deployment-5d8f7c9b7d-x2x9k",
		PodIP:         "127.0.0.1",
		HostIP:        "127.0.0.1",

		ServingPort: QueueHTTPPort,
		TLSPort:     QueueHTTPSPort,
		UserPort:    DefaultUserPort,

		ContainerConcurrency:        0,
		TimeoutSeconds:              300, // config-defaults revision-timeout-seconds
		ResponseStartTimeoutSeconds: 0,
		IdleTimeoutSeconds:          0,

		ReadinessProbe: TCPSocketProbe(DefaultUserPort),

		LoggingConfig:      defaultZapConfig,
		LoggingLevel:       "", // no loglevel.queueproxy in config-logging
		RequestLogTemplate: defaultRequestLogT,

		RequestMetricsBackend:                "prometheus",
		RequestMetricsReportingPeriodSeconds: 5,

		TracingBackend:    "none",
		TracingSampleRate: 0.1,

		SystemNamespace: "knative-serving",
		MetricsDomain:   "knative.dev/internal/serving",
	}
}

// Environ is the environment as KEY=VALUE strings, in the reconciler's
// order.
func (e QueueProxyEnv) Environ() []string {
	b := strconv.FormatBool
	i := strconv.Itoa
	kv := [][2]string{
		{"SERVING_NAMESPACE", e.Namespace},
		{"SERVING_SERVICE", e.Service},
		{"SERVING_CONFIGURATION", e.Configuration},
		{"SERVING_REVISION", e.Revision},
		{"QUEUE_SERVING_PORT", i(e.ServingPort)},
		{"QUEUE_SERVING_TLS_PORT", i(e.TLSPort)},
		{"CONTAINER_CONCURRENCY", i(e.ContainerConcurrency)},
		{"REVISION_TIMEOUT_SECONDS", i(e.TimeoutSeconds)},
		{"REVISION_RESPONSE_START_TIMEOUT_SECONDS", i(e.ResponseStartTimeoutSeconds)},
		{"REVISION_IDLE_TIMEOUT_SECONDS", i(e.IdleTimeoutSeconds)},
		{"SERVING_POD", e.Pod},
		{"SERVING_POD_IP", e.PodIP},
		{"SERVING_LOGGING_CONFIG", e.LoggingConfig},
		{"SERVING_LOGGING_LEVEL", e.LoggingLevel},
		{"SERVING_REQUEST_LOG_TEMPLATE", e.RequestLogTemplate},
		{"SERVING_ENABLE_REQUEST_LOG", b(e.EnableRequestLog)},
		{"SERVING_REQUEST_METRICS_BACKEND", e.RequestMetricsBackend},
		{"SERVING_REQUEST_METRICS_REPORTING_PERIOD_SECONDS", i(e.RequestMetricsReportingPeriodSeconds)},
		{"TRACING_CONFIG_BACKEND", e.TracingBackend},
		{"TRACING_CONFIG_ZIPKIN_ENDPOINT", e.TracingZipkinEndpoint},
		{"TRACING_CONFIG_DEBUG", b(e.TracingDebug)},
		{"TRACING_CONFIG_SAMPLE_RATE", fmt.Sprint(e.TracingSampleRate)},
		{"USER_PORT", i(e.UserPort)},
		{"SYSTEM_NAMESPACE", e.SystemNamespace},
		{"METRICS_DOMAIN", e.MetricsDomain},
		{"SERVING_READINESS_PROBE", e.ReadinessProbe},
		{"ENABLE_PROFILING", b(e.EnableProfiling)},
		{"SERVING_ENABLE_PROBE_REQUEST_LOG", b(e.EnableProbeRequestLog)},
		{"METRICS_COLLECTOR_ADDRESS", e.MetricsCollectorAddress},
		{"HOST_IP", e.HostIP},
		{"ENABLE_HTTP2_AUTO_DETECTION", b(e.EnableHTTP2AutoDetection)},
		{"ENABLE_HTTP_FULL_DUPLEX", b(e.EnableHTTPFullDuplex)},
		{"ROOT_CA", e.RootCA},
		{"ENABLE_MULTI_CONTAINER_PROBES", b(e.EnableMultiContainerProbes)},
	}
	out := make([]string, len(kv))
	for j, p := range kv {
		out[j] = p[0] + "=" + p[1]
	}
	return out
}

// Addr is the serving address inside the pod's namespace.
func (e QueueProxyEnv) Addr() string { return fmt.Sprintf("127.0.0.1:%d", e.ServingPort) }

// UserAddr is where the queue-proxy sends requests: Knative hard-codes
// 127.0.0.1:USER_PORT.
func (e QueueProxyEnv) UserAddr() string { return fmt.Sprintf("127.0.0.1:%d", e.UserPort) }

// probe is the part of corev1.Probe that readiness probes use, with the
// same JSON names, so the queue-proxy decodes it as it would the
// reconciler's (readiness.EncodeSingleProbe is json.Marshal of a
// corev1.Probe).
type probe struct {
	TCPSocket        *tcpSocketAction `json:"tcpSocket,omitempty"`
	HTTPGet          *httpGetAction   `json:"httpGet,omitempty"`
	SuccessThreshold int              `json:"successThreshold,omitempty"`
}

type tcpSocketAction struct {
	Port int    `json:"port"`
	Host string `json:"host,omitempty"`
}

type httpGetAction struct {
	Path   string `json:"path,omitempty"`
	Port   int    `json:"port"`
	Host   string `json:"host,omitempty"`
	Scheme string `json:"scheme,omitempty"`
}

func encodeProbe(p probe) string {
	b, err := json.Marshal(p)
	if err != nil {
		panic(err) // plain structs of strings and ints
	}
	return string(b)
}

// TCPSocketProbe is SERVING_READINESS_PROBE for a container without a
// readiness probe of its own: the webhook defaults it to a TCP probe
// (successThreshold 1) and the reconciler points it at 127.0.0.1:port.
func TCPSocketProbe(port int) string {
	return encodeProbe(probe{TCPSocket: &tcpSocketAction{Port: port, Host: "127.0.0.1"}, SuccessThreshold: 1})
}

// HTTPGetProbe is SERVING_READINESS_PROBE for a container declaring
// readinessProbe.httpGet.path, as the reconciler encodes it.
func HTTPGetProbe(port int, path string) string {
	return encodeProbe(probe{HTTPGet: &httpGetAction{Path: path, Port: port, Host: "127.0.0.1", Scheme: "HTTP"}, SuccessThreshold: 1})
}
