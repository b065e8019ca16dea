package adapter

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"net/http"
	"net/textproto"
)

// The web envelope is how the "web" adapter carries a whole HTTP exchange
// through a chain: the request (method, path, query, selected headers, body)
// as the payload the first function reads, and the response (status,
// headers, body) as the payload the last function writes. It is binary and
// length-prefixed, so a function reads it in place without a text parser:
//
//	magic "SPW1" | kind u8 (1 request, 2 response) | fields
//	request:  method str8 | path str16 | query str16 | headers | body u32+bytes
//	response: status u16  | headers | body u32+bytes
//	headers:  count u16, then count × (name str8, value str16)
//
// strN is an N-bit little-endian length and that many bytes. Nothing may
// follow the body.
const (
	webMagic        = "SPW1"
	webKindRequest  = 1
	webKindResponse = 2
	// MaxWebHeaders bounds the headers an envelope may carry.
	MaxWebHeaders = 64
)

// WebRequest is an HTTP request as the web adapter hands it to a chain.
type WebRequest struct {
	Method string
	Path   string
	Query  string // raw query, without '?'
	Header http.Header
	Body   []byte
}

// WebResponse is what a chain's last function answers for the web adapter.
type WebResponse struct {
	Status int
	Header http.Header
	Body   []byte
}

// IsWebRequest reports whether p starts like a request envelope.
func IsWebRequest(p []byte) bool {
	return len(p) > len(webMagic) && string(p[:len(webMagic)]) == webMagic && p[len(webMagic)] == webKindRequest
}

// IsWebResponse reports whether p starts like a response envelope.
func IsWebResponse(p []byte) bool {
	return len(p) > len(webMagic) && string(p[:len(webMagic)]) == webMagic && p[len(webMagic)] == webKindResponse
}

// AppendWebRequest appends r's envelope to dst.
func AppendWebRequest(dst []byte, r *WebRequest) ([]byte, error) {
	dst = append(dst, webMagic...)
	dst = append(dst, webKindRequest)
	var err error
	if dst, err = putStr(dst, r.Method, 1); err != nil {
		return nil, fmt.Errorf("method: %w", err)
	}
	if dst, err = putStr(dst, r.Path, 2); err != nil {
		return nil, fmt.Errorf("path: %w", err)
	}
	if dst, err = putStr(dst, r.Query, 2); err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	if dst, err = putHeaders(dst, r.Header); err != nil {
		return nil, err
	}
	return putBody(dst, r.Body)
}

// AppendWebResponse appends r's envelope to dst.
func AppendWebResponse(dst []byte, r *WebResponse) ([]byte, error) {
	if r.Status < 100 || r.Status > 999 {
		return nil, fmt.Errorf("web envelope: status %d out of range", r.Status)
	}
	dst = append(dst, webMagic...)
	dst = append(dst, webKindResponse)
	dst = binary.LittleEndian.AppendUint16(dst, uint16(r.Status))
	dst, err := putHeaders(dst, r.Header)
	if err != nil {
		return nil, err
	}
	return putBody(dst, r.Body)
}

// ParseWebRequest decodes a request envelope. Body aliases p.
func ParseWebRequest(p []byte) (*WebRequest, error) {
	d := &envDecoder{p: p}
	d.header(webKindRequest)
	r := &WebRequest{}
	r.Method = d.str(1)
	r.Path = d.str(2)
	r.Query = d.str(2)
	r.Header = d.headers()
	r.Body = d.body()
	if err := d.done(); err != nil {
		return nil, err
	}
	if r.Method == "" {
		return nil, errors.New("web envelope: empty method")
	}
	return r, nil
}

// ParseWebResponse decodes a response envelope. Body aliases p.
func ParseWebResponse(p []byte) (*WebResponse, error) {
	d := &envDecoder{p: p}
	d.header(webKindResponse)
	r := &WebResponse{Status: int(d.u16())}
	r.Header = d.headers()
	r.Body = d.body()
	if err := d.done(); err != nil {
		return nil, err
	}
	if r.Status < 100 || r.Status > 999 {
		return nil, fmt.Errorf("web envelope: status %d out of range", r.Status)
	}
	return r, nil
}

func putStr(dst []byte, s string, width int) ([]byte, error) {
	limit := 1<<(8*width) - 1
	if len(s) > limit {
		return nil, fmt.Errorf("web envelope: %d bytes, at most %d", len(s), limit)
	}
	if width == 1 {
		dst = append(dst, byte(len(s)))
	} else {
		dst = binary.LittleEndian.AppendUint16(dst, uint16(len(s)))
	}
	return append(dst, s...), nil
}

func putHeaders(dst []byte, h http.Header) ([]byte, error) {
	n := 0
	for _, vs := range h {
		n += len(vs)
	}
	if n > MaxWebHeaders {
		return nil, fmt.Errorf("web envelope: %d header values, at most %d", n, MaxWebHeaders)
	}
	dst = binary.LittleEndian.AppendUint16(dst, uint16(n))
	var err error
	for k, vs := range h {
		for _, v := range vs {
			if dst, err = putStr(dst, k, 1); err != nil {
				return nil, fmt.Errorf("header name: %w", err)
			}
			if dst, err = putStr(dst, v, 2); err != nil {
				return nil, fmt.Errorf("header %s: %w", k, err)
			}
		}
	}
	return dst, nil
}

func putBody(dst, body []byte) ([]byte, error) {
	if uint64(len(body)) > 1<<32-1 {
		return nil, errors.New("web envelope: body too large")
	}
	dst = binary.LittleEndian.AppendUint32(dst, uint32(len(body)))
	return append(dst, body...), nil
}

// envDecoder reads an envelope; the first error sticks.
type envDecoder struct {
	p   []byte
	err error
}

func (d *envDecoder) fail(format string, a ...any) {
	if d.err == nil {
		d.err = fmt.Errorf("web envelope: "+format, a...)
	}
}

func (d *envDecoder) take(n int) []byte {
	if d.err != nil {
		return nil
	}
	if n < 0 || n > len(d.p) {
		d.fail("truncated: want %d bytes, %d left", n, len(d.p))
		return nil
	}
	b := d.p[:n:n]
	d.p = d.p[n:]
	return b
}

func (d *envDecoder) header(kind byte) {
	b := d.take(len(webMagic) + 1)
	if d.err != nil {
		return
	}
	if !bytes.Equal(b[:len(webMagic)], []byte(webMagic)) {
		d.fail("bad magic %q", b[:len(webMagic)])
		return
	}
	if b[len(webMagic)] != kind {
		d.fail("kind %d, want %d", b[len(webMagic)], kind)
	}
}

func (d *envDecoder) u16() uint16 {
	b := d.take(2)
	if b == nil {
		return 0
	}
	return binary.LittleEndian.Uint16(b)
}

func (d *envDecoder) str(width int) string {
	var n int
	if width == 1 {
		b := d.take(1)
		if b == nil {
			return ""
		}
		n = int(b[0])
	} else {
		n = int(d.u16())
	}
	return string(d.take(n))
}

func (d *envDecoder) headers() http.Header {
	n := int(d.u16())
	if n > MaxWebHeaders {
		d.fail("%d header values, at most %d", n, MaxWebHeaders)
		return nil
	}
	h := make(http.Header, n)
	for i := 0; i < n && d.err == nil; i++ {
		k := d.str(1)
		v := d.str(2)
		if d.err != nil {
			break
		}
		if !validHeaderName(k) {
			d.fail("bad header name %q", k)
			break
		}
		if !validHeaderValue(v) {
			d.fail("bad value for header %s", k)
			break
		}
		k = textproto.CanonicalMIMEHeaderKey(k)
		h[k] = append(h[k], v)
	}
	return h
}

func (d *envDecoder) body() []byte {
	b := d.take(4)
	if b == nil {
		return nil
	}
	n := binary.LittleEndian.Uint32(b)
	if uint64(n) > uint64(len(d.p)) {
		d.fail("body of %d bytes, %d left", n, len(d.p))
		return nil
	}
	return d.take(int(n))
}

func (d *envDecoder) done() error {
	if d.err == nil && len(d.p) != 0 {
		d.fail("%d bytes after the body", len(d.p))
	}
	return d.err
}

// validHeaderName: an RFC 9110 token.
func validHeaderName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z', '0' <= c && c <= '9':
		case bytes.IndexByte([]byte("!#$%&'*+-.^_`|~"), c) >= 0:
		default:
			return false
		}
	}
	return true
}

// validHeaderValue: no control characters but tab (no response splitting).
func validHeaderValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; (c < ' ' && c != '\t') || c == 0x7f {
			return false
		}
	}
	return true
}
