package chainwatch_test

import (
	"context"
	"fmt"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/spright-dev/spright/internal/testlog"
	"github.com/spright-dev/spright/pkg/apis/spright/v1alpha1"
	"github.com/spright-dev/spright/pkg/chainwatch"
	"github.com/spright-dev/spright/pkg/gateway"
	"github.com/spright-dev/spright/pkg/shm"
)

func newWatcher(t *testing.T) (*gateway.Gateway, *chainwatch.Watcher) {
	t.Helper()
	return newWatcherNamed(t, "first")
}

func newWatcherNamed(t *testing.T, name string) (*gateway.Gateway, *chainwatch.Watcher) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("needs root (eBPF, bpffs)")
	}
	log := testlog.CleanupLogger(t, zapcore.InfoLevel)
	g, err := gateway.New(gateway.Config{
		ControlSocket: filepath.Join(t.TempDir(), "ctl.sock"),
		PinDir:        fmt.Sprintf("/sys/fs/bpf/spright-chainwatch-%d-%s", os.Getpid(), name),
		Logger:        log,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close(); g.Unpin() })
	return g, chainwatch.New(g, chainwatch.Options{Pool: shm.Config{Slots: 8, SlotSize: 4096, NoHugePages: true}}, log)
}

func shop(revs ...string) *v1alpha1.Chain {
	return &v1alpha1.Chain{
		ObjectMeta: metav1.ObjectMeta{Namespace: "ns1", Name: "shop"},
		Spec: v1alpha1.ChainSpec{
			Entry: "frontend", Protocol: "http",
			Functions: []v1alpha1.ChainFunction{{Name: "cart", Revisions: revs}, {Name: "frontend", Revisions: []string{"frontend-00001"}}},
			Routes: []v1alpha1.ChainRoute{
				{From: "gateway", Topic: "*", To: []string{"frontend"}},
				{From: "frontend", Topic: "*", To: []string{"cart"}},
			},
		},
	}
}

func TestApplyLookupDelete(t *testing.T) {
	g, w := newWatcher(t)
	// A chain that was never valid has no spec: nothing to load.
	if err := w.Apply(&v1alpha1.Chain{ObjectMeta: metav1.ObjectMeta{Namespace: "ns1", Name: "broken"}}); err != nil {
		t.Fatal(err)
	}
	if w.Chain(types.NamespacedName{Namespace: "ns1", Name: "broken"}) != nil {
		t.Fatal("a chain without a valid spec was loaded")
	}
	if err := w.Apply(shop("cart-00001")); err != nil {
		t.Fatal(err)
	}
	key := types.NamespacedName{Namespace: "ns1", Name: "shop"}
	c := w.Chain(key)
	if c == nil || c.Name() != "ns1.shop" {
		t.Fatalf("loaded %v", c)
	}
	if m, ok := g.RevisionChain(types.NamespacedName{Namespace: "ns1", Name: "cart-00001"}); !ok || m.Function != "cart" || m.Chain != "ns1.shop" {
		t.Errorf("cart-00001 → %+v %v", m, ok)
	}

	for _, tc := range []struct {
		host, header string
		want         bool
	}{
		{"shop-chain.ns1.svc.cluster.local", "", true},
		{"shop-chain.ns1.svc.cluster.local:80", "", true},
		{"shop-chain.ns1", "", true},
		{"shop.ns1.example.com", "", true},
		{"anything.example.com", "ns1/shop", true},
		{"shop-chain.ns2.svc.cluster.local", "", false},
		{"shop.ns1.example.com", "ns2/shop", false},
		{"localhost", "", false},
	} {
		r := httptest.NewRequest("POST", "/", nil)
		r.Host = tc.host
		if tc.header != "" {
			r.Header.Set(chainwatch.ChainHeader, tc.header)
		}
		if got := w.Lookup(r) != nil; got != tc.want {
			t.Errorf("host %q header %q: found %v, want %v", tc.host, tc.header, got, tc.want)
		}
	}

	// A new revision replaces the old one: mapped and unmapped at once.
	if err := w.Apply(shop("cart-00002")); err != nil {
		t.Fatal(err)
	}
	if _, ok := g.RevisionChain(types.NamespacedName{Namespace: "ns1", Name: "cart-00001"}); ok {
		t.Error("cart-00001 still mapped after it left the chain")
	}
	if _, ok := g.RevisionChain(types.NamespacedName{Namespace: "ns1", Name: "cart-00002"}); !ok {
		t.Error("cart-00002 not mapped")
	}
	if w.Updated.Load() != 0 {
		t.Errorf("a revision change counted as an update of the routes")
	}
	// A route change applies in place, to the same gateway chain.
	changed := shop("cart-00002")
	changed.Spec.Routes[1].Topic = "buy"
	if err := w.Apply(changed); err != nil {
		t.Fatal(err)
	}
	if w.Updated.Load() != 1 || c.Updates.Load() != 1 {
		t.Errorf("after a route change: watcher updated %d, gateway chain updates %d, want 1 and 1", w.Updated.Load(), c.Updates.Load())
	}
	if w.Chain(key) != c {
		t.Error("a route change replaced the gateway chain")
	}
	if fe, _ := c.Routes().FunctionIndex("frontend"); len(c.Routes().Lookup(fe, "buy")) == 0 {
		t.Error("the new topic has no route in the gateway's table")
	}

	w.Delete(key)
	if w.Chain(key) != nil {
		t.Error("deleted chain still routed")
	}
	if _, ok := g.RevisionChain(types.NamespacedName{Namespace: "ns1", Name: "cart-00002"}); ok {
		t.Error("revision still mapped after the chain was deleted")
	}
}

func TestApplyRefusesUnloadableSpec(t *testing.T) {
	_, w := newWatcher(t)
	c := shop("cart-00001")
	c.Spec.Routes = append(c.Spec.Routes, v1alpha1.ChainRoute{From: "frontend", Topic: "x", To: []string{"ghost"}})
	if err := w.Apply(c); err == nil {
		t.Fatal("a spec routing to a non-member was loaded")
	}
}

// TestChainIDStableAcrossWatchers: a chain gets the same ID from a new
// watcher (a restarted gateway), so the gateway can adopt the pool it kept.
func TestChainIDStableAcrossWatchers(t *testing.T) {
	_, w1 := newWatcher(t)
	if err := w1.Apply(shop("cart-00001")); err != nil {
		t.Fatal(err)
	}
	id1 := w1.Chain(types.NamespacedName{Namespace: "ns1", Name: "shop"}).ID()
	_, w2 := newWatcherNamed(t, "second")
	if err := w2.Apply(shop("cart-00001")); err != nil {
		t.Fatal(err)
	}
	if id2 := w2.Chain(types.NamespacedName{Namespace: "ns1", Name: "shop"}).ID(); id2 != id1 {
		t.Errorf("chain ID %d, then %d from another watcher", id1, id2)
	}
	if id1 == 0 || id1 == 0xFFFF {
		t.Errorf("reserved chain ID %d", id1)
	}
}

// TestDeletedChainCreatedAgain: `kn service delete` of a chain's members,
// then `kn service create` of them again, deletes and re-creates the Chain.
// The gateway keeps a deleted chain's pool until it restarts; the new Chain
// used to be refused ("chain already exists") and never served (seen on the
// real cluster). It is served again, with the pool kept.
func TestDeletedChainCreatedAgain(t *testing.T) {
	g, w := newWatcher(t)
	key := types.NamespacedName{Namespace: "ns1", Name: "shop"}
	if err := w.Apply(shop("cart-00001")); err != nil {
		t.Fatal(err)
	}
	first := w.Chain(key)
	w.Delete(key)
	if err := w.Apply(shop("cart-00003")); err != nil {
		t.Fatalf("chain created again: %v", err)
	}
	again := w.Chain(key)
	if again == nil {
		t.Fatal("chain created again is not served")
	}
	if again != first {
		t.Errorf("chain created again got a new gateway chain instead of the kept one")
	}
	if m, ok := g.RevisionChain(types.NamespacedName{Namespace: "ns1", Name: "cart-00003"}); !ok || m.Function != "cart" {
		t.Errorf("cart-00003 → %+v %v", m, ok)
	}
	r := httptest.NewRequest("POST", "/", nil)
	r.Host = "shop-chain.ns1.svc.cluster.local"
	if w.Lookup(r) != again {
		t.Error("the chain's host does not find it")
	}
	if w.Updated.Load() != 0 {
		t.Errorf("the same spec created again counted as an update")
	}
}

// TestMembersAddedAndRemovedInPlace: a member joins (kn service create with
// the chain's annotations), then another leaves: each applies to the
// loaded chain at once, the new member's revision maps to it, the gone
// member's revision is unmapped and its function can no longer register.
func TestMembersAddedAndRemovedInPlace(t *testing.T) {
	g, w := newWatcher(t)
	key := types.NamespacedName{Namespace: "ns1", Name: "shop"}
	if err := w.Apply(shop("cart-00001")); err != nil {
		t.Fatal(err)
	}
	c := w.Chain(key)
	grown := shop("cart-00001")
	grown.Spec.Functions = append(grown.Spec.Functions, v1alpha1.ChainFunction{Name: "payment", Revisions: []string{"payment-00001"}})
	grown.Spec.Routes = append(grown.Spec.Routes, v1alpha1.ChainRoute{From: "frontend", Topic: "checkout", To: []string{"payment"}})
	if err := w.Apply(grown); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Routes().FunctionIndex("payment"); !ok {
		t.Fatal("payment not in the gateway's table after it joined")
	}
	if m, ok := g.RevisionChain(types.NamespacedName{Namespace: "ns1", Name: "payment-00001"}); !ok || m.Function != "payment" {
		t.Errorf("payment-00001 → %+v %v", m, ok)
	}
	shrunk := grown.DeepCopy()
	shrunk.Spec.Functions = []v1alpha1.ChainFunction{shrunk.Spec.Functions[1], shrunk.Spec.Functions[2]} // cart leaves
	shrunk.Spec.Routes = []v1alpha1.ChainRoute{
		{From: "gateway", Topic: "*", To: []string{"frontend"}},
		{From: "frontend", Topic: "*", To: []string{"payment"}},
	}
	if err := w.Apply(shrunk); err != nil {
		t.Fatal(err)
	}
	if _, ok := c.Routes().FunctionIndex("cart"); ok {
		t.Error("cart still registrable after it left the chain")
	}
	if _, ok := g.RevisionChain(types.NamespacedName{Namespace: "ns1", Name: "cart-00001"}); ok {
		t.Error("cart-00001 still mapped after cart left")
	}
	if w.Updated.Load() != 2 || w.Chain(key) != c {
		t.Errorf("updated %d (want 2), same chain %v", w.Updated.Load(), w.Chain(key) == c)
	}
}

// TestChainProtocolAdapter: the Chain's declared protocol is attached in
// front of its HTTP in Kubernetes mode too (it used to be ignored there):
// a cloudevents chain refuses a plain POST that is no CloudEvent (400 from
// the adapter, before any member is needed), and a change back to http
// takes the adapter away.
func TestChainProtocolAdapter(t *testing.T) {
	_, w := newWatcher(t)
	c := shop("cart-00001")
	c.Spec.Protocol = "cloudevents"
	if err := w.Apply(c); err != nil {
		t.Fatal(err)
	}
	post := func() int {
		r := httptest.NewRequest("POST", "/", strings.NewReader("not an event"))
		r.Host = "shop-chain.ns1.svc.cluster.local"
		ctx, cancel := context.WithTimeout(r.Context(), 300*time.Millisecond)
		defer cancel()
		rec := httptest.NewRecorder()
		w.Handler().ServeHTTP(rec, r.WithContext(ctx))
		return rec.Code
	}
	if code := post(); code != 400 {
		t.Errorf("plain POST to a cloudevents chain: %d, want 400 from the CloudEvents adapter", code)
	}
	c2 := c.DeepCopy()
	c2.Spec.Protocol = "http"
	if err := w.Apply(c2); err != nil {
		t.Fatal(err)
	}
	if code := post(); code == 400 {
		t.Error("after the change to http the CloudEvents adapter still answers")
	}
}
