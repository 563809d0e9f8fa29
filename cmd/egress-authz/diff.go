package main

// rules diff: what a change to a rule set changes, in rules, in access,
// and (--against) in the decisions of recorded traffic.

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/stores"
	"github.com/egress-authz/egress-authz/internal/compliance"
	"github.com/egress-authz/egress-authz/internal/when"
	"github.com/egress-authz/egress-authz/rules"
)

// diffOutput is the JSON of "rules diff --format json". The fields of
// each object are in the order of their names, the order they had when
// this was a map.
type diffOutput struct {
	Access       diffAccess       `json:"access"`
	New          diffSide         `json:"new"`
	Old          diffSide         `json:"old"`
	Replay       *replayOutput    `json:"replay,omitempty"` // with --against
	Rules        diffRules        `json:"rules"`
	TrustDomains diffTrustDomains `json:"trust_domains"`
}

// diffSide is one of the two rule sets compared.
type diffSide struct {
	Path    string `json:"path"`
	Rules   int    `json:"rules"` // how many
	RuleSet string `json:"ruleset"`
}

type diffAccess struct {
	Gained []compliance.Access `json:"gained"`
	Lost   []compliance.Access `json:"lost"`
}

type diffRules struct {
	Added     []diffRule `json:"added"`
	Changed   []diffRule `json:"changed"`
	Removed   []diffRule `json:"removed"`
	Unchanged int        `json:"unchanged"`
}

// diffRule is a rule added, removed or changed.
type diffRule struct {
	ID      string   `json:"id"`
	Pos     string   `json:"pos"`
	Does    string   `json:"does"`
	Changes []string `json:"changes,omitempty"` // a changed rule's changes, one field an entry
}

type diffTrustDomains struct {
	Added   []string `json:"added"`
	Removed []string `json:"removed"`
}

// replayOutput is what --against found: the recorded requests decided
// again with the new rules (see compliance.Report).
type replayOutput struct {
	Against          string             `json:"against"`
	Changed          []compliance.Group `json:"changed"`
	ChangedCount     int                `json:"changed_count"`
	Records          int                `json:"records"`
	RuleChanged      []compliance.Group `json:"rule_changed"`
	RuleChangedCount int                `json:"rule_changed_count"`
	Since            time.Time          `json:"since,omitzero"`
	Skipped          int                `json:"skipped"`
	Unchanged        int                `json:"unchanged"`
	Until            time.Time          `json:"until,omitzero"`
}

func diffCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules diff", flag.ContinueOnError)
	fs.SetOutput(stderr)
	against := fs.String("against", "", "decision log `DSN` (parquet:DIR, sqlite:PATH, postgres://..., s3://BUCKET/PREFIX) whose recorded requests are decided again with NEW")
	since := fs.String("since", "7d", "with --against: replay records from this `TIME` on (a duration back from now, like 7d, or RFC 3339)")
	until := fs.String("until", "", "with --against: replay records before this `TIME`")
	at := fs.String("at", "", "judge rule expiry as of this `TIME` (YYYY-MM-DD or RFC 3339; default now)")
	limit := fs.Int("limit", 20, "text output: show at most `N` groups of changed requests (json shows all)")
	format := formatFlag(fs)
	keys := addBundleKeys(fs, "rules diff", stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egress-authz rules diff OLD NEW [--against DSN [--since 7d]] [--format text|json]

Compares two rule sets (files, directories or bundle files, such as the
bundle served and the one about to be): the rules added, removed and
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
	oldT, err1 := compileSet(fs.Arg(0), keys)
	newT, err2 := compileSet(fs.Arg(1), keys)
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
	d := compliance.Diff(oldT.Set(), newT.Set(), now)
	var rep *compliance.Report
	if *against != "" {
		st, err := stores.OpenExisting(ctx, *against)
		if err != nil {
			fmt.Fprintln(stderr, "egress-authz rules diff: --against:", err)
			return exitFail
		}
		rep, err = compliance.Replay(ctx, st, filter, oldT, newT, now)
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

func diffJSON(oldPath, newPath string, oldT, newT *rules.Table, d *compliance.SetDiff, dsn string, f audit.Filter, rep *compliance.Report) diffOutput {
	rulesOf := func(rs []*rules.Rule) []diffRule {
		out := []diffRule{}
		for _, r := range rs {
			out = append(out, diffRule{ID: r.ID, Pos: r.Pos.String(), Does: compliance.Describe(r)})
		}
		return out
	}
	changed := []diffRule{}
	for _, c := range d.Changed {
		changed = append(changed, diffRule{ID: c.New.ID, Pos: c.New.Pos.String(), Does: compliance.Describe(c.New), Changes: c.Changes})
	}
	out := diffOutput{
		Access:       diffAccess{Gained: orEmpty(d.Gained), Lost: orEmpty(d.Lost)},
		New:          diffSide{Path: newPath, Rules: len(newT.Set().Rules), RuleSet: newT.Version()},
		Old:          diffSide{Path: oldPath, Rules: len(oldT.Set().Rules), RuleSet: oldT.Version()},
		Rules:        diffRules{Added: rulesOf(d.Added), Changed: changed, Removed: rulesOf(d.Removed), Unchanged: d.Unchanged},
		TrustDomains: diffTrustDomains{Added: orEmpty(d.TrustDomainsAdded), Removed: orEmpty(d.TrustDomainsRemoved)},
	}
	if rep != nil {
		out.Replay = &replayOutput{Against: dsn, Changed: orEmpty(rep.Changed), ChangedCount: rep.ChangedCount,
			Records: rep.Records, RuleChanged: orEmpty(rep.RuleChanged), RuleChangedCount: rep.RuleChangedCount,
			Since: f.Since, Skipped: rep.Skipped, Unchanged: rep.Unchanged, Until: f.Until}
	}
	return out
}

// orEmpty returns s, or an empty slice for nil: JSON readers get [], not
// null.
func orEmpty[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func printDiff(w io.Writer, oldPath, newPath string, d *compliance.SetDiff) {
	fmt.Fprintf(w, "Rules, %s -> %s: %d added, %d removed, %d changed, %d unchanged\n",
		oldPath, newPath, len(d.Added), len(d.Removed), len(d.Changed), d.Unchanged)
	for _, r := range d.Added {
		fmt.Fprintf(w, "  + added    %s  (%s)\n             %s\n", r.ID, r.Pos, compliance.Describe(r))
	}
	for _, r := range d.Removed {
		fmt.Fprintf(w, "  - removed  %s  (%s)\n             %s\n", r.ID, r.Pos, compliance.Describe(r))
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
	printAccess := func(title, sign string, l []compliance.Access) {
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

func printReplay(w io.Writer, dsn string, f audit.Filter, rep *compliance.Report, limit int) {
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
	for _, l := range [][]compliance.Group{rep.Changed, rep.RuleChanged} {
		for _, g := range l {
			if g.Cause == compliance.CauseBefore {
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

func printGroups(w io.Writer, groups []compliance.Group, limit int) {
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
		if g.Cause == compliance.CauseBefore {
			mark = " [before]"
		}
		fmt.Fprintf(tw, "    %d×\t%s\t%s\twas %s, now %s%s\n", g.Count, g.Principal, target, g.Was, g.Now, mark)
	}
	tw.Flush()
}
