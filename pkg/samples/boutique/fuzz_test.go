package boutique

import (
	"context"
	"net/http"
	"reflect"
	"strings"
	"testing"

	"github.com/spright-dev/spright/pkg/adapter"
)

// FuzzShop: any request (method, path, query, cookie, content type, body)
// runs through the whole shop in process without a panic, answers a valid
// status, never sets a header with a line break, and a failed request
// never changes the cart.
func FuzzShop(f *testing.F) {
	f.Add("GET", "/", "", "", "", []byte(nil))
	f.Add("POST", "/cart", "", "shop_session-id=0123456789abcdef", "application/x-www-form-urlencoded", []byte("product_id=OLJCESPC7Z&quantity=3"))
	f.Add("POST", "/cart/checkout", "", "shop_session-id=0123456789abcdef; shop_currency=JPY", "application/x-www-form-urlencoded",
		[]byte("email=a%40b.c&street_address=x&zip_code=1&city=c&country=d&credit_card_number=4432801561520454&credit_card_expiration_month=1&credit_card_expiration_year=2030&credit_card_cvv=672"))
	f.Add("POST", "/setCurrency", "", "", "application/x-www-form-urlencoded", []byte("currency_code=EUR"))
	f.Add("GET", "/product/1YMWWN1N4O", "x=%zz", "shop_session-id=\"bad\"", "", []byte(nil))
	f.Add("GET", "/static/img/../../doc.go", "", "", "", []byte(nil))
	f.Add("POST", "/cart", "", "", "multipart/form-data; boundary=x", []byte("--x--"))
	s := NewShop()
	call := LocalCaller(s)
	f.Fuzz(func(t *testing.T, method, path, query, cookie, ct string, body []byte) {
		h := http.Header{}
		if cookie != "" {
			h.Set("Cookie", cookie)
		}
		if ct != "" {
			h.Set("Content-Type", ct)
		}
		h.Set("Referer", query)
		if method == "" {
			method = "GET"
		}
		r := &adapter.WebRequest{Method: method, Path: path, Query: query, Header: h, Body: body}
		// Through the envelope, as the chain sees it.
		env, err := adapter.AppendWebRequest(nil, r)
		if err != nil {
			return
		}
		r, err = adapter.ParseWebRequest(env)
		if err != nil {
			return
		}
		d, direct := s.Begin(r)
		if (d == nil) == (direct == nil) {
			t.Fatalf("Begin: doc %v and response %v", d, direct)
		}
		if d != nil {
			if _, ok := Itineraries[d.Action]; !ok {
				t.Fatalf("action %q has no itinerary", d.Action)
			}
		}
		var before []CartLine
		if d != nil {
			before = s.Carts.Get(d.Session)
		}
		resp := s.Serve(context.Background(), r, call)
		if resp.Status < 100 || resp.Status > 599 {
			t.Fatalf("status %d", resp.Status)
		}
		for k, vs := range resp.Header {
			for _, v := range vs {
				if strings.ContainsAny(v, "\r\n") {
					t.Fatalf("header %s: %q", k, v)
				}
			}
		}
		if _, err := adapter.AppendWebResponse(nil, resp); err != nil {
			t.Fatalf("response does not encode: %v", err)
		}
		if resp.Status >= 400 && d != nil && !d.NewSession {
			if after := s.Carts.Get(d.Session); !reflect.DeepEqual(before, after) {
				t.Fatalf("a failed request (%d) changed the cart: %v -> %v", resp.Status, before, after)
			}
		}
	})
}
