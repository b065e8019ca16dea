package ingress

import (
	"fmt"
	"math/rand/v2"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/pkg/network"

	"github.com/spright-dev/spright/pkg/ingressconfig"
)

// ServiceResolver resolves backends through a Service lister and, when
// set, the Services' EndpointSlices.
type ServiceResolver struct {
	Services corev1listers.ServiceLister
	// EndpointSlices, indexed by EndpointSliceIndexers: a request goes to
	// one of the Service's ready endpoints, picked at random, instead of
	// through its ClusterIP (as Envoy-based ingresses do). kube-proxy
	// programs a new Service's ClusterIP some time after its endpoints are
	// published, so a Service made just before its KIngress became Ready
	// could refuse the first requests. With no ready endpoint known the
	// ClusterIP is used. Nil: always the ClusterIP.
	EndpointSlices cache.Indexer
	// ClusterDomain names headless Services (default: the pod's, from
	// /etc/resolv.conf, else cluster.local).
	ClusterDomain string
}

// EndpointSliceIndex indexes EndpointSlices by "namespace/service".
const EndpointSliceIndex = "service"

// EndpointSliceIndexers are the indexers ServiceResolver.EndpointSlices
// needs.
func EndpointSliceIndexers() cache.Indexers {
	return cache.Indexers{EndpointSliceIndex: func(obj interface{}) ([]string, error) {
		es, ok := obj.(*discoveryv1.EndpointSlice)
		if !ok {
			return nil, nil
		}
		svc := es.Labels[discoveryv1.LabelServiceName]
		if svc == "" {
			return nil, nil
		}
		return []string{es.Namespace + "/" + svc}, nil
	}}
}

// endpoint picks one ready endpoint of the Service port sp at random.
func (s *ServiceResolver) endpoint(svc *corev1.Service, sp *corev1.ServicePort) (string, bool) {
	objs, err := s.EndpointSlices.ByIndex(EndpointSliceIndex, svc.Namespace+"/"+svc.Name)
	if err != nil || len(objs) == 0 {
		return "", false
	}
	type ep struct {
		addr string
		port int32
	}
	var ready []ep
	for _, o := range objs {
		es, ok := o.(*discoveryv1.EndpointSlice)
		if !ok || es.AddressType == discoveryv1.AddressTypeFQDN {
			continue
		}
		port := int32(-1)
		for _, p := range es.Ports {
			name := ""
			if p.Name != nil {
				name = *p.Name
			}
			if name == sp.Name && p.Port != nil {
				port = *p.Port
				break
			}
		}
		if port < 0 {
			continue
		}
		for _, e := range es.Endpoints {
			if (e.Conditions.Ready != nil && !*e.Conditions.Ready) || len(e.Addresses) == 0 {
				continue
			}
			ready = append(ready, ep{e.Addresses[0], port})
		}
	}
	if len(ready) == 0 {
		return "", false
	}
	e := ready[rand.IntN(len(ready))]
	return net.JoinHostPort(e.addr, strconv.Itoa(int(e.port))), true
}

// Resolve returns one of the Service's ready endpoints (EndpointSlices
// set), else its ClusterIP and port; an ExternalName Service's name; a
// headless Service's DNS name and target port.
func (s *ServiceResolver) Resolve(b ingressconfig.Backend) (Target, error) {
	svc, err := s.Services.Services(b.Namespace).Get(b.Name)
	if apierrs.IsNotFound(err) {
		return Target{}, fmt.Errorf("service %s/%s does not exist", b.Namespace, b.Name)
	} else if err != nil {
		return Target{}, fmt.Errorf("service %s/%s: %w", b.Namespace, b.Name, err)
	}
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		p := &svc.Spec.Ports[i]
		if (b.Port.Type == intstr.Int && p.Port == b.Port.IntVal) || (b.Port.Type == intstr.String && p.Name == b.Port.StrVal) {
			sp = p
			break
		}
	}
	port := b.Port.IntVal
	switch {
	case sp != nil:
		port = sp.Port
	case b.Port.Type == intstr.String || svc.Spec.Type != corev1.ServiceTypeExternalName:
		return Target{}, fmt.Errorf("service %s/%s has no port %s", b.Namespace, b.Name, b.Port.String())
	}
	// ExternalName Services often list no ports: the number is used as is.
	if s.EndpointSlices != nil && sp != nil && svc.Spec.Type != corev1.ServiceTypeExternalName {
		if addr, ok := s.endpoint(svc, sp); ok {
			return Target{Addr: addr, H2C: IsH2C(sp)}, nil
		}
	}
	var host string
	switch {
	case svc.Spec.Type == corev1.ServiceTypeExternalName:
		host = svc.Spec.ExternalName
	case svc.Spec.ClusterIP != "" && svc.Spec.ClusterIP != corev1.ClusterIPNone:
		host = svc.Spec.ClusterIP
	default:
		// Headless: DNS answers with the pods, which listen on the target
		// port.
		domain := s.ClusterDomain
		if domain == "" {
			domain = network.GetClusterDomainName()
		}
		host = b.Name + "." + b.Namespace + ".svc." + domain
		if sp != nil && sp.TargetPort.Type == intstr.Int && sp.TargetPort.IntVal != 0 {
			port = sp.TargetPort.IntVal
		}
	}
	return Target{Addr: net.JoinHostPort(host, strconv.Itoa(int(port))), H2C: sp != nil && IsH2C(sp)}, nil
}

// IsH2C reports whether a Service port speaks HTTP/2 in cleartext: named
// http2 (Knative's name for an h2c revision port) or h2c, or with
// appProtocol kubernetes.io/h2c (or h2c).
func IsH2C(p *corev1.ServicePort) bool {
	if p.Name == networking.ServicePortNameH2C || p.Name == "h2c" {
		return true
	}
	return p.AppProtocol != nil && (*p.AppProtocol == networking.AppProtocolH2C || *p.AppProtocol == "h2c")
}
