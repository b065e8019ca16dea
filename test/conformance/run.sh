#!/usr/bin/env bash
# Knative's KIngress conformance suite (knative.dev/networking
# test/conformance/ingress, the version the root go.mod pins) against the
# SPRIGHT ingress on a running cluster (hack/cluster-up.sh): `make
# conformance-ingress`. About 3 minutes when every test passes (a test
# whose KIngress never gets Ready waits the suite's 10 minutes).
#
#  1. builds the suite's test images (runtime, wsserver, grpc-ping,
#     httpproxy, timeout, retry) with ko from this module into the cluster's
#     registry, tagged with the networking version (the pods pull
#     IfNotPresent: a tag per version, never a stale :latest);
#  2. runs the suite (stable, beta and alpha tests) with the flags of
#     knative.dev/networking/test and knative.dev/pkg/test: ingress class
#     spright.ingress.networking.knative.dev, --ingressendpoint the node (the
#     suite dials the node port of spright-gateway's port 80/443);
#  3. writes the pass/fail/skip list to RESULTS.md (results/main.go), keeping
#     its hand-written explanations of the failures.
#
# Environment (defaults for hack/cluster-up.sh's cluster):
#   KUBECONFIG        /var/lib/spright-cluster/admin.kubeconfig
#   INGRESS_ENDPOINT  the node's address (10.222.0.1)
#   REGISTRY          localhost:5000 (the images' repo is $REGISTRY/spright/conformance)
#   KO_DEFAULTBASEIMAGE $REGISTRY/spright/base:static (hack/ko-resolve.sh pushes it)
#   RUN               a -run pattern (default: the whole suite)
#   SKIP              --skip-tests, comma separated suite names (e.g. "tls,httpoption")
#   PARALLEL          go test -parallel (default 4: the node has 2 cores)
#   KEEP_LOG          where the raw `go test -json` output goes
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"
export GOWORK=off GOFLAGS=-mod=readonly

export KUBECONFIG="${KUBECONFIG:-/var/lib/spright-cluster/admin.kubeconfig}"
INGRESS_ENDPOINT="${INGRESS_ENDPOINT:-10.222.0.1}"
REGISTRY="${REGISTRY:-localhost:5000}"
export KO_DEFAULTBASEIMAGE="${KO_DEFAULTBASEIMAGE:-$REGISTRY/spright/base:static}"
PARALLEL="${PARALLEL:-4}"
RUN="${RUN:-^TestIngressConformance\$}"
SKIP="${SKIP:-}"
KEEP_LOG="${KEEP_LOG:-$root/bin/conformance/test.json}"
CLASS=spright.ingress.networking.knative.dev

die() { echo "conformance-ingress: $*" >&2; exit 1; }
# ko and kubectl: from PATH, else where hack/ko-resolve.sh and
# hack/build-kube-apiserver.sh (which the cluster's bring-up ran) keep them.
command -v ko >/dev/null || PATH="$("$root/hack/ko-resolve.sh" --print-dir):$PATH"
command -v kubectl >/dev/null || PATH="$("$root/hack/build-kube-apiserver.sh" --print-dir):$PATH"
command -v go >/dev/null || PATH="/usr/local/go/bin:$PATH"
command -v ko >/dev/null || die "no ko (hack/ko-resolve.sh --install-only installs it)"
command -v kubectl >/dev/null || die "no kubectl (hack/build-kube-apiserver.sh builds it)"
kubectl get --raw /readyz >/dev/null || die "no cluster at $KUBECONFIG (make cluster-up)"
[ "$(kubectl -n knative-serving get cm config-network -o jsonpath='{.data.ingress-class}')" = "$CLASS" ] \
	|| echo "conformance-ingress: note: config-network's ingress-class is not $CLASS (the suite sets the class on its own KIngresses, so it runs anyway)" >&2

version="$(go list -m -f '{{.Version}}' knative.dev/networking)"
tag="${version##*-}" # the commit of the pseudo-version: a valid tag per version
repo="$REGISTRY/spright/conformance"

echo "conformance-ingress: building the test images of knative.dev/networking@$version as $repo/*:$tag" >&2
mkdir -p "$(dirname "$KEEP_LOG")"
KO_DOCKER_REPO="$repo" ko build --sbom=none -B --platform=linux/amd64 --tags="$tag" \
	knative.dev/networking/test/test_images/runtime \
	knative.dev/networking/test/test_images/wsserver \
	knative.dev/networking/test/test_images/grpc-ping \
	knative.dev/networking/test/test_images/httpproxy \
	knative.dev/networking/test/test_images/timeout \
	knative.dev/networking/test/test_images/retry \
	>"$(dirname "$KEEP_LOG")/images.txt" 2>"$(dirname "$KEEP_LOG")/ko.log" \
	|| { tail -n 20 "$(dirname "$KEEP_LOG")/ko.log" >&2; die "ko build of the test images failed"; }

# The suite's namespace (knative.dev/networking/test.ServingNamespace).
kubectl get namespace serving-tests >/dev/null 2>&1 || kubectl create namespace serving-tests >/dev/null

echo "conformance-ingress: running the suite (class $CLASS, endpoint $INGRESS_ENDPOINT), raw output in $KEEP_LOG" >&2
set +e
go test -tags=e2e -count=1 -json -timeout=60m -parallel="$PARALLEL" -run "$RUN" . -args \
	--kubeconfig="$KUBECONFIG" \
	--ingressClass="$CLASS" \
	--ingressendpoint="$INGRESS_ENDPOINT" \
	--dockerrepo="$repo" --tag="$tag" \
	--enable-beta --enable-alpha \
	--cluster-suffix=cluster.local --service-domain=example.com \
	--skip-tests="$SKIP" >"$KEEP_LOG"
rc=$?
set -e
go run ./results -in "$KEEP_LOG" -out "$here/RESULTS.md" -version "$version" || die "writing RESULTS.md failed"
echo "conformance-ingress: go test exited $rc; RESULTS.md updated" >&2
exit "$rc"
