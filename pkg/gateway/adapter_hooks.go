package gateway

import (
	"errors"
	"io"
	"time"

	"github.com/spright-dev/spright/pkg/adapter"
)

// AdapterInvoker binds Invoke to chain c: it is the hook point the protocol
// adapters (pkg/adapter: CloudEvents, MQTT, CoAP, WebAssembly) call to put a
// message's payload into a slot and run the chain. Each call is observed in
// the gateway's metrics like an HTTP request, and *HTTPError becomes
// *adapter.Error (same status and text).
func (g *Gateway) AdapterInvoker(c *Chain) adapter.Invoker {
	return adapter.InvokerFunc(func(topic string, body io.Reader, size int64, done <-chan struct{}) (*adapter.Result, error) {
		start := time.Now()
		r, err := g.Invoke(c, topic, body, size, done)
		if err != nil {
			status, msg := 500, err.Error()
			var he *HTTPError
			if errors.As(err, &he) {
				status, msg = he.Status, he.Msg
			}
			g.observe(c, status, time.Since(start))
			return nil, &adapter.Error{Status: status, Msg: msg}
		}
		g.observe(c, r.Status, time.Since(start))
		return adapter.NewResult(r.Status, r.Body, r.Release), nil
	})
}
