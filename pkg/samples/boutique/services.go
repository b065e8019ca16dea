package boutique

import (
	"bytes"
	"container/list"
	"crypto/rand"
	"fmt"
	"hash/fnv"
	"net/http"
	"sort"
	"strings"
	"sync"
	"text/template"
	"time"

	"github.com/google/uuid"
)

// Limits that keep a cart, and the shop's memory, bounded.
const (
	MaxAddQuantity  = 10    // per "add to cart"
	MaxLineQuantity = 99    // of one product in a cart
	MaxSessions     = 10000 // carts kept; the least recently used goes first
)

// Shop holds the services' state: the carts (the cart service's memory)
// and the clock and ID sources the others use. One Shop backs every
// service of a process; each SPRIGHT function process has its own, as each
// plain HTTP service does.
type Shop struct {
	Carts *CartStore
	// Now is the clock for card expiry (default time.Now).
	Now func() time.Time
	// NewID makes order and transaction IDs (default random UUIDs).
	NewID func() string
}

// NewShop makes a shop with empty carts.
func NewShop() *Shop {
	return &Shop{Carts: NewCartStore(MaxSessions), Now: time.Now, NewID: func() string { return uuid.NewString() }}
}

// Step runs service svc's part of d's action (every service but the
// frontend, whose two phases are Begin and Render).
func (s *Shop) Step(svc string, d *Doc) error {
	var f func(*Doc)
	switch svc {
	case SvcCatalog:
		f = s.catalog
	case SvcCurrency:
		f = s.currency
	case SvcCart:
		f = s.cart
	case SvcRecommendation:
		f = s.recommend
	case SvcAd:
		f = s.ad
	case SvcShipping:
		f = s.shipping
	case SvcPayment:
		f = s.payment
	case SvcEmail:
		f = s.email
	case SvcCheckout:
		f = s.checkout
	default:
		return fmt.Errorf("boutique: %q is not a service step", svc)
	}
	d.Trace = append(d.Trace, svc)
	if d.Error == nil {
		f(d)
	}
	return nil
}

func isStep(svc string) bool {
	for _, s := range Services[1:] {
		if s == svc {
			return true
		}
	}
	return false
}

// catalog: the products, the one asked for, the cart's lines priced.
func (s *Shop) catalog(d *Doc) {
	switch d.Action {
	case ActBrowse, ActAddToCart:
		p, ok := LookupProduct(d.ProductID)
		if !ok {
			d.fail(SvcCatalog, http.StatusNotFound, "There is no product with ID %q.", d.ProductID)
			return
		}
		d.Product = &p
	}
	if d.Action == ActAddToCart {
		return
	}
	d.Products = Products()
	if d.Action == ActViewCart || d.Action == ActCheckout {
		d.Items = d.Items[:0]
		for _, l := range d.Cart {
			p, ok := LookupProduct(l.ProductID)
			if !ok || l.Quantity < 1 || l.Quantity > MaxLineQuantity {
				continue // withdrawn from the catalogue, or not a cart's line
			}
			d.Items = append(d.Items, Item{Product: p, Quantity: l.Quantity})
		}
	}
}

// currency: validate a currency change, or convert every price the
// document carries into the user's currency and sum the cart.
func (s *Shop) currency(d *Doc) {
	if d.Action == ActSetCurrency {
		if !shopCurrency(d.NewCurrency) {
			d.fail(SvcCurrency, http.StatusBadRequest, "The currency %q is not one this shop offers (%s).", d.NewCurrency, strings.Join(ShopCurrencies, ", "))
		}
		return
	}
	to := d.Currency
	d.Currencies = append([]string(nil), ShopCurrencies...)
	conv := func(m *Money) bool {
		c, err := Convert(*m, to)
		if err != nil {
			d.fail(SvcCurrency, http.StatusInternalServerError, "Converting %s to %s: %v", m.Currency, to, err)
			return false
		}
		*m = c
		return true
	}
	for i := range d.Products {
		if !conv(&d.Products[i].Price) {
			return
		}
	}
	if d.Product != nil && !conv(&d.Product.Price) {
		return
	}
	sub := Zero(to)
	for i := range d.Items {
		it := &d.Items[i]
		if !conv(&it.Product.Price) {
			return
		}
		cost, err := Mul(it.Product.Price, int64(it.Quantity))
		if err == nil {
			sub, err = Add(sub, cost)
		}
		if err != nil {
			d.fail(SvcCurrency, http.StatusInternalServerError, "Pricing the cart: %v", err)
			return
		}
		it.Cost = cost
	}
	if d.Items != nil || d.Action == ActViewCart || d.Action == ActCheckout {
		d.Subtotal = &sub
	}
	if d.Shipping != nil && !conv(d.Shipping) {
		return
	}
}

func shopCurrency(c string) bool {
	for _, x := range ShopCurrencies {
		if c == x {
			return true
		}
	}
	return false
}

// cart: the session's cart, kept in this service's memory.
func (s *Shop) cart(d *Doc) {
	switch {
	case d.Action == ActAddToCart:
		if err := s.Carts.Add(d.Session, d.ProductID, d.Quantity); err != nil {
			d.fail(SvcCart, http.StatusBadRequest, "%v", err)
			return
		}
	case d.Action == ActEmptyCart:
		s.Carts.Empty(d.Session)
	case d.Action == ActCheckout && d.Order != nil && d.Order.Paid:
		s.Carts.Empty(d.Session)
		d.Order.CartEmptied = true
		d.Cart = nil // the page shows the cart as it is now
		return
	}
	d.Cart = s.Carts.Get(d.Session)
	d.CartLoaded = true
}

// recommend: up to four other products, stable for a session and page.
func (s *Shop) recommend(d *Doc) {
	exclude := map[string]bool{}
	if d.Product != nil {
		exclude[d.Product.ID] = true
	}
	for _, l := range d.Cart {
		exclude[l.ProductID] = true
	}
	if d.Order != nil {
		for _, it := range d.Order.Items {
			exclude[it.Product.ID] = true
		}
	}
	var ids []string
	for _, p := range products {
		if !exclude[p.ID] {
			ids = append(ids, p.ID)
		}
	}
	h := hash(d.Session, d.Action, d.ProductID)
	sort.Slice(ids, func(i, j int) bool { return hash(ids[i], h) < hash(ids[j], h) })
	if len(ids) > 4 {
		ids = ids[:4]
	}
	d.Recommendations = ids
}

func hash(parts ...any) string {
	h := fnv.New64a()
	for _, p := range parts {
		fmt.Fprint(h, p, "\x00")
	}
	return fmt.Sprintf("%016x", h.Sum64())
}

// ad: a banner for the page's categories (the product's), else any.
func (s *Shop) ad(d *Doc) {
	var pool []Ad
	if d.Product != nil {
		for _, c := range d.Product.Categories {
			pool = append(pool, adsByCategory[c]...)
		}
	}
	if len(pool) == 0 {
		for _, c := range adCategories {
			pool = append(pool, adsByCategory[c]...)
		}
	}
	h := fnv.New32a()
	fmt.Fprint(h, d.Session, d.ProductID)
	ad := pool[int(h.Sum32()%uint32(len(pool)))]
	d.Ad = &ad
}

// ShippingQuote is the cost of shipping count items, in USD: free for an
// empty shipment, else a flat 8.99.
func ShippingQuote(count int) Money {
	if count <= 0 {
		return Zero("USD")
	}
	return usd("8.99")
}

// shipping: a quote from the cart's item count, or, once paid, the
// shipment and its tracking ID.
func (s *Shop) shipping(d *Doc) {
	if d.Action == ActCheckout && d.Order != nil && d.Order.Paid {
		d.Order.TrackingID = TrackingID(d.Form)
		d.Order.Shipped = true
		return
	}
	n := 0
	for _, l := range d.Cart {
		n += l.Quantity
	}
	q := ShippingQuote(n)
	d.Shipping = &q
}

// TrackingID makes a tracking number: two letters from the address, then
// random digits, e.g. "SF-40213-7305166".
func TrackingID(f *CheckoutForm) string {
	letters := "XX"
	if f != nil {
		h := fnv.New32a()
		fmt.Fprint(h, f.Street, f.City, f.ZipCode, f.Country)
		v := h.Sum32()
		letters = string([]byte{byte('A' + v%26), byte('A' + (v/26)%26)})
	}
	var b [12]byte
	rand.Read(b[:])
	digits := make([]byte, 12)
	for i := range b {
		digits[i] = '0' + b[i]%10
	}
	return fmt.Sprintf("%s-%s-%s", letters, digits[:5], digits[5:])
}

// payment: validate the card and "charge" the total (nothing is charged:
// a transaction ID is issued).
func (s *Shop) payment(d *Doc) {
	o, f := d.Order, d.Form
	if o == nil || o.Total == nil || f == nil {
		d.fail(SvcPayment, http.StatusInternalServerError, "Payment was asked without an order total.")
		return
	}
	card, err := ValidateCard(f.CardNumber, f.CardMonth, f.CardYear, f.CardCVV, s.Now())
	if err != nil {
		d.fail(SvcPayment, http.StatusBadRequest, "%v", err)
		return
	}
	if o.Total.Units < 0 || (o.Total.Units == 0 && o.Total.Nanos <= 0) {
		d.fail(SvcPayment, http.StatusBadRequest, "Nothing to pay.")
		return
	}
	o.CardType, o.CardLast4 = card.Type, card.Last4
	o.TransactionID = s.NewID()
	o.Paid = true
}

var emailTmpl = template.Must(template.New("email").Parse(`Hello,

thank you for your order {{.ID}}.

{{range .Items}}  {{.Quantity}} × {{.Product.Name}}: {{.Cost.Format}}
{{end}}  Shipping: {{.Shipping.Format}}
  Total: {{.Total.Format}}

Paid with {{.CardType}} ending in {{.CardLast4}} (transaction {{.TransactionID}}).
Your parcel is on its way: tracking number {{.TrackingID}}.

Online Boutique on SPRIGHT
`))

// email: the order confirmation, rendered (not sent anywhere).
func (s *Shop) email(d *Doc) {
	o := d.Order
	if o == nil || !o.Paid || o.Total == nil || o.Shipping == nil || d.Form == nil {
		d.fail(SvcEmail, http.StatusInternalServerError, "Confirmation asked for an order that was not placed.")
		return
	}
	var b bytes.Buffer
	if err := emailTmpl.Execute(&b, o); err != nil {
		d.fail(SvcEmail, http.StatusInternalServerError, "Rendering the confirmation: %v", err)
		return
	}
	o.EmailTo = d.Form.Email
	o.EmailSubject = "Your Online Boutique order " + o.ID
	o.EmailBody = b.String()
}

// checkout: first visit — check the form and open the order; second visit
// (the cart priced in the user's currency, shipping quoted) — total it.
func (s *Shop) checkout(d *Doc) {
	if d.Order == nil {
		if err := d.Form.Check(); err != nil {
			d.fail(SvcCheckout, http.StatusBadRequest, "%v", err)
			return
		}
		d.Order = &Order{ID: s.NewID()}
		return
	}
	if d.Order.Total != nil {
		return
	}
	if len(d.Items) == 0 {
		d.fail(SvcCheckout, http.StatusBadRequest, "Your cart is empty: add a product before checking out.")
		return
	}
	if d.Subtotal == nil || d.Shipping == nil {
		d.fail(SvcCheckout, http.StatusInternalServerError, "The cart was not priced before checkout.")
		return
	}
	total, err := Add(*d.Subtotal, *d.Shipping)
	if err != nil {
		d.fail(SvcCheckout, http.StatusInternalServerError, "Totalling the order: %v", err)
		return
	}
	d.Order.Total = &total
	d.Order.Items = append([]Item(nil), d.Items...)
	sh := *d.Shipping
	d.Order.Shipping = &sh
}

// Check validates the address and contact part of the form (the card is
// the payment service's).
func (f *CheckoutForm) Check() error {
	if f == nil {
		return fmt.Errorf("The checkout form is missing.")
	}
	at := strings.IndexByte(f.Email, '@')
	if at < 1 || at == len(f.Email)-1 || len(f.Email) > 254 || strings.ContainsAny(f.Email, " \t\r\n<>") {
		return fmt.Errorf("%q is not an e-mail address.", f.Email)
	}
	for _, fld := range []struct{ name, v string }{{"street address", f.Street}, {"city", f.City}, {"country", f.Country}, {"ZIP code", f.ZipCode}} {
		if strings.TrimSpace(fld.v) == "" {
			return fmt.Errorf("The %s is missing.", fld.name)
		}
		if len(fld.v) > 200 {
			return fmt.Errorf("The %s is too long.", fld.name)
		}
	}
	return nil
}

// CartStore keeps carts per session, least recently used evicted first.
type CartStore struct {
	mu    sync.Mutex
	max   int
	lru   *list.List // of *sessionCart, most recent at the front
	index map[string]*list.Element
}

type sessionCart struct {
	session string
	lines   []CartLine
}

// NewCartStore keeps at most max carts.
func NewCartStore(max int) *CartStore {
	return &CartStore{max: max, lru: list.New(), index: map[string]*list.Element{}}
}

// Len is the number of carts held.
func (c *CartStore) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lru.Len()
}

// Add puts quantity of product into session's cart.
func (c *CartStore) Add(session, product string, quantity int) error {
	if quantity < 1 || quantity > MaxAddQuantity {
		return fmt.Errorf("You can add between 1 and %d of a product at a time, not %d.", MaxAddQuantity, quantity)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	sc := c.touch(session, true)
	for i := range sc.lines {
		if sc.lines[i].ProductID == product {
			if sc.lines[i].Quantity+quantity > MaxLineQuantity {
				return fmt.Errorf("A cart holds at most %d of one product; yours has %d already.", MaxLineQuantity, sc.lines[i].Quantity)
			}
			sc.lines[i].Quantity += quantity
			return nil
		}
	}
	if len(sc.lines) >= len(products) {
		return fmt.Errorf("Your cart is full.")
	}
	sc.lines = append(sc.lines, CartLine{ProductID: product, Quantity: quantity})
	return nil
}

// Get returns a copy of session's cart.
func (c *CartStore) Get(session string) []CartLine {
	c.mu.Lock()
	defer c.mu.Unlock()
	sc := c.touch(session, false)
	if sc == nil {
		return nil
	}
	return append([]CartLine(nil), sc.lines...)
}

// Empty forgets session's cart.
func (c *CartStore) Empty(session string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.index[session]; ok {
		c.lru.Remove(e)
		delete(c.index, session)
	}
}

func (c *CartStore) touch(session string, create bool) *sessionCart {
	if e, ok := c.index[session]; ok {
		c.lru.MoveToFront(e)
		return e.Value.(*sessionCart)
	}
	if !create {
		return nil
	}
	for c.lru.Len() >= c.max {
		old := c.lru.Back()
		c.lru.Remove(old)
		delete(c.index, old.Value.(*sessionCart).session)
	}
	sc := &sessionCart{session: session}
	c.index[session] = c.lru.PushFront(sc)
	return sc
}
