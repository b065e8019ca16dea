package wasm

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/tetratelabs/wazero"
	"github.com/tetratelabs/wazero/api"

	"github.com/spright-dev/spright/pkg/adapter"
)

// Defaults for Config's zero fields.
const (
	DefaultTimeout          = time.Second
	DefaultMemoryLimitPages = 256     // 16 MiB
	DefaultMaxBody          = 1 << 20 // 1 MiB
	// MaxModuleSize bounds the module file read at attach time.
	MaxModuleSize = 32 << 20
)

// ABI export names.
const (
	ExportMemory   = "memory"
	ExportAlloc    = "alloc"
	ExportRequest  = "adapt_request"
	ExportResponse = "adapt_response"
)

func init() {
	adapter.Register("wasm", func(arg string, o adapter.Options) (adapter.Adapter, error) {
		if arg == "" {
			return nil, errors.New("a wasm adapter needs a module: name=wasm&module=/path/to/adapter.wasm (or name=wasm:/path/to/adapter.wasm)")
		}
		return Load(arg, Config{})
	})
}

// Config bounds what a module may use; zero fields take the defaults.
type Config struct {
	Timeout          time.Duration // per call, instantiation included
	MemoryLimitPages uint32        // per instance, 64 KiB pages
	MaxBody          int64         // request bodies larger than this get 413
}

func (c Config) withDefaults() Config {
	if c.Timeout <= 0 {
		c.Timeout = DefaultTimeout
	}
	if c.MemoryLimitPages == 0 {
		c.MemoryLimitPages = DefaultMemoryLimitPages
	}
	if c.MaxBody <= 0 {
		c.MaxBody = DefaultMaxBody
	}
	return c
}

// Adapter is a custom HTTP adapter backed by a compiled WebAssembly module.
// It is safe for concurrent use: each call instantiates the module afresh.
type Adapter struct {
	name     string
	cfg      Config
	rt       wazero.Runtime
	mod      wazero.CompiledModule
	modCfg   wazero.ModuleConfig
	response bool // exports adapt_response
}

// Load reads the module at path and compiles it (see New).
func Load(path string, cfg Config) (*Adapter, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, MaxModuleSize+1))
	if err != nil {
		return nil, err
	}
	if len(b) > MaxModuleSize {
		return nil, fmt.Errorf("%s: module larger than %d bytes", path, MaxModuleSize)
	}
	a, err := New("wasm:"+path, b, cfg)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// New compiles module (a WebAssembly binary) into an adapter called name and
// checks that it follows the guest ABI (see the package doc).
func New(name string, module []byte, cfg Config) (*Adapter, error) {
	cfg = cfg.withDefaults()
	if !bytes.HasPrefix(module, []byte("\x00asm")) {
		return nil, errors.New("not a WebAssembly module (no \\0asm magic; text .wat must be converted with wat2wasm first)")
	}
	ctx := context.Background()
	rt := wazero.NewRuntimeWithConfig(ctx, wazero.NewRuntimeConfig().
		WithCloseOnContextDone(true).
		WithMemoryLimitPages(cfg.MemoryLimitPages))
	mod, err := rt.CompileModule(ctx, module)
	if err != nil {
		rt.Close(ctx)
		return nil, fmt.Errorf("invalid WebAssembly module: %w", err)
	}
	a := &Adapter{name: name, cfg: cfg, rt: rt, mod: mod,
		// Anonymous, so the same module can be instantiated concurrently;
		// no start functions ("_start" is WASI's, and there is no WASI).
		modCfg: wazero.NewModuleConfig().WithName("").WithStartFunctions()}
	if err := a.checkABI(); err != nil {
		rt.Close(ctx)
		return nil, err
	}
	return a, nil
}

func (a *Adapter) checkABI() error {
	for _, f := range a.mod.ImportedFunctions() {
		m, n, _ := f.Import()
		return fmt.Errorf("module imports %s.%s: custom adapters get no host functions (no WASI)", m, n)
	}
	for _, mem := range a.mod.ImportedMemories() {
		m, n, _ := mem.Import()
		return fmt.Errorf("module imports memory %s.%s: it must define and export its own %q", m, n, ExportMemory)
	}
	if _, ok := a.mod.ExportedMemories()[ExportMemory]; !ok {
		return fmt.Errorf("module does not export its memory as %q", ExportMemory)
	}
	i32, i64 := api.ValueTypeI32, api.ValueTypeI64
	fns := a.mod.ExportedFunctions()
	sig := func(name string, params []api.ValueType, result api.ValueType, required bool) (bool, error) {
		d, ok := fns[name]
		if !ok {
			if required {
				return false, fmt.Errorf("module does not export %s", sigString(name, params, result))
			}
			return false, nil
		}
		if !equalTypes(d.ParamTypes(), params) || !equalTypes(d.ResultTypes(), []api.ValueType{result}) {
			return false, fmt.Errorf("module exports %s with the wrong signature (want %s)", name, sigString(name, params, result))
		}
		return true, nil
	}
	if _, err := sig(ExportAlloc, []api.ValueType{i32}, i32, true); err != nil {
		return err
	}
	if _, err := sig(ExportRequest, []api.ValueType{i32, i32}, i64, true); err != nil {
		return err
	}
	ok, err := sig(ExportResponse, []api.ValueType{i32, i32}, i64, false)
	a.response = ok
	return err
}

func equalTypes(a, b []api.ValueType) bool {
	return bytes.Equal(a, b) // api.ValueType is a byte
}

func sigString(name string, params []api.ValueType, result api.ValueType) string {
	var p []string
	for _, t := range params {
		p = append(p, api.ValueTypeName(t))
	}
	return fmt.Sprintf("%s(%s) %s", name, strings.Join(p, ", "), api.ValueTypeName(result))
}

// Name is "wasm:<module path>".
func (a *Adapter) Name() string { return a.name }

// Transport is HTTP: wasm adapters attach to a chain's HTTP point.
func (a *Adapter) Transport() string { return adapter.TransportHTTP }

// Close frees the compiled module (the Point calls it once no message uses
// the adapter any more).
func (a *Adapter) Close() error { return a.rt.Close(context.Background()) }

// Ingress reads the request body and runs adapt_request on it.
func (a *Adapter) Ingress(in *adapter.Inbound) (*adapter.Request, error) {
	if in.Size > a.cfg.MaxBody {
		return nil, adapter.Errorf(http.StatusRequestEntityTooLarge, "body of %d bytes exceeds the wasm adapter's limit (%d bytes)", in.Size, a.cfg.MaxBody)
	}
	var body []byte
	if in.Body != nil {
		var err error
		body, err = io.ReadAll(io.LimitReader(in.Body, a.cfg.MaxBody+1))
		if err != nil {
			return nil, adapter.Errorf(http.StatusBadRequest, "reading body: %v", err)
		}
		if int64(len(body)) > a.cfg.MaxBody {
			return nil, adapter.Errorf(http.StatusRequestEntityTooLarge, "body exceeds the wasm adapter's limit (%d bytes)", a.cfg.MaxBody)
		}
	}
	out, err := a.call(in.Ctx, ExportRequest, body)
	if err != nil {
		return nil, err
	}
	topic, payload, ok := bytes.Cut(out, []byte("\n"))
	if !ok {
		return nil, adapter.Errorf(http.StatusBadGateway, "adapter returned a bad output: no topic line (want \"topic\\n\" + payload)")
	}
	return &adapter.Request{Topic: string(topic), Body: bytes.NewReader(payload), Size: int64(len(payload)),
		State: in.Ctx}, nil
}

// Egress runs adapt_response on the chain's answer, or passes the answer
// through if the module has none.
func (a *Adapter) Egress(req *adapter.Request, res *adapter.Result) (*adapter.Outbound, error) {
	body := res.Body
	if a.response {
		ctx, _ := req.State.(context.Context)
		var err error
		if body, err = a.call(ctx, ExportResponse, res.Body); err != nil {
			return nil, err
		}
	}
	return &adapter.Outbound{Status: res.Status, Meta: adapter.Meta{"Content-Type": {"application/octet-stream"}}, Body: body}, nil
}

// call runs one ABI function on a fresh instance, within the deadline, and
// returns a copy of its output.
func (a *Adapter) call(parent context.Context, fn string, input []byte) (out []byte, err error) {
	if parent == nil {
		parent = context.Background()
	}
	ctx, cancel := context.WithTimeout(parent, a.cfg.Timeout)
	defer cancel()
	defer func() {
		// wazero turns guest faults into errors; this is a last line of
		// defence so that a bug in the runtime fails one message, not the
		// gateway.
		if r := recover(); r != nil {
			out, err = nil, adapter.Errorf(http.StatusBadGateway, "adapter trapped: %v", r)
		}
	}()
	m, err := a.rt.InstantiateModule(ctx, a.mod, a.modCfg)
	if err != nil {
		return nil, a.callError(parent, ctx, "instantiating", err)
	}
	defer m.Close(context.Background())
	res, err := m.ExportedFunction(ExportAlloc).Call(ctx, uint64(len(input)))
	if err != nil {
		return nil, a.callError(parent, ctx, ExportAlloc, err)
	}
	mem := m.ExportedMemory(ExportMemory)
	ptr := uint32(res[0])
	if !mem.Write(ptr, input) {
		return nil, adapter.Errorf(http.StatusBadGateway, "adapter returned a bad output: alloc(%d) = %#x is outside its memory (%d bytes)", len(input), ptr, mem.Size())
	}
	res, err = m.ExportedFunction(fn).Call(ctx, uint64(ptr), uint64(len(input)))
	if err != nil {
		return nil, a.callError(parent, ctx, fn, err)
	}
	optr, olen := uint32(res[0]>>32), uint32(res[0])
	b, ok := mem.Read(optr, olen)
	if !ok {
		return nil, adapter.Errorf(http.StatusBadGateway, "adapter returned a bad output: %s result (ptr %#x, len %d) is outside its memory (%d bytes)", fn, optr, olen, mem.Size())
	}
	return bytes.Clone(b), nil // the instance's memory goes away with it
}

// callError classifies a failed call: the client went away, the deadline
// passed, or the guest trapped.
func (a *Adapter) callError(parent, ctx context.Context, what string, err error) error {
	switch {
	case parent.Err() != nil:
		return adapter.Errorf(adapter.StatusClientGone, "client went away during %s", what)
	case errors.Is(ctx.Err(), context.DeadlineExceeded):
		return adapter.Errorf(http.StatusGatewayTimeout, "adapter timed out after %v in %s", a.cfg.Timeout, what)
	}
	msg, _, _ := strings.Cut(err.Error(), "\n") // drop wazero's stack trace
	return adapter.Errorf(http.StatusBadGateway, "adapter trapped in %s: %s", what, msg)
}
