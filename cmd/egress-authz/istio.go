package main

// rules import istio and rules export istio: AuthorizationPolicy in and
// out (see internal/istiopolicy).

import (
	"context"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/internal/istiopolicy"
	"github.com/egress-authz/egress-authz/rules"
)

func importCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules import istio", flag.ContinueOnError)
	fs.SetOutput(stderr)
	trustDomain := fs.String("trust-domain", "cluster.local", "the `TRUST-DOMAIN` of sources named by namespace or service account only")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egress-authz rules import istio [--trust-domain cluster.local] FILE... > rules.yaml

Turns Istio AuthorizationPolicies (security.istio.io/v1, as applied or as
"kubectl get -o yaml" prints them) into one rule set on stdout, and reports
on stderr every part of every policy: mapped, dropped (with why, and what
that changes) or rejected. It never widens access: an ALLOW rule that
cannot be said exactly is narrowed or left out, a DENY rule is widened.
Import the policies of the egress gateway: egress-authz decides for it.

Flags:
`)
		fs.PrintDefaults()
	}
	if len(args) == 0 || args[0] != "istio" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fs.Usage()
			return exitOK
		}
		fmt.Fprintln(stderr, "egress-authz rules import: the one source is istio: rules import istio FILE...")
		return exitUsage
	}
	if code, ok := parseArgs(fs, args[1:]); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	var docs []istiopolicy.Document
	var findings []istiopolicy.Finding
	for _, path := range fs.Args() {
		src, err := rules.Reader{}.ReadFile(ctx, path)
		if err != nil {
			fmt.Fprintln(stderr, "egress-authz rules import istio:", err)
			return exitFail
		}
		d, f, err := istiopolicy.Decode(src)
		findings = append(findings, f...)
		if err != nil {
			fmt.Fprintln(stderr, "egress-authz rules import istio:", err)
			return exitFail
		}
		docs = append(docs, d...)
	}
	set, more := istiopolicy.Import(docs, istiopolicy.ImportOptions{TrustDomain: *trustDomain})
	findings = append(findings, more...)
	out := rules.Marshal(set)
	// The rule set must be valid; say so loudly if it is not.
	if _, err := rules.Parse(rules.Source{Name: "imported.yaml", Data: out}); err != nil {
		fmt.Fprintf(stderr, "egress-authz rules import istio: internal error, the rule set is invalid: %v\n", err)
		return exitFail
	}
	sort.SliceStable(findings, func(i, j int) bool {
		a, b := findings[i].Pos, findings[j].Pos
		if a.File != b.File {
			return a.File < b.File
		}
		return a.Line < b.Line || a.Line == b.Line && a.Col < b.Col
	})
	counts := map[istiopolicy.Outcome]int{}
	for _, f := range findings {
		fmt.Fprintln(stderr, f)
		counts[f.Outcome]++
	}
	fmt.Fprintf(stdout, "# Imported by \"egress-authz rules import istio\" from %s:\n", strings.Join(fs.Args(), ", "))
	fmt.Fprintf(stdout, "# %d AuthorizationPolicies, %d rules. The report on stderr says what was dropped and why:\n", len(docs), len(set.Rules))
	fmt.Fprintf(stdout, "# %d mapped, %d dropped, %d rejected. Review it, add owner, ticket and expires.\n",
		counts[istiopolicy.Mapped], counts[istiopolicy.Dropped], counts[istiopolicy.Rejected])
	stdout.Write(out)
	if len(docs) == 0 {
		fmt.Fprintln(stderr, "egress-authz rules import istio: no AuthorizationPolicy in", strings.Join(fs.Args(), ", "))
		return exitFail
	}
	return exitOK
}

func exportCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules export istio", flag.ContinueOnError)
	fs.SetOutput(stderr)
	name := fs.String("name", "egress-authz-allow", "the AuthorizationPolicy's `NAME`")
	namespace := fs.String("namespace", "istio-system", "the egress gateway's `NAMESPACE`")
	selector := fs.String("selector", "istio=egressgateway", "the egress gateway's `LABELS` (key=value,...)")
	at := fs.String("at", "", "leave out rules expired at this `TIME` (YYYY-MM-DD or RFC 3339; default now)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egress-authz rules export istio [--namespace istio-system] [--selector istio=egressgateway] PATH > policy.yaml

Writes a native ALLOW AuthorizationPolicy for the egress gateway from the
rule set at PATH: each enforce-mode allow rule's callers may reach its
hosts (HTTP authority, and TLS server name where passthrough can match).
Applied beside the CUSTOM policy that asks egress-authz, it is a second
layer that holds if the ext_authz call fails open. It allows a superset of
the rules: methods, paths, ports and deny rules stay with egress-authz; the
report on stderr says what was widened or left out.

Flags:
`)
		fs.PrintDefaults()
	}
	if len(args) == 0 || args[0] != "istio" {
		if len(args) > 0 && (args[0] == "-h" || args[0] == "--help") {
			fs.Usage()
			return exitOK
		}
		fmt.Fprintln(stderr, "egress-authz rules export: the one target is istio: rules export istio PATH")
		return exitUsage
	}
	keys := addBundleKeys(fs, "rules export istio", stderr)
	if code, ok := parseArgs(fs, args[1:]); !ok {
		return code
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitUsage
	}
	labels := map[string]string{}
	for _, kv := range strings.Split(*selector, ",") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			fmt.Fprintf(stderr, "egress-authz rules export istio: --selector %q: want key=value,...\n", *selector)
			return exitUsage
		}
		labels[k] = v
	}
	now, err := parseAt(*at, time.Now().UTC())
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz rules export istio: --at", err)
		return exitUsage
	}
	t, ok := loadTable(fs.Arg(0), "text", keys, stdout)
	if !ok {
		fmt.Fprintf(stderr, "egress-authz rules export istio: the rule set %s is invalid (errors above)\n", fs.Arg(0))
		return exitFail
	}
	out, findings := istiopolicy.Export(t.Set(), istiopolicy.ExportOptions{Name: *name, Namespace: *namespace, Selector: labels, Now: now})
	for _, f := range findings {
		fmt.Fprintln(stderr, f)
	}
	stdout.Write(out)
	return exitOK
}
