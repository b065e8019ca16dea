package boutique

import (
	"errors"
	"fmt"
	"math/big"
	"strconv"
	"strings"
)

const nanosPerUnit = 1_000_000_000

// Money is an amount in a currency as whole units plus nanos (billionths),
// with the same sign (Online Boutique's google.type.Money): no floats
// anywhere, so sums and conversions are exact to the nano.
type Money struct {
	Currency string `json:"currency"`
	Units    int64  `json:"units"`
	Nanos    int32  `json:"nanos"`
}

// ErrMoney is returned for malformed amounts and mixed currencies.
var ErrMoney = errors.New("money")

// Valid: nanos within ±999,999,999 and with the sign of units.
func (m Money) Valid() bool {
	if m.Nanos <= -nanosPerUnit || m.Nanos >= nanosPerUnit {
		return false
	}
	return !(m.Units > 0 && m.Nanos < 0) && !(m.Units < 0 && m.Nanos > 0)
}

func (m Money) total() *big.Int {
	t := big.NewInt(m.Units)
	t.Mul(t, big.NewInt(nanosPerUnit))
	return t.Add(t, big.NewInt(int64(m.Nanos)))
}

func fromTotal(cur string, t *big.Int) (Money, error) {
	q, r := new(big.Int).QuoRem(t, big.NewInt(nanosPerUnit), new(big.Int))
	if !q.IsInt64() {
		return Money{}, fmt.Errorf("%w: amount out of range", ErrMoney)
	}
	return Money{Currency: cur, Units: q.Int64(), Nanos: int32(r.Int64())}, nil
}

// Add returns a+b; both must be valid and in the same currency.
func Add(a, b Money) (Money, error) {
	if !a.Valid() || !b.Valid() {
		return Money{}, fmt.Errorf("%w: invalid amount", ErrMoney)
	}
	if a.Currency != b.Currency {
		return Money{}, fmt.Errorf("%w: cannot add %s and %s", ErrMoney, a.Currency, b.Currency)
	}
	return fromTotal(a.Currency, new(big.Int).Add(a.total(), b.total()))
}

// Mul returns m×n.
func Mul(m Money, n int64) (Money, error) {
	if !m.Valid() {
		return Money{}, fmt.Errorf("%w: invalid amount", ErrMoney)
	}
	return fromTotal(m.Currency, new(big.Int).Mul(m.total(), big.NewInt(n)))
}

// Zero is nothing in currency c.
func Zero(c string) Money { return Money{Currency: c} }

// ParseMoney reads "19.99" (at most nine decimals) in currency c.
func ParseMoney(c, s string) (Money, error) {
	neg := strings.HasPrefix(s, "-")
	s = strings.TrimPrefix(s, "-")
	ip, fp, _ := strings.Cut(s, ".")
	if ip == "" || len(fp) > 9 || strings.ContainsAny(ip+fp, "+-") {
		return Money{}, fmt.Errorf("%w: bad amount %q", ErrMoney, s)
	}
	u, err := strconv.ParseInt(ip, 10, 64)
	if err != nil {
		return Money{}, fmt.Errorf("%w: bad amount %q", ErrMoney, s)
	}
	var n int64
	if fp != "" {
		if n, err = strconv.ParseInt((fp + "000000000")[:9], 10, 32); err != nil {
			return Money{}, fmt.Errorf("%w: bad amount %q", ErrMoney, s)
		}
	}
	if neg {
		u, n = -u, -n
	}
	return Money{Currency: c, Units: u, Nanos: int32(n)}, nil
}

// Format renders m for a page: symbol, thousands separators, two decimals
// (none for currencies without minor units), rounded half away from zero.
func (m Money) Format() string {
	t := m.total()
	neg := t.Sign() < 0
	t.Abs(t)
	decimals := 2
	if m.Currency == "JPY" {
		decimals = 0
	}
	step := big.NewInt(nanosPerUnit)
	for i := 0; i < decimals; i++ {
		step.Quo(step, big.NewInt(10))
	}
	// round to the step
	half := new(big.Int).Quo(step, big.NewInt(2))
	t.Add(t, half)
	t.Quo(t, step)
	digits := t.String()
	for len(digits) <= decimals {
		digits = "0" + digits
	}
	ip, fp := digits[:len(digits)-decimals], digits[len(digits)-decimals:]
	var b strings.Builder
	for i, c := range ip {
		if i > 0 && (len(ip)-i)%3 == 0 {
			b.WriteByte(',')
		}
		b.WriteRune(c)
	}
	out := b.String()
	if decimals > 0 {
		out += "." + fp
	}
	sym, ok := currencySymbols[m.Currency]
	if !ok {
		sym = m.Currency + " "
	}
	if neg {
		return "-" + sym + out
	}
	return sym + out
}

var currencySymbols = map[string]string{"USD": "$", "EUR": "€", "CAD": "CA$", "JPY": "¥", "GBP": "£", "TRY": "₺"}

// rate is how many units of a currency one euro buys, in nanos (the rates
// table's own decimal, read without floats).
type rate int64

// Rates: units of each currency per euro, as published in a reference
// table (values of a fixed day, as Online Boutique ships a fixed table).
var ratesTable = map[string]string{
	"EUR": "1.0", "USD": "1.1305", "JPY": "126.40", "BGN": "1.9558", "CZK": "25.592", "DKK": "7.4609",
	"GBP": "0.85970", "HUF": "315.51", "PLN": "4.2996", "RON": "4.7463", "SEK": "10.5375", "CHF": "1.1360",
	"ISK": "136.80", "NOK": "9.8040", "HRK": "7.4210", "RUB": "74.4208", "TRY": "6.1247", "AUD": "1.6072",
	"BRL": "4.2682", "CAD": "1.5128", "CNY": "7.5857", "HKD": "8.8743", "IDR": "15999.40", "ILS": "4.0875",
	"INR": "79.4320", "KRW": "1275.05", "MXN": "21.7999", "MYR": "4.6289", "NZD": "1.6679", "PHP": "59.083",
	"SGD": "1.5349", "THB": "36.012", "ZAR": "16.0583",
}

var rates = func() map[string]rate {
	out := map[string]rate{}
	for c, s := range ratesTable {
		m, err := ParseMoney(c, s)
		if err != nil || m.Units < 0 {
			panic("boutique: bad rate for " + c)
		}
		out[c] = rate(m.Units*nanosPerUnit + int64(m.Nanos))
	}
	return out
}()

// ShopCurrencies are the currencies the frontend offers.
var ShopCurrencies = []string{"EUR", "USD", "JPY", "GBP", "TRY", "CAD"}

// Supported reports whether the rates table knows c.
func Supported(c string) bool { _, ok := rates[c]; return ok }

// Convert changes m into currency to through the euro, exactly: amount ×
// rate(to) / rate(from), rounded half away from zero to the nano.
func Convert(m Money, to string) (Money, error) {
	if !m.Valid() {
		return Money{}, fmt.Errorf("%w: invalid amount", ErrMoney)
	}
	rf, ok := rates[m.Currency]
	if !ok {
		return Money{}, fmt.Errorf("%w: unsupported currency %q", ErrMoney, m.Currency)
	}
	rt, ok := rates[to]
	if !ok {
		return Money{}, fmt.Errorf("%w: unsupported currency %q", ErrMoney, to)
	}
	if m.Currency == to {
		return m, nil
	}
	num := new(big.Int).Mul(m.total(), big.NewInt(int64(rt)))
	den := big.NewInt(int64(rf))
	neg := num.Sign() < 0
	num.Abs(num)
	q, r := new(big.Int).QuoRem(num, den, new(big.Int))
	if r.Mul(r, big.NewInt(2)).Cmp(den) >= 0 {
		q.Add(q, big.NewInt(1))
	}
	if neg {
		q.Neg(q)
	}
	return fromTotal(to, q)
}
