package podsocket

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"

	"go.uber.org/zap"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	admissionlisters "k8s.io/client-go/listers/admissionregistration/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	kubeclient "knative.dev/pkg/client/injection/kube/client"
	mwhinformer "knative.dev/pkg/client/injection/kube/informers/admissionregistration/v1/mutatingwebhookconfiguration"
	"knative.dev/pkg/configmap"
	"knative.dev/pkg/controller"
	secretinformer "knative.dev/pkg/injection/clients/namespacedkube/informers/core/v1/secret"
	"knative.dev/pkg/logging"
	pkgreconciler "knative.dev/pkg/reconciler"
	"knative.dev/pkg/system"
	"knative.dev/pkg/webhook"
	certresources "knative.dev/pkg/webhook/certificates/resources"
)

const (
	// WebhookName is the MutatingWebhookConfiguration of config/600-webhook.yaml
	// (and the name of its one webhook).
	WebhookName = "podsocket.webhook.spright.dev"

	// Path is where the webhook serves pod admission.
	Path = "/podsocket"
)

// Options are the webhook's settings.
type Options struct {
	// WebhookName is the MutatingWebhookConfiguration whose caBundle (and
	// service path) the controller keeps up to date.
	WebhookName string
	// Path is the HTTP path of the admission handler.
	Path string
	// Config tunes the mutation.
	Config Config
}

// NewController returns a constructor for sharedmain: an admission
// controller serving Patch on opts.Path, whose reconciler writes the CA of
// the webhook's certificate Secret (webhook.Options.SecretName in the system
// namespace, filled by knative.dev/pkg/webhook/certificates) into the
// caBundle of opts.WebhookName.
func NewController(opts Options) func(context.Context, configmap.Watcher) *controller.Impl {
	return func(ctx context.Context, _ configmap.Watcher) *controller.Impl {
		wopts := webhook.GetOptions(ctx)
		if wopts == nil {
			panic("podsocket: the context has no webhook.Options")
		}
		mwhInformer := mwhinformer.Get(ctx)
		secretInformer := secretinformer.Get(ctx)
		key := types.NamespacedName{Name: opts.WebhookName}
		r := &reconciler{
			LeaderAwareFuncs: pkgreconciler.LeaderAwareFuncs{
				PromoteFunc: func(bkt pkgreconciler.Bucket, enq func(pkgreconciler.Bucket, types.NamespacedName)) error {
					enq(bkt, key)
					return nil
				},
			},
			key:          key,
			path:         opts.Path,
			secretName:   wopts.SecretName,
			cfg:          opts.Config,
			client:       kubeclient.Get(ctx),
			mwhLister:    mwhInformer.Lister(),
			secretLister: secretInformer.Lister(),
		}
		const queue = "SprightPodSocketWebhook"
		c := controller.NewContext(ctx, r, controller.ControllerOptions{
			WorkQueueName: queue,
			Logger:        logging.FromContext(ctx).Named(queue),
		})
		mwhInformer.Informer().AddEventHandler(cache.FilteringResourceEventHandler{
			FilterFunc: controller.FilterWithName(opts.WebhookName),
			Handler:    controller.HandleAll(c.Enqueue),
		})
		// A new or rotated certificate changes the caBundle.
		secretInformer.Informer().AddEventHandler(cache.FilteringResourceEventHandler{
			FilterFunc: controller.FilterWithNameAndNamespace(system.Namespace(), wopts.SecretName),
			Handler:    controller.HandleAll(func(interface{}) { c.EnqueueKey(key) }),
		})
		return c
	}
}

type reconciler struct {
	pkgreconciler.LeaderAwareFuncs
	// Admit reads only the request: it may answer before informers sync.
	webhook.StatelessAdmissionImpl

	key        types.NamespacedName
	path       string
	secretName string
	cfg        Config

	client       kubernetes.Interface
	mwhLister    admissionlisters.MutatingWebhookConfigurationLister
	secretLister corelisters.SecretLister
}

var (
	_ controller.Reconciler                = (*reconciler)(nil)
	_ pkgreconciler.LeaderAware            = (*reconciler)(nil)
	_ webhook.AdmissionController          = (*reconciler)(nil)
	_ webhook.StatelessAdmissionController = (*reconciler)(nil)
)

// Path implements webhook.AdmissionController.
func (r *reconciler) Path() string { return r.path }

// Admit implements webhook.AdmissionController: Patch on Pod creation.
func (r *reconciler) Admit(ctx context.Context, req *admissionv1.AdmissionRequest) *admissionv1.AdmissionResponse {
	return Admit(ctx, req, r.cfg)
}

// Admit answers one AdmissionRequest: the Patch of a created Pod, allowed
// unchanged for everything else.
func Admit(ctx context.Context, req *admissionv1.AdmissionRequest, cfg Config) *admissionv1.AdmissionResponse {
	allowed := &admissionv1.AdmissionResponse{Allowed: true}
	if req.Operation != admissionv1.Create || req.SubResource != "" ||
		req.Kind.Group != "" || req.Kind.Kind != "Pod" {
		return allowed
	}
	var pod corev1.Pod
	dec := json.NewDecoder(bytes.NewReader(req.Object.Raw))
	if err := dec.Decode(&pod); err != nil {
		return webhook.MakeErrorStatus("spright: decoding the pod: %v", err)
	}
	ops, warnings := Patch(&pod, cfg)
	allowed.Warnings = warnings
	logger := logging.FromContext(ctx)
	for _, w := range warnings {
		logger.Warn(w)
	}
	if len(ops) == 0 {
		return allowed
	}
	raw, err := json.Marshal(ops)
	if err != nil {
		return webhook.MakeErrorStatus("spright: encoding the patch: %v", err)
	}
	pt := admissionv1.PatchTypeJSONPatch
	allowed.Patch, allowed.PatchType = raw, &pt
	logger.Infof("spright: mounting %s into %s of revision %s", HostPath, QueueContainerName, pod.Labels["serving.knative.dev/revision"])
	return allowed
}

// Reconcile implements controller.Reconciler: the webhook configuration
// trusts the CA of the current certificate and calls this server's path.
func (r *reconciler) Reconcile(ctx context.Context, key string) error {
	if !r.IsLeaderFor(r.key) {
		return controller.NewSkipKey(key)
	}
	logger := logging.FromContext(ctx)
	secret, err := r.secretLister.Secrets(system.Namespace()).Get(r.secretName)
	if apierrors.IsNotFound(err) {
		// The certificates controller fills it; its events requeue us.
		logger.Infof("certificate secret %s/%s not found yet", system.Namespace(), r.secretName)
		return nil
	} else if err != nil {
		return err
	}
	ca := secret.Data[certresources.CACert]
	if len(ca) == 0 {
		logger.Infof("certificate secret %s/%s has no %s yet", system.Namespace(), r.secretName, certresources.CACert)
		return nil
	}
	current, err := r.mwhLister.Get(r.key.Name)
	if apierrors.IsNotFound(err) {
		logger.Warnf("MutatingWebhookConfiguration %s not found: Knative revision pods do not get the SPRIGHT control socket", r.key.Name)
		return nil
	} else if err != nil {
		return err
	}
	want := current.DeepCopy()
	changed := false
	for i := range want.Webhooks {
		cc := &want.Webhooks[i].ClientConfig
		if !bytes.Equal(cc.CABundle, ca) {
			cc.CABundle = ca
			changed = true
		}
		if cc.Service != nil && (cc.Service.Path == nil || *cc.Service.Path != r.path) {
			p := r.path
			cc.Service.Path = &p
			changed = true
		}
	}
	if !changed {
		return nil
	}
	if _, err := r.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, want, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("updating MutatingWebhookConfiguration %s: %w", r.key.Name, err)
	}
	logger.Infow("updated the webhook's caBundle and path", zap.String("webhook", r.key.Name))
	return nil
}
