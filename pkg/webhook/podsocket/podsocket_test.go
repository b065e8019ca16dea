package podsocket

import (
	"encoding/json"
	"testing"

	jsonpatch "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func ptr[T any](v T) *T { return &v }

// revisionPod is shaped like the pods of a Knative Serving 1.15 revision
// (pkg/reconciler/revision/resources): labels, the user container, and the
// queue-proxy container with Knative's fixed security context.
func revisionPod(mod ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: "hello-00001-deployment-",
			Namespace:    "default",
			Labels: map[string]string{
				"serving.knative.dev/revision":      "hello-00001",
				"serving.knative.dev/revisionUID":   "0b6c0d1e-2f3a-4b5c-8d9e-0f1a2b3c4d5e",
				"serving.knative.dev/service":       "hello",
				"serving.knative.dev/configuration": "hello",
				"app":                               "hello-00001",
			},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  "user-container",
				Image: "example.com/hello",
				VolumeMounts: []corev1.VolumeMount{{
					Name: "data", MountPath: "/data",
				}},
			}, {
				Name:  QueueContainerName,
				Image: "example.com/eproxy",
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr(false),
					ReadOnlyRootFilesystem:   ptr(true),
					RunAsNonRoot:             ptr(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
			}},
			Volumes: []corev1.Volume{{
				Name:         "data",
				VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}},
			}},
			SecurityContext: &corev1.PodSecurityContext{},
		},
	}
	for _, m := range mod {
		m(p)
	}
	return p
}

// apply applies ops to pod through its JSON, as the API server does.
func apply(t *testing.T, pod *corev1.Pod, ops []Op) *corev1.Pod {
	t.Helper()
	if len(ops) == 0 {
		return pod.DeepCopy()
	}
	doc, err := json.Marshal(pod)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := json.Marshal(ops)
	if err != nil {
		t.Fatal(err)
	}
	p, err := jsonpatch.DecodePatch(raw)
	if err != nil {
		t.Fatalf("patch %s: %v", raw, err)
	}
	out, err := p.Apply(doc)
	if err != nil {
		t.Fatalf("apply %s: %v", raw, err)
	}
	var got corev1.Pod
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	return &got
}

func withMount(p *corev1.Pod) {
	p.Spec.Containers[1].VolumeMounts = append(p.Spec.Containers[1].VolumeMounts, Mount())
}

func withVolume(p *corev1.Pod) { p.Spec.Volumes = append(p.Spec.Volumes, Volume()) }

func TestPatch(t *testing.T) {
	gid := int64(2360)
	tests := []struct {
		name     string
		in       *corev1.Pod
		cfg      Config
		want     *corev1.Pod // nil: unchanged
		warnings int
	}{{
		name: "revision pod gets volume and queue-proxy mount",
		in:   revisionPod(),
		want: revisionPod(withVolume, withMount),
	}, {
		name: "no volumes and no mounts yet",
		in: revisionPod(func(p *corev1.Pod) {
			p.Spec.Volumes = nil
			p.Spec.Containers[0].VolumeMounts = nil
		}),
		want: revisionPod(func(p *corev1.Pod) {
			p.Spec.Volumes = []corev1.Volume{Volume()}
			p.Spec.Containers[0].VolumeMounts = nil
		}, withMount),
	}, {
		name: "queue-proxy already has mounts (token, podinfo)",
		in: revisionPod(func(p *corev1.Pod) {
			p.Spec.Containers[1].VolumeMounts = []corev1.VolumeMount{{Name: "knative-token-volume", MountPath: "/var/run/secrets/tokens"}}
		}),
		want: revisionPod(func(p *corev1.Pod) {
			p.Spec.Containers[1].VolumeMounts = []corev1.VolumeMount{{Name: "knative-token-volume", MountPath: "/var/run/secrets/tokens"}}
		}, withVolume, withMount),
	}, {
		name: "queue-proxy is not the last container",
		in: revisionPod(func(p *corev1.Pod) {
			p.Spec.Containers = []corev1.Container{p.Spec.Containers[1], p.Spec.Containers[0]}
		}),
		want: revisionPod(withVolume, withMount, func(p *corev1.Pod) {
			p.Spec.Containers = []corev1.Container{p.Spec.Containers[1], p.Spec.Containers[0]}
		}),
	}, {
		name: "already mutated: idempotent",
		in:   revisionPod(withVolume, withMount),
	}, {
		name: "volume there, mount missing",
		in:   revisionPod(withVolume),
		want: revisionPod(withVolume, withMount),
	}, {
		name: "not a Knative revision pod",
		in:   revisionPod(func(p *corev1.Pod) { delete(p.Labels, "serving.knative.dev/revision") }),
	}, {
		name: "revision pod without queue-proxy",
		in: revisionPod(func(p *corev1.Pod) {
			p.Spec.Containers = p.Spec.Containers[:1]
		}),
	}, {
		name: "queue-proxy as an init container is not touched",
		in: revisionPod(func(p *corev1.Pod) {
			p.Spec.InitContainers = []corev1.Container{p.Spec.Containers[1]}
			p.Spec.Containers = p.Spec.Containers[:1]
		}),
	}, {
		name: "foreign volume named spright-run: unchanged, warned",
		in: revisionPod(func(p *corev1.Pod) {
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: VolumeName,
				VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		}),
		warnings: 1,
	}, {
		name: "foreign mount at /run/spright: unchanged, warned",
		in: revisionPod(func(p *corev1.Pod) {
			p.Spec.Containers[1].VolumeMounts = []corev1.VolumeMount{{Name: "data", MountPath: MountPath}}
		}),
		warnings: 1,
	}, {
		name: "control group added to an empty pod securityContext",
		in:   revisionPod(),
		cfg:  Config{ControlGroup: &gid},
		want: revisionPod(withVolume, withMount, func(p *corev1.Pod) {
			p.Spec.SecurityContext.SupplementalGroups = []int64{gid}
		}),
	}, {
		name: "control group with no pod securityContext",
		in:   revisionPod(func(p *corev1.Pod) { p.Spec.SecurityContext = nil }),
		cfg:  Config{ControlGroup: &gid},
		want: revisionPod(withVolume, withMount, func(p *corev1.Pod) {
			p.Spec.SecurityContext = &corev1.PodSecurityContext{SupplementalGroups: []int64{gid}}
		}),
	}, {
		name: "control group appended to existing groups",
		in: revisionPod(func(p *corev1.Pod) {
			p.Spec.SecurityContext.SupplementalGroups = []int64{1000}
			p.Spec.SecurityContext.FSGroup = ptr(int64(1000))
		}),
		cfg: Config{ControlGroup: &gid},
		want: revisionPod(withVolume, withMount, func(p *corev1.Pod) {
			p.Spec.SecurityContext.SupplementalGroups = []int64{1000, gid}
			p.Spec.SecurityContext.FSGroup = ptr(int64(1000))
		}),
	}, {
		name: "control group already there",
		in: revisionPod(withVolume, withMount, func(p *corev1.Pod) {
			p.Spec.SecurityContext.SupplementalGroups = []int64{gid}
		}),
		cfg: Config{ControlGroup: &gid},
	}, {
		name: "control group is not added to other pods",
		in:   revisionPod(func(p *corev1.Pod) { p.Labels = nil }),
		cfg:  Config{ControlGroup: &gid},
	}}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			in := tc.in.DeepCopy()
			ops, warnings := Patch(in, tc.cfg)
			if !cmp.Equal(in, tc.in) {
				t.Fatalf("Patch modified its input (-want +got):\n%s", cmp.Diff(tc.in, in))
			}
			if len(warnings) != tc.warnings {
				t.Errorf("warnings = %q, want %d", warnings, tc.warnings)
			}
			want := tc.want
			if want == nil {
				want = tc.in
				if len(ops) != 0 {
					t.Fatalf("ops = %+v, want none", ops)
				}
			}
			got := apply(t, tc.in, ops)
			if diff := cmp.Diff(want, got); diff != "" {
				t.Fatalf("patched pod (-want +got):\n%s", diff)
			}
			// The user container never changes.
			for i, c := range got.Spec.Containers {
				if c.Name != QueueContainerName && !cmp.Equal(c, tc.in.Spec.Containers[i]) {
					t.Errorf("container %s changed", c.Name)
				}
			}
			// Idempotent: the patched pod needs no more.
			if again, _ := Patch(got, tc.cfg); len(again) != 0 {
				t.Errorf("second Patch = %+v, want none", again)
			}
		})
	}
}

func TestVolumeAndMount(t *testing.T) {
	v := Volume()
	if v.HostPath == nil || v.HostPath.Path != "/run/spright" || *v.HostPath.Type != corev1.HostPathDirectory {
		t.Errorf("Volume() = %+v", v)
	}
	m := Mount()
	if m.Name != v.Name || m.MountPath != "/run/spright" || !m.ReadOnly {
		t.Errorf("Mount() = %+v", m)
	}
}

// TestPatchSDKMember: a chain member whose container is a Go SDK function
// (spright.dev/sdk: "true") gets the socket and its chain identity in the
// user container, and EPROXY is told not to join the chain for it; a
// member without the annotation only gets queue-proxy's mount. Patching the
// patched pod again changes nothing.
func TestPatchSDKMember(t *testing.T) {
	sdk := func(p *corev1.Pod) {
		p.Annotations = map[string]string{"spright.dev/chain": "shop", "spright.dev/sdk": "true"}
		p.Spec.Containers[0].Env = []corev1.EnvVar{{Name: "GREETING", Value: "hi"}}
	}
	got := apply(t, revisionPod(sdk), mustPatch(t, revisionPod(sdk)))
	user, qp := got.Spec.Containers[0], got.Spec.Containers[1]
	env := map[string]string{}
	for _, e := range user.Env {
		env[e.Name] = e.Value
	}
	if env["SPRIGHT_CHAIN"] != "default.shop" || env["SPRIGHT_FUNCTION"] != "hello" ||
		env["SPRIGHT_CONTROL_SOCKET"] != "/run/spright/control.sock" || env["GREETING"] != "hi" {
		t.Errorf("user container env %v", user.Env)
	}
	mounted := false
	for _, m := range user.VolumeMounts {
		mounted = mounted || (m.Name == VolumeName && m.MountPath == MountPath && m.ReadOnly)
	}
	if !mounted {
		t.Errorf("user container mounts %v: no read-only %s", user.VolumeMounts, MountPath)
	}
	if len(qp.Env) != 1 || qp.Env[0].Name != EnvShim || qp.Env[0].Value != "false" {
		t.Errorf("queue-proxy env %v, want %s=false", qp.Env, EnvShim)
	}
	if ops, _ := Patch(got, Config{}); len(ops) != 0 {
		t.Errorf("second patch: %+v", ops)
	}

	// Without spright.dev/sdk the user container is left alone.
	plain := func(p *corev1.Pod) { p.Annotations = map[string]string{"spright.dev/chain": "shop"} }
	got = apply(t, revisionPod(plain), mustPatch(t, revisionPod(plain)))
	if len(got.Spec.Containers[0].Env) != 0 || len(got.Spec.Containers[0].VolumeMounts) != 1 || len(got.Spec.Containers[1].Env) != 0 {
		t.Errorf("HTTP member patched like an SDK one: %+v", got.Spec.Containers)
	}
}

func mustPatch(t *testing.T, pod *corev1.Pod) []Op {
	t.Helper()
	ops, warnings := Patch(pod, Config{})
	if len(warnings) > 0 {
		t.Fatalf("warnings %v", warnings)
	}
	return ops
}
