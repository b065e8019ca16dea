package descriptor

import (
	"errors"
	"testing"
)

func TestRoundTripAndLayout(t *testing.T) {
	d := Descriptor{Next: 0x01020304, Chain: 0x0506, Flags: FlagLast, Slot: 0x0a0b0c0d, Len: 0x11121314}
	b := d.Bytes()
	want := [Size]byte{4, 3, 2, 1, 6, 5, 2, 0, 0x0d, 0x0c, 0x0b, 0x0a, 0x14, 0x13, 0x12, 0x11}
	if b != want {
		t.Fatalf("wire layout %x, want %x", b, want)
	}
	got, err := Unmarshal(b[:])
	if err != nil || got != d {
		t.Fatalf("Unmarshal = %v, %v; want %v", got, err, d)
	}
}

func TestUnmarshalShort(t *testing.T) {
	if _, err := Unmarshal(make([]byte, 15)); !errors.Is(err, ErrShort) {
		t.Fatalf("err = %v, want ErrShort", err)
	}
}

func TestValidate(t *testing.T) {
	b := Bounds{Chain: 3, Slots: 10, SlotSize: 100}
	for _, tc := range []struct {
		name string
		d    Descriptor
		want error
	}{
		{"ok", Descriptor{Chain: 3, Slot: 9, Len: 100}, nil},
		{"wrong chain", Descriptor{Chain: 4, Slot: 1, Len: 1}, ErrWrongChain},
		{"slot out of range", Descriptor{Chain: 3, Slot: 10, Len: 1}, ErrSlotRange},
		{"len too big", Descriptor{Chain: 3, Slot: 0, Len: 101}, ErrLenRange},
	} {
		if err := tc.d.Validate(b); !errors.Is(err, tc.want) {
			t.Errorf("%s: Validate = %v, want %v", tc.name, err, tc.want)
		}
	}
}

// FuzzUnmarshal checks that decoding never panics, that whatever decodes
// re-encodes to the same 16 bytes, and that Validate never accepts a
// descriptor outside the bounds.
func FuzzUnmarshal(f *testing.F) {
	f.Add([]byte{})
	f.Add(make([]byte, Size))
	f.Add([]byte{1, 0, 0, 0, 3, 0, 0, 0, 9, 0, 0, 0, 100, 0, 0, 0})
	f.Add([]byte{0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0})
	f.Fuzz(func(t *testing.T, in []byte) {
		d, err := Unmarshal(in)
		if err != nil {
			if len(in) >= Size {
				t.Fatalf("Unmarshal(%x) failed: %v", in, err)
			}
			return
		}
		if b := d.Bytes(); string(b[:]) != string(in[:Size]) {
			t.Fatalf("re-encode %x != %x", b, in[:Size])
		}
		bounds := Bounds{Chain: 3, Slots: 10, SlotSize: 100}
		if d.Validate(bounds) == nil && (d.Chain != 3 || d.Slot >= 10 || d.Len > 100) {
			t.Fatalf("Validate accepted out-of-bounds %v", d)
		}
	})
}
