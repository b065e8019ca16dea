package main

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/spright-dev/spright/pkg/samples/boutique"
)

// TestPodFrontendThroughFront: in httpfn's place, the frontend reaches
// every service at FRONT/fn/SERVICE; a stand-in for the bench's nginx
// forwards to the service pods (here: handlers), and the shop works.
func TestPodFrontendThroughFront(t *testing.T) {
	var mu sync.Mutex
	hits := map[string]int{}
	svcs := map[string]http.Handler{}
	for _, s := range boutique.Services[1:] {
		h, err := podHandler("boutique-"+s, 0, "")
		if err != nil {
			t.Fatal(err)
		}
		svcs[s] = h
	}
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s, ok := strings.CutPrefix(r.URL.Path, "/fn/")
		if !ok || svcs[s] == nil {
			http.NotFound(w, r)
			return
		}
		mu.Lock()
		hits[s]++
		mu.Unlock()
		r.URL.Path = "/" // nginx's proxy_pass http://fn_x/ sends "/"
		svcs[s].ServeHTTP(w, r)
	}))
	defer front.Close()
	fe, err := podHandler("boutique-frontend", 0, front.URL)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(fe)
	defer srv.Close()
	for _, p := range []string{"/healthz", "/"} {
		resp, err := http.Get(srv.URL + p)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || (p == "/healthz" && string(b) != "ok") || (p == "/" && !strings.Contains(string(b), "Bamboo Glass Jar")) {
			t.Fatalf("GET %s: %d %.200s", p, resp.StatusCode, b)
		}
	}
	for _, s := range boutique.Itineraries[boutique.ActIndex] {
		if s != boutique.SvcFrontend && hits[s] == 0 {
			t.Errorf("the home page did not call %s through the front: %v", s, hits)
		}
	}
	// A service pod answers the document.
	rec := httptest.NewRecorder()
	svcs["currency"].ServeHTTP(rec, httptest.NewRequest("POST", "/", strings.NewReader(`{"action":"index","currency":"EUR","products":[{"id":"x","price":{"currency":"USD","units":1,"nanos":130500000}}]}`)))
	var d boutique.Doc
	if err := json.Unmarshal(rec.Body.Bytes(), &d); err != nil || len(d.Products) != 1 || d.Products[0].Price != (boutique.Money{Currency: "EUR", Units: 1}) {
		t.Fatalf("currency pod: %d %s", rec.Code, rec.Body)
	}
	if _, err := podHandler("upper", 0, ""); err == nil {
		t.Error("a behaviour that is not the shop's was accepted")
	}
	if _, err := podHandler("boutique-frontend", 0, ""); err == nil {
		t.Error("a frontend without --front was accepted")
	}
}
