package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestServeStartupErrors checks that serve refuses to start, with a clear
// message and the right exit status, when it cannot serve what it was
// asked to.
func TestServeStartupErrors(t *testing.T) {
	dir := t.TempDir()
	invalid := filepath.Join(dir, "invalid.yaml")
	if err := os.WriteFile(invalid, []byte(`apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: a
    action: allow
    from:
      namespaces: [x]
    to:
      hosts: [a.example.com]
      methods: [GET, post]
`), 0o644); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		args   []string
		code   int
		stderr []string
	}{
		{
			name:   "invalid_rule_file_names_file_line_col",
			args:   []string{"--rules", invalid, "--plaintext"},
			code:   1,
			stderr: []string{invalid + ":11:22:", `"post"`},
		},
		{
			name:   "missing_rule_file",
			args:   []string{"--rules", filepath.Join(dir, "nope.yaml"), "--plaintext"},
			code:   1,
			stderr: []string{"nope.yaml"},
		},
		{
			name:   "rule_file_over_the_size_limit",
			args:   []string{"--rules", examplesPath(t), "--plaintext", "--rules-max-file-size", "1KiB"},
			code:   1,
			stderr: []string{"rules.yaml is larger than 1 KiB"},
		},
		{
			// 213504 days overflowed time.Duration and became 25 minutes.
			name:   "retention_over_a_century",
			args:   []string{"--rules", examplesPath(t), "--plaintext", "--audit-retention", "213504d"},
			code:   2,
			stderr: []string{"audit-retention", "213504d", "century"},
		},
		{
			name:   "missing_rules_flag",
			args:   []string{"--plaintext"},
			code:   2,
			stderr: []string{"--rules is required"},
		},
		{
			name:   "no_transport_security_and_no_plaintext",
			args:   []string{"--rules", examplesPath(t)},
			code:   2,
			stderr: []string{"--plaintext"},
		},
		{
			name:   "unknown_flag",
			args:   []string{"--rules", examplesPath(t), "--plaintext", "--no-such-flag"},
			code:   2,
			stderr: []string{"no-such-flag"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := append([]string{"serve", "--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0", "--log-format", "json"}, c.args...)
			r := runCLI(t, dir, args...)
			if r.code != c.code {
				t.Fatalf("exit %d, want %d\n%s", r.code, c.code, r)
			}
			for _, s := range c.stderr {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr does not say %q\n%s", s, r)
				}
			}
			if strings.Contains(r.stderr, `"msg":"serving"`) {
				t.Errorf("server started serving\n%s", r)
			}
		})
	}
}

// TestSecondServerRefusesTheSameDataDir starts a second server in the
// working directory of a running one: two writers on one write-ahead log
// would break its hash chain, so the second must refuse to start and the
// first must keep serving.
func TestSecondServerRefusesTheSameDataDir(t *testing.T) {
	dir := t.TempDir()
	first := startServer(t, dir, "--rules", examplesPath(t))
	r := runCLI(t, dir, "serve", "--rules", examplesPath(t), "--plaintext", "--log-format", "json",
		"--grpc-addr", "127.0.0.1:0", "--admin-addr", "127.0.0.1:0")
	if r.code == 0 || !strings.Contains(r.stderr, "in use by another egress-authz process") {
		t.Errorf("second server: want a non-zero exit saying the data directory is in use\n%s", r)
	}
	if code, out := checkExit(t, first, "https://api.stripe.com/v1/charges"); code != 0 || first.exited() {
		t.Errorf("the first server stopped deciding\n%s", out)
	}
}

// TestAuditVerifyRefusesAnUnknownFormat: a typo in --format is a usage
// error, not text output a script would take for JSON.
func TestAuditVerifyRefusesAnUnknownFormat(t *testing.T) {
	r := runCLI(t, t.TempDir(), "audit", "verify", "--format", "jsno")
	if r.code != 2 || !strings.Contains(r.stderr, `--format "jsno"`) {
		t.Errorf("want exit 2 naming the format\n%s", r)
	}
}

// TestAuditCommandsNeedAnExistingLog checks that audit query and verify
// report a missing decision log instead of creating an empty one (which
// verify would call intact).
func TestAuditCommandsNeedAnExistingLog(t *testing.T) {
	dir := t.TempDir()
	missing := filepath.Join(dir, "data", "decisions.db")
	for _, args := range [][]string{
		{"audit", "verify", "--audit", "sqlite:" + missing},
		{"audit", "query", "--audit", "sqlite:" + missing, "--since", "1h"},
		{"audit", "verify", "--audit", missing}, // a bare *.db path
		{"audit", "query", "--audit", missing, "--since", "1h"},
		{"audit", "verify"}, // the default DSN, parquet:./data/decisions
		{"audit", "query", "--since", "1h"},
		{"audit", "verify", "--audit", "parquet:" + filepath.Join(dir, "nope")},
	} {
		r := runCLI(t, dir, args...)
		if r.code != 1 || !strings.Contains(r.stderr, "decisions") && !strings.Contains(r.stderr, "nope") {
			t.Errorf("%s: want exit 1 naming the missing log\n%s", strings.Join(args, " "), r)
		}
		if _, err := os.Stat(missing); err == nil {
			t.Fatalf("%s created the decision log", strings.Join(args, " "))
		}
	}
}
