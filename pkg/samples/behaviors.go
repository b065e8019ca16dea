package samples

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"runtime"
	"sort"
	"strings"
	"time"

	"golang.org/x/sys/unix"

	"github.com/spright-dev/spright/pkg/function"
)

// Behavior builds a handler; serviceTime is the CPU each message burns.
type Behavior func(serviceTime time.Duration) function.Handler

var behaviors = map[string]Behavior{
	"echo":            passThrough(nil),
	"burn":            passThrough(nil),
	"upper":           passThrough(upper),
	"reverse":         passThrough(reverse),
	"motion-sensor":   motionSensor,
	"motion-actuator": motionActuator,
}

// Names lists the built-in behaviours.
func Names() []string {
	var n []string
	for k := range behaviors {
		n = append(n, k)
	}
	sort.Strings(n)
	return n
}

// Lookup returns the named behaviour's handler.
func Lookup(name string, serviceTime time.Duration) (function.Handler, error) {
	b, ok := behaviors[name]
	if !ok {
		return nil, fmt.Errorf("samples: unknown behavior %q (known: %s)", name, strings.Join(Names(), ", "))
	}
	if serviceTime < 0 {
		return nil, fmt.Errorf("samples: negative service time %v", serviceTime)
	}
	return b(serviceTime), nil
}

// zeroCopy fails a message whose payload is not in the pool.
func zeroCopy(m *function.Message) error {
	if len(m.Payload()) > 0 && !m.InPool(m.Payload()) {
		return function.Errorf(http.StatusInternalServerError, "payload at %#x is not in the chain pool: a copy happened", m.Address())
	}
	return nil
}

func passThrough(transform func([]byte)) Behavior {
	return func(st time.Duration) function.Handler {
		return function.HandlerFunc(func(m *function.Message) error {
			if err := zeroCopy(m); err != nil {
				return err
			}
			Burn(st)
			if transform != nil {
				transform(m.Payload())
			}
			return nil
		})
	}
}

func upper(p []byte) {
	for i, c := range p {
		if 'a' <= c && c <= 'z' {
			p[i] = c - ('a' - 'A')
		}
	}
}

func reverse(p []byte) {
	for i, j := 0, len(p)-1; i < j; i, j = i+1, j-1 {
		p[i], p[j] = p[j], p[i]
	}
}

// MotionEvent is what a motion sensor publishes.
type MotionEvent struct {
	Sensor string `json:"sensor"`
	State  string `json:"state"`
}

// LightCommand is what the actuator answers.
type LightCommand struct {
	Light string `json:"light"`
	State string `json:"state"`
}

func parseMotion(p []byte) (MotionEvent, error) {
	var ev MotionEvent
	dec := json.NewDecoder(bytes.NewReader(p))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&ev); err != nil {
		return ev, function.Errorf(http.StatusBadRequest, "motion event: %v", err)
	}
	if ev.Sensor == "" || (ev.State != "on" && ev.State != "off") {
		return ev, function.Errorf(http.StatusBadRequest, `motion event needs "sensor" and "state" "on" or "off"`)
	}
	return ev, nil
}

// motionSensor validates the event (the paper's sensor function) and passes
// it on unchanged.
func motionSensor(st time.Duration) function.Handler {
	return function.HandlerFunc(func(m *function.Message) error {
		if err := zeroCopy(m); err != nil {
			return err
		}
		Burn(st)
		_, err := parseMotion(m.Payload())
		return err
	})
}

// motionActuator turns a motion event into a light command, written over the
// event in the same slot.
func motionActuator(st time.Duration) function.Handler {
	return function.HandlerFunc(func(m *function.Message) error {
		if err := zeroCopy(m); err != nil {
			return err
		}
		Burn(st)
		ev, err := parseMotion(m.Payload())
		if err != nil {
			return err
		}
		out, _ := json.Marshal(LightCommand{Light: ev.Sensor, State: ev.State})
		return m.SetPayload(out)
	})
}

// Burn spends d of this thread's CPU time (not wall time: a service time is
// work, and on a busy node it takes longer than d to get it done).
func Burn(d time.Duration) {
	if d <= 0 {
		return
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	start := threadCPU()
	x := uint64(1)
	for threadCPU()-start < d {
		for i := 0; i < 256; i++ {
			x = x*6364136223846793005 + 1442695040888963407
		}
	}
	sink = x
}

var sink uint64

func threadCPU() time.Duration {
	var ts unix.Timespec
	unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
	return time.Duration(ts.Nano())
}
