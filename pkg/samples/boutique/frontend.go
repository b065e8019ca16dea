package boutique

import (
	"bytes"
	"embed"
	"fmt"
	"html/template"
	"mime"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"strings"

	"github.com/google/uuid"

	"github.com/spright-dev/spright/pkg/adapter"
)

// Cookies the frontend keeps.
const (
	CookieSession  = "shop_session-id"
	CookieCurrency = "shop_currency"
	// DefaultCurrency is the currency of a new session.
	DefaultCurrency = "USD"
	// MaxForm bounds a posted form.
	MaxForm = 8 << 10
)

//go:embed static templates
var assets embed.FS

var pages = template.Must(template.New("").Funcs(template.FuncMap{
	"productByID": func(d *Doc, id string) *Product {
		for i := range d.Products {
			if d.Products[i].ID == id {
				return &d.Products[i]
			}
		}
		return nil
	},
	"cartCount": func(d *Doc) int {
		n := 0
		for _, l := range d.Cart {
			n += l.Quantity
		}
		return n
	},
	"total": func(a, b *Money) string {
		if a == nil || b == nil {
			return ""
		}
		t, err := Add(*a, *b)
		if err != nil {
			return ""
		}
		return t.Format()
	},
	"years": func(d *Doc) []int { return []int{2026, 2027, 2028, 2029, 2030, 2031} },
	"join":  strings.Join,
	"seq": func(n int) []int {
		s := make([]int, n)
		for i := range s {
			s[i] = i + 1
		}
		return s
	},
}).ParseFS(assets, "templates/*.html"))

// Begin is the frontend's first phase: it reads the request envelope and
// either answers at once (static files, redirects, bad input: resp) or
// writes the document the action's itinerary works on (d, whose Action is
// the chain's topic).
func (s *Shop) Begin(r *adapter.WebRequest) (d *Doc, resp *adapter.WebResponse) {
	d = &Doc{Trace: []string{SvcFrontend}}
	ck := cookies(r.Header)
	if sid := ck[CookieSession]; validSession(sid) {
		d.Session = sid
	} else {
		d.Session = uuid.NewString()
		d.NewSession = true
	}
	d.Currency = DefaultCurrency
	if c := ck[CookieCurrency]; shopCurrency(c) {
		d.Currency = c
	}
	get, post := r.Method == http.MethodGet || r.Method == http.MethodHead, r.Method == http.MethodPost
	p := r.Path
	switch {
	case strings.HasPrefix(p, "/static/"):
		if !get {
			return nil, s.errorPage(d, http.StatusMethodNotAllowed, "Static files are only read.")
		}
		return nil, static(p)
	case p == "/_healthz":
		return nil, &adapter.WebResponse{Status: 200, Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte("ok")}
	case p == "/robots.txt":
		return nil, &adapter.WebResponse{Status: 200, Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte("User-agent: *\nDisallow: /\n")}
	case p == "/" && get:
		d.Action = ActIndex
	case strings.HasPrefix(p, "/product/") && get:
		d.Action = ActBrowse
		d.ProductID = strings.TrimPrefix(p, "/product/")
		if len(d.ProductID) > 64 {
			return nil, s.errorPage(d, http.StatusNotFound, "There is no such product.")
		}
	case p == "/cart" && get:
		d.Action = ActViewCart
	case p == "/cart" && post:
		form, err := parseForm(r)
		if err != nil {
			return nil, s.errorPage(d, http.StatusBadRequest, err.Error())
		}
		d.Action = ActAddToCart
		d.ProductID = form.Get("product_id")
		q, err := strconv.Atoi(form.Get("quantity"))
		if err != nil {
			return nil, s.errorPage(d, http.StatusBadRequest, fmt.Sprintf("The quantity %q is not a number.", form.Get("quantity")))
		}
		d.Quantity = q
	case p == "/cart/empty" && post:
		d.Action = ActEmptyCart
	case p == "/cart/checkout" && post:
		form, err := parseForm(r)
		if err != nil {
			return nil, s.errorPage(d, http.StatusBadRequest, err.Error())
		}
		d.Action = ActCheckout
		month, _ := strconv.Atoi(form.Get("credit_card_expiration_month"))
		year, _ := strconv.Atoi(form.Get("credit_card_expiration_year"))
		d.Form = &CheckoutForm{Email: form.Get("email"), Street: form.Get("street_address"), City: form.Get("city"),
			State: form.Get("state"), Country: form.Get("country"), ZipCode: form.Get("zip_code"),
			CardNumber: form.Get("credit_card_number"), CardMonth: month, CardYear: year, CardCVV: form.Get("credit_card_cvv")}
	case p == "/setCurrency" && post:
		form, err := parseForm(r)
		if err != nil {
			return nil, s.errorPage(d, http.StatusBadRequest, err.Error())
		}
		d.Action = ActSetCurrency
		d.NewCurrency = form.Get("currency_code")
		d.Back = backPath(r.Header.Get("Referer"))
	case p == "/logout" && get:
		return nil, &adapter.WebResponse{Status: http.StatusFound, Header: http.Header{"Location": {"/"},
			"Set-Cookie": {expire(CookieSession), expire(CookieCurrency)}}, Body: []byte{}}
	case p == "/" || p == "/cart" || p == "/cart/empty" || p == "/cart/checkout" || p == "/setCurrency" || p == "/logout" || strings.HasPrefix(p, "/product/"):
		return nil, s.errorPage(d, http.StatusMethodNotAllowed, fmt.Sprintf("%s is not allowed on %s.", r.Method, p))
	default:
		return nil, s.errorPage(d, http.StatusNotFound, "There is no page at "+p+".")
	}
	return d, nil
}

func validSession(s string) bool {
	if len(s) < 8 || len(s) > 64 {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-') {
			return false
		}
	}
	return true
}

func cookies(h http.Header) map[string]string {
	out := map[string]string{}
	for _, line := range h.Values("Cookie") {
		cs, err := http.ParseCookie(line)
		if err != nil {
			continue
		}
		for _, c := range cs {
			if _, seen := out[c.Name]; !seen {
				out[c.Name] = c.Value
			}
		}
	}
	return out
}

func parseForm(r *adapter.WebRequest) (url.Values, error) {
	if len(r.Body) > MaxForm {
		return nil, fmt.Errorf("The form is larger than %d bytes.", MaxForm)
	}
	ct, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if ct != "application/x-www-form-urlencoded" {
		return nil, fmt.Errorf("Expected a form (application/x-www-form-urlencoded), got %q.", r.Header.Get("Content-Type"))
	}
	v, err := url.ParseQuery(string(r.Body))
	if err != nil {
		return nil, fmt.Errorf("The form is malformed: %v.", err)
	}
	return v, nil
}

// backPath keeps a redirect on this site: the Referer's path, or "/".
func backPath(ref string) string {
	u, err := url.Parse(ref)
	if err != nil || !strings.HasPrefix(u.Path, "/") || strings.HasPrefix(u.Path, "//") {
		return "/"
	}
	if u.RawQuery != "" {
		return u.Path + "?" + u.RawQuery
	}
	return u.Path
}

func cookie(name, value string) string {
	return (&http.Cookie{Name: name, Value: value, Path: "/", MaxAge: 48 * 3600, HttpOnly: true, SameSite: http.SameSiteLaxMode}).String()
}

func expire(name string) string {
	return (&http.Cookie{Name: name, Value: "", Path: "/", MaxAge: -1}).String()
}

func static(p string) *adapter.WebResponse {
	clean := path.Clean(p)
	if clean != p || strings.Contains(clean, "..") {
		return &adapter.WebResponse{Status: http.StatusNotFound, Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte("not found")}
	}
	b, err := assets.ReadFile(strings.TrimPrefix(clean, "/"))
	if err != nil {
		return &adapter.WebResponse{Status: http.StatusNotFound, Header: http.Header{"Content-Type": {"text/plain"}}, Body: []byte("not found")}
	}
	ct := mime.TypeByExtension(path.Ext(clean))
	if ct == "" {
		ct = "application/octet-stream"
	}
	return &adapter.WebResponse{Status: 200, Header: http.Header{"Content-Type": {ct}, "Cache-Control": {"public, max-age=3600"}}, Body: b}
}

// Render is the frontend's last phase: the page (or redirect) for d.
func (s *Shop) Render(d *Doc) *adapter.WebResponse {
	d.Trace = append(d.Trace, SvcFrontend)
	if d.Error != nil {
		return s.errorPage(d, d.Error.Status, d.Error.Message)
	}
	var resp *adapter.WebResponse
	switch d.Action {
	case ActSetCurrency:
		resp = redirect(d.Back)
		resp.Header.Add("Set-Cookie", cookie(CookieCurrency, d.NewCurrency))
	case ActAddToCart:
		resp = redirect("/cart")
	case ActEmptyCart:
		resp = redirect("/")
	case ActIndex:
		resp = s.page(d, http.StatusOK, "home")
	case ActBrowse:
		resp = s.page(d, http.StatusOK, "product")
	case ActViewCart:
		resp = s.page(d, http.StatusOK, "cart")
	case ActCheckout:
		resp = s.page(d, http.StatusOK, "order")
	default:
		resp = s.errorPage(d, http.StatusInternalServerError, fmt.Sprintf("No page for action %q.", d.Action))
	}
	if d.NewSession && resp.Status/100 == 3 {
		// A first request that redirects (add to cart before any page)
		// must keep its session, or the next page sees a new, empty one.
		resp.Header.Add("Set-Cookie", cookie(CookieSession, d.Session))
	}
	return resp
}

func redirect(to string) *adapter.WebResponse {
	return &adapter.WebResponse{Status: http.StatusFound, Header: http.Header{"Location": {to}}, Body: []byte{}}
}

type pageData struct {
	*Doc
	Status int
	Title  string
	Msg    string
}

func (s *Shop) page(d *Doc, status int, name string) *adapter.WebResponse {
	var b bytes.Buffer
	if err := pages.ExecuteTemplate(&b, name, pageData{Doc: d, Status: status}); err != nil {
		b.Reset()
		status = http.StatusInternalServerError
		template.HTMLEscape(&b, []byte("rendering "+name+": "+err.Error()))
	}
	h := http.Header{"Content-Type": {"text/html; charset=utf-8"}, "Cache-Control": {"no-store"}}
	if d.NewSession {
		h.Add("Set-Cookie", cookie(CookieSession, d.Session))
	}
	return &adapter.WebResponse{Status: status, Header: h, Body: b.Bytes()}
}

func (s *Shop) errorPage(d *Doc, status int, msg string) *adapter.WebResponse {
	var b bytes.Buffer
	if err := pages.ExecuteTemplate(&b, "error", pageData{Doc: d, Status: status, Title: http.StatusText(status), Msg: msg}); err != nil {
		b.Reset()
		template.HTMLEscape(&b, []byte(msg))
	}
	h := http.Header{"Content-Type": {"text/html; charset=utf-8"}, "Cache-Control": {"no-store"}}
	if d.NewSession {
		h.Add("Set-Cookie", cookie(CookieSession, d.Session))
	}
	return &adapter.WebResponse{Status: status, Header: h, Body: b.Bytes()}
}
