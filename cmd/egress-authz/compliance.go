package main

// The compliance team's commands: rules test, explain, diff and suggest.
// Each answers in plain words, or in JSON for CI with --format json.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/egress-authz/egress-authz/internal/admin"
	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/stores"
	"github.com/egress-authz/egress-authz/internal/checkreq"
	"github.com/egress-authz/egress-authz/internal/replay"
	"github.com/egress-authz/egress-authz/internal/when"
	"github.com/egress-authz/egress-authz/rules"
)

// formatFlag adds --format text|json to fs.
func formatFlag(fs *flag.FlagSet) *string {
	return fs.String("format", "text", "output `FORMAT`: text (plain words) or json (for CI)")
}

func checkFormat(cmd, format string, stderr io.Writer) bool {
	if format != "text" && format != "json" {
		fmt.Fprintf(stderr, "egress-authz %s: --format %q: want text or json\n", cmd, format)
		return false
	}
	return true
}

// parseAt reads an --at value: a day (00:00 UTC) or an RFC 3339 time; ""
// is now.
func parseAt(s string, now time.Time) (time.Time, error) {
	if s == "" {
		return now, nil
	}
	return when.ParseTime(s)
}

// loadTable loads and compiles the rule set at path. Why an invalid set is
// invalid is printed to w (see printInvalid).
// tableAt reads --at and loads the rule set at path for command cmd. When
// the table is nil, the command stops with code (the problem is printed).
func tableAt(cmd, path, at, format string, stdout, stderr io.Writer) (time.Time, *rules.Table, int) {
	now, err := parseAt(at, time.Now().UTC())
	if err != nil {
		fmt.Fprintf(stderr, "egress-authz %s: --at %v\n", cmd, err)
		return now, nil, exitUsage
	}
	table, ok := loadTable(path, format, stdout)
	if !ok {
		fmt.Fprintf(stderr, "egress-authz %s: the rule set %s is invalid (errors above)\n", cmd, path)
		return now, nil, exitFail
	}
	return now, table, exitOK
}

func loadTable(path, format string, w io.Writer) (*rules.Table, bool) {
	t, err := compileSet(path)
	if err != nil {
		printInvalid(w, format, err)
		return nil, false
	}
	return t, true
}

// compileSet loads and compiles the rule set at path; an error is always
// an ErrorList.
func compileSet(path string) (*rules.Table, error) {
	set, err := rules.Load(path)
	if err == nil {
		var t *rules.Table
		if t, err = rules.Compile(set); err == nil {
			return t, nil
		}
	}
	var list rules.ErrorList
	if !errors.As(err, &list) {
		err = rules.ErrorList{{Pos: rules.Pos{File: path}, Msg: err.Error()}}
	}
	return nil, err
}

// plural writes "1 rule", "2 rules".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return strconv.Itoa(n) + " " + noun + "s"
}

// printInvalid prints why a rule or case file is invalid: one
// file:line:col diagnostic a line, or {"errors": [...]} in JSON.
func printInvalid(w io.Writer, format string, err error) {
	var list rules.ErrorList
	if !errors.As(err, &list) {
		list = rules.ErrorList{{Msg: err.Error()}}
	}
	if format == "json" {
		type jsonErr struct {
			Pos     string `json:"pos,omitempty"`
			Message string `json:"message"`
		}
		errs := []jsonErr{}
		for _, d := range list {
			errs = append(errs, jsonErr{Pos: d.Pos.String(), Message: d.Msg})
		}
		printJSON(w, map[string]any{"errors": errs})
		return
	}
	for _, d := range list {
		if d.Pos == (rules.Pos{}) {
			fmt.Fprintln(w, d.Msg)
		} else {
			fmt.Fprintln(w, d.Error())
		}
	}
}

// ---- rules test ----

type caseResult struct {
	Name     string         `json:"name"`
	Pos      string         `json:"pos"`
	Passed   bool           `json:"passed"`
	Request  caseRequest    `json:"request"`
	Expected replay.Outcome `json:"expected"`
	Got      replay.Outcome `json:"got"`
	Problems []string       `json:"problems,omitempty"`
}

type caseRequest struct {
	Principal string `json:"principal"`
	Method    string `json:"method,omitempty"`
	URL       string `json:"url,omitempty"`
	SNI       string `json:"sni,omitempty"`
	Port      int    `json:"port,omitempty"`
	At        string `json:"at,omitempty"`
}

func rulesTestCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	casesPath := fs.String("cases", "", "test-case `FILE` (YAML, see below)")
	at := fs.String("at", "", "decide as of this `TIME` (YYYY-MM-DD or RFC 3339; default now); a case's own at: wins")
	format := formatFlag(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egress-authz rules test PATH --cases FILE [--at TIME] [--format text|json]

Runs the test cases in FILE against the rule file or directory PATH: each
case is a request and the decision it must get. URLs are decided exactly as
the real request through the egress gateway would be.

  cases:
    - name: checkout charges Stripe
      principal: spiffe://cluster.local/ns/payments/sa/checkout
      method: POST                              # default GET
      url: https://api.stripe.com/v1/charges    # or sni: HOST (TLS passthrough), port: 443
      expect: allow                             # allow | deny
      rule: payments-stripe-charges             # optional: the deciding rule ("" for none)
      reason: allowed-by-rule                   # optional
      at: 2027-07-01                            # optional: decide as of this day

Exit status: 0 every case passed, 1 a case failed or a file is invalid.

Flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := parseArgs(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 || *casesPath == "" || !checkFormat("rules test", *format, stderr) {
		fs.Usage()
		return exitUsage
	}
	now, table, code := tableAt("rules test", fs.Arg(0), *at, *format, stdout, stderr)
	if table == nil {
		return code
	}
	data, err := os.ReadFile(*casesPath)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz rules test:", err)
		return exitFail
	}
	cases, err := rules.ParseCases(rules.Source{Name: *casesPath, Data: data})
	if err != nil {
		printInvalid(stdout, *format, err)
		fmt.Fprintf(stderr, "egress-authz rules test: the case file %s is invalid (errors above)\n", *casesPath)
		return exitFail
	}
	// Build every request first: a URL that cannot be a request is an
	// error in the case file, not a failed case.
	reqs := make([]rules.Request, len(cases))
	var bad rules.ErrorList
	for i, c := range cases {
		if c.SNI != "" {
			reqs[i] = checkreq.SNIRequest(c.Principal, c.SNI, uint32(c.Port))
			continue
		}
		if reqs[i], err = (checkreq.HTTP{Principal: c.Principal, Method: c.Method, URL: c.URL}).Request(); err != nil {
			bad = append(bad, rules.Diagnostic{Pos: c.URLPos, Msg: fmt.Sprintf("case %q: %v", c.Name, err)})
		}
	}
	if len(bad) > 0 {
		printInvalid(stdout, *format, bad)
		fmt.Fprintf(stderr, "egress-authz rules test: the case file %s is invalid (errors above)\n", *casesPath)
		return exitFail
	}

	results := make([]caseResult, len(cases))
	passed := 0
	for i := range cases {
		c := &cases[i]
		when := now
		if !c.At.IsZero() {
			when = c.At
		}
		d := table.Decide(reqs[i], when)
		res := caseResult{Name: c.Name, Pos: c.Pos.String(),
			Request:  caseRequest{Principal: c.Principal, Method: reqs[i].Method, URL: c.URL, SNI: c.SNI},
			Expected: replay.Outcome{Decision: string(c.Expect), Rule: c.Rule, Reason: c.Reason},
			Got:      replay.OutcomeOf(&d),
		}
		if c.SNI != "" {
			res.Request.Port = c.Port
		}
		if !c.At.IsZero() {
			res.Request.At = c.At.Format(time.RFC3339)
		}
		res.Problems = c.Check(d, table.Set())
		res.Passed = len(res.Problems) == 0
		if res.Passed {
			passed++
		}
		results[i] = res
	}
	failed := len(cases) - passed

	if *format == "json" {
		printJSON(stdout, map[string]any{"rules": fs.Arg(0), "cases": *casesPath, "ruleset": table.Version(),
			"at": now.Format(time.RFC3339), "passed": passed, "failed": failed, "results": results})
	} else {
		for i, res := range results {
			if res.Passed {
				fmt.Fprintf(stdout, "ok    %s\n", res.Name)
				continue
			}
			fmt.Fprintf(stdout, "FAIL  %s  (%s)\n", res.Name, res.Pos)
			fmt.Fprintf(stdout, "      request:  %s\n", describeCase(&cases[i], reqs[i]))
			fmt.Fprintf(stdout, "      expected: %s\n", describeExpected(&cases[i]))
			fmt.Fprintf(stdout, "      got:      %s\n", describeOutcome(res.Got))
			for _, p := range res.Problems {
				fmt.Fprintf(stdout, "      - %s\n", p)
			}
			fmt.Fprintf(stdout, "      why:      %s\n", explainCommand(fs.Arg(0), &cases[i]))
		}
		fmt.Fprintf(stdout, "%d passed, %d failed\n", passed, failed)
	}
	if failed > 0 {
		return exitFail
	}
	return exitOK
}

func describeCase(c *rules.Case, req rules.Request) string {
	who := c.Principal
	if who == "" {
		who = "(no principal)"
	}
	if c.SNI != "" {
		return fmt.Sprintf("TLS passthrough to %s port %d from %s", c.SNI, c.Port, who)
	}
	return fmt.Sprintf("%s %s from %s", req.Method, c.URL, who)
}

func describeExpected(c *rules.Case) string {
	s := string(c.Expect)
	switch {
	case c.HasRule && c.Rule != "":
		s += " by " + c.Rule
	case c.HasRule:
		s += ", no rule deciding"
	}
	if c.Reason != "" {
		s += " (" + string(c.Reason) + ")"
	}
	return s
}

func describeOutcome(o replay.Outcome) string {
	s := o.Decision
	if o.Rule != "" {
		s += " by " + o.Rule
	}
	return s + " (" + string(o.Reason) + ")"
}

// explainCommand is the command that shows why a case's request gets the
// decision it gets.
func explainCommand(rulesPath string, c *rules.Case) string {
	args := []string{"egress-authz rules explain", shellQuote(rulesPath), "--principal", shellQuote(c.Principal)}
	if c.SNI != "" {
		args = append(args, "--sni", shellQuote(c.SNI))
		if c.Port != 443 {
			args = append(args, "--port", strconv.Itoa(c.Port))
		}
	} else {
		if c.Method != "" && c.Method != "GET" {
			args = append(args, "-X", shellQuote(c.Method))
		}
		args = append(args, shellQuote(c.URL))
	}
	if !c.At.IsZero() {
		args = append(args, "--at", c.At.Format(time.RFC3339))
	}
	return strings.Join(args, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@%+=,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// ---- rules explain ----

func explainCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	principal := fs.String("principal", "", "caller's SPIFFE `ID`")
	method := fs.String("X", "GET", "HTTP `METHOD`")
	sni := fs.String("sni", "", "explain a TLS-passthrough connection to this server `NAME` instead of a URL")
	port := fs.Uint("port", 443, "destination `PORT` of an --sni connection")
	at := fs.String("at", "", "decide as of this `TIME` (YYYY-MM-DD or RFC 3339; default now)")
	all := fs.Bool("all", false, "list every rule, not only the matching ones and the nearest misses")
	format := formatFlag(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egress-authz rules explain PATH --principal ID [-X METHOD] URL
       egress-authz rules explain PATH --principal ID --sni HOST [--port 443]

Shows how the rule set PATH decides one request, exactly as the server would:
the decision, the deciding rule, the other rules that matched, and for the
rules that nearly matched, which field did not match and with which value.
Nothing is sent anywhere. The running server answers the same question at
GET /v1/explain?principal=ID&method=M&url=URL (or sni=HOST) on its admin port.

Exit status: 0 allow, 3 deny, 1 error.

Flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := parseArgs(fs, args); !ok {
		return code
	}
	methodSet, portSet := false, false
	fs.Visit(func(f *flag.Flag) {
		methodSet = methodSet || f.Name == "X"
		portSet = portSet || f.Name == "port"
	})
	if !checkFormat("rules explain", *format, stderr) {
		return exitUsage
	}
	var req rules.Request
	switch {
	case fs.NArg() == 1 && *sni != "" && !methodSet && *port >= 1 && *port <= 65535:
		req = checkreq.SNIRequest(*principal, *sni, uint32(*port))
	case fs.NArg() == 2 && *sni == "" && !portSet: // a URL carries its port
		var err error
		if req, err = (checkreq.HTTP{Principal: *principal, Method: *method, URL: fs.Arg(1)}).Request(); err != nil {
			fmt.Fprintln(stderr, "egress-authz rules explain:", err)
			return exitUsage
		}
	default:
		fs.Usage()
		return exitUsage
	}
	now, table, code := tableAt("rules explain", fs.Arg(0), *at, *format, stdout, stderr)
	if table == nil {
		return code
	}
	e := table.Explain(req, now)
	full := e
	if !*all {
		e = e.Trim(admin.NearMisses)
	}
	if *format == "json" {
		printJSON(stdout, e)
	} else {
		what := fmt.Sprintf("%s %s", req.Method, fs.Arg(1))
		if req.SNI {
			what = fmt.Sprintf("TLS passthrough to %s port %d", req.Host, req.Port)
		}
		printExplanation(stdout, what, &full, &e, *all, len(table.Set().Rules))
	}
	if e.Decision.Allow {
		return exitOK
	}
	return exitDeny
}

func printExplanation(w io.Writer, what string, full, e *rules.Explanation, all bool, nRules int) {
	d := &e.Decision
	req := &e.Request
	decision := "deny"
	if d.Allow {
		decision = "allow"
	}
	rule := "-"
	if d.Rule != nil {
		rule = fmt.Sprintf("%s (%s)", d.Rule.ID, d.Rule.Pos)
	}
	fmt.Fprintf(w, "decision:   %s\nrule:       %s\nreason:     %s\nwhy:        %s\n", decision, rule, d.Reason, e.Summary)
	who := req.Principal
	if who == "" {
		who = "(no principal)"
	}
	fmt.Fprintf(w, "request:    %s from %s\n", what, who)
	if d.Host != "" {
		var parts []string
		parts = append(parts, "host "+d.Host, "port "+strconv.Itoa(d.Port))
		if !req.SNI {
			parts = append(parts, "path "+d.Path)
		}
		if d.Identity.Namespace != "" {
			parts = append(parts, "namespace "+d.Identity.Namespace, "service account "+d.Identity.ServiceAccount)
		}
		fmt.Fprintf(w, "matched as: %s\n", strings.Join(parts, ", "))
	}
	fmt.Fprintf(w, "ruleset:    %s (%s)\n", d.Version, plural(nRules, "rule"))
	if len(full.Rules) == 0 {
		fmt.Fprintln(w, "\nNo rule was looked at: the request is denied before rules are matched.")
		return
	}

	fmt.Fprintln(w, "\nMatching rules:")
	matching := full.Matching()
	if len(matching) == 0 {
		fmt.Fprintln(w, "  (none)")
	}
	for _, rc := range matching {
		var role string
		switch rc.Role {
		case rules.RoleDecides:
			role = "decides: " + string(rc.Rule.Action)
		case rules.RoleOutranked:
			if rc.Rule.Action == rules.Allow && d.Reason == rules.ReasonDeniedByRule {
				role = "allow, overridden: a matching deny rule wins"
			} else {
				role = string(rc.Rule.Action) + ", not needed: an earlier rule decided"
			}
		case rules.RoleDryRun:
			role = "dry-run: would " + string(rc.Rule.Action) + " (recorded only, not enforced)"
		}
		fmt.Fprintf(w, "  %s  (%s)\n    %s\n", rc.Rule.ID, rc.Rule.Pos, role)
	}

	var misses []rules.RuleCheck
	if all {
		for _, rc := range full.Rules {
			if !rc.Matched {
				misses = append(misses, rc)
			}
		}
		fmt.Fprintln(w, "\nRules that did not match:")
	} else {
		misses = full.NearMisses(admin.NearMisses)
		fmt.Fprintln(w, "\nNearest rules that did not match:")
	}
	if len(misses) == 0 {
		fmt.Fprintln(w, "  (none)")
	}
	for _, rc := range misses {
		mode := ""
		if rc.Rule.Mode == rules.DryRun {
			mode = ", dry-run"
		}
		fmt.Fprintf(w, "  %s  (%s, %s%s)\n", rc.Rule.ID, rc.Rule.Pos, rc.Rule.Action, mode)
		for _, m := range rc.Misses {
			fmt.Fprintf(w, "    - %s\n", m.Why)
		}
	}
	if rest := nRules - len(matching) - len(misses); rest > 0 {
		fmt.Fprintf(w, "  ... and %s that miss on as many fields or more (--all lists them)\n", plural(rest, "more rule"))
	}
}

// ---- rules diff ----

type diffRule struct {
	ID      string   `json:"id"`
	Pos     string   `json:"pos"`
	Does    string   `json:"does"`
	Changes []string `json:"changes,omitempty"`
}

func diffCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules diff", flag.ContinueOnError)
	fs.SetOutput(stderr)
	against := fs.String("against", "", "decision log `DSN` (sqlite:PATH, postgres://...) whose recorded requests are decided again with NEW")
	since := fs.String("since", "7d", "with --against: replay records from this `TIME` on (a duration back from now, like 7d, or RFC 3339)")
	until := fs.String("until", "", "with --against: replay records before this `TIME`")
	at := fs.String("at", "", "judge rule expiry as of this `TIME` (YYYY-MM-DD or RFC 3339; default now)")
	limit := fs.Int("limit", 20, "text output: show at most `N` groups of changed requests (json shows all)")
	format := formatFlag(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egress-authz rules diff OLD NEW [--against DSN [--since 7d]] [--format text|json]

Compares two rule sets (files or directories): the rules added, removed and
changed, and the access gained and lost, per caller, host, method and path
pattern. With --against, every request recorded in the decision log since
--since is decided again with NEW, and those that would now be decided
differently are listed, grouped and counted.

Exit status: 0 (whatever changed), 1 an error.

Flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := parseArgs(fs, args); !ok {
		return code
	}
	if fs.NArg() != 2 || !checkFormat("rules diff", *format, stderr) {
		fs.Usage()
		return exitUsage
	}
	wall := time.Now().UTC()
	now, err := parseAt(*at, wall)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz rules diff: --at", err)
		return exitUsage
	}
	var filter audit.Filter
	if *against != "" {
		if filter.Since, err = when.ParseSince(*since, wall); err != nil {
			fmt.Fprintln(stderr, "egress-authz rules diff: --since", err)
			return exitUsage
		}
		if filter.Until, err = when.ParseSince(*until, wall); err != nil {
			fmt.Fprintln(stderr, "egress-authz rules diff: --until", err)
			return exitUsage
		}
	}
	oldT, err1 := compileSet(fs.Arg(0))
	newT, err2 := compileSet(fs.Arg(1))
	if err1 != nil || err2 != nil {
		var all rules.ErrorList
		for _, err := range []error{err1, err2} {
			var list rules.ErrorList
			if errors.As(err, &list) {
				all = append(all, list...)
			}
		}
		printInvalid(stdout, *format, all)
		fmt.Fprintln(stderr, "egress-authz rules diff: a rule set is invalid (errors above)")
		return exitFail
	}
	d := rules.Diff(oldT.Set(), newT.Set(), now)
	var rep *replay.Report
	if *against != "" {
		st, err := stores.OpenExisting(ctx, *against)
		if err != nil {
			fmt.Fprintln(stderr, "egress-authz rules diff: --against:", err)
			return exitFail
		}
		rep, err = replay.Replay(ctx, st, filter, oldT, newT, now)
		st.Close()
		if err != nil {
			fmt.Fprintln(stderr, "egress-authz rules diff:", err)
			return exitFail
		}
	}

	if *format == "json" {
		printJSON(stdout, diffJSON(fs.Arg(0), fs.Arg(1), oldT, newT, d, *against, filter, rep))
		return exitOK
	}
	printDiff(stdout, fs.Arg(0), fs.Arg(1), d)
	if rep != nil {
		printReplay(stdout, *against, filter, rep, *limit)
	}
	return exitOK
}

func diffJSON(oldPath, newPath string, oldT, newT *rules.Table, d *rules.SetDiff, dsn string, f audit.Filter, rep *replay.Report) any {
	rulesOf := func(rs []*rules.Rule) []diffRule {
		out := []diffRule{}
		for _, r := range rs {
			out = append(out, diffRule{ID: r.ID, Pos: r.Pos.String(), Does: r.Describe()})
		}
		return out
	}
	changed := []diffRule{}
	for _, c := range d.Changed {
		changed = append(changed, diffRule{ID: c.New.ID, Pos: c.New.Pos.String(), Does: c.New.Describe(), Changes: c.Changes})
	}
	orEmpty := func(s []string) []string {
		if s == nil {
			return []string{}
		}
		return s
	}
	access := func(a []rules.Access) []rules.Access {
		if a == nil {
			return []rules.Access{}
		}
		return a
	}
	out := map[string]any{
		"old": map[string]any{"path": oldPath, "ruleset": oldT.Version(), "rules": len(oldT.Set().Rules)},
		"new": map[string]any{"path": newPath, "ruleset": newT.Version(), "rules": len(newT.Set().Rules)},
		"rules": map[string]any{"added": rulesOf(d.Added), "removed": rulesOf(d.Removed), "changed": changed,
			"unchanged": d.Unchanged},
		"trust_domains": map[string]any{"added": orEmpty(d.TrustDomainsAdded), "removed": orEmpty(d.TrustDomainsRemoved)},
		"access":        map[string]any{"gained": access(d.Gained), "lost": access(d.Lost)},
	}
	if rep != nil {
		groups := func(g []replay.Group) []replay.Group {
			if g == nil {
				return []replay.Group{}
			}
			return g
		}
		r := map[string]any{"against": dsn, "records": rep.Records, "skipped": rep.Skipped,
			"unchanged": rep.Unchanged, "changed_count": rep.ChangedCount, "rule_changed_count": rep.RuleChangedCount,
			"changed": groups(rep.Changed), "rule_changed": groups(rep.RuleChanged)}
		if !f.Since.IsZero() {
			r["since"] = f.Since
		}
		if !f.Until.IsZero() {
			r["until"] = f.Until
		}
		out["replay"] = r
	}
	return out
}

func printDiff(w io.Writer, oldPath, newPath string, d *rules.SetDiff) {
	fmt.Fprintf(w, "Rules, %s -> %s: %d added, %d removed, %d changed, %d unchanged\n",
		oldPath, newPath, len(d.Added), len(d.Removed), len(d.Changed), d.Unchanged)
	for _, r := range d.Added {
		fmt.Fprintf(w, "  + added    %s  (%s)\n             %s\n", r.ID, r.Pos, r.Describe())
	}
	for _, r := range d.Removed {
		fmt.Fprintf(w, "  - removed  %s  (%s)\n             %s\n", r.ID, r.Pos, r.Describe())
	}
	for _, c := range d.Changed {
		fmt.Fprintf(w, "  ~ changed  %s  (%s)\n", c.New.ID, c.New.Pos)
		for _, ch := range c.Changes {
			fmt.Fprintf(w, "             %s\n", ch)
		}
	}
	for _, td := range d.TrustDomainsAdded {
		fmt.Fprintf(w, "  + trust domain %s: its workloads are no longer denied outright; rules decide for them\n", td)
	}
	for _, td := range d.TrustDomainsRemoved {
		fmt.Fprintf(w, "  - trust domain %s: its workloads lose all access\n", td)
	}
	printAccess := func(title, sign string, l []rules.Access) {
		fmt.Fprintf(w, "\n%s (%d):\n", title, len(l))
		if len(l) == 0 {
			fmt.Fprintln(w, "  (none)")
		}
		for _, a := range l {
			var via string
			switch {
			case a.Action == rules.Allow && sign == "+":
				via = "allow rule " + a.Rule
			case a.Action == rules.Allow:
				via = "allow rule " + a.Rule + " removed or narrowed"
			case sign == "+":
				via = "deny rule " + a.Rule + " removed or narrowed; allowed only where an allow rule matches"
			default:
				via = "new or wider deny rule " + a.Rule
			}
			fmt.Fprintf(w, "  %s %s -> %s  (%s)\n", sign, a.Who(), a.What(), via)
		}
	}
	printAccess("Access gained", "+", d.Gained)
	printAccess("Access lost", "-", d.Lost)
}

func printReplay(w io.Writer, dsn string, f audit.Filter, rep *replay.Report, limit int) {
	window := "all records"
	switch {
	case !f.Since.IsZero() && !f.Until.IsZero():
		window = fmt.Sprintf("%s to %s", f.Since.Format(time.RFC3339), f.Until.Format(time.RFC3339))
	case !f.Since.IsZero():
		window = "since " + f.Since.Format(time.RFC3339)
	}
	fmt.Fprintf(w, "\nReal traffic: %d recorded decisions in %s (%s), decided again with the new rules:\n", rep.Records, dsn, window)
	if rep.Records == 0 {
		fmt.Fprintln(w, "  no records in this window: nothing to compare")
		return
	}
	toDeny, toAllow, before := 0, 0, 0
	for _, g := range rep.Changed {
		if g.Now.Decision == audit.Deny {
			toDeny += g.Count
		} else {
			toAllow += g.Count
		}
	}
	for _, l := range [][]replay.Group{rep.Changed, rep.RuleChanged} {
		for _, g := range l {
			if g.Cause == replay.CauseBefore {
				before += g.Count
			}
		}
	}
	fmt.Fprintf(w, "  %d would now be decided differently: %d allowed would be denied, %d denied would be allowed\n",
		rep.ChangedCount, toDeny, toAllow)
	printGroups(w, rep.Changed, limit)
	if rep.RuleChangedCount > 0 {
		fmt.Fprintf(w, "  %d would get the same decision from another rule or for another reason\n", rep.RuleChangedCount)
		printGroups(w, rep.RuleChanged, limit)
	}
	fmt.Fprintf(w, "  %d unchanged", rep.Unchanged)
	if rep.Skipped > 0 {
		fmt.Fprintf(w, "; %d skipped (invalid requests, decided before any rule)", rep.Skipped)
	}
	fmt.Fprintln(w)
	if before > 0 {
		fmt.Fprintf(w, "  Note: %d of these requests, marked [before], are decided differently from the record by the OLD\n"+
			"  rules too: the log was written under another rule set, or a rule expired since. Not caused by this change.\n", before)
	}
}

func printGroups(w io.Writer, groups []replay.Group, limit int) {
	if len(groups) == 0 {
		return
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	for i, g := range groups {
		if i == limit {
			rest := 0
			for _, g := range groups[i:] {
				rest += g.Count
			}
			fmt.Fprintf(tw, "    ... %d more groups (%d requests); --limit or --format json shows them\n", len(groups)-i, rest)
			break
		}
		target := g.Host
		if g.Port != 0 {
			target += ":" + strconv.Itoa(g.Port)
		}
		if g.TLS {
			target += " (TLS passthrough)"
		} else {
			target = g.Method + " " + target + g.Path
		}
		mark := ""
		if g.Cause == replay.CauseBefore {
			mark = " [before]"
		}
		fmt.Fprintf(tw, "    %d×\t%s\t%s\twas %s, now %s%s\n", g.Count, g.Principal, target, g.Was, g.Now, mark)
	}
	tw.Flush()
}

// ---- rules suggest ----

func suggestCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules suggest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "decision log `DSN` to learn from (sqlite:PATH, postgres://...)")
	namespace := fs.String("namespace", "", "the `NAMESPACE` whose recorded traffic the allow-list must cover")
	since := fs.String("since", "7d", "learn from records from this `TIME` on (a duration back from now, like 7d, or RFC 3339)")
	until := fs.String("until", "", "learn from records before this `TIME`")
	subdomains := fs.Int("subdomains", 3, "write `N` or more names under one parent domain as *.parent (0: never)")
	maxPaths := fs.Int("max-paths", 10, "merge a rule's path patterns sharing leading segments into prefix/** beyond `N` patterns")
	format := formatFlag(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egress-authz rules suggest --from DSN --namespace NS [--since 7d] [--format text|json]

Proposes an allow-list, in the rule-file format, that allows the requests
recorded for the workloads of one namespace (allowed and denied alike): one
rule per workload and host, with the ports, methods and paths seen. Path
segments that look like identifiers (numbers, UUIDs, tokens) become *, and
many names under one domain become *.domain. It is a draft for a person to
review and narrow, never to merge unread. The text output is the YAML.

Flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := parseArgs(fs, args); !ok {
		return code
	}
	if fs.NArg() != 0 || *from == "" || *namespace == "" || !checkFormat("rules suggest", *format, stderr) {
		fs.Usage()
		return exitUsage
	}
	now := time.Now().UTC()
	f := audit.Filter{Namespace: *namespace}
	var err error
	if f.Since, err = when.ParseSince(*since, now); err != nil {
		fmt.Fprintln(stderr, "egress-authz rules suggest: --since", err)
		return exitUsage
	}
	if f.Until, err = when.ParseSince(*until, now); err != nil {
		fmt.Fprintln(stderr, "egress-authz rules suggest: --until", err)
		return exitUsage
	}
	st, err := stores.OpenExisting(ctx, *from)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz rules suggest: --from:", err)
		return exitFail
	}
	reqs, byReason, err := replay.Requests(ctx, st, f)
	st.Close()
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz rules suggest:", err)
		return exitFail
	}
	if len(reqs) == 0 {
		fmt.Fprintf(stderr, "egress-authz rules suggest: no usable recorded requests from namespace %s since %s in %s: nothing to learn from\n",
			*namespace, f.Since.Format(time.RFC3339), *from)
		return exitFail
	}
	opts := rules.SuggestOptions{Subdomains: *subdomains, MaxPaths: *maxPaths}
	if *subdomains <= 0 {
		opts.Subdomains = -1
	}
	sg := rules.Suggest(reqs, opts)
	yaml := rules.Marshal(sg.Set)

	// The proposal must be a valid rule set that allows every request it
	// was made from; say so loudly if it is not.
	if problem := checkSuggestion(yaml, reqs, now); problem != "" {
		fmt.Fprintln(stderr, "egress-authz rules suggest: internal error, the proposal is wrong:", problem)
		return exitFail
	}

	if *format == "json" {
		type jsonRule struct {
			ID         string   `json:"id"`
			Requests   int      `json:"requests"`
			Principals []string `json:"principals"`
			Hosts      []string `json:"hosts"`
			Ports      []int    `json:"ports,omitempty"`
			Methods    []string `json:"methods,omitempty"`
			Paths      []string `json:"paths,omitempty"`
		}
		rs := []jsonRule{}
		for i, r := range sg.Set.Rules {
			rs = append(rs, jsonRule{ID: r.ID, Requests: sg.Requests[i], Principals: r.Principals, Hosts: r.Hosts,
				Ports: r.Ports, Methods: r.Methods, Paths: r.Paths})
		}
		skipped := map[string]int{}
		for k, v := range sg.Skipped {
			skipped[string(k)] = v
		}
		if n := byReason[string(rules.ReasonUntrustedDomain)]; n > 0 {
			skipped[string(rules.ReasonUntrustedDomain)] = n
		}
		printJSON(stdout, map[string]any{"from": *from, "namespace": *namespace, "since": f.Since, "by_reason": byReason,
			"requests": total(byReason), "used": sg.Used, "skipped": skipped, "rules": rs, "yaml": string(yaml)})
		return exitOK
	}
	fmt.Fprint(stdout, suggestHeader(*from, *namespace, f, sg, byReason))
	stdout.Write(yaml)
	fmt.Fprintf(stderr, "egress-authz rules suggest: %d rules from %d requests; review them before they go anywhere near production\n",
		len(sg.Set.Rules), sg.Used)
	return exitOK
}

// checkSuggestion parses and compiles a proposed rule file and decides
// every request with it; it returns what is wrong, or "".
func checkSuggestion(yaml []byte, reqs []rules.Request, now time.Time) string {
	set, err := rules.Parse(rules.Source{Name: "suggestion.yaml", Data: yaml})
	if err != nil {
		return err.Error()
	}
	t, err := rules.Compile(set)
	if err != nil {
		return err.Error()
	}
	for _, req := range reqs {
		if d := t.Decide(req, now); !d.Allow && !slices.Contains([]rules.Reason{rules.ReasonNoIdentity,
			rules.ReasonInvalidIdentity, rules.ReasonNoHost, rules.ReasonInvalidHost, rules.ReasonUnsafePath}, d.Reason) {
			return fmt.Sprintf("it denies %s %s%s from %s (%s)", req.Method, req.Host, req.Path, req.Principal, d.Reason)
		}
	}
	return ""
}

func total(byReason map[string]int) int {
	n := 0
	for _, c := range byReason {
		n += c
	}
	return n
}

func suggestHeader(dsn, ns string, f audit.Filter, sg *rules.Suggestion, byReason map[string]int) string {
	n := total(byReason)
	var b strings.Builder
	fmt.Fprintf(&b, "# Allow-list suggested by \"egress-authz rules suggest\" from the decision log %s:\n", dsn)
	window := "since " + f.Since.Format(time.RFC3339)
	if !f.Until.IsZero() {
		window += ", until " + f.Until.Format(time.RFC3339)
	}
	allowed := byReason[string(rules.ReasonAllowed)]
	fmt.Fprintf(&b, "# %d requests from namespace %s, %s (%d were allowed, %d denied).\n", n, ns, window, allowed, n-allowed)
	fmt.Fprintf(&b, "# These %d rules allow every one of them that a rule can allow.\n", len(sg.Set.Rules))
	var left []string
	for _, r := range []rules.Reason{rules.ReasonNoIdentity, rules.ReasonInvalidIdentity, rules.ReasonNoHost,
		rules.ReasonInvalidHost, rules.ReasonUnsafePath} {
		if c := sg.Skipped[r]; c > 0 {
			left = append(left, fmt.Sprintf("%d %s", c, r))
		}
	}
	if len(left) > 0 {
		fmt.Fprintf(&b, "# Left out, since no rule can allow them: %s.\n", strings.Join(left, ", "))
	}
	if c := byReason[string(rules.ReasonUntrustedDomain)]; c > 0 {
		fmt.Fprintf(&b, "# Left out: %d from callers outside the trust domains (trusting one is a decision for a person).\n", c)
	}
	if c := byReason[string(rules.ReasonInvalidRequest)]; c > 0 {
		fmt.Fprintf(&b, "# Left out: %d invalid requests.\n", c)
	}
	if c := byReason[string(rules.ReasonDeniedByRule)]; c > 0 {
		fmt.Fprintf(&b, "# %d requests were denied by a deny rule: an allow rule does not override it.\n", c)
	}
	b.WriteString("# Review every rule before merging: narrow hosts, methods and paths where you can,\n")
	b.WriteString("# add owner, ticket and expires, then run \"egress-authz rules lint\" and \"rules test\".\n")
	return b.String()
}
