package boutique

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"

	"github.com/spright-dev/spright/pkg/adapter"
	"github.com/spright-dev/spright/pkg/function"
)

// TopicReply is the topic the frontend leaves on a finished page: no
// function has a route for it, so the answer goes back to the gateway.
const TopicReply = "reply"

// Handler is service svc as a SPRIGHT SDK function: it reads the document
// (or, for the frontend's first phase, the web request envelope) from the
// slot and writes its result back into the same slot.
func (s *Shop) Handler(svc string) (function.Handler, error) {
	if svc == SvcFrontend {
		return function.HandlerFunc(s.frontendMessage), nil
	}
	if !isStep(svc) {
		return nil, fmt.Errorf("boutique: unknown service %q (known: %v)", svc, Services)
	}
	return function.HandlerFunc(func(m *function.Message) error {
		d, err := DecodeDoc(m.Payload())
		if err != nil {
			return asFunctionError(err)
		}
		if err := s.Step(svc, d); err != nil {
			return err
		}
		return writeJSON(m, d)
	}), nil
}

// frontendMessage: a request envelope starts an action (or is answered at
// once); a document is the end of one, rendered.
func (s *Shop) frontendMessage(m *function.Message) error {
	p := m.Payload()
	var resp *adapter.WebResponse
	switch {
	case adapter.IsWebRequest(p):
		r, err := adapter.ParseWebRequest(p)
		if err != nil {
			return function.Errorf(http.StatusBadRequest, "%v", err)
		}
		d, direct := s.Begin(r)
		if direct == nil {
			if err := m.SetTopic(d.Action); err != nil {
				return err
			}
			return writeJSON(m, d)
		}
		resp = direct
	default:
		d, err := DecodeDoc(p)
		if err != nil {
			return function.Errorf(http.StatusBadRequest, "frontend: the payload is neither a web request envelope (attach the \"web\" adapter) nor a document: %v", err)
		}
		resp = s.Render(d)
	}
	if err := m.SetTopic(TopicReply); err != nil {
		return err
	}
	out, err := adapter.AppendWebResponse(m.Buffer()[:0], resp)
	if err != nil {
		return function.Errorf(http.StatusInternalServerError, "%v", err)
	}
	if len(out) > len(m.Buffer()) || (len(out) > 0 && &out[0] != &m.Buffer()[0]) {
		return function.Errorf(http.StatusInsufficientStorage, "the page (%d bytes) does not fit the chain's slot (%d bytes)", len(out), len(m.Buffer()))
	}
	return m.SetLen(len(out))
}

func writeJSON(m *function.Message, d *Doc) error {
	b, err := json.Marshal(d)
	if err != nil {
		return function.Errorf(http.StatusInternalServerError, "%v", err)
	}
	if len(b) > len(m.Buffer()) {
		return function.Errorf(http.StatusInsufficientStorage, "the document (%d bytes) does not fit the chain's slot (%d bytes)", len(b), len(m.Buffer()))
	}
	return m.SetPayload(b)
}

func asFunctionError(err error) error {
	var se *StatusError
	if errors.As(err, &se) {
		return function.Errorf(se.Status, "%s", se.Msg)
	}
	return fmt.Errorf("%w", err)
}
