// Package adaptertest has an in-memory stand-in for a chain, so the
// protocol adapters can be tested without root, eBPF or shared memory.
package adaptertest

import (
	"encoding/json"
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/spright-dev/spright/pkg/adapter"
)

// Chain behaves like the motion sample (sensor + actuator) behind the
// gateway's Invoke: a motion event {"sensor":"s1","state":"on"} becomes
// {"light":"s1","state":"on"}; anything else is a 400 from the "function".
// Topic "echo" echoes the body; topic "slow" waits for Delay first.
type Chain struct {
	SlotSize int           // bodies larger than this get 413 (default 4096)
	Delay    time.Duration // how long topic "slow" takes

	mu     sync.Mutex
	topics []string

	Calls    atomic.Int64 // Invoke calls
	InFlight atomic.Int64 // calls not yet answered
	Released atomic.Int64 // results released
}

// Topics returns the topics seen so far.
func (c *Chain) Topics() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.topics...)
}

// Invoke implements adapter.Invoker.
func (c *Chain) Invoke(topic string, body io.Reader, size int64, done <-chan struct{}) (*adapter.Result, error) {
	c.Calls.Add(1)
	c.InFlight.Add(1)
	defer c.InFlight.Add(-1)
	c.mu.Lock()
	c.topics = append(c.topics, topic)
	c.mu.Unlock()
	slot := c.SlotSize
	if slot == 0 {
		slot = 4096
	}
	if size > int64(slot) {
		return nil, adapter.Errorf(http.StatusRequestEntityTooLarge, "body of %d bytes exceeds the chain's slot size (%d bytes)", size, slot)
	}
	buf := make([]byte, slot+1)
	n := 0
	if body != nil {
		n, _ = io.ReadFull(body, buf)
	}
	if n > slot {
		return nil, adapter.Errorf(http.StatusRequestEntityTooLarge, "body exceeds the chain's slot size (%d bytes)", slot)
	}
	p := buf[:n]
	if len(topic) > 48 {
		return nil, adapter.Errorf(http.StatusBadRequest, "topic longer than 48 bytes")
	}
	release := func() { c.Released.Add(1) }
	switch topic {
	case "echo":
		return adapter.NewResult(http.StatusOK, p, release), nil
	case "slow":
		select {
		case <-time.After(c.Delay):
		case <-done:
			return nil, adapter.Errorf(499, "client went away")
		}
		return adapter.NewResult(http.StatusOK, p, release), nil
	case "missing":
		return nil, adapter.Errorf(http.StatusNotFound, "chain %q has no route for topic %q", "test", topic)
	}
	var ev struct {
		Sensor string `json:"sensor"`
		State  string `json:"state"`
	}
	if err := json.Unmarshal(p, &ev); err != nil || ev.Sensor == "" || (ev.State != "on" && ev.State != "off") {
		return nil, adapter.Errorf(http.StatusBadRequest, `motion event needs "sensor" and "state" "on" or "off"`)
	}
	out := []byte(`{"light":` + string(mustJSON(ev.Sensor)) + `,"state":` + string(mustJSON(ev.State)) + `}`)
	return adapter.NewResult(http.StatusOK, out, release), nil
}

func mustJSON(s string) []byte { b, _ := json.Marshal(s); return b }
