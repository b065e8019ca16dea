package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap/zaptest"

	"github.com/spright-dev/spright/pkg/adapter"
	"github.com/spright-dev/spright/pkg/adapter/adaptertest"
)

var motionRoutes = adapter.MQTTOptions{Routes: []adapter.MQTTRoute{
	{Filter: "motion/+", Topic: "motion", Reply: "lights/{1}"},
	{Filter: "echo/#", Topic: "echo", Reply: "echoed/{1}"},
	{Filter: "slow/+", Topic: "slow", Reply: "slowed/{1}"},
}}

type fixture struct {
	srv   *Server
	chain *adaptertest.Chain
	ac    *adapter.Chain
	addr  string
	port  string
}

func start(t *testing.T, o adapter.MQTTOptions) *fixture {
	t.Helper()
	fc := &adaptertest.Chain{SlotSize: 1024, Delay: 200 * time.Millisecond}
	ac := adapter.NewChain("motion", fc, adapter.Options{MQTT: o})
	if _, err := ac.AttachNamed(context.Background(), "mqtt"); err != nil {
		t.Fatal(err)
	}
	s := NewServer(Config{Chains: []*adapter.Chain{ac}, MaxPacketSize: 4096, Logger: zaptest.NewLogger(t)})
	a, err := s.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	_, port, _ := net.SplitHostPort(a.String())
	return &fixture{srv: s, chain: fc, ac: ac, addr: a.String(), port: port}
}

func needTool(t *testing.T, name string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		t.Skipf("needs %s (Debian: mosquitto-clients)", name)
	}
	return p
}

// subscriber runs mosquitto_sub and returns its output once it has
// received n messages.
type subscriber struct {
	cmd  *exec.Cmd
	out  bytes.Buffer
	done chan error
}

func subscribe(t *testing.T, f *fixture, version, topic string, n int) *subscriber {
	t.Helper()
	bin := needTool(t, "mosquitto_sub")
	s := &subscriber{done: make(chan error, 1)}
	s.cmd = exec.Command(bin, "-h", "127.0.0.1", "-p", f.port, "-V", version, "-t", topic, "-C", strconv.Itoa(n), "-W", "20", "-q", "1")
	s.cmd.Stdout = &s.out
	s.cmd.Stderr = &s.out
	if err := s.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { s.done <- s.cmd.Wait() }()
	t.Cleanup(func() { s.cmd.Process.Kill() })
	// Poll until the subscription is in place (no sleeps).
	deadline := time.Now().Add(10 * time.Second)
	for f.srv.Subscribers(strings.ReplaceAll(strings.ReplaceAll(topic, "+", "x"), "#", "x")) == 0 {
		if time.Now().After(deadline) {
			t.Fatalf("mosquitto_sub did not subscribe to %s", topic)
		}
		time.Sleep(5 * time.Millisecond)
	}
	return s
}

func (s *subscriber) wait(t *testing.T) string {
	t.Helper()
	select {
	case err := <-s.done:
		if err != nil {
			t.Fatalf("mosquitto_sub: %v: %s", err, s.out.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("mosquitto_sub got no answer: %s", s.out.String())
	}
	return s.out.String()
}

func pub(t *testing.T, f *fixture, args ...string) (string, error) {
	t.Helper()
	bin := needTool(t, "mosquitto_pub")
	out, err := exec.Command(bin, append([]string{"-h", "127.0.0.1", "-p", f.port}, args...)...).CombinedOutput()
	return string(out), err
}

// TestMotionWithMosquitto: mosquitto_pub publishes a motion event on
// motion/s1 and mosquitto_sub receives the actuator's light command on
// lights/s1, for MQTT 3.1.1 and 5, QoS 0 and 1.
func TestMotionWithMosquitto(t *testing.T) {
	f := start(t, motionRoutes)
	n := 0
	for _, v := range []string{"mqttv311", "mqttv5"} {
		for _, q := range []string{"0", "1"} {
			n++
			sensor := "s" + strconv.Itoa(n) // a topic of its own: earlier subscribers do not count
			t.Run(v+"/qos"+q, func(t *testing.T) {
				sub := subscribe(t, f, v, "lights/"+sensor, 1)
				if out, err := pub(t, f, "-V", v, "-q", q, "-t", "motion/"+sensor, "-m", `{"sensor":"`+sensor+`","state":"on"}`); err != nil {
					t.Fatalf("mosquitto_pub: %v: %s", err, out)
				}
				if got := strings.TrimSpace(sub.wait(t)); got != `{"light":"`+sensor+`","state":"on"}` {
					t.Fatalf("lights/%s got %q", sensor, got)
				}
			})
		}
	}
	if got := f.chain.Topics(); len(got) != 4 || got[0] != "motion" {
		t.Fatalf("chain saw topics %q, want 4 × motion", got)
	}
	if f.chain.Released.Load() != 4 {
		t.Fatalf("released %d answers, want 4", f.chain.Released.Load())
	}
}

// TestResponseTopic: an MQTT 5 request with a Response Topic gets its
// answer there, with the correlation data.
func TestResponseTopic(t *testing.T) {
	f := start(t, motionRoutes)
	sub := subscribe(t, f, "mqttv5", "my/answers", 1)
	out, err := pub(t, f, "-V", "mqttv5", "-q", "1", "-t", "echo/x", "-m", "hello",
		"-D", "publish", "response-topic", "my/answers", "-D", "publish", "correlation-data", "c1")
	if err != nil {
		t.Fatalf("mosquitto_pub: %v: %s", err, out)
	}
	if got := strings.TrimSpace(sub.wait(t)); got != "hello" {
		t.Fatalf("my/answers got %q", got)
	}
}

// client is a raw MQTT client speaking through the codec, for the error
// paths real clients refuse to produce.
type client struct {
	t  *testing.T
	nc net.Conn
	br *bufio.Reader
	v  byte
}

func dial(t *testing.T, f *fixture, v byte) *client {
	t.Helper()
	nc, err := net.Dial("tcp", f.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(10 * time.Second))
	return &client{t: t, nc: nc, br: bufio.NewReader(nc), v: v}
}

func (c *client) send(pk packets.Packet) {
	c.t.Helper()
	pk.ProtocolVersion = c.v
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Subscribe:
		err = pk.SubscribeEncode(&buf)
	case packets.Pingreq:
		err = pk.PingreqEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	}
	if err != nil {
		c.t.Fatal(err)
	}
	c.raw(buf.Bytes())
}

func (c *client) raw(b []byte) {
	c.t.Helper()
	if _, err := c.nc.Write(b); err != nil {
		c.t.Fatal(err)
	}
}

func (c *client) recv() (packets.Packet, error) {
	var pk packets.Packet
	b, err := c.br.ReadByte()
	if err != nil {
		return pk, err
	}
	pk.FixedHeader.Decode(b)
	n, _, err := packets.DecodeLength(c.br)
	if err != nil {
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	buf := make([]byte, n)
	if _, err := io.ReadFull(c.br, buf); err != nil {
		return pk, err
	}
	pk.ProtocolVersion = c.v
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(buf)
	case packets.Puback:
		err = pk.PubackDecode(buf)
	case packets.Disconnect:
		err = pk.DisconnectDecode(buf)
	case packets.Publish:
		err = pk.PublishDecode(buf)
	case packets.Suback:
		err = pk.SubackDecode(buf)
	}
	return pk, err
}

func (c *client) expect(typ byte) packets.Packet {
	c.t.Helper()
	pk, err := c.recv()
	if err != nil {
		c.t.Fatalf("waiting for %s: %v", packets.PacketNames[typ], err)
	}
	if pk.FixedHeader.Type != typ {
		c.t.Fatalf("got %s, want %s", packets.PacketNames[pk.FixedHeader.Type], packets.PacketNames[typ])
	}
	return pk
}

func (c *client) expectClosed() {
	c.t.Helper()
	if pk, err := c.recv(); err == nil {
		c.t.Fatalf("got %s, want the connection closed", packets.PacketNames[pk.FixedHeader.Type])
	}
}

func connectPacket(v byte, id string) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: v,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, ClientIdentifier: id, Keepalive: 30}}
}

func (c *client) connect() packets.Packet {
	c.t.Helper()
	c.send(connectPacket(c.v, "t-"+strconv.Itoa(int(c.v))))
	ack := c.expect(packets.Connack)
	if ack.ReasonCode != 0 {
		c.t.Fatalf("CONNACK reason 0x%x", ack.ReasonCode)
	}
	return ack
}

func publish(topic string, qos byte, id uint16, payload string) packets.Packet {
	return packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, TopicName: topic, PacketID: id, Payload: []byte(payload)}
}

// TestPubackReasonCodes: MQTT 5 PUBACKs carry the outcome: success, a bad
// event (the function's 400 → payload format invalid), an oversize payload
// (413 → quota exceeded), a topic no route takes (topic name invalid).
func TestPubackReasonCodes(t *testing.T) {
	f := start(t, motionRoutes)
	c := dial(t, f, 5)
	ack := c.connect()
	if ack.Properties.MaximumPacketSize != 4096 || !ack.Properties.MaximumQosFlag || ack.Properties.MaximumQos != 1 {
		t.Fatalf("CONNACK properties %+v", ack.Properties)
	}
	cases := []struct {
		topic, payload string
		code           byte
	}{
		{"motion/s1", `{"sensor":"s1","state":"on"}`, 0},
		{"motion/s1", `{"sensor":"s1"}`, packets.ErrPayloadFormatInvalid.Code},
		{"motion/s1", strings.Repeat("x", 2000), packets.ErrQuotaExceeded.Code},
		{"nowhere/s1", `{}`, packets.ErrTopicNameInvalid.Code},
	}
	for i, tc := range cases {
		c.send(publish(tc.topic, 1, uint16(i+1), tc.payload))
		pa := c.expect(packets.Puback)
		if pa.PacketID != uint16(i+1) || pa.ReasonCode != tc.code {
			t.Errorf("%s %.20q: PUBACK id %d reason 0x%x (%q), want 0x%x", tc.topic, tc.payload, pa.PacketID, pa.ReasonCode, pa.Properties.ReasonString, tc.code)
		}
		if tc.code != 0 && pa.Properties.ReasonString == "" {
			t.Errorf("%s: no reason string", tc.topic)
		}
	}
	// MQTT 3.1.1 has no reason codes: the PUBACK still comes.
	c3 := dial(t, f, 4)
	c3.connect()
	c3.send(publish("motion/s1", 1, 7, `{"sensor":"s1"}`))
	if pa := c3.expect(packets.Puback); pa.PacketID != 7 {
		t.Fatalf("3.1.1 PUBACK id %d", pa.PacketID)
	}
}

// TestMalformed: malformed or forbidden packets get the protocol's own
// answer (CONNACK or DISCONNECT reason code for MQTT 5, CONNACK return
// code or a closed connection for 3.1.1) and the server keeps serving.
func TestMalformed(t *testing.T) {
	f := start(t, motionRoutes)
	t.Run("bad protocol version", func(t *testing.T) {
		c := dial(t, f, 4)
		pk := connectPacket(4, "x")
		pk.ProtocolVersion = 9
		var buf bytes.Buffer
		pk.ConnectEncode(&buf)
		c.raw(buf.Bytes())
		if ack := c.expect(packets.Connack); ack.ReasonCode != packets.Err3UnsupportedProtocolVersion.Code {
			t.Fatalf("CONNACK 0x%x, want 0x01", ack.ReasonCode)
		}
		c.expectClosed()
	})
	t.Run("v5 malformed connect", func(t *testing.T) {
		c := dial(t, f, 5)
		// CONNECT, MQTT 5, properties length says 9 bytes but none follow.
		c.raw([]byte{0x10, 0x0b, 0, 4, 'M', 'Q', 'T', 'T', 5, 2, 0, 30, 9})
		ack := c.expect(packets.Connack)
		if ack.ReasonCode != packets.ErrMalformedPacket.Code {
			t.Fatalf("CONNACK 0x%x, want 0x81", ack.ReasonCode)
		}
		c.expectClosed()
	})
	t.Run("v5 reserved flag", func(t *testing.T) {
		c := dial(t, f, 5)
		pk := connectPacket(5, "x")
		pk.ReservedBit = 1
		var buf bytes.Buffer
		pk.ConnectEncode(&buf)
		b := buf.Bytes()
		b[9] |= 1 // the reserved bit of the connect flags
		c.raw(b)
		if ack := c.expect(packets.Connack); ack.ReasonCode != packets.ErrProtocolViolation.Code {
			t.Fatalf("CONNACK 0x%x, want 0x82", ack.ReasonCode)
		}
	})
	t.Run("not connect first", func(t *testing.T) {
		c := dial(t, f, 4)
		c.send(publish("motion/s1", 0, 0, "x"))
		c.expectClosed()
	})
	t.Run("v5 qos 2", func(t *testing.T) {
		c := dial(t, f, 5)
		c.connect()
		c.send(publish("motion/s1", 2, 1, "x"))
		if d := c.expect(packets.Disconnect); d.ReasonCode != packets.ErrQosNotSupported.Code {
			t.Fatalf("DISCONNECT 0x%x, want 0x9b", d.ReasonCode)
		}
		c.expectClosed()
	})
	t.Run("v5 packet too large", func(t *testing.T) {
		c := dial(t, f, 5)
		c.connect()
		c.send(publish("motion/s1", 1, 1, strings.Repeat("x", 5000)))
		if d := c.expect(packets.Disconnect); d.ReasonCode != packets.ErrPacketTooLarge.Code {
			t.Fatalf("DISCONNECT 0x%x, want 0x95", d.ReasonCode)
		}
	})
	t.Run("v311 packet too large", func(t *testing.T) {
		c := dial(t, f, 4)
		c.connect()
		c.send(publish("motion/s1", 1, 1, strings.Repeat("x", 5000)))
		c.expectClosed()
	})
	t.Run("v5 wildcard in topic name", func(t *testing.T) {
		c := dial(t, f, 5)
		c.connect()
		c.send(publish("motion/+", 1, 1, "x"))
		if d := c.expect(packets.Disconnect); d.ReasonCode != packets.ErrProtocolViolation.Code {
			t.Fatalf("DISCONNECT 0x%x, want 0x82", d.ReasonCode)
		}
	})
	t.Run("v5 truncated subscribe", func(t *testing.T) {
		c := dial(t, f, 5)
		c.connect()
		// SUBSCRIBE id 1, no properties, filter "a" without its options byte.
		c.raw([]byte{0x82, 0x06, 0, 1, 0, 0, 1, 'a'})
		if d := c.expect(packets.Disconnect); d.ReasonCode != packets.ErrMalformedPacket.Code {
			t.Fatalf("DISCONNECT 0x%x, want 0x81", d.ReasonCode)
		}
	})
	t.Run("second connect", func(t *testing.T) {
		c := dial(t, f, 5)
		c.connect()
		c.send(connectPacket(5, "again"))
		if d := c.expect(packets.Disconnect); d.ReasonCode != packets.ErrProtocolViolation.Code {
			t.Fatalf("DISCONNECT 0x%x, want 0x82", d.ReasonCode)
		}
	})
	// Still serving.
	c := dial(t, f, 5)
	c.connect()
	c.send(publish("motion/s1", 1, 3, `{"sensor":"s1","state":"off"}`))
	if pa := c.expect(packets.Puback); pa.ReasonCode != 0 {
		t.Fatalf("after the bad clients: PUBACK 0x%x", pa.ReasonCode)
	}
	if f.srv.Malformed.Load() < 8 {
		t.Fatalf("malformed counter %d", f.srv.Malformed.Load())
	}
}

// TestKeepAlive: PINGREQ gets PINGRESP; a client silent for 1.5 × its
// keep-alive is disconnected (MQTT 5: reason 0x8D).
func TestKeepAlive(t *testing.T) {
	f := start(t, motionRoutes)
	c := dial(t, f, 5)
	pk := connectPacket(5, "ka")
	pk.Connect.Keepalive = 1
	c.send(pk)
	c.expect(packets.Connack)
	c.send(packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingreq}})
	c.expect(packets.Pingresp)
	start := time.Now()
	if d := c.expect(packets.Disconnect); d.ReasonCode != packets.ErrKeepAliveTimeout.Code {
		t.Fatalf("DISCONNECT 0x%x, want 0x8d", d.ReasonCode)
	}
	if el := time.Since(start); el < time.Second || el > 3*time.Second {
		t.Fatalf("keep-alive of 1s expired after %v", el)
	}
}

// TestDetachUnderTraffic: while QoS 1 publishes flow on several
// connections, the MQTT adapter is replaced and detached and re-attached;
// every PUBLISH in flight when that happens completes with success, and
// those arriving while nothing is attached get "implementation specific
// error" (never a lost or half-processed message).
func TestDetachUnderTraffic(t *testing.T) {
	f := start(t, motionRoutes)
	f.chain.Delay = 10 * time.Millisecond
	const clients = 4
	var wg sync.WaitGroup
	var mu sync.Mutex
	var stop atomic.Bool
	codes := map[byte]int{}
	for i := 0; i < clients; i++ {
		c := dial(t, f, 5)
		c.nc.SetDeadline(time.Now().Add(30 * time.Second))
		c.send(connectPacket(5, "load-"+strconv.Itoa(i)))
		c.expect(packets.Connack)
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Keep 4 PUBLISHes in flight per connection until told to stop.
			const window = 4
			sent, acked := 0, 0
			for acked < sent || !stop.Load() {
				for !stop.Load() && sent-acked < window {
					sent++
					c.send(publish("slow/x", 1, uint16(sent%65535+1), "p"))
				}
				pk, err := c.recv()
				if err != nil || pk.FixedHeader.Type != packets.Puback {
					t.Errorf("PUBLISH %d: got %v %v", acked+1, packets.PacketNames[pk.FixedHeader.Type], err)
					return
				}
				acked++
				mu.Lock()
				codes[pk.ReasonCode]++
				mu.Unlock()
			}
		}()
	}
	ctx := context.Background()
	waitInFlight := func() {
		deadline := time.Now().Add(5 * time.Second)
		for f.chain.InFlight.Load() == 0 && time.Now().Before(deadline) {
			time.Sleep(time.Millisecond)
		}
	}
	for k := 0; k < 5; k++ {
		waitInFlight()
		if _, err := f.ac.AttachNamed(ctx, "mqtt"); err != nil { // replace: no gap at all
			t.Fatal(err)
		}
		waitInFlight()
		if err := f.ac.Detach(ctx, adapter.TransportMQTT); err != nil {
			t.Fatal(err)
		}
		time.Sleep(5 * time.Millisecond) // messages arriving now find no adapter
		if _, err := f.ac.AttachNamed(ctx, "mqtt"); err != nil {
			t.Fatal(err)
		}
	}
	waitInFlight()
	stop.Store(true)
	wg.Wait()
	total := 0
	for code, n := range codes {
		total += n
		if code != 0 && code != packets.ErrImplementationSpecificError.Code {
			t.Errorf("%d PUBACKs with reason 0x%x", n, code)
		}
	}
	if total == 0 || codes[0] == 0 {
		t.Fatalf("no traffic: %v", codes)
	}
	if int64(codes[0]) != f.chain.Calls.Load() || f.chain.Calls.Load() != f.chain.Released.Load() {
		t.Fatalf("successes %d, chain calls %d, released %d: an in-flight message was lost", codes[0], f.chain.Calls.Load(), f.chain.Released.Load())
	}
	t.Logf("PUBACKs by reason code: %v", codes)
}
