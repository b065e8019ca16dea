package chain

import (
	"fmt"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
)

// ConfigName is the controller's ConfigMap (in the system namespace).
const ConfigName = "config-spright"

// Config is config-spright. Every key is optional; see config/400-config.yaml.
type Config struct {
	// GatewayService is the FQDN of the node gateways' Service; each
	// chain's "<chain>-chain" ExternalName Service resolves to it.
	GatewayService string
	// GatewayPort is the gateways' Service port for chain traffic.
	GatewayPort int
	// IngressClass is the KIngress class for chains' external hosts.
	IngressClass string
	// Domain, when set, gives each chain the external host
	// <chain>.<namespace>.<domain> through a KIngress; empty: cluster-local
	// only.
	Domain string
	// DefaultMinScale is written as autoscaling.knative.dev/min-scale on
	// members that set none; empty disables the defaulting.
	DefaultMinScale string
}

// DefaultConfig is what an empty config-spright means.
func DefaultConfig() *Config {
	return &Config{
		GatewayService:  "spright-gateway.spright-system.svc.cluster.local",
		GatewayPort:     80,
		IngressClass:    "kourier.ingress.networking.knative.dev",
		DefaultMinScale: "1",
	}
}

// NewConfigFromConfigMap parses config-spright; unknown keys are refused so
// a typo does not silently keep a default.
func NewConfigFromConfigMap(cm *corev1.ConfigMap) (*Config, error) {
	c := DefaultConfig()
	if cm == nil {
		return c, nil
	}
	for k, v := range cm.Data {
		v = strings.TrimSpace(v)
		switch k {
		case "_example":
		case "gateway-service":
			if v == "" {
				return nil, fmt.Errorf("%s: gateway-service must not be empty", ConfigName)
			}
			c.GatewayService = v
		case "gateway-port":
			p, err := strconv.Atoi(v)
			if err != nil || p < 1 || p > 65535 {
				return nil, fmt.Errorf("%s: gateway-port %q is not a port number", ConfigName, v)
			}
			c.GatewayPort = p
		case "ingress-class":
			if v == "" {
				return nil, fmt.Errorf("%s: ingress-class must not be empty", ConfigName)
			}
			c.IngressClass = v
		case "domain":
			c.Domain = strings.Trim(v, ".")
		case "default-min-scale":
			if v != "" {
				if n, err := strconv.Atoi(v); err != nil || n < 0 {
					return nil, fmt.Errorf("%s: default-min-scale %q is not a non-negative integer", ConfigName, v)
				}
			}
			c.DefaultMinScale = v
		default:
			return nil, fmt.Errorf("%s: unknown key %q", ConfigName, k)
		}
	}
	return c, nil
}
