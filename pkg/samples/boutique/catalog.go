package boutique

import "strings"

// Product is one item of the catalogue.
type Product struct {
	ID          string   `json:"id"`
	Name        string   `json:"name"`
	Description string   `json:"description"`
	Picture     string   `json:"picture"`
	Price       Money    `json:"price"` // in USD from the catalogue; the currency service converts it
	Categories  []string `json:"categories"`
}

func usd(s string) Money {
	m, err := ParseMoney("USD", s)
	if err != nil {
		panic(err)
	}
	return m
}

// products is the catalogue (the product IDs, names, prices and categories
// are those of the public Online Boutique's catalogue; descriptions and
// pictures are ours).
var products = []Product{
	{ID: "OLJCESPC7Z", Name: "Sunglasses", Description: "Round dark lenses in a light frame: shade for the summer, style for the rest of the year.",
		Picture: "/static/img/sunglasses.svg", Price: usd("19.99"), Categories: []string{"accessories"}},
	{ID: "66VCHSJNUP", Name: "Tank Top", Description: "A loose cotton tank top in cherry red, cut for warm afternoons.",
		Picture: "/static/img/tank-top.svg", Price: usd("18.99"), Categories: []string{"clothing", "tops"}},
	{ID: "1YMWWN1N4O", Name: "Watch", Description: "A brass-cased analogue watch on a leather strap. It tells the time and nothing else.",
		Picture: "/static/img/watch.svg", Price: usd("109.99"), Categories: []string{"accessories"}},
	{ID: "L9ECAV7KIM", Name: "Loafers", Description: "Brown leather loafers with a soft sole, for the office and the weekend alike.",
		Picture: "/static/img/loafers.svg", Price: usd("89.99"), Categories: []string{"footwear"}},
	{ID: "2ZYFJ3GM2N", Name: "Hairdryer", Description: "A compact pink hairdryer with two heat settings and a cool-shot button.",
		Picture: "/static/img/hairdryer.svg", Price: usd("24.99"), Categories: []string{"hair", "beauty"}},
	{ID: "0PUK6V6EV0", Name: "Candle Holder", Description: "A brass stand with a glass shade that keeps the flame steady in a draught.",
		Picture: "/static/img/candle-holder.svg", Price: usd("18.99"), Categories: []string{"decor", "home"}},
	{ID: "LS4PSXUNUM", Name: "Salt & Pepper Shakers", Description: "A black and a white shaker that belong together on every table.",
		Picture: "/static/img/salt-pepper.svg", Price: usd("18.49"), Categories: []string{"kitchen"}},
	{ID: "9SIQT8TOJO", Name: "Bamboo Glass Jar", Description: "A glass jar with a bamboo lid that closes tight, for coffee, tea or biscuits.",
		Picture: "/static/img/bamboo-jar.svg", Price: usd("5.49"), Categories: []string{"kitchen"}},
	{ID: "6E92ZMYYFZ", Name: "Mug", Description: "A big blue mug that holds a proper amount of tea.",
		Picture: "/static/img/mug.svg", Price: usd("8.99"), Categories: []string{"kitchen"}},
}

// Products returns a copy of the catalogue.
func Products() []Product {
	out := make([]Product, len(products))
	for i, p := range products {
		p.Categories = append([]string(nil), p.Categories...)
		out[i] = p
	}
	return out
}

// LookupProduct finds a product by ID.
func LookupProduct(id string) (Product, bool) {
	for _, p := range products {
		if p.ID == id {
			p.Categories = append([]string(nil), p.Categories...)
			return p, true
		}
	}
	return Product{}, false
}

// SearchProducts returns the products whose name or description contains q
// (case-insensitive).
func SearchProducts(q string) []Product {
	q = strings.ToLower(q)
	var out []Product
	for _, p := range Products() {
		if strings.Contains(strings.ToLower(p.Name), q) || strings.Contains(strings.ToLower(p.Description), q) {
			out = append(out, p)
		}
	}
	return out
}

// Ad is a banner pointing at a product.
type Ad struct {
	RedirectURL string `json:"redirectUrl"`
	Text        string `json:"text"`
}

// adsByCategory: the ad service's table.
var adsByCategory = map[string][]Ad{
	"accessories": {{"/product/1YMWWN1N4O", "Watch for sale. Buy one, get a second kit for free."}},
	"clothing":    {{"/product/66VCHSJNUP", "Tank top for sale. 20% off."}},
	"footwear":    {{"/product/L9ECAV7KIM", "Loafers for sale. Buy one, get the second one for half price."}},
	"hair":        {{"/product/2ZYFJ3GM2N", "Hairdryer for sale. 50% off."}},
	"decor":       {{"/product/0PUK6V6EV0", "Candle holder for sale. 30% off."}},
	"kitchen":     {{"/product/9SIQT8TOJO", "Bamboo glass jar for sale. 10% off."}, {"/product/6E92ZMYYFZ", "Mug for sale. Buy two, get the third one for free."}},
}

var adCategories = []string{"accessories", "clothing", "footwear", "hair", "decor", "kitchen"}
