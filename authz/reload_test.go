package authz_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/egress-authz/egress-authz/authz"
	"github.com/egress-authz/egress-authz/authz/authztest"
	"github.com/egress-authz/egress-authz/rules"
)

// flipRules is a rule set deciding the reload tests' request R: allowed by
// flip-allow, or denied by flip-deny. Both let crawler reach example.com,
// so that the load also carries decisions a reload does not change.
func flipRules(allow bool) string {
	flip := "  - {id: flip-allow, action: allow, from: {namespaces: [payments]}, to: {hosts: [api.flip.test]}}\n"
	if !allow {
		flip = "  - {id: flip-deny, action: deny, to: {hosts: [api.flip.test]}}\n"
	}
	return `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
` + flip + `  - {id: crawler-example, action: allow, from: {principals: ["` + crawler + `"]}, to: {hosts: [example.com], methods: [GET]}}
`
}

// ruleFiles writes rule sets where a Reloader watches them.
type ruleFiles interface {
	path() string // what --rules names
	write(data string)
}

// configMapFiles is a directory kept as the kubelet keeps a ConfigMap
// volume: rules.yaml -> ..data/rules.yaml, ..data -> a timestamped
// directory, and an update renames a new ..data symlink over the old one.
type configMapFiles struct {
	t   *testing.T
	dir string
	n   int
	cur string
}

func (c *configMapFiles) path() string { return c.dir }

func (c *configMapFiles) write(data string) {
	t := c.t
	t.Helper()
	c.n++
	ts := fmt.Sprintf("..2026_11_22_01_%02d_00.%09d", c.n, c.n)
	if err := os.Mkdir(filepath.Join(c.dir, ts), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(c.dir, ts, "rules.yaml"), []byte(data), 0o644); err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(c.dir, "..data_tmp")
	if err := os.Symlink(ts, tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, filepath.Join(c.dir, "..data")); err != nil {
		t.Fatal(err)
	}
	if c.cur == "" {
		if err := os.Symlink(filepath.Join("..data", "rules.yaml"), filepath.Join(c.dir, "rules.yaml")); err != nil {
			t.Fatal(err)
		}
	} else if err := os.RemoveAll(filepath.Join(c.dir, c.cur)); err != nil {
		t.Fatal(err)
	}
	c.cur = ts
}

// renamedFile is a single rule file replaced by writing a temporary file
// and renaming it over the old one.
type renamedFile struct {
	t   *testing.T
	dir string
}

func (f *renamedFile) path() string { return filepath.Join(f.dir, "rules.yaml") }

func (f *renamedFile) write(data string) {
	f.t.Helper()
	tmp := filepath.Join(f.dir, "rules.yaml.tmp")
	if err := os.WriteFile(tmp, []byte(data), 0o644); err != nil {
		f.t.Fatal(err)
	}
	if err := os.Rename(tmp, f.path()); err != nil {
		f.t.Fatal(err)
	}
}

// countingTB counts the failures verdictOf reports from many goroutines,
// and lets the first few through to the test.
type countingTB struct {
	testing.TB
	n *atomic.Int64
}

func (c countingTB) Helper() {}

func (c countingTB) Errorf(format string, args ...any) {
	if c.n.Add(1) <= 10 {
		c.TB.Errorf(format, args...)
	}
}

func TestCheckReloadConfigMapUnderLoad(t *testing.T) {
	reloadUnderLoad(t, &configMapFiles{t: t, dir: t.TempDir()}, 5)
}

func TestCheckReloadRenamedFileUnderLoad(t *testing.T) {
	reloadUnderLoad(t, &renamedFile{t: t, dir: t.TempDir()}, 3)
}

// reloadUnderLoad serves the rules in files through a real gRPC server,
// with a Reloader watching them, while 32 callers send Checks without
// pause. It swaps the rules swaps times between a set that allows R and
// one that denies it, and requires every swap to be served within 2 s and
// every Check to be answered, well-formed, by one of the two sets.
func reloadUnderLoad(t *testing.T, files ruleFiles, swaps int) {
	const (
		workers  = 32
		deadline = 2 * time.Second
		hold     = 300 * time.Millisecond // load on each set once it is served
	)
	files.write(flipRules(true))
	set, err := rules.Load(files.path())
	if err != nil {
		t.Fatal(err)
	}
	table, err := rules.Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	versions := map[bool]string{}
	for _, allow := range []bool{true, false} {
		versions[allow] = rules.Version(rules.Source{Name: "rules.yaml", Data: []byte(flipRules(allow))})
	}
	if table.Version() != versions[true] {
		t.Fatalf("loaded version %s, want %s", table.Version(), versions[true])
	}
	live := rules.NewLive(table, rules.LiveOptions{CacheSize: 1000})
	reloader := rules.NewReloader(files.path(), live, rules.ReloaderOptions{Logger: slog.New(slog.DiscardHandler)})
	ctx, cancel := context.WithCancel(context.Background())
	runDone := make(chan error, 1)
	go func() { runDone <- reloader.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runDone; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	s := authztest.NewServer(t, live, authz.Options{})

	r := httpReq(checkout, "POST", "https://api.flip.test/v1/charges")
	load := []*authv3.CheckRequest{
		r,
		tlsReq(refunds, "api.flip.test", 443),
		httpReq(crawler, "GET", "https://example.com/"),
		httpReq(crawler, "POST", "https://example.com/"),
		httpReq(checkout, "GET", "https://api.flip.test/v1/items/1"),
		httpReq(checkout, "GET", "https://api.flip.test/v1/items/2"),
	}
	// answer reports whether v is what the set allowing R (allow) or the
	// one denying it answers to load[i].
	answer := func(i int, v verdict, allow bool) bool {
		if v.RuleSet != versions[allow] {
			return false
		}
		switch i {
		case 2:
			return v.Allow && v.Rule == "crawler-example"
		case 3:
			return !v.Allow && v.Reason == string(rules.ReasonNoMatchingRule) && v.Rule == ""
		}
		if allow {
			return v.Allow && v.Rule == "flip-allow"
		}
		return !v.Allow && v.Reason == string(rules.ReasonDeniedByRule) && v.Rule == "flip-deny"
	}

	var failures, checks atomic.Int64
	tb := countingTB{TB: t, n: &failures}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for n := w; ; n++ {
				select {
				case <-stop:
					return
				default:
				}
				i := n % len(load)
				cctx, ccancel := context.WithTimeout(context.Background(), authztest.Timeout)
				resp, err := s.Client.Check(cctx, load[i])
				ccancel()
				checks.Add(1)
				if err != nil {
					tb.Errorf("worker %d: Check %d: gRPC error %v", w, i, err)
					continue
				}
				if v := verdictOf(tb, resp); !answer(i, v, true) && !answer(i, v, false) {
					tb.Errorf("worker %d: Check %d answered %+v: neither set's answer", w, i, v)
				}
			}
		})
	}
	stopLoad := sync.OnceFunc(func() {
		close(stop)
		wg.Wait()
	})
	defer stopLoad()

	time.Sleep(hold)
	var latencies []time.Duration
	for n := 1; n <= swaps; n++ {
		allow := n%2 == 0
		start := time.Now()
		files.write(flipRules(allow))
		for {
			v := verdictOf(tb, s.Check(t, r))
			if answer(0, v, allow) {
				break
			}
			if time.Since(start) > deadline {
				t.Fatalf("swap %d (allow %v): R still answered %+v after %v", n, allow, v, deadline)
			}
			time.Sleep(10 * time.Millisecond)
		}
		latencies = append(latencies, time.Since(start))
		time.Sleep(hold)
	}
	stopLoad()

	st := reloader.Status()
	t.Logf("%d swaps served after %v; %d Checks by %d callers, %d failures; %d reloads, %d failed",
		swaps, latencies, checks.Load(), workers, failures.Load(), st.Reloads, st.Failures)
	if n := failures.Load(); n != 0 {
		t.Errorf("%d failed Checks, want none", n)
	}
	if checks.Load() < int64(workers) {
		t.Errorf("only %d Checks were sent: the load never ran", checks.Load())
	}
	if gen, _ := live.Generation(); st.Reloads != uint64(swaps) || st.Failures != 0 || gen != uint64(swaps+1) {
		t.Errorf("%d reloads, %d failed, generation %d; want exactly %d reloads, one per swap, none failed",
			st.Reloads, st.Failures, gen, swaps)
	}
}
