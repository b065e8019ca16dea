package chainspec

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/spright-dev/spright/pkg/routing"
)

// Annotation keys.
const (
	AnnotationChain    = "spright.dev/chain"
	AnnotationEntry    = "spright.dev/entry"
	AnnotationRoutes   = "spright.dev/routes"
	AnnotationProtocol = "spright.dev/protocol"
	// AnnotationSDK "true" says the member's container is a function built
	// with SPRIGHT's Go SDK (pkg/function) that joins the chain itself over
	// the node's control socket, rather than an HTTP container EPROXY's
	// shim joins for it.
	AnnotationSDK = "spright.dev/sdk"
)

// Protocols a chain may declare.
var Protocols = []string{"http", "cloudevents", "mqtt", "coap", "web"}

// Member is one revision's view of its chain.
type Member struct {
	Function string // the Knative Service name
	Chain    string
	Entry    bool
	Routes   []routing.Route // From = Function
	Protocol string          // "" = not set on this member
	SDK      bool            // joins the chain itself (AnnotationSDK)
}

// Errors, for conditions and events.
var (
	ErrBadRoutes     = errors.New("invalid spright.dev/routes")
	ErrBadEntry      = errors.New("invalid spright.dev/entry")
	ErrBadProtocol   = errors.New("invalid spright.dev/protocol")
	ErrBadSDK        = errors.New("invalid spright.dev/sdk")
	ErrUnknownMember = errors.New("route to a function that is not a member of the chain")
	ErrNoEntry       = errors.New("chain has no entry (spright.dev/entry: \"true\")")
	ErrManyEntries   = errors.New("chain has more than one entry")
	ErrCycle         = errors.New("routes loop with no exit")
	ErrProtocolClash = errors.New("members declare different protocols")
)

// Parse reads a revision's annotations. ok is false when the revision is
// not a chain member (no spright.dev/chain); an error means the member's
// own annotations are malformed.
func Parse(function string, ann map[string]string) (m Member, ok bool, err error) {
	chain := strings.TrimSpace(ann[AnnotationChain])
	if chain == "" {
		for k := range ann {
			if strings.HasPrefix(k, "spright.dev/") {
				return m, false, fmt.Errorf("%s is set but %s is not: the revision joins no chain", k, AnnotationChain)
			}
		}
		return m, false, nil
	}
	m = Member{Function: function, Chain: chain}
	switch e := strings.TrimSpace(ann[AnnotationEntry]); e {
	case "", "false":
	case "true":
		m.Entry = true
	default:
		return m, true, fmt.Errorf("%w: %q (want \"true\" or \"false\")", ErrBadEntry, e)
	}
	switch v := strings.TrimSpace(ann[AnnotationSDK]); v {
	case "", "false":
	case "true":
		m.SDK = true
	default:
		return m, true, fmt.Errorf("%w: %q (want \"true\" or \"false\")", ErrBadSDK, v)
	}
	if p := strings.TrimSpace(ann[AnnotationProtocol]); p != "" {
		if !contains(Protocols, p) {
			return m, true, fmt.Errorf("%w: %q (want one of %s)", ErrBadProtocol, p, strings.Join(Protocols, ", "))
		}
		m.Protocol = p
	}
	if m.Routes, err = ParseRoutes(function, ann[AnnotationRoutes]); err != nil {
		return m, true, err
	}
	return m, true, nil
}

// ParseRoutes parses "topic=f1,f2;topic2=f3" ("*" is the default topic).
func ParseRoutes(from, s string) ([]routing.Route, error) {
	var out []routing.Route
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		topic, to, found := strings.Cut(part, "=")
		topic = strings.TrimSpace(topic)
		if !found || topic == "" {
			return nil, fmt.Errorf("%w: %q: want topic=function[,function...]", ErrBadRoutes, part)
		}
		if seen[topic] {
			return nil, fmt.Errorf("%w: topic %q appears twice", ErrBadRoutes, topic)
		}
		seen[topic] = true
		r := routing.Route{From: from, Topic: topic}
		for _, f := range strings.Split(to, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				return nil, fmt.Errorf("%w: %q: empty function name", ErrBadRoutes, part)
			}
			r.To = append(r.To, f)
		}
		out = append(out, r)
	}
	return out, nil
}

// Chain is an assembled chain.
type Chain struct {
	Name     string
	Entry    string
	Protocol string
	Spec     routing.Spec
}

// Assemble validates a chain's members together and builds its routing
// spec: the gateway's default route goes to the entry, members' routes are
// checked against membership, and the default path must end.
func Assemble(name string, members []Member) (Chain, error) {
	c := Chain{Name: name, Protocol: "http"}
	sort.Slice(members, func(i, j int) bool { return members[i].Function < members[j].Function })
	names := map[string]bool{}
	var entries []string
	protocols := map[string]bool{}
	for _, m := range members {
		names[m.Function] = true
		if m.Entry {
			entries = append(entries, m.Function)
		}
		if m.Protocol != "" {
			protocols[m.Protocol] = true
			c.Protocol = m.Protocol
		}
		c.Spec.Functions = append(c.Spec.Functions, routing.FunctionSpec{Name: m.Function})
	}
	switch {
	case len(entries) == 0:
		return c, ErrNoEntry
	case len(entries) > 1:
		return c, fmt.Errorf("%w: %s", ErrManyEntries, strings.Join(entries, ", "))
	}
	if len(protocols) > 1 {
		return c, fmt.Errorf("%w: %v", ErrProtocolClash, keys(protocols))
	}
	c.Entry = entries[0]
	c.Spec.Routes = append(c.Spec.Routes, routing.Route{From: routing.GatewayName, Topic: routing.Wildcard, To: []string{c.Entry}})
	defaults := map[string][]string{}
	for _, m := range members {
		for _, r := range m.Routes {
			for _, to := range r.To {
				if !names[to] {
					return c, fmt.Errorf("%w: %s routes topic %q to %q", ErrUnknownMember, m.Function, r.Topic, to)
				}
			}
			if r.Topic == routing.Wildcard {
				defaults[m.Function] = r.To
			}
			c.Spec.Routes = append(c.Spec.Routes, r)
		}
	}
	if err := checkDefaultPathEnds(c.Entry, defaults); err != nil {
		return c, err
	}
	if err := c.Spec.Validate(); err != nil {
		return c, err
	}
	return c, nil
}

// checkDefaultPathEnds follows the default ("*") routes from the entry the
// way the data path does (a function's route is visited before what is
// pending) and fails if it never returns to the gateway.
func checkDefaultPathEnds(entry string, defaults map[string][]string) error {
	stack := []string{entry}
	var path []string
	for steps := 0; len(stack) > 0; steps++ {
		if steps > routing.MaxHops {
			return fmt.Errorf("%w: %s …", ErrCycle, strings.Join(path[:min(len(path), 8)], " → "))
		}
		f := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		path = append(path, f)
		next := defaults[f]
		for i := len(next) - 1; i >= 0; i-- {
			stack = append(stack, next[i])
		}
	}
	return nil
}

func contains(list []string, s string) bool {
	for _, x := range list {
		if x == s {
			return true
		}
	}
	return false
}

func keys(m map[string]bool) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
