#!/usr/bin/env bash
# `ko resolve` without the internet: builds ko and kolocal (a loopback OCI
# registry plus a static base image made from nothing; hack/tools/ko/kolocal)
# from the Go modules pinned in hack/tools/ko/go.mod into a cache directory,
# starts the registry on a free port, pushes the base image, resolves every
# ko:// image in the manifests to localhost:PORT/spright/<binary>@sha256:...,
# and stops the registry. Only the Go module proxy is needed, once.
#
#   hack/ko-resolve.sh                       # -f config/ -> bin/ko/resolved.yaml
#   hack/ko-resolve.sh -f DIR|FILE ... [-o OUT] [-- EXTRA KO RESOLVE FLAGS]
#   hack/ko-resolve.sh --install-only        # build the tools (no-op when built)
#   hack/ko-resolve.sh --force               # rebuild the tools, then resolve
#   hack/ko-resolve.sh --print-dir           # print the tools directory only
#
#   SPRIGHT_KO_REGISTRY=localhost:5000 hack/ko-resolve.sh ...
#       use a registry that is already running (the images stay there); the
#       base image is pushed to it as $SPRIGHT_KO_REGISTRY/spright/base:static
#
# Tools directory (test/ko looks in the same place):
#   $SPRIGHT_KO_DIR if set, else ${XDG_CACHE_HOME:-$HOME/.cache}/spright/tools/ko-<ko version>
#
# The images' binaries are built like `ko apply -f config/` builds them for a
# cluster (.ko.yaml: CGO_ENABLED=0, -trimpath), for linux/amd64 only
# (SPRIGHT_KO_PLATFORM to change it). The base image in .ko.yaml is for real
# clusters; here KO_DEFAULTBASEIMAGE points ko at the local one instead.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
mod="$root/hack/tools/ko"

version="$(awk '$1 == "github.com/google/ko" {print $2}' "$mod/go.mod" | head -n1)"
if [[ -z "$version" ]]; then
	echo "cannot find 'github.com/google/ko vX.Y.Z' in $mod/go.mod" >&2
	exit 1
fi
dir="${SPRIGHT_KO_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/spright/tools/ko-$version}"
platform="${SPRIGHT_KO_PLATFORM:-linux/amd64}"

usage() {
	echo "usage: $0 [--force] [-f DIR|FILE]... [-o OUT] [-- KO RESOLVE FLAGS]" >&2
	echo "       $0 --install-only | --print-dir" >&2
	exit 2
}

force=0
install_only=0
files=()
out="$root/bin/ko/resolved.yaml"
extra=()
while (($#)); do
	case "$1" in
	--print-dir) echo "$dir"; exit 0 ;;
	--install-only) install_only=1 ;;
	--force) force=1 ;;
	-f|--filename) [[ $# -ge 2 ]] || usage; f="$2"; [[ "$f" == /* ]] || f="$PWD/$f"; files+=("$f"); shift ;;
	-o|--output) [[ $# -ge 2 ]] || usage; out="$2"; shift ;;
	--) shift; extra=("$@"); break ;;
	-h|--help) usage ;;
	*) echo "unknown argument: $1" >&2; usage ;;
	esac
	shift
done
((${#files[@]})) || files=("$root/config/")

# --- tools -------------------------------------------------------------------
# The stamp names ko's version and a hash of the tools module (go.mod, go.sum,
# kolocal's source), so editing any of them rebuilds.
stamp="$version $(cat "$mod/go.mod" "$mod/go.sum" "$mod"/kolocal/*.go | sha256sum | cut -c1-16)"
if [[ $force -eq 0 && -x "$dir/ko" && -x "$dir/kolocal" && -f "$dir/.built" && "$(cat "$dir/.built")" == "$stamp" ]]; then
	[[ $install_only -eq 1 ]] && echo "ko $version and kolocal already built in $dir"
else
	mkdir -p "$dir"
	tmp="$(mktemp -d "$dir/.build.XXXXXX")"
	trap 'rm -rf "$tmp"' EXIT
	echo "building ko $version and kolocal into $dir (1.5-3 min on a cold cache)" >&2
	start=$(date +%s)
	(
		cd "$mod"
		GOWORK=off GOFLAGS="-mod=readonly -buildvcs=false" CGO_ENABLED=0 \
			go build -p "${SPRIGHT_BUILD_P:-$(nproc)}" -trimpath \
			-ldflags "-s -w -X github.com/google/ko/pkg/commands.Version=$version" \
			-o "$tmp/" github.com/google/ko ./kolocal
	)
	mv -f "$tmp/ko" "$dir/ko"
	mv -f "$tmp/kolocal" "$dir/kolocal"
	echo "$stamp" >"$dir/.built"
	rm -rf "$tmp"
	trap - EXIT
	echo "built in $(($(date +%s) - start))s: ko $("$dir/ko" version)" >&2
fi
[[ $install_only -eq 1 ]] && exit 0

# --- registry ----------------------------------------------------------------
work="$(mktemp -d "${TMPDIR:-/tmp}/spright-ko.XXXXXX")"
regpid=""
cleanup() {
	if [[ -n "$regpid" ]]; then
		kill "$regpid" 2>/dev/null || true
		wait "$regpid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

if [[ -n "${SPRIGHT_KO_REGISTRY:-}" ]]; then
	registry="$SPRIGHT_KO_REGISTRY"
	"$dir/kolocal" push-base -platform "$platform" -ref "$registry/spright/base:static" >/dev/null
else
	"$dir/kolocal" serve -platform "$platform" -addr-file "$work/addr" \
		-base-tag spright/base:static >/dev/null 2>"$work/registry.log" &
	regpid=$!
	for _ in $(seq 1 200); do
		[[ -s "$work/addr" ]] && break
		if ! kill -0 "$regpid" 2>/dev/null; then
			cat "$work/registry.log" >&2
			echo "kolocal serve exited before the registry was ready" >&2
			exit 1
		fi
		sleep 0.05
	done
	if [[ ! -s "$work/addr" ]]; then
		cat "$work/registry.log" >&2
		echo "kolocal serve: registry not ready after 10s" >&2
		exit 1
	fi
	registry="$(cat "$work/addr")"
fi

# --- resolve -----------------------------------------------------------------
fargs=()
for f in "${files[@]}"; do fargs+=(-f "$f"); done
mkdir -p "$(dirname "$out")"
echo "ko resolve ${files[*]#"$root/"} -> $registry/spright (base $registry/spright/base:static, $platform)" >&2
# -B: localhost:PORT/spright/<binary>, not <binary>-<md5 of the import path>.
# No SBOM: nothing reads it, and it is one more layer to push per image.
(
	cd "$root"
	KO_DOCKER_REPO="$registry/spright" \
	KO_DEFAULTBASEIMAGE="$registry/spright/base:static" \
		"$dir/ko" resolve --platform="$platform" --sbom=none -B "${fargs[@]}" "${extra[@]}"
) >"$work/resolved.yaml"
mv -f "$work/resolved.yaml" "$out"
echo "resolved manifests: $out"
