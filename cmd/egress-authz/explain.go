package main

// rules explain: how a rule set decides one request, rule by rule.

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strconv"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/internal/admin"
	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/stores"
	"github.com/egress-authz/egress-authz/internal/checkreq"
	"github.com/egress-authz/egress-authz/internal/compliance"
	"github.com/egress-authz/egress-authz/rules"
)

func explainCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules explain", flag.ContinueOnError)
	fs.SetOutput(stderr)
	principal := fs.String("principal", "", "caller's SPIFFE `ID`")
	method := fs.String("X", "GET", "HTTP `METHOD`")
	sni := fs.String("sni", "", "explain a TLS-passthrough connection to this server `NAME` instead of a URL")
	port := fs.Uint("port", 443, "destination `PORT` of an --sni connection")
	at := fs.String("at", "", "decide as of this `TIME` (YYYY-MM-DD or RFC 3339; default now)")
	all := fs.Bool("all", false, "list every rule, not only the matching ones and the nearest misses")
	archived := fs.String("version", "", "explain with the rule-set `VERSION` kept in the decision log's archive (as a record names it: the rules as they were when they decided) instead of PATH")
	dsn := fs.String("audit", defaultAuditDSN, "decision log `DSN` whose archive --version reads")
	format := formatFlag(fs)
	keys := addBundleKeys(fs, "rules explain", stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egress-authz rules explain PATH --principal ID [-X METHOD] URL
       egress-authz rules explain PATH --principal ID --sni HOST [--port 443]
       egress-authz rules explain --version V [--audit DSN] --principal ID [-X METHOD] URL

Shows how the rule set PATH (rule files, or a bundle file) decides one
request, exactly as the server would: the decision, the deciding rule, the
other rules that matched, and for the rules that nearly matched, which
field did not match and with which value. With --version, the rule set is
the version of that name in the decision log's rule-set archive: a
record's ruleset, so that a decision is explained by the rules as they
were when it was made.
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
	path := 1 // positional arguments before the URL
	if *archived != "" {
		path = 0
	}
	var req rules.Request
	switch {
	case fs.NArg() == path && *sni != "" && !methodSet && *port >= 1 && *port <= 65535:
		req = checkreq.SNIRequest(*principal, *sni, uint32(*port))
	case fs.NArg() == path+1 && *sni == "" && !portSet: // a URL carries its port
		var err error
		if req, err = (checkreq.HTTP{Principal: *principal, Method: *method, URL: fs.Arg(path)}).Request(); err != nil {
			fmt.Fprintln(stderr, "egress-authz rules explain:", err)
			return exitUsage
		}
	default:
		fs.Usage()
		return exitUsage
	}
	var now time.Time
	var table *rules.Table
	if *archived != "" {
		var err error
		if now, err = parseAt(*at, time.Now().UTC()); err != nil {
			fmt.Fprintln(stderr, "egress-authz rules explain: --at", err)
			return exitUsage
		}
		if table, err = archivedTable(ctx, *dsn, *archived); err != nil {
			fmt.Fprintln(stderr, "egress-authz rules explain:", err)
			return exitFail
		}
	} else {
		var code int
		if now, table, code = tableAt("rules explain", fs.Arg(0), *at, *format, keys, stdout, stderr); table == nil {
			return code
		}
	}
	near := admin.NearMisses
	if *all {
		near = -1
	}
	e, err := table.Explain(req, now, near)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz rules explain:", err)
		return exitUsage
	}
	if *format == "json" {
		printJSON(stdout, e)
	} else {
		what := fmt.Sprintf("%s %s", req.Method, fs.Arg(path))
		if req.SNI {
			what = fmt.Sprintf("TLS passthrough to %s port %d", req.Host, req.Port)
		}
		printExplanation(stdout, what, &e, *all, len(table.Set().Rules))
	}
	if e.Decision.Allow {
		return exitOK
	}
	return exitDeny
}

func printExplanation(w io.Writer, what string, e *rules.Explanation, all bool, nRules int) {
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
	if len(e.Rules) == 0 {
		fmt.Fprintln(w, "\nNo rule was looked at: the request is denied before rules are matched.")
		return
	}

	fmt.Fprintln(w, "\nMatching rules:")
	matching := e.Matching()
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
		for _, rc := range e.Rules {
			if !rc.Matched {
				misses = append(misses, rc)
			}
		}
		fmt.Fprintln(w, "\nRules that did not match:")
	} else {
		misses = e.NearMisses(-1) // Explain kept only the nearest
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

// archivedTable compiles the rule-set version kept in the archive of the
// decision log dsn.
func archivedTable(ctx context.Context, dsn, version string) (*rules.Table, error) {
	if !audit.ValidVersion(version) {
		return nil, fmt.Errorf("--version %q: a rule-set version is 16 hex digits, as a record's ruleset shows it", version)
	}
	st, err := stores.OpenExisting(ctx, dsn)
	if err != nil {
		return nil, err
	}
	defer st.Close()
	a, ok := st.(audit.RuleSetArchive)
	if !ok {
		return nil, fmt.Errorf("the decision log %s keeps no rule-set archive", stores.Key(dsn))
	}
	set, err := compliance.ArchivedSet(ctx, a, version)
	if err != nil {
		return nil, err
	}
	return rules.Compile(set)
}
