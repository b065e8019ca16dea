package ingressconfig

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"knative.dev/networking/pkg/apis/networking"
	"knative.dev/networking/pkg/apis/networking/v1alpha1"
	netingress "knative.dev/networking/pkg/ingress"
)

const ns = "default"

var key = types.NamespacedName{Namespace: ns, Name: "hello"}

func kingress(spec v1alpha1.IngressSpec) *v1alpha1.Ingress {
	return &v1alpha1.Ingress{
		ObjectMeta: metav1.ObjectMeta{
			Namespace: ns, Name: "hello",
			Annotations: map[string]string{networking.IngressClassAnnotationKey: Class},
		},
		Spec: spec,
	}
}

func split(svc string, percent int, set map[string]string) v1alpha1.IngressBackendSplit {
	return v1alpha1.IngressBackendSplit{
		IngressBackend: v1alpha1.IngressBackend{ServiceNamespace: ns, ServiceName: svc, ServicePort: intstr.FromInt32(80)},
		Percent:        percent, AppendHeaders: set,
	}
}

func rule(vis v1alpha1.IngressVisibility, hosts []string, paths ...v1alpha1.HTTPIngressPath) v1alpha1.IngressRule {
	return v1alpha1.IngressRule{Hosts: hosts, Visibility: vis, HTTP: &v1alpha1.HTTPIngressRuleValue{Paths: paths}}
}

func backend(svc string) Backend {
	return Backend{Namespace: ns, Name: svc, Port: intstr.FromInt32(80)}
}

// knativeRoute is the KIngress Knative Serving makes for `kn service
// create hello`: one external and one cluster-local rule, headers naming
// the revision.
func knativeRoute() *v1alpha1.Ingress {
	rev := map[string]string{"Knative-Serving-Revision": "hello-00001", "Knative-Serving-Namespace": ns}
	path := v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("hello-00001", 100, rev)}}
	return kingress(v1alpha1.IngressSpec{
		HTTPOption: v1alpha1.HTTPOptionEnabled,
		Rules: []v1alpha1.IngressRule{
			rule(v1alpha1.IngressVisibilityClusterLocal, []string{"hello.default", "hello.default.svc", "hello.default.svc.cluster.local"}, path),
			rule(v1alpha1.IngressVisibilityExternalIP, []string{"hello.default.example.com"}, path),
		},
	})
}

func TestTranslate(t *testing.T) {
	helloRoutes := []*Route{{
		Splits: []*Split{{Backend: backend("hello-00001"), Weight: 100,
			Set: map[string]string{"Knative-Serving-Revision": "hello-00001", "Knative-Serving-Namespace": ns}}},
		Total: 100,
	}}
	for _, tc := range []struct {
		name     string
		ing      *v1alpha1.Ingress
		external map[string][]*Route // host → routes
		local    map[string][]*Route
		redirect bool
		err      string
		errIs    error
	}{{
		name:     "knative service: external host on both listeners, cluster-local hosts on the local one",
		ing:      knativeRoute(),
		external: map[string][]*Route{"hello.default.example.com": helloRoutes},
		local: map[string][]*Route{
			"hello.default": helloRoutes, "hello.default.svc": helloRoutes,
			"hello.default.svc.cluster.local": helloRoutes, "hello.default.example.com": helloRoutes,
		},
	}, {
		name: "cluster-local fqdn is expanded to its short forms; visibility defaults to ExternalIP",
		ing: kingress(v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
			rule(v1alpha1.IngressVisibilityClusterLocal, []string{"Private.default.svc.cluster.local."},
				v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("p", 0, nil)}}),
			rule("", []string{"PUBLIC.example.com"},
				v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("q", 100, nil)}}),
		}}),
		external: map[string][]*Route{
			"public.example.com": {{Splits: []*Split{{Backend: backend("q"), Weight: 100}}, Total: 100}},
		},
		local: map[string][]*Route{
			// A lone split with no percent gets 100 (knative.dev/networking's defaults).
			"private.default.svc.cluster.local": {{Splits: []*Split{{Backend: backend("p"), Weight: 100}}, Total: 100}},
			"private.default.svc":               {{Splits: []*Split{{Backend: backend("p"), Weight: 100}}, Total: 100}},
			"private.default":                   {{Splits: []*Split{{Backend: backend("p"), Weight: 100}}, Total: 100}},
			"public.example.com":                {{Splits: []*Split{{Backend: backend("q"), Weight: 100}}, Total: 100}},
		},
	}, {
		name: "paths, header conditions, header sets, host rewrite, weighted splits with their own headers",
		ing: kingress(v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
			rule(v1alpha1.IngressVisibilityExternalIP, []string{"app.example.com"},
				v1alpha1.HTTPIngressPath{
					Headers:       map[string]v1alpha1.HeaderMatch{"knative-serving-tag": {Exact: "blue"}},
					AppendHeaders: map[string]string{"k-tag": "blue"},
					Splits:        []v1alpha1.IngressBackendSplit{split("blue", 100, nil)},
				},
				v1alpha1.HTTPIngressPath{
					Path:        "/api",
					RewriteHost: "API.default.svc.cluster.local",
					Splits:      []v1alpha1.IngressBackendSplit{split("api", 100, nil)},
				},
				v1alpha1.HTTPIngressPath{
					AppendHeaders: map[string]string{"x-route": "default", "x-both": "route"},
					Splits: []v1alpha1.IngressBackendSplit{
						split("v1", 70, map[string]string{"x-split": "v1", "x-both": "split"}),
						split("v2", 30, map[string]string{"x-split": "v2"}),
					},
				}),
		}}),
		external: map[string][]*Route{"app.example.com": {
			{Headers: map[string]string{"Knative-Serving-Tag": "blue"}, Set: map[string]string{"K-Tag": "blue"},
				Splits: []*Split{{Backend: backend("blue"), Weight: 100}}, Total: 100},
			{Prefix: "/api", RewriteHost: "api.default.svc.cluster.local",
				Splits: []*Split{{Backend: backend("api"), Weight: 100}}, Total: 100},
			{Set: map[string]string{"X-Route": "default", "X-Both": "route"},
				Splits: []*Split{
					{Backend: backend("v1"), Weight: 70, Set: map[string]string{"X-Split": "v1", "X-Both": "split"}},
					{Backend: backend("v2"), Weight: 30, Set: map[string]string{"X-Split": "v2"}},
				}, Total: 100},
		}},
	}, {
		name: "redirected: external hosts answer 301, the local listener serves",
		ing: kingress(v1alpha1.IngressSpec{HTTPOption: v1alpha1.HTTPOptionRedirected, Rules: []v1alpha1.IngressRule{
			rule(v1alpha1.IngressVisibilityExternalIP, []string{"r.example.com"},
				v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("r", 100, nil)}}),
		}}),
		redirect: true,
		external: map[string][]*Route{"r.example.com": {{Splits: []*Split{{Backend: backend("r"), Weight: 100}}, Total: 100}}},
		local:    map[string][]*Route{"r.example.com": {{Splits: []*Split{{Backend: backend("r"), Weight: 100}}, Total: 100}}},
	}, {
		name: "the chain controller's KIngress: its header names the chain the split enters",
		ing: kingress(v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
			rule(v1alpha1.IngressVisibilityExternalIP, []string{"shop.default.example.com"},
				v1alpha1.HTTPIngressPath{
					AppendHeaders: map[string]string{ChainHeader: "default/shop"},
					Splits:        []v1alpha1.IngressBackendSplit{split("shop-chain", 100, nil)},
				}),
		}}),
		external: map[string][]*Route{"shop.default.example.com": {{Set: map[string]string{ChainHeader: "default/shop"},
			Splits: []*Split{{Backend: backend("shop-chain"), Weight: 100, Chain: "default/shop"}}, Total: 100}}},
		local: map[string][]*Route{"shop.default.example.com": {{Set: map[string]string{ChainHeader: "default/shop"},
			Splits: []*Split{{Backend: backend("shop-chain"), Weight: 100, Chain: "default/shop"}}, Total: 100}}},
	}, {
		name: "a rule without hosts is its listener's catch-all",
		ing: kingress(v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
			rule(v1alpha1.IngressVisibilityClusterLocal, nil,
				v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("any", 100, nil)}}),
		}}),
		local: map[string][]*Route{"": {{Splits: []*Split{{Backend: backend("any"), Weight: 100}}, Total: 100}}},
	}, {
		name: "the first rule for a host wins",
		ing: kingress(v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
			rule(v1alpha1.IngressVisibilityExternalIP, []string{"dup.example.com"},
				v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("first", 100, nil)}}),
			rule(v1alpha1.IngressVisibilityExternalIP, []string{"dup.example.com"},
				v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("second", 100, nil)}}),
		}}),
		external: map[string][]*Route{"dup.example.com": {{Splits: []*Split{{Backend: backend("first"), Weight: 100}}, Total: 100}}},
		local:    map[string][]*Route{"dup.example.com": {{Splits: []*Split{{Backend: backend("first"), Weight: 100}}, Total: 100}}},
	}, {
		name: "no rules",
		ing:  kingress(v1alpha1.IngressSpec{HTTPOption: v1alpha1.HTTPOptionEnabled}),
		err:  "missing field(s): spec.rules",
	}, {
		name: "splits not totalling 100",
		ing: kingress(v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
			rule(v1alpha1.IngressVisibilityExternalIP, []string{"a.example.com"},
				v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("a", 60, nil), split("b", 30, nil)}}),
		}}),
		err: "traffic split percentage must total to 100, but was 90",
	}, {
		name: "split into another namespace",
		ing: func() *v1alpha1.Ingress {
			s := split("x", 100, nil)
			s.ServiceNamespace = "other"
			return kingress(v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
				rule(v1alpha1.IngressVisibilityExternalIP, []string{"a.example.com"}, v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{s}}),
			}})
		}(),
		err: "service namespace must match ingress namespace",
	}, {
		name: "relative path",
		ing: kingress(v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
			rule(v1alpha1.IngressVisibilityExternalIP, []string{"a.example.com"},
				v1alpha1.HTTPIngressPath{Path: "foo", Splits: []v1alpha1.IngressBackendSplit{split("a", 100, nil)}}),
		}}),
		err: `rule 0: path 0: "foo" does not begin with /`,
	}, {
		name: "unknown visibility",
		ing: kingress(v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
			rule("Everywhere", []string{"a.example.com"},
				v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("a", 100, nil)}}),
		}}),
		err: `rule 0: unknown visibility "Everywhere"`,
	}} {
		t.Run(tc.name, func(t *testing.T) {
			before := tc.ing.DeepCopy()
			got, err := Translate(tc.ing)
			if !cmp.Equal(before, tc.ing) {
				t.Errorf("Translate changed its input: %s", cmp.Diff(before, tc.ing))
			}
			switch {
			case tc.errIs != nil:
				if !errors.Is(err, tc.errIs) {
					t.Fatalf("err = %v, want %v", err, tc.errIs)
				}
				return
			case tc.err != "":
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want one containing %q", err, tc.err)
				}
				return
			case err != nil:
				t.Fatal(err)
			}
			hash, _ := Hash(tc.ing)
			if got.Key != key || got.Hash != hash {
				t.Errorf("key %v hash %s, want %v %s", got.Key, got.Hash, key, hash)
			}
			for _, l := range Listeners {
				want := map[Listener]map[string][]*Route{External: tc.external, Local: tc.local}[l]
				if tc.local == nil && l == Local {
					want = tc.external // ExternalIP rules are served on both
				}
				gotRoutes := map[string][]*Route{}
				for h, v := range got.Hosts[l] {
					if v.Ingress != key || v.Hash != hash {
						t.Errorf("%s %q: from %v hash %s", l, h, v.Ingress, v.Hash)
					}
					if v.RedirectHTTPS != (tc.redirect && l == External) {
						t.Errorf("%s %q: redirect %v", l, h, v.RedirectHTTPS)
					}
					gotRoutes[h] = v.Routes
				}
				if want == nil {
					want = map[string][]*Route{}
				}
				if d := cmp.Diff(want, gotRoutes); d != "" {
					t.Errorf("%s listener (-want +got):\n%s", l, d)
				}
			}
		})
	}
}

// TestTranslateTLS: spec.tls gives the external virtual hosts it names
// (exactly or by wildcard) their Secret; cluster-local hosts and hosts it
// does not name have none.
func TestTranslateTLS(t *testing.T) {
	ing := kingress(v1alpha1.IngressSpec{
		Rules: []v1alpha1.IngressRule{
			rule(v1alpha1.IngressVisibilityExternalIP, []string{"a.example.com", "B.example.com", "x.y.example.com", "plain.example.org"},
				v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("a", 100, nil)}}),
			rule(v1alpha1.IngressVisibilityClusterLocal, []string{"a.default.svc.cluster.local"},
				v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("a", 100, nil)}}),
		},
		TLS: []v1alpha1.IngressTLS{
			{Hosts: []string{"a.example.com"}, SecretName: "exact", SecretNamespace: "certs"},
			{Hosts: []string{"*.example.com", "a.default.svc.cluster.local"}, SecretName: "wild", SecretNamespace: "certs"},
		},
		HTTPOption: v1alpha1.HTTPOptionRedirected,
	})
	got, err := Translate(ing)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]*SecretRef{
		"a.example.com":     {Namespace: "certs", Name: "exact"},
		"b.example.com":     {Namespace: "certs", Name: "wild"},
		"x.y.example.com":   nil, // a wildcard covers one label
		"plain.example.org": nil,
	}
	for h, w := range want {
		v := got.Hosts[External][h]
		if v == nil {
			t.Fatalf("external host %q missing", h)
		}
		if d := cmp.Diff(w, v.TLS); d != "" {
			t.Errorf("external %q TLS (-want +got):\n%s", h, d)
		}
		if !v.RedirectHTTPS {
			t.Errorf("external %q: not redirected", h)
		}
	}
	for h, v := range got.Hosts[Local] {
		if v.TLS != nil || v.RedirectHTTPS {
			t.Errorf("cluster-local %q: TLS %v redirect %v, want plain HTTP", h, v.TLS, v.RedirectHTTPS)
		}
	}
	cfg := Merge([]*Ingress{got})
	if s := cfg.TLS("A.Example.com"); s == nil || s.Name != "exact" {
		t.Errorf("Config.TLS(A.Example.com) = %v", s)
	}
	if s := cfg.TLS("unknown.example.com"); s != nil {
		t.Errorf("Config.TLS(unknown) = %v, want nil", s)
	}
}

// TestHash: the gateways' hash is Knative's (what its status prober
// expects), stable, and changes with the spec.
func TestHash(t *testing.T) {
	ing := knativeRoute()
	h1, err := Hash(ing)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := netingress.ComputeHash(ing)
	if h1 != fmt.Sprintf("%x", raw) || len(h1) != 64 {
		t.Errorf("hash %s is not knative.dev/networking's %x", h1, raw)
	}
	// InsertProbe (what Envoy-based ingresses do) announces the same hash.
	if probe, _ := netingress.InsertProbe(ing.DeepCopy()); probe != h1 {
		t.Errorf("InsertProbe hash %s, ours %s", probe, h1)
	}
	if h2, _ := Hash(ing.DeepCopy()); h2 != h1 {
		t.Errorf("hash not stable: %s then %s", h1, h2)
	}
	// Status and metadata other than namespace/name do not change it.
	other := ing.DeepCopy()
	other.Status.MarkNetworkConfigured()
	other.Generation = 7
	if h, _ := Hash(other); h != h1 {
		t.Error("status or generation changed the hash")
	}
	// A KIngress stored without defaults (no webhook) hashes as its
	// defaulted form: what the controller's prober is handed.
	stored := kingress(v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		rule("", []string{"raw.example.com"}, v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("raw", 0, nil)}}),
	}})
	defaulted := stored.DeepCopy()
	defaulted.SetDefaults(context.Background())
	if cmp.Equal(stored.Spec, defaulted.Spec) {
		t.Fatal("the stored KIngress has nothing to default")
	}
	hr, _ := Hash(stored)
	if hd, _ := Hash(defaulted); hr != hd {
		t.Errorf("stored %s, defaulted %s", hr, hd)
	}
	if want, _ := netingress.ComputeHash(defaulted); hr != fmt.Sprintf("%x", want) {
		t.Errorf("stored KIngress hash %s, want ComputeHash of the defaulted one %x", hr, want)
	}
	changed := ing.DeepCopy()
	changed.Spec.Rules[1].HTTP.Paths[0].Splits[0].ServiceName = "hello-00002"
	if h, _ := Hash(changed); h == h1 {
		t.Error("a new split target kept the hash")
	}
}

func TestIsSpright(t *testing.T) {
	for ann, want := range map[string]bool{
		Class: true, "kourier.ingress.networking.knative.dev": false, "": false,
	} {
		a := map[string]string{}
		if ann != "" {
			a[networking.IngressClassAnnotationKey] = ann
		}
		if got := IsSpright(a); got != want {
			t.Errorf("class %q: %v, want %v", ann, got, want)
		}
	}
}

func TestMatch(t *testing.T) {
	ing := kingress(v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		rule(v1alpha1.IngressVisibilityExternalIP, []string{"m.example.com"},
			v1alpha1.HTTPIngressPath{Path: "/foo", Headers: map[string]v1alpha1.HeaderMatch{"X-Tag": {Exact: "a"}},
				Splits: []v1alpha1.IngressBackendSplit{split("foo-a", 100, nil)}},
			v1alpha1.HTTPIngressPath{Path: "/foo", Splits: []v1alpha1.IngressBackendSplit{split("foo", 100, nil)}},
			v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("rest", 100, nil)}},
		),
	}})
	tr, err := Translate(ing)
	if err != nil {
		t.Fatal(err)
	}
	v := tr.Hosts[External]["m.example.com"]
	for _, tc := range []struct {
		path, tag, want string
	}{
		{"/foo", "a", "foo-a"},
		{"/foo/bar", "a", "foo-a"},
		{"/foo", "b", "foo"},
		{"/foo", "", "foo"},
		{"/foobar", "", "foo"}, // a literal prefix, as Envoy's
		{"/fo", "a", "rest"},
		{"/", "", "rest"},
	} {
		h := http.Header{}
		if tc.tag != "" {
			h.Set("X-Tag", tc.tag)
		}
		r := v.Match(tc.path, h.Get)
		if r == nil || r.Splits[0].Backend.Name != tc.want {
			t.Errorf("%s tag %q: got %+v, want %s", tc.path, tc.tag, r, tc.want)
		}
	}
	// A host with only a /foo route has nothing for /.
	only := &VirtualHost{Routes: v.Routes[1:2]}
	if r := only.Match("/", http.Header{}.Get); r != nil {
		t.Errorf("/ matched %+v", r)
	}
}

func TestPick(t *testing.T) {
	r := &Route{Splits: []*Split{{Weight: 70}, {Weight: 0}, {Weight: 30}}, Total: 100}
	counts := map[*Split]int{}
	for x := 0; x < r.Total; x++ {
		counts[r.Pick(x)]++
	}
	if counts[r.Splits[0]] != 70 || counts[r.Splits[1]] != 0 || counts[r.Splits[2]] != 30 {
		t.Errorf("picks %d/%d/%d, want 70/0/30", counts[r.Splits[0]], counts[r.Splits[1]], counts[r.Splits[2]])
	}
}

func TestMerge(t *testing.T) {
	mk := func(name string, created time.Time, host, svc string) *Ingress {
		ing := kingress(v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
			rule(v1alpha1.IngressVisibilityExternalIP, []string{host},
				v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split(svc, 100, nil)}}),
		}})
		ing.Name = name
		ing.CreationTimestamp = metav1.NewTime(created)
		tr, err := Translate(ing)
		if err != nil {
			t.Fatal(err)
		}
		return tr
	}
	t0 := time.Unix(1700000000, 0)
	old := mk("old", t0, "same.example.com", "old")
	young := mk("young", t0.Add(time.Minute), "same.example.com", "young")
	twin := mk("twin", t0, "same.example.com", "twin") // same age as old: name order
	other := mk("other", t0.Add(time.Hour), "other.example.com", "other")
	for _, order := range [][]*Ingress{{old, young, twin, other}, {other, twin, young, old}} {
		c := Merge(order)
		got := c.Lookup(External, "same.example.com")
		if got == nil || got.Ingress.Name != "old" {
			t.Fatalf("same.example.com served by %+v, want old", got)
		}
		if v := c.Lookup(External, "other.example.com"); v == nil || v.Ingress.Name != "other" {
			t.Errorf("other.example.com served by %+v", v)
		}
		if c.Lookup(External, "missing.example.com") != nil {
			t.Error("an unknown host matched")
		}
		want := []string{
			`external host "same.example.com": served by default/old, not by default/twin`,
			`cluster-local host "same.example.com": served by default/old, not by default/twin`,
			`external host "same.example.com": served by default/old, not by default/young`,
			`cluster-local host "same.example.com": served by default/old, not by default/young`,
		}
		var gotC []string
		for _, cf := range c.Conflicts {
			gotC = append(gotC, cf.String())
		}
		if d := cmp.Diff(want, gotC); d != "" {
			t.Errorf("conflicts (-want +got):\n%s", d)
		}
		if len(c.Ingresses) != 4 || c.Ingresses[young.Key] != young.Hash {
			t.Errorf("ingresses %v", c.Ingresses)
		}
	}
	// The catch-all answers only what no exact host does.
	catch := kingress(v1alpha1.IngressSpec{Rules: []v1alpha1.IngressRule{
		rule(v1alpha1.IngressVisibilityExternalIP, nil, v1alpha1.HTTPIngressPath{Splits: []v1alpha1.IngressBackendSplit{split("any", 100, nil)}}),
	}})
	catch.Name = "catch"
	ct, err := Translate(catch)
	if err != nil {
		t.Fatal(err)
	}
	c := Merge([]*Ingress{ct, other})
	if v := c.Lookup(External, "nowhere.example.com"); v == nil || v.Ingress.Name != "catch" {
		t.Errorf("catch-all: %+v", v)
	}
	if v := c.Exact(External, "nowhere.example.com"); v != nil {
		t.Errorf("Exact found %+v", v)
	}
	if v := c.Lookup(External, "other.example.com"); v == nil || v.Ingress.Name != "other" {
		t.Errorf("exact host lost to the catch-all: %+v", v)
	}
}
