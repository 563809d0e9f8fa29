package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/url"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/internal/admin"
	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/stores"
	"github.com/egress-authz/egress-authz/internal/evidence"
)

const exportUsage = `Usage:
  egress-authz audit export --since T [--until T] [filters of audit query] [--audit DSN] [--data-dir DIR] --out DIR|FILE.zip
  egress-authz audit export --check DIR|FILE.zip

Writes an evidence pack: the records the filters select (records.csv and
records.parquet), the query (query.json), the rule-set versions the records
name (rulesets.json), the verification of the log for the range
(verify.json), and manifest.json with the SHA-256 of each file. --check
re-verifies a pack offline: the files against the manifest, the record
counts, the records' hash chain where the pack holds it, and each rule
set against its version. Exit status 0
only if the pack is intact.

Flags:
`

// filterFlags defines the flags of the filters of admin.FilterParams on
// fs (--dry-run as a bool), but those named in skip, and returns what
// reads them, as query parameters, once fs is parsed.
func filterFlags(fs *flag.FlagSet, skip ...string) func() url.Values {
	params := map[string]*string{}
	for _, p := range admin.FilterParams {
		if p.Name == "dry_run" || slices.Contains(skip, p.Name) {
			continue
		}
		params[p.Name] = fs.String(strings.ReplaceAll(p.Name, "_", "-"), "", p.Help)
	}
	dryRun := fs.Bool("dry-run", false, "only dry-run rules' would-be outcomes")
	return func() url.Values {
		vals := url.Values{}
		fs.Visit(func(fl *flag.Flag) {
			name := strings.ReplaceAll(fl.Name, "-", "_")
			if p, ok := params[name]; ok {
				vals.Set(name, *p)
			}
		})
		if *dryRun {
			vals.Set("dry_run", "true")
		}
		return vals
	}
}

func auditExportCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit export", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dsn := fs.String("audit", defaultAuditDSN, "decision log `DSN`")
	out := fs.String("out", "", "write the pack to this new or empty `DIR`, or to FILE.zip")
	check := fs.String("check", "", "check the pack at `DIR|FILE.zip` instead")
	dataDir := walFlag(fs)
	filters := filterFlags(fs, "cursor")
	fs.Usage = func() {
		fmt.Fprint(stderr, exportUsage)
		fs.PrintDefaults()
	}
	if code, ok := parseArgs(fs, args); !ok {
		return code
	}
	if *check != "" {
		if *out != "" || len(filters()) > 0 {
			fmt.Fprintln(stderr, "egress-authz audit export: --check takes no --out and no filters")
			return exitUsage
		}
		return exportCheck(*check, stdout, stderr)
	}
	vals := filters()
	switch {
	case *out == "":
		fmt.Fprintln(stderr, "egress-authz audit export: --out DIR|FILE.zip is required (or --check)")
		return exitUsage
	case vals.Get("since") == "":
		fmt.Fprintln(stderr, "egress-authz audit export: --since is required: a pack states the window it covers")
		return exitUsage
	}
	now := time.Now()
	f, err := admin.ParseFilter(vals, now)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz audit export: --"+strings.ReplaceAll(err.Error(), "_", "-"))
		return exitUsage
	}
	st, err := stores.OpenExisting(ctx, *dsn)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz audit export:", err)
		return exitFail
	}
	defer st.Close()
	given := map[string]string{}
	for k := range vals {
		given[k] = vals.Get(k)
	}
	opts := evidence.Options{Store: st, Filter: f, Filters: given, Source: stores.Key(*dsn), Now: now}
	if wal := filepath.Join(*dataDir, "wal"); dirExists(wal) {
		opts.Logs = []string{wal}
	}
	if a, ok := st.(audit.RuleSetArchive); ok {
		opts.Archives = append(opts.Archives, a)
	}
	if dir := filepath.Join(*dataDir, "rulesets"); dirExists(dir) {
		opts.Archives = append(opts.Archives, audit.DirArchive(dir))
	}
	m, err := evidence.Write(ctx, *out, opts)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz audit export:", err)
		return exitFail
	}
	fmt.Fprintf(stdout, "wrote %s: %s, %d files\n", *out, plural(m.Records, "record"), len(m.Files)+1)
	if len(m.Missing) > 0 {
		for _, ms := range m.Missing {
			fmt.Fprintf(stderr, "egress-authz audit export: rule set %s is not in the pack: %s\n", ms.Version, ms.Why)
		}
	}
	for _, file := range m.Files {
		fmt.Fprintf(stdout, "  %-16s %10d bytes  sha256 %s\n", file.Name, file.Bytes, file.SHA256)
	}
	return exitOK
}

func exportCheck(path string, stdout, stderr io.Writer) int {
	c, err := evidence.Check(path)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz audit export --check:", err)
		return exitFail
	}
	if !c.OK() {
		fmt.Fprintf(stdout, "ALTERED: %s: %s\n", path, plural(len(c.Problems), "problem"))
		for _, p := range c.Problems {
			fmt.Fprintln(stdout, "  "+p.String())
		}
		return exitFail
	}
	fmt.Fprintf(stdout, "OK: %s: %d files as the manifest says; %s, each giving its hash; %s checked; %s, each hashing to its version\n",
		path, len(c.Manifest.Files)+1, plural(c.Records, "record"), plural(c.Links, "link"), plural(c.RuleSets, "rule set"))
	if c.Verify.OK {
		fmt.Fprintf(stdout, "The log's chains were intact when the pack was made (%s).\n", plural(c.Verify.Records, "record"))
	} else {
		fmt.Fprintf(stdout, "The log's chains were BROKEN when the pack was made: %s (verify.json).\n", plural(c.Verify.Count, "break"))
	}
	return exitOK
}
