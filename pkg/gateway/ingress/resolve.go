package ingress

import (
	"fmt"
	"net"
	"strconv"

	corev1 "k8s.io/api/core/v1"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/pkg/network"

	"github.com/spright-dev/spright/pkg/ingressconfig"
)

// ServiceResolver resolves backends through a Service lister.
type ServiceResolver struct {
	Services corev1listers.ServiceLister
	// ClusterDomain names headless Services (default: the pod's, from
	// /etc/resolv.conf, else cluster.local).
	ClusterDomain string
}

// Resolve returns the Service's ClusterIP and port; an ExternalName
// Service's name; a headless Service's DNS name and target port.
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
