#!/bin/sh
# Rebuilds the test modules from their WebAssembly text.
# Needs wat2wasm (Debian/Ubuntu: apt-get install wabt). Run from pkg/adapter/wasm
# (go generate does) or from testdata.
set -e
cd "$(dirname "$0")"
for f in *.wat; do
	wat2wasm "$f" -o "${f%.wat}.wasm"
done
