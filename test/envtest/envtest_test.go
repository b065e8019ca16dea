package envtest

import (
	"context"
	"os"
	"regexp"
	"strings"
	"testing"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/dynamic"
)

// The constant must name the version hack/build-kube-apiserver.sh builds, or
// Start would look for binaries in the wrong directory.
func TestVersionMatchesToolsModule(t *testing.T) {
	b, err := os.ReadFile("../../hack/tools/kube-apiserver/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^require k8s\.io/kubernetes (v\S+)`).FindSubmatch(b)
	if m == nil {
		t.Fatal("hack/tools/kube-apiserver/go.mod: no 'require k8s.io/kubernetes vX.Y.Z' line")
	}
	if string(m[1]) != KubernetesVersion {
		t.Fatalf("hack/tools/kube-apiserver/go.mod requires k8s.io/kubernetes %s, KubernetesVersion is %s", m[1], KubernetesVersion)
	}
}

var ksvcGVR = schema.GroupVersionResource{Group: "serving.knative.dev", Version: "v1", Resource: "services"}

func TestEnv(t *testing.T) {
	env := Start(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	t.Run("Version", func(t *testing.T) {
		dc, err := discovery.NewDiscoveryClientForConfig(env.Config)
		if err != nil {
			t.Fatal(err)
		}
		v, err := dc.ServerVersion()
		if err != nil {
			t.Fatal(err)
		}
		if v.GitVersion != KubernetesVersion {
			t.Errorf("server version %s, want %s", v.GitVersion, KubernetesVersion)
		}
	})

	t.Run("KnativeService", func(t *testing.T) {
		begin := time.Now()
		env.InstallKnativeServingCRDs(t)
		t.Logf("Knative Serving CRDs installed and established in %s", time.Since(begin).Round(time.Millisecond))

		dyn, err := dynamic.NewForConfig(env.Config)
		if err != nil {
			t.Fatal(err)
		}
		ksvc := &unstructured.Unstructured{Object: map[string]any{
			"apiVersion": "serving.knative.dev/v1",
			"kind":       "Service",
			"metadata": map[string]any{
				"name":        "cart",
				"namespace":   "default",
				"annotations": map[string]any{"spright.dev/chain": "boutique"},
			},
			"spec": map[string]any{
				"template": map[string]any{
					"metadata": map[string]any{
						"annotations": map[string]any{
							"spright.dev/chain":  "boutique",
							"spright.dev/entry":  "true",
							"spright.dev/routes": "*=cart;checkout=payment,shipping",
						},
					},
					"spec": map[string]any{
						"containerConcurrency": int64(16),
						"containers": []any{map[string]any{
							"image": "ko://github.com/spright-dev/spright/cmd/function",
						}},
					},
				},
			},
		}}
		if _, err := dyn.Resource(ksvcGVR).Namespace("default").Create(ctx, ksvc, metav1.CreateOptions{}); err != nil {
			t.Fatalf("create ksvc: %v", err)
		}
		got, err := dyn.Resource(ksvcGVR).Namespace("default").Get(ctx, "cart", metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get ksvc: %v", err)
		}
		if a := got.GetAnnotations()["spright.dev/chain"]; a != "boutique" {
			t.Errorf("metadata annotation spright.dev/chain = %q", a)
		}
		tmpl, _, _ := unstructured.NestedStringMap(got.Object, "spec", "template", "metadata", "annotations")
		if tmpl["spright.dev/chain"] != "boutique" || tmpl["spright.dev/routes"] != "*=cart;checkout=payment,shipping" {
			t.Errorf("template annotations = %v", tmpl)
		}
		if cc, _, _ := unstructured.NestedInt64(got.Object, "spec", "template", "spec", "containerConcurrency"); cc != 16 {
			t.Errorf("containerConcurrency = %d", cc)
		}
		// kubectl sees the CRD's resource too.
		out := env.KubectlT(t, "get", "ksvc", "cart", "-n", "default", "-o", "jsonpath={.metadata.annotations.spright\\.dev/chain}")
		if out != "boutique" {
			t.Errorf("kubectl get ksvc: %q", out)
		}
		// The CRD's structural schema is enforced (no webhook is running).
		bad := ksvc.DeepCopy()
		bad.SetName("bad")
		_ = unstructured.SetNestedField(bad.Object, "sixteen", "spec", "template", "spec", "containerConcurrency")
		if _, err := dyn.Resource(ksvcGVR).Namespace("default").Create(ctx, bad, metav1.CreateOptions{}); !apierrors.IsInvalid(err) {
			t.Errorf("ksvc with string containerConcurrency: err = %v, want Invalid", err)
		}
	})

	t.Run("DryRunServer", func(t *testing.T) {
		out := env.DryRunServer(t, "testdata/namespace-configmap.yaml")
		if !strings.Contains(out, "(server dry run)") {
			t.Errorf("kubectl output: %q", out)
		}
		// The Namespace the file declares was created for real (so the
		// ConfigMap in it could be dry-run); the ConfigMap was not persisted.
		env.KubectlT(t, "get", "namespace", "spright-envtest-sample")
		if _, err := env.RunKubectl(ctx, "get", "configmap", "config-spright", "-n", "spright-envtest-sample"); err == nil || !strings.Contains(err.Error(), "NotFound") {
			t.Errorf("configmap exists after a dry run (err %v)", err)
		}
		// A raw dry run of objects in a namespace that exists nowhere fails.
		if out, err := env.DryRun("testdata/missing-namespace.yaml"); err == nil || !strings.Contains(out, "NotFound") {
			t.Errorf("ConfigMap in a missing namespace accepted: %v\n%s", err, out)
		}
		// The apiserver validates: an invalid object is rejected.
		if out, err := env.DryRun("testdata/invalid-configmap.yaml"); err == nil || !strings.Contains(out, "Invalid") {
			t.Errorf("invalid ConfigMap accepted: %v\n%s", err, out)
		}
		// Applying for real works.
		env.Apply(t, "testdata/namespace-configmap.yaml")
		if got := env.KubectlT(t, "get", "configmap", "config-spright", "-n", "spright-envtest-sample", "-o", "jsonpath={.data.mode}"); got != "skmsg" {
			t.Errorf("configmap mode = %q", got)
		}
	})

	// Controllers list and watch (informers): a v0.29 client's watch through
	// this apiserver and etcd sees a change.
	t.Run("Watch", func(t *testing.T) {
		dyn, err := dynamic.NewForConfig(env.Config)
		if err != nil {
			t.Fatal(err)
		}
		list, err := dyn.Resource(ksvcGVR).Namespace("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatal(err)
		}
		w, err := dyn.Resource(ksvcGVR).Namespace("default").Watch(ctx, metav1.ListOptions{ResourceVersion: list.GetResourceVersion()})
		if err != nil {
			t.Fatal(err)
		}
		defer w.Stop()
		patch := []byte(`{"metadata":{"labels":{"spright.dev/watched":"yes"}}}`)
		if _, err := dyn.Resource(ksvcGVR).Namespace("default").Patch(ctx, "cart", types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
		select {
		case ev := <-w.ResultChan():
			u, ok := ev.Object.(*unstructured.Unstructured)
			if ev.Type != watch.Modified || !ok || u.GetLabels()["spright.dev/watched"] != "yes" {
				t.Fatalf("watch event %s %v", ev.Type, ev.Object)
			}
		case <-time.After(30 * time.Second):
			t.Fatal("no watch event within 30s")
		}
	})

	t.Run("RBAC", func(t *testing.T) {
		dyn, err := dynamic.NewForConfig(env.ConfigFor("system:serviceaccount:default:nobody", "system:serviceaccounts", "system:serviceaccounts:default"))
		if err != nil {
			t.Fatal(err)
		}
		_, err = dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}).Namespace("default").List(ctx, metav1.ListOptions{})
		if !apierrors.IsForbidden(err) {
			t.Fatalf("unprivileged ServiceAccount listing configmaps: err = %v, want Forbidden", err)
		}
		// (Not ClusterRole view: aggregated roles are empty without the
		// controller manager.)
		env.ApplyYAML(t, `apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: read-configmaps
  namespace: default
rules:
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata:
  name: nobody-read-configmaps
  namespace: default
subjects:
- kind: ServiceAccount
  name: nobody
  namespace: default
roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: Role
  name: read-configmaps
`)
		// The RBAC authorizer reads bindings from informers: allow a moment.
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, err = dyn.Resource(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}).Namespace("default").List(ctx, metav1.ListOptions{})
			if err == nil || time.Now().After(deadline) {
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if err != nil {
			t.Fatalf("after binding read-configmaps: %v", err)
		}
	})
}
