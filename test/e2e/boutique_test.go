package e2e

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/spright-dev/spright/pkg/samples/boutique"
	"github.com/spright-dev/spright/pkg/samples/boutique/shopper"
	"github.com/spright-dev/spright/pkg/standalone"
)

// startBoutique runs config/samples/boutique as `make run` does; its
// `protocol: web` attaches the web adapter at start (checked on the admin
// endpoint).
func startBoutique(t *testing.T) *chain {
	t.Helper()
	c := startChainWith(t, sample(t, "boutique"), func(o *standalone.Options) { o.AdminListen = "127.0.0.1:0" })
	resp, err := http.Get("http://" + c.Runner.AdminAddr() + "/adapters")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"http":"web"`) {
		t.Fatalf("the web adapter is not attached at the http front end: %d %s", resp.StatusCode, b)
	}
	return c
}

// noSlotsHeld fails unless every slot of the chain's pool is free again
// (after a short grace for answers still being written).
func noSlotsHeld(t *testing.T, c *chain) {
	t.Helper()
	p := c.Runner.Chain.Pool()
	deadline := time.Now().Add(2 * time.Second)
	for p.FreeCount() != int(p.Slots()) {
		if time.Now().After(deadline) {
			t.Fatalf("%d of %d slots still held after the requests ended", int(p.Slots())-p.FreeCount(), p.Slots())
		}
		time.Sleep(10 * time.Millisecond)
	}
}

var uuidRe = regexp.MustCompile(`[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}`)

// TestBoutiqueChromium shops in a real headless Chromium through the
// SPRIGHT chain: home → product → add to cart → checkout, checking each
// page's content, with a screenshot of each (saved in
// $SPRIGHT_SCREENSHOTS, else the test's temporary directory).
func TestBoutiqueChromium(t *testing.T) {
	b := startChromium(t)
	c := startBoutique(t)
	dir := os.Getenv("SPRIGHT_SCREENSHOTS")
	if dir == "" {
		dir = t.TempDir()
	}
	base := strings.TrimSuffix(c.url, "/")

	b.navigate(base + "/")
	home := b.text()
	for _, name := range []string{"Sunglasses", "Tank Top", "Watch", "Loafers", "Hairdryer", "Candle Holder", "Salt & Pepper Shakers", "Bamboo Glass Jar", "Mug", "$109.99", "Cart (0)"} {
		if !strings.Contains(home, name) {
			t.Errorf("home page lacks %q:\n%s", name, home)
		}
	}
	if got := b.eval(`Array.from(document.images).filter(i => i.complete && i.naturalWidth > 0).length`); got != "9" {
		t.Errorf("home page: %s of 9 product pictures loaded", got)
	}
	if got := b.eval(`document.cookie.length >= 0 && document.title`); got != `"Online Boutique"` {
		t.Errorf("title %s", got)
	}
	b.screenshot(filepath.Join(dir, "boutique-home.png"))

	b.clickAndWait(`document.querySelector('a.product[data-id="1YMWWN1N4O"]').click()`)
	prod := b.text()
	if !strings.Contains(prod, "Watch") || !strings.Contains(prod, "$109.99") || !strings.Contains(prod, "Add to cart") || !strings.Contains(prod, "You may also like") {
		t.Fatalf("product page:\n%s", prod)
	}
	if href := b.eval(`location.pathname`); href != `"/product/1YMWWN1N4O"` {
		t.Errorf("product page at %s", href)
	}
	b.screenshot(filepath.Join(dir, "boutique-product.png"))

	b.clickAndWait(`document.querySelector('#quantity').value = '2'; document.querySelector('#add').click()`)
	cart := b.text()
	if p := b.eval(`location.pathname`); p != `"/cart"` {
		t.Errorf("after adding: at %s, want /cart", p)
	}
	if !strings.Contains(cart, "Your cart (2 items)") || !strings.Contains(cart, "Watch") || !strings.Contains(cart, "$219.98") || !strings.Contains(cart, "$8.99") || !strings.Contains(cart, "$228.97") {
		t.Fatalf("cart page:\n%s", cart)
	}
	if got := b.eval(`document.querySelector('#cart-items .qty').textContent`); got != `"2"` {
		t.Errorf("cart quantity %s", got)
	}
	b.screenshot(filepath.Join(dir, "boutique-cart.png"))

	b.clickAndWait(`document.querySelector('#place-order').click()`)
	order := b.text()
	var orderID string
	json := b.eval(`document.querySelector('#order-id').textContent`)
	if m := uuidRe.FindString(json); m != "" {
		orderID = m
	}
	if !strings.Contains(order, "Cart (0)") {
		t.Errorf("the order page's header does not show the emptied cart:\n%s", order)
	}
	if !strings.Contains(order, "Your order is complete!") || orderID == "" || !strings.Contains(order, "$228.97") || !strings.Contains(order, "VISA ending in 0454") {
		t.Fatalf("order page (order ID %q):\n%s", orderID, order)
	}
	if tr := b.eval(`document.querySelector('#tracking-id').textContent`); !regexp.MustCompile(`^"[A-Z]{2}-\d{5}-\d{7}"$`).MatchString(tr) {
		t.Errorf("tracking ID %s", tr)
	}
	if email := b.eval(`document.querySelector('#email pre').textContent`); !strings.Contains(email, orderID) {
		t.Errorf("confirmation e-mail does not name order %s: %s", orderID, email)
	}
	b.screenshot(filepath.Join(dir, "boutique-order.png"))
	t.Logf("order %s placed through the chain", orderID)

	// The cart is empty after the order; the currency selector switches
	// the prices (a form posted by the select's change event).
	b.navigate(base + "/cart")
	if !strings.Contains(b.text(), "Your cart is empty") {
		t.Errorf("cart after checkout:\n%s", b.text())
	}
	b.navigate(base + "/")
	b.clickAndWait(`const s = document.querySelector('#currency_code'); s.value = 'EUR'; s.dispatchEvent(new Event('change'))`)
	if h := b.text(); !strings.Contains(h, "€97.29") {
		t.Errorf("home in EUR lacks the watch at €97.29:\n%s", h)
	}
	// Bad input in the browser: an unknown product is a 404 page saying so.
	b.navigate(base + "/product/NOSUCHTHING")
	if h := b.text(); !strings.Contains(h, "404 Not Found") || !strings.Contains(h, `There is no product with ID "NOSUCHTHING".`) {
		t.Errorf("unknown product page:\n%s", h)
	}
}

// plainBoutique runs the Knative baseline's form of the shop: every
// service its own HTTP server with its own state, the frontend calling
// them over HTTP along the same itineraries.
func plainBoutique(t *testing.T) string {
	t.Helper()
	urls := map[string]string{}
	for _, svc := range boutique.Services[1:] {
		h, err := boutique.NewShop().ServiceHandler(svc)
		if err != nil {
			t.Fatal(err)
		}
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		urls[svc] = srv.URL + "/"
	}
	fe := httptest.NewServer(boutique.NewShop().FrontendHandler(boutique.HTTPCaller(&http.Client{Timeout: 10 * time.Second}, urls)))
	t.Cleanup(fe.Close)
	return fe.URL
}

// shopAs does one request with a fixed session (and currency), following
// redirects as a browser does.
func shopAs(t *testing.T, base, method, path string, form url.Values) (int, string) {
	t.Helper()
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, _ := http.NewRequest(method, base+path, body)
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	req.Header.Set("Cookie", "shop_session-id=equivalence-0000-0000-0000-000000000001; shop_currency=EUR")
	c := &http.Client{Timeout: 20 * time.Second, CheckRedirect: func(r *http.Request, via []*http.Request) error {
		r.Header.Set("Cookie", via[0].Header.Get("Cookie"))
		return nil
	}}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

var trackingRe = regexp.MustCompile(`\b[A-Z]{2}-\d{5}-\d{7}\b`)

// masked replaces what differs by nature between two orders (order,
// transaction and tracking IDs) with placeholders.
func masked(page string) string {
	return trackingRe.ReplaceAllString(uuidRe.ReplaceAllString(page, "<uuid>"), "<tracking>")
}

// TestBoutiqueSprightMatchesPlainHTTP: the same shopping — two products
// added, the cart viewed, the order placed, then an empty-cart checkout and
// a malformed card — gives the same pages through the SPRIGHT chain and
// through the plain HTTP services (the Knative baseline's form), but for
// the order's own IDs.
func TestBoutiqueSprightMatchesPlainHTTP(t *testing.T) {
	spc := startBoutique(t)
	sp := strings.TrimSuffix(spc.url, "/")
	pl := plainBoutique(t)
	bad := shopper.CheckoutForm()
	bad.Set("credit_card_number", "4432-8015-6152-0455")
	steps := []struct {
		method, path string
		form         url.Values
		code         int
		want         string
	}{
		{"GET", "/", nil, 200, "Hot products"},
		{"GET", "/product/L9ECAV7KIM", nil, 200, "Loafers"},
		{"POST", "/setCurrency", url.Values{"currency_code": {"JPY"}}, 200, "Hot products"}, // redirected home (these requests keep EUR)
		{"POST", "/setCurrency", url.Values{"currency_code": {"XYZ"}}, 400, "not one this shop offers"},
		{"POST", "/cart", url.Values{"product_id": {"1YMWWN1N4O"}, "quantity": {"2"}}, 200, "€194.59"},
		{"POST", "/cart", url.Values{"product_id": {"9SIQT8TOJO"}, "quantity": {"3"}}, 200, "Bamboo Glass Jar"},
		{"POST", "/cart/checkout", bad, 400, "checksum"},
		{"GET", "/cart", nil, 200, "Your cart (5 items)"},
		{"POST", "/cart/checkout", shopper.CheckoutForm(), 200, "Your order is complete!"},
		{"POST", "/cart/checkout", shopper.CheckoutForm(), 400, "Your cart is empty"},
		{"GET", "/product/NOPE", nil, 404, "There is no product"},
	}
	for _, s := range steps {
		c1, p1 := shopAs(t, sp, s.method, s.path, s.form)
		c2, p2 := shopAs(t, pl, s.method, s.path, s.form)
		if c1 != s.code || !strings.Contains(p1, s.want) {
			t.Fatalf("%s %s through SPRIGHT: %d, want %d with %q:\n%s", s.method, s.path, c1, s.code, s.want, p1)
		}
		if c1 != c2 || masked(p1) != masked(p2) {
			t.Fatalf("%s %s: SPRIGHT %d and plain HTTP %d differ:\n--- SPRIGHT\n%s\n--- plain\n%s", s.method, s.path, c1, c2, p1, p2)
		}
		if s.path == "/cart/checkout" && c1 == 200 {
			if uuidRe.FindString(p1) == uuidRe.FindString(p2) {
				t.Fatal("both systems issued the same order ID")
			}
			i := strings.Index(p1, `<section class="order"`)
			t.Logf("order confirmation through SPRIGHT (masked):\n%s", masked(p1[i:i+min(900, len(p1)-i)]))
		}
	}
	// Bad input leaks nothing: every slot is free again.
	noSlotsHeld(t, spc)
}

// TestBoutiqueShopperOverSpright: Locust-like users with short think times
// shop through the chain for a few seconds; every answer's content checks.
func TestBoutiqueShopperOverSpright(t *testing.T) {
	c := startBoutique(t)
	rep, err := shopper.Run(context.Background(), shopper.Config{BaseURL: strings.TrimSuffix(c.url, "/"), Users: 16,
		Duration: 4 * time.Second, SpawnOver: 500 * time.Millisecond, ThinkMin: 0, ThinkMax: 20 * time.Millisecond, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", rep)
	if tot := rep.Total(); tot.Errors != 0 || tot.Count < 100 {
		t.Fatalf("%d requests, %d errors; first: %s", tot.Count, tot.Errors, tot.FirstError)
	}
	if r := rep.Get("checkout"); r == nil || r.Count == 0 {
		t.Fatal("no checkout ran")
	}
	noSlotsHeld(t, c)
}
