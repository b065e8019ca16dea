package boutique

import (
	"encoding/json"
	"fmt"
	"net/http"
)

// Actions: one per user action, each one itinerary (the paper's chains).
const (
	ActIndex       = "index"
	ActSetCurrency = "setCurrency"
	ActBrowse      = "browseProduct"
	ActAddToCart   = "addToCart"
	ActViewCart    = "viewCart"
	ActEmptyCart   = "emptyCart"
	ActCheckout    = "checkout"
)

// Service names (the chain's function names).
const (
	SvcFrontend       = "frontend"
	SvcCatalog        = "productcatalog"
	SvcCurrency       = "currency"
	SvcCart           = "cart"
	SvcRecommendation = "recommendation"
	SvcAd             = "ad"
	SvcShipping       = "shipping"
	SvcPayment        = "payment"
	SvcEmail          = "email"
	SvcCheckout       = "checkout"
)

// Services lists every service, frontend first.
var Services = []string{SvcFrontend, SvcCatalog, SvcCurrency, SvcCart, SvcRecommendation, SvcAd, SvcShipping, SvcPayment, SvcEmail, SvcCheckout}

// Itineraries: after the frontend has read the request and chosen the
// action (the topic), these services are visited in order; the last one is
// the frontend again, which renders the page. A service that appears twice
// does the second part of its job on its second visit (it tells by the
// document's state: checkout totals once the prices are in, shipping ships
// and cart empties once the payment went through).
var Itineraries = map[string][]string{
	ActIndex:       {SvcCatalog, SvcCart, SvcCurrency, SvcAd, SvcFrontend},
	ActSetCurrency: {SvcCurrency, SvcFrontend},
	ActBrowse:      {SvcCatalog, SvcRecommendation, SvcCart, SvcCurrency, SvcAd, SvcFrontend},
	ActAddToCart:   {SvcCatalog, SvcCart, SvcFrontend},
	ActViewCart:    {SvcCart, SvcCatalog, SvcRecommendation, SvcShipping, SvcCurrency, SvcFrontend},
	ActEmptyCart:   {SvcCart, SvcFrontend},
	ActCheckout: {SvcCheckout, SvcCart, SvcCatalog, SvcShipping, SvcCurrency, SvcCheckout, SvcPayment,
		SvcShipping, SvcCart, SvcEmail, SvcRecommendation, SvcFrontend},
}

// Doc is the document a request carries along its itinerary: the frontend
// writes what the user asked, each service reads what it needs and adds its
// part, the frontend renders the page from it. It travels as JSON in the
// chain's slot (through SPRIGHT) or as an HTTP body (the plain services).
type Doc struct {
	Action   string `json:"action"`
	Session  string `json:"session"`
	Currency string `json:"currency"` // the user's currency
	// NewSession: the session was made for this request (the page sets
	// the session cookie).
	NewSession bool `json:"newSession,omitempty"`

	// Request parameters.
	ProductID   string        `json:"productId,omitempty"`
	Quantity    int           `json:"quantity,omitempty"`
	NewCurrency string        `json:"newCurrency,omitempty"`
	Form        *CheckoutForm `json:"form,omitempty"`
	Back        string        `json:"back,omitempty"` // where a redirect goes

	// Filled in along the itinerary.
	Products        []Product  `json:"products,omitempty"`        // productcatalog (converted by currency)
	Product         *Product   `json:"product,omitempty"`         // productcatalog: the product asked for
	Cart            []CartLine `json:"cart,omitempty"`            // cart
	CartLoaded      bool       `json:"cartLoaded,omitempty"`      // cart
	Items           []Item     `json:"items,omitempty"`           // productcatalog: the cart's lines with products
	Recommendations []string   `json:"recommendations,omitempty"` // recommendation: product IDs
	Ad              *Ad        `json:"ad,omitempty"`              // ad
	Shipping        *Money     `json:"shipping,omitempty"`        // shipping quote (converted by currency)
	Subtotal        *Money     `json:"subtotal,omitempty"`        // currency, after converting the items
	Currencies      []string   `json:"currencies,omitempty"`      // currency
	Order           *Order     `json:"order,omitempty"`           // checkout, payment, shipping, email

	Trace []string   `json:"trace,omitempty"` // services visited, in order
	Error *PageError `json:"error,omitempty"` // the first failure: later services skip
}

// CartLine is one product in a cart.
type CartLine struct {
	ProductID string `json:"productId"`
	Quantity  int    `json:"quantity"`
}

// Item is a cart line with its product and line price.
type Item struct {
	Product  Product `json:"product"`
	Quantity int     `json:"quantity"`
	Cost     Money   `json:"cost"` // price × quantity
}

// CheckoutForm is what the checkout page posts.
type CheckoutForm struct {
	Email      string `json:"email"`
	Street     string `json:"street"`
	City       string `json:"city"`
	State      string `json:"state"`
	Country    string `json:"country"`
	ZipCode    string `json:"zipCode"`
	CardNumber string `json:"cardNumber"`
	CardMonth  int    `json:"cardMonth"`
	CardYear   int    `json:"cardYear"`
	CardCVV    string `json:"cardCvv"`
}

// Order is a placed order.
type Order struct {
	ID            string `json:"id"`
	Total         *Money `json:"total,omitempty"`
	TransactionID string `json:"transactionId,omitempty"`
	CardType      string `json:"cardType,omitempty"`
	CardLast4     string `json:"cardLast4,omitempty"`
	Paid          bool   `json:"paid,omitempty"`
	TrackingID    string `json:"trackingId,omitempty"`
	Shipped       bool   `json:"shipped,omitempty"`
	CartEmptied   bool   `json:"cartEmptied,omitempty"`
	Items         []Item `json:"items,omitempty"`
	Shipping      *Money `json:"shipping,omitempty"`
	EmailTo       string `json:"emailTo,omitempty"`
	EmailSubject  string `json:"emailSubject,omitempty"`
	EmailBody     string `json:"emailBody,omitempty"`
}

// PageError is a failure the user sees on the page.
type PageError struct {
	Status  int    `json:"status"`
	Message string `json:"message"`
	Service string `json:"service"`
}

func (d *Doc) fail(svc string, status int, format string, a ...any) {
	if d.Error == nil {
		d.Error = &PageError{Status: status, Message: fmt.Sprintf(format, a...), Service: svc}
	}
}

// MaxDoc bounds a document's encoded size.
const MaxDoc = 1 << 20

// DecodeDoc parses a document.
func DecodeDoc(p []byte) (*Doc, error) {
	if len(p) > MaxDoc {
		return nil, &StatusError{http.StatusRequestEntityTooLarge, fmt.Sprintf("document of %d bytes", len(p))}
	}
	var d Doc
	if err := json.Unmarshal(p, &d); err != nil {
		return nil, &StatusError{http.StatusBadRequest, "document: " + err.Error()}
	}
	return &d, nil
}

// StatusError is an error with an HTTP status.
type StatusError struct {
	Status int
	Msg    string
}

func (e *StatusError) Error() string { return fmt.Sprintf("%d %s", e.Status, e.Msg) }
