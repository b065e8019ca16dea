package eproxy

import (
	"context"
	"sync"
	"time"

	"github.com/gorilla/websocket"
	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/types"
	"knative.dev/serving/pkg/autoscaler/metrics"
)

// RawSender is the sending half of a websocket (knative.dev/pkg/websocket's
// ManagedConnection, as the activator uses).
type RawSender interface {
	SendRaw(msgType int, msg []byte) error
}

type tracked struct {
	key    types.NamespacedName // namespace / revision
	window *Window
}

// Reporter pushes pods' Stats to the autoscaler's stat server, the way the
// activator reports: every Period, one binary websocket frame of
// WireStatMessages for the pods that had traffic in the window. Stats are
// never queued: if the autoscaler is unreachable a window's frame is
// dropped (the durable connection reconnects with backoff), so memory does
// not grow while it is away.
//
// The autoscaler adds pushed and scraped Stats of the same pod, so push a
// revision's pods only when the autoscaler does not scrape them (Knative
// stops scraping with target-burst-capacity "-1").
type Reporter struct {
	sink RawSender
	log  *zap.Logger

	mu   sync.Mutex
	pods map[uint32]tracked

	// Sent and Failed count frames (for tests and metrics).
	countMu      sync.Mutex
	sent, failed int
}

// NewReporter returns a Reporter sending to sink.
func NewReporter(sink RawSender, log *zap.Logger) *Reporter {
	if log == nil {
		log = zap.NewNop()
	}
	return &Reporter{sink: sink, log: log, pods: map[uint32]tracked{}}
}

// Track starts reporting instance as a pod of revision key.
func (r *Reporter) Track(instance uint32, key types.NamespacedName, w *Window) {
	r.mu.Lock()
	r.pods[instance] = tracked{key: key, window: w}
	r.mu.Unlock()
}

// Untrack stops reporting instance.
func (r *Reporter) Untrack(instance uint32) {
	r.mu.Lock()
	delete(r.pods, instance)
	r.mu.Unlock()
}

// Collect returns the Stats of the pods that were busy in the last window.
func (r *Reporter) Collect() []metrics.StatMessage {
	r.mu.Lock()
	pods := make([]tracked, 0, len(r.pods))
	for _, p := range r.pods {
		pods = append(pods, p)
	}
	r.mu.Unlock()
	var out []metrics.StatMessage
	for _, p := range pods {
		st, err := p.window.Stat()
		if err != nil {
			r.log.Warn("cannot read pod stats", zap.String("pod", p.window.pod), zap.Error(err))
			continue
		}
		if st.RequestCount == 0 && st.AverageConcurrentRequests == 0 {
			continue
		}
		out = append(out, metrics.StatMessage{Key: p.key, Stat: st})
	}
	return out
}

// Send pushes sms as one frame.
func (r *Reporter) Send(sms []metrics.StatMessage) error {
	if len(sms) == 0 {
		return nil
	}
	wsms := metrics.ToWireStatMessages(sms)
	b, err := wsms.Marshal()
	if err != nil {
		return err
	}
	err = r.sink.SendRaw(websocket.BinaryMessage, b)
	r.countMu.Lock()
	if err != nil {
		r.failed++
	} else {
		r.sent++
	}
	r.countMu.Unlock()
	return err
}

// Counts returns how many frames were sent and how many failed.
func (r *Reporter) Counts() (sent, failed int) {
	r.countMu.Lock()
	defer r.countMu.Unlock()
	return r.sent, r.failed
}

// Poke tells the autoscaler at once that revision key has a request
// waiting (what the activator sends for a cold revision: it is what makes
// the autoscaler scale from zero).
func (r *Reporter) Poke(key types.NamespacedName, pod string) error {
	return r.Send([]metrics.StatMessage{{Key: key, Stat: metrics.Stat{PodName: pod, AverageConcurrentRequests: 1, RequestCount: 1}}})
}

// Run pushes every Period until ctx ends.
func (r *Reporter) Run(ctx context.Context) {
	t := time.NewTicker(Period)
	defer t.Stop()
	lastErr := time.Time{}
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := r.Send(r.Collect()); err != nil && time.Since(lastErr) > time.Minute {
			// Once a minute is enough to say the autoscaler is away.
			lastErr = time.Now()
			r.log.Warn("cannot push stats to the autoscaler (dropping them; the connection retries with backoff)", zap.Error(err))
		}
	}
}
