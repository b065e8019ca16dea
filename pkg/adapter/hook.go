package adapter

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
)

// Point is a chain's hook point on one front end: at most one adapter is
// attached at a time, and it can be replaced or detached while messages
// flow. A message acquires the adapter current when it arrives and keeps it
// until its reply is sent; Detach (or a replacing Attach) waits for those
// messages before closing the old adapter, so no in-flight message is lost
// or sees a half-closed adapter. The hot path is a read lock and an atomic
// add.
type Point struct {
	transport string
	mu        sync.RWMutex
	cur       *attachment
}

type attachment struct {
	a       Adapter
	refs    atomic.Int64
	gone    atomic.Bool
	once    sync.Once
	drained chan struct{}
}

func (at *attachment) release() {
	if at.refs.Add(-1) == 0 && at.gone.Load() {
		at.once.Do(func() { close(at.drained) })
	}
}

// retire marks at as detached and returns a channel closed once the last
// message using it has finished.
func (at *attachment) retire() <-chan struct{} {
	at.gone.Store(true)
	if at.refs.Load() == 0 {
		at.once.Do(func() { close(at.drained) })
	}
	return at.drained
}

// NewPoint makes an empty hook point for a transport.
func NewPoint(transport string) *Point { return &Point{transport: transport} }

// Transport is the front end the point belongs to.
func (p *Point) Transport() string { return p.transport }

// Acquire returns the attached adapter (nil if none) and a release func to
// call when the message's reply has been sent.
func (p *Point) Acquire() (Adapter, func()) {
	p.mu.RLock()
	at := p.cur
	if at != nil {
		at.refs.Add(1)
	}
	p.mu.RUnlock()
	if at == nil {
		return nil, func() {}
	}
	return at.a, at.release
}

// Current is the attached adapter's name ("" if none).
func (p *Point) Current() string {
	p.mu.RLock()
	defer p.mu.RUnlock()
	if p.cur == nil {
		return ""
	}
	return p.cur.a.Name()
}

// Attach puts a on the point. A previously attached adapter stops getting
// new messages at once; Attach returns after the messages it still serves
// have finished (or ctx ends) and it has been closed.
func (p *Point) Attach(ctx context.Context, a Adapter) error {
	if a.Transport() != p.transport {
		return fmt.Errorf("adapter %q is for %s, not %s", a.Name(), a.Transport(), p.transport)
	}
	return p.swap(ctx, &attachment{a: a, drained: make(chan struct{})})
}

// Detach removes the attached adapter (no-op if none): new messages see no
// adapter, messages already in flight finish with the old one, then it is
// closed.
func (p *Point) Detach(ctx context.Context) error { return p.swap(ctx, nil) }

func (p *Point) swap(ctx context.Context, next *attachment) error {
	p.mu.Lock()
	old := p.cur
	p.cur = next
	p.mu.Unlock()
	if old == nil {
		return nil
	}
	select {
	case <-old.retire():
	case <-ctx.Done():
		// Still draining: close it when the last message is done.
		go func() { <-old.drained; old.a.Close() }()
		return fmt.Errorf("adapter %q detached but still serving in-flight messages: %w", old.a.Name(), ctx.Err())
	}
	if err := old.a.Close(); err != nil {
		return fmt.Errorf("closing adapter %q: %w", old.a.Name(), err)
	}
	return nil
}

// Options configure the built-in adapters of one chain (chain.yaml).
type Options struct {
	Chain string
	// MQTT maps MQTT topics to chain topics and reply topics.
	MQTT MQTTOptions
	// CloudEvents sets the attributes of the events the gateway answers with.
	CloudEvents CloudEventsOptions
}

// MQTTOptions configure the MQTT adapter.
type MQTTOptions struct {
	// Routes are tried in order; the first whose filter matches the
	// PUBLISH topic wins. None configured: the route topic is the first
	// topic level and the answer goes to the MQTT 5 Response Topic only.
	Routes []MQTTRoute `json:"routes,omitempty"`
}

// MQTTRoute maps the MQTT topics matching Filter to a chain topic and a
// reply topic. Topic and Reply are templates: {1}, {2}, … are the topic
// levels the filter's wildcards matched ('#' matches the rest as one), and
// {topic} is the whole MQTT topic.
type MQTTRoute struct {
	Filter string `json:"filter"`
	Topic  string `json:"topic,omitempty"` // default: the first topic level
	Reply  string `json:"reply,omitempty"` // default: none (MQTT 5 Response Topic still honoured)
}

// CloudEventsOptions set the answer event's attributes.
type CloudEventsOptions struct {
	// Source of answer events (default "/spright/<chain>").
	Source string `json:"source,omitempty"`
	// TypeSuffix is appended to the request's type to make the answer's
	// (default ".response").
	TypeSuffix string `json:"typeSuffix,omitempty"`
}

// Factory builds an adapter. arg is what follows "name:" in the adapter's
// name ("" if nothing does), for adapters that take a parameter.
type Factory func(arg string, o Options) (Adapter, error)

var (
	regMu    sync.RWMutex
	registry = map[string]Factory{}
)

// Register makes a factory available by name (built-in adapters register
// themselves in init).
func Register(name string, f Factory) {
	regMu.Lock()
	defer regMu.Unlock()
	registry[name] = f
}

// Names lists the registered adapter names.
func Names() []string {
	regMu.RLock()
	defer regMu.RUnlock()
	var out []string
	for n := range registry {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// New builds the adapter called name ("http", "cloudevents", "mqtt", "coap",
// or "kind:arg" for a registered kind that takes an argument).
func New(name string, o Options) (Adapter, error) {
	kind, arg, _ := strings.Cut(name, ":")
	regMu.RLock()
	f := registry[kind]
	regMu.RUnlock()
	if f == nil {
		return nil, fmt.Errorf("unknown protocol adapter %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	a, err := f(arg, o)
	if err != nil {
		return nil, fmt.Errorf("adapter %q: %w", name, err)
	}
	return a, nil
}

// Chain holds one chain's hook points and its invoker: what the front ends
// need to serve it.
type Chain struct {
	Name    string
	Invoker Invoker
	Options Options
	points  map[string]*Point
}

// NewChain makes the hook points (http, mqtt, coap) of a chain.
func NewChain(name string, inv Invoker, o Options) *Chain {
	o.Chain = name
	c := &Chain{Name: name, Invoker: inv, Options: o, points: map[string]*Point{}}
	for _, t := range []string{TransportHTTP, TransportMQTT, TransportCoAP} {
		c.points[t] = NewPoint(t)
	}
	return c
}

// Point is the chain's hook point for transport (nil if unknown).
func (c *Chain) Point(transport string) *Point { return c.points[transport] }

// AttachNamed builds the adapter called name and attaches it at its
// transport's point, replacing what was there.
func (c *Chain) AttachNamed(ctx context.Context, name string) (Adapter, error) {
	a, err := New(name, c.Options)
	if err != nil {
		return nil, err
	}
	p := c.points[a.Transport()]
	if p == nil {
		a.Close()
		return nil, fmt.Errorf("adapter %q: chain %q has no %s front end", name, c.Name, a.Transport())
	}
	if err := p.Attach(ctx, a); err != nil {
		return a, err
	}
	return a, nil
}

// Detach removes the adapter at transport's point.
func (c *Chain) Detach(ctx context.Context, transport string) error {
	p := c.points[transport]
	if p == nil {
		return fmt.Errorf("no %q front end (want %s, %s or %s)", transport, TransportHTTP, TransportMQTT, TransportCoAP)
	}
	return p.Detach(ctx)
}

// Attached maps each transport to its adapter's name ("" = none).
func (c *Chain) Attached() map[string]string {
	out := map[string]string{}
	for t, p := range c.points {
		out[t] = p.Current()
	}
	return out
}

// Close detaches every adapter.
func (c *Chain) Close() error {
	for _, p := range c.points {
		p.Detach(context.Background())
	}
	return nil
}
