package peer

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Frame types.
const (
	// TypeServe advertises how many instances of a function the sender
	// has (0: none any more).
	TypeServe uint8 = 1
	// TypeRequest carries a request to its next function on the receiver.
	TypeRequest uint8 = 2
	// TypeResult carries a chain's answer to the node where it entered.
	TypeResult uint8 = 3
	// TypeFail tells the entry node a request could not be served.
	TypeFail uint8 = 4
)

// Limits of the wire format.
const (
	// MaxFrame bounds a frame (header fields + payload).
	MaxFrame = 16 << 20
	// MaxName bounds chain, function, node names and topics.
	MaxName = 253
	// MaxItinerary bounds the pending functions a request carries.
	MaxItinerary = 64
)

// Origin is where a request entered the cluster: its node and the slot
// (and slot generation) that node keeps for the answer.
type Origin struct {
	Node string
	Slot uint32
	Gen  uint32
}

// Frame is one message between peers. Which fields mean something depends
// on Type.
type Frame struct {
	Type  uint8
	Chain string // the chain's gateway name, the same on every node

	// Serve.
	Function    string // also Request: the function to run next
	Instances   uint32
	Concurrency uint32

	// Request, Result, Fail.
	Origin    Origin
	RequestID uint64
	// Request: the topic, the functions still pending after Function
	// (next last, as in the slot header), hops so far, the status a
	// function set.
	Topic     string
	Itinerary []string
	Hops      uint16
	Status    uint16 // also Result (0 = OK), Fail (HTTP status)
	Msg       string // Fail
	Payload   []byte // Request, Result
}

// Errors.
var (
	ErrMalformed = errors.New("peer: malformed frame")
	ErrTooLarge  = errors.New("peer: frame too large")
)

func malformed(format string, a ...any) error {
	return fmt.Errorf("%w: %s", ErrMalformed, fmt.Sprintf(format, a...))
}

// appendHeader encodes f without its payload.
func appendHeader(b []byte, f *Frame) ([]byte, error) {
	if f.Type < TypeServe || f.Type > TypeFail {
		return nil, malformed("type %d", f.Type)
	}
	b = append(b, f.Type)
	var err error
	put := func(s string) {
		if err == nil && len(s) > MaxName {
			err = malformed("field of %d bytes (at most %d)", len(s), MaxName)
		}
		b = append(b, byte(len(s)))
		b = append(b, s[:min(len(s), MaxName)]...)
	}
	put(f.Chain)
	switch f.Type {
	case TypeServe:
		put(f.Function)
		b = binary.LittleEndian.AppendUint32(b, f.Instances)
		b = binary.LittleEndian.AppendUint32(b, f.Concurrency)
	default:
		put(f.Origin.Node)
		b = binary.LittleEndian.AppendUint32(b, f.Origin.Slot)
		b = binary.LittleEndian.AppendUint32(b, f.Origin.Gen)
		b = binary.LittleEndian.AppendUint64(b, f.RequestID)
		b = binary.LittleEndian.AppendUint16(b, f.Status)
		switch f.Type {
		case TypeRequest:
			put(f.Function)
			put(f.Topic)
			b = binary.LittleEndian.AppendUint16(b, f.Hops)
			if len(f.Itinerary) > MaxItinerary {
				return nil, malformed("itinerary of %d functions (at most %d)", len(f.Itinerary), MaxItinerary)
			}
			b = append(b, byte(len(f.Itinerary)))
			for _, s := range f.Itinerary {
				put(s)
			}
		case TypeFail:
			put(f.Msg)
		}
	}
	return b, err
}

// decodeHeader parses a header encoded by appendHeader; the rest of b is
// the payload (its length is returned).
func decodeHeader(b []byte, f *Frame) (payload int, err error) {
	d := decoder{b: b}
	f.Type = d.u8()
	if d.err == nil && (f.Type < TypeServe || f.Type > TypeFail) {
		return 0, malformed("type %d", f.Type)
	}
	f.Chain = d.str()
	switch f.Type {
	case TypeServe:
		f.Function = d.str()
		f.Instances = d.u32()
		f.Concurrency = d.u32()
	default:
		f.Origin.Node = d.str()
		f.Origin.Slot = d.u32()
		f.Origin.Gen = d.u32()
		f.RequestID = d.u64()
		f.Status = d.u16()
		switch f.Type {
		case TypeRequest:
			f.Function = d.str()
			f.Topic = d.str()
			f.Hops = d.u16()
			n := int(d.u8())
			if n > MaxItinerary {
				return 0, malformed("itinerary of %d functions", n)
			}
			f.Itinerary = f.Itinerary[:0]
			for i := 0; i < n && d.err == nil; i++ {
				f.Itinerary = append(f.Itinerary, d.str())
			}
		case TypeFail:
			f.Msg = d.str()
		}
	}
	if d.err != nil {
		return 0, d.err
	}
	if f.Type == TypeServe || f.Type == TypeFail {
		if len(b)-d.off != 0 {
			return 0, malformed("%d trailing bytes after a frame of type %d", len(b)-d.off, f.Type)
		}
	}
	return len(b) - d.off, nil
}

type decoder struct {
	b   []byte
	off int
	err error
}

func (d *decoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || d.off+n > len(d.b) {
		d.err = malformed("truncated at byte %d (need %d more)", d.off, n)
		return nil
	}
	s := d.b[d.off : d.off+n]
	d.off += n
	return s
}

func (d *decoder) u8() uint8 {
	if s := d.take(1); s != nil {
		return s[0]
	}
	return 0
}

func (d *decoder) u16() uint16 {
	if s := d.take(2); s != nil {
		return binary.LittleEndian.Uint16(s)
	}
	return 0
}

func (d *decoder) u32() uint32 {
	if s := d.take(4); s != nil {
		return binary.LittleEndian.Uint32(s)
	}
	return 0
}

func (d *decoder) u64() uint64 {
	if s := d.take(8); s != nil {
		return binary.LittleEndian.Uint64(s)
	}
	return 0
}

func (d *decoder) str() string {
	n := int(d.u8())
	return string(d.take(n))
}
