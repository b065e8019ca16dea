package peerwatch

import (
	"bytes"
	"context"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
)

func TestEnsureKey(t *testing.T) {
	kc := fake.NewSimpleClientset()
	ctx := context.Background()
	k1, err := EnsureKey(ctx, kc, "spright-system", "spright-peer-key")
	if err != nil || len(k1) != 32 {
		t.Fatalf("first: %d bytes, %v", len(k1), err)
	}
	k2, err := EnsureKey(ctx, kc, "spright-system", "spright-peer-key")
	if err != nil || !bytes.Equal(k1, k2) {
		t.Fatalf("second gateway got another key (%v)", err)
	}
	kc.CoreV1().Secrets("x").Create(ctx, &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "short", Namespace: "x"},
		Data: map[string][]byte{KeyField: []byte("tiny")}}, metav1.CreateOptions{})
	if _, err := EnsureKey(ctx, kc, "x", "short"); err == nil {
		t.Error("a 4-byte key was accepted")
	}
}

type recorder struct {
	mu    sync.Mutex
	links map[string]string
}

func (r *recorder) ConnectPeer(name, addr string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.links[name] = addr
	return nil
}

func (r *recorder) ForgetPeer(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.links, name)
}

func (r *recorder) get() map[string]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := map[string]string{}
	for k, v := range r.links {
		out[k] = v
	}
	return out
}

func gatewayPod(name, node, ip string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "spright-system", Labels: map[string]string{"app": "spright-gateway"}},
		Spec:       corev1.PodSpec{NodeName: node},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning, PodIP: ip},
	}
}

// TestRunFollowsGatewayPods: every other node's running gateway pod is a
// peer at its IP; a pod that moves changes the address; one deleted is
// forgotten; this node's own pod and pods without an IP are not peers.
func TestRunFollowsGatewayPods(t *testing.T) {
	kc := fake.NewSimpleClientset(
		gatewayPod("gw-a", "node-a", "10.0.0.1"),
		gatewayPod("gw-b", "node-b", "10.0.0.2"),
		gatewayPod("gw-c", "node-c", ""),
	)
	r := &recorder{links: map[string]string{}}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go Run(ctx, kc, r, Options{Namespace: "spright-system", Selector: "app=spright-gateway", Port: 9095, Self: "node-a"}, zap.NewNop())
	eventually := func(what string, want map[string]string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for {
			got := r.get()
			if len(got) == len(want) {
				same := true
				for k, v := range want {
					same = same && got[k] == v
				}
				if same {
					return
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: peers %v, want %v", what, got, want)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	eventually("start", map[string]string{"node-b": "10.0.0.2:9095"})
	c := gatewayPod("gw-c", "node-c", "10.0.0.3")
	kc.CoreV1().Pods("spright-system").UpdateStatus(ctx, c, metav1.UpdateOptions{})
	eventually("node-c up", map[string]string{"node-b": "10.0.0.2:9095", "node-c": "10.0.0.3:9095"})
	kc.CoreV1().Pods("spright-system").Delete(ctx, "gw-b", metav1.DeleteOptions{})
	eventually("node-b gone", map[string]string{"node-c": "10.0.0.3:9095"})
	kc.CoreV1().Pods("spright-system").Create(ctx, gatewayPod("gw-b2", "node-b", "10.0.0.9"), metav1.CreateOptions{})
	eventually("node-b back elsewhere", map[string]string{"node-b": "10.0.0.9:9095", "node-c": "10.0.0.3:9095"})
}
