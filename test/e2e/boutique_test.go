package e2e

import (
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/spright-dev/spright/pkg/standalone"
)

// startBoutique runs config/samples/boutique as `make run` does: the chain,
// then the web adapter attached through the admin endpoint.
func startBoutique(t *testing.T) *chain {
	t.Helper()
	c := startChainWith(t, sample(t, "boutique"), func(o *standalone.Options) { o.AdminListen = "127.0.0.1:0" })
	req, _ := http.NewRequest(http.MethodPut, "http://"+c.Runner.AdminAddr()+"/adapters/http?name=web", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(b), `"http":"web"`) {
		t.Fatalf("attaching the web adapter: %d %s", resp.StatusCode, b)
	}
	return c
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
