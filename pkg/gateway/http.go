package gateway

import (
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/spright-dev/spright/pkg/descriptor"
	"github.com/spright-dev/spright/pkg/routing"
	"github.com/spright-dev/spright/pkg/shm"
)

// TopicHeader carries the request's topic (DESIGN §5).
const TopicHeader = "X-Spright-Topic"

// HTTPError is a failure with the status the client gets.
type HTTPError struct {
	Status int
	Msg    string
}

func (e *HTTPError) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Msg) }

func httpErr(status int, format string, a ...any) *HTTPError {
	return &HTTPError{Status: status, Msg: fmt.Sprintf(format, a...)}
}

// Response is a chain's answer, still in its slot. Call Release when done.
type Response struct {
	Status int
	Body   []byte // points into the pool
	c      *Chain
	slot   uint32
}

// Release frees the response's slot.
func (r *Response) Release() {
	if r.c != nil {
		r.c.pool.Free(r.slot)
		r.c = nil
	}
}

// Invoke runs one request through chain c: body is read (once) straight into
// a slot, one descriptor goes to the entry function, and the call waits for
// the chain's answer. It is the hook every protocol adapter uses.
func (g *Gateway) Invoke(c *Chain, topic string, body io.Reader, size int64, done <-chan struct{}) (*Response, error) {
	start := time.Now()
	if size > int64(c.pool.SlotSize()) {
		return nil, httpErr(http.StatusRequestEntityTooLarge, "body of %d bytes exceeds the chain's slot size (%d bytes)", size, c.pool.SlotSize())
	}
	if len(topic) > shm.MaxTopic {
		return nil, httpErr(http.StatusBadRequest, "topic longer than %d bytes", shm.MaxTopic)
	}
	slot, err := c.pool.Alloc(descriptor.GatewayInstance)
	if err != nil {
		return nil, httpErr(http.StatusServiceUnavailable, "chain %q is at capacity: all %d pool slots are in use", c.Name(), c.pool.Slots())
	}
	n, err := readInto(c.pool.Data(slot), body, size)
	if err != nil {
		c.pool.Free(slot)
		return nil, err
	}
	h := c.pool.Header(slot)
	h.RequestID = c.reqID.Add(1)
	h.StartNs = start.UnixNano()
	h.SetTopic(topic)
	lim := c.limits.Load()
	c.routes.Begin(h)
	next, err := c.routes.NextHop(h, routing.Gateway, topic)
	if err == nil && next == routing.Gateway {
		err = httpErr(http.StatusNotFound, "chain %q has no route for topic %q", c.Name(), topic)
	}
	var inst uint32
	if err == nil {
		inst, err = c.routes.Pick(next, g.inflight)
		if errors.Is(err, routing.ErrNoInstance) {
			if lim.HoldTimeout > 0 {
				inst, err = g.activate(c, next, done)
			} else {
				err = httpErr(http.StatusServiceUnavailable, "%v", err)
			}
		}
	}
	if err == nil && lim.HoldTimeout > 0 {
		err = g.awaitMembers(c, topic, done)
	}
	if err != nil {
		c.pool.Free(slot)
		return nil, err
	}
	ch := c.arm(slot)
	c.pool.Handoff(slot, descriptor.GatewayInstance, inst)
	d := descriptor.Descriptor{Next: inst, Chain: c.ID(), Slot: slot, Len: uint32(n)}
	if err := g.send(c, d); err != nil {
		// The receiver vanished between Pick and send. Take the slot back
		// unless the reclaim of that instance already did.
		if c.pool.Handoff(slot, inst, descriptor.GatewayInstance) {
			if _, got := c.abandon(slot); !got {
				c.pool.Free(slot)
			}
		}
		return nil, httpErr(http.StatusBadGateway, "could not deliver to function %q (instance %d): %v", c.routes.FunctionName(next), inst, err)
	}
	c.Dispatched.Add(1)
	timer := time.NewTimer(lim.Timeout)
	defer timer.Stop()
	var r result
	select {
	case r = <-ch:
	case <-timer.C:
		var got bool
		if r, got = c.abandon(slot); !got {
			return nil, httpErr(http.StatusGatewayTimeout, "chain %q did not answer within %v", c.Name(), lim.Timeout)
		}
	case <-done:
		var got bool
		if r, got = c.abandon(slot); !got {
			return nil, httpErr(499, "client went away")
		}
	}
	resp := &Response{Status: http.StatusOK, c: c, slot: r.slot}
	if r.err != "" {
		resp.Release()
		return nil, httpErr(r.status, "%s", r.err)
	}
	if r.status != 0 {
		resp.Status = r.status
	}
	if r.len > c.pool.SlotSize() {
		resp.Release()
		return nil, httpErr(http.StatusBadGateway, "function returned %d bytes, more than a slot", r.len)
	}
	resp.Body = c.pool.Data(r.slot)[:r.len]
	return resp, nil
}

// readInto copies the body into dst (the slot): the request's one copy.
func readInto(dst []byte, body io.Reader, size int64) (int, error) {
	if body == nil {
		return 0, nil
	}
	if size >= 0 {
		n, err := io.ReadFull(body, dst[:size])
		if err != nil {
			return n, httpErr(http.StatusBadRequest, "reading body: got %d of %d bytes: %v", n, size, err)
		}
		return n, nil
	}
	// Unknown length (chunked): fill the slot, then make sure nothing is left.
	n, err := io.ReadFull(body, dst)
	switch {
	case err == io.EOF || err == io.ErrUnexpectedEOF:
		return n, nil
	case err != nil:
		return n, httpErr(http.StatusBadRequest, "reading body: %v", err)
	}
	var one [1]byte
	if m, _ := body.Read(one[:]); m > 0 {
		return n, httpErr(http.StatusRequestEntityTooLarge, "body exceeds the chain's slot size (%d bytes)", len(dst))
	}
	return n, nil
}

// inflight reads an instance's concurrency from the EPROXY map.
func (g *Gateway) inflight(id uint32) int64 {
	if routing.IsRemote(id) {
		// A peer's instances: what this node has on them (remote.go).
		return g.proxyInflight(id)
	}
	if g.dp == nil {
		return 0
	}
	m, err := g.dp.Metrics(id)
	if err != nil {
		return 0
	}
	return m.Inflight
}

// Handler serves HTTP for chain c.
func (g *Gateway) Handler(c *Chain) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		resp, err := g.Invoke(c, r.Header.Get(TopicHeader), r.Body, r.ContentLength, r.Context().Done())
		status := http.StatusOK
		if err != nil {
			var he *HTTPError
			if !errors.As(err, &he) {
				he = httpErr(http.StatusInternalServerError, "%v", err)
			}
			status = he.Status
			if status == http.StatusServiceUnavailable {
				w.Header().Set("Retry-After", "1")
			}
			if status != 499 {
				http.Error(w, he.Msg, status)
			}
			if status >= 500 && status != 503 {
				g.log.Warn("request failed", zap.String("chain", c.Name()), zap.Int("status", status), zap.String("error", he.Msg))
			}
		} else {
			status = resp.Status
			w.Header().Set("Content-Length", strconv.Itoa(len(resp.Body)))
			w.Header().Set("Content-Type", "application/octet-stream")
			w.WriteHeader(status)
			w.Write(resp.Body)
			resp.Release()
		}
		g.observe(c, status, time.Since(start))
	})
}
