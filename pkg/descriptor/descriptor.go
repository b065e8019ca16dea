package descriptor

import (
	"encoding/binary"
	"errors"
	"fmt"
)

// Size is the exact wire size of a descriptor. One sendmsg carries one descriptor.
const Size = 16

// GatewayInstance is the reserved instance ID of the node gateway.
const GatewayInstance uint32 = 0

// Flags carried in a descriptor.
const (
	// FlagError marks a descriptor whose slot holds an error message
	// (status code in the slot header) instead of a result.
	FlagError uint16 = 1 << 0
	// FlagLast marks the final hop: the receiver is the gateway and the slot
	// holds the response body.
	FlagLast uint16 = 1 << 1
	// FlagRejected is set by the kernel program on a descriptor it hands
	// back to its sender instead of delivering it (bits 12-14 then hold the
	// reason, see bpf.Rejected). The sender still owns what it tried to
	// pass on and must take the slot back.
	FlagRejected uint16 = 1 << 15
	// FlagsKernel are the bits reserved for the kernel program (12-15);
	// senders set only bits 0-11.
	FlagsKernel uint16 = 0xF000
)

// Descriptor points at a payload in a chain pool.
type Descriptor struct {
	Next  uint32 // receiver instance ID (sockhash key)
	Chain uint16 // chain ID
	Flags uint16
	Slot  uint32 // slot index in the chain pool
	Len   uint32 // payload length
}

// ErrShort is returned when fewer than Size bytes are decoded.
var ErrShort = errors.New("descriptor: short buffer")

// Marshal writes d into b, which must hold at least Size bytes.
func (d Descriptor) Marshal(b []byte) {
	_ = b[Size-1]
	binary.LittleEndian.PutUint32(b[0:4], d.Next)
	binary.LittleEndian.PutUint16(b[4:6], d.Chain)
	binary.LittleEndian.PutUint16(b[6:8], d.Flags)
	binary.LittleEndian.PutUint32(b[8:12], d.Slot)
	binary.LittleEndian.PutUint32(b[12:16], d.Len)
}

// Bytes returns the wire form of d.
func (d Descriptor) Bytes() [Size]byte {
	var b [Size]byte
	d.Marshal(b[:])
	return b
}

// Unmarshal decodes exactly one descriptor from b. It does not validate the
// fields against a pool; see Validate.
func Unmarshal(b []byte) (Descriptor, error) {
	if len(b) < Size {
		return Descriptor{}, fmt.Errorf("%w: %d bytes, want %d", ErrShort, len(b), Size)
	}
	return Descriptor{
		Next:  binary.LittleEndian.Uint32(b[0:4]),
		Chain: binary.LittleEndian.Uint16(b[4:6]),
		Flags: binary.LittleEndian.Uint16(b[6:8]),
		Slot:  binary.LittleEndian.Uint32(b[8:12]),
		Len:   binary.LittleEndian.Uint32(b[12:16]),
	}, nil
}

// Bounds is what a receiver knows about its own pool.
type Bounds struct {
	Chain    uint16
	Slots    uint32
	SlotSize uint32
}

// Errors returned by Validate; wrap-checkable with errors.Is.
var (
	ErrWrongChain = errors.New("descriptor: chain does not match the receiver's pool")
	ErrSlotRange  = errors.New("descriptor: slot index out of range")
	ErrLenRange   = errors.New("descriptor: length exceeds slot size")
)

// Validate checks d against the receiver's pool bounds. It must be called
// before the slot is touched: the kernel program checks the same bounds, but
// a receiver does not rely on anyone else (defence in depth, DESIGN §2).
func (d Descriptor) Validate(b Bounds) error {
	switch {
	case d.Chain != b.Chain:
		return fmt.Errorf("%w: got %d, pool is %d", ErrWrongChain, d.Chain, b.Chain)
	case d.Slot >= b.Slots:
		return fmt.Errorf("%w: slot %d, pool has %d", ErrSlotRange, d.Slot, b.Slots)
	case d.Len > b.SlotSize:
		return fmt.Errorf("%w: len %d, slot size %d", ErrLenRange, d.Len, b.SlotSize)
	}
	return nil
}

func (d Descriptor) String() string {
	return fmt.Sprintf("desc{next=%d chain=%d flags=%#x slot=%d len=%d}", d.Next, d.Chain, d.Flags, d.Slot, d.Len)
}
