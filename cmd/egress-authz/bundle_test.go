package main

// The signed bundle for many clusters, end to end: the real server pulls
// bundles from an HTTPS server (the test's) and from a real OCI registry
// (the CNCF distribution registry, internal/ocitest), and every decision
// checked is a real Check sent by the check command.

import (
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/bundle"
	"github.com/egress-authz/egress-authz/internal/bundle/bundletest"
	"github.com/egress-authz/egress-authz/internal/ocitest"
	"github.com/egress-authz/egress-authz/internal/spiffetest"
	"github.com/egress-authz/egress-authz/rules"
)

// bundlePoll is the --rules-poll of these tests.
const bundlePoll = 200 * time.Millisecond

// pickedUpWithin bounds how long a new bundle may take to be served: one
// poll, plus room for a busy machine (each check is a process of its own,
// and make test runs every package at once). The poll itself is held to
// one period, to the millisecond, by rules' TestFetchReloaderPolls...; the
// times measured here are logged (about 150-200 ms on an idle machine).
const pickedUpWithin = bundlePoll + 3*time.Second

// bundleRules is a rule file allowing the checkout service to reach hosts.
func bundleRules(hosts ...string) string {
	s := reloadHead
	for i, h := range hosts {
		s += ruleFor("host-"+strconv.Itoa(i), h)
	}
	return s
}

// bundleSource is where the server pulls bundles from.
type bundleSource interface {
	ref() string
	caFile() string
	publish(t *testing.T, data []byte)
	stop()
}

// httpsBundles serves the last published bundle with an ETag, as a web
// server or an object store does.
type httpsBundles struct {
	srv     *httptest.Server
	ca      string
	mu      sync.Mutex
	data    []byte
	etag    string
	gets    int
	notMods int
}

func newHTTPSBundles(t *testing.T) *httpsBundles {
	h := &httpsBundles{}
	h.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.mu.Lock()
		defer h.mu.Unlock()
		h.gets++
		if r.URL.Path != "/rules/bundle.tar.gz" || h.data == nil {
			http.NotFound(w, r)
			return
		}
		if r.Header.Get("If-None-Match") == h.etag {
			h.notMods++
			w.WriteHeader(http.StatusNotModified)
			return
		}
		w.Header().Set("ETag", h.etag)
		w.Header().Set("Content-Type", bundle.MediaType)
		_, _ = w.Write(h.data)
	}))
	// A client refusing the test's certificate is a case of its own.
	h.srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	h.srv.StartTLS()
	t.Cleanup(h.srv.Close)
	h.ca = filepath.Join(t.TempDir(), "https-ca.pem")
	if err := os.WriteFile(h.ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: h.srv.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return h
}

func (h *httpsBundles) ref() string    { return h.srv.URL + "/rules/bundle.tar.gz" }
func (h *httpsBundles) caFile() string { return h.ca }
func (h *httpsBundles) stop()          { h.srv.Close() }
func (h *httpsBundles) publish(t *testing.T, data []byte) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.data = data
	h.etag = `"` + strconv.Itoa(len(data)) + "-" + strconv.FormatInt(time.Now().UnixNano(), 36) + `"`
}

func (h *httpsBundles) counts() (gets, notModified int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.gets, h.notMods
}

// ociBundles pushes bundles to a real registry, as oras push does in CI.
type ociBundles struct {
	reg *ocitest.Registry
	ca  string
}

func newOCIBundles(t *testing.T) *ociBundles {
	dir := t.TempDir()
	ca := spiffetest.NewCA(t, "registry CA")
	cert, key := ca.Issue(t, spiffetest.Loopback).WriteFiles(t, dir, "registry")
	caFile := filepath.Join(dir, "registry-ca.pem")
	spiffetest.WriteBundle(t, caFile, ca)
	client := &http.Client{Transport: &http.Transport{TLSClientConfig: spiffetest.ClientTLS(nil, ca)}, Timeout: 10 * time.Second}
	return &ociBundles{reg: ocitest.Start(t, cert, key, client), ca: caFile}
}

func (o *ociBundles) ref() string    { return "oci://" + o.reg.Host + "/platform/egress-rules:prod" }
func (o *ociBundles) caFile() string { return o.ca }
func (o *ociBundles) stop()          { o.reg.Stop() }
func (o *ociBundles) publish(t *testing.T, data []byte) {
	o.reg.Push(t, "platform/egress-rules", "prod", bundle.ArtifactType,
		ocitest.Layer{MediaType: bundle.MediaType, Data: data, Title: "bundle.tar.gz"})
}

// bundleStatus is the part of GET /v1/rules about bundles.
type bundleStatus struct {
	rulesStatus
	Path      string    `json:"path"`
	Source    string    `json:"source"`
	LastCheck time.Time `json:"last_check"`
	Bundle    *struct {
		Revision   string    `json:"revision"`
		Created    time.Time `json:"created"`
		Expires    time.Time `json:"expires"`
		Digest     string    `json:"digest"`
		SignedBy   []string  `json:"signed_by"`
		AgeSeconds float64   `json:"age_seconds"`
	} `json:"bundle"`
}

func getBundleStatus(t *testing.T, srv *proc) bundleStatus {
	t.Helper()
	_, body := httpGet(t, "http://"+srv.adminAddr+"/v1/rules", nil)
	var st bundleStatus
	if err := json.Unmarshal([]byte(body), &st); err != nil {
		t.Fatalf("GET /v1/rules: %v\n%s", err, body)
	}
	if st.Bundle == nil {
		t.Fatalf("GET /v1/rules: no bundle\n%s", body)
	}
	return st
}

// reloadErrors is egress_authz_rules_reloads_total{result="error"}.
func reloadErrors(t *testing.T, srv *proc) int {
	t.Helper()
	_, body := httpGet(t, "http://"+srv.adminAddr+"/metrics", nil)
	m := regexp.MustCompile(`(?m)^egress_authz_rules_reloads_total\{result="error"\} (\d+)$`).FindStringSubmatch(body)
	if m == nil {
		return 0
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// bundleArgs are the serve flags for a source and keys.
func bundleArgs(src bundleSource, pubFiles ...string) []string {
	args := []string{"--rules", src.ref(), "--rules-ca", src.caFile(), "--rules-poll", bundlePoll.String()}
	for _, f := range pubFiles {
		args = append(args, "--rules-public-key", f)
	}
	return args
}

// TestBundleFromOneSource is the issue's acceptance, once over HTTPS and
// once from an OCI registry: an update is served within one poll; a
// tampered, incomplete, padded, wrongly signed, unsigned, older or expired
// bundle is each refused with its own error, logged, counted and shown at
// /v1/rules, while the previous rules keep deciding; a valid bundle after
// them is served; and a replica restarted with the source down starts
// from the kept bundle.
func TestBundleFromOneSource(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  func(t *testing.T) bundleSource
	}{
		{"https", func(t *testing.T) bundleSource { return newHTTPSBundles(t) }},
		{"oci", func(t *testing.T) bundleSource { return newOCIBundles(t) }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := tc.src(t)
			dir := t.TempDir()
			key, stranger := bundletest.NewKey(t), bundletest.NewKey(t)
			_, pubFile := key.WriteFiles(t, dir, "ci")
			now := time.Now().UTC()
			const stripe, example = "https://api.stripe.com/v1/charges", "https://api.example.org/v1/things"
			build := func(rev string, created time.Time, hosts ...string) []byte {
				return bundletest.Build(t, rev, created, []string{"rules.yaml", bundleRules(hosts...)})
			}

			src.publish(t, bundletest.Sign(t, build("1", now.Add(-10*24*time.Hour), "api.stripe.com"), key))
			srv := startServer(t, dir, bundleArgs(src, pubFile)...)
			if code, out := checkExit(t, srv, stripe); code != 0 {
				t.Fatalf("revision 1: want allow\n%s", out)
			}
			if code, out := checkExit(t, srv, example); code != 3 {
				t.Fatalf("revision 1: want deny\n%s", out)
			}
			st := getBundleStatus(t, srv)
			if st.Bundle.Revision != "1" || !strings.HasPrefix(st.Source, src.ref()) || st.Path != src.ref() ||
				len(st.Bundle.SignedBy) != 1 || st.Bundle.SignedBy[0] != bundle.KeyID(key.Pub) || st.Bundle.AgeSeconds < 10*24*3600-60 {
				t.Errorf("revision 1: /v1/rules %+v, bundle %+v", st, st.Bundle)
			}

			// An update, picked up within one poll.
			published := time.Now()
			src.publish(t, bundletest.Sign(t, build("2", now.Add(-9*24*time.Hour), "api.stripe.com", "api.example.org"), key))
			took := untilDecision(t, srv, example, 0, pickedUpWithin, published)
			t.Logf("revision 2 served %s after it was published (--rules-poll %s)", took.Round(time.Millisecond), bundlePoll)
			good := getBundleStatus(t, srv)
			if good.Bundle.Revision != "2" || good.LastError != "" || time.Since(good.LastCheck) > time.Minute {
				t.Errorf("revision 2: /v1/rules %+v, bundle %+v", good, good.Bundle)
			}

			// Each refusal: a bundle newer than 2 by its created time
			// (unless it is the older one), allowing a host of its own.
			signed := func(rev string, created time.Time, host string) []byte {
				return bundletest.Sign(t, build(rev, created, "api.stripe.com", "api.example.org", host), key)
			}
			twoFiles := bundletest.Sign(t, bundletest.BuildInput(t, bundle.Input{Revision: "3", Created: now.Add(-24 * time.Hour),
				Expires: now.Add(29 * 24 * time.Hour), Rules: []rules.Source{
					{Name: "a.yaml", Data: []byte(bundleRules("api.stripe.com", "api.example.org", "missing.example"))},
					{Name: "deny.yaml", Data: []byte(reloadHead[:strings.Index(reloadHead, "rules:")] + "rules: []\n")},
				}}), key)
			refusals := []struct {
				name, host string
				data       []byte
				says       string
			}{
				{"tampered", "tampered.example",
					bundletest.Replace(t, signed("3", now.Add(-24*time.Hour), "harmless.example"), "rules/rules.yaml",
						bundleRules("api.stripe.com", "api.example.org", "tampered.example")),
					"file does not match the manifest: rules/rules.yaml"},
				{"missing_file", "missing.example", bundletest.Remove(t, twoFiles, "rules/deny.yaml"),
					"file in the manifest missing from the bundle: rules/deny.yaml"},
				{"extra_file", "extra.example",
					bundletest.Add(t, signed("3", now.Add(-24*time.Hour), "harmless.example"), "rules/zz-extra.yaml",
						strings.Replace(bundleRules("extra.example"), "trustDomains: [cluster.local]\n", "", 1)),
					"file in the bundle not in the manifest: rules/zz-extra.yaml"},
				{"bad_signature", "stranger.example",
					bundletest.Sign(t, build("3", now.Add(-24*time.Hour), "api.stripe.com", "api.example.org", "stranger.example"), stranger),
					"bad signature: signed by key " + bundle.KeyID(stranger.Pub)},
				{"unsigned", "unsigned.example", build("3", now.Add(-24*time.Hour), "api.stripe.com", "api.example.org", "unsigned.example"),
					"unsigned bundle: a public key is configured"},
				{"older_revision", "older.example", signed("0", now.Add(-20*24*time.Hour), "older.example"),
					"not newer than the active one: a rollback is refused: revision 0"},
				{"expired", "expired.example", bundletest.Sign(t, bundletest.BuildInput(t, bundle.Input{Revision: "3",
					Created: now.Add(-2 * 24 * time.Hour), Expires: now.Add(-24 * time.Hour),
					Rules: []rules.Source{{Name: "rules.yaml", Data: []byte(bundleRules("api.stripe.com", "api.example.org", "expired.example"))}}}), key),
					"expired bundle: revision 3 expired at"},
			}
			seen := map[string]bool{}
			for i, r := range refusals {
				src.publish(t, r.data)
				var st bundleStatus
				eventually(t, pickedUpWithin, 20*time.Millisecond, r.name+" refused at /v1/rules", func() (bool, string) {
					st = getBundleStatus(t, srv)
					return strings.Contains(st.LastError, r.says), "last_error: " + st.LastError
				})
				if seen[st.LastError] {
					t.Errorf("%s: the same error as another refusal: %s", r.name, st.LastError)
				}
				seen[st.LastError] = true
				if st.Bundle.Revision != "2" || st.Version != good.Version || st.Failures != uint64(i+1) {
					t.Errorf("%s: /v1/rules %+v, bundle %+v; want revision 2 served and %d failures", r.name, st, st.Bundle, i+1)
				}
				if code, out := checkExit(t, srv, example); code != 0 {
					t.Errorf("%s: the previous rules stopped deciding: want allow\n%s", r.name, out)
				}
				if code, out := checkExit(t, srv, "https://"+r.host+"/"); code != 3 {
					t.Errorf("%s: the refused bundle decides: want deny for %s\n%s", r.name, r.host, out)
				}
				if n := reloadErrors(t, srv); n != i+1 {
					t.Errorf("%s: %d reload errors counted, want %d", r.name, n, i+1)
				}
				if !strings.Contains(srv.log.String(), r.says) {
					t.Errorf("%s: the refusal is not logged", r.name)
				}
			}
			if resp, body := httpGet(t, "http://"+srv.adminAddr+"/readyz", nil); resp.StatusCode != http.StatusOK {
				t.Errorf("/readyz %s while refusing bundles; want 200 (the last good set is served)\n%s", resp.Status, body)
			}
			if h, ok := src.(*httpsBundles); ok {
				if gets, notMod := h.counts(); notMod == 0 || notMod >= gets {
					t.Errorf("%d GETs, %d answered 304: want conditional requests", gets, notMod)
				}
			}

			// A good bundle after all that is served.
			published = time.Now()
			src.publish(t, signed("4", now.Add(-time.Hour), "api.new.example"))
			took = untilDecision(t, srv, "https://api.new.example/", 0, pickedUpWithin, published)
			t.Logf("revision 4 served %s after it was published", took.Round(time.Millisecond))
			if st := getBundleStatus(t, srv); st.Bundle.Revision != "4" || st.LastError != "" {
				t.Errorf("revision 4: /v1/rules %+v, bundle %+v", st, st.Bundle)
			}

			// The source goes down and the replica restarts: it starts from
			// the kept bundle and serves it, and says the source is down.
			if code, _ := srv.terminate(20 * time.Second); code != 0 {
				t.Errorf("SIGTERM: exit %d", code)
			}
			src.stop()
			again := startServer(t, dir, bundleArgs(src, pubFile)...)
			if code, out := checkExit(t, again, "https://api.new.example/"); code != 0 {
				t.Errorf("restarted with the source down: want revision 4's allow\n%s", out)
			}
			var kept bundleStatus
			eventually(t, pickedUpWithin, 20*time.Millisecond, "the source is reported down", func() (bool, string) {
				kept = getBundleStatus(t, again)
				return kept.LastError != "", "no last_error"
			})
			if kept.Bundle.Revision != "4" || !strings.Contains(kept.Source, "kept copy") || !strings.Contains(kept.LastError, "fetch "+src.ref()) {
				t.Errorf("restarted: /v1/rules %+v, bundle %+v", kept, kept.Bundle)
			}
			if !strings.Contains(again.log.String(), "serving the kept rule bundle until the source answers") {
				t.Errorf("restarted: no log line saying the kept bundle is served")
			}
		})
	}
}

// TestBundleKeyRotation moves a fleet from one signing key to another:
// servers trust both, CI signs with both, then servers drop the old key.
func TestBundleKeyRotation(t *testing.T) {
	src := newHTTPSBundles(t)
	dir := t.TempDir()
	oldKey, newKey := bundletest.NewKey(t), bundletest.NewKey(t)
	_, oldPub := oldKey.WriteFiles(t, dir, "old")
	_, newPub := newKey.WriteFiles(t, dir, "new")
	now := time.Now().UTC()
	rev := func(n int, host string, keys ...bundletest.Key) []byte {
		return bundletest.Build(t, strconv.Itoa(n), now.Add(time.Duration(n-10)*time.Hour),
			[]string{"rules.yaml", bundleRules("api.stripe.com", host)}, keys...)
	}

	// Step 1: the servers trust both keys; CI still signs with the old.
	src.publish(t, rev(1, "one.example", oldKey))
	srv := startServer(t, dir, bundleArgs(src, oldPub, newPub)...)
	if code, out := checkExit(t, srv, "https://one.example/"); code != 0 {
		t.Fatalf("signed by the old key: want allow\n%s", out)
	}
	// Step 2: CI signs with both.
	start := time.Now()
	src.publish(t, rev(2, "two.example", oldKey, newKey))
	untilDecision(t, srv, "https://two.example/", 0, pickedUpWithin, start)
	if st := getBundleStatus(t, srv); len(st.Bundle.SignedBy) != 2 {
		t.Errorf("signed by both keys: signed_by %v, want both", st.Bundle.SignedBy)
	}
	// Step 3: CI signs with the new key only.
	start = time.Now()
	src.publish(t, rev(3, "three.example", newKey))
	untilDecision(t, srv, "https://three.example/", 0, pickedUpWithin, start)
	if code, _ := srv.terminate(20 * time.Second); code != 0 {
		t.Errorf("SIGTERM: exit %d", code)
	}

	// Step 4: the servers drop the old key; the old key alone is refused.
	srv = startServer(t, dir, bundleArgs(src, newPub)...)
	if code, out := checkExit(t, srv, "https://three.example/"); code != 0 {
		t.Fatalf("after dropping the old key: want revision 3 served\n%s", out)
	}
	src.publish(t, rev(4, "four.example", oldKey))
	eventually(t, pickedUpWithin, 20*time.Millisecond, "a bundle signed by the dropped key refused", func() (bool, string) {
		st := getBundleStatus(t, srv)
		return strings.Contains(st.LastError, "bad signature"), "last_error: " + st.LastError
	})
	if code, out := checkExit(t, srv, "https://four.example/"); code != 3 {
		t.Errorf("signed by the dropped key: want deny\n%s", out)
	}
	start = time.Now()
	src.publish(t, rev(5, "five.example", newKey))
	untilDecision(t, srv, "https://five.example/", 0, pickedUpWithin, start)
}

// TestBundleStartupRefusals: a replica with no kept bundle starts only
// with a bundle it may serve, and says why not otherwise.
func TestBundleStartupRefusals(t *testing.T) {
	src := newHTTPSBundles(t)
	dir := t.TempDir()
	key := bundletest.NewKey(t)
	_, pubFile := key.WriteFiles(t, dir, "ci")
	now := time.Now().UTC()
	serve := func(args ...string) result {
		return runCLI(t, dir, append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0",
			"--plaintext", "--log-format", "json"}, args...)...)
	}
	for _, tc := range []struct {
		name    string
		publish []byte
		args    []string
		code    int
		says    string
	}{
		{"no_public_key", nil, []string{"--rules", src.ref()}, 2, "needs --rules-public-key"},
		{"nothing_published", nil, bundleArgs(src, pubFile), 1, "404 Not Found"},
		{"unsigned", bundletest.Build(t, "1", now, []string{"rules.yaml", bundleRules("a.example")}), bundleArgs(src, pubFile), 1, "unsigned bundle"},
		{"invalid_rules", bundletest.Build(t, "1", now, []string{"rules.yaml", reloadHead + "  - id: x\n    acton: allow\n"}, key),
			bundleArgs(src, pubFile), 1, "rules/rules.yaml:13:5"},
		{"untrusted_tls", bundletest.Build(t, "1", now, []string{"rules.yaml", bundleRules("a.example")}, key),
			[]string{"--rules", src.ref(), "--rules-public-key", pubFile}, 1, "certificate"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.publish != nil {
				src.publish(t, tc.publish)
			}
			r := serve(tc.args...)
			if r.code != tc.code || !strings.Contains(r.stderr, tc.says) {
				t.Errorf("exit %d, want %d saying %q\n%s", r.code, tc.code, tc.says, r)
			}
			if strings.Contains(r.stderr, `"msg":"serving"`) {
				t.Errorf("the server started serving\n%s", r)
			}
		})
	}
}

// TestRulesBundleCommands: build (lint and cases first), sign, verify,
// keygen, and the rule-set commands reading a bundle file.
func TestRulesBundleCommands(t *testing.T) {
	dir := t.TempDir()
	rulesDir := filepath.Join(dir, "rules")
	if err := os.Mkdir(rulesDir, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(rulesDir, "rules.yaml"), bundleRules("api.stripe.com"))
	cases := filepath.Join(dir, "cases.yaml")
	writeFile(t, cases, "cases:\n  - name: checkout charges Stripe\n    principal: "+checkoutID+
		"\n    url: https://api.stripe.com/v1/charges\n    expect: allow\n")
	failing := filepath.Join(dir, "failing.yaml")
	writeFile(t, failing, "cases:\n  - name: checkout reaches example.org\n    principal: "+checkoutID+
		"\n    url: https://api.example.org/\n    expect: allow\n")
	out := filepath.Join(dir, "bundle.tar.gz")

	if r := runCLI(t, dir, "rules", "bundle", "keygen", "--out", "ci"); r.code != 0 || !strings.Contains(r.stdout, "ci.key, ci.pub: key ") {
		t.Fatalf("keygen: %s", r)
	}
	if st, err := os.Stat(filepath.Join(dir, "ci.key")); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("ci.key: %v, mode %v; want 0600", err, st.Mode())
	}
	if r := runCLI(t, dir, "rules", "bundle", "keygen", "--out", "ci"); r.code != 1 || !strings.Contains(r.stderr, "exists") {
		t.Errorf("keygen over an existing key: want exit 1, nothing overwritten\n%s", r)
	}
	if r := runCLI(t, dir, "rules", "bundle", "build", rulesDir, "--cases", failing, "-o", out); r.code != 1 ||
		!strings.Contains(r.stdout, "FAIL  checkout reaches example.org") || !strings.Contains(r.stderr, "no bundle written") {
		t.Errorf("build with a failing case: want exit 1 and the failure\n%s", r)
	}
	broken := filepath.Join(dir, "broken")
	if err := os.Mkdir(broken, 0o755); err != nil {
		t.Fatal(err)
	}
	writeFile(t, filepath.Join(broken, "rules.yaml"), reloadHead+"  - id: x\n    acton: allow\n")
	if r := runCLI(t, dir, "rules", "bundle", "build", broken, "-o", out); r.code != 1 || !strings.Contains(r.stdout, "rules.yaml:13:5") {
		t.Errorf("build of invalid rules: want exit 1 naming file:line:col\n%s", r)
	}
	if _, err := os.Stat(out); err == nil {
		t.Fatal("a bundle was written although the build failed")
	}
	r := runCLI(t, dir, "rules", "bundle", "build", rulesDir, "--cases", cases, "--revision", "42", "--expires", "7d", "-o", out)
	if r.code != 0 || !strings.Contains(r.stdout, "revision 42") || !strings.Contains(r.stdout, "1 case passed") {
		t.Fatalf("build: %s", r)
	}
	lint := runCLI(t, dir, "rules", "lint", rulesDir)
	version := regexp.MustCompile(`version ([0-9a-f]{16})`).FindStringSubmatch(lint.stderr)
	if version == nil || !strings.Contains(r.stdout, "version "+version[1]) {
		t.Errorf("the bundle's version is not the directory's (%v)\nbuild: %s\nlint: %s", version, r, lint)
	}
	if r := runCLI(t, dir, "rules", "bundle", "verify", "--public-key", "ci.pub", out); r.code != 1 || !strings.Contains(r.stdout, "unsigned bundle") {
		t.Errorf("verify of the unsigned bundle: want exit 1, unsigned\n%s", r)
	}
	if r := runCLI(t, dir, "rules", "bundle", "sign", "--key", "ci.key", out); r.code != 0 || !strings.Contains(r.stdout, "signed by key") {
		t.Fatalf("sign: %s", r)
	}
	r = runCLI(t, dir, "rules", "bundle", "verify", "--public-key", "ci.pub", out)
	for _, want := range []string{"verified", "revision:   42", "signed by:", "rules/rules.yaml", "cases/cases.yaml", "1 passed"} {
		if r.code != 0 || !strings.Contains(r.stdout, want) {
			t.Errorf("verify: want exit 0 saying %q\n%s", want, r)
		}
	}
	if r := runCLI(t, dir, "rules", "bundle", "keygen", "--out", "other"); r.code != 0 {
		t.Fatal(r)
	}
	if r := runCLI(t, dir, "rules", "bundle", "verify", "--public-key", "other.pub", out); r.code != 1 || !strings.Contains(r.stdout, "bad signature") {
		t.Errorf("verify with another key: want exit 1, bad signature\n%s", r)
	}
	// Key rotation: a second signature, and either key verifies.
	if r := runCLI(t, dir, "rules", "bundle", "sign", "--key", "other.key", out); r.code != 0 || !strings.Contains(r.stdout, "2 signatures in all") {
		t.Errorf("second signature: %s", r)
	}
	for _, pub := range []string{"ci.pub", "other.pub"} {
		if r := runCLI(t, dir, "rules", "bundle", "verify", "--public-key", pub, out); r.code != 0 {
			t.Errorf("verify with %s after two signatures: %s", pub, r)
		}
	}
	data, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	tampered := filepath.Join(dir, "tampered.tar.gz")
	if err := os.WriteFile(tampered, bundletest.Replace(t, data, "rules/rules.yaml", bundleRules("api.stripe.com", "*")), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, dir, "rules", "bundle", "verify", "--public-key", "ci.pub", tampered); r.code != 1 || !strings.Contains(r.stdout, "does not match the manifest") {
		t.Errorf("verify of a tampered bundle: %s", r)
	}

	// explain, test and diff read the bundle as a rule set.
	r = runCLI(t, dir, "rules", "explain", out, "--public-key", "ci.pub", "--principal", checkoutID, "https://api.stripe.com/v1/charges")
	if r.code != 0 || !strings.Contains(r.stdout, "rules/rules.yaml:") || strings.Contains(r.stderr, "not checked") {
		t.Errorf("explain of the bundle: %s", r)
	}
	r = runCLI(t, dir, "rules", "explain", out, "--principal", checkoutID, "https://api.stripe.com/v1/charges")
	if r.code != 0 || !strings.Contains(r.stderr, "signature not checked") {
		t.Errorf("explain without --public-key: want the decision and a note\n%s", r)
	}
	if r := runCLI(t, dir, "rules", "explain", tampered, "--principal", checkoutID, "https://api.stripe.com/v1/charges"); r.code != 1 ||
		!strings.Contains(r.stdout, "does not match the manifest") {
		t.Errorf("explain of a tampered bundle: want exit 1\n%s", r)
	}
	if r := runCLI(t, dir, "rules", "test", out, "--cases", cases, "--public-key", "ci.pub"); r.code != 0 || !strings.Contains(r.stdout, "1 passed, 0 failed") {
		t.Errorf("test against the bundle: %s", r)
	}
	writeFile(t, filepath.Join(rulesDir, "rules.yaml"), bundleRules("api.stripe.com", "api.example.org"))
	r = runCLI(t, dir, "rules", "diff", out, rulesDir, "--public-key", "ci.pub")
	if r.code != 0 || !strings.Contains(r.stdout, "1 added") || !strings.Contains(r.stdout, "api.example.org") {
		t.Errorf("diff of the bundle against the directory: %s", r)
	}
	if r := runCLI(t, dir, "rules", "diff", out, rulesDir, "--public-key", "other.pub", "--public-key", "ci.pub"); r.code != 0 {
		t.Errorf("diff with two keys: %s", r)
	}
	otherOnly := filepath.Join(dir, "only-ci.tar.gz")
	if err := os.WriteFile(otherOnly, bundletest.Sign(t, bundletest.Build(t, "1", time.Now(), []string{"rules.yaml", bundleRules("a.example")}), bundletest.NewKey(t)), 0o644); err != nil {
		t.Fatal(err)
	}
	if r := runCLI(t, dir, "rules", "diff", otherOnly, rulesDir, "--public-key", "ci.pub"); r.code != 1 || !strings.Contains(r.stdout, "bad signature") {
		t.Errorf("diff of a bundle signed by an unknown key: want exit 1, bad signature\n%s", r)
	}
}
