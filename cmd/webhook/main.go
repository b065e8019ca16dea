// Command webhook is SPRIGHT's mutating admission webhook on Pods
// (pkg/webhook/podsocket): it mounts the node's /run/spright, where the
// gateway DaemonSet serves the control socket, read-only into the
// queue-proxy container (EPROXY) of every Knative revision pod, since
// Knative builds that container without user volumes.
//
// It runs as a knative.dev/pkg sharedmain webhook in the system namespace
// (SYSTEM_NAMESPACE, spright-system in config/600-webhook.yaml): a
// self-signed certificate kept in a Secret, its CA injected into the
// MutatingWebhookConfiguration podsocket.webhook.spright.dev, leader
// election, and logging/observability from the usual config-* ConfigMaps.
package main

import (
	"log"

	"knative.dev/pkg/injection"
	"knative.dev/pkg/injection/sharedmain"
	"knative.dev/pkg/signals"
	"knative.dev/pkg/webhook"

	"github.com/spright-dev/spright/pkg/webhook/podsocket"
)

func main() {
	opts, err := podsocket.OptionsFromEnv()
	if err != nil {
		log.Fatal(err)
	}
	ctx := webhook.WithOptions(signals.NewContext(), podsocket.WebhookOptionsFromEnv())
	sharedmain.WebhookMainWithConfig(ctx, "spright-webhook", injection.ParseAndGetRESTConfigOrDie(),
		podsocket.Controllers(opts)...)
}
