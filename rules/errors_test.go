package rules

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// secret is a line a file of credentials might hold; no error may quote it.
const secret = "sk_live_51H8xQ2eZvKYlo2C9Xq"

// passwd is the shape of /etc/passwd, which a rule file linked by mistake
// (or by an attacker) may point at.
const passwd = "root:x:0:0:root:/root:/bin/bash\ndaemon:x:1:1:daemon:/usr/sbin:/usr/sbin/nologin\n"

// TestErrorsDoNotQuoteAFileThatIsNotARuleSet: until a document says it is
// a rule set (apiVersion and kind both right), its errors name the type
// and place of what is wrong, never its text: the errors of a rule file
// that is a link to a file of secrets or to /etc/passwd go to the log,
// /v1/rules and CI output. Inside a rule set, values are quoted, since
// they help the author (see TestParseErrors).
func TestErrorsDoNotQuoteAFileThatIsNotARuleSet(t *testing.T) {
	for _, tc := range []struct {
		name, src string
		want      string // one of the errors, whole
	}{
		{"a_secret_alone", secret + "\n", "rules.yaml:1:1: rule set must be a mapping, got a string"},
		{"a_secret_as_a_key", secret + ": 1\n", "rules.yaml:1:1: rule set: unknown key (known: apiVersion, kind, trustDomains, internalDomains, processors, rules)"},
		{"a_secret_as_a_value", "token: " + secret + "\n", "rules.yaml:1:1: rule set: unknown key (known: apiVersion, kind, trustDomains, internalDomains, processors, rules)"},
		{"a_list_of_secrets", "- " + secret + "\n", "rules.yaml:1:1: rule set must be a mapping, got a list"},
		{"a_number", "4111111111111111\n", "rules.yaml:1:1: rule set must be a mapping, got a number"},
		{"passwd", passwd, "rules.yaml:1:1: rule set must be a mapping, got a string"},
		{"secret_as_api_version", "apiVersion: " + secret + "\nkind: RuleSet\nrules: []\n", `rules.yaml:1:13: apiVersion must be "egress-authz/v1"`},
		{"secret_as_kind", "apiVersion: egress-authz/v1\nkind: " + secret + "\nrules: []\n", `rules.yaml:2:7: kind must be "RuleSet"`},
		{"secret_as_rules", "apiVersion: v0\nrules: " + secret + "\n", "rules.yaml:2:8: rules must be a list, got a string"},
		{"secret_in_trust_domains", "trustDomains: [" + secret + "/x]\nrules: []\n", `rules.yaml:1:1: missing apiVersion (want "egress-authz/v1")`},
		{"secret_in_rules_of_a_document_without_kind", "apiVersion: egress-authz/v1\nrules:\n  - {id: " + secret + "X, action: " + secret + "}\n", `rules.yaml:1:1: missing kind (want "RuleSet")`},
		{"secret_as_an_unknown_anchor", "token: *" + secret + "\n", "rules.yaml:1:1: invalid YAML: unknown anchor referenced"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			list := parseErrors(t, Source{Name: "rules.yaml", Data: []byte(tc.src)})
			text := list.Error()
			for _, leak := range []string{"sk_live", "4111", "root", "bash", "daemon", "token"} {
				if strings.Contains(text, leak) {
					t.Errorf("errors quote the file (%q):\n%s", leak, text)
				}
			}
			found := false
			for _, d := range list {
				found = found || d.Error() == tc.want
			}
			if !found {
				t.Errorf("errors:\n%s\nwant one that is %q", text, tc.want)
			}
		})
	}
}

// TestErrorsOfALinkToPasswdQuoteNothing: a rule file that is a link to an
// /etc/passwd-like file fails to load, in lint, in the reloader's status
// and in its log, without a word of the file.
func TestErrorsOfALinkToPasswdQuoteNothing(t *testing.T) {
	dir := t.TempDir()
	target := writeFile(t, t.TempDir(), "passwd", passwd+secret+"\n")
	writeFile(t, dir, "a.yaml", ruleSet("v1", "allow"))
	link := filepath.Join(dir, "z.yaml")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	_, err := Load(dir)
	if err == nil || !strings.Contains(err.Error(), link+":1:1: rule set must be a mapping, got a string") {
		t.Fatalf("Load = %v, want the link's error", err)
	}
	if strings.Contains(err.Error(), "root") || strings.Contains(err.Error(), "sk_live") {
		t.Errorf("the error quotes the linked file:\n%v", err)
	}
}

// TestErrorsAreCapped: past MaxErrors, errors are counted, not kept, and
// the list ends with how many more there were; Error stays bounded
// however many there are.
func TestErrorsAreCapped(t *testing.T) {
	var b strings.Builder
	b.WriteString(header)
	const n = 5000
	for i := range n {
		fmt.Fprintf(&b, "  - {id: r%d, action: allow, colour: blue}\n", i)
	}
	list := parseErrors(t, Source{Name: "rules.yaml", Data: []byte(b.String())})
	if len(list) != MaxErrors+1 {
		t.Fatalf("%d diagnostics, want %d and the count of the rest", len(list), MaxErrors+1)
	}
	last := list[len(list)-1]
	if want := fmt.Sprintf("rules.yaml: and %d more errors (only the first %d are listed)", n-MaxErrors, MaxErrors); last.Error() != want {
		t.Errorf("last diagnostic %q, want %q", last.Error(), want)
	}
	if lines := strings.Count(list.Error(), "\n") + 1; lines != MaxErrors+1 {
		t.Errorf("Error has %d lines, want %d", lines, MaxErrors+1)
	}

	// A list built by hand is cut too.
	var long ErrorList
	for i := range 1000 {
		long = append(long, Diagnostic{Pos: Pos{File: "x.yaml", Line: i + 1, Col: 1}, Msg: "bad"})
	}
	text := long.Error()
	if lines := strings.Split(text, "\n"); len(lines) != MaxErrors+1 || lines[MaxErrors] != "and 900 more errors" {
		t.Errorf("a list of 1000: %d lines ending %q, want %d ending \"and 900 more errors\"", len(lines), lines[len(lines)-1], MaxErrors+1)
	}
}

// TestErrorsOfLongValuesAreShort: an error quotes at most a few dozen
// bytes of a value, and says how long it was, so that megabytes of bad
// values make kilobytes of errors: 50 MB of invalid rules once made a
// 249 MB error, logged in one line.
func TestErrorsOfLongValuesAreShort(t *testing.T) {
	long := strings.Repeat("x", 4<<10)
	var b strings.Builder
	b.WriteString(header)
	for i := range 1000 { // 4 MB of rules, every one with three errors
		fmt.Fprintf(&b, "  - id: r%d\n    action: %s\n    mode: %s\n    %s: 1\n", i, long, long, long[:1000]) // a YAML key is at most 1024 bytes
	}
	src := b.String()
	list := parseErrors(t, Source{Name: "rules.yaml", Data: []byte(src)})
	text := list.Error()
	if len(text) > 32<<10 {
		t.Errorf("%d bytes of rules made %d bytes of errors, want at most 32 KiB", len(src), len(text))
	}
	want := regexp.MustCompile(`^rules\.yaml:6:13: action must be allow or deny, got "x{80}"… \(4096 bytes\)$`)
	if !want.MatchString(list[0].Error()) {
		t.Errorf("first error %q, want the value shortened with its length", list[0].Error())
	}

	// The reloader's status and log carry the same bounded text.
	dir := t.TempDir()
	path := writeFile(t, dir, "rules.yaml", ruleSet("v1", "allow"))
	_, r, _ := newReloader(t, path, ReloaderOptions{Logger: slog.New(slog.DiscardHandler)})
	writeFile(t, dir, "rules.yaml", src)
	if _, err := r.Reload(); err == nil {
		t.Fatal("Reload of invalid rules succeeded")
	}
	_, err := Load(path)
	if err == nil {
		t.Fatal("Load of invalid rules succeeded")
	}
	if st := r.Status(); st.LastError != err.Error() || len(st.LastError) > 48<<10 {
		t.Errorf("Status.LastError is %d bytes, want the %d of the bounded error", len(st.LastError), len(err.Error()))
	}
}

// TestYAMLErrorNamesTheOffendingLine: the YAML library names the line where
// the enclosing block starts; the error names the line to fix, at its first
// column, and still quotes nothing of the file.
func TestYAMLErrorNamesTheOffendingLine(t *testing.T) {
	head := "apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local]\nrules:\n"
	for _, tc := range []struct {
		name, src string
		want      string // the error, whole
	}{
		{"less_indented_key", head + "  - id: a\n    action: allow\n    to:\n      hosts: [a.example]\n     methods: [POST]\n      paths: [/x]\n",
			"rules.yaml:9:6: invalid YAML: did not find expected key (inside the block that starts on line 5: check this line's indentation)"},
		{"far_below_the_block", head + "  - id: a\n    action: allow\n" + strings.Repeat("    # a comment\n", 40) + "   to: {}\n",
			"rules.yaml:47:4: invalid YAML: did not find expected '-' indicator (inside the block that starts on line 5: check this line's indentation)"},
		{"reported_line_is_the_line", head + "  - id: a\n    action: allow: deny\n",
			"rules.yaml:6:1: invalid YAML: mapping values are not allowed in this context"},
		{"secret_on_the_offending_line", "x: 1\na:\n  b: 1\n  d: 2\n c: " + secret + "\n",
			"rules.yaml:5:1: invalid YAML: did not find expected key"}, // the library names this line itself
	} {
		t.Run(tc.name, func(t *testing.T) {
			list := parseErrors(t, Source{Name: "rules.yaml", Data: []byte(tc.src)})
			if len(list) != 1 || list[0].Error() != tc.want || list[0].Doc != "yaml" {
				t.Errorf("errors:\n%s\nwant %q", list.Error(), tc.want)
			}
			if strings.Contains(list.Error(), "sk_live") {
				t.Errorf("the error quotes the file: %s", list.Error())
			}
		})
	}
}

// TestHostHints: a host written as a URL, or part of one, says what to
// write instead.
func TestHostHints(t *testing.T) {
	for _, tc := range []struct{ host, want string }{
		{"https://api.mailchimp.com", `hosts: "https://api.mailchimp.com": drop the scheme: hosts are names only (write hosts: ["api.mailchimp.com"])`},
		{"api.mailchimp.com/3.0", `hosts: "api.mailchimp.com/3.0": paths go under to.paths, not in the host (write hosts: ["api.mailchimp.com"], paths: ["/3.0/**"] for everything below /3.0)`},
		{"api.mailchimp.com/", `hosts: "api.mailchimp.com/": drop the trailing / (write hosts: ["api.mailchimp.com"])`},
		{"https://API.example.com:8443/v1/", `hosts: "https://API.example.com:8443/v1/": drop the scheme: hosts are names only; paths go under to.paths, not in the host (write hosts: ["api.example.com"], ports: [8443], paths: ["/v1/**"] for everything below /v1)`},
		{"*.example.com/", `hosts: "*.example.com/": drop the trailing / (write hosts: ["*.example.com"])`},
		{"https://", `hosts: "https://": drop the scheme: hosts are names only`},
		{"api.example.com:443", `hosts: "api.example.com:443": write ports under to.ports, not in the host`},
		{"api example.com", `hosts: "api example.com" is not a host name (use *.example.com for sub-domains, * for any host)`},
	} {
		src := fmt.Sprintf("apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local]\nrules:\n  - {id: a, action: allow, to: {hosts: [%q]}}\n", tc.host)
		list := parseErrors(t, Source{Name: "rules.yaml", Data: []byte(src)})
		if len(list) != 1 || list[0].Msg != tc.want || list[0].Doc != "hosts" {
			t.Errorf("%s:\n got %q\nwant %q", tc.host, list.Error(), tc.want)
		}
	}
}
