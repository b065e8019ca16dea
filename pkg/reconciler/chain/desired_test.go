package chain

import (
	"reflect"
	"testing"

	servingv1 "knative.dev/serving/pkg/apis/serving/v1"
)

func TestRoutedRevisions(t *testing.T) {
	pct := func(p int64) *int64 { return &p }
	svc := &servingv1.Service{}
	if got := RoutedRevisions(svc); got != nil {
		t.Errorf("no traffic reported: %v, want nil", got)
	}
	svc.Status.Traffic = []servingv1.TrafficTarget{
		{RevisionName: "f-00003", Percent: pct(70)},
		{RevisionName: "f-00001", Percent: pct(30)},
		{RevisionName: "f-00002", Percent: pct(0), Tag: "canary"},
		{RevisionName: "f-00003", Percent: pct(0), Tag: "latest"},
	}
	if got := RoutedRevisions(svc); !reflect.DeepEqual(got, []string{"f-00001", "f-00003"}) {
		t.Errorf("routed %v, want f-00001 f-00003 (a 0%% tag is not routed)", got)
	}
}
