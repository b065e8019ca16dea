package coap

import (
	"bytes"
	"context"
	"net"
	"testing"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/udp/coder"

	"github.com/spright-dev/spright/pkg/adapter"
	"github.com/spright-dev/spright/pkg/adapter/adaptertest"
)

func datagram(typ message.Type, code codes.Code, mid int32, path string, body []byte, opts ...message.Option) []byte {
	m := pool.NewMessage(context.Background())
	m.SetType(typ)
	m.SetCode(code)
	m.SetMessageID(mid)
	m.SetToken([]byte{1, 2, 3, 4})
	if path != "" {
		m.SetPath(path)
	}
	for _, o := range opts {
		m.AddOptionBytes(o.ID, o.Value)
	}
	if body != nil {
		m.SetContentFormat(message.AppJSON)
		m.SetBody(bytes.NewReader(body))
	}
	b, _ := m.MarshalWithEncoder(coder.DefaultCoder)
	return b
}

// FuzzDatagram: any datagram sent to the CoAP front end is answered or
// dropped; the server never crashes, and a good confirmable request sent
// right after it still gets its piggybacked answer.
func FuzzDatagram(f *testing.F) {
	f.Add(datagram(message.Confirmable, codes.POST, 1, "/motion", []byte(`{"sensor":"s1","state":"on"}`)))
	f.Add(datagram(message.NonConfirmable, codes.PUT, 2, "/echo/x", []byte("x")))
	f.Add(datagram(message.Confirmable, codes.GET, 3, "/echo", nil, message.Option{ID: message.Accept, Value: []byte{60}}))
	f.Add(datagram(message.Confirmable, codes.POST, 4, "/echo", []byte("abc"), message.Option{ID: message.Block1, Value: []byte{0x0a}}))
	f.Add(datagram(message.Confirmable, codes.POST, 5, "/echo", []byte("abc"), message.Option{ID: 65001, Value: []byte("x")}))

	fc := &adaptertest.Chain{SlotSize: 1024}
	ac := adapter.NewChain("fuzz", fc, adapter.Options{})
	ac.AttachNamed(context.Background(), "coap")
	s := NewServer(Config{Chains: []*adapter.Chain{ac}, MaxMessageSize: 8192})
	addr, err := s.Listen("127.0.0.1:0")
	if err != nil {
		f.Fatal(err)
	}
	defer s.Close()
	f.Fuzz(func(t *testing.T, b []byte) {
		uc, err := net.DialUDP("udp", nil, addr.(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer uc.Close()
		uc.Write(b)
		// A good request from another port (go-coap deduplicates by
		// message ID per peer: the fuzzed datagram may have used ours).
		gc, err := net.DialUDP("udp", nil, addr.(*net.UDPAddr))
		if err != nil {
			t.Fatal(err)
		}
		defer gc.Close()
		good := datagram(message.Confirmable, codes.POST, 0x1234, "/echo", []byte("ok"))
		buf := make([]byte, 2048)
		for try := 0; try < 3; try++ {
			gc.Write(good)
			gc.SetReadDeadline(time.Now().Add(time.Second))
			n, err := gc.Read(buf)
			if err != nil {
				continue
			}
			m := pool.NewMessage(context.Background())
			if _, err := m.UnmarshalWithDecoder(coder.DefaultCoder, buf[:n]); err == nil && m.MessageID() == 0x1234 && m.Code() == codes.Content {
				return
			}
		}
		t.Fatalf("no answer to a good request after datagram %x", b)
	})
}
