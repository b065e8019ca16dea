package boutique

import (
	"encoding/json"
	"testing"

	"github.com/spright-dev/spright/pkg/adapter"
)

// FuzzDoc: any document a service is handed (a plain HTTP service takes
// one from anybody) goes through every service and the frontend's
// rendering without a panic, and the page encodes as a response envelope.
func FuzzDoc(f *testing.F) {
	f.Add([]byte(`{"action":"index","session":"0123456789abcdef","currency":"EUR"}`))
	f.Add([]byte(`{"action":"checkout","session":"s","currency":"JPY","cart":[{"productId":"OLJCESPC7Z","quantity":3}],"form":{"email":"a@b","street":"x","city":"c","country":"d","zipCode":"1","cardNumber":"4432801561520454","cardMonth":1,"cardYear":2030,"cardCvv":"672"}}`))
	f.Add([]byte(`{"action":"viewCart","currency":"USD","items":[{"product":{"id":"x","price":{"currency":"USD","units":9223372036854775807,"nanos":999999999}},"quantity":99}]}`))
	f.Add([]byte(`{"action":"checkout","order":{"id":"o","paid":true,"total":{"currency":"XXX","units":-1,"nanos":5}},"shipping":{"currency":"USD","units":1}}`))
	f.Add([]byte(`{"action":"browseProduct","productId":"1YMWWN1N4O","product":{"id":"1YMWWN1N4O","categories":["nope"]},"recommendations":["a","b"]}`))
	s := NewShop()
	f.Fuzz(func(t *testing.T, p []byte) {
		d, err := DecodeDoc(p)
		if err != nil {
			return
		}
		for _, svc := range Services[1:] {
			if err := s.Step(svc, d); err != nil {
				t.Fatalf("%s: %v", svc, err)
			}
			// What a service answers must decode again for the next one.
			b, err := json.Marshal(d)
			if err != nil {
				t.Fatalf("%s: %v", svc, err)
			}
			if d, err = DecodeDoc(b); err != nil {
				t.Fatalf("%s: its own answer does not decode: %v", svc, err)
			}
		}
		resp := s.Render(d)
		if _, err := adapter.AppendWebResponse(nil, resp); err != nil {
			t.Fatalf("page does not encode: %v", err)
		}
	})
}
