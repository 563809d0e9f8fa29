package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// diagLine is the shape of every line rules lint prints: FILE:LINE:COL: message.
var diagLine = regexp.MustCompile(`^\S+:\d+:\d+: \S.*$`)

func TestRulesLintAcceptsTheExamples(t *testing.T) {
	r := runCLI(t, t.TempDir(), "rules", "lint", examplesPath(t))
	if r.code != 0 {
		t.Fatalf("want exit 0 on the example rules\n%s", r)
	}
	if r.stdout != "" {
		t.Errorf("want no errors or warnings on the example rules\n%s", r)
	}
	if !strings.Contains(r.stderr, "6 rules, 0 warnings") {
		t.Errorf("want a summary of 6 rules, 0 warnings on stderr\n%s", r)
	}
}

// TestRulesLintNamesFileLineColumn lints broken rule files and checks that
// each error names the file, line and column a reviewer must fix. The full
// output is kept in golden files (go test -update rewrites them); the
// positions are asserted here as well, so that -update cannot bless a
// wrong one.
func TestRulesLintNamesFileLineColumn(t *testing.T) {
	const head = "apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local]\n"
	cases := []struct {
		name string
		src  string
		want []string // FILE:LINE:COL of each error, in order, with FILE the file's base name
	}{
		{
			name: "unknown_key",
			src: head + `rules:
  - id: a
    action: allow
    colour: blue
    to:
      hosts: [a.example.com]
`,
			want: []string{"rules.yaml:7:5"},
		},
		{
			name: "lower_case_method",
			src: head + `rules:
  - id: a
    action: allow
    from:
      namespaces: [x]
    to:
      hosts: [a.example.com]
      methods: [GET, post]
`,
			want: []string{"rules.yaml:11:22"},
		},
		{
			name: "bad_yaml_mapping_value",
			src: head + `rules:
  - id: a
    action: allow: deny
`,
			// The YAML library gives a line but no column for syntax errors.
			want: []string{"rules.yaml:6:1"},
		},
		{
			name: "bad_yaml_unclosed_flow_sequence",
			src: head + `rules:
  - id: a
    action: allow
    to:
      hosts: [a.example.com
`,
			// The sequence opened on line 8 is never closed.
			want: []string{"rules.yaml:8:1"},
		},
		{
			name: "duplicate_id",
			src: head + `rules:
  - id: a
    action: allow
    from:
      namespaces: [x]
    to:
      hosts: [a.example.com]
  - id: a
    action: allow
    from:
      namespaces: [y]
    to:
      hosts: [b.example.com]
`,
			want: []string{"rules.yaml:11:9"},
		},
		{
			name: "missing_apiVersion",
			src: `kind: RuleSet
trustDomains: [cluster.local]
rules: []
`,
			want: []string{"rules.yaml:1:1"},
		},
		{
			// Issue 19: the rule starts on line 5; the YAML library names
			// that line, the offending one is 11.
			name: "misindented_methods",
			src: head + `rules:
  - id: marketing-mailchimp
    action: allow
    from:
      namespaces: [marketing]
    to:
      hosts: [us21.api.mailchimp.com]
     methods: [POST]
      paths: ["/3.0/lists/*/members"]
`,
			want: []string{"rules.yaml:11:6"},
		},
		{
			name: "host_written_as_a_url",
			src: head + `rules:
  - id: marketing-mailchimp
    action: allow
    from:
      namespaces: [marketing]
    to:
      hosts: ["https://api.mailchimp.com", api.mailchimp.com/3.0, api.mailchimp.com/, "api.mailchimp.com:443"]
`,
			want: []string{"rules.yaml:10:15", "rules.yaml:10:44", "rules.yaml:10:67", "rules.yaml:10:87"},
		},
		{
			name: "every_error_at_once",
			src: head + `rules:
  - id: a
    action: allow
    colour: blue
    to:
      hosts: [a.example.com]
      methods: [get]
  - id: a
    action: deny
`,
			want: []string{"rules.yaml:7:5", "rules.yaml:10:17", "rules.yaml:11:9"},
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "rules.yaml")
			if err := os.WriteFile(path, []byte(c.src), 0o644); err != nil {
				t.Fatal(err)
			}
			r := runCLI(t, dir, "rules", "lint", path)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1\n%s", r.code, r)
			}
			lines := strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
			var got []string
			for _, l := range lines {
				if !diagLine.MatchString(l) {
					t.Errorf("line %q is not FILE:LINE:COL: message", l)
					continue
				}
				if !strings.HasPrefix(l, path+":") {
					t.Errorf("line %q does not name the file %s", l, path)
					continue
				}
				rest := strings.TrimPrefix(l, dir+string(filepath.Separator))
				got = append(got, strings.Join(strings.SplitN(rest, ":", 4)[:3], ":"))
			}
			if strings.Join(got, " ") != strings.Join(c.want, " ") {
				t.Errorf("positions %v, want %v\n%s", got, c.want, r)
			}
			golden(t, filepath.Join("testdata", "lint", c.name+".golden"), strings.ReplaceAll(r.stdout, dir, "$DIR"))
		})
	}
}

// TestRulesLintWarnsAboutExpiry checks the expiry warning for a rule that
// expires in 3 days, --warn-expiry's window, and --strict.
func TestRulesLintWarnsAboutExpiry(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "rules.yaml")
	day := time.Now().UTC().AddDate(0, 0, 3).Format(time.DateOnly)
	src := `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: vendor-trial
    owner: team-a
    expires: ` + day + `
    action: allow
    from:
      namespaces: [a]
    to:
      hosts: [api.vendor.example]
`
	if err := os.WriteFile(path, []byte(src), 0o644); err != nil {
		t.Fatal(err)
	}
	warning := path + `:5:5: warning: rule "vendor-trial": expires on ` + day + " "
	// args name the file as PATH; flags may come before or after it.
	cases := []struct {
		name string
		args []string
		code int
		warn bool
	}{
		{"default_window_of_14_days_warns", []string{"PATH"}, 0, true},
		{"window_of_7_days_warns", []string{"--warn-expiry", "7d", "PATH"}, 0, true},
		{"window_in_hours_warns", []string{"--warn-expiry", "96h", "PATH"}, 0, true},
		{"window_of_1_day_is_quiet", []string{"--warn-expiry", "1d", "PATH"}, 0, false},
		{"strict_fails_on_the_warning", []string{"--strict", "PATH"}, 1, true},
		{"strict_without_warnings_passes", []string{"--strict", "--warn-expiry", "1d", "PATH"}, 0, false},
		{"flags_after_the_path", []string{"PATH", "--strict", "--warn-expiry", "1d"}, 0, false},
		{"strict_before_the_path_other_flag_after", []string{"--strict", "PATH", "--warn-expiry", "1d"}, 0, false},
		{"strict_after_the_path_fails_on_the_warning", []string{"PATH", "--strict"}, 1, true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			args := []string{"rules", "lint"}
			for _, a := range c.args {
				args = append(args, strings.ReplaceAll(a, "PATH", path))
			}
			r := runCLI(t, dir, args...)
			if r.code != c.code {
				t.Errorf("exit %d, want %d\n%s", r.code, c.code, r)
			}
			if c.warn {
				if !strings.HasPrefix(r.stdout, warning) || strings.Count(r.stdout, "\n") != 1 {
					t.Errorf("want exactly one warning starting %q\n%s", warning, r)
				}
				if !diagLine.MatchString(strings.TrimSuffix(r.stdout, "\n")) {
					t.Errorf("warning is not FILE:LINE:COL: message\n%s", r)
				}
			} else if r.stdout != "" {
				t.Errorf("want no warning\n%s", r)
			}
		})
	}
}

// golden compares got with the golden file at path, or rewrites the file
// with -update.
func golden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run go test -update to create it)", err)
	}
	if got != string(want) {
		t.Errorf("output differs from %s (go test -update rewrites it after review)\ngot:\n%s\nwant:\n%s", path, got, want)
	}
}

// TestRulesLintStopsWhenInterrupted: once its context is done (main's, on
// SIGTERM or SIGINT), lint stops and says so rather than going on.
func TestRulesLintStopsWhenInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	code := run(ctx, []string{"rules", "lint", examplesPath(t)}, &stdout, &stderr)
	if code != exitFail || !strings.Contains(stderr.String(), "interrupted") {
		t.Errorf("exit %d, stderr %q; want 1 and interrupted", code, stderr.String())
	}
}

// TestInterruptibleReturnsOnceDone: interruptible returns f's result, or
// the context's error at once when the context is done while f is still
// at work (a parse that cannot stop halfway).
func TestInterruptibleReturnsOnceDone(t *testing.T) {
	if v, err := interruptible(context.Background(), func() int { return 7 }); v != 7 || err != nil {
		t.Errorf("interruptible = %v, %v; want 7, nil", v, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	release := make(chan struct{})
	defer close(release)
	done := make(chan error, 1)
	go func() {
		_, err := interruptible(ctx, func() int { <-release; return 7 })
		done <- err
	}()
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Errorf("interruptible = %v, want context.Canceled", err)
		}
	case <-time.After(cliTimeout):
		t.Fatalf("interruptible still waiting for f %v after its context was done", cliTimeout)
	}
}

// TestRulesLintPolicy: --require and --max-expiry, and the same in a
// --policy file kept beside the rules, turn a team's standard into errors
// that fail CI; flags win over the file.
func TestRulesLintPolicy(t *testing.T) {
	dir := t.TempDir()
	far := time.Now().UTC().AddDate(2, 0, 0).Format(time.DateOnly)
	near := time.Now().UTC().AddDate(0, 2, 0).Format(time.DateOnly)
	path := filepath.Join(dir, "rules.yaml")
	writeFile(t, path, `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: complete
    owner: team-marketing
    ticket: SEC-19
    expires: `+near+`
    action: allow
    from: {namespaces: [marketing]}
    to: {hosts: [us21.api.mailchimp.com], methods: [POST], paths: ["/3.0/lists/*/members"]}
  - id: no-ticket
    owner: team-marketing
    expires: `+far+`
    action: allow
    from: {namespaces: [marketing]}
    to: {hosts: [us21.api.mailchimp.com], methods: [GET], paths: ["/3.0/campaigns/*/content"]}
`)
	policy := filepath.Join(dir, ".lint-policy.yaml") // a dot file: a rule directory skips it
	writeFile(t, policy, "apiVersion: egress-authz/v1\nkind: LintPolicy\nrequire: [owner, ticket, expires]\nmaxExpiry: 180d\n")
	cases := []struct {
		name string
		args []string
		code int
		want []string // each line of stdout, after the file name
	}{
		{"no_policy", []string{path}, 0, nil},
		{"require_ticket", []string{"--require", "owner,ticket", path}, 1,
			[]string{`:12:5: rule "no-ticket": no ticket, which the lint policy requires (--require); see docs/rules.md#lint-policy`}},
		{"max_expiry", []string{"--max-expiry", "180d", path}, 1,
			[]string{`:12:5: rule "no-ticket": expires on ` + far + `, after `}},
		{"policy_file", []string{"--policy", policy, path}, 1,
			[]string{`:12:5: rule "no-ticket": no ticket, which the lint policy requires (` + policy + `:3:10)`, `:12:5: rule "no-ticket": expires on ` + far + `, after `}},
		{"flags_win_over_the_file", []string{"--policy", policy, "--require", "owner", "--max-expiry", "1000d", path}, 0, nil},
		{"policy_on_the_directory", []string{"--policy", policy, dir}, 1,
			[]string{`:12:5: rule "no-ticket": no ticket, which the lint policy requires`, `:12:5: rule "no-ticket": expires on ` + far + `, after `}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runCLI(t, dir, append([]string{"rules", "lint"}, c.args...)...)
			if r.code != c.code {
				t.Errorf("exit %d, want %d\n%s", r.code, c.code, r)
			}
			var lines []string
			if r.stdout != "" {
				lines = strings.Split(strings.TrimSuffix(r.stdout, "\n"), "\n")
			}
			if len(lines) != len(c.want) {
				t.Fatalf("%d lines, want %d\n%s", len(lines), len(c.want), r)
			}
			for i, l := range lines {
				if !strings.HasPrefix(l, path+c.want[i]) || !diagLine.MatchString(l) {
					t.Errorf("line %d: %s\nwant it to start %s%s", i, l, path, c.want[i])
				}
			}
		})
	}

	bad := filepath.Join(dir, "bad-policy.yml")
	writeFile(t, bad, "apiVersion: egress-authz/v1\nkind: LintPolicy\nrequire: [owner]\nmaxExpiri: 180d\n")
	r := runCLI(t, dir, "rules", "lint", "--policy", bad, path)
	if r.code != exitFail || r.stdout != bad+`:4:1: lint policy: unknown key "maxExpiri" (known: apiVersion, kind, require, maxExpiry, warnExpiry); see docs/rules.md#lint-policy`+"\n" {
		t.Errorf("a misspelt policy key: want exit 1 and the key's place\n%s", r)
	}
	if r := runCLI(t, dir, "rules", "lint", "--require", "owner,team", path); r.code != exitUsage || !strings.Contains(r.stderr, `"team" is not a field`) {
		t.Errorf("--require with an unknown field: want exit 2\n%s", r)
	}
	if r := runCLI(t, dir, "rules", "lint", "--policy", filepath.Join(dir, "missing.yaml"), path); r.code != exitFail || !strings.Contains(r.stderr, "--policy:") {
		t.Errorf("a missing policy file: want exit 1\n%s", r)
	}
}

// TestRulesLintProcessors lints a shop's processor register: Stripe in
// Ireland, a mailer in the US under the Data Privacy Framework, a CRM in
// the US with no safeguard and no DPA, and an analytics host that names no
// processor; and then the same set with the errors loading rejects.
func TestRulesLintProcessors(t *testing.T) {
	dir, err := filepath.Abs(filepath.Join("testdata", "gdpr", "rules"))
	if err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, t.TempDir(), "rules", "lint", dir)
	if r.code != 1 {
		t.Fatalf("want exit 1 (a transfer without a safeguard is an error)\n%s", r)
	}
	want := []string{
		filepath.Join(dir, "processors.yaml") + `:25:5: warning: processor "crm": no dpa`,
		filepath.Join(dir, "processors.yaml") + `:29:15: processor "crm": US is outside the EEA, so transfer none-needed is not enough`,
		filepath.Join(dir, "rules.yaml") + `:33:5: warning: rule "web-analytics": allows collect.analytics.example, outside the company, and names no processor`,
	}
	lines := strings.Split(strings.TrimSpace(r.stdout), "\n")
	if len(lines) != len(want) {
		t.Fatalf("want %d lines, got\n%s", len(want), r)
	}
	for i, w := range want {
		if !strings.HasPrefix(lines[i], w) {
			t.Errorf("line %d: want prefix\n  %s\ngot\n  %s", i+1, w, lines[i])
		}
	}
	if strings.Contains(r.stdout, "inventory") || strings.Contains(r.stdout, "stripe") || strings.Contains(r.stdout, "mailer") {
		t.Errorf("the internal host and the processors with safeguards and a DPA must pass\n%s", r)
	}
	if !strings.Contains(r.stderr, "5 rules, 2 warnings, 1 lint error") {
		t.Errorf("want the summary on stderr\n%s", r)
	}

	// Errors that loading rejects: an unknown processor id, a taxonomy
	// key that is not one, a narrowing wider than the processor's, a
	// country that is not a code.
	bad := t.TempDir()
	writeFile(t, filepath.Join(bad, "rules.yaml"), `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
processors:
  - id: bad
    legalName: Stripe Payments Europe, Ltd.
    role: processor
    country: ie
    transfer: none-needed
    dataCategories: [user.financial, user.contact.emial]
  - id: stripe
    legalName: Stripe Payments Europe, Ltd.
    role: processor
    country: IE
    transfer: none-needed
    dataCategories: [user.financial]
rules:
  - id: a
    action: allow
    processor: strpe
    to:
      hosts: [api.stripe.com]
  - id: b
    action: allow
    processor: stripe
    dataCategories: [user.contact.email]
    to:
      hosts: [api.stripe.com]
`)
	r = runCLI(t, bad, "rules", "lint", "rules.yaml")
	if r.code != 1 {
		t.Fatalf("want exit 1\n%s", r)
	}
	for _, w := range []string{
		`rules.yaml:8:14: country "ie" is not an ISO 3166-1 alpha-2 code (codes are upper case: IE)`,
		`rules.yaml:10:38: dataCategories: "user.contact.emial" is not a Fideslang data category key`,
		`rules.yaml:20:16: rule "a": processor "strpe" is not declared in the rule set's processors (declared: stripe)`,
		`rules.yaml:26:22: rule "b": dataCategories "user.contact.email" is not among processor stripe's dataCategories`,
	} {
		if !strings.Contains(r.stdout, w) {
			t.Errorf("want %q\n%s", w, r)
		}
	}
}
