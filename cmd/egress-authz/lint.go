package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/egress-authz/egress-authz/internal/when"
	"github.com/egress-authz/egress-authz/rules"
)

func lintCmd(args []string, stdout, stderr io.Writer) int {
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
		set, err := rules.Load(path)
		if err != nil {
			var list rules.ErrorList
			if errors.As(err, &list) {
				for _, d := range list {
					fmt.Fprintln(stdout, d.Error())
				}
			} else {
				fmt.Fprintf(stdout, "%s: %v\n", path, err)
			}
			code = exitFail
			continue
		}
		warnings := rules.Lint(set, now, window)
		for _, w := range warnings {
			fmt.Fprintf(stdout, "%s: warning: %s\n", w.Pos, w.Msg)
		}
		if len(warnings) > 0 && *strict {
			code = exitFail
		}
		fmt.Fprintf(stderr, "%s: %s, %s, version %s\n", path, plural(len(set.Rules), "rule"), plural(len(warnings), "warning"), set.Version)
	}
	return code
}
