package chainspec

import (
	"errors"
	"strings"
	"testing"

	"github.com/spright-dev/spright/pkg/routing"
	"github.com/spright-dev/spright/pkg/shm"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name    string
		ann     map[string]string
		member  bool
		wantErr error
		errText string
		routes  int
	}{
		{name: "not a member", ann: map[string]string{"other": "x"}},
		{name: "orphan annotation", ann: map[string]string{AnnotationRoutes: "*=b"}, errText: "joins no chain"},
		{name: "plain member", ann: map[string]string{AnnotationChain: "shop"}, member: true},
		{name: "entry with routes", ann: map[string]string{AnnotationChain: "shop", AnnotationEntry: "true", AnnotationRoutes: "*=cart;checkout=payment,shipping"}, member: true, routes: 2},
		{name: "bad entry", ann: map[string]string{AnnotationChain: "shop", AnnotationEntry: "yes"}, member: true, wantErr: ErrBadEntry},
		{name: "sdk member", ann: map[string]string{AnnotationChain: "shop", AnnotationSDK: "true"}, member: true},
		{name: "bad sdk", ann: map[string]string{AnnotationChain: "shop", AnnotationSDK: "yes"}, member: true, wantErr: ErrBadSDK},
		{name: "orphan sdk", ann: map[string]string{AnnotationSDK: "true"}, errText: "joins no chain"},
		{name: "bad protocol", ann: map[string]string{AnnotationChain: "shop", AnnotationProtocol: "amqp"}, member: true, wantErr: ErrBadProtocol},
		{name: "route without =", ann: map[string]string{AnnotationChain: "shop", AnnotationRoutes: "cart"}, member: true, wantErr: ErrBadRoutes},
		{name: "empty topic", ann: map[string]string{AnnotationChain: "shop", AnnotationRoutes: "=cart"}, member: true, wantErr: ErrBadRoutes},
		{name: "empty target", ann: map[string]string{AnnotationChain: "shop", AnnotationRoutes: "*=cart,"}, member: true, wantErr: ErrBadRoutes},
		{name: "duplicate topic", ann: map[string]string{AnnotationChain: "shop", AnnotationRoutes: "*=a;*=b"}, member: true, wantErr: ErrBadRoutes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m, ok, err := Parse("frontend", tc.ann)
			if ok != tc.member {
				t.Errorf("member = %v, want %v", ok, tc.member)
			}
			switch {
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Fatalf("err = %v, want %v", err, tc.wantErr)
				}
			case tc.errText != "":
				if err == nil || !strings.Contains(err.Error(), tc.errText) {
					t.Fatalf("err = %v, want it to say %q", err, tc.errText)
				}
			case err != nil:
				t.Fatal(err)
			}
			if tc.wantErr == nil && tc.errText == "" && len(m.Routes) != tc.routes {
				t.Errorf("routes %v, want %d", m.Routes, tc.routes)
			}
		})
	}
}

func member(t *testing.T, fn string, ann map[string]string) Member {
	t.Helper()
	ann[AnnotationChain] = "shop"
	m, ok, err := Parse(fn, ann)
	if err != nil || !ok {
		t.Fatalf("%s: %v %v", fn, ok, err)
	}
	return m
}

func TestAssembleErrors(t *testing.T) {
	for _, tc := range []struct {
		name    string
		members map[string]map[string]string
		want    error
	}{
		{"no entry", map[string]map[string]string{"a": {}, "b": {}}, ErrNoEntry},
		{"two entries", map[string]map[string]string{"a": {AnnotationEntry: "true"}, "b": {AnnotationEntry: "true"}}, ErrManyEntries},
		{"unknown member", map[string]map[string]string{"a": {AnnotationEntry: "true", AnnotationRoutes: "*=ghost"}}, ErrUnknownMember},
		{"cycle", map[string]map[string]string{"a": {AnnotationEntry: "true", AnnotationRoutes: "*=b"}, "b": {AnnotationRoutes: "*=a"}}, ErrCycle},
		{"self loop", map[string]map[string]string{"a": {AnnotationEntry: "true", AnnotationRoutes: "*=a"}}, ErrCycle},
		{"protocol clash", map[string]map[string]string{"a": {AnnotationEntry: "true", AnnotationProtocol: "mqtt"}, "b": {AnnotationProtocol: "coap"}}, ErrProtocolClash},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var ms []Member
			for fn, ann := range tc.members {
				ms = append(ms, member(t, fn, ann))
			}
			if _, err := Assemble("shop", ms); !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
}

// walk follows a request through an assembled chain's route table.
func walk(t *testing.T, c Chain, topic string) []string {
	t.Helper()
	rt, err := routing.Init(make([]byte, routing.Size), c.Spec)
	if err != nil {
		t.Fatal(err)
	}
	var h shm.SlotHeader
	var path []string
	cur := routing.Gateway
	for {
		next, err := rt.NextHop(&h, cur, topic)
		if err != nil {
			t.Fatal(err)
		}
		if next == routing.Gateway {
			return path
		}
		path = append(path, rt.FunctionName(next))
		cur = next
	}
}

// TestOnlineBoutiqueChains: the six chains of DESIGN §8 as kn annotations
// on a frontend entry produce route tables that visit exactly the chains'
// services, in order, every hop function to function.
func TestOnlineBoutiqueChains(t *testing.T) {
	chains := map[string]string{
		"ch1": "currency,productcatalog,cart,currency,currency,currency,currency,currency,currency,currency,ad",
		"ch2": "currency,cart,recommendation,productcatalog,productcatalog,productcatalog,productcatalog,productcatalog,shipping,currency,productcatalog,currency",
		"ch3": "productcatalog,cart",
		"ch4": "checkout,productcatalog,payment,shipping,email,recommendation,productcatalog,productcatalog,productcatalog,productcatalog,currency",
		"ch5": "productcatalog,currency,cart,currency,recommendation,productcatalog,productcatalog,productcatalog,productcatalog,ad",
		"ch6": "currency",
	}
	var routes []string
	for topic, path := range chains {
		routes = append(routes, topic+"="+path)
	}
	ms := []Member{member(t, "frontend", map[string]string{AnnotationEntry: "true", AnnotationRoutes: strings.Join(routes, ";")})}
	for _, fn := range []string{"productcatalog", "recommendation", "checkout", "currency", "ad", "email", "payment", "shipping", "cart"} {
		ms = append(ms, member(t, fn, map[string]string{}))
	}
	c, err := Assemble("shop", ms)
	if err != nil {
		t.Fatal(err)
	}
	if c.Entry != "frontend" || c.Protocol != "http" {
		t.Fatalf("entry %q protocol %q", c.Entry, c.Protocol)
	}
	for topic, path := range chains {
		want := append([]string{"frontend"}, strings.Split(path, ",")...)
		if got := walk(t, c, topic); strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("%s: path %v\nwant %v", topic, got, want)
		}
	}
	if got := walk(t, c, "browse"); len(got) != 1 || got[0] != "frontend" {
		t.Errorf("untopical request visits %v, want the frontend alone", got)
	}
}

// TestKnDocExample: the docs' `kn service create … --annotation
// spright.dev/routes="*=cart"` chain.
func TestKnDocExample(t *testing.T) {
	c, err := Assemble("shop", []Member{
		member(t, "frontend", map[string]string{AnnotationEntry: "true", AnnotationRoutes: "*=cart;checkout=payment,shipping"}),
		member(t, "cart", map[string]string{}),
		member(t, "payment", map[string]string{}),
		member(t, "shipping", map[string]string{AnnotationProtocol: "http"}),
	})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(walk(t, c, "checkout"), ","); got != "frontend,payment,shipping" {
		t.Errorf("checkout path %s", got)
	}
	if got := strings.Join(walk(t, c, ""), ","); got != "frontend,cart" {
		t.Errorf("default path %s", got)
	}
}
