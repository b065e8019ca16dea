# shellcheck shell=bash
# Shared by hack/cluster-up.sh and hack/cluster-down.sh: where the one-node
# cluster keeps its state, and the addresses it uses. Sourced, not run.
#
# Three places, so that cluster-down can remove everything the cluster was
# while keeping what makes the next cluster-up fast:
#   $CLUSTER_STATE  (/var/lib/spright-cluster) certificates, kubeconfigs,
#                   component configs, logs; the node's kubelet root.
#                   Removed by cluster-down except certs/ and logs/.
#   $CLUSTER_RUN    (/run/spright-cluster) pids, etcd's data (tmpfs: a new
#                   cluster each time), containerd's state and socket, CNI
#                   IPAM. Removed by cluster-down.
#   $CLUSTER_CACHE  (~/.cache/spright/cluster) containerd's image store and
#                   the local registry's blobs. Kept: a warm cluster-up pulls
#                   and pushes nothing it already has.

CLUSTER_STATE="${SPRIGHT_CLUSTER_STATE:-/var/lib/spright-cluster}"
CLUSTER_RUN="${SPRIGHT_CLUSTER_RUN:-/run/spright-cluster}"
CLUSTER_CACHE="${SPRIGHT_CLUSTER_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/spright/cluster}"

# The node's address lives on an interface of its own (an empty bridge: this
# kernel has no dummy driver; local delivery needs only the address), so the cluster
# does not depend on (or disturb) the host's uplink, and cluster-down can
# remove it. Pods reach the apiserver through it (the kubernetes Service
# DNATs to it); clients on the host use it for NodePorts and hostPorts.
CLUSTER_NODE_IF=spright-node0
CLUSTER_NODE_IP="${SPRIGHT_CLUSTER_NODE_IP:-10.222.0.1}"
CLUSTER_NODE_NAME="${SPRIGHT_CLUSTER_NODE_NAME:-spright-node}"
CLUSTER_POD_CIDR=10.244.0.0/24
CLUSTER_POD_BRIDGE=spright-cni0
CLUSTER_SERVICE_CIDR=10.96.0.0/16
CLUSTER_KUBERNETES_SVC_IP=10.96.0.1
CLUSTER_DNS_IP=10.96.0.10
CLUSTER_DOMAIN=cluster.local

CLUSTER_APISERVER_PORT=6443
CLUSTER_ETCD_PORT=23790
CLUSTER_ETCD_PEER_PORT=23800
# Images: a registry on loopback (Debian's docker-registry, the CNCF
# distribution registry) that ko pushes to and containerd pulls from.
CLUSTER_REGISTRY="localhost:${SPRIGHT_CLUSTER_REGISTRY_PORT:-5000}"

CLUSTER_KUBECONFIG="$CLUSTER_STATE/admin.kubeconfig"
CLUSTER_CONTAINERD_SOCK="$CLUSTER_RUN/containerd/containerd.sock"

# 2 MiB hugepages reserved for the gateway's chain pools (the DaemonSet
# requests hugepages-2Mi, and kubelet reads the node's capacity when it
# starts, so they are reserved before it).
CLUSTER_HUGEPAGES="${SPRIGHT_CLUSTER_HUGEPAGES:-256}"

# Sysctls that kubelet and kube-proxy (and the hugepages above) change: saved before the first start,
# put back by cluster-down.
CLUSTER_SYSCTLS=(
	vm.nr_hugepages vm.overcommit_memory vm.panic_on_oom kernel.panic kernel.panic_on_oops
	kernel.keys.root_maxkeys kernel.keys.root_maxbytes
	net.ipv4.ip_forward net.ipv4.conf.all.route_localnet
	net.bridge.bridge-nf-call-iptables net.bridge.bridge-nf-call-ip6tables
	net.netfilter.nf_conntrack_max net.netfilter.nf_conntrack_tcp_be_liberal
	net.netfilter.nf_conntrack_tcp_timeout_established
	net.netfilter.nf_conntrack_tcp_timeout_close_wait
)

# Fixed host paths kubelet (or the gateway DaemonSet's hostPath) creates
# whatever its configuration says; cluster-down removes those that did not
# exist before cluster-up.
CLUSTER_FIXED_PATHS=(/var/log/containers /var/log/pods /var/lib/kubelet /run/spright /sys/fs/bpf/spright /dev/hugepages/spright)

# Host processes, in start order; cluster-down stops them in reverse.
CLUSTER_COMPONENTS=(registry etcd containerd kube-apiserver kube-controller-manager kube-scheduler kube-proxy kubelet)

cluster_log() { printf '%s cluster: %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
cluster_die() { cluster_log "error: $*"; exit 1; }

# cluster_pid NAME: the pid of a component started by cluster-up, if alive.
cluster_pid() {
	local f="$CLUSTER_RUN/pids/$1.pid" pid
	[[ -f "$f" ]] || return 1
	pid="$(cat "$f")"
	[[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && echo "$pid"
}
