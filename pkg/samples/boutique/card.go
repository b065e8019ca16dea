package boutique

import (
	"fmt"
	"strings"
	"time"
)

// Card is a validated payment card.
type Card struct {
	Type  string // "VISA", "MasterCard", …
	Last4 string
}

// cardType tells a card's network from its number (prefix and length).
func cardType(n string) string {
	p := func(k int) int {
		v := 0
		for i := 0; i < k && i < len(n); i++ {
			v = v*10 + int(n[i]-'0')
		}
		return v
	}
	switch l := len(n); {
	case n[0] == '4' && (l == 13 || l == 16 || l == 19):
		return "VISA"
	case l == 16 && ((p(2) >= 51 && p(2) <= 55) || (p(4) >= 2221 && p(4) <= 2720)):
		return "MasterCard"
	case l == 15 && (p(2) == 34 || p(2) == 37):
		return "American Express"
	case l == 16 && (p(4) == 6011 || p(2) == 65):
		return "Discover"
	}
	return ""
}

// Luhn reports whether the digit string n passes the Luhn checksum.
func Luhn(n string) bool {
	if n == "" {
		return false
	}
	sum := 0
	double := false
	for i := len(n) - 1; i >= 0; i-- {
		c := n[i]
		if c < '0' || c > '9' {
			return false
		}
		d := int(c - '0')
		if double {
			if d *= 2; d > 9 {
				d -= 9
			}
		}
		sum += d
		double = !double
	}
	return sum%10 == 0
}

// ValidateCard checks a card as the payment service does: digits (spaces
// and dashes allowed between them), a known network, the Luhn checksum,
// an accepted network (VISA or MasterCard), a CVV, and an expiry month not
// in the past.
func ValidateCard(number string, month, year int, cvv string, now time.Time) (Card, error) {
	n := strings.Map(func(r rune) rune {
		if r == ' ' || r == '-' {
			return -1
		}
		return r
	}, number)
	if n == "" {
		return Card{}, fmt.Errorf("The card number is missing.")
	}
	for _, c := range n {
		if c < '0' || c > '9' {
			return Card{}, fmt.Errorf("The card number may only contain digits.")
		}
	}
	if len(n) < 12 || len(n) > 19 {
		return Card{}, fmt.Errorf("A card number has 12 to 19 digits, this one has %d.", len(n))
	}
	if !Luhn(n) {
		return Card{}, fmt.Errorf("The card number is not valid (checksum).")
	}
	t := cardType(n)
	switch t {
	case "VISA", "MasterCard":
	case "":
		return Card{}, fmt.Errorf("The card number belongs to no card network we know.")
	default:
		return Card{}, fmt.Errorf("Sorry, we cannot take %s cards: only VISA or MasterCard.", t)
	}
	if len(cvv) != 3 || strings.Trim(cvv, "0123456789") != "" {
		return Card{}, fmt.Errorf("The CVV is the three digits on the back of the card.")
	}
	if month < 1 || month > 12 {
		return Card{}, fmt.Errorf("The expiry month %d does not exist.", month)
	}
	if year < 1000 || year > 9999 {
		return Card{}, fmt.Errorf("The expiry year %d is not a year.", year)
	}
	if y, m := now.Year(), int(now.Month()); year*12+month < y*12+m {
		return Card{}, fmt.Errorf("The card expired in %02d/%d.", month, year)
	}
	return Card{Type: t, Last4: n[len(n)-4:]}, nil
}
