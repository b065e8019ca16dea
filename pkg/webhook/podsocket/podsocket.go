// Package podsocket is SPRIGHT's mutating admission webhook on Pods: it gives
// the queue-proxy container of every Knative revision pod (which runs the
// EPROXY image, see config-deployment queue-sidecar-image) the node's
// /run/spright directory, where the gateway DaemonSet listens on the control
// socket. Knative builds the queue-proxy container itself (no user volumes,
// all capabilities dropped, non-root, read-only root file system), so a
// webhook is the only place this volume can be added.
//
// The mutation is Patch, a pure function from a Pod to JSON Patch operations.
// The webhook (NewController) serves it with knative.dev/pkg/webhook and
// keeps the caBundle of its MutatingWebhookConfiguration in step with the
// certificate that knative.dev/pkg/webhook/certificates writes to a Secret.
package podsocket

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"knative.dev/serving/pkg/apis/serving"

	"github.com/spright-dev/spright/pkg/chainspec"
	"github.com/spright-dev/spright/pkg/function"
)

const (
	// QueueContainerName is the container Knative builds from
	// queue-sidecar-image (EPROXY with SPRIGHT).
	QueueContainerName = "queue-proxy"

	// VolumeName is the volume the webhook adds.
	VolumeName = "spright-run"

	// HostPath is the node directory holding the gateway's control socket
	// (control.sock).
	HostPath = "/run/spright"

	// MountPath is where queue-proxy sees it: EPROXY's default
	// SPRIGHT_CONTROL_SOCKET is /run/spright/control.sock.
	MountPath = "/run/spright"
)

// Config tunes the mutation.
type Config struct {
	// ControlGroup, when set, is added to the Pod's
	// securityContext.supplementalGroups, so that a non-root EPROXY may
	// connect to a control socket owned by root:ControlGroup with mode 0660.
	ControlGroup *int64
}

// Op is one JSON Patch (RFC 6902) operation.
type Op struct {
	Op    string      `json:"op"`
	Path  string      `json:"path"`
	Value interface{} `json:"value,omitempty"`
}

// Volume is the hostPath volume added to revision pods. The directory must
// exist on the node (type Directory): the gateway DaemonSet creates it, and
// until it does the kubelet keeps retrying the mount, so a revision pod
// waits for the node agent instead of starting without it.
func Volume() corev1.Volume {
	t := corev1.HostPathDirectory
	return corev1.Volume{
		Name: VolumeName,
		VolumeSource: corev1.VolumeSource{
			HostPath: &corev1.HostPathVolumeSource{Path: HostPath, Type: &t},
		},
	}
}

// Mount is the queue-proxy mount. Read-only suffices: connect(2) on a unix
// socket checks write permission on the socket inode, not whether its mount
// is writable (verified on Linux with a read-only bind mount), and EPROXY
// creates nothing there.
func Mount() corev1.VolumeMount {
	return corev1.VolumeMount{Name: VolumeName, MountPath: MountPath, ReadOnly: true}
}

// IsRevisionPod reports whether pod was made by Knative Serving for a
// revision: it carries the serving.knative.dev/revision label.
func IsRevisionPod(pod *corev1.Pod) bool {
	_, ok := pod.Labels[serving.RevisionLabelKey]
	return ok
}

// Patch returns the operations that give pod's queue-proxy container the
// node's /run/spright: the spright-run hostPath volume, its read-only mount
// in queue-proxy (other containers get it only in an SDK chain member, see
// sdkOps) and, with cfg.ControlGroup, that supplemental group. Nothing for pods that are not Knative revision
// pods or have no queue-proxy container, and nothing that is already there
// (Patch of the patched pod is empty).
//
// A volume named spright-run that is not this hostPath, or another volume
// mounted at /run/spright in queue-proxy, is left alone and reported as a
// warning: the pod is admitted unchanged rather than made invalid.
func Patch(pod *corev1.Pod, cfg Config) (ops []Op, warnings []string) {
	if !IsRevisionPod(pod) {
		return nil, nil
	}
	qp := -1
	for i := range pod.Spec.Containers {
		if pod.Spec.Containers[i].Name == QueueContainerName {
			qp = i
			break
		}
	}
	if qp < 0 {
		return nil, nil
	}

	needVolume := true
	for _, v := range pod.Spec.Volumes {
		if v.Name != VolumeName {
			continue
		}
		if v.HostPath == nil || v.HostPath.Path != HostPath {
			return nil, []string{fmt.Sprintf("spright: pod already has a volume %q that is not hostPath %s; "+
				"the SPRIGHT control socket is not mounted and EPROXY cannot reach the node gateway", VolumeName, HostPath)}
		}
		needVolume = false
	}
	needMount := true
	for _, m := range pod.Spec.Containers[qp].VolumeMounts {
		if m.MountPath != MountPath {
			continue
		}
		if m.Name != VolumeName {
			return nil, []string{fmt.Sprintf("spright: container %s already mounts volume %q at %s; "+
				"the SPRIGHT control socket is not mounted and EPROXY cannot reach the node gateway", QueueContainerName, m.Name, MountPath)}
		}
		needMount = false
	}

	if needVolume {
		if len(pod.Spec.Volumes) == 0 {
			ops = append(ops, Op{Op: "add", Path: "/spec/volumes", Value: []corev1.Volume{Volume()}})
		} else {
			ops = append(ops, Op{Op: "add", Path: "/spec/volumes/-", Value: Volume()})
		}
	}
	if needMount {
		base := "/spec/containers/" + strconv.Itoa(qp) + "/volumeMounts"
		if len(pod.Spec.Containers[qp].VolumeMounts) == 0 {
			ops = append(ops, Op{Op: "add", Path: base, Value: []corev1.VolumeMount{Mount()}})
		} else {
			ops = append(ops, Op{Op: "add", Path: base + "/-", Value: Mount()})
		}
	}
	if chain, ok := sdkChain(pod); ok {
		ops = append(ops, sdkOps(pod, qp, chain)...)
	}
	if g := cfg.ControlGroup; g != nil {
		sc := pod.Spec.SecurityContext
		switch {
		case sc == nil:
			ops = append(ops, Op{Op: "add", Path: "/spec/securityContext",
				Value: corev1.PodSecurityContext{SupplementalGroups: []int64{*g}}})
		case len(sc.SupplementalGroups) == 0:
			ops = append(ops, Op{Op: "add", Path: "/spec/securityContext/supplementalGroups", Value: []int64{*g}})
		case !contains(sc.SupplementalGroups, *g):
			ops = append(ops, Op{Op: "add", Path: "/spec/securityContext/supplementalGroups/-", Value: *g})
		}
	}
	return ops, nil
}

// EnvShim is EPROXY's switch for its HTTP shim (eproxy.Config.Shim): the
// webhook turns it off in pods whose user container joins the chain itself.
const EnvShim = "SPRIGHT_SHIM"

// sdkChain returns the gateway's name of the chain ("<namespace>.<chain>",
// chainwatch.GatewayName) a pod's user container joins itself: its revision
// is a chain member (spright.dev/chain) built with the Go SDK
// (spright.dev/sdk: "true").
func sdkChain(pod *corev1.Pod) (string, bool) {
	chain := strings.TrimSpace(pod.Annotations[chainspec.AnnotationChain])
	if chain == "" || strings.TrimSpace(pod.Annotations[chainspec.AnnotationSDK]) != "true" {
		return "", false
	}
	return pod.Namespace + "." + chain, true
}

// sdkOps give an SDK member's user containers what function.Run needs —
// the node's /run/spright, and SPRIGHT_CHAIN, SPRIGHT_FUNCTION (the
// Knative Service, the function's name in the chain) and
// SPRIGHT_CONTROL_SOCKET — and tell EPROXY not to join the chain for them.
func sdkOps(pod *corev1.Pod, qp int, chain string) (ops []Op) {
	env := []corev1.EnvVar{
		{Name: function.EnvChain, Value: chain},
		{Name: function.EnvFunction, Value: pod.Labels[serving.ServiceLabelKey]},
		{Name: function.EnvControl, Value: MountPath + "/control.sock"},
	}
	for i := range pod.Spec.Containers {
		c := &pod.Spec.Containers[i]
		if i == qp {
			ops = append(ops, envOps(i, c, []corev1.EnvVar{{Name: EnvShim, Value: "false"}})...)
			continue
		}
		mounted := false
		for _, m := range c.VolumeMounts {
			mounted = mounted || m.MountPath == MountPath
		}
		if !mounted {
			base := "/spec/containers/" + strconv.Itoa(i) + "/volumeMounts"
			if len(c.VolumeMounts) == 0 {
				ops = append(ops, Op{Op: "add", Path: base, Value: []corev1.VolumeMount{Mount()}})
			} else {
				ops = append(ops, Op{Op: "add", Path: base + "/-", Value: Mount()})
			}
		}
		ops = append(ops, envOps(i, c, env)...)
	}
	return ops
}

// envOps adds the variables container i does not set yet.
func envOps(i int, c *corev1.Container, vars []corev1.EnvVar) (ops []Op) {
	base := "/spec/containers/" + strconv.Itoa(i) + "/env"
	have := len(c.Env) > 0
	for _, v := range vars {
		set := false
		for _, e := range c.Env {
			set = set || e.Name == v.Name
		}
		if set {
			continue
		}
		if !have {
			ops = append(ops, Op{Op: "add", Path: base, Value: []corev1.EnvVar{v}})
			have = true
		} else {
			ops = append(ops, Op{Op: "add", Path: base + "/-", Value: v})
		}
	}
	return ops
}

func contains(s []int64, x int64) bool {
	for _, v := range s {
		if v == x {
			return true
		}
	}
	return false
}
