package adapter

import (
	"context"
	"encoding/json"
	"net/http"
	"strings"
	"time"
)

// AdminHandler serves runtime attach and detach for chain c (mount it on
// the gateway's admin listener, which must stay on loopback):
//
//	GET    /adapters                   → {"http":"cloudevents","mqtt":"mqtt","coap":""}
//	PUT    /adapters/{transport}?name=N → attach adapter N (e.g. "cloudevents")
//	PUT    /adapters/http?name=wasm&module=/path/a.wasm → attach a custom
//	                                       WebAssembly adapter (package adapter/wasm)
//	DELETE /adapters/{transport}        → detach
//
// Attach and detach return once the adapter they replace has finished the
// messages it was serving (at most 30 s).
func AdminHandler(c *Chain) http.Handler {
	mux := http.NewServeMux()
	state := func(w http.ResponseWriter) {
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(c.Attached())
	}
	mux.HandleFunc("GET /adapters", func(w http.ResponseWriter, r *http.Request) { state(w) })
	mux.HandleFunc("PUT /adapters/{transport}", func(w http.ResponseWriter, r *http.Request) {
		t, name := r.PathValue("transport"), r.URL.Query().Get("name")
		if c.Point(t) == nil {
			http.Error(w, "unknown front end "+t+" (want http, mqtt or coap)", http.StatusNotFound)
			return
		}
		if name == "" {
			http.Error(w, "name= is required (e.g. ?name=cloudevents)", http.StatusBadRequest)
			return
		}
		if m := r.URL.Query().Get("module"); m != "" && !strings.Contains(name, ":") {
			name += ":" + m // ?name=wasm&module=/path/a.wasm is name=wasm:/path/a.wasm
		}
		a, err := New(name, c.Options)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		if a.Transport() != t {
			a.Close()
			http.Error(w, "adapter "+name+" attaches to "+a.Transport()+", not "+t, http.StatusBadRequest)
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		if err := c.Point(t).Attach(ctx, a); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		state(w)
	})
	mux.HandleFunc("DELETE /adapters/{transport}", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
		defer cancel()
		if err := c.Detach(ctx, r.PathValue("transport")); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		state(w)
	})
	return mux
}
