package routing

import (
	"errors"
	"reflect"
	"sort"
	"testing"

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
