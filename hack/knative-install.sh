#!/usr/bin/env bash
# Installs Knative Serving 1.15 (knative.dev/serving v0.42.2) into the
# one-node cluster of hack/cluster-up.sh the way Knative's docs do — CRDs,
# then core — with every image built by ko from the module itself
# (hack/tools/knative-serving pins the versions serving was released with)
# and pushed to the cluster's loopback registry.
#
# Knative's release YAML is assembled from three modules; so is this:
#   serving-crds: networking config/{certificate,domain-claim,ingress,serverlessservice}.yaml,
#                 caching config/image.yaml, serving config/core/300-resources/
#   serving-core: serving config/core/ (recursively) + networking config/config-network.yaml
# Then the installation's settings for this machine (below, each explained).
#
# Called by hack/cluster-up.sh; runs again safely (apply is idempotent).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/cluster-lib.sh
source "$root/hack/cluster-lib.sh"
export PATH="/usr/local/go/bin:$PATH"

KUBE_BIN="$("$root/hack/build-kube-apiserver.sh" --print-dir)"
KO_DIR="$("$root/hack/ko-resolve.sh" --print-dir)"
kubectl() { "$KUBE_BIN/kubectl" --kubeconfig "$CLUSTER_KUBECONFIG" "$@"; }
export KO_DEFAULTBASEIMAGE="$CLUSTER_REGISTRY/spright/base:static"
"$KO_DIR/kolocal" push-base -platform linux/amd64 -ref "$KO_DEFAULTBASEIMAGE" >/dev/null

mod="$root/hack/tools/knative-serving"
moddir() { (cd "$mod" && GOWORK=off go mod download "$1" && GOWORK=off go list -m -f '{{.Dir}}' "$1"); }
serving="$(moddir knative.dev/serving)"
networking="$(moddir knative.dev/networking)"
caching="$(moddir knative.dev/caching)"
version="$(cd "$mod" && GOWORK=off go list -m -f '{{.Version}}' knative.dev/serving)"

cluster_log "installing Knative Serving $version: CRDs"
kubectl apply -f "$networking/config/certificate.yaml" -f "$networking/config/domain-claim.yaml" \
	-f "$networking/config/ingress.yaml" -f "$networking/config/serverlessservice.yaml" \
	-f "$caching/config/image.yaml" -f "$serving/config/core/300-resources/" >/dev/null
kubectl wait --for=condition=Established --timeout=60s crd -l knative.dev/crd-install=true >/dev/null

cluster_log "installing Knative Serving $version: core (ko builds controller, webhook, activator, autoscaler, queue)"
out="$CLUSTER_STATE/knative-serving-core.yaml"
(cd "$mod" && GOWORK=off GOFLAGS=-mod=readonly KO_DOCKER_REPO="$CLUSTER_REGISTRY/knative" \
	"$KO_DIR/ko" resolve --sbom=none -B --platform linux/amd64 -R \
	-f "$serving/config/core/" -f "$networking/config/config-network.yaml" 2>>"$CLUSTER_STATE/logs/ko.log") >"$out.tmp" \
	|| { tail -n 20 "$CLUSTER_STATE/logs/ko.log" >&2; cluster_die "ko resolve of Knative Serving failed"; }
mv -f "$out.tmp" "$out"
kubectl apply -f "$out" >/dev/null
for d in controller webhook activator autoscaler; do
	kubectl -n knative-serving rollout status "deployment/$d" --timeout=300s >&2
done

# Settings for this machine, through the validating webhook like any edit:
# - the ingress is SPRIGHT's (none of Knative's Envoy-based ones can run
#   here; docs/knative.md "SPRIGHT as the ingress");
# - a domain, as Knative's "Configure DNS" step asks (example.com: no DNS,
#   clients send the Host header);
# - images in the loopback registry are not resolved to digests by the
#   controller: it would ask localhost:5000 from inside its own pod.
cluster_log "configuring Knative for this machine"
wait_for_patch() {
	local i
	for i in $(seq 1 60); do
		kubectl "$@" >/dev/null 2>&1 && return 0
		sleep 1
	done
	kubectl "$@" # the real error
}
wait_for_patch -n knative-serving patch configmap/config-network --type merge \
	-p '{"data":{"ingress-class":"spright.ingress.networking.knative.dev"}}'
wait_for_patch -n knative-serving patch configmap/config-domain --type merge \
	-p '{"data":{"example.com":""}}'
wait_for_patch -n knative-serving patch configmap/config-deployment --type merge \
	-p "{\"data\":{\"registries-skipping-tag-resolving\":\"kind.local,ko.local,dev.local,$CLUSTER_REGISTRY\"}}"
cluster_log "Knative Serving $version installed"
