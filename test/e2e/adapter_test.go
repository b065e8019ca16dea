package e2e

import (
	"bufio"
	"bytes"
	"context"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	ce "github.com/cloudevents/sdk-go/v2"
	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap/zaptest"

	"github.com/spright-dev/spright/pkg/adapter"
	"github.com/spright-dev/spright/pkg/standalone"
)

// startAdapterChain runs a chain like startChain, with MQTT and CoAP
// listeners on free loopback ports.
func startAdapterChain(t *testing.T, yaml string) *chain {
	t.Helper()
	needRoot(t)
	cf, err := standalone.Parse([]byte(yaml))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	r, err := standalone.Start(cf, standalone.Options{
		Listen:        "127.0.0.1:0",
		MQTTListen:    "127.0.0.1:0",
		CoAPListen:    "127.0.0.1:0",
		PinDir:        "/sys/fs/bpf/spright-e2e-" + strconv.Itoa(os.Getpid()) + "-" + cf.Name,
		ControlSocket: filepath.Join(dir, "control.sock"),
		Executable:    spright,
		StatsDir:      dir,
		Logger:        zaptest.NewLogger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := r.Stop(); err != nil {
			t.Errorf("stop: %v", err)
		}
	})
	return &chain{Runner: r, dir: dir, url: "http://" + r.Addr() + "/"}
}

func tool(t *testing.T, pkg string, names ...string) string {
	t.Helper()
	for _, n := range names {
		if p, err := exec.LookPath(n); err == nil {
			return p
		}
	}
	t.Skipf("needs %s (Debian package %s)", names[0], pkg)
	return ""
}

func port(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }

// TestAdapterMotionMQTT is the walk-through on the real motion
// chain (eBPF, shared memory, functions in their own netns): mosquitto_pub
// publishes {"sensor":"s1","state":"on"} on motion/s1 and mosquitto_sub
// gets {"light":"s1","state":"on"} on lights/s1, over MQTT 3.1.1 and 5.
func TestAdapterMotionMQTT(t *testing.T) {
	sub := tool(t, "mosquitto-clients", "mosquitto_sub")
	pub := tool(t, "mosquitto-clients", "mosquitto_pub")
	c := startAdapterChain(t, sample(t, "motion"))
	p := port(c.MQTTAddr())
	for i, v := range []string{"mqttv311", "mqttv5"} {
		sensor := "s" + strconv.Itoa(i+1)
		var out bytes.Buffer
		cmd := exec.Command(sub, "-p", p, "-V", v, "-q", "1", "-t", "lights/"+sensor, "-v", "-C", "1", "-W", "20", "-i", "sub-"+v)
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Publish until the subscriber has its answer: a publish before its
		// SUBSCRIBE lands has nobody to go to (no retained messages).
		done := make(chan error, 1)
		go func() { done <- cmd.Wait() }()
		var err error
	publish:
		for tries := 0; ; tries++ {
			msg := `{"sensor":"` + sensor + `","state":"on"}`
			if b, err := exec.Command(pub, "-p", p, "-V", v, "-q", "1", "-t", "motion/"+sensor, "-m", msg).CombinedOutput(); err != nil {
				t.Fatalf("mosquitto_pub: %v: %s", err, b)
			}
			select {
			case err = <-done:
				break publish
			case <-time.After(100 * time.Millisecond):
			}
			if tries > 100 {
				cmd.Process.Kill()
				t.Fatalf("%s: no answer on lights/%s: %s", v, sensor, out.String())
			}
		}
		if err != nil {
			t.Fatalf("mosquitto_sub: %v: %s", err, out.String())
		}
		want := "lights/" + sensor + ` {"light":"` + sensor + `","state":"on"}`
		if got := strings.TrimSpace(out.String()); got != want {
			t.Fatalf("%s: got %q, want %q", v, got, want)
		}
	}
	// A bad event is refused by the sensor function: MQTT 5 PUBACK 0x99.
	mc := dialMQTT(t, c.MQTTAddr(), "bad")
	mc.publish(t, "motion/s9", 1, `{"sensor":"s9"}`)
	if code := mc.puback(t); code != packets.ErrPayloadFormatInvalid.Code {
		t.Fatalf("bad event: PUBACK 0x%x, want 0x99", code)
	}
}

// TestAdapterCoAP: libcoap's coap-client gets the chain's answer; errors
// are CoAP codes.
func TestAdapterCoAP(t *testing.T) {
	client := tool(t, "libcoap3-bin", "coap-client", "coap-client-notls", "coap-client-gnutls", "coap-client-openssl")
	c := startAdapterChain(t, sample(t, "motion"))
	url := "coap://127.0.0.1:" + port(c.CoAPAddr())
	run := func(args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		out, _ := exec.CommandContext(ctx, client, append([]string{"-B", "10"}, args...)...).CombinedOutput()
		return strings.TrimSpace(string(out))
	}
	if got := run("-m", "post", "-t", "json", "-e", `{"sensor":"s1","state":"on"}`, url+"/motion"); got != `{"light":"s1","state":"on"}` {
		t.Fatalf("motion over CoAP: %q", got)
	}
	if got := run("-m", "post", "-e", `{"sensor":"s1"}`, url+"/motion"); !strings.Contains(got, "4.00") {
		t.Fatalf("bad event: %q, want 4.00", got)
	}
	if got := run("-m", "post", "-e", strings.Repeat("x", 5000), url+"/motion"); !strings.Contains(got, "4.13") {
		t.Fatalf("payload over the 4096-byte slot: %q, want 4.13", got)
	}
	if got := run("-m", "post", "-O", "65001,x", "-e", "x", url+"/motion"); !strings.Contains(got, "4.02") {
		t.Fatalf("unknown critical option: %q, want 4.02", got)
	}
}

// TestAdapterCloudEvents: with protocol cloudevents, sdk-go's client and a
// structured-mode curl request get answer events; a request missing
// attributes gets 400.
func TestAdapterCloudEvents(t *testing.T) {
	yaml := strings.Replace(sample(t, "motion"), "protocol: mqtt,coap", "protocol: cloudevents,mqtt", 1)
	c := startAdapterChain(t, yaml)
	cl, err := ce.NewClientHTTP()
	if err != nil {
		t.Fatal(err)
	}
	ev := ce.NewEvent()
	ev.SetID("1")
	ev.SetSource("/sensors/s1")
	ev.SetType("motion")
	ev.SetData(ce.ApplicationJSON, map[string]string{"sensor": "s1", "state": "on"})
	resp, res := cl.Request(ce.ContextWithTarget(context.Background(), c.url), ev)
	if !ce.IsACK(res) || resp == nil || resp.Type() != "motion.response" || string(resp.Data()) != `{"light":"s1","state":"on"}` {
		t.Fatalf("sdk-go request: %v %v", res, resp)
	}
	curl := tool(t, "curl", "curl")
	out, err := exec.Command(curl, "-sS", "-H", "Content-Type: application/cloudevents+json", "-d",
		`{"specversion":"1.0","id":"2","source":"/s","type":"motion","datacontenttype":"application/json","data":{"sensor":"s2","state":"off"}}`, c.url).CombinedOutput()
	if err != nil || !strings.Contains(string(out), `"type":"motion.response"`) || !strings.Contains(string(out), `"data":{"light":"s2","state":"off"}`) {
		t.Fatalf("curl structured: %v %s", err, out)
	}
	out, _ = exec.Command(curl, "-sS", "-w", "%{http_code}", "-H", "Content-Type: application/cloudevents+json", "-d",
		`{"specversion":"1.0","source":"/s","type":"motion"}`, c.url).CombinedOutput()
	if !strings.HasSuffix(string(out), "400") || !strings.Contains(string(out), "id") {
		t.Fatalf("missing id: %s, want 400", out)
	}
}

// TestAdapterAttachDetachUnderTraffic: MQTT 5 clients keep QoS 1
// publishes in flight through the real chain while the MQTT adapter is
// replaced, detached and attached again. Every PUBLISH gets a PUBACK:
// success, or "implementation specific error" while nothing is attached;
// every request that entered the chain came back (none lost in flight).
func TestAdapterAttachDetachUnderTraffic(t *testing.T) {
	c := startAdapterChain(t, sample(t, "motion"))
	var stop atomic.Bool
	var mu sync.Mutex
	codes := map[byte]int{}
	var wg sync.WaitGroup
	for i := 0; i < 4; i++ {
		mc := dialMQTT(t, c.MQTTAddr(), "load-"+strconv.Itoa(i))
		wg.Add(1)
		go func() {
			defer wg.Done()
			sent, acked := 0, 0
			for acked < sent || !stop.Load() {
				for !stop.Load() && sent-acked < 4 {
					sent++
					mc.publish(t, "motion/s1", uint16(sent%60000+1), `{"sensor":"s1","state":"on"}`)
				}
				code := mc.puback(t)
				acked++
				mu.Lock()
				codes[code]++
				mu.Unlock()
			}
		}()
	}
	ctx := context.Background()
	waitOK := func(n int) {
		deadline := time.Now().Add(10 * time.Second)
		for {
			mu.Lock()
			ok := codes[0]
			mu.Unlock()
			if ok >= n || time.Now().After(deadline) {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	for k := 1; k <= 5; k++ {
		waitOK(k * 20)
		if _, err := c.Adapters.AttachNamed(ctx, "mqtt"); err != nil {
			t.Fatal(err)
		}
		if err := c.Adapters.Detach(ctx, adapter.TransportMQTT); err != nil {
			t.Fatal(err)
		}
		time.Sleep(10 * time.Millisecond)
		if _, err := c.Adapters.AttachNamed(ctx, "mqtt"); err != nil {
			t.Fatal(err)
		}
	}
	waitOK(120)
	stop.Store(true)
	wg.Wait()
	for code, n := range codes {
		if code != 0 && code != packets.ErrImplementationSpecificError.Code {
			t.Errorf("%d PUBACKs with reason 0x%x", n, code)
		}
	}
	if d, r := c.Chain.Dispatched.Load(), c.Chain.Returned.Load(); d != r || d != uint64(codes[0]) {
		t.Fatalf("dispatched %d, returned %d, succeeded %d: a request was lost", d, r, codes[0])
	}
	t.Logf("PUBACKs by reason code: %v", codes)
}

// mqttClient is a minimal MQTT 5 client (mochi-mqtt's codec) that can keep
// several QoS 1 publishes in flight.
type mqttClient struct {
	nc net.Conn
	br *bufio.Reader
}

func dialMQTT(t *testing.T, addr, id string) *mqttClient {
	t.Helper()
	nc, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { nc.Close() })
	nc.SetDeadline(time.Now().Add(45 * time.Second))
	c := &mqttClient{nc: nc, br: bufio.NewReader(nc)}
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connect}, ProtocolVersion: 5,
		Connect: packets.ConnectParams{ProtocolName: []byte("MQTT"), Clean: true, ClientIdentifier: id, Keepalive: 60}}
	var buf bytes.Buffer
	pk.ConnectEncode(&buf)
	nc.Write(buf.Bytes())
	if typ, _ := c.read(t); typ.FixedHeader.Type != packets.Connack || typ.ReasonCode != 0 {
		t.Fatalf("CONNACK: %+v", typ)
	}
	return c
}

func (c *mqttClient) publish(t *testing.T, topic string, id uint16, payload string) {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: 1}, ProtocolVersion: 5, TopicName: topic, PacketID: id, Payload: []byte(payload)}
	var buf bytes.Buffer
	pk.PublishEncode(&buf)
	if _, err := c.nc.Write(buf.Bytes()); err != nil {
		t.Errorf("publish: %v", err)
	}
}

func (c *mqttClient) puback(t *testing.T) byte {
	pk, err := c.read(t)
	if err != nil || pk.FixedHeader.Type != packets.Puback {
		t.Errorf("want PUBACK, got %s (%v)", packets.PacketNames[pk.FixedHeader.Type], err)
		return 0xff
	}
	return pk.ReasonCode
}

func (c *mqttClient) read(t *testing.T) (packets.Packet, error) {
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
	pk.FixedHeader.Remaining, pk.ProtocolVersion = n, 5
	buf := make([]byte, n)
	if _, err := io.ReadFull(c.br, buf); err != nil {
		return pk, err
	}
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackDecode(buf)
	case packets.Puback:
		err = pk.PubackDecode(buf)
	}
	return pk, err
}
