package scenario

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spright-dev/spright/pkg/samples/boutique"
	"github.com/spright-dev/spright/pkg/samples/boutique/shopper"
	"github.com/spright-dev/spright/test/bench/internal/sidecar"
)

func TestBoutiqueShopFns(t *testing.T) {
	fns := boutiqueShopFns("/x/boutique")
	if len(fns) != 10 || fns[0].Name != "frontend" || fns[0].Behavior != "boutique-frontend" {
		t.Fatalf("fns %+v", fns)
	}
	for _, f := range fns {
		if f.Binary != "/x/boutique" || f.Behavior != "boutique-"+f.Name {
			t.Errorf("%+v", f)
		}
	}
}

// TestNginxConfRoot: with a root function every other path goes to it with
// its URI; the /fn/ locations stay exact matches (they win over "/").
func TestNginxConfRoot(t *testing.T) {
	k := &knativePath{dir: "/tmp/k", port: 18000, qpEnv: sidecar.QueueProxyEnv{ServingPort: 8012}, root: "frontend", chains: map[string][]string{}}
	for i, n := range []string{"frontend", "cart"} {
		p := &pod{spec: FnSpec{Name: n}, idx: i, podIP: fmt.Sprintf("10.1.%d.2", i), hostIP: fmt.Sprintf("127.0.%d.1", i+31)}
		k.pods = append(k.pods, p)
	}
	conf := k.nginxConf()
	for _, want := range []string{
		"location / { proxy_set_header Connection \"\"; proxy_pass http://fn_frontend; }",
		"location = /fn/cart { proxy_set_header Connection \"\"; proxy_pass http://fn_cart/; }",
		"upstream fn_frontend { server 10.1.0.2:8012; keepalive 256; }",
	} {
		if !strings.Contains(conf, want) {
			t.Errorf("nginx.conf lacks %q:\n%s", want, conf)
		}
	}
	// Real nginx accepts it (when installed: the Knative path needs it;
	// nginx -t binds the listeners: the host sides are loopback here).
	if bin, err := exec.LookPath("nginx"); err == nil {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		k.port = ln.Addr().(*net.TCPAddr).Port
		ln.Close()
		k.dir = t.TempDir()
		for _, d := range []string{"tmp/body", "tmp/proxy", "tmp/fcgi", "tmp/uwsgi", "tmp/scgi", "logs"} {
			os.MkdirAll(filepath.Join(k.dir, d), 0o755)
		}
		conf := filepath.Join(k.dir, "nginx.conf")
		os.WriteFile(conf, []byte(k.nginxConf()), 0o644)
		if out, err := exec.Command(bin, "-t", "-p", k.dir, "-c", conf).CombinedOutput(); err != nil {
			t.Errorf("nginx -t: %v\n%s", err, out)
		}
	}
	k.root, k.port = "", 18000
	if strings.Contains(k.nginxConf(), "location / ") {
		t.Error("a root location without a root function")
	}
	if k.RootURL() != "http://127.0.0.1:18000/" {
		t.Errorf("root URL %s", k.RootURL())
	}
}

// TestAttachWebProbe: the probe attaches the web adapter once, then wants
// the frontend's health page; a refused attach or a chain that does not
// answer "ok" fails it.
func TestAttachWebProbe(t *testing.T) {
	puts := 0
	attachStatus := http.StatusOK
	admin := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPut || r.URL.Path != "/adapters/http" || r.URL.Query().Get("name") != "web" {
			http.Error(w, "bad attach "+r.Method+" "+r.URL.String(), http.StatusBadRequest)
			return
		}
		puts++
		w.WriteHeader(attachStatus)
		w.Write([]byte(`{"coap":"","http":"web","mqtt":""}`))
	}))
	defer admin.Close()
	health := "ok"
	chain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/_healthz" {
			http.NotFound(w, r)
			return
		}
		w.Write([]byte(health))
	}))
	defer chain.Close()
	addr := strings.TrimPrefix(admin.URL, "http://")
	probe := attachWeb(addr)
	if err := probe(context.Background(), chain.URL+"/"); err != nil {
		t.Fatal(err)
	}
	if err := probe(context.Background(), chain.URL+"/"); err != nil || puts != 1 {
		t.Fatalf("second probe: %v, %d attaches", err, puts)
	}
	health = "CBA"
	if err := probe(context.Background(), chain.URL+"/"); err == nil {
		t.Error("a chain answering something else than the frontend passed")
	}
	attachStatus = http.StatusBadRequest
	if err := attachWeb(addr)(context.Background(), chain.URL+"/"); err == nil {
		t.Error("a refused attach passed")
	}
}

// TestBoutiqueShopThroughNginx runs the Knative path's front end as the
// scenario builds it — real nginx with the generated configuration — in
// front of the shop's services (plain handlers on loopback "pod IPs",
// without queue-proxies or namespaces), and shops through it for two
// seconds: every path reaches the frontend with its URI, cookies and
// redirects pass, the frontend reaches each service at /fn/<service>.
func TestBoutiqueShopThroughNginx(t *testing.T) {
	bin, err := exec.LookPath("nginx")
	if err != nil {
		t.Skip("needs nginx (Debian package nginx)")
	}
	free := func() int {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		return ln.Addr().(*net.TCPAddr).Port
	}
	k := &knativePath{dir: t.TempDir(), port: free(), qpEnv: sidecar.QueueProxyEnv{ServingPort: free()}, root: "frontend", chains: map[string][]string{}}
	front := fmt.Sprintf("http://127.0.0.1:%d", k.port)
	for i, f := range boutiqueShopFns("") {
		p := &pod{spec: f, idx: i, podIP: fmt.Sprintf("127.0.%d.2", 40+i), hostIP: fmt.Sprintf("127.0.%d.1", 40+i)}
		k.pods = append(k.pods, p)
		var h http.Handler
		if f.Name == boutique.SvcFrontend {
			urls := map[string]string{}
			for _, s := range boutique.Services[1:] {
				urls[s] = front + "/fn/" + s
			}
			h = boutique.NewShop().FrontendHandler(boutique.HTTPCaller(&http.Client{Timeout: 10 * time.Second}, urls))
		} else if h, err = boutique.NewShop().ServiceHandler(f.Name); err != nil {
			t.Fatal(err)
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("%s:%d", p.podIP, k.qpEnv.ServingPort))
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: h}
		go srv.Serve(ln)
		t.Cleanup(func() { srv.Close() })
	}
	for _, d := range []string{"tmp/body", "tmp/proxy", "tmp/fcgi", "tmp/uwsgi", "tmp/scgi", "logs"} {
		os.MkdirAll(filepath.Join(k.dir, d), 0o755)
	}
	conf := filepath.Join(k.dir, "nginx.conf")
	os.WriteFile(conf, []byte(k.nginxConf()), 0o644)
	cmd := exec.Command(bin, "-p", k.dir, "-c", conf)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Signal(syscall.SIGQUIT); cmd.Wait() })
	if err := waitTCP(context.Background(), fmt.Sprintf("127.0.0.1:%d", k.port), 10*time.Second, nil); err != nil {
		t.Fatal(err)
	}
	rep, err := shopper.Run(context.Background(), shopper.Config{BaseURL: strings.TrimSuffix(k.RootURL(), "/"), Users: 4,
		Duration: 2 * time.Second, SpawnOver: 100 * time.Millisecond, ThinkMax: 5 * time.Millisecond, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("\n%s", rep)
	if tot := rep.Total(); tot.Errors != 0 || tot.Count < 20 {
		t.Fatalf("%d tasks, %d failed; first: %s", tot.Count, tot.Errors, tot.FirstError)
	}
}
