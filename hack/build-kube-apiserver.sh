#!/usr/bin/env bash
# Builds kube-apiserver and kubectl from the k8s.io/kubernetes Go module pinned in
# hack/tools/kube-apiserver/go.mod, into a per-version cache directory, and makes
# sure etcd is there (Debian's etcd-server, installed with apt-get when missing).
# test/envtest uses all three; its tests skip until this script has run.
#
#   hack/build-kube-apiserver.sh              # build (no-op when already built)
#   hack/build-kube-apiserver.sh --force      # rebuild
#   hack/build-kube-apiserver.sh --print-dir  # print the binary directory only
#   hack/build-kube-apiserver.sh --cluster    # also kubelet, kube-controller-manager,
#       # kube-scheduler and kube-proxy, for the one-node cluster (hack/cluster-up.sh)
#   SPRIGHT_ETCD=build hack/build-kube-apiserver.sh
#       # also build etcd from go.etcd.io/etcd/server/v3 (the version
#       # k8s.io/kubernetes requires) into the same directory, where envtest
#       # prefers it to the etcd on $PATH; for machines without Debian's package
#
# Where the binaries go (test/envtest looks in the same place):
#   $SPRIGHT_ENVTEST_DIR if set, else ${XDG_CACHE_HOME:-$HOME/.cache}/spright/envtest/<k8s version>
#
# Measured on the 2-core/24 GB machine (see test/envtest/README.md): modules
# ~0.6 GB in ~10 s; cold compile 400-540 CPU-seconds (4-12 min wall depending on
# other load), 1.9 GB peak RSS, +2.4 GB of GOCACHE; with a warm GOCACHE ~7 s.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mod="$root/hack/tools/kube-apiserver"

version="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" {print $3}' "$mod/go.mod")"
if [[ -z "$version" ]]; then
	echo "cannot find 'require k8s.io/kubernetes vX.Y.Z' in $mod/go.mod" >&2
	exit 1
fi

dir="${SPRIGHT_ENVTEST_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/spright/envtest/$version}"

force=0
cluster=0
for arg in "$@"; do
	case "$arg" in
	--print-dir) echo "$dir"; exit 0 ;;
	--force) force=1 ;;
	--cluster) cluster=1 ;;
	*) echo "usage: $0 [--force] [--cluster] | --print-dir" >&2; exit 2 ;;
	esac
done

# etcd: Debian's etcd-server (3.4.23 on Debian 12; it serves the etcd3 API that
# kube-apiserver needs, and the apiserver turns off what needs a newer etcd).
if [[ "${SPRIGHT_ETCD:-}" != build ]] && ! command -v etcd >/dev/null 2>&1; then
	if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
		echo "installing etcd-server from Debian"
		apt-get update -qq
		DEBIAN_FRONTEND=noninteractive apt-get install -y -qq etcd-server >/dev/null
	else
		echo "etcd not found: install it (Debian: apt-get install etcd-server)" >&2
		exit 1
	fi
fi
# Debian's package may start a system etcd on 127.0.0.1:2379 where an init system
# exists; envtest picks free ports, so that does not matter.

pkgs=(k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl)
bins=(kube-apiserver kubectl)
if [[ $cluster -eq 1 ]]; then
	for b in kubelet kube-controller-manager kube-scheduler kube-proxy; do
		pkgs+=("k8s.io/kubernetes/cmd/$b")
		bins+=("$b")
	done
fi
if [[ "${SPRIGHT_ETCD:-}" == build ]]; then
	pkgs+=(go.etcd.io/etcd/server/v3)
	bins+=(etcd)
fi

built=1
for b in "${bins[@]}"; do [[ -x "$dir/$b" ]] || built=0; done
if [[ $force -eq 0 && $built -eq 1 && -f "$dir/.built" && "$(cat "$dir/.built")" == "$version" ]]; then
	echo "${bins[*]} $version already built in $dir"
	exit 0
fi

mkdir -p "$dir"
tmp="$(mktemp -d "$dir/.build.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

minor="${version#v1.}"; minor="${minor%%.*}"
pkg=k8s.io/component-base/version
ldflags="-s -w -X $pkg.gitVersion=$version -X $pkg.gitMajor=1 -X $pkg.gitMinor=$minor"
ldflags+=" -X $pkg.gitTreeState=clean -X $pkg.buildDate=1970-01-01T00:00:00Z"

echo "building ${bins[*]} ($version) into $dir (takes minutes on a cold cache)"
start=$(date +%s)
(
	cd "$mod"
	GOWORK=off GOFLAGS=-mod=readonly CGO_ENABLED=0 \
		go build -p "${SPRIGHT_BUILD_P:-$(nproc)}" -trimpath -ldflags "$ldflags" -o "$tmp/" "${pkgs[@]}"
)
# go build names the etcd binary "server" (go.etcd.io/etcd/server/v3).
[[ -f "$tmp/server" ]] && mv -f "$tmp/server" "$tmp/etcd"
for b in "${bins[@]}"; do mv -f "$tmp/$b" "$dir/$b"; done
echo "$version" >"$dir/.built"
echo "built in $(( $(date +%s) - start ))s: $("$dir/kube-apiserver" --version)"
