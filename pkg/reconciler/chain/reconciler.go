package chain

import (
	"context"
	"fmt"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	netapi "knative.dev/networking/pkg/apis/networking"
	netclientset "knative.dev/networking/pkg/client/clientset/versioned"
	netlisters "knative.dev/networking/pkg/client/listers/networking/v1alpha1"
	"knative.dev/pkg/apis"
	"knative.dev/pkg/controller"
	"knative.dev/pkg/logging"
	pkgreconciler "knative.dev/pkg/reconciler"
	"knative.dev/serving/pkg/apis/serving"
	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
	servingclientset "knative.dev/serving/pkg/client/clientset/versioned"
	servinglisters "knative.dev/serving/pkg/client/listers/serving/v1"

	"github.com/spright-dev/spright/pkg/apis/spright/v1alpha1"
)

// Reconciler reconciles one chain per key ("namespace/chain").
type Reconciler struct {
	// Only the leader for a key writes (knative.dev/pkg leader election);
	// NewController enqueues every chain when a bucket is promoted.
	pkgreconciler.LeaderAwareFuncs

	Dynamic    dynamic.Interface
	Kube       kubernetes.Interface
	Serving    servingclientset.Interface
	Networking netclientset.Interface

	ServiceLister    servinglisters.ServiceLister
	RevisionLister   servinglisters.RevisionLister
	ChainLister      cache.GenericLister
	K8sServiceLister corev1listers.ServiceLister
	IngressLister    netlisters.IngressLister

	// Config returns the current config-spright.
	Config func() *Config
	// Recorder records events when the context carries none.
	Recorder record.EventRecorder
}

func (r *Reconciler) recorder(ctx context.Context) record.EventRecorder {
	if rec := controller.GetEventRecorder(ctx); rec != nil {
		return rec
	}
	return r.Recorder
}

var _ controller.Reconciler = (*Reconciler)(nil)

// Reconcile implements controller.Reconciler.
func (r *Reconciler) Reconcile(ctx context.Context, key string) error {
	ns, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		logging.FromContext(ctx).Errorw("invalid resource key", "key", key)
		return nil // a bad key will never become good
	}
	if !r.IsLeaderFor(types.NamespacedName{Namespace: ns, Name: name}) {
		return nil
	}
	services, err := r.ServiceLister.Services(ns).List(labels.Everything())
	if err != nil {
		return fmt.Errorf("listing services in %s: %w", ns, err)
	}
	sort.Slice(services, func(i, j int) bool { return services[i].Name < services[j].Name })
	if name == "" {
		r.warnOrphans(ctx, services)
		return nil
	}
	return r.reconcileChain(ctx, ns, name, services)
}

func (r *Reconciler) warnOrphans(ctx context.Context, services []*servingv1.Service) {
	rec := r.recorder(ctx)
	orphans := Orphans(services)
	for _, s := range services {
		if err, ok := orphans[s]; ok {
			rec.Eventf(s, corev1.EventTypeWarning, ReasonInvalidAnnotations, "%v", err)
		}
	}
}

func (r *Reconciler) reconcileChain(ctx context.Context, ns, name string, services []*servingv1.Service) error {
	cfg := r.Config()
	rec := r.recorder(ctx)
	members := MembersOf(name, services)

	existing, err := r.getChain(ns, name)
	if err != nil {
		return err
	}
	if len(members) == 0 {
		return r.deleteChain(ctx, ns, name, existing)
	}

	revisions := map[string][]string{}
	for _, m := range members {
		if m.Err != nil {
			rec.Eventf(m.Service, corev1.EventTypeWarning, ReasonInvalidAnnotations, "chain %s: %v", name, m.Err)
			continue
		}
		if NeedsMinScale(m.Service, cfg) {
			if _, err := r.Serving.ServingV1().Services(ns).Patch(ctx, m.Service.Name, types.MergePatchType, MinScalePatch(cfg), metav1.PatchOptions{}); err != nil {
				return fmt.Errorf("defaulting min-scale of %s/%s: %w", ns, m.Service.Name, err)
			}
			rec.Eventf(m.Service, corev1.EventTypeNormal, ReasonMinScaleDefaulted,
				"member of chain %s: set autoscaling.knative.dev/min-scale=%s (a warm SPRIGHT function costs no CPU)", name, cfg.DefaultMinScale)
		}
		revs, err := r.RevisionLister.Revisions(ns).List(labels.SelectorFromSet(labels.Set{serving.ServiceLabelKey: m.Service.Name}))
		if err != nil {
			return fmt.Errorf("listing revisions of %s/%s: %w", ns, m.Service.Name, err)
		}
		for _, rv := range revs {
			revisions[m.Service.Name] = append(revisions[m.Service.Name], rv.Name)
		}
	}

	verdict := MakeChainSpec(name, members, revisions)
	desired := existing.DeepCopy()
	if desired == nil {
		desired = &v1alpha1.Chain{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: chainLabels(name)}}
	}
	desired.TypeMeta = metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: v1alpha1.Kind}
	if verdict.Reason == "" {
		desired.Spec = verdict.Spec
	} // else keep the last valid spec: gateways go on serving it

	chain, err := r.applyChain(ctx, existing, desired)
	if err != nil {
		return err
	}

	status := desired.Status.DeepCopy()
	status.InitializeConditions()
	status.ObservedGeneration = chain.Generation
	if verdict.Reason == "" {
		status.MarkValid()
	}
	if chain.Spec.Entry == "" {
		status.MarkNotRouted(ReasonNotValid, "the chain has never been valid, so it is not routed")
	} else if err := r.route(ctx, chain, cfg); err != nil {
		status.MarkNotRouted(ReasonRouteFailed, "%v", err)
		rec.Eventf(chain, corev1.EventTypeWarning, ReasonRouteFailed, "%v", err)
	} else {
		status.MarkRouted()
		status.Address = Address(ns, name)
		status.URL = nil
		if h := ExternalHost(ns, name, cfg); h != "" {
			status.URL = &apis.URL{Scheme: "http", Host: h}
		}
	}
	if verdict.Reason != "" {
		// Marked last, so that Ready carries the validation fault: the one
		// to fix first. An event when the chain is new or was valid.
		status.MarkInvalid(verdict.Reason, "%s", verdict.Msg)
		if existing == nil || existing.Status.GetCondition(v1alpha1.ChainConditionValid).IsTrue() {
			rec.Eventf(chain, corev1.EventTypeWarning, verdict.Reason, "%s", verdict.Msg)
		}
	}
	return r.updateStatus(ctx, chain, status)
}

func (r *Reconciler) getChain(ns, name string) (*v1alpha1.Chain, error) {
	obj, err := r.ChainLister.ByNamespace(ns).Get(name)
	if apierrs.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("getting chain %s/%s: %w", ns, name, err)
	}
	u, ok := obj.(*unstructured.Unstructured)
	if !ok {
		return nil, fmt.Errorf("chain %s/%s: lister returned %T", ns, name, obj)
	}
	return v1alpha1.FromUnstructured(u)
}

// applyChain creates the Chain or updates its spec; it returns the object
// as the API server has it.
func (r *Reconciler) applyChain(ctx context.Context, existing, desired *v1alpha1.Chain) (*v1alpha1.Chain, error) {
	client := r.Dynamic.Resource(v1alpha1.ChainResource).Namespace(desired.Namespace)
	if existing == nil {
		u, err := v1alpha1.ToUnstructured(&v1alpha1.Chain{TypeMeta: desired.TypeMeta, ObjectMeta: desired.ObjectMeta, Spec: desired.Spec})
		if err != nil {
			return nil, err
		}
		got, err := client.Create(ctx, u, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("creating chain %s/%s: %w", desired.Namespace, desired.Name, err)
		}
		return v1alpha1.FromUnstructured(got)
	}
	if equality.Semantic.DeepEqual(existing.Spec, desired.Spec) {
		return existing, nil
	}
	upd := existing.DeepCopy()
	upd.TypeMeta = desired.TypeMeta
	upd.Spec = desired.Spec
	u, err := v1alpha1.ToUnstructured(upd)
	if err != nil {
		return nil, err
	}
	got, err := client.Update(ctx, u, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("updating chain %s/%s: %w", desired.Namespace, desired.Name, err)
	}
	return v1alpha1.FromUnstructured(got)
}

func (r *Reconciler) updateStatus(ctx context.Context, chain *v1alpha1.Chain, status *v1alpha1.ChainStatus) error {
	if equality.Semantic.DeepEqual(&chain.Status, status) {
		return nil
	}
	upd := chain.DeepCopy()
	upd.TypeMeta = metav1.TypeMeta{APIVersion: v1alpha1.SchemeGroupVersion.String(), Kind: v1alpha1.Kind}
	upd.Status = *status
	u, err := v1alpha1.ToUnstructured(upd)
	if err != nil {
		return err
	}
	if _, err := r.Dynamic.Resource(v1alpha1.ChainResource).Namespace(chain.Namespace).UpdateStatus(ctx, u, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("updating status of chain %s/%s: %w", chain.Namespace, chain.Name, err)
	}
	return nil
}

// route makes the chain's host lead to the gateways.
func (r *Reconciler) route(ctx context.Context, chain *v1alpha1.Chain, cfg *Config) error {
	want := MakeService(chain, cfg)
	have, err := r.K8sServiceLister.Services(chain.Namespace).Get(want.Name)
	switch {
	case apierrs.IsNotFound(err):
		if _, err := r.Kube.CoreV1().Services(chain.Namespace).Create(ctx, want, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating service %s/%s: %w", want.Namespace, want.Name, err)
		}
	case err != nil:
		return fmt.Errorf("getting service %s/%s: %w", want.Namespace, want.Name, err)
	case !metav1.IsControlledBy(have, chain):
		return fmt.Errorf("service %s/%s exists and is not owned by chain %s", want.Namespace, want.Name, chain.Name)
	case !equality.Semantic.DeepEqual(have.Spec.ExternalName, want.Spec.ExternalName) || !equality.Semantic.DeepEqual(have.Spec.Ports, want.Spec.Ports) || have.Spec.Type != want.Spec.Type:
		upd := have.DeepCopy()
		upd.Spec.Type, upd.Spec.ExternalName, upd.Spec.Ports = want.Spec.Type, want.Spec.ExternalName, want.Spec.Ports
		if _, err := r.Kube.CoreV1().Services(chain.Namespace).Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("updating service %s/%s: %w", want.Namespace, want.Name, err)
		}
	}

	wantIng := MakeIngress(chain, cfg)
	haveIng, err := r.IngressLister.Ingresses(chain.Namespace).Get(ServiceName(chain.Name))
	switch {
	case apierrs.IsNotFound(err):
		if wantIng == nil {
			return nil
		}
		if _, err := r.Networking.NetworkingV1alpha1().Ingresses(chain.Namespace).Create(ctx, wantIng, metav1.CreateOptions{}); err != nil {
			return fmt.Errorf("creating ingress %s/%s: %w", wantIng.Namespace, wantIng.Name, err)
		}
	case err != nil:
		return fmt.Errorf("getting ingress %s/%s: %w", chain.Namespace, ServiceName(chain.Name), err)
	case !metav1.IsControlledBy(haveIng, chain):
		return fmt.Errorf("ingress %s/%s exists and is not owned by chain %s", haveIng.Namespace, haveIng.Name, chain.Name)
	case wantIng == nil:
		if err := r.Networking.NetworkingV1alpha1().Ingresses(chain.Namespace).Delete(ctx, haveIng.Name, metav1.DeleteOptions{}); err != nil && !apierrs.IsNotFound(err) {
			return fmt.Errorf("deleting ingress %s/%s: %w", haveIng.Namespace, haveIng.Name, err)
		}
	case !equality.Semantic.DeepEqual(haveIng.Spec, wantIng.Spec) || haveIng.Annotations[netapi.IngressClassAnnotationKey] != wantIng.Annotations[netapi.IngressClassAnnotationKey]:
		upd := haveIng.DeepCopy()
		upd.Spec = wantIng.Spec
		if upd.Annotations == nil {
			upd.Annotations = map[string]string{}
		}
		upd.Annotations[netapi.IngressClassAnnotationKey] = wantIng.Annotations[netapi.IngressClassAnnotationKey]
		if _, err := r.Networking.NetworkingV1alpha1().Ingresses(chain.Namespace).Update(ctx, upd, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("updating ingress %s/%s: %w", upd.Namespace, upd.Name, err)
		}
	}
	return nil
}

// deleteChain removes a chain with no members left, and what routes to it
// (owner references would let the garbage collector do the last two; doing
// it here does not depend on one running).
func (r *Reconciler) deleteChain(ctx context.Context, ns, name string, existing *v1alpha1.Chain) error {
	if existing == nil {
		return nil
	}
	if ing, err := r.IngressLister.Ingresses(ns).Get(ServiceName(name)); err == nil && metav1.IsControlledBy(ing, existing) {
		if err := r.Networking.NetworkingV1alpha1().Ingresses(ns).Delete(ctx, ing.Name, metav1.DeleteOptions{}); err != nil && !apierrs.IsNotFound(err) {
			return fmt.Errorf("deleting ingress %s/%s: %w", ns, ing.Name, err)
		}
	}
	if svc, err := r.K8sServiceLister.Services(ns).Get(ServiceName(name)); err == nil && metav1.IsControlledBy(svc, existing) {
		if err := r.Kube.CoreV1().Services(ns).Delete(ctx, svc.Name, metav1.DeleteOptions{}); err != nil && !apierrs.IsNotFound(err) {
			return fmt.Errorf("deleting service %s/%s: %w", ns, svc.Name, err)
		}
	}
	if err := r.Dynamic.Resource(v1alpha1.ChainResource).Namespace(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrs.IsNotFound(err) {
		return fmt.Errorf("deleting chain %s/%s: %w", ns, name, err)
	}
	return nil
}

// ChainKeys returns the work-queue keys a Service change concerns: the chain
// it joins now, the chains that list it (it may have left them), and the
// namespace key when it carries spright.dev annotations without a chain.
func ChainKeys(s *servingv1.Service, chains []*v1alpha1.Chain) []string {
	var keys []string
	seen := map[string]bool{}
	add := func(k string) {
		if !seen[k] {
			seen[k] = true
			keys = append(keys, k)
		}
	}
	if c := ChainOf(s); c != "" {
		add(s.Namespace + "/" + c)
	} else {
		for k := range s.Spec.Template.Annotations {
			if strings.HasPrefix(k, "spright.dev/") {
				add(s.Namespace + "/")
				break
			}
		}
	}
	for _, c := range chains {
		if c.Namespace != s.Namespace {
			continue
		}
		for _, f := range c.Spec.Functions {
			if f.Name == s.Name {
				add(c.Namespace + "/" + c.Name)
			}
		}
	}
	return keys
}
