// Package cluster holds the test that runs SPRIGHT inside a real Knative:
// a one-node Kubernetes (etcd, kube-apiserver, controller-manager,
// scheduler, kube-proxy, kubelet on containerd and runc, CNI bridge,
// CoreDNS) with Knative Serving 1.15, brought up by hack/cluster-up.sh from
// Debian packages and Go modules only. The test installs SPRIGHT the way
// docs/knative.md tells a user and drives it with the real kn, curl and wrk.
//
//	make e2e-cluster                 # cluster-up if needed, the test, cluster-down
//	SPRIGHT_CLUSTER_KEEP=1 make e2e-cluster   # leave the cluster up
//
// It skips without root, and unless SPRIGHT_CLUSTER_REQUIRED is set (make
// e2e-cluster and CI set it; make test skips it): cluster-up then builds
// whatever is missing.
package cluster
