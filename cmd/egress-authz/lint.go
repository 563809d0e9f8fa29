package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"time"

	"github.com/egress-authz/egress-authz/internal/when"
	"github.com/egress-authz/egress-authz/rules"
)

func lintCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules lint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	warnExpiry := fs.String("warn-expiry", "14d", "warn about rules expiring within this `DURATION` (e.g. 14d, 72h)")
	strict := fs.Bool("strict", false, "exit non-zero on warnings too")
	require := fs.String("require", "", "`FIELDS` every rule must set, comma-separated: owner, ticket, expires (allow rules), description")
	maxExpiry := fs.String("max-expiry", "", "allow rules must expire within this `DURATION` from today (e.g. 180d)")
	policyPath := fs.String("policy", "", "lint policy `FILE` (kind: LintPolicy, with require, maxExpiry, warnExpiry); flags win over it")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: egress-authz rules lint [flags] PATH...\n\nValidates rule files or directories. Errors and warnings name file:line:col;\nthe format reference is "+rules.DocFile+".\nExit status: 0 valid, 1 invalid or against the lint policy (or warnings with --strict).\n\nFlags:")
		fs.PrintDefaults()
	}
	if code, ok := parseArgs(fs, args); !ok {
		return code
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	policy := &rules.Policy{}
	if *policyPath != "" {
		src, err := rules.Reader{}.ReadFile(ctx, *policyPath)
		if err != nil {
			fmt.Fprintln(stderr, "egress-authz rules lint: --policy:", err)
			return exitFail
		}
		if policy, err = rules.ParsePolicy(src); err != nil {
			printDiagnostics(stdout, err)
			fmt.Fprintf(stderr, "egress-authz rules lint: the lint policy %s is invalid (errors above)\n", *policyPath)
			return exitFail
		}
	}
	if set["require"] {
		fields, err := rules.ParseFields(*require)
		if err != nil {
			fmt.Fprintln(stderr, "egress-authz rules lint: --require:", err)
			return exitUsage
		}
		policy.Require, policy.RequireFrom = fields, "--require"
	}
	if set["max-expiry"] {
		d, err := when.ParseDuration(*maxExpiry)
		if err != nil || d <= 0 {
			fmt.Fprintln(stderr, "egress-authz rules lint: --max-expiry: want a duration like 180d")
			return exitUsage
		}
		policy.MaxExpiry, policy.MaxExpiryFrom = d, "--max-expiry"
	}
	window, err := when.ParseDuration(*warnExpiry)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz rules lint: --warn-expiry:", err)
		return exitUsage
	}
	if !set["warn-expiry"] && policy.WarnExpiry > 0 {
		window = policy.WarnExpiry
	}
	code := exitOK
	now := time.Now().UTC()
	for _, path := range fs.Args() {
		type loaded struct {
			set     *rules.Set
			skipped []rules.Diagnostic
			err     error
		}
		res, err := interruptible(ctx, func() loaded {
			var l loaded
			rd := rules.Reader{Warn: func(d rules.Diagnostic) { l.skipped = append(l.skipped, d) }}
			l.set, l.err = rd.Load(ctx, path)
			return l
		})
		if err != nil || ctx.Err() != nil {
			fmt.Fprintf(stderr, "egress-authz rules lint: %s: interrupted\n", path)
			return exitFail
		}
		// Files the set was read without (a named pipe, a device) come
		// first: they explain a rule that seems to be missing.
		for _, w := range res.skipped {
			fmt.Fprintf(stdout, "%s: warning: %s\n", w.Pos, w.Msg)
		}
		if *strict && len(res.skipped) > 0 {
			code = exitFail
		}
		if res.err != nil {
			var list rules.ErrorList
			if errors.As(res.err, &list) {
				printDiagnostics(stdout, list)
			} else {
				fmt.Fprintf(stdout, "%s: %v\n", path, res.err)
			}
			code = exitFail
			continue
		}
		warnings := rules.Lint(res.set, now, window)
		errs, placeholders := policy.Check(res.set, now)
		warnings = append(warnings, placeholders...)
		procErrs, procWarnings := rules.LintProcessors(res.set)
		errs, warnings = append(errs, procErrs...), append(warnings, procWarnings...)
		printFindings(stdout, errs, warnings)
		if len(errs) > 0 || len(warnings) > 0 && *strict {
			code = exitFail
		}
		n := len(warnings) + len(res.skipped)
		summary := fmt.Sprintf("%s: %s, %s", path, plural(len(res.set.Rules), "rule"), plural(n, "warning"))
		if len(errs) > 0 {
			summary += ", " + plural(len(errs), "lint error")
		}
		fmt.Fprintf(stderr, "%s, version %s\n", summary, res.set.Version)
	}
	return code
}

// diagnosticLine is how lint prints an error: file:line:col first, then
// the message, then where the format reference explains it.
func diagnosticLine(d rules.Diagnostic) string {
	line := d.Error()
	if d.Pos == (rules.Pos{}) {
		line = d.Msg
	}
	if see := d.See(); see != "" {
		line += "; " + see
	}
	return line
}

// printDiagnostics prints the errors of err (an ErrorList, or one error),
// one a line.
func printDiagnostics(w io.Writer, err error) {
	var list rules.ErrorList
	if !errors.As(err, &list) {
		list = rules.ErrorList{{Msg: err.Error()}}
	}
	for _, d := range list {
		fmt.Fprintln(w, diagnosticLine(d))
	}
}

// printFindings prints the lint policy's errors and the warnings about a
// valid set, in file order.
func printFindings(w io.Writer, errs, warnings []rules.Diagnostic) {
	type finding struct {
		d    rules.Diagnostic
		warn bool
	}
	var all []finding
	for _, d := range errs {
		all = append(all, finding{d, false})
	}
	for _, d := range warnings {
		all = append(all, finding{d, true})
	}
	sort.SliceStable(all, func(i, j int) bool {
		a, b := all[i].d.Pos, all[j].d.Pos
		if a.File != b.File {
			return a.File < b.File
		}
		if a.Line != b.Line {
			return a.Line < b.Line
		}
		return a.Col < b.Col
	})
	for _, f := range all {
		if f.warn {
			fmt.Fprintf(w, "%s: warning: %s\n", f.d.Pos, f.d.Msg)
		} else {
			fmt.Fprintln(w, diagnosticLine(f.d))
		}
	}
}

// interruptible returns f's result, or ctx's error as soon as ctx is done.
// Parsing a large rule file cannot stop halfway, and a signal must stop a
// command at once: main then exits, and f's goroutine with it. f must
// honour ctx itself where it can (reading does), and must not write to
// what the caller writes to.
func interruptible[T any](ctx context.Context, f func() T) (T, error) {
	done := make(chan T, 1)
	go func() { done <- f() }()
	select {
	case v := <-done:
		return v, nil
	case <-ctx.Done():
		var zero T
		return zero, ctx.Err()
	}
}
