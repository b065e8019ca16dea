#!/usr/bin/env bash
# A real one-node Kubernetes with Knative Serving 1.15 on this machine, from
# Debian packages and Go modules only (docs/knative.md, "Try it on one
# machine"; DESIGN.md §10):
#
#   etcd (Debian) → kube-apiserver, kube-controller-manager, kube-scheduler,
#   kube-proxy (nftables), kubelet (k8s.io/kubernetes, hack/build-kube-apiserver.sh)
#   → containerd + runc (Debian, CRI) with CNI bridge/host-local/loopback/portmap
#   → CoreDNS (github.com/coredns/coredns, image built by ko)
#   → Knative Serving v0.42.2 (knative.dev/serving config/core + networking
#     CRDs, images built by ko from that module), ingress class SPRIGHT's.
#
# Images are built by ko and pushed to a registry on loopback
# ($CLUSTER_REGISTRY, Debian's docker-registry), which containerd pulls from;
# nothing is pulled from outside. SPRIGHT itself is not installed: that is
# the user's `ko apply -f config/` (docs/knative.md), which the cluster test
# (test/cluster) does as a user would.
#
#   hack/cluster-up.sh              # kubernetes + CoreDNS + Knative Serving
#   hack/cluster-up.sh --no-knative # kubernetes + CoreDNS only
#   hack/cluster-down.sh            # stop everything, put the host back
#
# Then: export KUBECONFIG=/var/lib/spright-cluster/admin.kubeconfig
#       KO_DOCKER_REPO=localhost:5000/spright (printed at the end).
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=hack/cluster-lib.sh
source "$root/hack/cluster-lib.sh"

knative=1
for arg in "$@"; do
	case "$arg" in
	--no-knative) knative=0 ;;
	-h|--help) sed -n '2,25p' "$0"; exit 0 ;;
	*) echo "usage: $0 [--no-knative]" >&2; exit 2 ;;
	esac
done

[[ $(id -u) -eq 0 ]] || cluster_die "needs root (kubelet, containerd, CNI, nftables)"
export PATH="/usr/local/go/bin:$PATH"
t0=$(date +%s)

# --- packages and binaries -------------------------------------------------------
need=()
for pair in containerd:containerd runc:runc /usr/lib/cni/bridge:containernetworking-plugins \
	etcd:etcd-server docker-registry:docker-registry nft:nftables iptables:iptables \
	conntrack:conntrack openssl:openssl curl:curl; do
	bin="${pair%%:*}" pkg="${pair##*:}"
	if [[ "$bin" == /* ]]; then [[ -x "$bin" ]] || need+=("$pkg"); else command -v "$bin" >/dev/null || need+=("$pkg"); fi
done
if ((${#need[@]})); then
	cluster_log "installing from Debian: ${need[*]}"
	apt-get update -qq
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
# Debian's packages may start their own daemons where an init system runs
# them; ours use their own sockets, ports and directories, so they coexist.

"$root/hack/build-kube-apiserver.sh" --cluster >&2
KUBE_BIN="$("$root/hack/build-kube-apiserver.sh" --print-dir)"
"$root/hack/ko-resolve.sh" --install-only >&2
KO_DIR="$("$root/hack/ko-resolve.sh" --print-dir)"
KO="$KO_DIR/ko"
kubectl() { "$KUBE_BIN/kubectl" --kubeconfig "$CLUSTER_KUBECONFIG" "$@"; }
# What a shell needs to use the cluster (and ko to build for it).
print_env() {
	cat <<EOF
export KUBECONFIG=$CLUSTER_KUBECONFIG
export KO_DOCKER_REPO=$CLUSTER_REGISTRY/spright KO_DEFAULTBASEIMAGE=$CLUSTER_REGISTRY/spright/base:static
export PATH=$KUBE_BIN:$KO_DIR:\$PATH
EOF
}

# --- an earlier cluster ---------------------------------------------------------
if [[ -d "$CLUSTER_RUN/pids" ]]; then
	alive=1
	for c in "${CLUSTER_COMPONENTS[@]}"; do cluster_pid "$c" >/dev/null || alive=0; done
	if [[ $alive -eq 1 ]] && kubectl get --raw /readyz >/dev/null 2>&1; then
		cluster_log "already up (hack/cluster-down.sh first for a new one)"
		print_env
		exit 0
	fi
	cluster_log "a previous cluster is half up: taking it down first"
	"$root/hack/cluster-down.sh"
fi

mkdir -p "$CLUSTER_STATE"/{pki,logs,config,kubelet} "$CLUSTER_RUN"/{pids,saved,cni-ipam} "$CLUSTER_CACHE"/{containerd,registry}
# From here on a failure leaves a half cluster: take it down so that the
# host is as it was (set SPRIGHT_CLUSTER_KEEP_FAILED=1 to look at it).
trap 'rc=$?; if [[ $rc -ne 0 && -z "${SPRIGHT_CLUSTER_KEEP_FAILED:-}" ]]; then cluster_log "failed (rc $rc): logs in $CLUSTER_STATE/logs; taking the cluster down"; "$root/hack/cluster-down.sh" --keep-logs || true; fi' EXIT

# --- what the host was: saved for cluster-down -------------------------------------
for s in "${CLUSTER_SYSCTLS[@]}"; do
	v="$(sysctl -n "$s" 2>/dev/null)" && printf '%s=%s\n' "$s" "$v"
done >"$CLUSTER_RUN/saved/sysctl"
nft list ruleset >"$CLUSTER_RUN/saved/ruleset.nft"
: >"$CLUSTER_RUN/saved/created"
for p in "${CLUSTER_FIXED_PATHS[@]}"; do [[ -e "$p" ]] || echo "$p" >>"$CLUSTER_RUN/saved/created"; done
# hugetlbfs where systemd mounts it on most distributions: the gateway keeps
# its chain pools there across restarts (500-gateway.yaml).
if ! awk '$3 == "hugetlbfs" && $2 == "/dev/hugepages" {found=1} END {exit !found}' /proc/self/mounts; then
	mkdir -p /dev/hugepages
	mount -t hugetlbfs -o mode=0755 hugetlbfs /dev/hugepages
	echo /dev/hugepages >"$CLUSTER_RUN/saved/mounted-hugetlbfs"
fi
if ! mountpoint -q /sys/fs/bpf; then
	mount -t bpf bpffs /sys/fs/bpf
	echo /sys/fs/bpf >"$CLUSTER_RUN/saved/mounted-bpffs"
fi

# Pod network namespaces: CNI mounts them at /run/netns/cni-*. Make
# /run/netns a shared mount point first, as `ip netns add` does: otherwise
# the first `ip netns add` after the pods start (tests do that) bind-mounts
# /run/netns over itself and hides the pods' namespaces from everyone,
# cluster-down included.
mkdir -p /run/netns
if ! mountpoint -q /run/netns; then
	mount --bind /run/netns /run/netns
	echo /run/netns >"$CLUSTER_RUN/saved/mounted-netns"
fi
mount --make-shared /run/netns

# --- node network ------------------------------------------------------------------
ip link show "$CLUSTER_NODE_IF" >/dev/null 2>&1 || ip link add "$CLUSTER_NODE_IF" type bridge
ip addr replace "$CLUSTER_NODE_IP/32" dev "$CLUSTER_NODE_IF"
ip link set "$CLUSTER_NODE_IF" up
sysctl -qw net.ipv4.ip_forward=1
if (($(cat /proc/sys/vm/nr_hugepages) < CLUSTER_HUGEPAGES)); then
	echo "$CLUSTER_HUGEPAGES" >/proc/sys/vm/nr_hugepages
	(($(cat /proc/sys/vm/nr_hugepages) >= CLUSTER_HUGEPAGES)) \
		|| cluster_log "warning: only $(cat /proc/sys/vm/nr_hugepages) hugepages could be reserved"
fi
sysctl -qw net.bridge.bridge-nf-call-iptables=1 2>/dev/null || true

# --- PKI ---------------------------------------------------------------------------
# One CA for everything; client certificates carry the identities the
# default RBAC (and the Node authorizer) know. Kept across cluster-downs
# (valid 10 years; regenerated when the node address changes).
pki="$CLUSTER_STATE/pki"
if [[ ! -f "$pki/ca.crt" || "$(cat "$pki/.node-ip" 2>/dev/null)" != "$CLUSTER_NODE_IP" ]]; then
	cluster_log "generating certificates in $pki"
	rm -f "$pki"/*
	openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=spright-cluster-ca" \
		-keyout "$pki/ca.key" -out "$pki/ca.crt" 2>/dev/null
	openssl genrsa -out "$pki/sa.key" 2048 2>/dev/null
	openssl rsa -in "$pki/sa.key" -pubout -out "$pki/sa.pub" 2>/dev/null
	cert() { # name subject [san]
		local name="$1" subj="$2" san="${3:-}" ext="$pki/$1.ext"
		openssl req -newkey rsa:2048 -nodes -subj "$subj" -keyout "$pki/$name.key" -out "$pki/$name.csr" 2>/dev/null
		{
			echo "basicConstraints=CA:FALSE"
			echo "keyUsage=digitalSignature,keyEncipherment"
			if [[ -n "$san" ]]; then echo "extendedKeyUsage=serverAuth,clientAuth"; echo "subjectAltName=$san"; else echo "extendedKeyUsage=clientAuth"; fi
		} >"$ext"
		openssl x509 -req -in "$pki/$name.csr" -CA "$pki/ca.crt" -CAkey "$pki/ca.key" -CAcreateserial \
			-days 3650 -extfile "$ext" -out "$pki/$name.crt" 2>/dev/null
		rm -f "$pki/$name.csr" "$ext"
	}
	cert apiserver "/CN=kube-apiserver" \
		"DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.$CLUSTER_DOMAIN,DNS:localhost,IP:$CLUSTER_KUBERNETES_SVC_IP,IP:$CLUSTER_NODE_IP,IP:127.0.0.1"
	cert admin "/O=system:masters/CN=kubernetes-admin"
	cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client"
	cert controller-manager "/CN=system:kube-controller-manager"
	cert scheduler "/CN=system:kube-scheduler"
	cert kube-proxy "/CN=system:kube-proxy"
	cert kubelet "/O=system:nodes/CN=system:node:$CLUSTER_NODE_NAME"
	echo "$CLUSTER_NODE_IP" >"$pki/.node-ip"
fi
kubeconfig() { # name
	cat >"$CLUSTER_STATE/$1.kubeconfig" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: spright
  cluster:
    server: https://$CLUSTER_NODE_IP:$CLUSTER_APISERVER_PORT
    certificate-authority: $pki/ca.crt
users:
- name: $1
  user:
    client-certificate: $pki/$1.crt
    client-key: $pki/$1.key
contexts:
- name: spright
  context: {cluster: spright, user: $1}
current-context: spright
EOF
}
for n in admin controller-manager scheduler kube-proxy kubelet; do kubeconfig "$n"; done

# --- processes ---------------------------------------------------------------------
# start NAME CMD...: a host process in its own session, output to logs/NAME.log.
start() {
	local name="$1"; shift
	cluster_log "starting $name"
	setsid "$@" >>"$CLUSTER_STATE/logs/$name.log" 2>&1 </dev/null &
	echo $! >"$CLUSTER_RUN/pids/$name.pid"
}
# wait_for WHAT SECONDS CMD...: until CMD succeeds; fails with the log's tail.
wait_for() {
	local what="$1" secs="$2"; shift 2
	local deadline=$(($(date +%s) + secs))
	until "$@" >/dev/null 2>&1; do
		if (($(date +%s) > deadline)); then
			cluster_log "$what: not ready after ${secs}s"
			return 1
		fi
		sleep 0.5
	done
}
alive() { cluster_pid "$1" >/dev/null || { tail -n 30 "$CLUSTER_STATE/logs/$1.log" >&2; cluster_die "$1 exited"; }; }

# Registry: the CNCF distribution registry, blobs on disk in the cache.
cat >"$CLUSTER_STATE/config/registry.yml" <<EOF
version: 0.1
log: {level: warn}
storage:
  filesystem: {rootdirectory: $CLUSTER_CACHE/registry}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:${CLUSTER_REGISTRY#localhost:}
EOF
start registry docker-registry serve "$CLUSTER_STATE/config/registry.yml"
wait_for registry 20 curl -fsS "http://$CLUSTER_REGISTRY/v2/"
alive registry
"$KO_DIR/kolocal" push-base -platform linux/amd64 -ref "$CLUSTER_REGISTRY/spright/base:static" >/dev/null
export KO_DEFAULTBASEIMAGE="$CLUSTER_REGISTRY/spright/base:static"

# The cluster's own images: the sandbox's pause and CoreDNS.
cluster_log "building the pause and CoreDNS images (ko)"
(cd "$root/hack/tools/cluster" && GOWORK=off GOFLAGS=-mod=readonly KO_DOCKER_REPO="$CLUSTER_REGISTRY/cluster" \
	"$KO" build --sbom=none -B --tags latest --platform linux/amd64 ./pause >/dev/null 2>>"$CLUSTER_STATE/logs/ko.log") \
	|| { tail -n 20 "$CLUSTER_STATE/logs/ko.log" >&2; cluster_die "ko build of the pause image failed"; }
PAUSE_IMAGE="$CLUSTER_REGISTRY/cluster/pause:latest"

# containerd: its own root (images, kept in the cache), state and socket, so
# it coexists with a system containerd. restrict_oom_score_adj: processes
# here lack CAP_SYS_RESOURCE, so runc may not lower oom_score_adj.
mkdir -p "$CLUSTER_STATE/config/certs.d/$CLUSTER_REGISTRY" "$CLUSTER_STATE/cni/net.d"
cat >"$CLUSTER_STATE/config/certs.d/$CLUSTER_REGISTRY/hosts.toml" <<EOF
server = "http://$CLUSTER_REGISTRY"
[host."http://$CLUSTER_REGISTRY"]
  capabilities = ["pull", "resolve"]
EOF
cat >"$CLUSTER_STATE/config/containerd.toml" <<EOF
version = 2
root = "$CLUSTER_CACHE/containerd"
state = "$CLUSTER_RUN/containerd"
[grpc]
  address = "$CLUSTER_CONTAINERD_SOCK"
[ttrpc]
  address = "$CLUSTER_RUN/containerd/containerd.sock.ttrpc"
[debug]
  level = "warn"
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "$PAUSE_IMAGE"
  restrict_oom_score_adj = true
  enable_unprivileged_ports = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$CLUSTER_STATE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$CLUSTER_STATE/config/certs.d"
EOF
# CNI: one bridge for the node's pods, host-local addresses, masquerade to
# the outside, hairpin (a pod reaching itself through its Service), and
# portmap for hostPorts.
cat >"$CLUSTER_STATE/cni/net.d/10-spright.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "spright-pods",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "$CLUSTER_POD_BRIDGE",
      "isGateway": true,
      "ipMasq": true,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "dataDir": "$CLUSTER_RUN/cni-ipam",
        "ranges": [[{"subnet": "$CLUSTER_POD_CIDR"}]],
        "routes": [{"dst": "0.0.0.0/0"}]
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}, "snat": true}
  ]
}
EOF
start containerd containerd --config "$CLUSTER_STATE/config/containerd.toml"
wait_for containerd 30 test -S "$CLUSTER_CONTAINERD_SOCK"
alive containerd

start etcd etcd --name spright --data-dir "$CLUSTER_RUN/etcd" \
	--listen-client-urls "http://127.0.0.1:$CLUSTER_ETCD_PORT" \
	--advertise-client-urls "http://127.0.0.1:$CLUSTER_ETCD_PORT" \
	--listen-peer-urls "http://127.0.0.1:$CLUSTER_ETCD_PEER_PORT" \
	--initial-advertise-peer-urls "http://127.0.0.1:$CLUSTER_ETCD_PEER_PORT" \
	--initial-cluster "spright=http://127.0.0.1:$CLUSTER_ETCD_PEER_PORT"
wait_for etcd 30 curl -fsS "http://127.0.0.1:$CLUSTER_ETCD_PORT/health"

start kube-apiserver "$KUBE_BIN/kube-apiserver" \
	--etcd-servers="http://127.0.0.1:$CLUSTER_ETCD_PORT" \
	--bind-address="$CLUSTER_NODE_IP" --advertise-address="$CLUSTER_NODE_IP" \
	--secure-port="$CLUSTER_APISERVER_PORT" \
	--tls-cert-file="$pki/apiserver.crt" --tls-private-key-file="$pki/apiserver.key" \
	--client-ca-file="$pki/ca.crt" \
	--service-account-key-file="$pki/sa.pub" --service-account-signing-key-file="$pki/sa.key" \
	--service-account-issuer="https://kubernetes.default.svc.$CLUSTER_DOMAIN" \
	--service-cluster-ip-range="$CLUSTER_SERVICE_CIDR" \
	--authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction \
	--allow-privileged=true \
	--kubelet-client-certificate="$pki/apiserver-kubelet-client.crt" \
	--kubelet-client-key="$pki/apiserver-kubelet-client.key" \
	--kubelet-preferred-address-types=InternalIP \
	--profiling=false
wait_for kube-apiserver 90 kubectl get --raw /readyz
alive kube-apiserver

start kube-controller-manager "$KUBE_BIN/kube-controller-manager" \
	--kubeconfig="$CLUSTER_STATE/controller-manager.kubeconfig" \
	--authentication-kubeconfig="$CLUSTER_STATE/controller-manager.kubeconfig" \
	--authorization-kubeconfig="$CLUSTER_STATE/controller-manager.kubeconfig" \
	--service-account-private-key-file="$pki/sa.key" --root-ca-file="$pki/ca.crt" \
	--cluster-signing-cert-file="$pki/ca.crt" --cluster-signing-key-file="$pki/ca.key" \
	--use-service-account-credentials=true --service-cluster-ip-range="$CLUSTER_SERVICE_CIDR" \
	--leader-elect=false --bind-address=127.0.0.1 --profiling=false
start kube-scheduler "$KUBE_BIN/kube-scheduler" \
	--kubeconfig="$CLUSTER_STATE/scheduler.kubeconfig" \
	--authentication-kubeconfig="$CLUSTER_STATE/scheduler.kubeconfig" \
	--authorization-kubeconfig="$CLUSTER_STATE/scheduler.kubeconfig" \
	--leader-elect=false --bind-address=127.0.0.1 --profiling=false

# kube-proxy in nftables mode (one table per family, easy to see and to
# remove); conntrack left as the host has it.
cat >"$CLUSTER_STATE/config/kube-proxy.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection:
  kubeconfig: $CLUSTER_STATE/kube-proxy.kubeconfig
mode: nftables
clusterCIDR: $CLUSTER_POD_CIDR
hostnameOverride: $CLUSTER_NODE_NAME
bindAddress: $CLUSTER_NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
conntrack:
  maxPerCore: 0
  min: 0
  tcpEstablishedTimeout: 0s
  tcpCloseWaitTimeout: 0s
EOF
start kube-proxy "$KUBE_BIN/kube-proxy" --config="$CLUSTER_STATE/config/kube-proxy.yaml"

# kubelet: cgroupfs (no systemd here), cgroup v1 allowed (the host's), no
# swap check; every path it would default to kept under our state, except
# the few it fixes (CLUSTER_FIXED_PATHS).
cat >"$CLUSTER_STATE/config/resolv.conf" <<EOF
$(grep -E '^(nameserver|search|options)' /etc/resolv.conf || echo "nameserver 127.0.0.1")
EOF
cat >"$CLUSTER_STATE/config/kubelet.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CLUSTER_CONTAINERD_SOCK
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $pki/ca.crt}
authorization: {mode: Webhook}
clusterDNS: [$CLUSTER_DNS_IP]
clusterDomain: $CLUSTER_DOMAIN
resolvConf: $CLUSTER_STATE/config/resolv.conf
volumePluginDir: $CLUSTER_STATE/kubelet-plugins
podLogsDir: $CLUSTER_STATE/pod-logs
healthzBindAddress: 127.0.0.1
readOnlyPort: 0
serializeImagePulls: false
imageGCHighThresholdPercent: 100
evictionHard:
  memory.available: 200Mi
  nodefs.available: 1%
  imagefs.available: 1%
  nodefs.inodesFree: 1%
maxPods: 110
EOF
start kubelet "$KUBE_BIN/kubelet" --config="$CLUSTER_STATE/config/kubelet.yaml" \
	--kubeconfig="$CLUSTER_STATE/kubelet.kubeconfig" --root-dir="$CLUSTER_STATE/kubelet" \
	--node-ip="$CLUSTER_NODE_IP" --hostname-override="$CLUSTER_NODE_NAME"
cluster_log "waiting for node $CLUSTER_NODE_NAME to be Ready"
wait_for "node $CLUSTER_NODE_NAME" 120 kubectl get node "$CLUSTER_NODE_NAME"
kubectl wait --for=condition=Ready "node/$CLUSTER_NODE_NAME" --timeout=120s >/dev/null
for c in "${CLUSTER_COMPONENTS[@]}"; do alive "$c"; done

# --- CoreDNS -----------------------------------------------------------------------
cluster_log "installing CoreDNS"
(cd "$root/hack/tools/cluster" && GOWORK=off GOFLAGS=-mod=readonly KO_DOCKER_REPO="$CLUSTER_REGISTRY/cluster" \
	"$KO" resolve --sbom=none -B --platform linux/amd64 -f "$root/hack/cluster/coredns.yaml" 2>>"$CLUSTER_STATE/logs/ko.log") \
	| sed -e "s/@@DNS_IP@@/$CLUSTER_DNS_IP/g" -e "s/@@DOMAIN@@/$CLUSTER_DOMAIN/g" >"$CLUSTER_STATE/config/coredns.yaml"
kubectl apply -f "$CLUSTER_STATE/config/coredns.yaml" >/dev/null
kubectl -n kube-system rollout status deployment/coredns --timeout=180s >&2

# --- Knative Serving ------------------------------------------------------------------
if [[ $knative -eq 1 ]]; then
	"$root/hack/knative-install.sh"
fi

trap - EXIT
cluster_log "up in $(($(date +%s) - t0))s"
print_env
