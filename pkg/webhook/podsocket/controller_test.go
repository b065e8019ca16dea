package podsocket

import (
	"context"
	"encoding/json"
	"testing"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes/fake"
	admissionlisters "k8s.io/client-go/listers/admissionregistration/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"knative.dev/pkg/controller"
	pkgreconciler "knative.dev/pkg/reconciler"
	"knative.dev/pkg/system"
	_ "knative.dev/pkg/system/testing" // SYSTEM_NAMESPACE for system.Namespace
	certresources "knative.dev/pkg/webhook/certificates/resources"
)

func request(t *testing.T, op admissionv1.Operation, kind string, obj interface{}) *admissionv1.AdmissionRequest {
	t.Helper()
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return &admissionv1.AdmissionRequest{
		UID:       types.UID("uid"),
		Operation: op,
		Kind:      metav1.GroupVersionKind{Version: "v1", Kind: kind},
		Resource:  metav1.GroupVersionResource{Version: "v1", Resource: "pods"},
		Object:    runtime.RawExtension{Raw: raw},
	}
}

func TestAdmit(t *testing.T) {
	ctx := context.Background()

	resp := Admit(ctx, request(t, admissionv1.Create, "Pod", revisionPod()), Config{})
	if !resp.Allowed || resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
		t.Fatalf("revision pod: %+v", resp)
	}
	var ops []Op
	if err := json.Unmarshal(resp.Patch, &ops); err != nil {
		t.Fatal(err)
	}
	got := apply(t, revisionPod(), ops)
	if !hasMount(got.Spec.Containers[1]) || hasMount(got.Spec.Containers[0]) || len(got.Spec.Volumes) != 2 {
		t.Errorf("patched pod %+v", got.Spec)
	}

	for name, req := range map[string]*admissionv1.AdmissionRequest{
		"update":          request(t, admissionv1.Update, "Pod", revisionPod()),
		"not a pod":       request(t, admissionv1.Create, "ConfigMap", &corev1.ConfigMap{}),
		"already mounted": request(t, admissionv1.Create, "Pod", revisionPod(withVolume, withMount)),
		"plain pod":       request(t, admissionv1.Create, "Pod", &corev1.Pod{}),
	} {
		if resp := Admit(ctx, req, Config{}); !resp.Allowed || resp.Patch != nil || resp.PatchType != nil {
			t.Errorf("%s: %+v, want allowed without patch", name, resp)
		}
	}

	req := request(t, admissionv1.Create, "Pod", revisionPod())
	req.Object.Raw = []byte(`{"spec":`)
	if resp := Admit(ctx, req, Config{}); resp.Allowed {
		t.Errorf("undecodable pod allowed: %+v", resp)
	}

	conflict := revisionPod(func(p *corev1.Pod) {
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: VolumeName})
	})
	if resp := Admit(ctx, request(t, admissionv1.Create, "Pod", conflict), Config{}); !resp.Allowed || resp.Patch != nil || len(resp.Warnings) != 1 {
		t.Errorf("conflicting volume: %+v, want allowed, unpatched, one warning", resp)
	}
}

func hasMount(c corev1.Container) bool {
	for _, m := range c.VolumeMounts {
		if m == Mount() {
			return true
		}
	}
	return false
}

func TestReconcile(t *testing.T) {
	const secretName = "spright-webhook-certs"
	ca := []byte("-----BEGIN CERTIFICATE-----\nCA\n-----END CERTIFICATE-----\n")
	secret := &corev1.Secret{
		ObjectMeta: metav1.ObjectMeta{Name: secretName, Namespace: system.Namespace()},
		Data:       map[string][]byte{certresources.CACert: ca},
	}
	old := "/old"
	mwc := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: WebhookName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: WebhookName,
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				Service: &admissionregistrationv1.ServiceReference{Name: "spright-webhook", Namespace: "spright-system", Path: &old},
			},
		}},
	}
	client := fake.NewSimpleClientset(secret, mwc)
	secrets := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	mwcs := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	secrets.Add(secret)
	mwcs.Add(mwc)
	key := types.NamespacedName{Name: WebhookName}
	r := &reconciler{
		key: key, path: Path, secretName: secretName,
		client:       client,
		mwhLister:    admissionlisters.NewMutatingWebhookConfigurationLister(mwcs),
		secretLister: corelisters.NewSecretLister(secrets),
	}
	ctx := context.Background()

	// Not the leader: skipped.
	if err := r.Reconcile(ctx, WebhookName); !controller.IsSkipKey(err) {
		t.Fatalf("Reconcile as a follower = %v, want a skip", err)
	}
	if err := r.Promote(pkgreconciler.UniversalBucket(), func(pkgreconciler.Bucket, types.NamespacedName) {}); err != nil {
		t.Fatal(err)
	}
	if err := r.Reconcile(ctx, WebhookName); err != nil {
		t.Fatal(err)
	}
	got, err := client.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(ctx, WebhookName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cc := got.Webhooks[0].ClientConfig
	if string(cc.CABundle) != string(ca) || cc.Service.Path == nil || *cc.Service.Path != Path {
		t.Errorf("clientConfig = %+v, want the CA and path %s", cc, Path)
	}

	// In step already: no write.
	mwcs.Update(got)
	client.ClearActions()
	if err := r.Reconcile(ctx, WebhookName); err != nil {
		t.Fatal(err)
	}
	if a := client.Actions(); len(a) != 0 {
		t.Errorf("actions %v, want none", a)
	}

	// No certificate yet, or no configuration: nothing to do, no error.
	secrets.Delete(secret)
	if err := r.Reconcile(ctx, WebhookName); err != nil {
		t.Error(err)
	}
	secrets.Add(secret)
	mwcs.Delete(got)
	if err := r.Reconcile(ctx, WebhookName); err != nil {
		t.Error(err)
	}
}
