package ingress

import (
	"crypto/tls"
	"errors"
	"fmt"
	"sync"

	corev1 "k8s.io/api/core/v1"
	apierrs "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/types"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"knative.dev/networking/pkg/apis/networking"

	"github.com/spright-dev/spright/pkg/ingressconfig"
)

// Certificates finds the certificate of a KIngress's TLS Secret.
type Certificates interface {
	Certificate(ref ingressconfig.SecretRef) (*tls.Certificate, error)
}

// SecretLabel is the label the gateway's Secret watch selects on: the one
// Knative puts on the Secrets of its Certificates (and asks users to put
// on their own for a DomainMapping), as net-kourier does. The gateway then
// caches only the Secrets of certificates, not every Secret of the cluster.
const SecretLabel = networking.CertificateUIDLabelKey

// SecretCertificates reads certificates from kubernetes.io/tls Secrets
// (tls.crt, tls.key) through a lister, parsing each version of a Secret
// once.
type SecretCertificates struct {
	Secrets corev1listers.SecretLister

	mu     sync.Mutex
	parsed map[ingressconfig.SecretRef]parsedCert
}

type parsedCert struct {
	uid     types.UID
	version string
	cert    *tls.Certificate
	err     error
}

// Certificate implements Certificates.
func (s *SecretCertificates) Certificate(ref ingressconfig.SecretRef) (*tls.Certificate, error) {
	sec, err := s.Secrets.Secrets(ref.Namespace).Get(ref.Name)
	if apierrs.IsNotFound(err) {
		return nil, fmt.Errorf("secret %s not found (the gateway sees only Secrets labeled %s)", ref, SecretLabel)
	} else if err != nil {
		return nil, fmt.Errorf("secret %s: %w", ref, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if p, ok := s.parsed[ref]; ok && p.uid == sec.UID && p.version == sec.ResourceVersion {
		return p.cert, p.err
	}
	p := parsedCert{uid: sec.UID, version: sec.ResourceVersion}
	crt, key := sec.Data[corev1.TLSCertKey], sec.Data[corev1.TLSPrivateKeyKey]
	if len(crt) == 0 || len(key) == 0 {
		p.err = fmt.Errorf("secret %s has no %s and %s", ref, corev1.TLSCertKey, corev1.TLSPrivateKeyKey)
	} else if c, err := tls.X509KeyPair(crt, key); err != nil {
		p.err = fmt.Errorf("secret %s: %w", ref, err)
	} else {
		p.cert = &c
	}
	if s.parsed == nil {
		s.parsed = map[ingressconfig.SecretRef]parsedCert{}
	}
	s.parsed[ref] = p
	return p.cert, p.err
}

// Forget drops what was parsed for a deleted Secret.
func (s *SecretCertificates) Forget(ref ingressconfig.SecretRef) {
	s.mu.Lock()
	delete(s.parsed, ref)
	s.mu.Unlock()
}

// errNoTLS: a TLS client asked for a host without a certificate.
var errNoTLS = errors.New("no KIngress serves this host over TLS")

// TLSConfig is the external TLS listener's configuration: the certificate
// is chosen by the client's server name (SNI) from the KIngresses' spec.tls,
// HTTP/2 and HTTP/1.1 are offered (ALPN). Serve the listener with
// Handler(ingressconfig.External): a request over TLS is never redirected.
func (p *Proxy) TLSConfig() *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		NextProtos: []string{"h2", "http/1.1"},
		GetCertificate: func(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
			cfg := p.cfg.Load()
			if cfg == nil || p.opts.Certificates == nil {
				return nil, errNoTLS
			}
			ref := cfg.TLS(hello.ServerName)
			if ref == nil {
				p.TLSRefused.Add(1)
				return nil, fmt.Errorf("%w: %q", errNoTLS, hello.ServerName)
			}
			c, err := p.opts.Certificates.Certificate(*ref)
			if err != nil {
				p.TLSRefused.Add(1)
				return nil, err
			}
			return c, nil
		},
	}
}
