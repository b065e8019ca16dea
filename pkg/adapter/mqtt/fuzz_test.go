package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"

	"github.com/spright-dev/spright/pkg/adapter"
	"github.com/spright-dev/spright/pkg/adapter/adaptertest"
)

// seedPackets are well-formed packets of both versions (the fuzzers mutate
// them); the files in testdata/fuzz hold malformed ones found or written by
// hand.
func seedPackets() [][]byte {
	var out [][]byte
	add := func(pk packets.Packet) {
		var buf bytes.Buffer
		switch pk.FixedHeader.Type {
		case packets.Connect:
			pk.ConnectEncode(&buf)
		case packets.Publish:
			pk.PublishEncode(&buf)
		case packets.Subscribe:
			pk.SubscribeEncode(&buf)
		case packets.Unsubscribe:
			pk.UnsubscribeEncode(&buf)
		case packets.Puback:
			pk.PubackEncode(&buf)
		case packets.Disconnect:
			pk.DisconnectEncode(&buf)
		}
		out = append(out, buf.Bytes())
	}
	for _, v := range []byte{4, 5} {
		c := connectPacket(v, "fuzz")
		c.Connect.UsernameFlag, c.Connect.Username = true, []byte("u")
		add(c)
		p := publish("motion/s1", 1, 1, `{"sensor":"s1","state":"on"}`)
		p.ProtocolVersion = v
		if v == 5 {
			p.Properties.ResponseTopic = "r/1"
			p.Properties.CorrelationData = []byte("c")
			p.Properties.ContentType = "application/json"
		}
		add(p)
		add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Subscribe, Qos: 1}, ProtocolVersion: v, PacketID: 2,
			Filters: packets.Subscriptions{{Filter: "lights/+", Qos: 1}}})
		add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsubscribe, Qos: 1}, ProtocolVersion: v, PacketID: 3,
			Filters: packets.Subscriptions{{Filter: "lights/+"}}})
		add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, ProtocolVersion: v, PacketID: 1})
		add(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ProtocolVersion: v})
	}
	return out
}

// FuzzDecode: any byte string read as MQTT packets (before CONNECT, as
// 3.1.1 and as 5) decodes or fails with an error; never a panic or an
// allocation beyond the packet limit.
func FuzzDecode(f *testing.F) {
	for _, s := range seedPackets() {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, v := range []byte{0, 4, 5} {
			br := bufio.NewReader(bytes.NewReader(b))
			for i := 0; i < 64; i++ {
				pk, err := readPacket(br, v, 4096)
				if err != nil {
					_ = codeOf(err)
					break
				}
				if pk.FixedHeader.Type == packets.Publish {
					_ = ValidTopicName(pk.TopicName)
				}
				if pk.FixedHeader.Type == packets.Subscribe {
					for _, s := range pk.Filters {
						if ValidFilter(s.Filter) == nil {
							Match(s.Filter, "motion/s1")
						}
					}
				}
			}
		}
	})
}

// FuzzSession: a whole client byte stream (CONNECT first, then anything)
// against a live server connection: the server answers or hangs up, it
// never panics or hangs, and a fresh connection is still served.
func FuzzSession(f *testing.F) {
	seeds := seedPackets()
	for i := 0; i+1 < len(seeds); i += 6 {
		f.Add(bytes.Join(seeds[i:i+6], nil))
	}
	fc := &adaptertest.Chain{SlotSize: 1024}
	ac := adapter.NewChain("fuzz", fc, adapter.Options{MQTT: motionRoutes})
	if _, err := ac.AttachNamed(context.Background(), "mqtt"); err != nil {
		f.Fatal(err)
	}
	s := NewServer(Config{Chains: []*adapter.Chain{ac}, MaxPacketSize: 4096, ConnectTimeout: time.Second, WriteTimeout: time.Second})
	defer s.Close()
	f.Fuzz(func(t *testing.T, b []byte) {
		client, server := net.Pipe()
		c := &conn{s: s, nc: server, br: bufio.NewReader(server), bw: bufio.NewWriter(server), subs: map[string]byte{},
			outbound: map[uint16]struct{}{}, done: make(chan struct{})}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
		go io.Copy(io.Discard, client)
		client.SetWriteDeadline(time.Now().Add(2 * time.Second))
		client.Write(b)
		client.Close()
		select {
		case <-c.done:
		case <-time.After(5 * time.Second):
			t.Fatal("connection not closed after the client hung up")
		}
	})
}
