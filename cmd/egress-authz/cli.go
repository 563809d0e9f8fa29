package main

// What the rules commands share: the --format and --at flags, loading a
// rule set, and printing.

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"strconv"
	"time"

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

// tableAt reads --at and loads the rule set at path (rule files or a
// bundle, see compileSet) for command cmd. When the table is nil, the
// command stops with code (the problem is printed).
func tableAt(cmd, path, at, format string, keys *bundleKeys, stdout, stderr io.Writer) (time.Time, *rules.Table, int) {
	now, err := parseAt(at, time.Now().UTC())
	if err != nil {
		fmt.Fprintf(stderr, "egress-authz %s: --at %v\n", cmd, err)
		return now, nil, exitUsage
	}
	table, ok := loadTable(path, format, keys, stdout)
	if !ok {
		fmt.Fprintf(stderr, "egress-authz %s: the rule set %s is invalid (errors above)\n", cmd, path)
		return now, nil, exitFail
	}
	return now, table, exitOK
}

// loadTable loads and compiles the rule set at path. Why an invalid set is
// invalid is printed to w (see printInvalid).
func loadTable(path, format string, keys *bundleKeys, w io.Writer) (*rules.Table, bool) {
	t, err := compileSet(path, keys)
	if err != nil {
		printInvalid(w, format, err)
		return nil, false
	}
	return t, true
}

// compileSet loads and compiles the rule set at path, rule files or a
// bundle file (see isBundleFile), whose signature is checked with keys'
// --public-key files; an error is always an ErrorList.
func compileSet(path string, keys *bundleKeys) (*rules.Table, error) {
	var set *rules.Set
	var err error
	if isBundleFile(path) {
		set, err = keys.loadBundle(path)
	} else {
		set, err = rules.Load(path)
	}
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

// invalidOutput is the JSON of an invalid rule or case file: one entry
// per diagnostic.
type invalidOutput struct {
	Errors []invalidError `json:"errors"`
}

type invalidError struct {
	Pos     string `json:"pos,omitempty"` // file:line:col; empty when the problem has no place
	Message string `json:"message"`
}

// printInvalid prints why a rule or case file is invalid: one
// file:line:col diagnostic a line, or {"errors": [...]} in JSON.
func printInvalid(w io.Writer, format string, err error) {
	var list rules.ErrorList
	if !errors.As(err, &list) {
		list = rules.ErrorList{{Msg: err.Error()}}
	}
	if format == "json" {
		out := invalidOutput{Errors: []invalidError{}}
		for _, d := range list {
			out.Errors = append(out.Errors, invalidError{Pos: d.Pos.String(), Message: d.Msg})
		}
		printJSON(w, out)
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

// printJSON writes v as indented JSON, the form every --format json and
// --json output takes.
func printJSON(w io.Writer, v any) {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}
