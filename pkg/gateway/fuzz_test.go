package gateway_test

import (
	"bufio"
	"bytes"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/spright-dev/spright/pkg/gateway"
)

// FuzzIngest feeds raw HTTP/1.1 requests (as a client could send them)
// through the gateway's handler and a real chain: whatever the bytes, the
// gateway answers with a status it documents, and no slot leaks.
func FuzzIngest(f *testing.F) {
	f.Add([]byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nabc"))
	f.Add([]byte("GET / HTTP/1.1\r\nHost: x\r\nX-Spright-Topic: nope\r\n\r\n"))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + string(bytes.Repeat([]byte("a"), 5000))))
	f.Add([]byte("POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nfff\r\n"))
	e := start(f, gateway.ModeSkMsg, 16, 2*time.Second)
	e.fn(f, "upper", upper)
	e.fn(f, "reverse", reverse)
	h := e.g.Handler(e.c)
	free := e.c.Pool().FreeCount()
	f.Fuzz(func(t *testing.T, raw []byte) {
		req, err := http.ReadRequest(bufio.NewReader(bytes.NewReader(raw)))
		if err != nil {
			return // net/http's parser refused it: never reaches the gateway
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		switch rec.Code {
		case 200, 400, 404, 413, 503:
		default:
			t.Fatalf("status %d for %q: %s", rec.Code, raw, rec.Body.String())
		}
		if rec.Code == 200 && rec.Body.Len() > 4096 {
			t.Fatalf("response of %d bytes from 4 KiB slots", rec.Body.Len())
		}
		if n := e.c.Pool().FreeCount(); n != free {
			t.Fatalf("free slots %d after %q, want %d", n, raw, free)
		}
	})
}
