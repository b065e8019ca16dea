package ingress

import (
	"testing"

	"knative.dev/pkg/configmap"
	. "knative.dev/pkg/reconciler/testing"

	_ "knative.dev/networking/pkg/client/injection/informers/networking/v1alpha1/ingress/fake"
	_ "knative.dev/pkg/client/injection/kube/client/fake"
	_ "knative.dev/pkg/system/testing"
)

func TestNewController(t *testing.T) {
	ctx, cancel, _ := SetupFakeContextWithCancel(t)
	defer cancel()
	impl := NewController(ctx, configmap.NewStaticWatcher())
	if impl == nil {
		t.Fatal("no controller")
	}
	r := impl.Reconciler
	if r == nil {
		t.Fatal("no reconciler")
	}
}
