// Package shopper drives Online Boutique like its Locust load generator
// does: closed-loop users, each with its own cookie session, choosing a
// task by Locust's weights (index 1, setCurrency 2, browseProduct 10,
// addToCart 2, viewCart 3, checkout 1), then thinking 1–10 s (configurable
// down for benchmarks) before the next. Unlike a status-only load tool it
// checks every answer's content against what the user did: the product
// page names the product, the cart holds exactly what this user added, a
// checkout returns an order ID and lists the cart's lines, the currency
// chosen is the one the page shows.
package shopper

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"
)

// Task weights of Online Boutique's locustfile.
var Tasks = []struct {
	Name   string
	Weight int
}{{"index", 1}, {"setCurrency", 2}, {"browseProduct", 10}, {"addToCart", 2}, {"viewCart", 3}, {"checkout", 1}}

// Products the users browse (the catalogue's IDs) and the currencies they pick.
var (
	Products   = []string{"0PUK6V6EV0", "1YMWWN1N4O", "2ZYFJ3GM2N", "66VCHSJNUP", "6E92ZMYYFZ", "9SIQT8TOJO", "L9ECAV7KIM", "LS4PSXUNUM", "OLJCESPC7Z"}
	Currencies = []string{"EUR", "USD", "JPY", "CAD", "GBP", "TRY"}
)

// MaxLineQuantity is the most of one product a cart takes (the cart
// service refuses more with a 400 page, which the user then expects).
const MaxLineQuantity = 99

// Config says how to load the shop.
type Config struct {
	BaseURL string // the shop, e.g. http://127.0.0.1:8080
	Users   int
	// Duration of the run; users started within SpawnOver (default 1 s).
	Duration, SpawnOver time.Duration
	// ThinkMin/ThinkMax: the uniform think time between tasks (Locust's
	// wait_time between(1, 10) by default).
	ThinkMin, ThinkMax time.Duration
	Seed               int64
	// Observe, if set, is told of every task as it completes (start time,
	// latency, the failed check or nil), e.g. to feed a benchmark's own
	// recorder.
	Observe func(action string, start time.Time, d time.Duration, err error)
	// Client makes each user's client (default: a fresh transport per
	// user, 30 s timeout); it must not share cookies between users.
	Client func() *http.Client
}

// Result of one action kind (or "" for all).
type Result struct {
	Action        string
	Count, Errors int
	FirstError    string
	P50, P95, P99 time.Duration
	RPS           float64
	latencies     []time.Duration
}

// Report of a run.
type Report struct {
	Elapsed time.Duration
	Actions []*Result // by action name, then the total ("")
}

// Total is the result over all actions.
func (r *Report) Total() *Result { return r.Actions[len(r.Actions)-1] }

// Get returns an action's result (nil if none ran).
func (r *Report) Get(action string) *Result {
	for _, a := range r.Actions {
		if a.Action == action {
			return a
		}
	}
	return nil
}

func (r *Report) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%-14s %7s %6s %9s %9s %9s %8s\n", "action", "count", "errors", "p50", "p95", "p99", "rps")
	for _, a := range r.Actions {
		name := a.Action
		if name == "" {
			name = "all"
		}
		fmt.Fprintf(&b, "%-14s %7d %6d %9v %9v %9v %8.1f\n", name, a.Count, a.Errors, a.P50.Round(time.Microsecond), a.P95.Round(time.Microsecond), a.P99.Round(time.Microsecond), a.RPS)
	}
	for _, a := range r.Actions {
		if a.FirstError != "" && a.Action != "" {
			fmt.Fprintf(&b, "first %s error: %s\n", a.Action, a.FirstError)
		}
	}
	return b.String()
}

type recorder struct {
	mu  sync.Mutex
	res map[string]*Result
}

func (rec *recorder) add(action string, d time.Duration, err error) {
	rec.mu.Lock()
	defer rec.mu.Unlock()
	r := rec.res[action]
	if r == nil {
		r = &Result{Action: action}
		rec.res[action] = r
	}
	r.Count++
	r.latencies = append(r.latencies, d)
	if err != nil {
		r.Errors++
		if r.FirstError == "" {
			r.FirstError = err.Error()
		}
	}
}

// Run loads the shop until ctx ends or cfg.Duration has passed.
func Run(ctx context.Context, cfg Config) (*Report, error) {
	if cfg.Users <= 0 || cfg.Duration <= 0 || cfg.BaseURL == "" {
		return nil, fmt.Errorf("shopper: users, duration and base URL are required")
	}
	if cfg.ThinkMax < cfg.ThinkMin {
		return nil, fmt.Errorf("shopper: think time max %v < min %v", cfg.ThinkMax, cfg.ThinkMin)
	}
	if cfg.SpawnOver <= 0 {
		cfg.SpawnOver = time.Second
	}
	if cfg.Client == nil {
		cfg.Client = func() *http.Client { return &http.Client{Transport: &http.Transport{}, Timeout: 30 * time.Second} }
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.Duration)
	defer cancel()
	rec := &recorder{res: map[string]*Result{}}
	start := time.Now()
	var wg sync.WaitGroup
	for i := 0; i < cfg.Users; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			delay := time.Duration(int64(cfg.SpawnOver) * int64(i) / int64(cfg.Users))
			select {
			case <-time.After(delay):
			case <-ctx.Done():
				return
			}
			u := newUser(cfg, i)
			u.loop(ctx, rec)
		}(i)
	}
	wg.Wait()
	elapsed := time.Since(start)
	rep := &Report{Elapsed: elapsed}
	total := &Result{Action: ""}
	var names []string
	for n := range rec.res {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		r := rec.res[n]
		finish(r, elapsed)
		rep.Actions = append(rep.Actions, r)
		total.Count += r.Count
		total.Errors += r.Errors
		total.latencies = append(total.latencies, r.latencies...)
		if total.FirstError == "" && r.FirstError != "" {
			total.FirstError = n + ": " + r.FirstError
		}
	}
	finish(total, elapsed)
	rep.Actions = append(rep.Actions, total)
	return rep, nil
}

func finish(r *Result, elapsed time.Duration) {
	sort.Slice(r.latencies, func(i, j int) bool { return r.latencies[i] < r.latencies[j] })
	q := func(p float64) time.Duration {
		if len(r.latencies) == 0 {
			return 0
		}
		i := int(p*float64(len(r.latencies))+0.5) - 1
		return r.latencies[max(0, min(i, len(r.latencies)-1))]
	}
	r.P50, r.P95, r.P99 = q(0.50), q(0.95), q(0.99)
	if elapsed > 0 {
		r.RPS = float64(r.Count) / elapsed.Seconds()
	}
}

// user is one simulated shopper with its session and what it expects its
// cart to hold.
type user struct {
	cfg      Config
	base     string
	c        *http.Client
	rnd      *rand.Rand
	cart     map[string]int
	currency string
}

func newUser(cfg Config, i int) *user {
	jar, _ := cookiejar.New(nil)
	c := cfg.Client()
	c.Jar = jar
	return &user{cfg: cfg, base: strings.TrimSuffix(cfg.BaseURL, "/"), c: c, rnd: rand.New(rand.NewSource(cfg.Seed + int64(i)*7919)),
		cart: map[string]int{}, currency: "USD"}
}

func (u *user) loop(ctx context.Context, rec *recorder) {
	do := func(action string, f func(context.Context) error) bool {
		t0 := time.Now()
		err := f(ctx)
		if ctx.Err() != nil {
			return false // the run ended during the request: not counted
		}
		d := time.Since(t0)
		rec.add(action, d, err)
		if u.cfg.Observe != nil {
			u.cfg.Observe(action, t0, d, err)
		}
		return true
	}
	if !do("index", u.index) {
		return
	}
	total := 0
	for _, t := range Tasks {
		total += t.Weight
	}
	for {
		think := u.cfg.ThinkMin
		if span := u.cfg.ThinkMax - u.cfg.ThinkMin; span > 0 {
			think += time.Duration(u.rnd.Int63n(int64(span) + 1))
		}
		select {
		case <-time.After(think):
		case <-ctx.Done():
			return
		}
		n := u.rnd.Intn(total)
		var task string
		for _, t := range Tasks {
			if n < t.Weight {
				task = t.Name
				break
			}
			n -= t.Weight
		}
		var f func(context.Context) error
		switch task {
		case "index":
			f = u.index
		case "setCurrency":
			f = u.setCurrency
		case "browseProduct":
			f = u.browseProduct
		case "addToCart":
			f = u.addToCart
		case "viewCart":
			f = u.viewCart
		case "checkout":
			f = u.checkout
		}
		if !do(task, f) {
			return
		}
	}
}

func (u *user) fetch(ctx context.Context, method, path string, form url.Values) (int, string, error) {
	var body io.Reader
	if form != nil {
		body = strings.NewReader(form.Encode())
	}
	req, err := http.NewRequestWithContext(ctx, method, u.base+path, body)
	if err != nil {
		return 0, "", err
	}
	if form != nil {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	}
	resp, err := u.c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

func expect(ok bool, format string, a ...any) error {
	if ok {
		return nil
	}
	return fmt.Errorf(format, a...)
}

var productLinkRe = regexp.MustCompile(`class="card product" href="/product/([0-9A-Z]+)"`)

func (u *user) checkHeader(page string) error {
	if !strings.Contains(page, `<option value="`+u.currency+`" selected>`) {
		return fmt.Errorf("the page does not show the currency %s as selected", u.currency)
	}
	n := 0
	for _, q := range u.cart {
		n += q
	}
	if want := fmt.Sprintf(`id="cart-count">%d<`, n); !strings.Contains(page, want) {
		return fmt.Errorf("the header does not count %d items in the cart", n)
	}
	return nil
}

func (u *user) index(ctx context.Context) error {
	code, page, err := u.fetch(ctx, "GET", "/", nil)
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("home: status %d", code)
	}
	if got := len(productLinkRe.FindAllString(page, -1)); got != len(Products) {
		return fmt.Errorf("home: %d products listed, want %d", got, len(Products))
	}
	return u.checkHeader(page)
}

func (u *user) setCurrency(ctx context.Context) error {
	c := Currencies[u.rnd.Intn(len(Currencies))]
	code, page, err := u.fetch(ctx, "POST", "/setCurrency", url.Values{"currency_code": {c}})
	if err != nil {
		return err
	}
	if code != 200 { // after the redirect to the home page
		return fmt.Errorf("setCurrency %s: status %d", c, code)
	}
	u.currency = c
	return u.checkHeader(page)
}

func (u *user) browse(ctx context.Context, p string) error {
	code, page, err := u.fetch(ctx, "GET", "/product/"+p, nil)
	if err != nil {
		return err
	}
	if code != 200 || !strings.Contains(page, `id="product" data-id="`+p+`"`) {
		return fmt.Errorf("product %s: status %d, or the page is not that product's", p, code)
	}
	return u.checkHeader(page)
}

func (u *user) browseProduct(ctx context.Context) error {
	return u.browse(ctx, Products[u.rnd.Intn(len(Products))])
}

func (u *user) addToCart(ctx context.Context) error {
	p := Products[u.rnd.Intn(len(Products))]
	if err := u.browse(ctx, p); err != nil {
		return err
	}
	q := 1 + u.rnd.Intn(10)
	code, page, err := u.fetch(ctx, "POST", "/cart", url.Values{"product_id": {p}, "quantity": {strconv.Itoa(q)}})
	if err != nil {
		return err
	}
	if u.cart[p]+q > MaxLineQuantity {
		return expect(code == 400 && strings.Contains(page, "at most"), "adding %d of %s to %d: status %d, want the cart's 400 page", q, p, u.cart[p], code)
	}
	if code != 200 {
		return fmt.Errorf("add %d of %s: status %d", q, p, code)
	}
	u.cart[p] += q
	return u.checkCart(page)
}

var lineRe = regexp.MustCompile(`(?s)<tr class="item" data-id="([0-9A-Z]+)">.*?<td class="qty">(\d+)</td>`)

func (u *user) checkCart(page string) error {
	got := map[string]int{}
	for _, m := range lineRe.FindAllStringSubmatch(page, -1) {
		q, _ := strconv.Atoi(m[2])
		got[m[1]] = q
	}
	if len(got) != len(u.cart) {
		return fmt.Errorf("the cart shows %v, want %v", got, u.cart)
	}
	for p, q := range u.cart {
		if got[p] != q {
			return fmt.Errorf("the cart shows %v, want %v", got, u.cart)
		}
	}
	if len(u.cart) == 0 && !strings.Contains(page, "Your cart is empty") {
		return fmt.Errorf("an empty cart is not shown as empty")
	}
	return u.checkHeader(page)
}

func (u *user) viewCart(ctx context.Context) error {
	code, page, err := u.fetch(ctx, "GET", "/cart", nil)
	if err != nil {
		return err
	}
	if code != 200 {
		return fmt.Errorf("cart: status %d", code)
	}
	return u.checkCart(page)
}

// CheckoutForm is the form Online Boutique's load generator posts.
func CheckoutForm() url.Values {
	return url.Values{"email": {"someone@example.com"}, "street_address": {"1600 Amphitheatre Parkway"}, "zip_code": {"94043"},
		"city": {"Mountain View"}, "state": {"CA"}, "country": {"United States"}, "credit_card_number": {"4432-8015-6152-0454"},
		"credit_card_expiration_month": {"1"}, "credit_card_expiration_year": {"2039"}, "credit_card_cvv": {"672"}}
}

var orderIDRe = regexp.MustCompile(`id="order-id">[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}<`)

func (u *user) checkout(ctx context.Context) error {
	if err := u.addToCart(ctx); err != nil {
		return err
	}
	code, page, err := u.fetch(ctx, "POST", "/cart/checkout", CheckoutForm())
	if err != nil {
		return err
	}
	if code != 200 || !orderIDRe.MatchString(page) {
		return fmt.Errorf("checkout: status %d, no order ID on the page", code)
	}
	ordered := map[string]int{}
	for _, m := range lineRe.FindAllStringSubmatch(page, -1) {
		q, _ := strconv.Atoi(m[2])
		ordered[m[1]] = q
	}
	for p, q := range u.cart {
		if ordered[p] != q {
			return fmt.Errorf("the order lists %v, the cart held %v", ordered, u.cart)
		}
	}
	if len(ordered) != len(u.cart) {
		return fmt.Errorf("the order lists %v, the cart held %v", ordered, u.cart)
	}
	u.cart = map[string]int{}
	return u.checkHeader(page)
}
