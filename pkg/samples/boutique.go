package samples

import (
	"time"

	"github.com/spright-dev/spright/pkg/function"
	"github.com/spright-dev/spright/pkg/samples/boutique"
)

// The real Online Boutique's services (config/samples/boutique), one
// behaviour each: "boutique-frontend", "boutique-cart", …. Each process
// gets its own shop state (the cart service's carts live in its memory). A
// service time, if set, is burned before the service's own work.
func init() {
	for _, svc := range boutique.Services {
		behaviors["boutique-"+svc] = boutiqueBehavior(svc)
	}
}

func boutiqueBehavior(svc string) Behavior {
	return func(st time.Duration) function.Handler {
		h, err := boutique.NewShop().Handler(svc)
		if err != nil {
			panic(err) // svc comes from boutique.Services
		}
		return function.HandlerFunc(func(m *function.Message) error {
			if err := zeroCopy(m); err != nil {
				return err
			}
			Burn(st)
			return h.Handle(m)
		})
	}
}
