package mqtt

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mochi-mqtt/server/v2/packets"
	"go.uber.org/zap"

	"github.com/spright-dev/spright/pkg/adapter"
)

// Config configures the MQTT front end.
type Config struct {
	// Chains served; a PUBLISH goes to the first chain whose MQTT adapter
	// accepts its topic.
	Chains []*adapter.Chain
	// MaxPacketSize bounds an incoming packet's remaining length (default
	// 1 MiB). It is announced to MQTT 5 clients in CONNACK.
	MaxPacketSize uint32
	// ReceiveMaximum is how many PUBLISHes of one connection are processed
	// at once (default 64); further ones wait (TCP backpressure).
	ReceiveMaximum uint16
	// ConnectTimeout bounds the wait for CONNECT (default 10s).
	ConnectTimeout time.Duration
	// WriteTimeout bounds one write to a client (default 10s).
	WriteTimeout time.Duration
	Logger       *zap.Logger
}

// Server is the gateway's MQTT front end: it holds the L7 sessions (CONNECT
// and CONNACK, keep-alive, SUBSCRIBE, PUBACK, DISCONNECT) and hands each
// PUBLISH to the chain's MQTT adapter, which picks the chain topic and the
// reply topic. The chain's answer is published to the subscribers of the
// reply topic. It is not a general broker: client PUBLISHes go to chains,
// subscribers receive chain answers; no retained messages, no will
// messages, no state kept after a connection ends.
type Server struct {
	cfg  Config
	log  *zap.Logger
	ctx  context.Context // ends with Close: in-flight chain calls give up
	stop context.CancelFunc

	mu    sync.RWMutex
	conns map[*conn]struct{}
	byID  map[string]*conn
	lns   []net.Listener
	wg    sync.WaitGroup

	clientSeq atomic.Uint64

	// Counters.
	Received  atomic.Uint64 // PUBLISH packets from clients
	Answered  atomic.Uint64 // chain answers published on a reply topic
	Failed    atomic.Uint64 // PUBLISHes whose chain call or adapter failed
	Malformed atomic.Uint64 // connections ended for a malformed or forbidden packet
}

// NewServer makes an MQTT front end.
func NewServer(cfg Config) *Server {
	if cfg.MaxPacketSize == 0 {
		cfg.MaxPacketSize = 1 << 20
	}
	if cfg.ReceiveMaximum == 0 {
		cfg.ReceiveMaximum = 64
	}
	if cfg.ConnectTimeout == 0 {
		cfg.ConnectTimeout = 10 * time.Second
	}
	if cfg.WriteTimeout == 0 {
		cfg.WriteTimeout = 10 * time.Second
	}
	if cfg.Logger == nil {
		cfg.Logger = zap.NewNop()
	}
	ctx, stop := context.WithCancel(context.Background())
	return &Server{cfg: cfg, log: cfg.Logger, ctx: ctx, stop: stop, conns: map[*conn]struct{}{}, byID: map[string]*conn{}}
}

// Listen opens a TCP listener on addr and serves it in the background.
func (s *Server) Listen(addr string) (net.Addr, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("mqtt: listen %s: %w", addr, err)
	}
	go s.Serve(ln)
	return ln.Addr(), nil
}

// Serve accepts connections on ln until Close.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.ctx.Err() != nil {
		s.mu.Unlock()
		ln.Close()
		return net.ErrClosed
	}
	s.lns = append(s.lns, ln)
	s.wg.Add(1)
	s.mu.Unlock()
	defer s.wg.Done()
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.ctx.Err() != nil {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				time.Sleep(10 * time.Millisecond)
				continue
			}
			return fmt.Errorf("mqtt: accept: %w", err)
		}
		c := &conn{s: s, nc: nc, br: bufio.NewReader(nc), bw: bufio.NewWriter(nc), subs: map[string]byte{},
			outbound: map[uint16]struct{}{}, done: make(chan struct{})}
		s.mu.Lock()
		if s.ctx.Err() != nil {
			s.mu.Unlock()
			nc.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// Close stops accepting, tells MQTT 5 clients the server is shutting down,
// closes every connection and waits for their in-flight messages.
func (s *Server) Close() error {
	s.mu.Lock()
	s.stop()
	lns := s.lns
	var cs []*conn
	for c := range s.conns {
		cs = append(cs, c)
	}
	s.mu.Unlock()
	for _, ln := range lns {
		ln.Close()
	}
	for _, c := range cs {
		c.disconnect(packets.ErrServerShuttingDown)
	}
	s.wg.Wait()
	return nil
}

// Subscribers counts the connections subscribed to a filter matching topic.
func (s *Server) Subscribers(topic string) int {
	n := 0
	s.mu.RLock()
	defer s.mu.RUnlock()
	for c := range s.conns {
		if _, ok := c.matches(topic); ok {
			n++
		}
	}
	return n
}

// publish sends an answer to every connection subscribed to topic.
func (s *Server) publish(topic string, out *adapter.Outbound) int {
	s.mu.RLock()
	var targets []*conn
	var qos []byte
	for c := range s.conns {
		if q, ok := c.matches(topic); ok {
			targets = append(targets, c)
			qos = append(qos, q)
		}
	}
	s.mu.RUnlock()
	n := 0
	for i, c := range targets {
		if err := c.deliver(topic, qos[i], out); err != nil {
			s.log.Debug("mqtt: delivery failed", zap.String("client", c.clientID), zap.String("topic", topic), zap.Error(err))
			continue
		}
		n++
	}
	return n
}

// conn is one client connection.
type conn struct {
	s  *Server
	nc net.Conn
	br *bufio.Reader

	// Fixed after CONNECT.
	version     byte
	clientID    string
	keepalive   uint16
	maxOut      uint32 // client's Maximum Packet Size (0 = none)
	recvMax     uint16 // client's Receive Maximum
	problemInfo bool

	smu  sync.Mutex
	subs map[string]byte // filter -> granted QoS

	wmu      sync.Mutex
	bw       *bufio.Writer
	nextID   uint16
	outbound map[uint16]struct{} // QoS 1 answers not yet acknowledged
	closed   bool

	done      chan struct{}
	closeOnce sync.Once
}

// job is one PUBLISH being processed; acks are sent in arrival order.
type job struct {
	pk   packets.Packet
	done chan struct{}
	code packets.Code
}

func (c *conn) log() *zap.Logger {
	return c.s.log.With(zap.String("client", c.clientID), zap.Stringer("remote", c.nc.RemoteAddr()))
}

func (c *conn) serve() {
	defer c.s.wg.Done()
	defer c.close()
	c.nc.SetReadDeadline(time.Now().Add(c.s.cfg.ConnectTimeout))
	pk, err := readPacket(c.br, 0, c.s.cfg.MaxPacketSize)
	if err != nil || pk.FixedHeader.Type != packets.Connect {
		c.refuseConnect(pk, err)
		return
	}
	if !c.connect(&pk) {
		return
	}
	acks := make(chan *job, c.s.cfg.ReceiveMaximum)
	ackDone := make(chan struct{})
	go c.ackLoop(acks, ackDone)
	defer func() {
		close(acks)
		<-ackDone // in-flight PUBLISHes finish (their answers still go out)
	}()
	for {
		if c.keepalive > 0 {
			c.nc.SetReadDeadline(time.Now().Add(time.Duration(c.keepalive) * 1500 * time.Millisecond))
		} else {
			c.nc.SetReadDeadline(time.Time{})
		}
		pk, err := readPacket(c.br, c.version, c.s.cfg.MaxPacketSize)
		if err != nil {
			var ne net.Error
			switch {
			case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
				c.log().Debug("mqtt: connection closed without DISCONNECT")
			case errors.As(err, &ne) && ne.Timeout():
				c.log().Info("mqtt: keep-alive expired", zap.Uint16("keepalive", c.keepalive))
				c.disconnect(packets.ErrKeepAliveTimeout)
			case errors.Is(err, io.ErrUnexpectedEOF):
				c.log().Debug("mqtt: connection closed mid-packet")
			default:
				c.violation(err)
			}
			return
		}
		switch pk.FixedHeader.Type {
		case packets.Publish:
			if code := c.checkPublish(&pk); code != packets.CodeSuccess {
				c.violation(code)
				return
			}
			c.s.Received.Add(1)
			j := &job{pk: pk, done: make(chan struct{}), code: packets.CodeSuccess}
			acks <- j // blocks when ReceiveMaximum PUBLISHes are in flight
			go c.process(j)
		case packets.Puback:
			c.wmu.Lock()
			delete(c.outbound, pk.PacketID)
			c.wmu.Unlock()
		case packets.Subscribe:
			if !c.subscribe(&pk) {
				return
			}
		case packets.Unsubscribe:
			c.unsubscribe(&pk)
		case packets.Pingreq:
			c.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Pingresp}})
		case packets.Disconnect:
			c.log().Debug("mqtt: client disconnected", zap.Uint8("reason", pk.ReasonCode))
			return
		case packets.Connect:
			c.violation(packets.ErrProtocolViolationSecondConnect)
			return
		default: // PUBREC, PUBREL, PUBCOMP (no QoS 2 here), AUTH
			c.violation(fmt.Errorf("unexpected %s: %w", packets.PacketNames[pk.FixedHeader.Type], packets.ErrProtocolViolation))
			return
		}
	}
}

// refuseConnect answers a first packet that is not a good CONNECT.
func (c *conn) refuseConnect(pk packets.Packet, err error) {
	c.s.Malformed.Add(1)
	if err == nil {
		c.log().Info("mqtt: first packet is not CONNECT", zap.String("packet", packets.PacketNames[pk.FixedHeader.Type]))
		return // [MQTT-3.1.0-1]: close
	}
	var ne net.Error
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || (errors.As(err, &ne) && ne.Timeout()) {
		return
	}
	c.log().Info("mqtt: bad CONNECT", zap.Error(err))
	if pk.FixedHeader.Type != packets.Connect {
		return
	}
	code := codeOf(err)
	switch {
	case pk.ProtocolVersion == 5:
		c.version = 5
		c.problemInfo = true
		c.connack(code, nil)
	case !supportedVersion(pk.ProtocolVersion) && pk.ProtocolVersion != 0:
		c.version = 4
		c.connack(packets.Err3UnsupportedProtocolVersion, nil)
	}
	// MQTT 3.1.1: a malformed CONNECT just closes the connection.
}

func supportedVersion(v byte) bool { return v == 3 || v == 4 || v == 5 }

// connect handles a decoded CONNECT and answers CONNACK.
func (c *conn) connect(pk *packets.Packet) bool {
	c.version = pk.ProtocolVersion
	c.problemInfo = true
	if !supportedVersion(pk.ProtocolVersion) {
		c.version = 4
		c.log().Info("mqtt: unsupported protocol version", zap.Uint8("version", pk.ProtocolVersion))
		c.connack(packets.Err3UnsupportedProtocolVersion, nil)
		return false
	}
	if code := pk.ConnectValidate(); code != packets.CodeSuccess {
		c.s.Malformed.Add(1)
		c.log().Info("mqtt: CONNECT refused", zap.String("reason", code.Reason))
		if c.version == 5 {
			c.connack(code, nil)
		} else if code == packets.ErrProtocolViolationProtocolVersion {
			c.connack(packets.Err3UnsupportedProtocolVersion, nil)
		}
		return false
	}
	props := pk.Properties
	if c.version == 5 {
		if props.RequestProblemInfoFlag && props.RequestProblemInfo == 0 {
			c.problemInfo = false
		}
		c.maxOut = props.MaximumPacketSize
		c.recvMax = props.ReceiveMaximum
		if props.AuthenticationMethod != "" {
			c.connack(packets.ErrBadAuthenticationMethod, nil)
			return false
		}
	}
	if c.recvMax == 0 {
		c.recvMax = 65535
	}
	c.keepalive = pk.Connect.Keepalive
	c.clientID = pk.Connect.ClientIdentifier
	var ack packets.Properties
	if c.clientID == "" {
		if c.version < 5 && !pk.Connect.Clean {
			c.connack(packets.Err3ClientIdentifierNotValid, nil) // [MQTT-3.1.3-8]
			return false
		}
		c.clientID = "spright-" + strconv.FormatUint(c.s.clientSeq.Add(1), 10)
		ack.AssignedClientID = c.clientID
	}
	if c.version == 5 {
		ack.MaximumPacketSize = c.s.cfg.MaxPacketSize
		ack.ReceiveMaximum = c.s.cfg.ReceiveMaximum
		ack.MaximumQos, ack.MaximumQosFlag = 1, true
		ack.RetainAvailable, ack.RetainAvailableFlag = 0, true
		ack.SubIDAvailable, ack.SubIDAvailableFlag = 0, true
		ack.SharedSubAvailable, ack.SharedSubAvailableFlag = 0, true
		if props.SessionExpiryInterval > 0 {
			// No state survives the connection: say so.
			ack.SessionExpiryInterval, ack.SessionExpiryIntervalFlag = 0, true
		}
	}
	// One session per client id: a new connection takes over.
	c.s.mu.Lock()
	old := c.s.byID[c.clientID]
	c.s.byID[c.clientID] = c
	c.s.mu.Unlock()
	if old != nil {
		old.disconnect(packets.ErrSessionTakenOver)
	}
	c.log().Debug("mqtt: client connected", zap.Uint8("version", c.version), zap.Uint16("keepalive", c.keepalive))
	return c.connack(packets.CodeSuccess, &ack) == nil
}

func (c *conn) connack(code packets.Code, props *packets.Properties) error {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Connack}, ProtocolVersion: c.version, ReasonCode: code.Code}
	if c.version < 5 && code.Code >= 0x80 {
		if v3, ok := packets.V5CodesToV3[code]; ok {
			pk.ReasonCode = v3.Code
		} else {
			pk.ReasonCode = packets.Err3ServerUnavailable.Code
		}
	}
	if props != nil {
		pk.Properties = *props
	}
	if c.version == 5 && code.Code >= 0x80 && c.problemInfo {
		pk.Properties.ReasonString = code.Reason
	}
	return c.write(&pk)
}

// checkPublish enforces what the CONNACK announced.
func (c *conn) checkPublish(pk *packets.Packet) packets.Code {
	if code := pk.PublishValidate(0); code != packets.CodeSuccess {
		return code
	}
	if pk.FixedHeader.Qos > 1 {
		return packets.ErrQosNotSupported // MQTT 5: announced Maximum QoS 1
	}
	if pk.FixedHeader.Retain && c.version == 5 {
		return packets.ErrRetainNotSupported
	}
	if err := ValidTopicName(pk.TopicName); err != nil {
		return packets.ErrTopicNameInvalid
	}
	return packets.CodeSuccess
}

// process runs one PUBLISH through a chain and publishes the answer.
func (c *conn) process(j *job) {
	defer close(j.done)
	in := &adapter.Inbound{Ctx: c.s.ctx, Transport: adapter.TransportMQTT, Method: "PUBLISH", Address: j.pk.TopicName,
		Meta: adapter.Meta{}, Body: bytes.NewReader(j.pk.Payload), Size: int64(len(j.pk.Payload))}
	if p := j.pk.Properties; c.version == 5 {
		if p.ContentType != "" {
			in.Meta.Set(MetaContentType, p.ContentType)
		}
		if p.ResponseTopic != "" {
			in.Meta.Set(MetaResponseTopic, p.ResponseTopic)
		}
		if len(p.CorrelationData) > 0 {
			in.Meta.Set(MetaCorrelationData, string(p.CorrelationData))
		}
	}
	err := c.s.dispatch(in)
	if err != nil {
		c.s.Failed.Add(1)
		status, msg := adapter.StatusOf(err)
		j.code = reasonFor(status, msg)
		c.log().Info("mqtt: PUBLISH failed", zap.String("topic", j.pk.TopicName), zap.Int("status", status), zap.String("error", msg))
	}
}

// dispatch hands in to the first chain whose MQTT adapter takes its topic
// and publishes the answer on the reply topic.
func (s *Server) dispatch(in *adapter.Inbound) error {
	return adapter.Dispatch(s.cfg.Chains, adapter.TransportMQTT, in, func(out *adapter.Outbound) error {
		if out.Address == "" {
			return nil // no reply topic: the answer is dropped (the PUBACK still reports success)
		}
		if err := ValidTopicName(out.Address); err != nil {
			return adapter.Errorf(http.StatusBadRequest, "reply topic: %v", err)
		}
		if s.publish(out.Address, out) > 0 {
			s.Answered.Add(1)
		}
		return nil
	})
}

// reasonFor maps a chain or adapter failure to a PUBACK reason code.
func reasonFor(status int, msg string) packets.Code {
	var c packets.Code
	switch {
	case status == http.StatusBadRequest:
		c = packets.ErrPayloadFormatInvalid
	case status == http.StatusNotFound:
		c = packets.ErrTopicNameInvalid
	case status == http.StatusUnauthorized || status == http.StatusForbidden:
		c = packets.ErrNotAuthorized
	case status == http.StatusRequestEntityTooLarge || status == http.StatusServiceUnavailable || status == http.StatusTooManyRequests:
		c = packets.ErrQuotaExceeded
	case status == http.StatusNotImplemented: // no adapter attached
		c = packets.ErrImplementationSpecificError
	case status >= 500:
		c = packets.ErrUnspecifiedError
	default:
		c = packets.ErrImplementationSpecificError
	}
	c.Reason = fmt.Sprintf("%d %s", status, msg)
	return c
}

// ackLoop acknowledges QoS 1 PUBLISHes in the order they arrived, each once
// its chain call is done (so an MQTT 5 PUBACK can carry the outcome).
func (c *conn) ackLoop(acks <-chan *job, done chan<- struct{}) {
	defer close(done)
	for j := range acks {
		<-j.done
		if j.pk.FixedHeader.Qos == 0 {
			continue
		}
		ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Puback}, ProtocolVersion: c.version, PacketID: j.pk.PacketID}
		if c.version == 5 && j.code.Code >= 0x80 {
			ack.ReasonCode = j.code.Code
			if c.problemInfo {
				ack.Properties.ReasonString = j.code.Reason
			}
		}
		c.write(&ack)
	}
}

func (c *conn) subscribe(pk *packets.Packet) bool {
	if code := pk.SubscribeValidate(); code != packets.CodeSuccess {
		c.violation(code)
		return false
	}
	if c.version == 5 && len(pk.Properties.SubscriptionIdentifier) > 0 {
		c.violation(packets.ErrSubscriptionIdentifiersNotSupported)
		return false
	}
	codes := make([]byte, len(pk.Filters))
	c.smu.Lock()
	for i, f := range pk.Filters {
		switch {
		case strings.HasPrefix(f.Filter, "$share/"):
			codes[i] = packets.ErrSharedSubscriptionsNotSupported.Code
		case ValidFilter(f.Filter) != nil:
			codes[i] = packets.ErrTopicFilterInvalid.Code
		default:
			q := min(f.Qos, 1)
			c.subs[f.Filter] = q
			codes[i] = q
		}
		if c.version < 5 && codes[i] >= 0x80 {
			codes[i] = 0x80 // MQTT 3.1.1: Failure
		}
	}
	c.smu.Unlock()
	c.write(&packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Suback}, ProtocolVersion: c.version, PacketID: pk.PacketID, ReasonCodes: codes})
	return true
}

func (c *conn) unsubscribe(pk *packets.Packet) {
	codes := make([]byte, len(pk.Filters))
	c.smu.Lock()
	for i, f := range pk.Filters {
		if _, ok := c.subs[f.Filter]; ok {
			delete(c.subs, f.Filter)
		} else {
			codes[i] = packets.CodeNoSubscriptionExisted.Code
		}
	}
	c.smu.Unlock()
	ack := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Unsuback}, ProtocolVersion: c.version, PacketID: pk.PacketID}
	if c.version == 5 {
		ack.ReasonCodes = codes
	}
	c.write(&ack)
}

// matches reports the highest QoS of c's subscriptions matching topic.
func (c *conn) matches(topic string) (byte, bool) {
	c.smu.Lock()
	defer c.smu.Unlock()
	var q byte
	ok := false
	for f, fq := range c.subs {
		if _, m := Match(f, topic); m {
			ok = true
			q = max(q, fq)
		}
	}
	return q, ok
}

// deliver sends an answer to this subscriber.
func (c *conn) deliver(topic string, qos byte, out *adapter.Outbound) error {
	pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Publish, Qos: qos}, ProtocolVersion: c.version,
		TopicName: topic, Payload: out.Body}
	if c.version == 5 {
		pk.Properties.ContentType = out.Meta.Get(MetaContentType)
		if cd := out.Meta.Get(MetaCorrelationData); cd != "" {
			pk.Properties.CorrelationData = []byte(cd)
		}
		pk.Mods.MaxSize = c.maxOut
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	if qos == 1 {
		if len(c.outbound) >= int(c.recvMax) {
			pk.FixedHeader.Qos = 0 // the client's Receive Maximum is reached
		} else {
			for {
				c.nextID++
				if _, used := c.outbound[c.nextID]; c.nextID != 0 && !used {
					break
				}
			}
			pk.PacketID = c.nextID
			c.outbound[pk.PacketID] = struct{}{}
		}
	}
	b, err := encode(&pk)
	if err != nil {
		return err
	}
	if c.maxOut > 0 && uint32(len(b)) > c.maxOut {
		delete(c.outbound, pk.PacketID)
		return fmt.Errorf("answer of %d bytes exceeds the client's maximum packet size %d", len(b), c.maxOut)
	}
	return c.writeLocked(b)
}

func (c *conn) write(pk *packets.Packet) error {
	if c.version == 5 {
		pk.Mods.DisallowProblemInfo = !c.problemInfo
		pk.Mods.MaxSize = c.maxOut
	}
	b, err := encode(pk)
	if err != nil {
		return err
	}
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if c.closed {
		return net.ErrClosed
	}
	return c.writeLocked(b)
}

func (c *conn) writeLocked(b []byte) error {
	c.nc.SetWriteDeadline(time.Now().Add(c.s.cfg.WriteTimeout))
	if _, err := c.bw.Write(b); err != nil {
		return err
	}
	return c.bw.Flush()
}

// violation ends the connection for a malformed or forbidden packet: MQTT 5
// clients get a DISCONNECT with the reason code, MQTT 3.1.1 clients see the
// connection close (the only error signal 3.1.1 has).
func (c *conn) violation(err error) {
	c.s.Malformed.Add(1)
	code := codeOf(err)
	c.log().Info("mqtt: closing connection", zap.Uint8("reason", code.Code), zap.String("error", err.Error()))
	c.disconnect(code)
}

// disconnect sends an MQTT 5 DISCONNECT (if the client speaks 5) and
// closes the connection.
func (c *conn) disconnect(code packets.Code) {
	if c.version == 5 {
		pk := packets.Packet{FixedHeader: packets.FixedHeader{Type: packets.Disconnect}, ProtocolVersion: 5, ReasonCode: code.Code}
		if c.problemInfo {
			pk.Properties.ReasonString = code.Reason
		}
		c.write(&pk)
	}
	c.close()
}

func (c *conn) close() {
	c.closeOnce.Do(func() {
		c.wmu.Lock()
		c.closed = true
		c.wmu.Unlock()
		c.nc.Close()
		c.s.mu.Lock()
		delete(c.s.conns, c)
		if c.s.byID[c.clientID] == c {
			delete(c.s.byID, c.clientID)
		}
		c.s.mu.Unlock()
		close(c.done)
	})
}
