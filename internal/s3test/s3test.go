// Package s3test runs a real S3-compatible server for tests: versitygw
// (github.com/versity/versitygw), built from its Go module once into
// $HOME/.cache/egress-authz/bin and started on a free loopback port with
// its POSIX backend in a temporary directory. No fakes: the decision
// log's S3 sink and store are tested against a server nobody here wrote.
// A test is skipped, saying why, only where the server cannot be built.
package s3test

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
	"sync"
	"syscall"
	"testing"
	"time"
)

// Version is the versitygw release the tests run.
const Version = "v1.8.0"

// The credentials of the server's one account.
const (
	AccessKey = "egress-authz-test"
	SecretKey = "egress-authz-test-secret"
	Region    = "us-east-1"
)

var (
	buildOnce sync.Once
	binary    string
	buildErr  error
)

// build installs versitygw into the cache unless it is there.
func build() (string, error) {
	home, err := os.UserCacheDir()
	if err != nil {
		home = os.TempDir()
	}
	dir := filepath.Join(home, "egress-authz", "bin")
	bin := filepath.Join(dir, "versitygw-"+Version)
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(filepath.Join(dir, ".versitygw.lock"), os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", err
	}
	if _, err := os.Stat(bin); err == nil {
		return bin, nil
	}
	tmp, err := os.MkdirTemp(dir, ".build-")
	if err != nil {
		return "", err
	}
	defer os.RemoveAll(tmp)
	cmd := exec.Command("go", "install", "github.com/versity/versitygw/cmd/versitygw@"+Version)
	cmd.Env = append(os.Environ(), "GOBIN="+tmp, "GOFLAGS=-buildvcs=false", "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("go install versitygw@%s: %v\n%s", Version, err, out)
	}
	if err := os.Rename(filepath.Join(tmp, "versitygw"), bin); err != nil {
		return "", err
	}
	return bin, nil
}

// Server is a running versitygw.
type Server struct {
	Endpoint string // http://127.0.0.1:PORT
	dir      string
	addr     string
	cmd      *exec.Cmd
	log      *bytes.Buffer
	tb       testing.TB
}

// Start starts a server (stopped when the test ends) and points the AWS
// SDK of this process at it (AWS_ENDPOINT_URL_S3, credentials, region),
// for the test's duration.
func Start(tb testing.TB) *Server {
	tb.Helper()
	buildOnce.Do(func() { binary, buildErr = build() })
	if buildErr != nil {
		tb.Skipf("versitygw cannot be built, so the S3 tests do not run: %v", buildErr)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	addr := l.Addr().String()
	l.Close()
	s := &Server{Endpoint: "http://" + addr, dir: tb.TempDir(), addr: addr, tb: tb}
	if err := os.MkdirAll(filepath.Join(s.dir, "data"), 0o755); err != nil {
		tb.Fatal(err)
	}
	s.start()
	tb.Cleanup(s.Stop)
	for k, v := range s.Env() {
		tb.Setenv(k, v)
	}
	return s
}

// Env is the environment an egress-authz process needs to use the server.
func (s *Server) Env() map[string]string {
	return map[string]string{
		"AWS_ENDPOINT_URL_S3": s.Endpoint, "AWS_ACCESS_KEY_ID": AccessKey, "AWS_SECRET_ACCESS_KEY": SecretKey,
		"AWS_REGION": Region, "AWS_EC2_METADATA_DISABLED": "true",
	}
}

// EnvList is Env as KEY=VALUE strings.
func (s *Server) EnvList() []string {
	var out []string
	for k, v := range s.Env() {
		out = append(out, k+"="+v)
	}
	return out
}

func (s *Server) start() {
	s.tb.Helper()
	s.log = &bytes.Buffer{}
	s.cmd = exec.Command(binary, "--access", AccessKey, "--secret", SecretKey, "--region", Region,
		"--port", s.addr, "posix", filepath.Join(s.dir, "data"))
	s.cmd.Stdout, s.cmd.Stderr = s.log, s.log
	if err := s.cmd.Start(); err != nil {
		s.tb.Fatalf("start versitygw: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		resp, err := http.Get(s.Endpoint + "/")
		if err == nil {
			resp.Body.Close()
			return
		}
		if time.Now().After(deadline) {
			s.Stop()
			s.tb.Fatalf("versitygw did not answer on %s: %v\n%s", s.addr, err, s.log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop stops the server; its data stays for Restart.
func (s *Server) Stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Restart starts a stopped server again on the same port and data.
func (s *Server) Restart() {
	s.tb.Helper()
	s.start()
}

// Bucket creates a bucket (a directory of the POSIX backend) and returns
// its name.
func (s *Server) Bucket(name string) string {
	s.tb.Helper()
	if err := os.MkdirAll(filepath.Join(s.dir, "data", name), 0o755); err != nil {
		s.tb.Fatal(err)
	}
	return name
}

// ObjectPath is where the POSIX backend keeps an object: a test edits or
// removes objects there as an attacker with access to the bucket would.
func (s *Server) ObjectPath(bucket, key string) string {
	return filepath.Join(s.dir, "data", bucket, filepath.FromSlash(key))
}

// WaitStopped is for tests that need the port closed.
func (s *Server) WaitStopped(ctx context.Context) error {
	for {
		c, err := net.DialTimeout("tcp", s.addr, 100*time.Millisecond)
		if err != nil {
			return nil
		}
		c.Close()
		select {
		case <-ctx.Done():
			return errors.New("still listening")
		case <-time.After(20 * time.Millisecond):
		}
	}
}
