package eproxy

import (
	"fmt"

	"github.com/kelseyhightower/envconfig"
)

// Config is the queue-proxy environment contract that Knative's revision
// reconciler fills for the queue sidecar, plus SPRIGHT's own settings.
// Names and required-ness follow knative.dev/serving's queue sharedmain.
type Config struct {
	ContainerConcurrency   int    `split_words:"true" required:"true"`
	QueueServingPort       string `split_words:"true" required:"true"`
	QueueServingTLSPort    string `split_words:"true"`
	UserPort               string `split_words:"true" required:"true"`
	RevisionTimeoutSeconds int    `split_words:"true" required:"true"`
	ServingReadinessProbe  string `split_words:"true"`
	ServingNamespace       string `split_words:"true" required:"true"`
	ServingConfiguration   string `split_words:"true"`
	ServingRevision        string `split_words:"true" required:"true"`
	ServingPod             string `split_words:"true" required:"true"`
	ServingPodIP           string `split_words:"true"`
	ServingLoggingLevel    string `split_words:"true"`
	// Probe encoding flags Knative sets with its features.
	EnableMultiContainerProbes bool `split_words:"true"`
	EnableHTTP2AutoDetection   bool `envconfig:"ENABLE_HTTP2_AUTO_DETECTION"`

	// SPRIGHT: where the node agent (gateway) listens, and EPROXY's own ports.
	ControlSocket string `envconfig:"SPRIGHT_CONTROL_SOCKET" default:"/run/spright/control.sock"`
	MetricsPort   string `envconfig:"SPRIGHT_METRICS_PORT" default:"9090"`
	PromPort      string `envconfig:"SPRIGHT_PROMETHEUS_PORT" default:"9091"`
	AdminPort     string `envconfig:"SPRIGHT_ADMIN_PORT" default:"8022"`
	// BindAddress for every listener ("" = all addresses, as queue-proxy).
	BindAddress string `envconfig:"SPRIGHT_BIND_ADDRESS"`
	// DrainTimeoutSeconds bounds the wait for in-flight requests on SIGTERM.
	DrainTimeoutSeconds int `envconfig:"SPRIGHT_DRAIN_TIMEOUT_SECONDS" default:"30"`
	// DrainQuietSeconds: after SIGTERM, probes fail and EPROXY waits this
	// long after the last probe-path request (queue-proxy: 30s) so that
	// load balancers notice before the listener closes.
	DrainQuietSeconds int `envconfig:"SPRIGHT_DRAIN_QUIET_SECONDS" default:"30"`
	// Shim: in a chain member's pod, join the chain for the user container
	// with the HTTP shim. The pod webhook sets SPRIGHT_SHIM=false when the
	// user container is a Go SDK function that joins the chain itself
	// (spright.dev/sdk: "true").
	Shim bool `envconfig:"SPRIGHT_SHIM" default:"true"`
	// Steer: plain revisions (containerConcurrency 0) have the kernel
	// steer new connections of learned traffic sources straight to the
	// user container (package bpf, "Steer") instead of splicing them
	// through EPROXY. false: every connection is spliced.
	Steer bool `envconfig:"SPRIGHT_STEER" default:"true"`
	// ProxyBufferBytes bounds the kernel buffers of connections EPROXY
	// proxies in userspace (Server.ConnBuffer): what a slow client can
	// make the pod hold. Steered connections are the user container's own
	// and have its socket's buffers, as without a sidecar.
	ProxyBufferBytes int `envconfig:"SPRIGHT_PROXY_BUFFER_BYTES" default:"1048576"`
}

// ConfigFromEnv reads the environment; a missing required variable is an
// error naming it.
func ConfigFromEnv() (Config, error) {
	var c Config
	if err := envconfig.Process("", &c); err != nil {
		return c, fmt.Errorf("eproxy: environment: %w", err)
	}
	return c, nil
}
