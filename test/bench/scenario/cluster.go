package scenario

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/spright-dev/spright/test/bench/internal/benchutil"
)

func init() {
	register(&Scenario{
		Name: "cluster",
		Title: "The hello chain and one plain service on the real one-node Kubernetes + Knative Serving 1.15 " +
			"(hack/cluster-up.sh): stock Knative vs SPRIGHT, queue-proxy vs EPROXY, whole-node CPU",
		Run: runCluster,
	})
}

const (
	// clusterIngress is where the node takes external traffic: the
	// SPRIGHT gateway's hostPort 80 on the node's address
	// (hack/cluster-lib.sh CLUSTER_NODE_IP).
	clusterIngress = "10.222.0.1:80"
	// benchNS is the scenario's own namespace (test/cluster uses default).
	benchNS = "spright-bench"
	// sprightIngressClass is the SPRIGHT gateway's KIngress class.
	sprightIngressClass = "spright.ingress.networking.knative.dev"
	// knativeCoreYAML is what hack/knative-install.sh applied: it holds
	// the stock queue-proxy image.
	knativeCoreYAML = "/var/lib/spright-cluster/knative-serving-core.yaml"
	// benchChain and benchChainSDK are the SPRIGHT chains' names.
	benchChain    = "bench-hello"
	benchChainSDK = "bench-hello-sdk"
	// SysSDK is the SPRIGHT chain of Go SDK functions (spright.dev/sdk).
	SysSDK = "spright-sdk"
)

// The annotations every measured revision gets (kn --annotation-revision).
var clusterRevisionAnnotations = []string{
	// One pod, always: the autoscaler does not change what is measured.
	"autoscaling.knative.dev/min-scale=1",
	"autoscaling.knative.dev/max-scale=1",
	// The activator stays out of the path once the pod is up (the
	// ServerlessService in Serve mode): the ingress sends to the pod.
	"autoscaling.knative.dev/target-burst-capacity=0",
}

// benchService is one Knative Service of the scenario (httpfn, or a Go SDK
// function when SDK).
type benchService struct {
	Name string
	// Behavior is httpfn's --behavior ("" for none).
	Behavior string
	// Args are more container arguments.
	Args []string
	// SDK: the image is cmd/spright (`spright function ...` in Args).
	SDK bool
	// Annotations go on the Service and its revisions (kn --annotation).
	Annotations []string
}

// knCreateArgs is the `kn service create` command line of s.
func knCreateArgs(ns, image string, s benchService) []string {
	args := []string{"service", "create", s.Name, "-n", ns, "--image", image}
	if s.Behavior != "" {
		args = append(args, "--arg=--behavior="+s.Behavior)
	}
	for _, a := range s.Args {
		args = append(args, "--arg="+a)
	}
	for _, a := range clusterRevisionAnnotations {
		args = append(args, "--annotation-revision", a)
	}
	for _, a := range s.Annotations {
		args = append(args, "--annotation", a)
	}
	return append(args, "--wait-timeout", "300")
}

// clusterSystem is one system measured on the cluster.
type clusterSystem struct {
	Name     string // SysKnative, SysSkmsg, SysSDK, SysQueueProxy, SysEProxy
	Sidecar  string // the queue sidecar its revisions need: SysQueueProxy or SysEProxy
	Services []benchService
	// Entry is the service whose host the requests carry ("" for a chain:
	// the chain's host).
	Entry string
	// Headers are more request headers (the stock chain's itinerary).
	Headers map[string]string
	// Chain is the SPRIGHT chain's name, if any.
	Chain string
	// Answer is what the system answers to a body.
	Answer func([]byte) []byte
}

func echoAnswer(b []byte) []byte { return append([]byte(nil), b...) }

// helloAnswer is upper then reverse.
func helloAnswer(b []byte) []byte {
	out := bytes.ToUpper(b)
	slices.Reverse(out)
	return out
}

// clusterSystems are the four systems; hostSuffix is ".<ns>.<domain>" of
// Knative's external hosts (the stock chain's hop Host suffix).
func clusterSystems(hostSuffix string) []clusterSystem {
	return []clusterSystem{
		{Name: SysKnative, Sidecar: SysQueueProxy, Entry: "bench-kn-upper", Answer: helloAnswer,
			Headers: map[string]string{"X-Chain-Next": "bench-kn-reverse"},
			Services: []benchService{
				{Name: "bench-kn-reverse", Behavior: "reverse"},
				{Name: "bench-kn-upper", Behavior: "upper",
					Args: []string{"--front=http://" + clusterIngress, "--front-host-suffix=" + hostSuffix}},
			}},
		{Name: SysQueueProxy, Sidecar: SysQueueProxy, Entry: "bench-plain-qp", Answer: echoAnswer,
			Services: []benchService{{Name: "bench-plain-qp", Behavior: "echo"}}},
		{Name: SysSkmsg, Sidecar: SysEProxy, Chain: benchChain, Answer: helloAnswer,
			Services: []benchService{
				{Name: "bench-sp-upper", Behavior: "upper", Annotations: []string{
					"spright.dev/chain=" + benchChain, "spright.dev/entry=true", "spright.dev/routes=*=bench-sp-reverse"}},
				{Name: "bench-sp-reverse", Behavior: "reverse", Annotations: []string{"spright.dev/chain=" + benchChain}},
			}},
		{Name: SysSDK, Sidecar: SysEProxy, Chain: benchChainSDK, Answer: helloAnswer,
			Services: []benchService{
				{Name: "bench-sdk-upper", SDK: true, Args: []string{"function", "--behavior=upper"}, Annotations: []string{
					"spright.dev/chain=" + benchChainSDK, "spright.dev/entry=true", "spright.dev/routes=*=bench-sdk-reverse", "spright.dev/sdk=true"}},
				{Name: "bench-sdk-reverse", SDK: true, Args: []string{"function", "--behavior=reverse"}, Annotations: []string{
					"spright.dev/chain=" + benchChainSDK, "spright.dev/sdk=true"}},
			}},
		{Name: SysEProxy, Sidecar: SysEProxy, Entry: "bench-plain-ep", Answer: echoAnswer,
			Services: []benchService{{Name: "bench-plain-ep", Behavior: "echo"}}},
	}
}

// clusterEnv is the cluster as a user sees it after hack/cluster-up.sh.
type clusterEnv struct {
	e                *Env
	f                *File
	root             string
	vars             []string
	kubectl, kn, ko  string
	started          bool
	queueImage       map[string]string // sidecar class → image
	httpfnImage      string
	sdkImage         string // cmd/spright
	origQueueImage   string
	lastQueueImage   string // what this run last set ("" before it set any)
	domain           string // config-spright's domain ("" when unset)
	sprightInstalled bool   // by this run
}

// parseClusterExports turns cluster-up's printed exports into environment
// entries appended to base ($PATH expanded from base).
func parseClusterExports(stdout string, base []string) []string {
	path := ""
	for _, kv := range base {
		if v, ok := strings.CutPrefix(kv, "PATH="); ok {
			path = v
		}
	}
	vars := append([]string(nil), base...)
	for _, line := range strings.Split(stdout, "\n") {
		line = strings.TrimSpace(line)
		rest, ok := strings.CutPrefix(line, "export ")
		if !ok {
			continue
		}
		for _, kv := range strings.Fields(rest) {
			if k, v, ok := strings.Cut(kv, "="); ok {
				v = strings.ReplaceAll(v, "$PATH", path)
				vars = append(vars, k+"="+v)
				if k == "PATH" {
					path = v
				}
			}
		}
	}
	return vars
}

// stockQueueImageRE finds queue-sidecar-image in Knative's config-deployment.
var stockQueueImageRE = regexp.MustCompile(`(?m)^\s*queue-sidecar-image:\s*"?([^"\s]+)`)

// stockQueueImage is the queue-proxy image of Knative's own install YAML.
func stockQueueImage(yaml []byte) string {
	if m := stockQueueImageRE.FindSubmatch(yaml); m != nil {
		return string(m[1])
	}
	return ""
}

// imageDigest is the @sha256:... part of an image reference ("" if none).
func imageDigest(ref string) string {
	if _, d, ok := strings.Cut(ref, "@"); ok {
		return d
	}
	return ""
}

// run runs a command in the module root with the cluster's environment.
func (c *clusterEnv) run(ctx context.Context, timeout time.Duration, name string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = c.root
	cmd.Env = c.vars
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("%s %s: %v\n%s%s", filepath.Base(name), strings.Join(args, " "), err,
			stdout.String(), lastLines(stderr.String(), 20))
	}
	return stdout.String(), nil
}

func lastLines(s string, n int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > n {
		l = l[len(l)-n:]
	}
	return strings.Join(l, "\n")
}

func (c *clusterEnv) kube(ctx context.Context, args ...string) (string, error) {
	return c.run(ctx, 3*time.Minute, c.kubectl, args...)
}

// pods lists the pods of a namespace ("" for all).
func (c *clusterEnv) pods(ctx context.Context, ns string) (*kubePods, error) {
	args := []string{"get", "pods", "-o", "json"}
	if ns == "" {
		args = append(args, "-A")
	} else {
		args = append(args, "-n", ns)
	}
	out, err := c.kube(ctx, args...)
	if err != nil {
		return nil, err
	}
	return parseKubePods([]byte(out))
}

// clusterUp runs hack/cluster-up.sh (a no-op when the cluster is up) and
// finds the commands a user has.
func clusterUp(ctx context.Context, e *Env, f *File) (*clusterEnv, error) {
	root := e.Opts.Root
	c := &clusterEnv{e: e, f: f, root: root, queueImage: map[string]string{}}
	e.Logf("cluster: hack/cluster-up.sh (a no-op when the cluster is up; ~13 min cold)")
	up := exec.CommandContext(ctx, filepath.Join(root, "hack/cluster-up.sh"))
	up.Dir = root
	var stdout, stderr bytes.Buffer
	up.Stdout, up.Stderr = &stdout, &stderr
	start := time.Now()
	if err := up.Run(); err != nil {
		return nil, fmt.Errorf("hack/cluster-up.sh: %v\n%s", err, lastLines(stderr.String(), 40))
	}
	c.started = !strings.Contains(stderr.String(), "already up")
	e.Logf("cluster: %s in %v", map[bool]string{true: "brought up", false: "already up"}[c.started], time.Since(start).Round(time.Second))
	c.vars = parseClusterExports(stdout.String(), os.Environ())
	for _, t := range []struct {
		script string
		dst    *string
		bin    string
	}{{"hack/build-kube-apiserver.sh", &c.kubectl, "kubectl"}, {"hack/ko-resolve.sh", &c.ko, "ko"}} {
		out, err := exec.CommandContext(ctx, filepath.Join(root, t.script), "--print-dir").Output()
		if err != nil {
			return c, fmt.Errorf("%s --print-dir: %w", t.script, err)
		}
		*t.dst = filepath.Join(strings.TrimSpace(string(out)), t.bin)
	}
	// The real kn v1.15 (../shared/tools/README.md), else kn on PATH.
	c.kn = filepath.Join(root, "..", "shared", "tools", "kn")
	if _, err := os.Stat(c.kn); err != nil {
		if c.kn, err = exec.LookPath("kn"); err != nil {
			return c, errors.New("kn: not at ../shared/tools/kn nor on PATH")
		}
	}
	return c, nil
}

// clusterDown takes down a cluster this run brought up only when
// SPRIGHT_CLUSTER_DOWN is set: the cluster is shared (test/cluster, the
// conformance suite, people) and someone may have started using it while
// the benchmark ran, so by default it stays up (make cluster-down).
func (c *clusterEnv) clusterDown() {
	if !c.started {
		return
	}
	if os.Getenv("SPRIGHT_CLUSTER_DOWN") == "" {
		c.f.Notes = append(c.f.Notes, "the cluster was brought up by this run (hack/cluster-up.sh) and left up: "+
			"make cluster-down removes it (SPRIGHT_CLUSTER_DOWN=1 makes the scenario do it)")
		return
	}
	c.e.Logf("cluster: hack/cluster-down.sh (this run brought it up, SPRIGHT_CLUSTER_DOWN is set)")
	if out, err := exec.Command(filepath.Join(c.root, "hack/cluster-down.sh")).CombinedOutput(); err != nil {
		c.f.Problems = append(c.f.Problems, fmt.Sprintf("cluster-down: %v\n%s", err, lastLines(string(out), 20)))
	}
}

// ensureSpright installs SPRIGHT as docs/knative.md says when it is
// missing, and checks that the SPRIGHT gateway is Knative's ingress.
func (c *clusterEnv) ensureSpright(ctx context.Context) error {
	if _, err := c.kube(ctx, "get", "-n", "spright-system", "deployment/spright-controller",
		"deployment/spright-webhook", "daemonset/spright-gateway", "-o", "name"); err != nil {
		c.e.Logf("cluster: SPRIGHT is not installed: ko apply -f config/")
		if _, err := c.run(ctx, 15*time.Minute, c.ko, "apply", "-f", "config/"); err != nil {
			return err
		}
		c.sprightInstalled = true
	}
	for _, r := range []string{"deployment/spright-controller", "deployment/spright-webhook", "daemonset/spright-gateway"} {
		if _, err := c.run(ctx, 4*time.Minute, c.kubectl, "rollout", "status", "-n", "spright-system", r, "--timeout=180s"); err != nil {
			return err
		}
	}
	cls, err := c.kube(ctx, "get", "configmap/config-network", "-n", "knative-serving", "-o", "jsonpath={.data.ingress-class}")
	if err != nil {
		return err
	}
	if strings.TrimSpace(cls) != sprightIngressClass {
		// No other ingress can run on this machine (issue 11): without it
		// no Knative Service is reachable at all.
		if _, err := c.kube(ctx, "patch", "configmap/config-network", "-n", "knative-serving", "--type", "merge",
			"-p", fmt.Sprintf(`{"data":{"ingress-class":%q}}`, sprightIngressClass)); err != nil {
			return err
		}
		c.f.Notes = append(c.f.Notes, fmt.Sprintf("config-network's ingress-class was %q: set to %s (docs/knative.md, "+
			"SPRIGHT as the ingress) and left so", strings.TrimSpace(cls), sprightIngressClass))
	}
	if c.sprightInstalled {
		// docs/knative.md "SPRIGHT as the ingress": the chains' KIngress of
		// SPRIGHT's class, and (as test/cluster does) Knative's domain, so
		// that the chain has an external host.
		dom, err := c.knativeDomain(ctx)
		if err != nil {
			return err
		}
		if _, err := c.kube(ctx, "patch", "configmap/config-spright", "-n", "spright-system", "--type", "merge",
			"-p", fmt.Sprintf(`{"data":{"ingress-class":%q,"domain":%q}}`, sprightIngressClass, dom)); err != nil {
			return err
		}
		c.f.Notes = append(c.f.Notes, fmt.Sprintf("SPRIGHT was not installed on the cluster: this run installed it as docs/knative.md says "+
			"(ko apply -f config/; config-spright ingress-class %s, domain %s) and left it installed", sprightIngressClass, dom))
	}
	out, err := c.kube(ctx, "get", "configmap/config-spright", "-n", "spright-system",
		"-o", `jsonpath={.data.domain}{"\n"}{.data.ingress-class}`)
	if err != nil {
		return err
	}
	domain, class, _ := strings.Cut(out, "\n")
	if strings.TrimSpace(class) == sprightIngressClass {
		c.domain = strings.TrimSpace(domain)
	}
	return nil
}

// knativeDomain is Knative's default domain (config-domain's one key
// without a selector; Knative's own default, svc.cluster.local, is not
// external) — example.com on the cluster of hack/cluster-up.sh.
func (c *clusterEnv) knativeDomain(ctx context.Context) (string, error) {
	out, err := c.kube(ctx, "get", "configmap/config-domain", "-n", "knative-serving", "-o", "json")
	if err != nil {
		return "", err
	}
	return parseKnativeDomain([]byte(out))
}

func parseKnativeDomain(b []byte) (string, error) {
	var cm struct {
		Data map[string]string `json:"data"`
	}
	if err := json.Unmarshal(b, &cm); err != nil {
		return "", fmt.Errorf("config-domain: %w", err)
	}
	var doms []string
	for k, v := range cm.Data {
		if k != "_example" && strings.TrimSpace(v) == "" {
			doms = append(doms, k)
		}
	}
	if len(doms) != 1 {
		return "", fmt.Errorf("config-domain: want one domain without a selector, have %q", doms)
	}
	return doms[0], nil
}

// chainHost is the Host that reaches a SPRIGHT chain through the ingress:
// its own KIngress host when config-spright has a domain of the SPRIGHT
// class, else the chain Service's cluster name (the gateway's chain lookup).
func chainHost(chain, ns, domain string) string {
	if domain != "" {
		return chain + "." + ns + "." + domain
	}
	return chain + "-chain." + ns + ".svc.cluster.local"
}

// images builds what the scenario runs from this tree (ko, into the
// cluster's registry) and finds the stock queue-proxy.
func (c *clusterEnv) images(ctx context.Context) error {
	build := func(pkg string) (string, error) {
		c.e.Logf("cluster: ko build %s", pkg)
		out, err := c.run(ctx, 15*time.Minute, c.ko, "build", "--sbom=none", pkg)
		return strings.TrimSpace(out), err
	}
	var err error
	if c.httpfnImage, err = build("./test/fixtures/httpfn"); err != nil {
		return err
	}
	if c.sdkImage, err = build("./cmd/spright"); err != nil {
		return err
	}
	if c.queueImage[SysEProxy], err = build("./cmd/eproxy"); err != nil {
		return err
	}
	gw, err := build("./cmd/gateway")
	if err != nil {
		return err
	}
	installed, err := c.kube(ctx, "get", "daemonset/spright-gateway", "-n", "spright-system",
		"-o", "jsonpath={.spec.template.spec.containers[0].image}")
	if err != nil {
		return err
	}
	installed = strings.TrimSpace(installed)
	if d := imageDigest(installed); d == "" || d != imageDigest(gw) {
		c.f.Notes = append(c.f.Notes, fmt.Sprintf("the installed spright-gateway (%s) is not this tree's build (%s): "+
			"SPRIGHT was installed from another revision; the figures are that gateway's", installed, gw))
	}
	orig, err := c.kube(ctx, "get", "configmap/config-deployment", "-n", "knative-serving", "-o", "jsonpath={.data.queue-sidecar-image}")
	if err != nil {
		return err
	}
	c.origQueueImage = strings.TrimSpace(orig)
	b, _ := os.ReadFile(knativeCoreYAML)
	stock := stockQueueImage(b)
	if stock == "" && c.origQueueImage != "" && sidecarClass(c.origQueueImage) == SysQueueProxy {
		stock = c.origQueueImage
	}
	if stock == "" {
		return fmt.Errorf("no stock queue-proxy image: not in %s, and config-deployment has %q", knativeCoreYAML, c.origQueueImage)
	}
	c.queueImage[SysQueueProxy] = stock
	c.f.Settings["images"] = map[string]string{"httpfn": c.httpfnImage, "spright (SDK functions)": c.sdkImage, "eproxy": c.queueImage[SysEProxy],
		"queue-proxy": stock, "gateway (installed)": installed, "queue-sidecar-image before the run": c.origQueueImage}
	return nil
}

// setQueueImage makes img config-deployment's queue-sidecar-image and
// waits for the revisions to settle (Knative rolls every revision's pods
// onto the new sidecar).
func (c *clusterEnv) setQueueImage(ctx context.Context, img string) error {
	cur, err := c.kube(ctx, "get", "configmap/config-deployment", "-n", "knative-serving", "-o", "jsonpath={.data.queue-sidecar-image}")
	if err != nil {
		return err
	}
	if strings.TrimSpace(cur) != img {
		c.e.Logf("cluster: queue-sidecar-image := %s", img)
		if _, err := c.kube(ctx, "patch", "configmap/config-deployment", "-n", "knative-serving", "--type", "merge",
			"-p", fmt.Sprintf(`{"data":{"queue-sidecar-image":%q}}`, img)); err != nil {
			return err
		}
		c.lastQueueImage = img
		// The controller reconciles the revisions' Deployments after the
		// change: give it a moment before looking for a settled cluster.
		if err := sleepCtx(ctx, 5*time.Second); err != nil {
			return err
		}
	}
	return c.waitSettled(ctx, img, 5*time.Minute)
}

// unsettled says why the cluster is not settled for a measurement ("" when
// it is): a pod of the bench namespace not Ready, terminating, or on
// another queue sidecar than img; a system pod not Ready or terminating.
// foreign is set when the only reason is another namespace's revision pod
// terminating or not Ready (a rollout of someone else's service).
func unsettled(pods *kubePods, img string) (reason string, foreign bool) {
	system := map[string]bool{"kube-system": true, "knative-serving": true, "spright-system": true}
	why := func(p kubePod) string {
		m := p.Metadata
		switch {
		case m.DeletionTimestamp != nil:
			return fmt.Sprintf("pod %s/%s terminating", m.Namespace, m.Name)
		case p.Status.Phase == "Succeeded":
		case !p.ready():
			return fmt.Sprintf("pod %s/%s not Ready (%s)", m.Namespace, m.Name, p.Status.Phase)
		case m.Namespace == benchNS && img != "" && p.image("queue-proxy") != img:
			return fmt.Sprintf("pod %s/%s has queue sidecar %s, want %s", m.Namespace, m.Name, p.image("queue-proxy"), img)
		}
		return ""
	}
	for _, p := range pods.Items {
		if ns := p.Metadata.Namespace; ns == benchNS || system[ns] {
			if r := why(p); r != "" {
				return r, false
			}
		}
	}
	for _, p := range pods.Items {
		_, revision := p.Metadata.Labels["serving.knative.dev/revision"]
		if ns := p.Metadata.Namespace; revision && ns != benchNS && !system[ns] {
			if r := why(p); r != "" {
				return r, true
			}
		}
	}
	return "", false
}

// waitSettled waits up to d for unsettled to find nothing; when only
// another namespace's revision is still rolling at the end, it goes on
// with a note.
func (c *clusterEnv) waitSettled(ctx context.Context, img string, d time.Duration) error {
	deadline := time.Now().Add(d)
	for {
		var last string
		foreign := false
		pods, err := c.pods(ctx, "")
		if err == nil {
			if last, foreign = unsettled(pods, img); last == "" {
				return nil
			}
		} else {
			last = err.Error()
		}
		if time.Now().After(deadline) {
			if foreign {
				c.f.Notes = append(c.f.Notes, fmt.Sprintf("measured while another namespace's revision was not settled %v after a change: %s", d, last))
				return nil
			}
			return fmt.Errorf("cluster not settled after %v: %s", d, last)
		}
		if err := sleepCtx(ctx, 2*time.Second); err != nil {
			return err
		}
	}
}

// deleteServices deletes the scenario's services (by name) and waits for
// their pods to go.
func (c *clusterEnv) deleteServices(ctx context.Context, names []string) error {
	if len(names) == 0 {
		return nil
	}
	args := append([]string{"service", "delete", "-n", benchNS}, names...)
	if _, err := c.run(ctx, 4*time.Minute, c.kn, append(args, "--wait")...); err != nil {
		return err
	}
	deadline := time.Now().Add(3 * time.Minute)
	for {
		out, err := c.kube(ctx, "get", "pods", "-n", benchNS, "-o", "name")
		if err == nil && strings.TrimSpace(out) == "" {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("pods of %s still there 3 min after kn service delete: %s", benchNS, out)
		}
		if err := sleepCtx(ctx, 2*time.Second); err != nil {
			return err
		}
	}
}

// leftovers are the bench- services of an interrupted run.
func (c *clusterEnv) leftovers(ctx context.Context) []string {
	out, err := c.kube(ctx, "get", "ksvc", "-n", benchNS, "-o", `jsonpath={range .items[*]}{.metadata.name}{"\n"}{end}`)
	if err != nil {
		return nil
	}
	var names []string
	for _, n := range strings.Fields(out) {
		if strings.HasPrefix(n, "bench-") {
			names = append(names, n)
		}
	}
	return names
}

// clusterClient sends requests to the ingress with a Host header.
var clusterClient = &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

// ask POSTs body to the ingress with host and headers; it returns an
// error unless the answer is 200 with want.
func askCluster(ctx context.Context, host string, headers map[string]string, body, want []byte) error {
	return askURL(ctx, "http://"+clusterIngress+"/", host, headers, body, want)
}

// askURL POSTs body to url (with Host host unless empty) and checks that
// the answer is 200 and want.
func askURL(ctx context.Context, url, host string, headers map[string]string, body, want []byte) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return err
	}
	if host != "" {
		req.Host = host
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := clusterClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || !bytes.Equal(got, want) {
		return fmt.Errorf("POST %d bytes to %s (host %q): %d %.60q..., want 200 and %.60q...", len(body), url, host, resp.StatusCode, got, want)
	}
	return nil
}

// deployed is a system up on the cluster.
type deployed struct {
	sys       clusterSystem
	host      string
	revisions []string
	restarts  int
}

// deploy creates the system's services with kn and waits until each has
// one Ready pod on the wanted queue sidecar, its chain (if any) is Ready
// and the answer through the ingress is right.
func (c *clusterEnv) deploy(ctx context.Context, s clusterSystem) (*deployed, error) {
	d := &deployed{sys: s}
	for _, svc := range s.Services {
		c.e.Logf("cluster: kn service create %s", svc.Name)
		img := c.httpfnImage
		if svc.SDK {
			img = c.sdkImage
		}
		if _, err := c.run(ctx, 6*time.Minute, c.kn, knCreateArgs(benchNS, img, svc)...); err != nil {
			return d, err
		}
		rev, err := c.kube(ctx, "get", "ksvc", svc.Name, "-n", benchNS, "-o", "jsonpath={.status.latestReadyRevisionName}")
		if err != nil {
			return d, err
		}
		d.revisions = append(d.revisions, strings.TrimSpace(rev))
	}
	if s.Chain != "" {
		d.host = chainHost(s.Chain, benchNS, c.domain)
		if err := c.waitFor(ctx, 3*time.Minute, "chain "+s.Chain+" Ready", func() (bool, string) {
			out, err := c.kube(ctx, "get", "chain", s.Chain, "-n", benchNS, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
			return err == nil && strings.TrimSpace(out) == "True", out
		}); err != nil {
			return d, err
		}
	} else {
		u, err := c.kube(ctx, "get", "ksvc", s.Entry, "-n", benchNS, "-o", "jsonpath={.status.url}")
		if err != nil {
			return d, err
		}
		pu, err := url.Parse(strings.TrimSpace(u))
		if err != nil || pu.Host == "" {
			return d, fmt.Errorf("ksvc %s: URL %q", s.Entry, u)
		}
		d.host = pu.Host
	}
	if err := c.waitSettled(ctx, c.queueImage[s.Sidecar], 3*time.Minute); err != nil {
		return d, err
	}
	// One pod per revision (min = max = 1).
	pods, err := c.pods(ctx, benchNS)
	if err != nil {
		return d, err
	}
	perRev := map[string]int{}
	for _, p := range pods.Items {
		perRev[p.Metadata.Labels["serving.knative.dev/revision"]]++
		d.restarts += p.restarts()
	}
	for _, r := range d.revisions {
		if perRev[r] != 1 {
			return d, fmt.Errorf("revision %s has %d pods, want 1 (min-scale = max-scale = 1)", r, perRev[r])
		}
	}
	// The activator out of the path: each plain revision's
	// ServerlessService in Serve mode (target-burst-capacity 0).
	if s.Chain == "" {
		for _, r := range d.revisions {
			if err := c.waitFor(ctx, 2*time.Minute, "ServerlessService "+r+" in Serve mode", func() (bool, string) {
				out, err := c.kube(ctx, "get", "serverlessservice", r, "-n", benchNS, "-o", "jsonpath={.spec.mode}")
				return err == nil && strings.TrimSpace(out) == "Serve", out
			}); err != nil {
				return d, err
			}
		}
	}
	if err := c.waitFor(ctx, 3*time.Minute, s.Name+" answering through the ingress", func() (bool, string) {
		err := d.check(ctx)
		return err == nil, fmt.Sprint(err)
	}); err != nil {
		return d, err
	}
	return d, nil
}

// check sends both body sizes of the mix and checks the answers.
func (d *deployed) check(ctx context.Context) error {
	for _, pl := range benchutil.PaperMix {
		body := []byte(benchutil.MixBody(pl.Size))
		if err := askCluster(ctx, d.host, d.sys.Headers, body, d.sys.Answer(body)); err != nil {
			return err
		}
	}
	return nil
}

func (c *clusterEnv) waitFor(ctx context.Context, d time.Duration, what string, cond func() (bool, string)) error {
	deadline := time.Now().Add(d)
	for {
		ok, last := cond()
		if ok {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not after %v (last: %s)", what, d, strings.TrimSpace(last))
		}
		if err := sleepCtx(ctx, time.Second); err != nil {
			return err
		}
	}
}

// gatewayCounters reads the node gateway's Prometheus counters of chain
// requests and sk_msg sends (its admin port on the pod IP).
func (c *clusterEnv) gatewayCounters(ctx context.Context, chain string) (requests, sends float64, err error) {
	ip, err := c.kube(ctx, "get", "pod", "-n", "spright-system", "-l", "app=spright-gateway", "-o", "jsonpath={.items[0].status.podIP}")
	if err != nil {
		return 0, 0, err
	}
	resp, err := clusterClient.Get("http://" + strings.TrimSpace(ip) + ":9091/metrics")
	if err != nil {
		return 0, 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, 0, err
	}
	req := fmt.Sprintf(`spright_gateway_requests_total{chain="%s.%s",code="200"}`, benchNS, chain)
	for _, line := range strings.Split(string(b), "\n") {
		i := strings.LastIndexByte(line, ' ')
		if i < 0 || strings.HasPrefix(line, "#") {
			continue
		}
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			continue
		}
		switch {
		case line[:i] == req:
			requests += v
		case strings.HasPrefix(line, "spright_bpf_instance_sent_total"):
			sends += v
		}
	}
	return requests, sends, nil
}

// otherRuns names the processes on the machine whose command line
// contains one of patterns (the scenario's own process left out).
func otherRuns(patterns ...string) []string {
	ents, _ := os.ReadDir("/proc")
	var out []string
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil || pid == os.Getpid() {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "cmdline"))
		if err != nil {
			continue
		}
		cmd := strings.ReplaceAll(strings.TrimRight(string(b), "\x00"), "\x00", " ")
		for _, pat := range patterns {
			if strings.Contains(cmd, pat) {
				if len(cmd) > 80 {
					cmd = cmd[:80] + "..."
				}
				out = append(out, fmt.Sprintf("%d %s", pid, cmd))
				break
			}
		}
	}
	return out
}

// clusterUsers are the other programs that drive this cluster: test/cluster
// (which installs and uninstalls SPRIGHT and swaps the queue sidecar) and
// Knative's ingress conformance suite (test/conformance).
var clusterUsers = []string{"cluster.test", "conformance.test", "TestIngressConformance"}

// waitAlone waits (up to d) until no other program drives the cluster:
// the scenario changes cluster-wide settings (the queue sidecar, SPRIGHT's
// install) that would break them, and they would be measured with it.
func (c *clusterEnv) waitAlone(ctx context.Context, d time.Duration) error {
	deadline := time.Now().Add(d)
	logged := false
	for {
		users := otherRuns(clusterUsers...)
		if len(users) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the cluster is in use by other runs after waiting %v, not touching it: %s", d, strings.Join(users, "; "))
		}
		if !logged {
			c.e.Logf("cluster: in use by %s; waiting (up to %v) for it to be free", strings.Join(users, "; "), d)
			logged = true
		}
		if err := sleepCtx(ctx, 15*time.Second); err != nil {
			return err
		}
	}
}

func runCluster(ctx context.Context, e *Env, f *File) (err error) {
	if os.Geteuid() != 0 {
		f.Unavailable = "needs root (hack/cluster-up.sh runs kubelet, containerd and CNI on this machine)"
		return nil
	}
	conc := Pick(e, []int{1, 8, 32}, []int{1, 32})
	dur := Pick(e, 10*time.Second, 3*time.Second)
	idle := Pick(e, 10*time.Second, 3*time.Second)
	warm := Pick(e, 2*time.Second, time.Second)
	f.Settings = map[string]any{"concurrency": conc, "duration_s": dur.Seconds(), "idle_s": idle.Seconds(),
		"mix": benchutil.PaperMix, "namespace": benchNS, "ingress": clusterIngress, "revision_annotations": clusterRevisionAnnotations}
	f.Method = clusterMethod(conc, dur, idle, warm)
	if ft := otherRuns(append(clusterUsers, "/go-build")...); len(ft) > 0 {
		f.Notes = append(f.Notes, "other test runs and builds on the machine at the start: "+strings.Join(ft, "; "))
	}

	c, err := clusterUp(ctx, e, f)
	if c != nil {
		defer c.clusterDown()
	}
	if err != nil {
		return err
	}
	alone := Pick(e, 30*time.Minute, 5*time.Minute)
	if err := c.waitAlone(ctx, alone); err != nil {
		return err
	}
	if err := c.ensureSpright(ctx); err != nil {
		return err
	}
	if err := c.images(ctx); err != nil {
		return err
	}
	if _, err := c.kube(ctx, "get", "namespace", benchNS); err != nil {
		if _, err := c.kube(ctx, "create", "namespace", benchNS); err != nil {
			return err
		}
	}
	if old := c.leftovers(ctx); len(old) > 0 {
		e.Logf("cluster: deleting an earlier run's services %v", old)
		if err := c.deleteServices(ctx, old); err != nil {
			return err
		}
	}
	// Whatever happens: no bench service left, the queue sidecar as found.
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		if old := c.leftovers(cctx); len(old) > 0 {
			if derr := c.deleteServices(cctx, old); derr != nil {
				f.Problems = append(f.Problems, "cleanup: "+derr.Error())
			}
		}
		cur, _ := c.kube(cctx, "get", "configmap/config-deployment", "-n", "knative-serving", "-o", "jsonpath={.data.queue-sidecar-image}")
		if cur = strings.TrimSpace(cur); c.lastQueueImage != "" && cur != c.lastQueueImage {
			// Someone else set it during the run (test/cluster's install
			// does): theirs now, left alone.
			f.Problems = append(f.Problems, fmt.Sprintf("queue-sidecar-image was changed by someone else during the run (to %s, "+
				"this run had set %s): left as it is, not put back to %s; the figures after that change are suspect", cur, c.lastQueueImage, c.origQueueImage))
		} else if c.origQueueImage != "" {
			if rerr := c.setQueueImage(cctx, c.origQueueImage); rerr != nil {
				f.Problems = append(f.Problems, "restoring queue-sidecar-image: "+rerr.Error())
			} else {
				e.Logf("cluster: queue-sidecar-image back to %s", c.origQueueImage)
			}
		}
	}()

	script := func(name string, headers map[string]string) (string, error) {
		p := filepath.Join(e.Tmp, "cluster-"+name+".lua")
		return p, benchutil.WriteMixScriptHeaders(p, benchutil.PaperMix, 1, headers)
	}
	dom, err := c.knativeDomain(ctx)
	if err != nil {
		return err
	}
	systems := clusterSystems("." + benchNS + "." + dom)
	// Fewer swaps of the cluster-wide sidecar: the phase on the image the
	// cluster has now goes first.
	phases := []string{SysQueueProxy, SysEProxy}
	if sidecarClass(c.origQueueImage) == SysQueueProxy {
		phases = []string{SysEProxy, SysQueueProxy}
	}
	if c.origQueueImage == "" {
		phases = []string{SysQueueProxy, SysEProxy}
	}
	for _, phase := range phases {
		if err := c.waitAlone(ctx, alone); err != nil {
			return err
		}
		if err := c.setQueueImage(ctx, c.queueImage[phase]); err != nil {
			f.Problems = append(f.Problems, fmt.Sprintf("queue sidecar %s: %v", phase, err))
			continue
		}
		for _, s := range systems {
			if s.Sidecar != phase {
				continue
			}
			if err := c.measure(ctx, s, script, wrkPlan{Concurrency: conc, Duration: dur, Idle: idle, Warmup: warm}); err != nil {
				f.Problems = append(f.Problems, fmt.Sprintf("%s: %v", s.Name, err))
			}
			if ctx.Err() != nil {
				return ctx.Err()
			}
		}
	}
	f.Notes = append(f.Notes, datapathNotes(f)...)
	return nil
}

// datapathNotes compares the data path's CPU per request (gateway +
// functions + sidecars, extra.datapath_us_per_request) of each pair: the
// part of the node's CPU that the paper's per-component figures compare.
func datapathNotes(f *File) []string {
	var out []string
	for _, pr := range [][2]string{{SysSkmsg, SysKnative}, {SysSDK, SysKnative}, {SysEProxy, SysQueueProxy}} {
		var parts []string
		for _, n := range f.Entries {
			if n.System != pr[0] || n.Label != "" {
				continue
			}
			d := f.Find(pr[1], n.Concurrency, "")
			a, b := n.Extra["datapath_us_per_request"], 0.0
			if d != nil {
				b = d.Extra["datapath_us_per_request"]
			}
			if a <= 0 || b <= 0 {
				continue
			}
			parts = append(parts, fmt.Sprintf("c=%d %s / %s µs = %s", n.Concurrency, num(a), num(b), rnum(a/b)))
		}
		if len(parts) > 0 {
			out = append(out, fmt.Sprintf("data-path CPU per request (extra.datapath_us_per_request: the node without the control planes), %s / %s: %s",
				pr[0], pr[1], strings.Join(parts, "; ")))
		}
	}
	return out
}

// measure deploys one system, measures it and deletes it, so that the
// node runs only that system's pods while it is measured.
func (c *clusterEnv) measure(ctx context.Context, s clusterSystem, script func(string, map[string]string) (string, error), p wrkPlan) error {
	var names []string
	for _, svc := range s.Services {
		names = append(names, svc.Name)
	}
	defer func() {
		cctx, cancel := context.WithTimeout(context.Background(), 6*time.Minute)
		defer cancel()
		if err := c.deleteServices(cctx, names); err != nil {
			c.f.Problems = append(c.f.Problems, fmt.Sprintf("%s: delete: %v", s.Name, err))
		}
	}()
	d, err := c.deploy(ctx, s)
	if err != nil {
		return err
	}
	headers := map[string]string{"Host": d.host}
	for k, v := range s.Headers {
		headers[k] = v
	}
	if p.Script, err = script(s.Name, headers); err != nil {
		return err
	}
	pods, err := c.pods(ctx, "")
	if err != nil {
		return err
	}
	p.System, p.URL = s.Name, "http://"+clusterIngress+"/"
	p.Groups = nodeGroups(classifyPods(pods, benchNS))
	p.Adjust = nodeAdjust
	p.Probe = d.check
	p.Alive = func() error {
		pods, err := c.pods(ctx, benchNS)
		if err != nil {
			return err
		}
		n, r := 0, 0
		for _, pd := range pods.Items {
			if pd.Metadata.DeletionTimestamp == nil && pd.ready() {
				n++
			}
			r += pd.restarts()
		}
		if n != len(d.revisions) || r != d.restarts {
			return fmt.Errorf("%s: %d Ready pods (want %d), %d container restarts (were %d)", s.Name, n, len(d.revisions), r, d.restarts)
		}
		return nil
	}
	p.Extra = func(en *Entry, u cpuUse) {
		dp := dataPathCores(u.ByClass)
		en.Extra = map[string]float64{"datapath_cores": dp}
		if en.Requests > 0 {
			en.Extra["datapath_us_per_request"] = dp * u.Wall.Seconds() / float64(en.Requests) * 1e6
		}
	}
	var req0, sends0 float64
	var metricsErr error
	if s.Chain != "" {
		req0, sends0, metricsErr = c.gatewayCounters(ctx, s.Chain)
	}
	since := time.Now().UTC().Format(time.RFC3339)
	defer c.noteLogErrors(s, since)
	c.e.Logf("cluster: %s up (host %s, revisions %s)", s.Name, d.host, strings.Join(d.revisions, " "))
	mode := "its chain Ready"
	if s.Chain == "" {
		mode = "their ServerlessServices in Serve mode"
	}
	c.f.Notes = append(c.f.Notes, fmt.Sprintf("%s: Host %s; revisions %s, one Ready pod each on %s, %s", s.Name, d.host,
		strings.Join(d.revisions, ", "), c.queueImage[s.Sidecar], mode))
	start := len(c.f.Entries)
	if err := runWrkPlan(ctx, c.e, c.f, p); err != nil {
		return err
	}
	if s.Chain == "" && s.Name != SysKnative {
		// The ingress itself: the same pod, reached by its IP on the queue
		// sidecar's port (what the gateway proxies to), without the gateway.
		if err := c.measureDirect(ctx, s, p); err != nil {
			c.f.Problems = append(c.f.Problems, fmt.Sprintf("%s: %v", directSystem(s.Name), err))
		}
	}
	if s.Chain != "" {
		req1, sends1, err := c.gatewayCounters(ctx, s.Chain)
		if metricsErr != nil {
			err = metricsErr
		}
		var sent int64
		for _, en := range c.f.Entries[start:] {
			sent += en.Requests
		}
		if err != nil {
			c.f.Notes = append(c.f.Notes, fmt.Sprintf("%s: gateway metrics: %v", s.Name, err))
		} else {
			path := []string{"gateway"}
			for _, svc := range s.Services { // the entry first, then its route
				path = append(path, svc.Name)
			}
			c.f.Notes = append(c.f.Notes, fmt.Sprintf("%s: over its runs the gateway counted %.0f chain requests answered 200 "+
				"(the measured windows completed %d, plus warm-up and checks) and %.0f sk_msg descriptor sends in all "+
				"(%.1f per request: %s → gateway is %d)",
				s.Name, req1-req0, sent, sends1-sends0, (sends1-sends0)/max(1, req1-req0), strings.Join(path, " → "), len(path)))
		}
	}
	return nil
}

// directSystem names the rows of a plain system reached by pod IP.
func directSystem(name string) string { return name + "-pod-ip" }

// queueServingPort is the port of a revision pod's queue sidecar (Knative's
// networking.BackendHTTPPort), where the ingress sends requests.
const queueServingPort = 8012

// measureDirect measures plain system s again with wrk aimed at its pod's
// IP and queue port instead of the ingress: the difference is the SPRIGHT
// ingress's own cost (issue 12).
func (c *clusterEnv) measureDirect(ctx context.Context, s clusterSystem, p wrkPlan) error {
	pods, err := c.pods(ctx, benchNS)
	if err != nil {
		return err
	}
	ip := ""
	for _, pd := range pods.Items {
		if pd.Metadata.Labels["serving.knative.dev/service"] == s.Entry && pd.Metadata.DeletionTimestamp == nil && pd.ready() {
			ip = pd.Status.PodIP
		}
	}
	if ip == "" {
		return fmt.Errorf("no Ready pod of %s with an IP", s.Entry)
	}
	target := fmt.Sprintf("http://%s/", net.JoinHostPort(ip, strconv.Itoa(queueServingPort)))
	body := []byte(benchutil.MixBody(benchutil.PaperMix[0].Size))
	if err := askURL(ctx, target, "", nil, body, s.Answer(body)); err != nil {
		return fmt.Errorf("pod %s answers wrong: %w", target, err)
	}
	p.System, p.URL, p.Idle = directSystem(s.Name), target, 0
	p.Probe = func(ctx context.Context) error { return askURL(ctx, target, "", nil, body, s.Answer(body)) }
	c.f.Notes = append(c.f.Notes, fmt.Sprintf("%s: the %s pod measured again at %s (its queue sidecar's port, what the gateway proxies to), "+
		"without the SPRIGHT ingress; the ratio %s / %s is the ingress's cost", p.System, s.Name, target, s.Name, p.System))
	c.e.Logf("cluster: %s at %s", p.System, target)
	return runWrkPlan(ctx, c.e, c.f, p)
}

// noteLogErrors notes the error lines the gateway and the system's pods
// logged since the system's runs began (read before its services go).
func (c *clusterEnv) noteLogErrors(s clusterSystem, since string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	logs := func(ns, selector string) string {
		out, err := c.kube(ctx, "logs", "-n", ns, "-l", selector, "--all-containers", "--prefix", "--since-time="+since, "--tail=-1")
		if err != nil {
			return err.Error()
		}
		return out
	}
	check := func(what, text string) {
		if n, first := logErrorLines(text); n > 0 {
			c.f.Notes = append(c.f.Notes, fmt.Sprintf("%s: %s logged %d error line(s) during its runs; first: %s", s.Name, what, n, first))
		}
	}
	check("the gateway", logs("spright-system", "app=spright-gateway"))
	for _, svc := range s.Services {
		check(svc.Name, logs(benchNS, "serving.knative.dev/service="+svc.Name))
	}
}

// logErrorLines counts a log's error lines: zap's and Knative's error and
// warning levels, net/http's server and proxy messages ("http: ...",
// "httputil: ..."), panics. Requests canceled by their client ("context
// canceled": wrk stopping with requests in flight at the end of each
// window) are not counted.
func logErrorLines(text string) (int, string) {
	n, first := 0, ""
	for _, l := range strings.Split(text, "\n") {
		ll := strings.ToLower(l)
		hit := strings.Contains(ll, `"level":"error"`) || strings.Contains(ll, `"level":"warn"`) ||
			strings.Contains(ll, `"severity":"error"`) || strings.Contains(ll, `"severity":"warning"`) ||
			strings.Contains(ll, `http: `) || strings.Contains(ll, `httputil: `) || strings.Contains(ll, "panic")
		if !hit || strings.Contains(ll, "context canceled") {
			continue
		}
		if n == 0 {
			first = logLineSummary(l)
		}
		n++
	}
	return n, first
}

// logLineSummary shortens a log line: a JSON line (after kubectl's
// "[pod/...] " prefix) to its message and error fields, which Knative's
// lines carry after a long sockstat dump.
func logLineSummary(l string) string {
	prefix, rest := "", l
	if strings.HasPrefix(l, "[") {
		if i := strings.Index(l, "] "); i > 0 {
			prefix, rest = l[:i+2], l[i+2:]
		}
	}
	var m map[string]any
	if json.Unmarshal([]byte(rest), &m) == nil {
		msg, _ := m["message"].(string)
		if msg == "" {
			msg, _ = m["msg"].(string)
		}
		msg, _, _ = strings.Cut(msg, ";")
		if e, ok := m["error"].(string); ok {
			msg += ": " + e
		}
		if msg != "" {
			rest = msg
		}
	}
	out := prefix + rest
	if len(out) > 400 {
		out = out[:400] + "..."
	}
	return out
}

// clusterMethod is the scenario's description for RESULTS.md.
func clusterMethod(conc []int, dur, idle, warm time.Duration) []string {
	return []string{
		"On the real one-node cluster of hack/cluster-up.sh (Kubernetes v1.36 with kubelet on containerd + runc, kube-proxy, " +
			"CoreDNS, Knative Serving v0.42.2 = 1.15 built from its module), with SPRIGHT installed as docs/knative.md says. " +
			"The SPRIGHT gateway is Knative's ingress for every system (no Envoy-based ingress — Kourier, Istio, Contour — can run on this machine, issue 11): " +
			"the stock-Knative figures are Knative's data path behind that ingress, not behind Envoy. Services are created with the real kn in the namespace " +
			benchNS + ", each from test/fixtures/httpfn built by ko from this tree; wrk runs on the node's host against the ingress (" + clusterIngress +
			", the gateway's hostPort) with each service's Host header.",
		"knative (the paper's Knative baseline): bench-kn-upper and bench-kn-reverse, revisions on Knative's stock queue-proxy. A request enters the " +
			"ingress with Host bench-kn-upper.<ns>.<domain> and X-Chain-Next: bench-kn-reverse → bench-kn-upper's queue-proxy → httpfn upper, which POSTs its " +
			"output back to the ingress (httpfn --front http://" + clusterIngress + " --front-host-suffix .<ns>.<domain>) → bench-kn-reverse's " +
			"queue-proxy → httpfn reverse; the answer unwinds through every hop.",
		"spright-skmsg: bench-sp-upper (spright.dev/entry, routes *=bench-sp-reverse) and bench-sp-reverse in chain " + benchChain +
			", revisions on EPROXY. A request enters the gateway with the chain's host (" + chainHost(benchChain, benchNS, "<domain>") +
			") and crosses the chain as sk_msg descriptors to the members' EPROXY; the members are unmodified HTTP containers (httpfn) joined through EPROXY, " +
			"so each member hop still includes one HTTP exchange over the pod's loopback (EPROXY's shim).",
		"spright-sdk: the same chain (" + benchChainSDK + ": bench-sdk-upper → bench-sdk-reverse) of Go SDK functions (`spright function --behavior upper|reverse`, " +
			"cmd/spright built by ko, spright.dev/sdk: \"true\"): the functions join the chain themselves over the node's control socket and work on the " +
			"descriptors' shared memory, as the paper's SPRIGHT functions do; EPROXY stays the queue sidecar (probes, Stat) without its shim.",
		"queue-proxy / eproxy: one plain service (httpfn --behavior echo) on Knative's stock queue-proxy / on EPROXY: ingress → sidecar → httpfn. " +
			"queue-proxy-pod-ip / eproxy-pod-ip: right after, the same pod reached by wrk at its pod IP on the sidecar's port 8012 (where the ingress " +
			"sends it), with no ingress: the ratio to the row through the ingress is the SPRIGHT ingress's own cost.",
		"The queue sidecar is Knative's one global setting (config-deployment queue-sidecar-image): the stock-queue-proxy systems run with it set to " +
			"the image of Knative's own install (hack/knative-install.sh's YAML), the EPROXY systems with EPROXY built from this tree; Knative rolls " +
			"every revision's pods onto the new sidecar, and the scenario waits for that before measuring and puts the original value back at the end.",
		"Every revision is pinned to one pod (autoscaling.knative.dev/min-scale = max-scale = 1) so the autoscaler does not change what is measured, " +
			"and has target-burst-capacity 0 so its ServerlessService is in Serve mode (checked): the ingress sends straight to the pod, the activator is " +
			"not in the path of the stock case (Knative's default, 200, would keep the activator in the path of a one-pod revision). " +
			"containerConcurrency is Knative's default (0: no queue-proxy breaker). " +
			"Each system's services are created, measured and deleted before the next is created, so the node runs only that system's pods.",
		fmt.Sprintf("POST bodies: %s, drawn per request by a generated wrk Lua script that also sets the Host (and X-Chain-Next) header. "+
			"Per system: idle CPU over %v, a %v warm-up, then wrk (2 threads, capped at the connection count) for %v at each concurrency %v; "+
			"after each run both body sizes are checked to come back right (abc… → …CBA for the chains, unchanged for echo).",
			benchutil.DescribeMix(benchutil.PaperMix), idle, warm, dur, conc),
		"CPU is the whole node's: /proc/stat busy time over the window — all of the node's processes (pods, kubelet, kube-apiserver, etcd, " +
			"containerd, kube-proxy, Knative's and SPRIGHT's controllers) and the kernel — minus wrk (its rusage: loadgen), the benchmark driver, " +
			"and work foreign to the cluster (other namespaces' pods, other host processes: *other*). cpu by class splits it by pod cgroup " +
			"(functions, queue-proxy/eproxy: the measured services' containers; gateway; knative; spright-control) and host process " +
			"(kubernetes: cluster-up's components, containerd's shims, kube-system pods, sandboxes; kernel: kernel threads); unattributed is busy time " +
			"no live process had (irq/softirq, processes born and gone within the window). extra.datapath_cores is the node minus the control planes " +
			"(kubernetes, knative, spright-control): gateway + functions + sidecar + kernel + unattributed, what the requests cost (EPROXY's " +
			"spliced connections are forwarded by the kernel: their cost is in kernel/unattributed, not in the eproxy process). " +
			"The node has only the machine's cores, shared with wrk and everything else.",
	}
}
