package peerwatch

import (
	"context"
	"crypto/rand"
	"fmt"
	"net"
	"strconv"
	"sync"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// KeyField is the Secret's data field that holds the key.
const KeyField = "key"

// EnsureKey returns the peer key in Secret ns/name, creating the Secret
// with 32 random bytes if there is none (gateways starting together agree:
// the first Create wins, the others read it).
func EnsureKey(ctx context.Context, kc kubernetes.Interface, ns, name string) ([]byte, error) {
	for attempt := 0; attempt < 3; attempt++ {
		s, err := kc.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
		if err == nil {
			k := s.Data[KeyField]
			if len(k) < 16 {
				return nil, fmt.Errorf("peer key secret %s/%s: field %q has %d bytes, at least 16 needed", ns, name, KeyField, len(k))
			}
			return k, nil
		}
		if !apierrors.IsNotFound(err) {
			return nil, fmt.Errorf("peer key secret %s/%s: %w", ns, name, err)
		}
		key := make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		_, err = kc.CoreV1().Secrets(ns).Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app.kubernetes.io/name": "spright"}},
			Data:       map[string][]byte{KeyField: key},
		}, metav1.CreateOptions{})
		if err == nil {
			return key, nil
		}
		if !apierrors.IsAlreadyExists(err) {
			return nil, fmt.Errorf("creating peer key secret %s/%s: %w", ns, name, err)
		}
	}
	return nil, fmt.Errorf("peer key secret %s/%s: could not read or create it", ns, name)
}

// Peers is what the watcher drives (a *gateway.Gateway).
type Peers interface {
	ConnectPeer(name, addr string) error
	ForgetPeer(name string)
}

// Options say where the gateway pods are.
type Options struct {
	Namespace string // the gateways' namespace
	Selector  string // their label selector, e.g. app=spright-gateway
	Port      int    // the peer port every gateway listens on
	Self      string // this node's name (skipped)
}

// Run keeps p linked to every other node's gateway pod until ctx ends.
func Run(ctx context.Context, kc kubernetes.Interface, p Peers, o Options, log *zap.Logger) error {
	f := informers.NewSharedInformerFactoryWithOptions(kc, 0, informers.WithNamespace(o.Namespace),
		informers.WithTweakListOptions(func(lo *metav1.ListOptions) { lo.LabelSelector = o.Selector }))
	inf := f.Core().V1().Pods().Informer()
	var mu sync.Mutex
	linked := map[string]string{} // node → pod name
	sync := func(obj any) {
		pod, ok := obj.(*corev1.Pod)
		if !ok {
			return
		}
		node := pod.Spec.NodeName
		if node == "" || node == o.Self {
			return
		}
		mu.Lock()
		defer mu.Unlock()
		if pod.DeletionTimestamp != nil || pod.Status.PodIP == "" || pod.Status.Phase != corev1.PodRunning {
			if linked[node] == pod.Name {
				delete(linked, node)
				p.ForgetPeer(node)
				log.Info("peer gateway gone", zap.String("node", node), zap.String("pod", pod.Name))
			}
			return
		}
		addr := net.JoinHostPort(pod.Status.PodIP, strconv.Itoa(o.Port))
		if err := p.ConnectPeer(node, addr); err != nil {
			log.Warn("cannot link to peer gateway", zap.String("node", node), zap.Error(err))
			return
		}
		if linked[node] != pod.Name {
			log.Info("peer gateway", zap.String("node", node), zap.String("pod", pod.Name), zap.String("addr", addr))
		}
		linked[node] = pod.Name
	}
	inf.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    sync,
		UpdateFunc: func(_, obj any) { sync(obj) },
		DeleteFunc: func(obj any) {
			if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
				obj = d.Obj
			}
			if pod, ok := obj.(*corev1.Pod); ok {
				pod = pod.DeepCopy()
				now := metav1.Now()
				pod.DeletionTimestamp = &now
				sync(pod)
			}
		},
	})
	f.Start(ctx.Done())
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return fmt.Errorf("peerwatch: pods of %s (%s) never synced", o.Namespace, o.Selector)
	}
	<-ctx.Done()
	f.Shutdown()
	return nil
}
