package main

// rules suggest: a draft allow-list learnt from recorded traffic.

import (
	"context"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/stores"
	"github.com/egress-authz/egress-authz/internal/compliance"
	"github.com/egress-authz/egress-authz/internal/when"
	"github.com/egress-authz/egress-authz/rules"
)

// suggestOutput is the JSON of "rules suggest --format json". The fields
// are in the order of their names, the order they had when this was a map.
type suggestOutput struct {
	ByReason  map[string]int       `json:"by_reason"` // the records read, by recorded reason
	From      string               `json:"from"`
	LeftOut   map[string]int       `json:"left_out"` // the requests only a wider rule could allow, by why
	Namespace string               `json:"namespace"`
	Requests  int                  `json:"requests"` // the records read
	Rules     []suggestRule        `json:"rules"`
	Since     time.Time            `json:"since"`
	Skipped   map[rules.Reason]int `json:"skipped"` // the requests left out, by why
	Used      int                  `json:"used"`    // the requests the rules were made from
	YAML      string               `json:"yaml"`    // the proposal, as the text output prints it
}

// suggestRule is one proposed rule, with how many requests it was made
// from.
type suggestRule struct {
	ID         string   `json:"id"`
	Requests   int      `json:"requests"`
	Principals []string `json:"principals"`
	Hosts      []string `json:"hosts"`
	Ports      []int    `json:"ports,omitempty"`
	Methods    []string `json:"methods,omitempty"`
	Paths      []string `json:"paths,omitempty"`
}

func suggestCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules suggest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	from := fs.String("from", "", "decision log `DSN` to learn from (parquet:DIR, sqlite:PATH, postgres://..., s3://BUCKET/PREFIX)")
	namespace := fs.String("namespace", "", "the `NAMESPACE` whose recorded traffic the allow-list must cover")
	since := fs.String("since", "7d", "learn from records from this `TIME` on (a duration back from now, like 7d, or RFC 3339)")
	until := fs.String("until", "", "learn from records before this `TIME`")
	widen := fs.Bool("widen", false, "allow more than was observed: identifiers seen once become *, --subdomains and --max-paths apply")
	subdomains := fs.Int("subdomains", 3, "with --widen: write `N` or more names under one parent domain as *.parent (0: never)")
	maxPaths := fs.Int("max-paths", 10, "with --widen: merge a rule's path patterns sharing leading segments into prefix/** beyond `N` patterns")
	format := formatFlag(fs)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egress-authz rules suggest --from DSN --namespace NS [--since 7d] [--widen] [--format text|json]

Proposes an allow-list, in the rule-file format, that allows the requests
recorded for the workloads of one namespace (allowed and denied alike), and
nothing that was not observed: one rule per workload, host, port and set of
methods, each method only on the paths it was seen on. A path segment
becomes * only where observations differ at it and it holds identifiers
(numbers, UUIDs, hex and random-looking tokens, ids like ch_1AbC); versions
and dates stay. Requests with a lower-case method or a path written with
dot-segments are left out and counted. Every rule has owner and ticket
TODO, which "rules lint --strict" rejects: it is a draft for a person to
review, never to merge unread. The text output is the YAML.

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
	if !*widen {
		var needWiden []string
		fs.Visit(func(f *flag.Flag) {
			if f.Name == "subdomains" || f.Name == "max-paths" {
				needWiden = append(needWiden, "--"+f.Name)
			}
		})
		if len(needWiden) > 0 {
			fmt.Fprintf(stderr, "egress-authz rules suggest: %s merge more than was observed: add --widen\n", strings.Join(needWiden, " and "))
			return exitUsage
		}
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
	reqs, byReason, err := compliance.Requests(ctx, st, f)
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
	opts := compliance.SuggestOptions{Widen: *widen, Subdomains: *subdomains, MaxPaths: *maxPaths}
	if *subdomains <= 0 {
		opts.Subdomains = -1
	}
	sg := compliance.Suggest(reqs, opts)
	yaml := rules.Marshal(sg.Set)

	// The proposal must be a valid rule set that allows every request it
	// was made from; say so loudly if it is not.
	if err := compliance.CheckSuggestion(yaml, reqs, now); err != nil {
		fmt.Fprintln(stderr, "egress-authz rules suggest: internal error, the proposal is wrong:", err)
		return exitFail
	}

	if *format == "json" {
		rs := []suggestRule{}
		for i, r := range sg.Set.Rules {
			rs = append(rs, suggestRule{ID: r.ID, Requests: sg.Requests[i], Principals: r.Principals, Hosts: r.Hosts,
				Ports: r.Ports, Methods: r.Methods, Paths: r.Paths})
		}
		skipped := map[rules.Reason]int{}
		for k, v := range sg.Skipped {
			skipped[k] = v
		}
		if n := byReason[string(rules.ReasonUntrustedDomain)]; n > 0 {
			skipped[rules.ReasonUntrustedDomain] = n
		}
		leftOut := map[string]int{}
		for k, v := range sg.LeftOut {
			leftOut[string(k)] = v
		}
		printJSON(stdout, suggestOutput{ByReason: byReason, From: *from, LeftOut: leftOut, Namespace: *namespace, Requests: total(byReason),
			Rules: rs, Since: f.Since, Skipped: skipped, Used: sg.Used, YAML: string(yaml)})
		return exitOK
	}
	fmt.Fprint(stdout, suggestHeader(*from, *namespace, f, sg, byReason))
	stdout.Write(yaml)
	fmt.Fprintf(stderr, "egress-authz rules suggest: %d rules from %d requests; review them before they go anywhere near production\n",
		len(sg.Set.Rules), sg.Used)
	return exitOK
}

// total is how many records byReason counts.
func total(byReason map[string]int) int {
	n := 0
	for _, c := range byReason {
		n += c
	}
	return n
}

// suggestHeader is the comment above a proposal: where it comes from, and
// what it leaves out and why.
func suggestHeader(dsn, ns string, f audit.Filter, sg *compliance.Suggestion, byReason map[string]int) string {
	n := total(byReason)
	var b strings.Builder
	fmt.Fprintf(&b, "# Allow-list suggested by \"egress-authz rules suggest\" from the decision log %s:\n", dsn)
	window := "since " + f.Since.Format(time.RFC3339)
	if !f.Until.IsZero() {
		window += ", until " + f.Until.Format(time.RFC3339)
	}
	allowed := byReason[string(rules.ReasonAllowed)]
	fmt.Fprintf(&b, "# %d requests from namespace %s, %s (%d were allowed, %d denied).\n", n, ns, window, allowed, n-allowed)
	fmt.Fprintf(&b, "# These %d rules allow every one of them that a rule can allow without allowing more,\n", len(sg.Set.Rules))
	b.WriteString("# and nothing else: each method only on the paths it was seen on, \"*\" only for identifiers that varied.\n")
	var left []string
	for _, r := range rules.Reasons() { // Skipped holds only reasons no rule can allow
		if c := sg.Skipped[r]; c > 0 {
			left = append(left, fmt.Sprintf("%d %s", c, r))
		}
	}
	if len(left) > 0 {
		fmt.Fprintf(&b, "# Left out, since no rule can allow them: %s.\n", strings.Join(left, ", "))
	}
	for _, e := range compliance.Exclusions() {
		if c := sg.LeftOut[e]; c > 0 {
			fmt.Fprintf(&b, "# Left out: %d with %s (%s).\n", c, e.Describe(), e)
		}
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
	b.WriteString("# replace the TODO owner and ticket, add expires, then run \"egress-authz rules lint --strict\"\n")
	b.WriteString("# (which rejects the TODOs) and \"rules test\". The decision log records normalized paths:\n")
	b.WriteString("# a request written with dot-segments shows here as the path it reached.\n")
	return b.String()
}
