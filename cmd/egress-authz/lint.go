package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/egress-authz/egress-authz/internal/when"
	"github.com/egress-authz/egress-authz/rules"
)

func lintCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules lint", flag.ContinueOnError)
	fs.SetOutput(stderr)
	warnExpiry := fs.String("warn-expiry", "14d", "warn about rules expiring within this `DURATION` (e.g. 14d, 72h)")
	strict := fs.Bool("strict", false, "exit non-zero on warnings too")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: egress-authz rules lint [flags] PATH...\n\nValidates rule files or directories. Errors and warnings name file:line:col.\nExit status: 0 valid, 1 invalid (or warnings with --strict).\n\nFlags:")
		fs.PrintDefaults()
	}
	if code, ok := parseArgs(fs, args); !ok {
		return code
	}
	window, err := when.ParseDuration(*warnExpiry)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz rules lint: --warn-expiry:", err)
		return exitUsage
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return exitUsage
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
				for _, d := range list {
					fmt.Fprintln(stdout, d.Error())
				}
			} else {
				fmt.Fprintf(stdout, "%s: %v\n", path, res.err)
			}
			code = exitFail
			continue
		}
		warnings := rules.Lint(res.set, now, window)
		for _, w := range warnings {
			fmt.Fprintf(stdout, "%s: warning: %s\n", w.Pos, w.Msg)
		}
		if len(warnings) > 0 && *strict {
			code = exitFail
		}
		n := len(warnings) + len(res.skipped)
		fmt.Fprintf(stderr, "%s: %s, %s, version %s\n", path, plural(len(res.set.Rules), "rule"), plural(n, "warning"), res.set.Version)
	}
	return code
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
