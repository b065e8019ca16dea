#!/bin/sh
# run-chain.sh SPRIGHT CHAIN LISTEN [ADMIN]: `make run`. Runs `spright run`
# on the chain; if chain.yaml has a line "# spright-attach: T=NAME ..."
# (protocol adapters `spright run` cannot attach from `protocol:` yet, such
# as the web adapter of config/samples/boutique), attaches each adapter
# NAME at front end T through the admin endpoint once the chain is up.
set -eu
spright=$1 chain=$2 listen=$3 admin=${4:-127.0.0.1:9091}
attach=$(sed -n 's/^# *spright-attach: *//p' "$chain" | head -n 1)
if [ -z "$attach" ]; then
	exec "$spright" run -f "$chain" --listen "$listen" --admin-listen "$admin"
fi
"$spright" run -f "$chain" --listen "$listen" --admin-listen "$admin" &
pid=$!
trap 'kill -INT $pid 2>/dev/null || true' INT TERM
i=0
until curl -fsS "http://$admin/adapters" >/dev/null 2>&1; do
	if ! kill -0 $pid 2>/dev/null; then wait $pid; exit $?; fi
	i=$((i + 1))
	if [ $i -gt 300 ]; then echo "run-chain: admin endpoint $admin did not come up" >&2; kill -INT $pid; wait $pid; exit 1; fi
	sleep 0.1
done
for a in $attach; do
	t=${a%%=*} name=${a#*=}
	if curl -fsS -X PUT "http://$admin/adapters/$t?name=$name" >/dev/null; then
		echo "run-chain: attached the $name adapter to $t; open http://$listen/" >&2
	else
		echo "run-chain: could not attach $name to $t" >&2
	fi
done
# Ctrl-C reaches the trap (spright itself was started in the background):
# wait until spright has stopped, and exit with its status.
set +e
while :; do
	wait $pid
	rc=$?
	kill -0 $pid 2>/dev/null || exit $rc
done
