package coap

import (
	"encoding/hex"
	"io"
	"net/http"
	"sync"
	"time"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/message/codes"
	"github.com/plgd-dev/go-coap/v3/message/pool"
	"github.com/plgd-dev/go-coap/v3/net/blockwise"

	"github.com/spright-dev/spright/pkg/adapter"
)

// optRequestTag is the Request-Tag option (RFC 9175): it, not the token,
// ties the blocks of one Block1 transfer together (libcoap uses a new
// token per block).
const optRequestTag message.OptionID = 292

// transferTTL bounds how long a half-received Block1 transfer is kept.
const transferTTL = 30 * time.Second

// transfers reassembles Block1 (RFC 7959) request payloads. go-coap's own
// reassembly keys blocks by token only, which breaks with clients that
// change the token between blocks, so the server does it here.
type transfers struct {
	mu sync.Mutex
	m  map[string]*transfer
}

type transfer struct {
	buf  []byte
	next int64
	szx  blockwise.SZX
	seen time.Time
}

// errIncomplete is 4.08 Request Entity Incomplete.
const statusIncomplete = 408

// add takes one block. It returns the whole payload once the last block
// is in (done), or the Block1 option to answer 2.31 Continue with.
func (t *transfers) add(key string, r *pool.Message, v uint32, max uint32) (payload []byte, cont uint32, done bool, err error) {
	szx, num, more, err := blockwise.DecodeBlockOption(v)
	if err != nil {
		return nil, 0, false, adapter.Errorf(http.StatusBadRequest, "bad Block1 option: %v", err)
	}
	var body []byte
	if b := r.Body(); b != nil {
		if _, err := b.Seek(0, io.SeekStart); err == nil {
			body, _ = io.ReadAll(b)
		}
	}
	if !more && num == 0 {
		return body, 0, true, nil // a single block: nothing to reassemble
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.m == nil {
		t.m = map[string]*transfer{}
	}
	now := time.Now()
	for k, tr := range t.m {
		if now.Sub(tr.seen) > transferTTL {
			delete(t.m, k)
		}
	}
	tr := t.m[key]
	if num == 0 {
		if s1, err := r.GetOptionUint32(message.Size1); err == nil && s1 > max {
			return nil, 0, false, adapter.Errorf(http.StatusRequestEntityTooLarge, "payload of %d bytes (Size1) exceeds the %d bytes a request may have", s1, max)
		}
		tr = &transfer{szx: szx}
		t.m[key] = tr
	}
	if tr == nil || num != tr.next || szx != tr.szx || (more && int64(len(body)) != szx.Size()) {
		delete(t.m, key)
		return nil, 0, false, adapter.Errorf(statusIncomplete, "Block1 transfer out of order: got block %d, want block %d of a transfer started with block 0", num, expectedNum(tr))
	}
	tr.buf = append(tr.buf, body...)
	tr.next++
	tr.seen = now
	if uint32(len(tr.buf)) > max {
		delete(t.m, key)
		return nil, 0, false, adapter.Errorf(http.StatusRequestEntityTooLarge, "payload exceeds the %d bytes a request may have", max)
	}
	if more {
		c, _ := blockwise.EncodeBlockOption(szx, num, true)
		return nil, c, false, nil
	}
	delete(t.m, key)
	return tr.buf, 0, true, nil
}

func expectedNum(tr *transfer) int64 {
	if tr == nil {
		return 0
	}
	return tr.next
}

// transferKey identifies a Block1 transfer: peer, Request-Tag (or token
// when there is none) and path.
func transferKey(peer string, r *pool.Message) string {
	tag, err := r.GetOptionBytes(optRequestTag)
	if err != nil {
		tag = r.Token()
	}
	p, _ := r.Path()
	return peer + "|" + hex.EncodeToString(tag) + "|" + p
}

// continueCode is 2.31 Continue.
var continueCode = codes.Continue
