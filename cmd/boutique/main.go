// Command boutique runs Online Boutique's services as plain HTTP services
// (the Knative baseline's form: the same code the SPRIGHT functions run,
// pkg/samples/boutique) and drives a shop like Online Boutique's Locust
// load generator.
//
//	boutique service NAME [--listen ADDR]        one service (POST the document)
//	boutique frontend [--listen ADDR] --upstream productcatalog=URL,cart=URL,...
//	boutique all [--listen ADDR]                 every service on its own loopback port, the frontend on ADDR
//	boutique load --url URL [--users N] [--duration D] [--think 1s-10s] [--seed N]
//	boutique --listen ADDR --behavior boutique-SERVICE [--service-time D] [--front URL]
//
// The last form takes test/fixtures/httpfn's command line, so the bench's
// Knative path runs the shop's services in its pods in place of httpfn:
// GET /healthz is the readiness endpoint, and the frontend calls each
// service at FRONT/fn/SERVICE (the bench's nginx front end, which forwards
// to that service's queue-proxy).
//
// --listen defaults to :$PORT (Knative's contract), else 127.0.0.1:8080.
// Upstreams may also come from BOUTIQUE_<SERVICE>_URL variables.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/spright-dev/spright/pkg/samples"
	"github.com/spright-dev/spright/pkg/samples/boutique"
	"github.com/spright-dev/spright/pkg/samples/boutique/shopper"
)

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if strings.HasPrefix(os.Args[1], "-") {
		if err := pod(ctx, os.Args[1:]); err != nil {
			fmt.Fprintln(os.Stderr, "boutique:", err)
			os.Exit(1)
		}
		return
	}
	switch os.Args[1] {
	case "service":
		err = service(ctx, os.Args[2:])
	case "frontend":
		err = frontend(ctx, os.Args[2:])
	case "all":
		err = all(ctx, os.Args[2:])
	case "load":
		err = load(ctx, os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "boutique:", err)
		os.Exit(1)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, `usage:
  boutique service NAME [--listen ADDR]     (NAME: `+strings.Join(boutique.Services[1:], ", ")+`)
  boutique frontend [--listen ADDR] --upstream productcatalog=URL,cart=URL,...
  boutique all [--listen ADDR]
  boutique load --url URL [--users N] [--duration D] [--think MIN-MAX] [--seed N]`)
	os.Exit(2)
}

func defaultListen() string {
	if p := os.Getenv("PORT"); p != "" {
		return ":" + p
	}
	return "127.0.0.1:8080"
}

func serve(ctx context.Context, ln net.Listener, h http.Handler) error {
	srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second, IdleTimeout: 120 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != http.ErrServerClosed {
		return err
	}
	return nil
}

func listenAndServe(ctx context.Context, addr string, h http.Handler) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "boutique: serving on %s\n", ln.Addr())
	return serve(ctx, ln, h)
}

func service(ctx context.Context, args []string) error {
	if len(args) < 1 || strings.HasPrefix(args[0], "-") {
		usage()
	}
	name := args[0]
	fs := flag.NewFlagSet("service", flag.ExitOnError)
	listen := fs.String("listen", defaultListen(), "address")
	fs.Parse(args[1:])
	h, err := boutique.NewShop().ServiceHandler(name)
	if err != nil {
		return err
	}
	return listenAndServe(ctx, *listen, h)
}

func frontend(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("frontend", flag.ExitOnError)
	listen := fs.String("listen", defaultListen(), "address")
	up := fs.String("upstream", "", "service=URL,... (or BOUTIQUE_<SERVICE>_URL)")
	fs.Parse(args)
	urls := map[string]string{}
	for _, svc := range boutique.Services[1:] {
		if v := os.Getenv("BOUTIQUE_" + strings.ToUpper(svc) + "_URL"); v != "" {
			urls[svc] = v
		}
	}
	for _, kv := range strings.Split(*up, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			urls[strings.TrimSpace(k)] = strings.TrimSpace(v)
		}
	}
	for _, svc := range boutique.Services[1:] {
		if urls[svc] == "" {
			return fmt.Errorf("no URL for the %s service (--upstream %s=URL or BOUTIQUE_%s_URL)", svc, svc, strings.ToUpper(svc))
		}
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	return listenAndServe(ctx, *listen, boutique.NewShop().FrontendHandler(boutique.HTTPCaller(client, urls)))
}

func all(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("all", flag.ExitOnError)
	listen := fs.String("listen", defaultListen(), "the frontend's address")
	fs.Parse(args)
	urls := map[string]string{}
	errs := make(chan error, len(boutique.Services))
	for _, svc := range boutique.Services[1:] {
		h, err := boutique.NewShop().ServiceHandler(svc)
		if err != nil {
			return err
		}
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		urls[svc] = "http://" + ln.Addr().String() + "/"
		fmt.Fprintf(os.Stderr, "boutique: %s on %s\n", svc, ln.Addr())
		go func() { errs <- serve(ctx, ln, h) }()
	}
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
	go func() {
		errs <- listenAndServe(ctx, *listen, boutique.NewShop().FrontendHandler(boutique.HTTPCaller(client, urls)))
	}()
	return <-errs
}

// pod serves one service with httpfn's command line (see the package doc).
func pod(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("boutique", flag.ExitOnError)
	listen := fs.String("listen", defaultListen(), "address")
	behavior := fs.String("behavior", "", "boutique-SERVICE")
	st := fs.Duration("service-time", 0, "CPU to burn per request before the service's work")
	front := fs.String("front", "", "the front end the frontend reaches services through (FRONT/fn/SERVICE)")
	fs.Parse(args)
	h, err := podHandler(*behavior, *st, *front)
	if err != nil {
		return err
	}
	return listenAndServe(ctx, *listen, h)
}

// podHandler is the handler pod serves.
func podHandler(behavior string, st time.Duration, front string) (http.Handler, error) {
	svc, ok := strings.CutPrefix(behavior, "boutique-")
	if !ok {
		return nil, fmt.Errorf("--behavior %q: want boutique-SERVICE (SERVICE: %s)", behavior, strings.Join(boutique.Services, ", "))
	}
	var h http.Handler
	if svc == boutique.SvcFrontend {
		if front == "" {
			return nil, fmt.Errorf("the frontend needs --front URL")
		}
		urls := map[string]string{}
		for _, s := range boutique.Services[1:] {
			urls[s] = strings.TrimSuffix(front, "/") + "/fn/" + s
		}
		client := &http.Client{Timeout: 60 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 256}}
		h = boutique.NewShop().FrontendHandler(boutique.HTTPCaller(client, urls))
	} else {
		var err error
		if h, err = boutique.NewShop().ServiceHandler(svc); err != nil {
			return nil, err
		}
	}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { w.Write([]byte("ok")) })
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		samples.Burn(st)
		h.ServeHTTP(w, r)
	}))
	return mux, nil
}

func load(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("load", flag.ExitOnError)
	u := fs.String("url", "http://127.0.0.1:8080", "the shop")
	users := fs.Int("users", 10, "concurrent users")
	dur := fs.Duration("duration", 30*time.Second, "how long")
	think := fs.String("think", "1s-10s", "think time between tasks, MIN-MAX")
	seed := fs.Int64("seed", 1, "random seed")
	fs.Parse(args)
	lo, hi, ok := strings.Cut(*think, "-")
	if !ok {
		hi = lo
	}
	tmin, err := time.ParseDuration(lo)
	if err != nil {
		return fmt.Errorf("--think: %w", err)
	}
	tmax, err := time.ParseDuration(hi)
	if err != nil {
		return fmt.Errorf("--think: %w", err)
	}
	rep, err := shopper.Run(ctx, shopper.Config{BaseURL: *u, Users: *users, Duration: *dur, ThinkMin: tmin, ThinkMax: tmax, Seed: *seed})
	if err != nil {
		return err
	}
	fmt.Print(rep)
	if rep.Total().Errors > 0 {
		return fmt.Errorf("%d of %d answers failed their checks", rep.Total().Errors, rep.Total().Count)
	}
	return nil
}
