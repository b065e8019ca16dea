// Package ko checks that the Knative install's ko:// images resolve offline:
// hack/ko-resolve.sh builds every image into a loopback registry (kolocal)
// on a base image made from nothing, and the manifests come back with each
// ko:// reference replaced by localhost:PORT/spright/<binary>@sha256:...
//
// The tests need ko and kolocal, built by `hack/ko-resolve.sh --install-only`;
// they skip, naming that command, until then, and fail instead when
// SPRIGHT_KO_REQUIRED=1 (CI).
package ko

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"reflect"
	"regexp"
	"sort"
	"strings"
	"testing"
	"time"

	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"
)

const (
	repoRoot       = "../.."
	script         = "hack/ko-resolve.sh"
	installCommand = "hack/ko-resolve.sh --install-only"
	koScheme       = "ko://"
	platformOS     = "linux"
	platformArch   = "amd64"
)

// tools returns the directory holding ko and kolocal, skipping (or failing,
// with SPRIGHT_KO_REQUIRED=1) the test when they are not built.
func tools(t *testing.T) string {
	t.Helper()
	if testing.Short() {
		t.Skip("ko: builds container images; skipped in -short mode")
	}
	out, err := exec.Command("bash", filepath.Join(repoRoot, script), "--print-dir").Output()
	if err != nil {
		t.Fatalf("%s --print-dir: %v", script, err)
	}
	dir := strings.TrimSpace(string(out))
	var missing []string
	for _, b := range []string{"ko", "kolocal"} {
		if fi, err := os.Stat(filepath.Join(dir, b)); err != nil || fi.Mode()&0o111 == 0 {
			missing = append(missing, filepath.Join(dir, b))
		}
	}
	if len(missing) > 0 {
		msg := fmt.Sprintf("ko: not built: %s; run %s from the repository root", strings.Join(missing, ", "), installCommand)
		if os.Getenv("SPRIGHT_KO_REQUIRED") == "1" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	return dir
}

// startRegistry runs `kolocal serve` for the test and returns its
// localhost:PORT; the registry stops when the test ends.
func startRegistry(t *testing.T, dir string) string {
	t.Helper()
	addrFile := filepath.Join(t.TempDir(), "addr")
	cmd := exec.Command(filepath.Join(dir, "kolocal"), "serve", "-stdin", "-addr-file", addrFile,
		"-platform", platformOS+"/"+platformArch)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		stdin.Close() // kolocal serve -stdin exits on EOF
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			_ = cmd.Process.Kill()
			<-exited
		}
	})
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if b, err := os.ReadFile(addrFile); err == nil && len(bytes.TrimSpace(b)) > 0 {
			return strings.TrimSpace(string(b))
		}
		select {
		case err := <-exited:
			t.Fatalf("kolocal serve exited before it was ready: %v\n%s", err, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
	}
	t.Fatalf("kolocal serve: no address after 30s\n%s", stderr.String())
	return ""
}

// resolve runs the script from the repository root and returns the resolved
// YAML. registry "" lets the script start (and stop) its own registry.
func resolve(t *testing.T, registry string, files ...string) []byte {
	t.Helper()
	out := filepath.Join(t.TempDir(), "resolved.yaml")
	args := []string{script, "-o", out}
	for _, f := range files {
		args = append(args, "-f", f)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, "bash", args...)
	cmd.Dir = repoRoot
	env := []string{}
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "SPRIGHT_KO_REGISTRY=") && !strings.HasPrefix(kv, "SPRIGHT_KO_PLATFORM=") && !strings.HasPrefix(kv, "KO_") {
			env = append(env, kv)
		}
	}
	if registry != "" {
		env = append(env, "SPRIGHT_KO_REGISTRY="+registry)
	}
	cmd.Env = env
	begin := time.Now()
	logs, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("bash %s: %v\n%s", strings.Join(args, " "), err, logs)
	}
	t.Logf("bash %s: %s\n%s", strings.Join(args, " "), time.Since(begin).Round(time.Millisecond), logs)
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// inputFiles lists what `ko resolve -f p` reads, in its order: p itself, or
// the .yaml/.yml/.json files directly in directory p (-f is not recursive).
func inputFiles(t *testing.T, p string) []string {
	t.Helper()
	full := filepath.Join(repoRoot, p)
	fi, err := os.Stat(full)
	if err != nil {
		t.Fatal(err)
	}
	if !fi.IsDir() {
		return []string{full}
	}
	ents, err := os.ReadDir(full)
	if err != nil {
		t.Fatal(err)
	}
	var files []string
	for _, e := range ents {
		switch filepath.Ext(e.Name()) {
		case ".yaml", ".yml", ".json":
			if e.Type().IsRegular() {
				files = append(files, filepath.Join(full, e.Name()))
			}
		}
	}
	sort.Strings(files)
	return files
}

// documents splits YAML streams into their non-empty documents.
func documents(t *testing.T, streams ...[]byte) []any {
	t.Helper()
	var docs []any
	for _, s := range streams {
		r := utilyaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(s)))
		for {
			raw, err := r.Read()
			if errors.Is(err, io.EOF) {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
			var doc any
			if err := yaml.Unmarshal(raw, &doc); err != nil {
				t.Fatalf("%v in document:\n%s", err, raw)
			}
			if doc != nil {
				docs = append(docs, doc)
			}
		}
	}
	return docs
}

func countKoRefs(v any) int {
	switch v := v.(type) {
	case string:
		if strings.HasPrefix(v, koScheme) {
			return 1
		}
	case map[string]any:
		n := 0
		for _, e := range v {
			n += countKoRefs(e)
		}
		return n
	case []any:
		n := 0
		for _, e := range v {
			n += countKoRefs(e)
		}
		return n
	}
	return 0
}

// compare walks an input document and its resolved form together: every
// ko://IMPORTPATH must have become registry/spright/BASE@sha256:HEX (the same
// digest wherever the import path occurs), everything else must be unchanged.
func compare(t *testing.T, at string, in, out any, registry string, refs map[string]string) {
	t.Helper()
	switch iv := in.(type) {
	case string:
		if !strings.HasPrefix(iv, koScheme) {
			break
		}
		ip := strings.TrimPrefix(iv, koScheme)
		s, ok := out.(string)
		want := regexp.MustCompile(`^` + regexp.QuoteMeta(registry+"/spright/"+path.Base(ip)) + `@sha256:[0-9a-f]{64}$`)
		if !ok || !want.MatchString(s) {
			t.Errorf("%s: %s resolved to %v, want %s", at, iv, out, want)
			return
		}
		if prev, ok := refs[ip]; ok && prev != s {
			t.Errorf("%s: %s resolved to both %s and %s", at, iv, prev, s)
		}
		refs[ip] = s
		return
	case map[string]any:
		ov, ok := out.(map[string]any)
		if !ok || len(ov) != len(iv) {
			t.Errorf("%s: resolved %T with %d keys, want a map with %d", at, out, len(ov), len(iv))
			return
		}
		for k, e := range iv {
			compare(t, at+"."+k, e, ov[k], registry, refs)
		}
		return
	case []any:
		ov, ok := out.([]any)
		if !ok || len(ov) != len(iv) {
			t.Errorf("%s: resolved %T with %d items, want a list of %d", at, out, len(ov), len(iv))
			return
		}
		for i, e := range iv {
			compare(t, fmt.Sprintf("%s[%d]", at, i), e, ov[i], registry, refs)
		}
		return
	}
	if !reflect.DeepEqual(in, out) {
		t.Errorf("%s: %v became %v", at, in, out)
	}
}

// checkResolved compares input and output document by document and returns
// import path -> resolved reference.
func checkResolved(t *testing.T, inputs []string, resolved []byte, registry string) map[string]string {
	t.Helper()
	var streams [][]byte
	for _, f := range inputs {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		streams = append(streams, b)
	}
	in := documents(t, streams...)
	out := documents(t, resolved)
	if len(out) != len(in) {
		t.Fatalf("%d documents resolved, want %d (as in %v)", len(out), len(in), inputs)
	}
	for i, d := range out {
		if n := countKoRefs(d); n > 0 { // comments may still say ko://
			t.Errorf("resolved document %d still has %d %s references", i, n, koScheme)
		}
	}
	refs := map[string]string{}
	for i := range in {
		compare(t, fmt.Sprintf("document %d", i), in[i], out[i], registry, refs)
	}
	if len(refs) == 0 {
		t.Fatal("no ko:// image in the input")
	}
	return refs
}

type descriptor struct {
	MediaType string `json:"mediaType"`
	Digest    string `json:"digest"`
	Size      int64  `json:"size"`
	Platform  *struct {
		OS           string `json:"os"`
		Architecture string `json:"architecture"`
	} `json:"platform,omitempty"`
}

type manifest struct {
	MediaType string       `json:"mediaType"`
	Config    descriptor   `json:"config"`
	Layers    []descriptor `json:"layers"`
	Manifests []descriptor `json:"manifests"` // an index
}

type imageConfig struct {
	OS           string `json:"os"`
	Architecture string `json:"architecture"`
	Config       struct {
		Entrypoint []string `json:"Entrypoint"`
		User       string   `json:"User"`
		Env        []string `json:"Env"`
	} `json:"config"`
	RootFS struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// fetch GETs (or HEADs) a registry API path and checks the content digest.
func fetch(t *testing.T, method, registry, p, digest string) []byte {
	t.Helper()
	req, err := http.NewRequest(method, "http://"+registry+p, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", strings.Join([]string{
		"application/vnd.oci.image.manifest.v1+json",
		"application/vnd.oci.image.index.v1+json",
		"application/vnd.docker.distribution.manifest.v2+json",
		"application/vnd.docker.distribution.manifest.list.v2+json",
	}, ", "))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s %s: %s %s", method, p, resp.Status, body)
	}
	if method == http.MethodGet {
		sum := sha256.Sum256(body)
		if got := "sha256:" + hex.EncodeToString(sum[:]); got != digest {
			t.Fatalf("GET %s: content digest %s", p, got)
		}
	}
	return body
}

// pull fetches an image's manifest, config and layers from the registry and
// checks what ko must have built: /ko-app/<binary> on linux/amd64, on top of
// kolocal's base image (user 65532, its layer first).
func pull(t *testing.T, registry, importPath, ref string, baseDiffID string) {
	t.Helper()
	repo, digest, ok := strings.Cut(strings.TrimPrefix(ref, registry+"/"), "@")
	if !ok {
		t.Fatalf("%s: no digest", ref)
	}
	var m manifest
	if err := json.Unmarshal(fetch(t, http.MethodGet, registry, "/v2/"+repo+"/manifests/"+digest, digest), &m); err != nil {
		t.Fatal(err)
	}
	if len(m.Manifests) > 0 { // an index: take the linux/amd64 image
		var img *descriptor
		for i, d := range m.Manifests {
			if d.Platform != nil && d.Platform.OS == platformOS && d.Platform.Architecture == platformArch {
				img = &m.Manifests[i]
			}
		}
		if img == nil {
			t.Fatalf("%s: index without %s/%s: %+v", ref, platformOS, platformArch, m.Manifests)
		}
		digest = img.Digest
		m = manifest{}
		if err := json.Unmarshal(fetch(t, http.MethodGet, registry, "/v2/"+repo+"/manifests/"+digest, digest), &m); err != nil {
			t.Fatal(err)
		}
	}
	if m.Config.Digest == "" || len(m.Layers) < 2 {
		t.Fatalf("%s: manifest with config %q and %d layers, want a config and base + binary layers", ref, m.Config.Digest, len(m.Layers))
	}
	var cf imageConfig
	if err := json.Unmarshal(fetch(t, http.MethodGet, registry, "/v2/"+repo+"/blobs/"+m.Config.Digest, m.Config.Digest), &cf); err != nil {
		t.Fatal(err)
	}
	for _, l := range m.Layers {
		fetch(t, http.MethodHead, registry, "/v2/"+repo+"/blobs/"+l.Digest, l.Digest)
	}
	bin := path.Base(importPath)
	if want := []string{"/ko-app/" + bin}; !reflect.DeepEqual(cf.Config.Entrypoint, want) {
		t.Errorf("%s: entrypoint %q, want %q", ref, cf.Config.Entrypoint, want)
	}
	if cf.OS != platformOS || cf.Architecture != platformArch {
		t.Errorf("%s: platform %s/%s, want %s/%s", ref, cf.OS, cf.Architecture, platformOS, platformArch)
	}
	if cf.Config.User != "65532:65532" {
		t.Errorf("%s: user %q, want kolocal's base image's 65532:65532", ref, cf.Config.User)
	}
	if len(cf.RootFS.DiffIDs) == 0 || cf.RootFS.DiffIDs[0] != baseDiffID {
		t.Errorf("%s: first layer %v, want kolocal's base layer %s", ref, cf.RootFS.DiffIDs, baseDiffID)
	}
	checkBinary(t, registry, repo, m.Layers[len(m.Layers)-1].Digest, cf.RootFS.DiffIDs[len(cf.RootFS.DiffIDs)-1], bin)
	t.Logf("%s -> %s (%d layers)", importPath, ref, len(m.Layers))
}

// checkBinary reads the image's last layer, ko's binary layer, and checks
// that ko-app/<bin> is a static (CGO_ENABLED=0: no ELF interpreter) x86-64
// executable.
func checkBinary(t *testing.T, registry, repo, digest, diffID, bin string) {
	t.Helper()
	gz, err := gzip.NewReader(bytes.NewReader(fetch(t, http.MethodGet, registry, "/v2/"+repo+"/blobs/"+digest, digest)))
	if err != nil {
		t.Fatal(err)
	}
	raw, err := io.ReadAll(gz)
	if err != nil {
		t.Fatal(err)
	}
	if sum := sha256.Sum256(raw); "sha256:"+hex.EncodeToString(sum[:]) != diffID {
		t.Errorf("layer %s: uncompressed digest is not the config's diff_id %s", digest, diffID)
	}
	tr := tar.NewReader(bytes.NewReader(raw))
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatalf("layer %s: no ko-app/%s", digest, bin)
		}
		if err != nil {
			t.Fatal(err)
		}
		if strings.TrimPrefix(h.Name, "/") != "ko-app/"+bin || h.Typeflag != tar.TypeReg {
			continue
		}
		exe, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		f, err := elf.NewFile(bytes.NewReader(exe))
		if err != nil {
			t.Fatalf("ko-app/%s: %v", bin, err)
		}
		if f.Machine != elf.EM_X86_64 || f.Type != elf.ET_EXEC {
			t.Errorf("ko-app/%s: ELF %v %v, want EM_X86_64 ET_EXEC", bin, f.Machine, f.Type)
		}
		for _, p := range f.Progs {
			if p.Type == elf.PT_INTERP {
				t.Errorf("ko-app/%s: dynamically linked (PT_INTERP): built with cgo?", bin)
			}
		}
		if h.Mode&0o111 == 0 {
			t.Errorf("ko-app/%s: mode %o, not executable", bin, h.Mode)
		}
		return
	}
}

// baseDiffID reads the base image's only layer from the registry.
func baseDiffID(t *testing.T, registry string) string {
	t.Helper()
	// The tag's digest is whatever the registry says; fetch checks bodies
	// against it, so read it from the HEAD response first.
	req, err := http.NewRequest(http.MethodHead, "http://"+registry+"/v2/spright/base/manifests/static", nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Accept", "application/vnd.oci.image.manifest.v1+json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	d := resp.Header.Get("Docker-Content-Digest")
	if resp.StatusCode != http.StatusOK || d == "" {
		t.Fatalf("base image spright/base:static: %s, digest %q", resp.Status, d)
	}
	var m manifest
	if err := json.Unmarshal(fetch(t, http.MethodGet, registry, "/v2/spright/base/manifests/"+d, d), &m); err != nil {
		t.Fatal(err)
	}
	var cf imageConfig
	if err := json.Unmarshal(fetch(t, http.MethodGet, registry, "/v2/spright/base/blobs/"+m.Config.Digest, m.Config.Digest), &cf); err != nil {
		t.Fatal(err)
	}
	if len(cf.RootFS.DiffIDs) != 1 || cf.OS != platformOS || cf.Architecture != platformArch {
		t.Fatalf("base image: %d layers, platform %s/%s; want 1 layer, %s/%s", len(cf.RootFS.DiffIDs), cf.OS, cf.Architecture, platformOS, platformArch)
	}
	return cf.RootFS.DiffIDs[0]
}

func TestResolve(t *testing.T) {
	dir := tools(t)
	registry := startRegistry(t, dir)
	base := baseDiffID(t, registry)

	fixture := map[string]string{}
	t.Run("Fixture", func(t *testing.T) {
		const f = "test/ko/testdata/deployments.yaml"
		refs := checkResolved(t, inputFiles(t, f), resolve(t, registry, f), registry)
		for _, ip := range []string{"github.com/spright-dev/spright/cmd/gateway", "github.com/spright-dev/spright/cmd/eproxy"} {
			if _, ok := refs[ip]; !ok {
				t.Errorf("ko://%s not resolved", ip)
			}
		}
		for ip, ref := range refs {
			pull(t, registry, ip, ref, base)
			fixture[ip] = ref
		}
	})

	// The Knative install (what `ko apply -f config/` reads).
	t.Run("Config", func(t *testing.T) {
		const f = "config/"
		inputs := inputFiles(t, f)
		var streams [][]byte
		for _, p := range inputs {
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			streams = append(streams, b)
		}
		n := 0
		for _, d := range documents(t, streams...) {
			n += countKoRefs(d)
		}
		if n == 0 {
			t.Skipf("%s has no ko:// images (yet) in its %d top-level .yaml/.yml/.json files (ko -f is not recursive)", f, len(inputs))
		}
		refs := checkResolved(t, inputs, resolve(t, registry, f), registry)
		for ip, ref := range refs {
			pull(t, registry, ip, ref, base)
		}
	})

	// Same sources, same base, same registry: the same digests (Go builds
	// and ko's images are reproducible). Across registries they differ: ko
	// records the base image's name, port included, in an annotation.
	t.Run("Reproducible", func(t *testing.T) {
		if len(fixture) == 0 {
			t.Skip("Fixture failed")
		}
		const f = "test/ko/testdata/deployments.yaml"
		refs := checkResolved(t, inputFiles(t, f), resolve(t, registry, f), registry)
		for ip, ref := range refs {
			if want := fixture[ip]; ref != want {
				t.Errorf("%s: resolved to %s, then to %s", ip, want, ref)
			}
		}
	})

	// The script's own registry: started on a free port, stopped at the end.
	t.Run("OwnRegistry", func(t *testing.T) {
		const f = "test/ko/testdata/deployments.yaml"
		resolved := resolve(t, "", f)
		m := regexp.MustCompile(`(localhost:\d+)/spright/`).FindSubmatch(resolved)
		if m == nil {
			t.Fatalf("no localhost:PORT/spright/ image in\n%s", resolved)
		}
		own := string(m[1])
		if own == registry {
			t.Fatalf("the script used the test's registry %s", registry)
		}
		checkResolved(t, inputFiles(t, f), resolved, own)
		if c, err := net.DialTimeout("tcp", own, time.Second); err == nil {
			c.Close()
			t.Errorf("the script's registry at %s still accepts connections after it exited", own)
		}
	})
}
