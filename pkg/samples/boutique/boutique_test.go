package boutique

import (
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/url"
	"regexp"
	"strings"
	"testing"
	"time"
)

func TestMoney(t *testing.T) {
	a, _ := ParseMoney("USD", "19.99")
	b, _ := ParseMoney("USD", "0.01")
	s, err := Add(a, b)
	if err != nil || s.Units != 20 || s.Nanos != 0 {
		t.Fatalf("19.99+0.01 = %+v %v", s, err)
	}
	m, _ := Mul(a, 3)
	if m.Format() != "$59.97" {
		t.Fatalf("3 × 19.99 = %s", m.Format())
	}
	neg, _ := ParseMoney("USD", "-1.5")
	if neg.Units != -1 || neg.Nanos != -500000000 || !neg.Valid() {
		t.Fatalf("-1.5 = %+v", neg)
	}
	if _, err := Add(a, Zero("EUR")); err == nil {
		t.Fatal("USD + EUR accepted")
	}
	// 1.1305 USD is one euro.
	e, err := Convert(Money{Currency: "USD", Units: 1, Nanos: 130500000}, "EUR")
	if err != nil || e.Units != 1 || e.Nanos != 0 {
		t.Fatalf("1.1305 USD → %+v %v", e, err)
	}
	// 19.99 USD → JPY: 19.99 × 126.40 / 1.1305 = 2235.0464…
	j, _ := Convert(a, "JPY")
	if j.Units != 2235 || j.Format() != "¥2,235" {
		t.Fatalf("19.99 USD → %+v %s", j, j.Format())
	}
	if _, err := Convert(a, "XXX"); err == nil {
		t.Fatal("unknown currency accepted")
	}
	big := Money{Currency: "EUR", Units: 1234567, Nanos: 5e8}
	if big.Format() != "€1,234,567.50" {
		t.Fatalf("format %s", big.Format())
	}
}

func TestCard(t *testing.T) {
	now := time.Date(2026, 12, 2, 0, 0, 0, 0, time.UTC)
	c, err := ValidateCard("4432-8015-6152-0454", 1, 2030, "672", now)
	if err != nil || c.Type != "VISA" || c.Last4 != "0454" {
		t.Fatalf("good VISA: %+v %v", c, err)
	}
	if c, err := ValidateCard("5555 5555 5555 4444", 12, 2026, "123", now); err != nil || c.Type != "MasterCard" {
		t.Fatalf("MasterCard expiring this month: %+v %v", c, err)
	}
	for _, tc := range []struct{ num, cvv, want string }{
		{"4432-8015-6152-0455", "672", "checksum"},
		{"4432x8015", "672", "digits"},
		{"378282246310005", "672", "American Express"},
		{"4432-8015-6152-0454", "67", "CVV"},
		{"", "672", "missing"},
	} {
		if _, err := ValidateCard(tc.num, 1, 2030, tc.cvv, now); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%q: %v, want %q", tc.num, err, tc.want)
		}
	}
	if _, err := ValidateCard("4432801561520454", 11, 2026, "672", now); err == nil || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired card: %v", err)
	}
}

// browser is a client with a cookie jar against a shop server.
type browser struct {
	t    *testing.T
	base string
	c    *http.Client
}

func newBrowser(t *testing.T, base string) *browser {
	jar, _ := cookiejar.New(nil)
	return &browser{t: t, base: base, c: &http.Client{Jar: jar, Timeout: 20 * time.Second}}
}

func (b *browser) get(p string) (int, string) {
	b.t.Helper()
	resp, err := b.c.Get(b.base + p)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

func (b *browser) post(p string, form url.Values) (int, string) {
	b.t.Helper()
	resp, err := b.c.PostForm(b.base+p, form)
	if err != nil {
		b.t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// CheckoutForm is a valid checkout form (Online Boutique's defaults).
func checkoutForm() url.Values {
	return url.Values{"email": {"someone@example.com"}, "street_address": {"1600 Amphitheatre Parkway"}, "zip_code": {"94043"},
		"city": {"Mountain View"}, "state": {"CA"}, "country": {"United States"}, "credit_card_number": {"4432-8015-6152-0454"},
		"credit_card_expiration_month": {"1"}, "credit_card_expiration_year": {"2030"}, "credit_card_cvv": {"672"}}
}

var orderIDRe = regexp.MustCompile(`id="order-id">([0-9a-f-]{36})<`)

// TestShopInProcess walks the whole shop through the plain frontend with
// in-process services.
func TestShopInProcess(t *testing.T) {
	s := NewShop()
	srv := httptest.NewServer(s.FrontendHandler(LocalCaller(s)))
	defer srv.Close()
	b := newBrowser(t, srv.URL)

	code, body := b.get("/")
	if code != 200 || !strings.Contains(body, "Sunglasses") || !strings.Contains(body, "$19.99") || !strings.Contains(body, "Bamboo Glass Jar") {
		t.Fatalf("home: %d %.300s", code, body)
	}
	if !strings.Contains(body, "frontend → productcatalog → cart → currency → ad → frontend") {
		t.Fatalf("home trace missing: %s", body)
	}
	code, body = b.get("/product/1YMWWN1N4O")
	if code != 200 || !strings.Contains(body, `id="product-name">Watch<`) || !strings.Contains(body, "$109.99") || !strings.Contains(body, "You may also like") {
		t.Fatalf("product: %d %s", code, body)
	}
	code, body = b.post("/setCurrency", url.Values{"currency_code": {"EUR"}})
	if code != 200 || !strings.Contains(body, "€") {
		t.Fatalf("set currency then home: %d %.500s", code, body)
	}
	code, body = b.post("/cart", url.Values{"product_id": {"1YMWWN1N4O"}, "quantity": {"2"}})
	// 109.99 USD in EUR = 97.293233…; two of them: 194.59
	if code != 200 || !strings.Contains(body, `<td class="qty">2</td>`) || !strings.Contains(body, "€194.59") {
		t.Fatalf("cart after add: %d %s", code, body)
	}
	code, body = b.post("/cart/checkout", checkoutForm())
	m := orderIDRe.FindStringSubmatch(body)
	if code != 200 || m == nil || !strings.Contains(body, "VISA ending in 0454") {
		t.Fatalf("checkout: %d %s", code, body)
	}
	// shipping 8.99 USD = €7.95; total €202.54
	if !strings.Contains(body, `id="total">€202.54<`) {
		t.Fatalf("checkout total: %s", body)
	}
	if !strings.Contains(body, "thank you for your order "+m[1]) {
		t.Fatalf("confirmation e-mail missing: %s", body)
	}
	code, body = b.get("/cart")
	if code != 200 || !strings.Contains(body, "Your cart is empty") {
		t.Fatalf("cart after checkout: %d %s", code, body)
	}
}

// TestShopBadInput: clear errors on the page, nothing crashes.
func TestShopBadInput(t *testing.T) {
	s := NewShop()
	srv := httptest.NewServer(s.FrontendHandler(LocalCaller(s)))
	defer srv.Close()
	b := newBrowser(t, srv.URL)
	check := func(what string, code int, body string, wantCode int, want string) {
		t.Helper()
		if code != wantCode || !strings.Contains(body, want) {
			t.Errorf("%s: %d, want %d with %q: %.600s", what, code, wantCode, want, body)
		}
	}
	code, body := b.get("/product/NOPE")
	check("unknown product", code, body, 404, "There is no product with ID &#34;NOPE&#34;.")
	code, body = b.post("/cart", url.Values{"product_id": {"NOPE"}, "quantity": {"1"}})
	check("add unknown product", code, body, 404, "There is no product")
	code, body = b.post("/cart/checkout", checkoutForm())
	check("empty cart checkout", code, body, 400, "Your cart is empty")
	code, body = b.post("/cart", url.Values{"product_id": {"OLJCESPC7Z"}, "quantity": {"many"}})
	check("quantity not a number", code, body, 400, "is not a number")
	code, body = b.post("/cart", url.Values{"product_id": {"OLJCESPC7Z"}, "quantity": {"11"}})
	check("quantity too large", code, body, 400, "between 1 and 10")
	for i := 0; i < 9; i++ {
		b.post("/cart", url.Values{"product_id": {"OLJCESPC7Z"}, "quantity": {"10"}})
	}
	code, body = b.post("/cart", url.Values{"product_id": {"OLJCESPC7Z"}, "quantity": {"10"}})
	check("huge cart", code, body, 400, "at most 99 of one product")
	f := checkoutForm()
	f.Set("credit_card_number", "4432-8015-6152-0455")
	code, body = b.post("/cart/checkout", f)
	check("malformed card", code, body, 400, "checksum")
	f = checkoutForm()
	f.Set("credit_card_expiration_year", "2020")
	code, body = b.post("/cart/checkout", f)
	check("expired card", code, body, 400, "expired")
	f = checkoutForm()
	f.Set("email", "nobody")
	code, body = b.post("/cart/checkout", f)
	check("bad e-mail", code, body, 400, "is not an e-mail address")
	code, body = b.post("/setCurrency", url.Values{"currency_code": {"XYZ"}})
	check("unknown currency", code, body, 400, "is not one this shop offers")
	code, body = b.get("/nowhere")
	check("unknown page", code, body, 404, "There is no page at /nowhere.")
	code, body = b.get("/cart/checkout")
	check("GET checkout", code, body, 405, "not allowed")
	code, _ = b.get("/static/img/mug.svg")
	if code != 200 {
		t.Errorf("image: %d", code)
	}
	code, _ = b.get("/static/../frontend.go")
	if code == 200 {
		t.Errorf("path traversal served")
	}
	// The cart still holds the 90 sunglasses after all that.
	code, body = b.get("/cart")
	check("cart after errors", code, body, 200, `<td class="qty">90</td>`)
}

// TestFirstRequestRedirects: a new visitor's first request adds to the
// cart (a redirect): the session cookie comes with the redirect, so the
// cart page after it shows the item.
func TestFirstRequestRedirects(t *testing.T) {
	s := NewShop()
	srv := httptest.NewServer(s.FrontendHandler(LocalCaller(s)))
	defer srv.Close()
	b := newBrowser(t, srv.URL)
	code, body := b.post("/cart", url.Values{"product_id": {"6E92ZMYYFZ"}, "quantity": {"4"}})
	if code != 200 || !strings.Contains(body, `<td class="qty">4</td>`) {
		t.Fatalf("cart after a first add: %d %s", code, body)
	}
	code, body = b.post("/setCurrency", url.Values{"currency_code": {"GBP"}})
	if code != 200 || !strings.Contains(body, `<option value="GBP" selected>`) || !strings.Contains(body, "£") {
		t.Fatalf("home after a currency change: %d %.800s", code, body)
	}
}

func TestCartStoreBounded(t *testing.T) {
	c := NewCartStore(3)
	for _, s := range []string{"a", "b", "c", "d"} {
		if err := c.Add(s, "OLJCESPC7Z", 1); err != nil {
			t.Fatal(err)
		}
	}
	if c.Len() != 3 || c.Get("a") != nil || c.Get("d") == nil {
		t.Fatalf("eviction: len %d a=%v d=%v", c.Len(), c.Get("a"), c.Get("d"))
	}
}

// TestItinerariesMatchChainYAML: config/samples/boutique/chain.yaml routes
// the frontend's topics to exactly the itineraries the plain frontend
// walks.
func TestItinerariesMatchChainYAML(t *testing.T) {
	b, err := readChainYAML()
	if err != nil {
		t.Fatal(err)
	}
	for act, itin := range Itineraries {
		want := act + ": [" + strings.Join(itin, ", ") + "]"
		if !strings.Contains(b, want) {
			t.Errorf("chain.yaml lacks the route %q", want)
		}
	}
}
