package function

import (
	"errors"
	"net/http"
	"testing"

	"github.com/spright-dev/spright/pkg/shm"
)

func TestMessage(t *testing.T) {
	p, err := shm.Create("msg", 1, shm.Config{Slots: 2, SlotSize: 64, NoHugePages: true}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	s, _ := p.Alloc(0)
	m := &Message{pool: p, hdr: p.Header(s), slot: s, data: p.Data(s)}
	copy(m.Buffer(), "hello world")
	if err := m.SetLen(5); err != nil || string(m.Payload()) != "hello" || !m.InPool(m.Payload()) {
		t.Fatalf("payload %q %v", m.Payload(), err)
	}
	if err := m.SetPayload(m.Payload()[1:4]); err != nil || string(m.Payload()) != "ell" {
		t.Fatalf("sub-slice: %q %v", m.Payload(), err)
	}
	if err := m.SetPayload([]byte("new")); err != nil || string(m.Payload()) != "new" {
		t.Fatalf("copy in: %q %v", m.Payload(), err)
	}
	if err := m.SetPayload(make([]byte, 65)); err == nil {
		t.Fatal("oversize result accepted")
	}
	if err := m.SetLen(65); err == nil {
		t.Fatal("SetLen past the slot accepted")
	}
	if err := m.SetTopic("checkout"); err != nil || m.Topic() != "checkout" {
		t.Fatalf("topic %q %v", m.Topic(), err)
	}
	if err := m.SetTopic(string(make([]byte, shm.MaxTopic+1))); err == nil {
		t.Fatal("oversize topic accepted")
	}
}

func TestStatusOf(t *testing.T) {
	if s, msg := statusOf(Errorf(422, "bad %s", "x")); s != 422 || msg != "bad x" {
		t.Fatalf("%d %q", s, msg)
	}
	if s, _ := statusOf(errors.New("boom")); s != http.StatusInternalServerError {
		t.Fatalf("plain error -> %d", s)
	}
	if s, _ := statusOf(Errorf(200, "not an error status")); s != http.StatusInternalServerError {
		t.Fatalf("non-error status -> %d", s)
	}
	if err := safeHandle(HandlerFunc(func(*Message) error { panic("oops") }), nil); err == nil {
		t.Fatal("panic not turned into an error")
	}
}
