// Package envtest starts a real etcd and kube-apiserver on loopback for
// integration tests, with RBAC authorization and the default admission plugins.
//
// kube-apiserver and kubectl are built from the k8s.io/kubernetes Go module
// (KubernetesVersion) by hack/build-kube-apiserver.sh; etcd is Debian's
// etcd-server. When the binaries are missing, Start skips the test with the
// command to run, unless SPRIGHT_ENVTEST_REQUIRED=1 (CI), where it fails.
//
// What runs is only etcd and kube-apiserver: there is no controller manager,
// scheduler or kubelet. So a namespace has no "default" ServiceAccount (Pod
// creation is refused by the ServiceAccount admission plugin; workloads such
// as Deployments are accepted), deleted namespaces stay Terminating, and
// nothing reconciles Deployments into Pods; the aggregated ClusterRoles
// (admin, edit, view) have no rules, since the controller manager fills them.
//
//	env := envtest.Start(t)            // t.Cleanup stops it
//	env.InstallKnativeServingCRDs(t)
//	env.Apply(t, "testdata/x.yaml")
//	env.DryRunServer(t, "config/100-namespace.yaml")
//	dyn := dynamic.NewForConfigOrDie(env.Config)
package envtest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/rest"
	sigsyaml "sigs.k8s.io/yaml"
)

// KubernetesVersion is the k8s.io/kubernetes version that
// hack/tools/kube-apiserver/go.mod pins (a test checks they agree).
const KubernetesVersion = "v1.36.3"

// AdminUser is the user of Env.Config and Env.Kubeconfig (client
// certificate, group system:masters: RBAC allows it everything).
const AdminUser = "spright-envtest-admin"

// BuildCommand is what builds the binaries Start needs.
const BuildCommand = "hack/build-kube-apiserver.sh"

// Env is a running etcd + kube-apiserver.
type Env struct {
	// Config is an admin *rest.Config (client certificate, system:masters).
	Config *rest.Config
	// Kubeconfig is the path of a kubeconfig file for the same admin user.
	Kubeconfig string
	// URL is the apiserver's https://127.0.0.1:port.
	URL string
	// EtcdURL is etcd's http://127.0.0.1:port.
	EtcdURL string
	// Dir holds certificates, logs and etcd's data; removed on Stop.
	Dir string
	// Kubectl is the kubectl binary used by Apply and DryRunServer.
	Kubectl string
	// Binaries are the executables that run.
	Binaries Binaries
	// StartupTime is how long Launch took until /readyz answered ok.
	StartupTime time.Duration

	etcd, apiserver *exec.Cmd
	etcdDone        chan error
	apiDone         chan error
	removeDir       bool
	stopOnce        sync.Once
	stopErr         error
}

// Binaries are the executables an Env runs.
type Binaries struct {
	KubeAPIServer, Kubectl, Etcd string
}

// BinDir is where hack/build-kube-apiserver.sh puts kube-apiserver and
// kubectl: $SPRIGHT_ENVTEST_DIR, else
// ${XDG_CACHE_HOME:-$HOME/.cache}/spright/envtest/<KubernetesVersion>.
func BinDir() string {
	if d := os.Getenv("SPRIGHT_ENVTEST_DIR"); d != "" {
		return d
	}
	cache, err := os.UserCacheDir()
	if err != nil {
		cache = filepath.Join(os.TempDir(), "cache")
	}
	return filepath.Join(cache, "spright", "envtest", KubernetesVersion)
}

// ErrNotBuilt is returned (wrapped) by FindBinaries when a binary is missing.
var ErrNotBuilt = errors.New("envtest binaries not found")

// FindBinaries locates kube-apiserver and kubectl in BinDir and etcd in
// BinDir or on $PATH (Debian's etcd-server installs /usr/bin/etcd).
func FindBinaries() (Binaries, error) {
	dir := BinDir()
	b := Binaries{
		KubeAPIServer: filepath.Join(dir, "kube-apiserver"),
		Kubectl:       filepath.Join(dir, "kubectl"),
		Etcd:          filepath.Join(dir, "etcd"),
	}
	var missing []string
	for _, p := range []string{b.KubeAPIServer, b.Kubectl} {
		if !isExecutable(p) {
			missing = append(missing, p)
		}
	}
	if !isExecutable(b.Etcd) {
		if p, err := exec.LookPath("etcd"); err == nil {
			b.Etcd = p
		} else {
			missing = append(missing, "etcd (Debian: apt-get install etcd-server)")
		}
	}
	if len(missing) > 0 {
		return b, fmt.Errorf("%w: %s; run %s from the repository root", ErrNotBuilt, strings.Join(missing, ", "), BuildCommand)
	}
	return b, nil
}

func isExecutable(p string) bool {
	fi, err := os.Stat(p)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// Start launches an Env for a test and stops it in t.Cleanup. It skips the
// test when the binaries are not built (fails instead when
// SPRIGHT_ENVTEST_REQUIRED=1).
func Start(t testing.TB) *Env {
	t.Helper()
	bins, err := FindBinaries()
	if err != nil {
		if os.Getenv("SPRIGHT_ENVTEST_REQUIRED") == "1" {
			t.Fatalf("envtest: %v", err)
		}
		t.Skipf("envtest: %v", err)
	}
	dir := t.TempDir() // registered before Stop, so removed after it
	env, err := Launch(bins, dir)
	if err != nil {
		t.Fatalf("envtest: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			env.dumpLogs(t)
		}
		if err := env.Stop(); err != nil {
			t.Logf("envtest: stop: %v", err)
		}
	})
	t.Logf("envtest: kube-apiserver %s at %s (etcd %s) ready in %s; kubeconfig %s",
		KubernetesVersion, env.URL, bins.Etcd, env.StartupTime.Round(time.Millisecond), env.Kubeconfig)
	return env
}

// Launch starts etcd and kube-apiserver with their files in dir (a new
// temporary directory, removed by Stop, when dir is ""), and waits until the
// apiserver's /readyz is ok. For sharing one Env across a package's tests
// (TestMain); call Stop when done.
func Launch(bins Binaries, dir string) (*Env, error) {
	begin := time.Now()
	e := &Env{Kubectl: bins.Kubectl, Binaries: bins}
	if dir == "" {
		d, err := os.MkdirTemp("", "spright-envtest-")
		if err != nil {
			return nil, err
		}
		dir, e.removeDir = d, true
	}
	e.Dir = dir
	fail := func(err error) (*Env, error) {
		logs := e.logTails()
		e.Stop()
		return nil, fmt.Errorf("%w%s", err, logs)
	}

	certDir := filepath.Join(dir, "pki")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return fail(err)
	}
	p, err := newPKI(certDir)
	if err != nil {
		return fail(fmt.Errorf("certificates: %w", err))
	}

	// Free ports are found by binding :0 and closing; another process may take
	// one in between, so a failed start is retried on new ports.
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		if lastErr = e.startEtcd(bins.Etcd); lastErr == nil {
			break
		}
		e.stopProc(e.etcd, e.etcdDone)
		e.etcd = nil
	}
	if lastErr != nil {
		return fail(lastErr)
	}
	for attempt := 0; attempt < 3; attempt++ {
		if lastErr = e.startAPIServer(bins.KubeAPIServer, p); lastErr == nil {
			break
		}
		if !errors.Is(lastErr, errPortInUse) {
			break
		}
		e.stopProc(e.apiserver, e.apiDone)
		e.apiserver = nil
	}
	if lastErr != nil {
		return fail(lastErr)
	}

	e.Config = &rest.Config{
		Host: e.URL,
		TLSClientConfig: rest.TLSClientConfig{
			CAData:   p.caPEM,
			CertData: p.adminCertPEM,
			KeyData:  p.adminKeyPEM,
		},
		QPS:   100,
		Burst: 200,
	}
	e.Kubeconfig = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(e.Kubeconfig, []byte(kubeconfig(e.URL, p)), 0o600); err != nil {
		return fail(err)
	}
	e.StartupTime = time.Since(begin)
	return e, nil
}

var errPortInUse = errors.New("port in use")

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

func (e *Env) startEtcd(bin string) error {
	clientPort, err := freePort()
	if err != nil {
		return err
	}
	peerPort, err := freePort()
	if err != nil {
		return err
	}
	data := filepath.Join(e.Dir, "etcd")
	if err := os.RemoveAll(data); err != nil {
		return err
	}
	e.EtcdURL = "http://127.0.0.1:" + strconv.Itoa(clientPort)
	peer := "http://127.0.0.1:" + strconv.Itoa(peerPort)
	args := []string{
		"--name=envtest",
		"--data-dir=" + data,
		"--listen-client-urls=" + e.EtcdURL,
		"--advertise-client-urls=" + e.EtcdURL,
		"--listen-peer-urls=" + peer,
		"--initial-advertise-peer-urls=" + peer,
		"--initial-cluster=envtest=" + peer,
		"--initial-cluster-state=new",
		"--logger=zap",
		"--log-level=warn",
	}
	cmd, done, err := e.spawn(bin, args, filepath.Join(e.Dir, "etcd.log"))
	if err != nil {
		return err
	}
	e.etcd, e.etcdDone = cmd, done
	// etcd is ready when /health says so.
	deadline := time.Now().Add(30 * time.Second)
	client := &http.Client{Timeout: 2 * time.Second}
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			done <- err
			return fmt.Errorf("etcd exited: %v", err)
		default:
		}
		resp, err := client.Get(e.EtcdURL + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	return fmt.Errorf("etcd at %s not healthy after 30s", e.EtcdURL)
}

func (e *Env) startAPIServer(bin string, p *pki) error {
	port, err := freePort()
	if err != nil {
		return err
	}
	e.URL = "https://127.0.0.1:" + strconv.Itoa(port)
	args := []string{
		"--etcd-servers=" + e.EtcdURL,
		"--bind-address=127.0.0.1",
		"--advertise-address=127.0.0.1",
		"--secure-port=" + strconv.Itoa(port),
		"--cert-dir=" + filepath.Join(e.Dir, "pki"),
		"--tls-cert-file=" + p.servingCert,
		"--tls-private-key-file=" + p.servingKey,
		"--client-ca-file=" + p.caCert,
		"--service-account-issuer=https://kubernetes.default.svc.cluster.local",
		"--service-account-key-file=" + p.saKey,
		"--service-account-signing-key-file=" + p.saKey,
		"--service-cluster-ip-range=10.0.0.0/24",
		"--authorization-mode=RBAC",
		"--allow-privileged=true",
		// 127.0.0.1 may not be an Endpoints address: without this the
		// apiserver logs a failed sync of the "kubernetes" Service every 10 s.
		"--endpoint-reconciler-type=none",
		"--profiling=false",
		"--v=1",
	}
	cmd, done, err := e.spawn(bin, args, filepath.Join(e.Dir, "kube-apiserver.log"))
	if err != nil {
		return err
	}
	e.apiserver, e.apiDone = cmd, done

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(p.caPEM)
	cert, err := tls.X509KeyPair(p.adminCertPEM, p.adminKeyPEM)
	if err != nil {
		return err
	}
	client := &http.Client{
		Timeout:   5 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, Certificates: []tls.Certificate{cert}}},
	}
	defer client.CloseIdleConnections()
	timeout := 120 * time.Second // two contended cores: normally a few seconds
	deadline := time.Now().Add(timeout)
	last := ""
	for time.Now().Before(deadline) {
		select {
		case err := <-done:
			done <- err
			if log, _ := os.ReadFile(filepath.Join(e.Dir, "kube-apiserver.log")); bytes.Contains(log, []byte("address already in use")) {
				return fmt.Errorf("kube-apiserver on port %d: %w", port, errPortInUse)
			}
			return fmt.Errorf("kube-apiserver exited: %v", err)
		default:
		}
		resp, err := client.Get(e.URL + "/readyz")
		if err == nil {
			body := make([]byte, 4096)
			n, _ := resp.Body.Read(body)
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
			last = fmt.Sprintf("%d %s", resp.StatusCode, body[:n])
		} else {
			last = err.Error()
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("kube-apiserver at %s not ready after %s; last /readyz: %s", e.URL, timeout, last)
}

// spawn starts bin with its output in logPath; done receives Wait's result
// (and is refilled by readers that only peek).
func (e *Env) spawn(bin string, args []string, logPath string) (*exec.Cmd, chan error, error) {
	log, err := os.OpenFile(logPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = sysProcAttr()
	if err := cmd.Start(); err != nil {
		log.Close()
		return nil, nil, err
	}
	done := make(chan error, 1)
	go func() {
		err := cmd.Wait()
		log.Close()
		done <- err
	}()
	return cmd, done, nil
}

func (e *Env) stopProc(cmd *exec.Cmd, done chan error) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-done:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

// Stop stops kube-apiserver, then etcd, and removes Dir if Launch made it.
// Safe to call more than once.
func (e *Env) Stop() error {
	e.stopOnce.Do(func() {
		e.stopProc(e.apiserver, e.apiDone)
		e.stopProc(e.etcd, e.etcdDone)
		if e.removeDir {
			e.stopErr = os.RemoveAll(e.Dir)
		}
	})
	return e.stopErr
}

func tail(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

func (e *Env) logTails() string {
	var b strings.Builder
	for _, name := range []string{"etcd.log", "kube-apiserver.log"} {
		if s := tail(filepath.Join(e.Dir, name), 30); s != "" {
			fmt.Fprintf(&b, "\n--- last lines of %s ---\n%s", name, s)
		}
	}
	return b.String()
}

func (e *Env) dumpLogs(t testing.TB) {
	if s := e.logTails(); s != "" {
		t.Logf("envtest logs:%s", s)
	}
}

func kubeconfig(server string, p *pki) string {
	b64 := base64.StdEncoding.EncodeToString
	return fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: envtest
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: %s
  user:
    client-certificate-data: %s
    client-key-data: %s
contexts:
- name: envtest
  context:
    cluster: envtest
    user: %s
current-context: envtest
`, server, b64(p.caPEM), AdminUser, b64(p.adminCertPEM), b64(p.adminKeyPEM), AdminUser)
}

// ConfigFor returns a copy of the admin Config that impersonates user (and
// groups), so a test can check what RBAC allows, e.g. a controller's
// ServiceAccount: ConfigFor("system:serviceaccount:ns:name",
// "system:serviceaccounts", "system:serviceaccounts:ns").
func (e *Env) ConfigFor(user string, groups ...string) *rest.Config {
	c := rest.CopyConfig(e.Config)
	c.Impersonate = rest.ImpersonationConfig{UserName: user, Groups: append([]string{"system:authenticated"}, groups...)}
	return c
}

// RunKubectl runs kubectl against the Env (its own discovery cache) and
// returns the combined output.
func (e *Env) RunKubectl(ctx context.Context, args ...string) (string, error) {
	full := append([]string{"--kubeconfig=" + e.Kubeconfig, "--cache-dir=" + filepath.Join(e.Dir, "kubectl-cache")}, args...)
	cmd := exec.CommandContext(ctx, e.Kubectl, full...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+e.Kubeconfig)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// KubectlT runs kubectl against the Env and fails the test on error;
// returns its output.
func (e *Env) KubectlT(t testing.TB, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := e.RunKubectl(ctx, args...)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// Apply applies YAML files or directories (server-side apply, field manager
// spright-envtest) and fails the test on error.
func (e *Env) Apply(t testing.TB, files ...string) {
	t.Helper()
	if len(files) == 0 {
		t.Fatal("envtest: Apply needs at least one file")
	}
	args := []string{"apply", "--server-side", "--force-conflicts", "--field-manager=spright-envtest"}
	for _, f := range files {
		args = append(args, "-f", f)
	}
	e.KubectlT(t, args...)
}

// ApplyYAML applies a YAML document given as a string.
func (e *Env) ApplyYAML(t testing.TB, yaml string) {
	t.Helper()
	f, err := os.CreateTemp(e.Dir, "apply-*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(yaml); err != nil {
		t.Fatal(err)
	}
	f.Close()
	e.Apply(t, f.Name())
}

// DryRun runs `kubectl apply --dry-run=server -f file` and returns its
// output and error, nothing more (for tests that expect a rejection).
func (e *Env) DryRun(file string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return e.RunKubectl(ctx, "apply", "--dry-run=server", "-f", file)
}

// DryRunServer runs `kubectl apply --dry-run=server -f file` (a file or a
// directory, as kubectl reads it) and fails the test if the apiserver rejects
// anything. Returns kubectl's output.
//
// A server dry run persists nothing, so objects in a Namespace that the same
// file (or directory) declares would fail with NotFound. DryRunServer
// therefore first applies, for real, the v1 Namespaces that file declares;
// every other object is only dry-run. Namespaces that are used but declared
// nowhere still fail, as they would in a cluster.
func (e *Env) DryRunServer(t testing.TB, file string) string {
	t.Helper()
	nss, err := namespaceDocs(file)
	if err != nil {
		t.Fatalf("envtest: %v", err)
	}
	if len(nss) > 0 {
		e.ApplyYAML(t, strings.Join(nss, "\n---\n"))
	}
	out, err := e.DryRun(file)
	if err != nil {
		t.Fatalf("envtest: %v", err)
	}
	return out
}

// namespaceDocs returns, as YAML, the apiVersion v1 kind Namespace documents
// in file, or in the *.yaml, *.yml and *.json files of a directory (not
// recursive, as kubectl -f dir).
func namespaceDocs(file string) ([]string, error) {
	fi, err := os.Stat(file)
	if err != nil {
		return nil, err
	}
	files := []string{file}
	if fi.IsDir() {
		files = nil
		entries, err := os.ReadDir(file)
		if err != nil {
			return nil, err
		}
		for _, ent := range entries {
			switch filepath.Ext(ent.Name()) {
			case ".yaml", ".yml", ".json":
				if !ent.IsDir() {
					files = append(files, filepath.Join(file, ent.Name()))
				}
			}
		}
	}
	var docs []string
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			return nil, err
		}
		dec := k8syaml.NewYAMLOrJSONDecoder(bytes.NewReader(b), 4096)
		for {
			var obj map[string]any
			if err := dec.Decode(&obj); err != nil {
				if errors.Is(err, io.EOF) {
					break
				}
				return nil, fmt.Errorf("%s: %w", f, err)
			}
			if obj["apiVersion"] == "v1" && obj["kind"] == "Namespace" {
				y, err := sigsyaml.Marshal(obj)
				if err != nil {
					return nil, err
				}
				docs = append(docs, string(y))
			}
		}
	}
	return docs, nil
}

// KnativeServingCRDDir returns config/core/300-resources of the
// knative.dev/serving module this repository requires (from the module
// cache, downloading it if needed).
func KnativeServingCRDDir() (string, error) {
	modDir, err := ModuleDir("knative.dev/serving")
	if err != nil {
		return "", err
	}
	dir := filepath.Join(modDir, "config", "core", "300-resources")
	if _, err := os.Stat(dir); err != nil {
		return "", err
	}
	return dir, nil
}

// ModuleDir returns the module cache directory of a module the root go.mod
// requires (downloading it if needed).
func ModuleDir(module string) (string, error) {
	gobin := "go"
	if p, err := exec.LookPath("go"); err == nil {
		gobin = p
	} else if p := filepath.Join(runtime.GOROOT(), "bin", "go"); isExecutable(p) {
		gobin = p
	}
	modDir := ""
	out, err := exec.Command(gobin, "list", "-m", "-f", "{{.Dir}}", module).Output()
	if err == nil {
		modDir = strings.TrimSpace(string(out))
	}
	if modDir == "" {
		out, err := exec.Command(gobin, "mod", "download", "-json", module).Output()
		if err != nil {
			return "", fmt.Errorf("go mod download %s: %v", module, err)
		}
		for _, line := range strings.Split(string(out), "\n") {
			if k, v, ok := strings.Cut(strings.TrimSpace(line), ":"); ok && k == `"Dir"` {
				modDir = strings.Trim(strings.TrimSpace(v), `",`)
			}
		}
	}
	if modDir == "" {
		return "", fmt.Errorf("cannot locate %s in the module cache", module)
	}
	return modDir, nil
}

// InstallKnativeIngressCRD applies the KIngress CRD
// (ingresses.networking.internal.knative.dev) from the knative.dev/networking
// module Knative Serving ships with, and waits until it is Established.
func (e *Env) InstallKnativeIngressCRD(t testing.TB) {
	t.Helper()
	modDir, err := ModuleDir("knative.dev/networking")
	if err != nil {
		t.Fatalf("envtest: %v", err)
	}
	e.Apply(t, filepath.Join(modDir, "config", "ingress.yaml"))
	e.KubectlT(t, "wait", "--for=condition=Established", "--timeout=60s", "crd/ingresses.networking.internal.knative.dev")
}

// InstallKnativeServingCRDs applies knative.dev/serving's
// config/core/300-resources and waits until the CRDs are Established.
func (e *Env) InstallKnativeServingCRDs(t testing.TB) {
	t.Helper()
	dir, err := KnativeServingCRDDir()
	if err != nil {
		t.Fatalf("envtest: %v", err)
	}
	e.Apply(t, dir)
	e.KubectlT(t, "wait", "--for=condition=Established", "--timeout=60s", "crd", "-l", "knative.dev/crd-install=true")
}
