package standalone

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/spright-dev/spright/bpf/redirect"
	"github.com/spright-dev/spright/pkg/adapter"
	"github.com/spright-dev/spright/pkg/adapter/mqtt"
	"github.com/spright-dev/spright/pkg/gateway"
	"github.com/spright-dev/spright/pkg/routing"
	"github.com/spright-dev/spright/pkg/samples"
	"github.com/spright-dev/spright/pkg/shm"
)

// Duration is a time.Duration written as "10ms" in YAML.
type Duration time.Duration

// UnmarshalJSON parses "1.5ms" (or a number of nanoseconds).
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		var n int64
		if err2 := json.Unmarshal(b, &n); err2 != nil {
			return fmt.Errorf("duration %s: want a string such as \"10ms\"", b)
		}
		*d = Duration(n)
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	*d = Duration(v)
	return nil
}

// MarshalJSON writes the duration as a string.
func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(time.Duration(d).String()) }

// ChainFile is chain.yaml.
type ChainFile struct {
	Name    string   `json:"name"`
	ID      uint16   `json:"id,omitempty"`
	Mode    string   `json:"mode,omitempty"` // skmsg (default) | poll
	Listen  string   `json:"listen,omitempty"`
	Timeout Duration `json:"timeout,omitempty"`
	Pool    struct {
		Slots     uint32 `json:"slots,omitempty"`
		SlotSize  uint32 `json:"slotSize,omitempty"`
		HugePages *bool  `json:"hugePages,omitempty"`
	} `json:"pool,omitempty"`
	// Routes are the gateway's: topic → functions to visit ("*" = default).
	Routes    map[string][]string `json:"routes"`
	Functions []FunctionFile      `json:"functions"`

	// Protocol picks the chain's protocol adapters (DESIGN §6
	// spright.dev/protocol): http (default) | cloudevents | mqtt | coap,
	// or several separated by commas ("mqtt,coap"). HTTP is always served;
	// cloudevents makes the HTTP listener speak CloudEvents.
	Protocol string `json:"protocol,omitempty"`
	// MQTT configures the MQTT listener and topic mapping.
	MQTT *MQTTFile `json:"mqtt,omitempty"`
	// CoAP configures the CoAP listener.
	CoAP *CoAPFile `json:"coap,omitempty"`
	// CloudEvents sets the answer events' attributes.
	CloudEvents *adapter.CloudEventsOptions `json:"cloudevents,omitempty"`

	// Redirect switches eBPF forwarding between the chain's network
	// namespaces (bpf/redirect, DESIGN §4): off (default) | tc | xdp.
	// Packets between pods then skip the host's IP forwarding path and its
	// iptables/nftables rules; keep it off where such rules must apply.
	// `spright run --redirect` overrides it.
	Redirect string `json:"redirect,omitempty"`
	// GatewayNetns puts the gateway's HTTP listener into a network
	// namespace of its own (a "gateway pod", joined by veth like the
	// functions), so that clients in other namespaces reach it across
	// veths, pod to pod. The listen port is kept; the address becomes the
	// namespace's.
	GatewayNetns bool `json:"gatewayNetns,omitempty"`
	// ClientNetns creates that many client namespaces ("ingress pods",
	// joined by veth) for load generators and clients to run in
	// (Runner.ClientNetns).
	ClientNetns int `json:"clientNetns,omitempty"`

	// Nodes split the chain across nodes (nodes.go): each node's name and
	// the address its gateway listens on for the others. `spright run
	// --node NAME` runs one of them. Empty: one node, as before.
	Nodes []NodeFile `json:"nodes,omitempty"`
	// PeerKeyFile holds the pre-shared key the nodes' gateways
	// authenticate each other with (ReadPeerKey: at least 16 bytes, not
	// readable by others). Required with nodes.
	PeerKeyFile string `json:"peerKeyFile,omitempty"`
}

// MQTTFile is chain.yaml's mqtt section.
type MQTTFile struct {
	// Listen is the MQTT (TCP) address, e.g. 127.0.0.1:1883 (default: no
	// listener unless `spright run --mqtt-listen` gives one).
	Listen string `json:"listen,omitempty"`
	// Routes map topic filters to chain topics and reply topics, e.g.
	// {filter: "motion/+", topic: motion, reply: "lights/{1}"}.
	Routes []adapter.MQTTRoute `json:"routes,omitempty"`
}

// CoAPFile is chain.yaml's coap section.
type CoAPFile struct {
	// Listen is the CoAP (UDP) address, e.g. 127.0.0.1:5683 (default: no
	// listener unless `spright run --coap-listen` gives one).
	Listen string `json:"listen,omitempty"`
}

// Protocols are the chain's protocol adapters, "http" first.
func (cf *ChainFile) Protocols() []string {
	out := []string{"http"}
	for _, p := range strings.Split(cf.Protocol, ",") {
		if p = strings.TrimSpace(p); p != "" && p != "http" {
			out = append(out, p)
		}
	}
	return out
}

// Has reports whether the chain uses protocol p.
func (cf *ChainFile) Has(p string) bool {
	for _, q := range cf.Protocols() {
		if q == p {
			return true
		}
	}
	return false
}

// adapterOptions are the built-in adapters' options from the file.
func (cf *ChainFile) adapterOptions() adapter.Options {
	o := adapter.Options{Chain: cf.Name}
	if cf.MQTT != nil {
		o.MQTT.Routes = cf.MQTT.Routes
	}
	if cf.CloudEvents != nil {
		o.CloudEvents = *cf.CloudEvents
	}
	return o
}

func (cf *ChainFile) checkProtocols() error {
	// Any registered adapter (http, cloudevents, mqtt, coap, web, ...), at
	// most one per front end: they would replace each other there.
	byPoint := map[string]string{}
	for _, p := range cf.Protocols()[1:] {
		a, err := adapter.New(p, cf.adapterOptions())
		if err != nil {
			return fmt.Errorf("chain %q: protocol %q: %w (several: \"mqtt,coap\")", cf.Name, p, err)
		}
		t := a.Transport()
		a.Close()
		if other := byPoint[t]; other != "" {
			return fmt.Errorf("chain %q: protocols %q and %q both serve the %s front end: name one", cf.Name, other, p, t)
		}
		byPoint[t] = p
	}
	if cf.MQTT != nil {
		if _, err := mqtt.NewAdapter(adapter.MQTTOptions{Routes: cf.MQTT.Routes}); err != nil {
			return fmt.Errorf("chain %q: %w", cf.Name, err)
		}
	}
	return nil
}

// FunctionFile is one function of a chain.
type FunctionFile struct {
	Name string `json:"name"`
	// Behavior is a built-in behaviour (samples.Names()); ignored with Command.
	Behavior    string   `json:"behavior,omitempty"`
	ServiceTime Duration `json:"serviceTime,omitempty"`
	// Instances to start (default 1; 0 = none: instances register themselves).
	Instances   *int   `json:"instances,omitempty"`
	Concurrency uint32 `json:"concurrency,omitempty"`
	Workers     int    `json:"workers,omitempty"`
	// Routes: topic → functions to visit after this one.
	Routes map[string][]string `json:"routes,omitempty"`
	// Command runs a function built with the SDK instead of a behaviour;
	// it gets SPRIGHT_CONTROL_SOCKET, SPRIGHT_CHAIN and SPRIGHT_FUNCTION.
	Command []string          `json:"command,omitempty"`
	Env     map[string]string `json:"env,omitempty"`
	// Node is the node that runs the function's instances (one of the
	// chain's nodes); empty: every node runs `instances` of them.
	Node string `json:"node,omitempty"`
}

// Load reads and validates a chain file.
func Load(path string) (*ChainFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	cf, err := Parse(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cf, nil
}

// Parse decodes and validates chain.yaml bytes; unknown fields are errors.
func Parse(b []byte) (*ChainFile, error) {
	var cf ChainFile
	if err := yaml.UnmarshalStrict(b, &cf); err != nil {
		return nil, err
	}
	if err := cf.defaults(); err != nil {
		return nil, err
	}
	return &cf, nil
}

func (cf *ChainFile) defaults() error {
	if cf.Name == "" {
		return fmt.Errorf("chain: name is required")
	}
	if strings.ContainsAny(cf.Name, "/ \t") {
		return fmt.Errorf("chain: name %q must not contain '/' or spaces", cf.Name)
	}
	if cf.ID == 0 {
		cf.ID = 1
	}
	if cf.Mode == "" {
		cf.Mode = gateway.ModeSkMsg
	}
	if cf.Mode != gateway.ModeSkMsg && cf.Mode != gateway.ModePoll {
		return fmt.Errorf("chain %q: mode %q: want %q or %q", cf.Name, cf.Mode, gateway.ModeSkMsg, gateway.ModePoll)
	}
	if len(cf.Functions) == 0 {
		return fmt.Errorf("chain %q: no functions", cf.Name)
	}
	if len(cf.Routes) == 0 {
		return fmt.Errorf("chain %q: no gateway routes (e.g. routes: {\"*\": [%s]})", cf.Name, cf.Functions[0].Name)
	}
	for i := range cf.Functions {
		f := &cf.Functions[i]
		if f.Instances == nil {
			one := 1
			f.Instances = &one
		}
		if *f.Instances < 0 || *f.Instances > routing.MaxInstances {
			return fmt.Errorf("chain %q: function %q: instances %d outside 0..%d", cf.Name, f.Name, *f.Instances, routing.MaxInstances)
		}
		if len(f.Command) == 0 {
			if f.Behavior == "" {
				f.Behavior = f.Name
			}
			if _, err := samples.Lookup(f.Behavior, time.Duration(f.ServiceTime)); err != nil {
				return fmt.Errorf("chain %q: function %q: %w", cf.Name, f.Name, err)
			}
		}
	}
	if err := cf.checkProtocols(); err != nil {
		return err
	}
	if err := cf.checkNodes(); err != nil {
		return err
	}
	if cf.Redirect == "false" {
		cf.Redirect = "off" // YAML 1.1 reads an unquoted off as false
	}
	mode, err := redirect.ParseMode(cf.Redirect)
	if err != nil {
		return fmt.Errorf("chain %q: %w", cf.Name, err)
	}
	cf.Redirect = string(mode)
	if cf.ClientNetns < 0 || cf.ClientNetns > 16 {
		return fmt.Errorf("chain %q: clientNetns %d outside 0..16", cf.Name, cf.ClientNetns)
	}
	_, err = cf.GatewayConfig()
	return err
}

func routesOf(from string, m map[string][]string) []routing.Route {
	var out []routing.Route
	for topic, to := range m {
		out = append(out, routing.Route{From: from, Topic: topic, To: to})
	}
	return out
}

// GatewayConfig turns the file into the gateway's chain config.
func (cf *ChainFile) GatewayConfig() (gateway.ChainConfig, error) {
	cc := gateway.ChainConfig{
		Name: cf.Name, ID: cf.ID, Mode: cf.Mode, Timeout: time.Duration(cf.Timeout),
		Pool: shm.Config{Slots: cf.Pool.Slots, SlotSize: cf.Pool.SlotSize},
	}
	if cf.Pool.HugePages != nil && !*cf.Pool.HugePages {
		cc.Pool.NoHugePages = true
	}
	cc.Routing.Routes = routesOf(routing.GatewayName, cf.Routes)
	for _, f := range cf.Functions {
		cc.Routing.Functions = append(cc.Routing.Functions, routing.FunctionSpec{Name: f.Name, Concurrency: f.Concurrency})
		cc.Routing.Routes = append(cc.Routing.Routes, routesOf(f.Name, f.Routes)...)
	}
	if err := cc.Routing.Validate(); err != nil {
		return cc, fmt.Errorf("chain %q: %w", cf.Name, err)
	}
	return cc, nil
}
