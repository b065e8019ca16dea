package podsocket

import (
	"fmt"
	"os"
	"strconv"

	"knative.dev/pkg/injection"
	"knative.dev/pkg/webhook"
	"knative.dev/pkg/webhook/certificates"
)

// Environment of cmd/webhook (config/600-webhook.yaml).
const (
	// EnvServiceName is the webhook's Service: the certificate is issued for
	// <name>.<system namespace>.svc. knative.dev/pkg's WEBHOOK_NAME.
	EnvServiceName = "WEBHOOK_NAME"
	// EnvControlGID, when set, is the group added to revision pods'
	// supplementalGroups (Config.ControlGroup): the gateway's control socket
	// group.
	EnvControlGID = "SPRIGHT_CONTROL_GID"

	DefaultServiceName = "spright-webhook"
	DefaultSecretName  = "spright-webhook-certs"
	DefaultPort        = 8443
)

// WebhookOptionsFromEnv are the knative.dev/pkg webhook options of
// cmd/webhook: Service WEBHOOK_NAME (default spright-webhook), certificate
// Secret WEBHOOK_SECRET_NAME (default spright-webhook-certs), port
// WEBHOOK_PORT (default 8443).
func WebhookOptionsFromEnv() webhook.Options {
	name := os.Getenv(EnvServiceName)
	if name == "" {
		name = DefaultServiceName
	}
	return webhook.Options{
		ServiceName: name,
		SecretName:  webhook.SecretNameFromEnv(DefaultSecretName),
		Port:        webhook.PortFromEnv(DefaultPort),
	}
}

// OptionsFromEnv are the Options of cmd/webhook: the MutatingWebhookConfiguration
// WebhookName on Path, and SPRIGHT_CONTROL_GID.
func OptionsFromEnv() (Options, error) {
	o := Options{WebhookName: WebhookName, Path: Path}
	if s := os.Getenv(EnvControlGID); s != "" {
		gid, err := strconv.ParseInt(s, 10, 64)
		if err != nil || gid < 0 {
			return o, fmt.Errorf("%s=%q: want a group id >= 0", EnvControlGID, s)
		}
		o.Config.ControlGroup = &gid
	}
	return o, nil
}

// Controllers are what cmd/webhook runs under sharedmain (with
// webhook.Options in the context): the certificates controller of
// knative.dev/pkg, which keeps a self-signed serving certificate for the
// Service in the Secret, and the pod-socket admission controller.
func Controllers(opts Options) []injection.ControllerConstructor {
	return []injection.ControllerConstructor{
		certificates.NewController,
		NewController(opts),
	}
}
