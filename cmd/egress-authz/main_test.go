package main

// End-to-end tests of the egress-authz binary. TestMain builds it once;
// every test runs it as a subprocess in its own working directory (so that
// ./data is the test's own) and talks to it over loopback sockets, as a
// platform engineer and the egress gateway would.

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	_ "modernc.org/sqlite" // to read and tamper with the decision log as an auditor (or attacker) would
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/ with the binary's output")

// binPath is the egress-authz binary TestMain built.
var binPath string

func TestMain(m *testing.M) {
	flag.Parse()
	dir, err := os.MkdirTemp("", "egress-authz-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "egress-authz")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: go build: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// cliTimeout bounds one run of a CLI command (check, rules, audit).
const cliTimeout = 30 * time.Second

// result is what one CLI run printed and returned.
type result struct {
	stdout, stderr string
	code           int
}

func (r result) String() string {
	return fmt.Sprintf("exit %d\n--- stdout:\n%s--- stderr:\n%s", r.code, r.stdout, r.stderr)
}

// runCLI runs the binary with args in dir and returns its output and exit
// status. It fails the test when the binary cannot be run or hangs.
func runCLI(t *testing.T, dir string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), cliTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, binPath, args...)
	cmd.Dir = dir
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("egress-authz %s: still running after %s\n%s%s", strings.Join(args, " "), cliTimeout, stdout.String(), stderr.String())
	}
	var exit *exec.ExitError
	if err != nil && !errors.As(err, &exit) {
		t.Fatalf("egress-authz %s: %v", strings.Join(args, " "), err)
	}
	return result{stdout: stdout.String(), stderr: stderr.String(), code: cmd.ProcessState.ExitCode()}
}

// serverStartTimeout bounds how long a server may take to log "serving";
// generous because the machine may be busy compiling.
const serverStartTimeout = 20 * time.Second

// proc is one running "egress-authz serve".
type proc struct {
	t         *testing.T
	cmd       *exec.Cmd
	dir       string // working directory: ./data lives here
	grpcAddr  string
	adminAddr string
	log       *logWriter
	done      chan struct{} // closed when the process has exited
}

// startServer runs "egress-authz serve" in dir on loopback ports chosen by
// the kernel, with a plaintext gRPC listener and JSON logs, plus extra
// flags (at least --rules). It returns once the server logged "serving",
// and stops the server (SIGTERM, then SIGKILL) when the test ends.
func startServer(t *testing.T, dir string, extra ...string) *proc {
	t.Helper()
	return startServerEnv(t, dir, nil, extra...)
}

// startServerEnv is startServer with env (KEY=VALUE) added to the
// test's environment.
func startServerEnv(t *testing.T, dir string, env []string, extra ...string) *proc {
	t.Helper()
	args := append([]string{"serve",
		"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
		"--plaintext", "--log-format", "json"}, extra...)
	p := &proc{t: t, cmd: exec.Command(binPath, args...), dir: dir, log: newLogWriter(), done: make(chan struct{})}
	p.cmd.Dir = dir
	if env != nil {
		p.cmd.Env = append(os.Environ(), env...)
	}
	p.cmd.Stdout = io.Discard
	p.cmd.Stderr = p.log
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start egress-authz serve: %v", err)
	}
	go func() {
		_ = p.cmd.Wait()
		close(p.done)
	}()
	t.Cleanup(func() {
		if !p.exited() {
			_ = p.cmd.Process.Signal(syscall.SIGTERM)
			select {
			case <-p.done:
			case <-time.After(20 * time.Second):
				_ = p.cmd.Process.Kill()
				<-p.done
				t.Errorf("server did not stop within 20 s of SIGTERM")
			}
		}
		if t.Failed() {
			t.Logf("server log (%s):\n%s", strings.Join(args, " "), p.log.String())
		}
	})
	select {
	case <-p.log.serving:
		p.grpcAddr, p.adminAddr = p.log.addrs()
	case <-p.done:
		t.Fatalf("server exited before serving: exit %d\n%s", p.cmd.ProcessState.ExitCode(), p.log.String())
	case <-time.After(serverStartTimeout):
		t.Fatalf("server did not log \"serving\" within %s\n%s", serverStartTimeout, p.log.String())
	}
	return p
}

func (p *proc) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// terminate sends SIGTERM and waits at most timeout for the process to
// exit. It returns the exit status and how long the exit took.
func (p *proc) terminate(timeout time.Duration) (int, time.Duration) {
	p.t.Helper()
	start := time.Now()
	if err := p.cmd.Process.Signal(syscall.SIGTERM); err != nil {
		p.t.Fatalf("SIGTERM: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(timeout):
		_ = p.cmd.Process.Kill()
		<-p.done
		p.t.Fatalf("server did not exit within %s of SIGTERM", timeout)
	}
	return p.cmd.ProcessState.ExitCode(), time.Since(start)
}

// kill sends SIGKILL (no chance to drain anything) and waits for the exit.
func (p *proc) kill() {
	p.t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		p.t.Fatalf("SIGKILL: %v", err)
	}
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		p.t.Fatalf("server did not die within 10 s of SIGKILL")
	}
}

func (p *proc) signal(sig os.Signal) {
	p.t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		p.t.Fatalf("signal %v: %v", sig, err)
	}
}

// auditDSN is the server's default decision log: Parquet segments in
// its data directory.
func (p *proc) auditDSN() string { return "parquet:" + filepath.Join(p.dir, "data", "decisions") }

// logWriter collects the server's stderr and notices the "serving" line.
type logWriter struct {
	mu        sync.Mutex
	buf       bytes.Buffer
	partial   []byte
	serving   chan struct{}
	grpc, adm string
}

func newLogWriter() *logWriter { return &logWriter{serving: make(chan struct{})} }

func (w *logWriter) Write(b []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(b)
	w.partial = append(w.partial, b...)
	for {
		i := bytes.IndexByte(w.partial, '\n')
		if i < 0 {
			break
		}
		line := w.partial[:i]
		var entry struct {
			Msg       string `json:"msg"`
			GRPCAddr  string `json:"grpc_addr"`
			AdminAddr string `json:"admin_addr"`
		}
		if json.Unmarshal(line, &entry) == nil && entry.Msg == "serving" && w.grpc == "" {
			w.grpc, w.adm = entry.GRPCAddr, entry.AdminAddr
			close(w.serving)
		}
		w.partial = w.partial[i+1:]
	}
	return len(b), nil
}

func (w *logWriter) addrs() (string, string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.grpc, w.adm
}

func (w *logWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.String()
}

// eventually polls cond every interval until it reports true or timeout
// passes; then it fails the test with cond's last explanation. It returns
// how long it took.
func eventually(t *testing.T, timeout, interval time.Duration, what string, cond func() (bool, string)) time.Duration {
	t.Helper()
	start := time.Now()
	for {
		ok, detail := cond()
		if ok {
			return time.Since(start)
		}
		if time.Since(start) > timeout {
			t.Fatalf("%s: not within %s: %s", what, timeout, detail)
		}
		time.Sleep(interval)
	}
}

// httpGet fetches url from the admin listener.
func httpGet(t *testing.T, url string, header map[string]string) (*http.Response, string) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("GET %s: read body: %v", url, err)
	}
	return resp, string(body)
}

// openDB opens a SQLite file directly, bypassing the binary.
func openDB(t *testing.T, path string) *sql.DB {
	t.Helper()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("decision log: %v", err)
	}
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// queriedRecord is the part of a decision record, as "audit query --format
// json" and GET /v1/decisions print it, that the tests look at.
type queriedRecord struct {
	Time      string `json:"time"`
	RequestID string `json:"request_id"`
	Principal string `json:"principal"`
	Namespace string `json:"namespace"`
	Host      string `json:"host"`
	Port      int    `json:"port"`
	Method    string `json:"method"`
	Path      string `json:"path"`
	Decision  string `json:"decision"`
	Enforced  bool   `json:"enforced"`
	Rule      string `json:"rule"`
	Owner     string `json:"owner"`
	Ticket    string `json:"ticket"`
	Reason    string `json:"reason"`
	Writer    string `json:"writer"`
	Seq       uint64 `json:"seq"`
	Hash      string `json:"hash"`
}

// queryPage is the JSON document of "audit query --format json" and of
// GET /v1/decisions.
type queryPage struct {
	Records    []queriedRecord `json:"records"`
	Count      int             `json:"count"`
	NextCursor string          `json:"next_cursor"`
}

func decodePage(t *testing.T, what, body string) queryPage {
	t.Helper()
	var page queryPage
	if err := json.Unmarshal([]byte(body), &page); err != nil {
		t.Fatalf("%s: not the JSON query document: %v\n%s", what, err, body)
	}
	if page.Count != len(page.Records) {
		t.Errorf("%s: count %d, but %d records", what, page.Count, len(page.Records))
	}
	return page
}

// freeAddr returns a loopback address nothing listens on.
func freeAddr(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

// writeFile writes data to path atomically, as editors and git do: a
// temporary file in the same directory renamed over the old one.
func writeFile(t *testing.T, path, data string) {
	t.Helper()
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

// examplesPath is the example rule set the README's tour serves.
func examplesPath(t *testing.T) string {
	t.Helper()
	p, err := filepath.Abs(filepath.Join("..", "..", "deploy", "examples", "rules.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	return p
}
