// Command kolocal is the offline half of hack/ko-resolve.sh: a throwaway OCI
// registry on a loopback port, and a minimal static base image (nonroot user,
// the host's CA bundle, /tmp) built from nothing, so that `ko resolve` needs
// neither a container registry on the internet nor a Docker engine.
//
//	kolocal serve [-listen 127.0.0.1:0] [-addr-file F] [-base-tag spright/base:static]
//	    serves a registry (in memory) until SIGINT/SIGTERM or until stdin
//	    reaches EOF (-stdin); pushes the base image to itself first, then
//	    writes "localhost:PORT" to -addr-file (and stdout): once the file
//	    exists the registry is ready and holds the base image
//	kolocal push-base -ref localhost:5000/spright/base:static
//	    builds the base image and pushes it to an existing registry
//	kolocal base-digest
//	    prints the base image's digest (it only depends on the CA bundle)
package main

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

const (
	defaultCABundle = "/etc/ssl/certs/ca-certificates.crt"
	nonrootID       = 65532
)

func main() {
	log.SetFlags(0)
	log.SetPrefix("kolocal: ")
	if len(os.Args) < 2 {
		usage()
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "push-base":
		err = pushBase(os.Args[2:])
	case "base-digest":
		err = baseDigest(os.Args[2:])
	default:
		usage()
	}
	if err != nil {
		log.Fatal(err)
	}
}

func usage() {
	fmt.Fprintln(os.Stderr, "usage: kolocal serve|push-base|base-digest [flags] (kolocal CMD -h for flags)")
	os.Exit(2)
}

// baseFlags are the flags that shape the base image.
type baseFlags struct {
	caBundle string
	platform string
}

func (b *baseFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&b.caBundle, "ca-bundle", defaultCABundle, "CA bundle copied to /etc/ssl/certs/ca-certificates.crt (\"\" for none)")
	fs.StringVar(&b.platform, "platform", "linux/amd64", "platform written into the image config (os/arch[/variant])")
}

func serve(args []string) error {
	fs := flag.NewFlagSet("serve", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:0", "address to listen on (port 0: a free one)")
	addrFile := fs.String("addr-file", "", "write localhost:PORT here once the base image is pushed")
	baseTag := fs.String("base-tag", "spright/base:static", "repository:tag of the base image in this registry (\"\" for none)")
	stdin := fs.Bool("stdin", false, "also exit when stdin reaches EOF (ties the registry to its parent)")
	verbose := fs.Bool("v", false, "log every registry request")
	var bf baseFlags
	bf.register(fs)
	_ = fs.Parse(args)

	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	// "localhost:" makes go-containerregistry (and so ko) talk plain HTTP.
	addr := fmt.Sprintf("localhost:%d", port)

	logger := log.New(io.Discard, "", 0)
	if *verbose {
		logger = log.New(os.Stderr, "kolocal registry: ", log.LstdFlags)
	}
	srv := &http.Server{Handler: registry.New(registry.Logger(logger)), ReadHeaderTimeout: 30 * time.Second}
	serveErr := make(chan error, 1)
	go func() { serveErr <- srv.Serve(ln) }()

	if *baseTag != "" {
		ref := addr + "/" + *baseTag
		d, err := buildAndPush(ref, bf)
		if err != nil {
			_ = srv.Close()
			return fmt.Errorf("pushing the base image: %w", err)
		}
		log.Printf("base image %s@%s", ref, d)
	}
	if *addrFile != "" {
		// Written then renamed, so a reader never sees a partial address.
		tmp := *addrFile + ".tmp"
		if err := os.WriteFile(tmp, []byte(addr+"\n"), 0o644); err != nil {
			_ = srv.Close()
			return err
		}
		if err := os.Rename(tmp, *addrFile); err != nil {
			_ = srv.Close()
			return err
		}
	}
	fmt.Println(addr)

	stop := make(chan os.Signal, 1)
	signal.Notify(stop, os.Interrupt, syscall.SIGTERM)
	eof := make(chan struct{})
	if *stdin {
		go func() {
			_, _ = io.Copy(io.Discard, os.Stdin)
			close(eof)
		}()
	}
	select {
	case err := <-serveErr:
		return err
	case <-stop:
	case <-eof:
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(ctx); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func pushBase(args []string) error {
	fs := flag.NewFlagSet("push-base", flag.ExitOnError)
	ref := fs.String("ref", "", "where to push, e.g. localhost:5000/spright/base:static (required)")
	var bf baseFlags
	bf.register(fs)
	_ = fs.Parse(args)
	if *ref == "" {
		return errors.New("push-base: -ref is required")
	}
	d, err := buildAndPush(*ref, bf)
	if err != nil {
		return err
	}
	fmt.Printf("%s@%s\n", *ref, d)
	return nil
}

func baseDigest(args []string) error {
	fs := flag.NewFlagSet("base-digest", flag.ExitOnError)
	var bf baseFlags
	bf.register(fs)
	_ = fs.Parse(args)
	img, err := baseImage(bf)
	if err != nil {
		return err
	}
	d, err := img.Digest()
	if err != nil {
		return err
	}
	fmt.Println(d)
	return nil
}

func buildAndPush(refStr string, bf baseFlags) (v1.Hash, error) {
	ref, err := name.ParseReference(refStr)
	if err != nil {
		return v1.Hash{}, err
	}
	img, err := baseImage(bf)
	if err != nil {
		return v1.Hash{}, err
	}
	if err := remote.Write(ref, img); err != nil {
		return v1.Hash{}, err
	}
	return img.Digest()
}

// baseImage is one layer on top of nothing: /etc/passwd and /etc/group with
// root and nonroot (65532), the CA bundle, /tmp and /home/nonroot. Every
// timestamp is the epoch, so the digest only changes with the CA bundle.
func baseImage(bf baseFlags) (v1.Image, error) {
	plat, err := v1.ParsePlatform(bf.platform)
	if err != nil {
		return nil, err
	}
	if plat.OS == "" || plat.Architecture == "" {
		return nil, fmt.Errorf("platform %q: want os/arch", bf.platform)
	}
	layerTar, err := baseLayerTar(bf.caBundle)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}

	img := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	img = mutate.ConfigMediaType(img, types.OCIConfigJSON)
	img, err = mutate.Append(img, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{CreatedBy: "spright kolocal: passwd, group, CA bundle, /tmp", Created: v1.Time{Time: time.Unix(0, 0).UTC()}},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS = plat.OS
	cf.Architecture = plat.Architecture
	cf.Variant = plat.Variant
	cf.Created = v1.Time{Time: time.Unix(0, 0).UTC()}
	cf.Config.User = fmt.Sprintf("%d:%d", nonrootID, nonrootID)
	cf.Config.WorkingDir = "/home/nonroot"
	cf.Config.Env = []string{
		"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
	}
	if bf.caBundle != "" {
		cf.Config.Env = append(cf.Config.Env, "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt")
	}
	return mutate.ConfigFile(img, cf)
}

func baseLayerTar(caBundle string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	epoch := time.Unix(0, 0).UTC()
	dir := func(p string, mode int64, uid int) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: p + "/", Mode: mode, Uid: uid, Gid: uid, ModTime: epoch, Format: tar.FormatPAX})
	}
	file := func(p string, mode int64, data []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: p, Mode: mode, Size: int64(len(data)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(data)
		return err
	}
	passwd := strings.Join([]string{
		"root:x:0:0:root:/root:/sbin/nologin",
		fmt.Sprintf("nonroot:x:%d:%d:nonroot:/home/nonroot:/sbin/nologin", nonrootID, nonrootID),
		"nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin",
	}, "\n") + "\n"
	group := strings.Join([]string{
		"root:x:0:",
		fmt.Sprintf("nonroot:x:%d:", nonrootID),
		"nogroup:x:65534:",
	}, "\n") + "\n"

	steps := []func() error{
		func() error { return dir("etc", 0o755, 0) },
		func() error { return file("etc/passwd", 0o644, []byte(passwd)) },
		func() error { return file("etc/group", 0o644, []byte(group)) },
		func() error { return dir("home", 0o755, 0) },
		func() error { return dir("home/nonroot", 0o700, nonrootID) },
		func() error { return dir("root", 0o700, 0) },
		func() error { return dir("tmp", 0o1777, 0) },
	}
	if caBundle != "" {
		ca, err := os.ReadFile(caBundle)
		if err != nil {
			return nil, fmt.Errorf("CA bundle (Debian: apt-get install ca-certificates; or -ca-bundle \"\"): %w", err)
		}
		steps = append(steps,
			func() error { return dir("etc/ssl", 0o755, 0) },
			func() error { return dir("etc/ssl/certs", 0o755, 0) },
			func() error { return file("etc/ssl/certs/ca-certificates.crt", 0o644, ca) },
		)
	}
	for _, s := range steps {
		if err := s(); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
