package v1alpha1

import (
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"knative.dev/pkg/apis"
	duckv1 "knative.dev/pkg/apis/duck/v1"
)

// Group and version of the API; Resource is the Chain CRD's plural.
const (
	Group    = "spright.dev"
	Version  = "v1alpha1"
	Kind     = "Chain"
	Resource = "chains"
)

// SchemeGroupVersion is the group/version of Chain.
var SchemeGroupVersion = schema.GroupVersion{Group: Group, Version: Version}

// ChainResource is the GroupVersionResource the dynamic client uses.
var ChainResource = SchemeGroupVersion.WithResource(Resource)

// Chain is one function chain: published by the controller, served by the
// node gateways.
type Chain struct {
	metav1.TypeMeta   `json:",inline"`
	metav1.ObjectMeta `json:"metadata,omitempty"`

	Spec   ChainSpec   `json:"spec,omitempty"`
	Status ChainStatus `json:"status,omitempty"`
}

// ChainSpec is the last valid assembly of the chain. When the members'
// annotations stop making a valid chain the controller leaves the spec as it
// was (gateways keep serving the last good table) and says why in Status.
type ChainSpec struct {
	// Entry is the function the gateway hands every request to first.
	Entry string `json:"entry"`
	// Protocol is the gateway adapter in front of the chain:
	// http, cloudevents, mqtt or coap.
	Protocol string `json:"protocol"`
	// Functions are the members: Knative Services of the namespace.
	Functions []ChainFunction `json:"functions"`
	// Routes is the topic routing table, including the gateway's route to
	// the entry (from "gateway", topic "*").
	Routes []ChainRoute `json:"routes"`
}

// ChainFunction is one member.
type ChainFunction struct {
	// Name is the Knative Service's name.
	Name string `json:"name"`
	// Revisions are the member's revisions that exist now: pods of any of
	// them that register with a gateway join the chain as this function.
	Revisions []string `json:"revisions,omitempty"`
	// Routed are the revisions among them that the Service's route sends
	// traffic to (status.traffic with a percent above 0): the ones a
	// gateway wakes from zero for a held request. Old revisions stay
	// members while their pods drain, but waking them would only start
	// pods Knative scales down again.
	Routed []string `json:"routed,omitempty"`
}

// ChainRoute sends a function's output on a topic to the next function(s);
// more than one is a fan-out the gateway balances by residual capacity.
type ChainRoute struct {
	From  string   `json:"from"`
	Topic string   `json:"topic"`
	To    []string `json:"to"`
}

// ChainStatus is the controller's verdict on the chain.
type ChainStatus struct {
	duckv1.Status `json:",inline"`

	// Address is the in-cluster host name that reaches the chain through
	// the node gateways (the controller's ExternalName Service).
	Address string `json:"address,omitempty"`
	// URL is the chain's external URL, when a domain is configured.
	URL *apis.URL `json:"url,omitempty"`
}

// Conditions of a Chain. Ready is true when the members' annotations make a
// valid chain and the chain is routed to the gateways.
const (
	ChainConditionReady = apis.ConditionReady
	// ChainConditionValid: the members' spright.dev annotations assemble
	// into a chain (one entry, known members, routes that end).
	ChainConditionValid apis.ConditionType = "Valid"
	// ChainConditionRouted: the chain's host leads to the gateways (its
	// Service and KIngress exist).
	ChainConditionRouted apis.ConditionType = "Routed"
)

var chainCondSet = apis.NewLivingConditionSet(ChainConditionValid, ChainConditionRouted)

// GetConditionSet is the Chain's condition set.
func (*Chain) GetConditionSet() apis.ConditionSet { return chainCondSet }

// InitializeConditions sets every condition Unknown.
func (s *ChainStatus) InitializeConditions() { chainCondSet.Manage(s).InitializeConditions() }

// MarkValid records that the members assemble into a chain.
func (s *ChainStatus) MarkValid() { chainCondSet.Manage(s).MarkTrue(ChainConditionValid) }

// MarkInvalid records why the members do not make a chain.
func (s *ChainStatus) MarkInvalid(reason, format string, args ...interface{}) {
	chainCondSet.Manage(s).MarkFalse(ChainConditionValid, reason, format, args...)
}

// MarkRouted records that the chain's host reaches the gateways.
func (s *ChainStatus) MarkRouted() { chainCondSet.Manage(s).MarkTrue(ChainConditionRouted) }

// MarkNotRouted records why the chain's host does not reach the gateways.
func (s *ChainStatus) MarkNotRouted(reason, format string, args ...interface{}) {
	chainCondSet.Manage(s).MarkFalse(ChainConditionRouted, reason, format, args...)
}

// IsReady reports whether the chain is valid and routed.
func (s *ChainStatus) IsReady() bool { return chainCondSet.Manage(s).IsHappy() }

// ChainList is a list of Chains.
type ChainList struct {
	metav1.TypeMeta `json:",inline"`
	metav1.ListMeta `json:"metadata,omitempty"`
	Items           []Chain `json:"items"`
}
