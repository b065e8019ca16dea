package shopper

import (
	"context"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/spright-dev/spright/pkg/samples/boutique"
)

func run(t *testing.T, s *boutique.Shop, users int) *Report {
	t.Helper()
	srv := httptest.NewServer(s.FrontendHandler(boutique.LocalCaller(s)))
	defer srv.Close()
	var mu sync.Mutex
	observed, observedErrs := 0, 0
	rep, err := Run(context.Background(), Config{BaseURL: srv.URL, Users: users, Duration: 2 * time.Second,
		SpawnOver: 100 * time.Millisecond, ThinkMin: 0, ThinkMax: 2 * time.Millisecond, Seed: 1,
		Observe: func(action string, start time.Time, d time.Duration, err error) {
			mu.Lock()
			defer mu.Unlock()
			observed++
			if err != nil {
				observedErrs++
			}
		}})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", rep)
	if observed != rep.Total().Count || observedErrs != rep.Total().Errors {
		t.Errorf("observed %d tasks (%d failed), the report counts %d (%d)", observed, observedErrs, rep.Total().Count, rep.Total().Errors)
	}
	return rep
}

// TestShopperAgainstShop: every task runs, every answer checks out.
func TestShopperAgainstShop(t *testing.T) {
	rep := run(t, boutique.NewShop(), 8)
	if tot := rep.Total(); tot.Errors != 0 {
		t.Fatalf("%d errors; first: %s", tot.Errors, tot.FirstError)
	}
	for _, task := range Tasks {
		if r := rep.Get(task.Name); r == nil || r.Count == 0 {
			t.Errorf("task %s never ran", task.Name)
		}
	}
	// The weights show: browseProduct (10) runs more than checkout (1).
	if rep.Get("browseProduct").Count < 3*rep.Get("checkout").Count {
		t.Errorf("browseProduct %d vs checkout %d: weights not applied", rep.Get("browseProduct").Count, rep.Get("checkout").Count)
	}
}

// TestShopperCatchesAForgetfulCart: a cart service that keeps one cart for
// the whole shop loses the users' carts, and the driver says so although
// every status is 200.
func TestShopperCatchesAForgetfulCart(t *testing.T) {
	s := boutique.NewShop()
	s.Carts = boutique.NewCartStore(1)
	rep := run(t, s, 8)
	if rep.Total().Errors == 0 {
		t.Fatal("a shop that forgets carts passed every check")
	}
}
