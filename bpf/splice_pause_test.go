package bpf

import (
	"bytes"
	"io"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// TestSplicePauseBackpressure: a splice paused while its upstream → client
// backlog is over a bound keeps the upstream's bytes in the upstream
// socket's TCP receive queue (its window closes: the writer blocks), and
// resumed forwards them in order. An upstream writes 128 MB to a client
// that reads slowly; the kernel holds at most about the bound plus the two
// sockets' TCP buffers (TestSpliceNoBackpressure: without pausing, nearly
// all of it waits in the backlog). The client also sends bytes during a
// pause: they wait in the client socket's own queue and reach the
// upstream, in order, at resume.
func TestSplicePauseBackpressure(t *testing.T) {
	if testing.Short() {
		t.Skip("-short")
	}
	d := loadSplice(t)
	r := newRawSplice(t)
	const bound = 4 << 20
	// What waits in B's receive queue during a pause is forwarded at once
	// on resume: B's buffer is part of the bound (tcp_rmem's maximum is 32
	// MB on 6.18). The kernel doubles the value for its bookkeeping.
	if err := unix.SetsockoptInt(r.fdB, unix.SOL_SOCKET, unix.SO_RCVBUF, bound/2); err != nil {
		t.Fatal(err)
	}
	if err := d.AddSplice(1, r.fdA, r.fdB); err != nil {
		t.Fatal(err)
	}
	up2down, err := NewForwarding(r.fdB, r.fdA)
	if err != nil {
		t.Fatal(err)
	}
	down2up, err := NewForwarding(r.fdA, r.fdB)
	if err != nil {
		t.Fatal(err)
	}
	const total = 128 << 20
	chunk := pattern(5, 1<<20)
	writeErr := make(chan error, 1)
	go func() {
		r.server.SetWriteDeadline(time.Now().Add(60 * time.Second))
		for n := 0; n < total; n += len(chunk) {
			if _, err := r.server.Write(chunk); err != nil {
				writeErr <- err
				return
			}
		}
		writeErr <- nil
	}()
	// What the upstream receives from the client (the bytes sent during a
	// pause).
	var fromClient bytes.Buffer
	var fromMu sync.Mutex
	go func() {
		b := make([]byte, 4096)
		for {
			n, err := r.server.Read(b)
			fromMu.Lock()
			fromClient.Write(b[:n])
			fromMu.Unlock()
			if err != nil {
				return
			}
		}
	}()

	// The controller (EPROXY's part): pause over the bound, resume under
	// half of it.
	var (
		mu                     sync.Mutex
		maxHeld, maxBacklog    int64
		pauses                 int
		clientSentDuringAPause bool
		heldInB                bool
		stop                   = make(chan struct{})
		ctlDone                = make(chan struct{})
	)
	t0 := time.Now()
	go func() {
		defer close(ctlDone)
		upOut, clientHeld := false, false
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Microsecond):
			}
			pending, err := up2down.Pending()
			if err != nil {
				t.Error(err)
				return
			}
			inqB := 0
			if upOut {
				inqB, _ = unix.IoctlGetInt(r.fdB, unix.SIOCINQ) // B's TCP queue
				heldInB = heldInB || inqB > 0
			}
			outqA, _ := unix.IoctlGetInt(r.fdA, unix.SIOCOUTQ)
			backlog := pending - int64(inqB)
			mu.Lock()
			maxHeld = max(maxHeld, pending+int64(outqA))
			maxBacklog = max(maxBacklog, backlog)
			mu.Unlock()
			switch {
			case !upOut && backlog > bound:
				if !clientHeld {
					if p, _ := down2up.Pending(); p != 0 {
						continue
					}
				}
				if err := d.PauseSplice(r.fdA, r.fdB); err != nil {
					t.Error(err)
					return
				}
				upOut, clientHeld = true, true
				pauses++
			case upOut && backlog < bound/2:
				if err := d.ResumeUpstream(r.fdA, r.fdB); err != nil {
					t.Error(err)
					return
				}
				upOut = false
			case clientHeld && !upOut && backlog == 0:
				// What the client sent meanwhile waits with A: pass it on.
				if n, _ := unix.IoctlGetInt(r.fdA, unix.SIOCINQ); n > 0 {
					b := make([]byte, n)
					got, err := unix.Read(r.fdA, b)
					if err != nil {
						t.Errorf("read the client's bytes held during the pause: %v", err)
						return
					}
					clientSentDuringAPause = true
					if _, err := unix.Write(r.fdB, b[:got]); err != nil {
						t.Error(err)
						return
					}
				}
				if err := d.ResumeClient(r.fdA, r.fdB); err != nil {
					t.Error(err)
					return
				}
				if n, _ := unix.IoctlGetInt(r.fdA, unix.SIOCINQ); n > 0 {
					t.Errorf("%d client bytes arrived during ResumeClient", n)
				}
				clientHeld = false
			}
		}
	}()

	// The slow client: 256 KiB every 5 ms (about 50 MB/s); it sends a
	// line once, in the middle.
	got := 0
	b := make([]byte, 256<<10)
	r.client.SetReadDeadline(time.Now().Add(60 * time.Second))
	sent := false
	for got < total {
		n, err := io.ReadFull(r.client, b[:min(len(b), total-got)])
		for i, c := range b[:n] {
			if c != chunk[(got+i)%len(chunk)] {
				t.Fatalf("corrupt at byte %d", got+i)
			}
		}
		got += n
		if err != nil {
			t.Fatalf("after %d bytes: %v", got, err)
		}
		if !sent && got > total/2 {
			r.client.Write([]byte("ping from the client\n"))
			sent = true
		}
		time.Sleep(5 * time.Millisecond)
	}
	close(stop)
	<-ctlDone
	if err := <-writeErr; err != nil {
		t.Fatalf("upstream write: %v", err)
	}
	time.Sleep(50 * time.Millisecond)
	if drops, err := d.Drops(); err != nil || drops[DropSplicePeer] != 0 {
		t.Errorf("drops %v, %v: the pause dropped bytes", drops, err)
	}
	fromMu.Lock()
	if fromClient.String() != "ping from the client\n" {
		t.Errorf("upstream got %q from the client, want the ping", fromClient.String())
	}
	fromMu.Unlock()
	mu.Lock()
	defer mu.Unlock()
	t.Logf("%d MB read slowly in %v: %d pauses; at most %.1f MB in the backlog, %.1f MB held in the kernel for the connection (backlog, B's receive queue, A's send queue); client's bytes held during a pause: %v; bytes waited in B's queue: %v",
		total>>20, time.Since(t0).Round(time.Millisecond), pauses, float64(maxBacklog)/(1<<20), float64(maxHeld)/(1<<20), clientSentDuringAPause, heldInB)
	if pauses == 0 || !heldInB {
		t.Errorf("never paused with bytes held in the upstream's queue")
	}
	if !clientSentDuringAPause {
		t.Errorf("the client's ping was not held during a pause (the test wants to see that case)")
	}
	// The pause is decided by polling: the upstream (loopback, memory
	// speed) pushes rate × reaction time past the bound before it takes
	// effect. Unpaused, nearly all of the 128 MB waits in the backlog.
	if maxBacklog > total/2 {
		t.Errorf("backlog reached %d bytes: not bounded", maxBacklog)
	}
}
