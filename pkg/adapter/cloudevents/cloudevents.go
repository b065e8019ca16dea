package cloudevents

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime"
	"net/http"
	"strings"
	"time"

	"github.com/cloudevents/sdk-go/v2/binding"
	"github.com/cloudevents/sdk-go/v2/binding/format"
	"github.com/cloudevents/sdk-go/v2/binding/spec"
	"github.com/cloudevents/sdk-go/v2/event"
	cehttp "github.com/cloudevents/sdk-go/v2/protocol/http"
	"github.com/cloudevents/sdk-go/v2/types"
	"github.com/google/uuid"

	"github.com/spright-dev/spright/pkg/adapter"
)

func init() {
	adapter.Register("cloudevents", func(arg string, o adapter.Options) (adapter.Adapter, error) {
		return New(o), nil
	})
}

// maxStructured bounds a structured-mode event read into memory (the data
// then goes to a slot, which bounds it again).
const maxStructured = 4 << 20

// Adapter is the CloudEvents adapter on the HTTP front end (CloudEvents
// HTTP protocol binding 1.0): binary and structured mode in, the event's
// type as the chain topic, its data as the payload, and an event out in
// the request's mode. Batch mode is refused with 400.
type Adapter struct {
	source, suffix string
}

// New makes the adapter for a chain.
func New(o adapter.Options) *Adapter {
	a := &Adapter{source: o.CloudEvents.Source, suffix: o.CloudEvents.TypeSuffix}
	if a.source == "" {
		a.source = "/spright/" + o.Chain
	}
	if a.suffix == "" {
		a.suffix = ".response"
	}
	return a
}

func (a *Adapter) Name() string      { return "cloudevents" }
func (a *Adapter) Transport() string { return adapter.TransportHTTP }
func (a *Adapter) Close() error      { return nil }

type state struct {
	req        event.Event
	structured bool
}

// Ingress decodes the event. In binary mode the body is the data and goes
// to the slot as it streams in (no copy here); in structured mode the JSON
// envelope is decoded first.
func (a *Adapter) Ingress(in *adapter.Inbound) (*adapter.Request, error) {
	if in.Method != http.MethodPost && in.Method != http.MethodPut {
		return nil, adapter.Errorf(http.StatusMethodNotAllowed, "CloudEvents are sent with POST, not %s", in.Method)
	}
	ctx := in.Ctx
	if ctx == nil {
		ctx = context.Background()
	}
	body := in.Body
	if body == nil {
		body = bytes.NewReader(nil)
	}
	msg := cehttp.NewMessage(in.Meta, io.NopCloser(body))
	switch msg.ReadEncoding() {
	case binding.EncodingBatch:
		return nil, adapter.Errorf(http.StatusBadRequest, "CloudEvents batch mode (%s) is not supported: send one event per request, in binary or structured mode", event.ApplicationCloudEventsBatchJSON)
	case binding.EncodingStructured:
		return a.structured(ctx, in, msg)
	case binding.EncodingBinary:
		return a.binary(ctx, in, msg)
	}
	if ct := in.Meta.Get("Content-Type"); strings.HasPrefix(ct, "application/cloudevents") {
		return nil, adapter.Errorf(http.StatusUnsupportedMediaType, "unsupported CloudEvents format %q (want %s)", ct, event.ApplicationCloudEventsJSON)
	}
	if v := in.Meta.Get("Ce-Specversion"); v != "" {
		return nil, adapter.Errorf(http.StatusBadRequest, "not a CloudEvent: unknown specversion %q (want 1.0 or 0.3)", v)
	}
	return nil, adapter.Errorf(http.StatusBadRequest, "not a CloudEvent: binary mode needs the ce-specversion, ce-id, ce-source and ce-type headers; structured mode needs Content-Type %s", event.ApplicationCloudEventsJSON)
}

func (a *Adapter) structured(ctx context.Context, in *adapter.Inbound, msg *cehttp.Message) (*adapter.Request, error) {
	lr := &io.LimitedReader{R: msg.BodyReader, N: maxStructured + 1}
	msg.BodyReader = io.NopCloser(lr)
	ev, err := binding.ToEvent(ctx, msg)
	if lr.N <= 0 {
		return nil, adapter.Errorf(http.StatusRequestEntityTooLarge, "structured event larger than %d bytes", maxStructured)
	}
	if err != nil {
		return nil, adapter.Errorf(http.StatusBadRequest, "invalid CloudEvent (structured mode): %v", err)
	}
	if err := ev.Validate(); err != nil {
		return nil, adapter.Errorf(http.StatusBadRequest, "invalid CloudEvent (structured mode): %v", err)
	}
	data := ev.Data()
	return &adapter.Request{Topic: ev.Type(), Body: bytes.NewReader(data), Size: int64(len(data)), State: state{req: *ev, structured: true}}, nil
}

func (a *Adapter) binary(ctx context.Context, in *adapter.Inbound, msg *cehttp.Message) (*adapter.Request, error) {
	w := &binaryReader{ev: event.New()}
	if err := msg.ReadBinary(ctx, w); err != nil {
		return nil, adapter.Errorf(http.StatusBadRequest, "invalid CloudEvent (binary mode): %v", err)
	}
	if err := w.ev.Validate(); err != nil {
		return nil, adapter.Errorf(http.StatusBadRequest, "invalid CloudEvent (binary mode): %v", err)
	}
	body := w.data
	if body == nil {
		body = bytes.NewReader(nil)
	}
	return &adapter.Request{Topic: w.ev.Type(), Body: body, Size: in.Size, State: state{req: w.ev}}, nil
}

// binaryReader collects a binary-mode event's attributes and keeps its
// data reader unread, so the data streams straight into the slot.
type binaryReader struct {
	ev   event.Event
	data io.Reader
}

func (b *binaryReader) Start(context.Context) error { return nil }
func (b *binaryReader) End(context.Context) error   { return nil }
func (b *binaryReader) SetData(r io.Reader) error   { b.data = r; return nil }

func (b *binaryReader) SetAttribute(attr spec.Attribute, value any) error {
	if attr.Kind() == spec.SpecVersion {
		s, err := types.ToString(value)
		if err != nil {
			return err
		}
		switch s {
		case event.CloudEventsVersionV03:
			b.ev.Context = b.ev.Context.AsV03()
		case event.CloudEventsVersionV1:
			b.ev.Context = b.ev.Context.AsV1()
		default:
			return fmt.Errorf("unknown specversion %q", s)
		}
		return nil
	}
	return attr.Set(b.ev.Context, value)
}

func (b *binaryReader) SetExtension(name string, value any) error {
	v, err := types.Validate(value)
	if err != nil {
		return err
	}
	return b.ev.Context.SetExtension(name, v)
}

// Egress makes the answer event: a new id, this chain as source, the
// request's type plus ".response", the request's data content type, the
// chain's bytes as data; in the request's mode.
func (a *Adapter) Egress(req *adapter.Request, res *adapter.Result) (*adapter.Outbound, error) {
	st, _ := req.State.(state)
	resp := event.New(st.req.SpecVersion())
	resp.SetID(uuid.NewString())
	resp.SetSource(a.source)
	resp.SetType(st.req.Type() + a.suffix)
	resp.SetTime(time.Now())
	if s := st.req.Subject(); s != "" {
		resp.SetSubject(s)
	}
	ct := st.req.DataContentType()
	out := &adapter.Outbound{Status: res.Status, Meta: adapter.Meta{}}
	if out.Status == 0 {
		out.Status = http.StatusOK
	}
	if !st.structured {
		h := out.Meta
		h.Set("Ce-Specversion", resp.SpecVersion())
		h.Set("Ce-Id", resp.ID())
		h.Set("Ce-Source", resp.Source())
		h.Set("Ce-Type", resp.Type())
		h.Set("Ce-Time", types.FormatTime(resp.Time()))
		if s := resp.Subject(); s != "" {
			h.Set("Ce-Subject", s)
		}
		if ct != "" {
			h.Set("Content-Type", ct)
		}
		out.Body = res.Body // straight from the slot
		return out, nil
	}
	if ct != "" && isJSON(ct) && !json.Valid(res.Body) {
		ct = "application/octet-stream" // the chain did not answer JSON: send it base64
	}
	if ct == "" {
		ct = "application/octet-stream"
	}
	resp.SetDataContentType(ct)
	resp.DataEncoded = res.Body
	if !isJSON(ct) {
		resp.DataBase64 = true
	}
	b, err := format.JSON.Marshal(&resp)
	if err != nil {
		return nil, adapter.Errorf(http.StatusInternalServerError, "encoding the answer event: %v", err)
	}
	out.Meta.Set("Content-Type", event.ApplicationCloudEventsJSON)
	out.Body = b
	return out, nil
}

func isJSON(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	if err != nil {
		return false
	}
	return mt == "application/json" || mt == "text/json" || strings.HasSuffix(mt, "+json")
}
