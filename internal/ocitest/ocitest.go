// Package ocitest runs a real OCI registry for tests: the CNCF
// distribution registry (the reference implementation of the OCI
// distribution spec, "registry:2" of Docker Hub), built once from its Go
// module into a cache directory and reused, started on a free loopback
// port with filesystem storage in the test's temporary directory and TLS
// with the certificate the test gives it. Nothing leaves loopback: the
// registry has no proxy, no notifications, no Redis and no trace export.
//
// It imports no code of egress-authz, so that the tests of any package
// can use it. Every helper that can fail takes a testing.TB and fails the
// test on its own errors; a test is skipped, saying why, only when the
// registry cannot be built (no Go toolchain, no module proxy).
package ocitest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	ocispec "github.com/opencontainers/image-spec/specs-go/v1"
	"oras.land/oras-go/v2"
	"oras.land/oras-go/v2/content"
	"oras.land/oras-go/v2/errdef"
	"oras.land/oras-go/v2/registry/remote"
	"oras.land/oras-go/v2/registry/remote/auth"
)

// Module and Version are what Binary builds.
const (
	Module  = "github.com/distribution/distribution/v3/cmd/registry"
	Version = "v3.1.2"
)

// buildTimeout bounds building the registry: about a minute on two cores,
// more the first time, when its modules are downloaded.
const buildTimeout = 10 * time.Minute

var (
	binOnce sync.Once
	binPath string
	binErr  error
)

// CacheDir is where Binary keeps the registry: $EGRESS_AUTHZ_CACHE/bin,
// else the user's cache directory ($HOME/.cache) /egress-authz/bin.
func CacheDir() (string, error) {
	if dir := os.Getenv("EGRESS_AUTHZ_CACHE"); dir != "" {
		return filepath.Join(dir, "bin"), nil
	}
	dir, err := os.UserCacheDir()
	if err != nil {
		return "", err
	}
	return filepath.Join(dir, "egress-authz", "bin"), nil
}

// Binary returns the path of the registry binary, building it with "go
// install Module@Version" the first time. Test binaries of several
// packages may ask at once: a lock file makes one build and the others
// wait for it.
func Binary() (string, error) {
	binOnce.Do(func() { binPath, binErr = binary() })
	return binPath, binErr
}

func binary() (string, error) {
	dir, err := CacheDir()
	if err != nil {
		return "", err
	}
	path := filepath.Join(dir, "registry-"+Version)
	if st, err := os.Stat(path); err == nil && st.Mode().IsRegular() {
		return path, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".registry.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	defer syscall.Flock(int(lock.Fd()), syscall.LOCK_UN)
	if _, err := os.Stat(path); err == nil {
		return path, nil // built while we waited
	}
	gobin, err := os.MkdirTemp(dir, ".build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(gobin)
	ctx, cancel := context.WithTimeout(context.Background(), buildTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "go", "install", Module+"@"+Version)
	cmd.Dir = gobin // outside any module: go.work and GOFLAGS=-mod play no part
	cmd.Env = append(os.Environ(), "GOBIN="+gobin, "CGO_ENABLED=0", "GOWORK=off", "GOFLAGS=-buildvcs=false")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install %s@%s: %v\n%s", Module, Version, err, out)
	}
	if err := os.Rename(filepath.Join(gobin, "registry"), path); err != nil {
		return "", err
	}
	return path, nil
}

// Registry is a running registry.
type Registry struct {
	// Host is its HOST:PORT on 127.0.0.1.
	Host string
	// Client trusts the registry's certificate; Start's caller gave the
	// pool.
	Client *http.Client

	cmd  *exec.Cmd
	log  *bytes.Buffer
	done chan struct{}
	stop sync.Once
}

// Start starts a registry serving TLS with the certificate and key in
// certFile and keyFile (PEM, valid for 127.0.0.1), verified by client,
// and stops it when the test ends. It skips the test if the registry
// cannot be built, and fails it if the registry does not come up.
func Start(tb testing.TB, certFile, keyFile string, client *http.Client) *Registry {
	tb.Helper()
	bin, err := Binary()
	if err != nil {
		tb.Skipf("ocitest: the distribution registry cannot be built, so this test cannot run: %v", err)
	}
	dir := tb.TempDir()
	var lastErr error
	for attempt := 0; attempt < 3; attempt++ {
		r, err := start(tb, bin, dir, certFile, keyFile, client)
		if err == nil {
			tb.Cleanup(r.Stop)
			return r
		}
		lastErr = err
	}
	tb.Fatalf("ocitest: the registry did not start: %v", lastErr)
	return nil
}

func start(tb testing.TB, bin, dir, certFile, keyFile string, client *http.Client) (*Registry, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	host := "127.0.0.1:" + strconv.Itoa(port)
	config := filepath.Join(dir, "config.yml")
	if err := os.WriteFile(config, []byte(fmt.Sprintf(configTemplate, filepath.Join(dir, "storage"), host, certFile, keyFile)), 0o600); err != nil {
		return nil, err
	}
	r := &Registry{Host: host, Client: client, log: &bytes.Buffer{}, done: make(chan struct{})}
	r.cmd = exec.Command(bin, "serve", config)
	// Nothing inherited: REGISTRY_* variables would override the config,
	// and the trace exporter would look for a collector.
	r.cmd.Env = []string{"HOME=" + dir, "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_SDK_DISABLED=true"}
	r.cmd.Stdout, r.cmd.Stderr = r.log, r.log
	if err := r.cmd.Start(); err != nil {
		return nil, err
	}
	go func() { _ = r.cmd.Wait(); close(r.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-r.done:
			return nil, fmt.Errorf("registry exited: %s\n%s", r.cmd.ProcessState, r.log)
		default:
		}
		resp, err := client.Get("https://" + host + "/v2/")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return r, nil
			}
		}
		if time.Now().After(deadline) {
			r.Stop()
			return nil, fmt.Errorf("GET https://%s/v2/ not 200 within 20 s (%v)\n%s", host, err, r.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// configTemplate is the registry's configuration: storage dir, listen
// address, certificate, key. The access log is off (it goes to stdout
// per request), and so is upload purging (a background job).
const configTemplate = `version: 0.1
log:
  level: warn
  accesslog:
    disabled: true
storage:
  filesystem:
    rootdirectory: %s
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: %s
  secret: ocitest-not-a-secret
  tls:
    certificate: %s
    key: %s
`

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// Stop stops the registry (a source gone down); the test's cleanup calls
// it too.
func (r *Registry) Stop() {
	r.stop.Do(func() {
		_ = r.cmd.Process.Kill()
		<-r.done
	})
}

// Log is what the registry wrote.
func (r *Registry) Log() string { return r.log.String() }

// Layer is one layer of an artifact.
type Layer struct {
	MediaType string
	Data      []byte
	// Title is the file name ("org.opencontainers.image.title"), as
	// oras push records it.
	Title string
}

// Push pushes an artifact of artifactType with layers to
// REPOSITORY:TAG, as "oras push HOST/REPOSITORY:TAG FILE:MEDIATYPE
// --artifact-type TYPE" does (an OCI 1.1 image manifest, the empty
// config), and returns the manifest's digest.
func (r *Registry) Push(tb testing.TB, repository, tag, artifactType string, layers ...Layer) string {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	repo, err := remote.NewRepository(r.Host + "/" + repository)
	if err != nil {
		tb.Fatal(err)
	}
	repo.Client = &auth.Client{Client: r.Client}
	var descs []ocispec.Descriptor
	for _, l := range layers {
		desc := content.NewDescriptorFromBytes(l.MediaType, l.Data)
		if l.Title != "" {
			desc.Annotations = map[string]string{ocispec.AnnotationTitle: l.Title}
		}
		if err := repo.Push(ctx, desc, bytes.NewReader(l.Data)); err != nil && !errors.Is(err, errdef.ErrAlreadyExists) {
			tb.Fatalf("ocitest: push layer: %v", err)
		}
		descs = append(descs, desc)
	}
	manifest, err := oras.PackManifest(ctx, repo, oras.PackManifestVersion1_1, artifactType, oras.PackManifestOptions{Layers: descs})
	if err != nil {
		tb.Fatalf("ocitest: push manifest: %v", err)
	}
	if err := repo.Tag(ctx, manifest, tag); err != nil {
		tb.Fatalf("ocitest: tag %s: %v", tag, err)
	}
	return manifest.Digest.String()
}
