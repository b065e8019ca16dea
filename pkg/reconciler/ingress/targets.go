package ingress

import (
	"context"
	"fmt"
	"net/url"
	"sort"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	"knative.dev/networking/pkg/status"
)

// GatewayTargets lists, for Knative's status prober, every ready gateway
// pod with the hosts to probe on each listener.
type GatewayTargets struct {
	// Pods lists the system namespace's pods.
	Pods corev1listers.PodNamespaceLister
}

var _ status.ProbeTargetLister = (*GatewayTargets)(nil)

// ListProbeTargets implements status.ProbeTargetLister: the ExternalIP
// rules' hosts on each pod's external port, the ClusterLocal rules' hosts
// on its cluster-local port. A rule without hosts (a catch-all) has no
// host to probe.
func (g *GatewayTargets) ListProbeTargets(_ context.Context, ing *v1alpha1.Ingress) ([]status.ProbeTarget, error) {
	pods, err := g.Pods.List(labels.SelectorFromSet(labels.Set{GatewayLabelKey: GatewayLabelValue}))
	if err != nil {
		return nil, fmt.Errorf("listing gateway pods: %w", err)
	}
	// Pods by port, per listener (ports may differ during a rollout).
	byPort := map[string]map[string]sets.Set[string]{ExternalPortName: {}, LocalPortName: {}}
	ready := 0
	for _, p := range pods {
		if !podReady(p) {
			continue
		}
		ready++
		for name, ips := range byPort {
			port := containerPort(p, name)
			if port == "" {
				return nil, fmt.Errorf("gateway pod %s has no container port named %q", p.Name, name)
			}
			if ips[port] == nil {
				ips[port] = sets.New[string]()
			}
			ips[port].Insert(p.Status.PodIP)
		}
	}
	if ready == 0 {
		return nil, fmt.Errorf("no ready gateway pod (%s=%s)", GatewayLabelKey, GatewayLabelValue)
	}
	var out []status.ProbeTarget
	for _, rule := range ing.Spec.Rules {
		if len(rule.Hosts) == 0 {
			continue
		}
		listener := ExternalPortName
		if rule.Visibility == v1alpha1.IngressVisibilityClusterLocal {
			listener = LocalPortName
		}
		var urls []*url.URL
		for _, h := range rule.Hosts {
			urls = append(urls, &url.URL{Scheme: "http", Host: h, Path: "/"})
		}
		ports := make([]string, 0, len(byPort[listener]))
		for port := range byPort[listener] {
			ports = append(ports, port)
		}
		sort.Strings(ports)
		for _, port := range ports {
			out = append(out, status.ProbeTarget{PodIPs: byPort[listener][port], PodPort: port, Port: port, URLs: urls})
		}
	}
	return out, nil
}

func podReady(p *corev1.Pod) bool {
	if p.DeletionTimestamp != nil || p.Status.PodIP == "" {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func containerPort(p *corev1.Pod, name string) string {
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.Name == name {
				return strconv.Itoa(int(port.ContainerPort))
			}
		}
	}
	return ""
}
