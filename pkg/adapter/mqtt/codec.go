package mqtt

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"

	"github.com/mochi-mqtt/server/v2/packets"
)

// errPacketTooLarge is returned by readPacket for a packet over the limit.
var errPacketTooLarge = packets.ErrPacketTooLarge

// readPacket reads one packet (fixed header, then the remaining bytes) and
// decodes it for protocol version (0 before CONNECT). Decoding failures
// carry an MQTT reason code (packets.Code): malformed packet (0x81),
// protocol error (0x82), packet too large (0x95). io errors are returned
// as they are.
func readPacket(br *bufio.Reader, version byte, maxSize uint32) (packets.Packet, error) {
	var pk packets.Packet
	b, err := br.ReadByte()
	if err != nil {
		return pk, err
	}
	if err := pk.FixedHeader.Decode(b); err != nil {
		return pk, err
	}
	n, _, err := packets.DecodeLength(br)
	if err != nil {
		if errors.Is(err, io.EOF) {
			return pk, io.ErrUnexpectedEOF
		}
		return pk, err
	}
	pk.FixedHeader.Remaining = n
	if maxSize > 0 && uint64(n) > uint64(maxSize) {
		return pk, errPacketTooLarge
	}
	buf := make([]byte, n)
	if _, err := io.ReadFull(br, buf); err != nil {
		return pk, err
	}
	pk.ProtocolVersion = version
	return pk, decodeBody(&pk, buf)
}

// decodeBody decodes a packet's variable header and payload with the
// mochi-mqtt codec. A panic in the codec (it trusts some lengths) is a
// malformed packet, never a crashed gateway.
func decodeBody(pk *packets.Packet, buf []byte) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v: %w", r, packets.ErrMalformedPacket)
		}
	}()
	switch pk.FixedHeader.Type {
	case packets.Connect:
		err = pk.ConnectDecode(buf)
	case packets.Publish:
		err = pk.PublishDecode(buf)
	case packets.Puback:
		err = pk.PubackDecode(buf)
	case packets.Pubrec:
		err = pk.PubrecDecode(buf)
	case packets.Pubrel:
		err = pk.PubrelDecode(buf)
	case packets.Pubcomp:
		err = pk.PubcompDecode(buf)
	case packets.Subscribe:
		err = pk.SubscribeDecode(buf)
	case packets.Unsubscribe:
		err = pk.UnsubscribeDecode(buf)
	case packets.Pingreq:
		err = pk.PingreqDecode(buf)
	case packets.Disconnect:
		err = pk.DisconnectDecode(buf)
	case packets.Auth:
		err = pk.AuthDecode(buf)
	case packets.Connack, packets.Suback, packets.Unsuback, packets.Pingresp:
		err = fmt.Errorf("%s sent by a client: %w", packets.PacketNames[pk.FixedHeader.Type], packets.ErrProtocolViolation)
	default:
		err = fmt.Errorf("packet type %d: %w", pk.FixedHeader.Type, packets.ErrMalformedPacket)
	}
	return err
}

// codeOf is the MQTT reason code err carries (malformed packet if none).
func codeOf(err error) packets.Code {
	var c packets.Code
	if errors.As(err, &c) {
		return c
	}
	return packets.ErrMalformedPacket
}

// encode serialises pk for the wire.
func encode(pk *packets.Packet) ([]byte, error) {
	var buf bytes.Buffer
	var err error
	switch pk.FixedHeader.Type {
	case packets.Connack:
		err = pk.ConnackEncode(&buf)
	case packets.Publish:
		err = pk.PublishEncode(&buf)
	case packets.Puback:
		err = pk.PubackEncode(&buf)
	case packets.Suback:
		err = pk.SubackEncode(&buf)
	case packets.Unsuback:
		err = pk.UnsubackEncode(&buf)
	case packets.Pingresp:
		err = pk.PingrespEncode(&buf)
	case packets.Disconnect:
		err = pk.DisconnectEncode(&buf)
	default:
		err = fmt.Errorf("mqtt: no encoder for packet type %d", pk.FixedHeader.Type)
	}
	return buf.Bytes(), err
}
