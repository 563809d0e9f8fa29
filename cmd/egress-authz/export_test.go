package main

import (
	"archive/zip"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/egress-authz/egress-authz/authz/authztest"
	"github.com/egress-authz/egress-authz/internal/checkreq"
	"github.com/egress-authz/egress-authz/internal/evidence"
)

// TestAuditExport packs a real server's decision log, as a directory and
// as a zip, checks both, and finds the one byte altered afterwards.
func TestAuditExport(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, dir, "--rules", examplesPath(t))
	client := authv3.NewAuthorizationClient(authztest.Dial(t, srv.grpcAddr))
	sent := []struct{ id, principal, method, url string }{
		{"pack-1", checkoutID, "POST", "https://api.stripe.com/v1/charges"},
		{"pack-2", checkoutID, "DELETE", "https://api.stripe.com/v1/charges"},
		{"pack-3", indexerID, "GET", "https://storage.googleapis.com/b/o"},
		{"pack-4", indexerID, "GET", "https://pastebin.com/raw/x"},
		{"pack-5", checkoutID, "POST", "https://api.stripe.com/v1/refunds"},
	}
	for _, s := range sent {
		req, err := checkreq.HTTP{Principal: s.principal, Method: s.method, URL: s.url, RequestID: s.id}.Build()
		if err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		_, err = client.Check(ctx, req)
		cancel()
		if err != nil {
			t.Fatalf("Check %s: %v", s.id, err)
		}
	}
	served := getRulesStatus(t, srv).Version
	if code, _ := srv.terminate(20 * time.Second); code != 0 {
		t.Fatalf("serve exited %d", code)
	}
	dsn := srv.auditDSN()

	packDir := filepath.Join(dir, "pack")
	r := runCLI(t, dir, "audit", "export", "--audit", dsn, "--since", "1h", "--out", packDir)
	if r.code != 0 || !strings.Contains(r.stdout, "5 records") {
		t.Fatalf("audit export: want exit 0 and 5 records\n%s", r)
	}
	for _, name := range []string{evidence.RecordsCSV, evidence.RecordsParquet, evidence.QueryFile, evidence.RuleSetsFile, evidence.RuleSetFile(served), evidence.VerifyFile, evidence.ManifestFile} {
		if _, err := os.Stat(filepath.Join(packDir, name)); err != nil {
			t.Errorf("the pack lacks %s", name)
		}
	}
	var rs evidence.RuleSets
	if b, err := os.ReadFile(filepath.Join(packDir, evidence.RuleSetsFile)); err != nil || json.Unmarshal(b, &rs) != nil || len(rs.Versions) != 1 || rs.Versions[0] != served || len(rs.Included) != 1 || len(rs.Missing) != 0 {
		t.Errorf("rulesets.json: %+v, want the one served version %s, included", rs, served)
	}
	r = runCLI(t, dir, "audit", "export", "--check", packDir)
	if r.code != 0 || !strings.HasPrefix(r.stdout, "OK: ") || !strings.Contains(r.stdout, "5 records") || !strings.Contains(r.stdout, "4 links") || !strings.Contains(r.stdout, "1 rule set,") {
		t.Errorf("audit export --check of a fresh pack: want OK, 5 records, 4 links, 1 rule set\n%s", r)
	}

	// A filtered pack, zipped.
	zipPath := filepath.Join(dir, "denies.zip")
	r = runCLI(t, dir, "audit", "export", "--audit", dsn, "--since", "1h", "--decision", "deny", "--out", zipPath)
	if r.code != 0 {
		t.Fatalf("audit export --out %s: want exit 0\n%s", zipPath, r)
	}
	zr, err := zip.OpenReader(zipPath)
	if err != nil {
		t.Fatal(err)
	}
	if len(zr.File) != 7 {
		t.Errorf("the zip holds %d files, want 7", len(zr.File))
	}
	zr.Close()
	c, err := evidence.Check(zipPath)
	if err != nil || !c.OK() || c.Records == 0 || c.Records >= 5 {
		t.Errorf("check of the zip: %+v %v; want intact, only the denies", c, err)
	}
	var q evidence.Query
	if b, err := os.ReadFile(filepath.Join(packDir, evidence.QueryFile)); err != nil || json.Unmarshal(b, &q) != nil || q.Filters["since"] != "1h" || q.Since.IsZero() || q.Source != dsn {
		t.Errorf("query.json: %+v", q)
	}

	// One byte of records.csv altered.
	csvPath := filepath.Join(packDir, evidence.RecordsCSV)
	b, err := os.ReadFile(csvPath)
	if err != nil {
		t.Fatal(err)
	}
	i := strings.Index(string(b), "pack-3")
	b[i+5] = '9'
	if err := os.WriteFile(csvPath, b, 0o644); err != nil {
		t.Fatal(err)
	}
	r = runCLI(t, dir, "audit", "export", "--check", packDir)
	if r.code == 0 || !strings.HasPrefix(r.stdout, "ALTERED") || !strings.Contains(r.stdout, "records.csv: altered") || strings.Contains(r.stdout, "records.parquet") {
		t.Errorf("audit export --check after one byte of records.csv changed: want a failure naming records.csv alone\n%s", r)
	}
	// The rule set edited, its manifest entry made to match: its files
	// no longer hash to its version.
	rsPath := filepath.Join(packDir, evidence.RuleSetFile(served))
	rsb, err := os.ReadFile(rsPath)
	if err != nil {
		t.Fatal(err)
	}
	rsb = []byte(strings.Replace(string(rsb), "api.stripe.com", "api.strip3.com", 1))
	if err := os.WriteFile(rsPath, rsb, 0o644); err != nil {
		t.Fatal(err)
	}
	rehash(t, packDir, evidence.RuleSetFile(served))
	if r = runCLI(t, dir, "audit", "export", "--check", packDir); r.code == 0 || !strings.Contains(r.stdout, evidence.RuleSetFile(served)+": its files hash to") {
		t.Errorf("audit export --check with the rule set edited: want it named\n%s", r)
	}
	// A file slipped in.
	if err := os.WriteFile(filepath.Join(packDir, "extra.txt"), []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	if r = runCLI(t, dir, "audit", "export", "--check", packDir); r.code == 0 || !strings.Contains(r.stdout, "extra.txt: not in the manifest") {
		t.Errorf("audit export --check with a file added: want it named\n%s", r)
	}

	for _, args := range [][]string{
		{"audit", "export", "--out", filepath.Join(dir, "x")},                  // no --since
		{"audit", "export", "--since", "1h"},                                   // no --out
		{"audit", "export", "--since", "1h", "--reason", "nope", "--out", "x"}, // a bad filter
		{"audit", "export", "--check", packDir, "--since", "1h"},               // check takes no filters
	} {
		if r := runCLI(t, dir, args...); r.code != exitUsage {
			t.Errorf("egress-authz %s: exit %d, want %d\n%s", strings.Join(args, " "), r.code, exitUsage, r)
		}
	}
	if r := runCLI(t, dir, "audit", "export", "--audit", dsn, "--since", "1h", "--out", packDir); r.code == 0 || !strings.Contains(r.stderr, "not empty") {
		t.Errorf("audit export into a full directory: want a refusal\n%s", r)
	}
}

// rehash sets name's SHA-256 and size in the pack's manifest to its
// content, as a forger would.
func rehash(t *testing.T, pack, name string) {
	t.Helper()
	mp := filepath.Join(pack, evidence.ManifestFile)
	mb, err := os.ReadFile(mp)
	if err != nil {
		t.Fatal(err)
	}
	var m evidence.Manifest
	if err := json.Unmarshal(mb, &m); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(pack, name))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	for i := range m.Files {
		if m.Files[i].Name == name {
			m.Files[i].SHA256, m.Files[i].Bytes = hex.EncodeToString(sum[:]), int64(len(b))
		}
	}
	if mb, err = json.Marshal(m); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(mp, mb, 0o644); err != nil {
		t.Fatal(err)
	}
}
