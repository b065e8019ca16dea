package routing

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/spright-dev/spright/pkg/shm"
)

func table(t *testing.T, spec Spec) *RouteTable {
	t.Helper()
	rt, err := Init(make([]byte, Size), spec)
	if err != nil {
		t.Fatal(err)
	}
	return rt
}

// walk follows a request from the gateway until it returns, naming each function visited.
func walk(t *testing.T, rt *RouteTable, topic string) []string {
	t.Helper()
	var h shm.SlotHeader
	rt.Begin(&h)
	var path []string
	cur := Gateway
	for {
		next, err := rt.NextHop(&h, cur, topic)
		if err != nil {
			t.Fatalf("after %v: %v", path, err)
		}
		if next == Gateway {
			return path
		}
		path = append(path, rt.FunctionName(next))
		cur = next
	}
}

func TestHelloPaths(t *testing.T) {
	fns := []FunctionSpec{{Name: "upper"}, {Name: "reverse"}}
	perHop := table(t, Spec{Functions: fns, Routes: []Route{
		{From: GatewayName, Topic: "*", To: []string{"upper"}},
		{From: "upper", Topic: "*", To: []string{"reverse"}},
	}})
	onGateway := table(t, Spec{Functions: fns, Routes: []Route{
		{From: GatewayName, Topic: "*", To: []string{"upper", "reverse"}},
	}})
	for name, rt := range map[string]*RouteTable{"per hop": perHop, "itinerary": onGateway} {
		if got := walk(t, rt, ""); len(got) != 2 || got[0] != "upper" || got[1] != "reverse" {
			t.Errorf("%s: path %v", name, got)
		}
	}
}

func TestTopicRouting(t *testing.T) {
	rt := table(t, Spec{
		Functions: []FunctionSpec{{Name: "frontend"}, {Name: "cart"}, {Name: "payment"}, {Name: "shipping"}},
		Routes: []Route{
			{From: GatewayName, Topic: "*", To: []string{"frontend"}},
			{From: "frontend", Topic: "*", To: []string{"cart"}},
			{From: "frontend", Topic: "checkout", To: []string{"payment", "shipping"}},
		},
	})
	if got := walk(t, rt, "browse"); len(got) != 2 || got[1] != "cart" {
		t.Errorf("default topic path %v", got)
	}
	if got := walk(t, rt, "checkout"); len(got) != 3 || got[1] != "payment" || got[2] != "shipping" {
		t.Errorf("checkout path %v", got)
	}
}

func TestBoutiqueChainRevisits(t *testing.T) {
	ch1 := []string{"currency", "catalog", "cart", "currency", "currency", "currency", "currency", "currency", "currency", "currency", "ad"}
	rt := table(t, Spec{
		Functions: []FunctionSpec{{Name: "currency"}, {Name: "catalog"}, {Name: "cart"}, {Name: "ad"}},
		Routes:    []Route{{From: GatewayName, Topic: "ch1", To: ch1}},
	})
	got := walk(t, rt, "ch1")
	if len(got) != len(ch1) {
		t.Fatalf("path %v", got)
	}
	for i := range ch1 {
		if got[i] != ch1[i] {
			t.Fatalf("hop %d = %s, want %s", i, got[i], ch1[i])
		}
	}
	if got := walk(t, rt, "unknown"); len(got) != 0 {
		t.Errorf("unrouted topic visited %v", got)
	}
}

func TestLoopIsBounded(t *testing.T) {
	rt := table(t, Spec{
		Functions: []FunctionSpec{{Name: "a"}, {Name: "b"}},
		Routes: []Route{
			{From: GatewayName, Topic: "*", To: []string{"a"}},
			{From: "a", Topic: "*", To: []string{"b"}},
			{From: "b", Topic: "*", To: []string{"a"}},
		},
	})
	var h shm.SlotHeader
	cur := Gateway
	for i := 0; i < 2*MaxHops; i++ {
		next, err := rt.NextHop(&h, cur, "")
		if errors.Is(err, ErrTooManyHops) {
			return
		}
		cur = next
	}
	t.Fatal("a loop was never stopped")
}

func TestSpecValidation(t *testing.T) {
	for name, s := range map[string]Spec{
		"unknown target": {Functions: []FunctionSpec{{Name: "a"}}, Routes: []Route{{From: "a", Topic: "*", To: []string{"x"}}}},
		"unknown source": {Functions: []FunctionSpec{{Name: "a"}}, Routes: []Route{{From: "x", Topic: "*", To: []string{"a"}}}},
		"duplicate fn":   {Functions: []FunctionSpec{{Name: "a"}, {Name: "a"}}},
		"reserved name":  {Functions: []FunctionSpec{{Name: GatewayName}}},
		"empty topic":    {Functions: []FunctionSpec{{Name: "a"}}, Routes: []Route{{From: "a", To: []string{"a"}}}},
		"to gateway":     {Functions: []FunctionSpec{{Name: "a"}}, Routes: []Route{{From: "a", Topic: "*", To: []string{GatewayName}}}},
		"dup route":      {Functions: []FunctionSpec{{Name: "a"}}, Routes: []Route{{From: "a", Topic: "*", To: []string{"a"}}, {From: "a", Topic: "*", To: []string{"a"}}}},
	} {
		if err := s.Validate(); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestPickResidualCapacity(t *testing.T) {
	region := make([]byte, Size)
	rt, err := Init(region, Spec{Functions: []FunctionSpec{{Name: "f", Concurrency: 10}}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := rt.Pick(1, nil); !errors.Is(err, ErrNoInstance) {
		t.Fatalf("Pick with no instance: %v", err)
	}
	for _, id := range []uint32{11, 12, 13} {
		if err := rt.AddInstance(1, id); err != nil {
			t.Fatal(err)
		}
	}
	load := map[uint32]int64{11: 5, 12: 2, 13: 7}
	if id, _ := rt.Pick(1, func(i uint32) int64 { return load[i] }); id != 12 {
		t.Fatalf("picked %d, want 12 (most residual capacity)", id)
	}
	// Ties are spread round-robin.
	seen := map[uint32]int{}
	for i := 0; i < 30; i++ {
		id, _ := rt.Pick(1, func(uint32) int64 { return 0 })
		seen[id]++
	}
	if len(seen) != 3 || seen[11] != 10 {
		t.Fatalf("tie spread %v", seen)
	}
	// A reader that maps the same region sees the writer's changes.
	rd, err := Open(region)
	if err != nil {
		t.Fatal(err)
	}
	rt.RemoveInstance(1, 12)
	if ids := rd.Instances(1); len(ids) != 2 || ids[0] != 11 || ids[1] != 13 {
		t.Fatalf("reader sees %v", ids)
	}
	if _, err := Open(make([]byte, Size)); err == nil {
		t.Fatal("Open accepted an empty region")
	}
}

func TestUnserved(t *testing.T) {
	rt := table(t, Spec{
		Functions: []FunctionSpec{{Name: "upper"}, {Name: "reverse"}, {Name: "echo"}, {Name: "pay"}},
		Routes: []Route{
			{From: GatewayName, Topic: "*", To: []string{"upper"}},
			{From: "upper", Topic: "*", To: []string{"reverse", "echo"}},
			{From: "upper", Topic: "checkout", To: []string{"pay"}},
		},
	})
	names := func(fns []uint8) (out []string) {
		for _, f := range fns {
			out = append(out, rt.FunctionName(f))
		}
		sort.Strings(out)
		return out
	}
	if got := names(rt.Unserved("")); !reflect.DeepEqual(got, []string{"echo", "reverse", "upper"}) {
		t.Fatalf("no instances, topic \"\": unserved %v, want echo, reverse, upper (not pay: only checkout reaches it)", got)
	}
	if got := names(rt.Unserved("checkout")); !reflect.DeepEqual(got, []string{"pay", "upper"}) {
		t.Fatalf("no instances, topic checkout: unserved %v, want pay, upper", got)
	}
	up, _ := rt.FunctionIndex("upper")
	echo, _ := rt.FunctionIndex("echo")
	rt.AddInstance(up, 7)
	rt.AddInstance(echo, 8)
	if got := names(rt.Unserved("")); !reflect.DeepEqual(got, []string{"reverse"}) {
		t.Errorf("unserved %v, want [reverse]", got)
	}
	rev, _ := rt.FunctionIndex("reverse")
	rt.AddInstance(rev, 9)
	if got := rt.Unserved("x"); got != nil {
		t.Errorf("every reachable function served, yet unserved %v (want nil: no allocation on the request path)", got)
	}
	if got := names(rt.Unserved("checkout")); !reflect.DeepEqual(got, []string{"pay"}) {
		t.Errorf("topic checkout: unserved %v, want [pay]", got)
	}
	rt.RemoveInstance(rev, 9)
	if got := names(rt.Unserved("")); !reflect.DeepEqual(got, []string{"reverse"}) {
		t.Errorf("after reverse left: unserved %v", got)
	}
}

// TestUpdateWhileInFlight: an Update changes the routes of new requests
// only; a request dispatched before it finishes on the routes it started
// with, and a function removed from the chain keeps its index and its
// instances until they leave, while none may join it.
func TestUpdateWhileInFlight(t *testing.T) {
	rt := table(t, Spec{
		Functions: []FunctionSpec{{Name: "upper"}, {Name: "reverse"}},
		Routes: []Route{
			{From: GatewayName, Topic: "*", To: []string{"upper"}},
			{From: "upper", Topic: "*", To: []string{"reverse"}},
		},
	})
	up, _ := rt.FunctionIndex("upper")
	rev, _ := rt.FunctionIndex("reverse")
	rt.AddInstance(rev, 42)

	// A request in flight: dispatched to upper on epoch 0.
	var old shm.SlotHeader
	rt.Begin(&old)
	if next, err := rt.NextHop(&old, Gateway, ""); err != nil || next != up {
		t.Fatalf("dispatch: %d %v", next, err)
	}

	// reverse leaves, echo joins: upper now goes to echo.
	err := rt.Update(Spec{
		Functions: []FunctionSpec{{Name: "upper", Concurrency: 4}, {Name: "echo"}},
		Routes: []Route{
			{From: GatewayName, Topic: "*", To: []string{"upper"}},
			{From: "upper", Topic: "*", To: []string{"echo"}},
		},
	}, func(uint16) bool { return false }, time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if rt.Epoch() != 1 {
		t.Fatalf("epoch %d after one update", rt.Epoch())
	}
	if i, ok := rt.FunctionIndex("upper"); !ok || i != up {
		t.Errorf("upper moved from index %d to %d (%v)", up, i, ok)
	}
	if _, ok := rt.FunctionIndex("reverse"); ok {
		t.Error("a removed function is still found: its instances could register")
	}
	echo, ok := rt.FunctionIndex("echo")
	if !ok || echo == rev {
		t.Fatalf("echo got index %d (%v); reverse's index %d must not be reused", echo, ok, rev)
	}
	// The old request goes on to reverse, whose instance still serves it.
	if next, err := rt.NextHop(&old, up, ""); err != nil || next != rev {
		t.Fatalf("in-flight request after upper: %d %v, want reverse (%d)", next, err, rev)
	}
	if id, err := rt.Pick(rev, nil); err != nil || id != 42 {
		t.Errorf("removed function's instance: %d %v", id, err)
	}
	// A new request goes to echo.
	if got := walk(t, rt, ""); !reflect.DeepEqual(got, []string{"upper", "echo"}) {
		t.Errorf("new request's path %v, want upper echo", got)
	}
	if got := rt.FunctionName(rev); got != "reverse" {
		t.Errorf("removed function's name %q (logs and metrics still need it)", got)
	}

	// reverse comes back: its old index again, no longer removed.
	if err := rt.Update(Spec{
		Functions: []FunctionSpec{{Name: "upper"}, {Name: "echo"}, {Name: "reverse"}},
		Routes:    []Route{{From: GatewayName, Topic: "*", To: []string{"upper", "reverse"}}},
	}, nil, 0); err != nil {
		t.Fatal(err)
	}
	if i, ok := rt.FunctionIndex("reverse"); !ok || i != rev {
		t.Errorf("reverse back at index %d (%v), want %d", i, ok, rev)
	}
	if got := walk(t, rt, ""); !reflect.DeepEqual(got, []string{"upper", "reverse"}) {
		t.Errorf("path %v after the second update", got)
	}
}

// TestUpdateWaitsForTheOldRouteSet: the second Update overwrites the set
// the first one left, so it waits until no request is on it; after the
// drain time it writes anyway and says so.
func TestUpdateWaitsForTheOldRouteSet(t *testing.T) {
	spec := func(to string) Spec {
		return Spec{Functions: []FunctionSpec{{Name: "a"}, {Name: "b"}},
			Routes: []Route{{From: GatewayName, Topic: "*", To: []string{to}}}}
	}
	rt := table(t, spec("a"))
	var calls []uint16
	if err := rt.Update(spec("b"), func(e uint16) bool { calls = append(calls, e); return true }, time.Second); err != nil {
		t.Fatal(err)
	}
	if len(calls) != 0 {
		t.Errorf("first update asked about epochs %v: set 1 was never used", calls)
	}
	var inFlight atomic.Bool
	inFlight.Store(true)
	go func() { time.Sleep(50 * time.Millisecond); inFlight.Store(false) }()
	start := time.Now()
	if err := rt.Update(spec("a"), func(e uint16) bool {
		if e != 0 {
			t.Errorf("second update waits on epoch %d, want 0", e)
		}
		return inFlight.Load()
	}, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < 50*time.Millisecond {
		t.Errorf("second update returned after %v, before the request on epoch 0 finished", waited)
	}
	err := rt.Update(spec("b"), func(uint16) bool { return true }, 20*time.Millisecond)
	if !errors.Is(err, ErrDrainTimeout) {
		t.Errorf("update with a request stuck: %v, want ErrDrainTimeout", err)
	}
	if got := walk(t, rt, ""); !reflect.DeepEqual(got, []string{"b"}) {
		t.Errorf("after a drain timeout the update still applies: path %v", got)
	}
}

func TestUpdateRefusals(t *testing.T) {
	rt := table(t, Spec{Functions: []FunctionSpec{{Name: "a"}},
		Routes: []Route{{From: GatewayName, Topic: "*", To: []string{"a"}}}})
	if err := rt.Update(Spec{Functions: []FunctionSpec{{Name: "a"}},
		Routes: []Route{{From: GatewayName, Topic: "*", To: []string{"nope"}}}}, nil, 0); !errors.Is(err, ErrUnknownFunc) {
		t.Errorf("route to an unknown function: %v", err)
	}
	if rt.Epoch() != 0 {
		t.Error("a refused update changed the epoch")
	}
	// Every update replaces all functions: indices run out after 63
	// distinct names, with a clear error, and the table is unchanged.
	var err error
	for i := 0; i < MaxFunctions && err == nil; i++ {
		name := fmt.Sprintf("f%d", i)
		err = rt.Update(Spec{Functions: []FunctionSpec{{Name: name}},
			Routes: []Route{{From: GatewayName, Topic: "*", To: []string{name}}}}, nil, 0)
	}
	if !errors.Is(err, ErrReconfigure) || !strings.Contains(err.Error(), "restart the gateway") {
		t.Errorf("after %d distinct functions: %v", MaxFunctions, err)
	}
}

// TestPickPrefersLocal: another node's instance is picked only when no
// local one has capacity left.
func TestPickPrefersLocal(t *testing.T) {
	rt := table(t, Spec{Functions: []FunctionSpec{{Name: "f", Concurrency: 2}},
		Routes: []Route{{From: GatewayName, Topic: "*", To: []string{"f"}}}})
	f, _ := rt.FunctionIndex("f")
	remote := RemoteBit | 5
	rt.AddInstance(f, remote)
	if id, err := rt.Pick(f, nil); err != nil || id != remote {
		t.Fatalf("only a remote instance: %d %v", id, err)
	}
	rt.AddInstance(f, 7)
	busy := map[uint32]int64{}
	inflight := func(id uint32) int64 { return busy[id] }
	for i := 0; i < 10; i++ {
		if id, _ := rt.Pick(f, inflight); id != 7 {
			t.Fatalf("pick %d: %d, want the local instance 7 while it has capacity", i, id)
		}
	}
	busy[7] = 2 // at its concurrency
	if id, _ := rt.Pick(f, inflight); id != remote {
		t.Errorf("local instance full: picked %d, want the remote %d", id, remote)
	}
	busy[remote] = 5 // the remote one is fuller still
	if id, _ := rt.Pick(f, inflight); id != 7 {
		t.Errorf("both full: picked %d, want the local 7 (less over capacity)", id)
	}
	if IsRemote(1<<31 | 3) {
		t.Error("a pod's proxied metrics entry counted as a remote instance")
	}
}
