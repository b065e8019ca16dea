package ingress

import (
	"context"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
)

const systemNS = "spright-system"

func pod(name, ip string, ready bool, ext, local int32) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: systemNS, Name: name, Labels: map[string]string{GatewayLabelKey: GatewayLabelValue}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "gateway", Ports: []corev1.ContainerPort{
			{Name: ExternalPortName, ContainerPort: ext}, {Name: "metrics", ContainerPort: 9091}, {Name: LocalPortName, ContainerPort: local},
		}}}},
		Status: corev1.PodStatus{PodIP: ip},
	}
	cond := corev1.ConditionFalse
	if ready {
		cond = corev1.ConditionTrue
	}
	p.Status.Conditions = []corev1.PodCondition{{Type: corev1.PodReady, Status: cond}}
	return p
}

func lister(t *testing.T, pods ...*corev1.Pod) *GatewayTargets {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	for _, p := range pods {
		if err := idx.Add(p); err != nil {
			t.Fatal(err)
		}
	}
	return &GatewayTargets{Pods: corev1listers.NewPodLister(idx).Pods(systemNS)}
}

func TestListProbeTargets(t *testing.T) {
	deleting := pod("deleting", "10.0.0.9", true, 8080, 8081)
	deleting.DeletionTimestamp = &metav1.Time{}
	other := pod("other-app", "10.0.0.8", true, 8080, 8081)
	other.Labels = map[string]string{GatewayLabelKey: "something-else"}
	g := lister(t,
		pod("a", "10.0.0.1", true, 8080, 8081),
		pod("b", "10.0.0.2", true, 8080, 8081),
		pod("rolled", "10.0.0.3", true, 8090, 8091), // mid-rollout: other ports
		pod("starting", "10.0.0.4", false, 8080, 8081),
		pod("no-ip", "", true, 8080, 8081),
		deleting, other,
	)
	i := ing("hello", IngressClass)
	i.Spec.Rules = append(i.Spec.Rules,
		v1alpha1.IngressRule{Hosts: []string{"hello.default", "hello.default.svc.cluster.local"}, Visibility: v1alpha1.IngressVisibilityClusterLocal, HTTP: i.Spec.Rules[0].HTTP},
		v1alpha1.IngressRule{Visibility: v1alpha1.IngressVisibilityClusterLocal, HTTP: i.Spec.Rules[0].HTTP}, // catch-all: nothing to probe
	)
	got, err := g.ListProbeTargets(context.Background(), i)
	if err != nil {
		t.Fatal(err)
	}
	type flat struct {
		IPs  []string
		Port string
		URLs []string
	}
	var gotFlat []flat
	for _, tg := range got {
		f := flat{IPs: sets.List(tg.PodIPs), Port: tg.PodPort}
		for _, u := range tg.URLs {
			f.URLs = append(f.URLs, u.String())
		}
		gotFlat = append(gotFlat, f)
	}
	want := []flat{
		{IPs: []string{"10.0.0.1", "10.0.0.2"}, Port: "8080", URLs: []string{"http://hello.default.example.com/"}},
		{IPs: []string{"10.0.0.3"}, Port: "8090", URLs: []string{"http://hello.default.example.com/"}},
		{IPs: []string{"10.0.0.1", "10.0.0.2"}, Port: "8081", URLs: []string{"http://hello.default/", "http://hello.default.svc.cluster.local/"}},
		{IPs: []string{"10.0.0.3"}, Port: "8091", URLs: []string{"http://hello.default/", "http://hello.default.svc.cluster.local/"}},
	}
	if d := cmp.Diff(want, gotFlat); d != "" {
		t.Errorf("targets (-want +got):\n%s", d)
	}
}

func TestListProbeTargetsErrors(t *testing.T) {
	if _, err := lister(t, pod("starting", "10.0.0.4", false, 8080, 8081)).ListProbeTargets(context.Background(), ing("x", IngressClass)); err == nil || !strings.Contains(err.Error(), "no ready gateway pod") {
		t.Errorf("no ready pod: %v", err)
	}
	noLocal := pod("old", "10.0.0.5", true, 8080, 8081)
	noLocal.Spec.Containers[0].Ports = noLocal.Spec.Containers[0].Ports[:2]
	if _, err := lister(t, noLocal).ListProbeTargets(context.Background(), ing("x", IngressClass)); err == nil || !strings.Contains(err.Error(), `gateway pod old has no container port named "http-local"`) {
		t.Errorf("pod without the local port: %v", err)
	}
}
