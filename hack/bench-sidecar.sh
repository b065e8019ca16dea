#!/usr/bin/env bash
# The sidecar benchmark: one HTTP function behind the real queue-proxy and
# behind EPROXY. EPROXY needs its node agent (cmd/gateway) to splice and
# count in the kernel, so one runs for the duration, on its own control
# socket and pin directory, removed afterwards. Extra args go to the harness.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-bin}
go build -o "$BIN/eproxy" ./cmd/eproxy
go build -o "$BIN/gateway" ./cmd/gateway
sock=/run/spright/bench-$$.sock
pins=/sys/fs/bpf/spright-bench-$$
"$BIN/gateway" --control "$sock" --pin-dir "$pins" --listen 127.0.0.1:0 --admin-listen "" 2>/tmp/spright-bench-gateway-$$.log &
agent=$!
cleanup() { kill "$agent" 2>/dev/null || true; wait "$agent" 2>/dev/null || true; rm -rf "$pins" "$sock"; }
trap cleanup EXIT
for _ in $(seq 100); do [ -S "$sock" ] && break; sleep 0.1; done
[ -S "$sock" ] || { echo "node agent did not start; see /tmp/spright-bench-gateway-$$.log" >&2; exit 1; }
go run ./test/bench/sidecar --eproxy "$BIN/eproxy" --eproxy-env "SPRIGHT_CONTROL_SOCKET=$sock" "$@"
