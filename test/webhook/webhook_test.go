// Package webhook_test runs SPRIGHT's pod webhook (cmd/webhook's
// controllers under knative.dev/pkg's sharedmain, as its ServiceAccount)
// against a real kube-apiserver + etcd (test/envtest) with
// config/600-webhook.yaml applied, and lets the API server call it.
//
// What is not real here: the API server reaches the webhook at
// https://localhost:<port>/podsocket instead of through the
// spright-webhook Service (there is no kube-proxy or endpoint routing), so
// the test swaps the configuration's clientConfig.service for that URL and
// runs the webhook with the service name "localhost", which makes
// knative.dev/pkg issue the certificate for the name the API server dials.
// Pods are only admitted and stored: no kubelet runs them.
package webhook_test

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"knative.dev/pkg/injection/sharedmain"
	"knative.dev/pkg/signals"
	"knative.dev/pkg/webhook"
	certresources "knative.dev/pkg/webhook/certificates/resources"

	"github.com/spright-dev/spright/pkg/webhook/podsocket"
	"github.com/spright-dev/spright/test/envtest"
)

const (
	systemNS  = "spright-system"
	webhookSA = "system:serviceaccount:spright-system:spright-webhook"
	gid       = int64(2360)
)

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func eventually(t *testing.T, d time.Duration, what string, f func() error) {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		err := f()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, d, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// knativePod is a pod as Knative Serving 1.15 creates it for a revision
// (pkg/reconciler/revision/resources): its labels, the user container, and
// queue-proxy with Knative's fixed security context.
func knativePod(ns, rev string) *corev1.Pod {
	f := false
	tr := true
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			GenerateName: rev + "-deployment-",
			Namespace:    ns,
			Labels: map[string]string{
				"serving.knative.dev/revision":      rev,
				"serving.knative.dev/revisionUID":   "6f1c2d3e-4a5b-4c6d-8e9f-0a1b2c3d4e5f",
				"serving.knative.dev/service":       "hello",
				"serving.knative.dev/configuration": "hello",
				"app":                               rev,
			},
			Annotations: map[string]string{"spright.dev/chain": "shop"},
		},
		Spec: corev1.PodSpec{
			Containers: []corev1.Container{{
				Name:  "user-container",
				Image: "example.com/hello",
				Ports: []corev1.ContainerPort{{Name: "user-port", ContainerPort: 8080}},
				Env:   []corev1.EnvVar{{Name: "PORT", Value: "8080"}},
			}, {
				Name:  "queue-proxy",
				Image: "example.com/eproxy",
				Ports: []corev1.ContainerPort{
					{Name: "http-queueadm", ContainerPort: 8022},
					{Name: "http-autometric", ContainerPort: 9090},
					{Name: "queue-port", ContainerPort: 8012},
				},
				Env: []corev1.EnvVar{
					{Name: "SERVING_REVISION", Value: rev},
					{Name: "QUEUE_SERVING_PORT", Value: "8012"},
					{Name: "USER_PORT", Value: "8080"},
				},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: &f,
					ReadOnlyRootFilesystem:   &tr,
					RunAsNonRoot:             &tr,
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
					SeccompProfile:           &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
				},
			}},
			EnableServiceLinks: &f,
		},
	}
}

func container(p *corev1.Pod, name string) *corev1.Container {
	for i := range p.Spec.Containers {
		if p.Spec.Containers[i].Name == name {
			return &p.Spec.Containers[i]
		}
	}
	return nil
}

func hasSprightVolume(p *corev1.Pod) bool {
	for _, v := range p.Spec.Volumes {
		if v.Name == podsocket.VolumeName {
			return true
		}
	}
	return false
}

func mountsSpright(c *corev1.Container) bool {
	for _, m := range c.VolumeMounts {
		if m.Name == podsocket.VolumeName || m.MountPath == podsocket.MountPath {
			return true
		}
	}
	return false
}

func TestPodWebhookOnRealAPIServer(t *testing.T) {
	env := envtest.Start(t)
	bg := context.Background()
	kc := kubernetes.NewForConfigOrDie(env.Config)

	// config/600-webhook.yaml passes a server-side dry run (its namespace
	// comes from 100-namespace.yaml), then is applied for real.
	env.Apply(t, "../../config/100-namespace.yaml")
	env.DryRunServer(t, "../../config/600-webhook.yaml")
	env.Apply(t, "../../config/400-config.yaml", "../../config/600-webhook.yaml")

	// Point the configuration at the in-process server.
	port := freePort(t)
	url := "https://localhost:" + strconv.Itoa(port) + podsocket.Path
	mwc, err := kc.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(bg, podsocket.WebhookName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if len(mwc.Webhooks) != 1 || len(mwc.Webhooks[0].ClientConfig.CABundle) != 0 {
		t.Fatalf("600-webhook.yaml: want one webhook without caBundle, got %+v", mwc.Webhooks)
	}
	if s := mwc.Webhooks[0].ClientConfig.Service; s == nil || s.Name != "spright-webhook" || s.Namespace != systemNS {
		t.Fatalf("600-webhook.yaml: clientConfig.service = %+v", s)
	}
	mwc.Webhooks[0].ClientConfig.Service = nil
	mwc.Webhooks[0].ClientConfig.URL = &url
	if _, err := kc.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(bg, mwc, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	// The webhook, in-process, as its ServiceAccount: the RBAC of
	// 600-webhook.yaml is what it gets, and the environment of its
	// Deployment, except the service name and port (see the package comment).
	dep, err := kc.AppsV1().Deployments(systemNS).Get(bg, "spright-webhook", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range dep.Spec.Template.Spec.Containers[0].Env {
		if e.ValueFrom == nil {
			t.Setenv(e.Name, e.Value)
		}
	}
	t.Setenv("SYSTEM_NAMESPACE", systemNS)
	t.Setenv(podsocket.EnvServiceName, "localhost")
	t.Setenv("WEBHOOK_PORT", strconv.Itoa(port))
	t.Setenv("PROFILING_PORT", strconv.Itoa(freePort(t)))
	t.Setenv("METRICS_PROMETHEUS_PORT", strconv.Itoa(freePort(t)))
	if got := os.Getenv(podsocket.EnvControlGID); got != strconv.FormatInt(gid, 10) {
		t.Fatalf("600-webhook.yaml: %s = %q, want %d", podsocket.EnvControlGID, got, gid)
	}
	opts, err := podsocket.OptionsFromEnv()
	if err != nil {
		t.Fatal(err)
	}
	wopts := podsocket.WebhookOptionsFromEnv()
	wopts.GracePeriod = time.Second // drain on shutdown: 45 s by default
	if wopts.SecretName != "spright-webhook-certs" || wopts.ServiceName != "localhost" || wopts.Port != port {
		t.Fatalf("webhook options %+v", wopts)
	}
	cfg := env.ConfigFor(webhookSA, "system:serviceaccounts", "system:serviceaccounts:"+systemNS)
	ctx, cancel := context.WithCancel(signals.NewContext())
	ctx = webhook.WithOptions(ctx, wopts)
	done := make(chan struct{})
	go func() {
		defer close(done)
		sharedmain.MainWithConfig(sharedmain.WithHealthProbesDisabled(ctx), "spright-webhook", cfg, podsocket.Controllers(opts)...)
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			t.Error("webhook did not stop within 30s")
		}
	})

	// The certificates controller fills the Secret; the reconciler copies
	// its CA into the configuration.
	eventually(t, 60*time.Second, "caBundle injected", func() error {
		s, err := kc.CoreV1().Secrets(systemNS).Get(bg, podsocket.DefaultSecretName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		ca := s.Data[certresources.CACert]
		if len(ca) == 0 {
			return fmt.Errorf("secret has no %s", certresources.CACert)
		}
		m, err := kc.AdmissionregistrationV1().MutatingWebhookConfigurations().Get(bg, podsocket.WebhookName, metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !bytes.Equal(m.Webhooks[0].ClientConfig.CABundle, ca) {
			return fmt.Errorf("caBundle is not the secret's CA")
		}
		return nil
	})

	// envtest has no controller manager: make the "default" ServiceAccounts
	// the ServiceAccount admission plugin wants.
	mkNS := func(name string, labels map[string]string) {
		t.Helper()
		if name != systemNS {
			if _, err := kc.CoreV1().Namespaces().Create(bg, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}, metav1.CreateOptions{}); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := kc.CoreV1().ServiceAccounts(name).Create(bg, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: "default"}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	mkNS("shop", nil)
	mkNS(systemNS, nil)

	// A Knative revision pod, stored by the API server after admission.
	// The first create may race the webhook's TLS server coming up (with
	// failurePolicy Fail it is then refused, as for a ReplicaSet, which
	// retries).
	var created *corev1.Pod
	eventually(t, 30*time.Second, "revision pod created", func() error {
		p, err := kc.CoreV1().Pods("shop").Create(bg, knativePod("shop", "hello-00001"), metav1.CreateOptions{})
		created = p
		return err
	})
	got, err := kc.CoreV1().Pods("shop").Get(bg, created.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	var vol *corev1.Volume
	for i := range got.Spec.Volumes {
		if got.Spec.Volumes[i].Name == podsocket.VolumeName {
			vol = &got.Spec.Volumes[i]
		}
	}
	if vol == nil || vol.HostPath == nil || vol.HostPath.Path != "/run/spright" ||
		vol.HostPath.Type == nil || *vol.HostPath.Type != corev1.HostPathDirectory {
		t.Fatalf("volume %s = %+v, want hostPath /run/spright (Directory); volumes %+v", podsocket.VolumeName, vol, got.Spec.Volumes)
	}
	qp := container(got, "queue-proxy")
	var mount *corev1.VolumeMount
	for i := range qp.VolumeMounts {
		if qp.VolumeMounts[i].Name == podsocket.VolumeName {
			mount = &qp.VolumeMounts[i]
		}
	}
	if mount == nil || mount.MountPath != "/run/spright" || !mount.ReadOnly {
		t.Fatalf("queue-proxy mounts %+v, want %s read-only at /run/spright", qp.VolumeMounts, podsocket.VolumeName)
	}
	// The ServiceAccount plugin's token mount, added before the webhook ran,
	// is still there: the patch appends.
	if len(qp.VolumeMounts) < 2 {
		t.Errorf("queue-proxy mounts %+v: want the token mount too", qp.VolumeMounts)
	}
	if uc := container(got, "user-container"); mountsSpright(uc) {
		t.Errorf("user-container mounts /run/spright: %+v", uc.VolumeMounts)
	}
	if sc := got.Spec.SecurityContext; sc == nil || len(sc.SupplementalGroups) != 1 || sc.SupplementalGroups[0] != gid {
		t.Errorf("pod securityContext %+v, want supplementalGroups [%d]", sc, gid)
	}
	if qsc := qp.SecurityContext; qsc == nil || qsc.RunAsNonRoot == nil || !*qsc.RunAsNonRoot || qsc.Capabilities == nil || len(qsc.Capabilities.Add) != 0 {
		t.Errorf("queue-proxy securityContext changed: %+v", qsc)
	}

	// Not a Knative pod: untouched (objectSelector; the webhook would also
	// leave it alone).
	plain := knativePod("shop", "x")
	plain.Labels = map[string]string{"app": "plain"}
	p, err := kc.CoreV1().Pods("shop").Create(bg, plain, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if hasSprightVolume(p) || mountsSpright(container(p, "queue-proxy")) {
		t.Errorf("non-Knative pod mutated: %+v", p.Spec)
	}
	if p.Spec.SecurityContext != nil && len(p.Spec.SecurityContext.SupplementalGroups) != 0 {
		t.Errorf("non-Knative pod got supplementalGroups %v", p.Spec.SecurityContext.SupplementalGroups)
	}

	// A revision-labelled pod in an excluded namespace: untouched.
	p, err = kc.CoreV1().Pods(systemNS).Create(bg, knativePod(systemNS, "sys-00001"), metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if hasSprightVolume(p) {
		t.Errorf("pod in %s mutated: %+v", systemNS, p.Spec.Volumes)
	}

	// Known limit, checked so that it stays documented: Pod Security
	// "baseline" (and "restricted") forbid hostPath volumes, and that
	// validation runs after the mutation, so revision pods in such a
	// namespace are refused.
	mkNS("baseline", map[string]string{"pod-security.kubernetes.io/enforce": "baseline"})
	_, err = kc.CoreV1().Pods("baseline").Create(bg, knativePod("baseline", "hello-00001"), metav1.CreateOptions{})
	if !apierrs.IsForbidden(err) || !strings.Contains(err.Error(), "hostPath") {
		t.Errorf("revision pod in a baseline namespace: err = %v, want Forbidden for hostPath", err)
	}

	// Re-admitting the stored pod (what a second pass would see) changes
	// nothing: the mutation is idempotent against what the API server made.
	if ops, _ := podsocket.Patch(got, opts.Config); len(ops) != 0 {
		t.Errorf("Patch of the admitted pod = %+v, want none", ops)
	}
}
