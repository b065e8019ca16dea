#!/usr/bin/env bash
# Takes down the one-node cluster of hack/cluster-up.sh and puts the host back
# as it was: no process, mount, network namespace, veth, bridge, nftables or
# iptables rule, pinned eBPF map or sysctl change of the cluster's is left.
# Kept (so the next cluster-up is fast): the certificates, the logs, the
# image store and the registry's blobs (hack/cluster-lib.sh says where).
#
#   hack/cluster-down.sh              # also removes the logs
#   hack/cluster-down.sh --keep-logs
#   hack/cluster-down.sh --purge      # also the certificates and image caches
#
# Safe to run when nothing is up, or after a half-finished cluster-up.
set -uo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/cluster-lib.sh
source "$root/hack/cluster-lib.sh"

keep_logs=0 purge=0
for arg in "$@"; do
	case "$arg" in
	--keep-logs) keep_logs=1 ;;
	--purge) purge=1 ;;
	*) echo "usage: $0 [--keep-logs|--purge]" >&2; exit 2 ;;
	esac
done
[[ $(id -u) -eq 0 ]] || cluster_die "needs root"

# stop PID...: SIGTERM, up to 10 s, then SIGKILL.
stop_pids() {
	local pids=("$@") p i
	((${#pids[@]})) || return 0
	kill -TERM "${pids[@]}" 2>/dev/null
	for i in $(seq 1 100); do
		local left=0
		for p in "${pids[@]}"; do kill -0 "$p" 2>/dev/null && left=1; done
		[[ $left -eq 0 ]] && return 0
		sleep 0.1
	done
	kill -KILL "${pids[@]}" 2>/dev/null
	sleep 0.2
}

# 1. kubelet first, so it does not restart what is killed next.
if pid="$(cluster_pid kubelet)"; then
	cluster_log "stopping kubelet"
	stop_pids "$pid"
fi

# 2. Every container's process: whatever lives in the kubepods cgroups, and
#    the runc shims of our containerd (they hold the pods' namespaces).
pods=()
for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/unified/kubepods; do
	[[ -d "$d" ]] || continue
	while IFS= read -r p; do pods+=("$p"); done < <(find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | sort -u)
done
while IFS= read -r p; do pods+=("$p"); done < <(pgrep -f "containerd-shim-runc-v2 .*-address $CLUSTER_CONTAINERD_SOCK" || true)
if ((${#pods[@]})); then
	cluster_log "killing ${#pods[@]} container processes"
	kill -KILL "${pods[@]}" 2>/dev/null
	sleep 0.5
fi

# While containerd still runs: forget the pods' tasks and containers, so its
# image store (kept in the cache) holds images only and the next cluster
# starts with no stale sandboxes.
if [[ -S "$CLUSTER_CONTAINERD_SOCK" ]] && cluster_pid containerd >/dev/null; then
	ctr_() { timeout 20 ctr --address "$CLUSTER_CONTAINERD_SOCK" -n k8s.io "$@"; }
	for id in $(ctr_ tasks ls -q 2>/dev/null); do ctr_ tasks delete -f "$id" >/dev/null 2>&1; done
	for id in $(ctr_ containers ls -q 2>/dev/null); do ctr_ containers rm "$id" >/dev/null 2>&1; done
fi

# 3. The host processes, in reverse start order.
for ((i = ${#CLUSTER_COMPONENTS[@]} - 1; i >= 0; i--)); do
	c="${CLUSTER_COMPONENTS[i]}"
	if pid="$(cluster_pid "$c")"; then
		cluster_log "stopping $c"
		stop_pids "$pid"
	fi
done
# Shims that outlived containerd (they reparent to init).
left="$(pgrep -f "containerd-shim-runc-v2 .*-address $CLUSTER_CONTAINERD_SOCK" || true)"
[[ -n "$left" ]] && { kill -KILL $left 2>/dev/null; sleep 0.3; }

# 4. Mounts under our directories (volumes, pod netns, overlay rootfs,
#    shm), deepest first.
umount_under() {
	local dir="$1" m
	[[ -n "$dir" && -e "$dir" ]] || return 0
	while IFS= read -r m; do
		umount "$m" 2>/dev/null || umount -l "$m" 2>/dev/null
	done < <(awk -v d="$dir" '$5 == d || index($5, d "/") == 1 {print $5}' /proc/self/mountinfo | sort -r)
}
umount_under "$CLUSTER_STATE/kubelet"
umount_under "$CLUSTER_RUN"
umount_under "$CLUSTER_CACHE/containerd"
# The pods' network namespaces (CNI's /run/netns/cni-*): unmounting the last
# reference destroys the namespace, and with it the pod end of each veth,
# which takes the host end along.
for ns in /run/netns/cni-*; do
	[[ -e "$ns" ]] || continue
	umount "$ns" 2>/dev/null || umount -l "$ns" 2>/dev/null
	rm -f "$ns"
done

# /run/netns, if cluster-up made it a mount point and nothing else uses it now.
if [[ -f "$CLUSTER_RUN/saved/mounted-netns" ]] && mountpoint -q /run/netns && [[ -z "$(ls -A /run/netns)" ]]; then
	umount /run/netns 2>/dev/null
fi

# 5. Network: the pod bridge and the node's own interface; host-side
#    veths still enslaved to the bridge (a namespace some process outside
#    the cluster still held).
if ip link show "$CLUSTER_POD_BRIDGE" >/dev/null 2>&1; then
	for v in $(ip -o link show master "$CLUSTER_POD_BRIDGE" 2>/dev/null | awk -F': ' '{print $2}' | cut -d@ -f1); do
		ip link del "$v" 2>/dev/null
	done
	ip link del "$CLUSTER_POD_BRIDGE" 2>/dev/null
fi
ip link del "$CLUSTER_NODE_IF" 2>/dev/null

# 6. Firewall: back to the ruleset saved before cluster-up (kube-proxy's
#    nftables tables, kubelet's and portmap's iptables chains all go).
if [[ -f "$CLUSTER_RUN/saved/ruleset.nft" ]]; then
	cluster_log "restoring the nftables ruleset"
	{ echo "flush ruleset"; cat "$CLUSTER_RUN/saved/ruleset.nft"; } | nft -f - \
		|| cluster_log "warning: could not restore the ruleset (nft -f failed)"
fi

# 7. Sysctls kubelet and kube-proxy changed.
if [[ -f "$CLUSTER_RUN/saved/sysctl" ]]; then
	while IFS='=' read -r k v; do
		[[ "$(sysctl -n "$k" 2>/dev/null)" == "$v" ]] || sysctl -qw "$k=$v" 2>/dev/null \
			|| cluster_log "warning: could not restore $k=$v"
	done <"$CLUSTER_RUN/saved/sysctl"
fi

# 8. cgroups kubelet made (cgroupfs driver: kubepods/… in every hierarchy).
for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/unified/kubepods; do
	[[ -d "$d" ]] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
done

# 9. Paths the cluster created outside its own directories, the eBPF maps
#    the gateway pinned, and bpffs if cluster-up mounted it.
if [[ -f "$CLUSTER_RUN/saved/created" ]]; then
	while IFS= read -r p; do
		[[ -n "$p" ]] || continue
		umount_under "$p"
		rm -rf "$p"
	done <"$CLUSTER_RUN/saved/created"
fi
if [[ -f "$CLUSTER_RUN/saved/mounted-hugetlbfs" ]] && mountpoint -q /dev/hugepages; then
	umount /dev/hugepages 2>/dev/null || cluster_log "warning: /dev/hugepages still in use"
fi
if [[ -f "$CLUSTER_RUN/saved/mounted-bpffs" ]] && mountpoint -q /sys/fs/bpf; then
	umount /sys/fs/bpf 2>/dev/null || cluster_log "warning: /sys/fs/bpf still in use"
fi

# 10. Our directories.
rm -rf "$CLUSTER_RUN" "$CLUSTER_STATE/kubelet" "$CLUSTER_STATE/kubelet-plugins" \
	"$CLUSTER_STATE/pod-logs" "$CLUSTER_STATE/config" "$CLUSTER_STATE/cni" "$CLUSTER_STATE"/*.kubeconfig "$CLUSTER_STATE"/*.yaml
[[ $keep_logs -eq 1 ]] || rm -rf "$CLUSTER_STATE/logs"
if [[ $purge -eq 1 ]]; then
	rm -rf "$CLUSTER_STATE" "$CLUSTER_CACHE"
fi
cluster_log "down"
