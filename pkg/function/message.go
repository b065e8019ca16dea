package function

import (
	"errors"
	"fmt"
	"net/http"
	"unsafe"

	"github.com/spright-dev/spright/pkg/shm"
)

// Message is one request as seen by a handler: a view of a slot in the
// chain pool, valid only until the handler returns.
type Message struct {
	pool *shm.ChainPool
	hdr  *shm.SlotHeader
	slot uint32
	data []byte // whole slot
	n    int
}

// Payload returns the request bytes in place (a slice into shared memory).
// Modifying it modifies the request: in-place processing is the fast path.
func (m *Message) Payload() []byte { return m.data[:m.n] }

// Buffer returns the whole slot (capacity SlotSize) for results longer than
// the input; call SetLen afterwards.
func (m *Message) Buffer() []byte { return m.data }

// SetLen sets the payload length after writing into Buffer.
func (m *Message) SetLen(n int) error {
	if n < 0 || n > len(m.data) {
		return fmt.Errorf("function: length %d outside slot of %d bytes", n, len(m.data))
	}
	m.n = n
	return nil
}

// SetPayload replaces the payload with b: no copy if b already is the
// message's slot memory (e.g. a sub-slice of Payload), else one copy.
func (m *Message) SetPayload(b []byte) error {
	if len(b) > len(m.data) {
		return fmt.Errorf("function: result of %d bytes exceeds the slot size %d", len(b), len(m.data))
	}
	if len(b) > 0 && &b[0] != &m.data[0] {
		copy(m.data, b)
	}
	m.n = len(b)
	return nil
}

// InPool reports whether b lies in the chain's shared memory (for tests and
// for handlers that want to prove they did not copy).
func (m *Message) InPool(b []byte) bool { return m.pool.Contains(b) }

// Address is the payload's address in this process (diagnostics).
func (m *Message) Address() uintptr {
	if len(m.data) == 0 {
		return 0
	}
	return uintptr(unsafe.Pointer(&m.data[0]))
}

// Topic is the message's current topic (from X-Spright-Topic, CloudEvents
// type, MQTT topic, or a previous function).
func (m *Message) Topic() string { return m.hdr.TopicString() }

// SetTopic changes the topic used to route this message onward.
func (m *Message) SetTopic(t string) error {
	if len(t) > shm.MaxTopic {
		return fmt.Errorf("function: topic longer than %d bytes", shm.MaxTopic)
	}
	m.hdr.SetTopic(t)
	return nil
}

// RequestID identifies the request for logs.
func (m *Message) RequestID() uint64 { return m.hdr.RequestID }

// Slot is the slot index (diagnostics).
func (m *Message) Slot() uint32 { return m.slot }

// StatusError is a handler failure with the HTTP status the client gets.
type StatusError struct {
	Status int
	Msg    string
}

func (e *StatusError) Error() string { return fmt.Sprintf("%d: %s", e.Status, e.Msg) }

// Errorf returns a handler error carrying status.
func Errorf(status int, format string, a ...any) error {
	return &StatusError{Status: status, Msg: fmt.Sprintf(format, a...)}
}

// statusOf maps a handler error to a status and message.
func statusOf(err error) (int, string) {
	var se *StatusError
	if errors.As(err, &se) && se.Status >= 400 && se.Status <= 599 {
		return se.Status, se.Msg
	}
	return http.StatusInternalServerError, err.Error()
}

// Handler processes one message.
type Handler interface {
	Handle(m *Message) error
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(m *Message) error

// Handle calls f.
func (f HandlerFunc) Handle(m *Message) error { return f(m) }
