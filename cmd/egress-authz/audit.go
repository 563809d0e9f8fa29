package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/authz"
	"github.com/egress-authz/egress-authz/internal/admin"
	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/stores"
	"github.com/egress-authz/egress-authz/internal/compliance"
	"github.com/egress-authz/egress-authz/internal/when"
	"github.com/egress-authz/egress-authz/rules"
)

const defaultAuditDSN = "parquet:./data/decisions"

// openAudit opens the decision-log sinks named by --audit and the writer
// that feeds them. With --audit none it returns a nil Recorder.
func (s *server) openAudit() (authz.Recorder, error) {
	if len(s.cfg.Audit) == 1 && s.cfg.Audit[0] == "none" {
		s.log.Warn("decision log disabled (--audit none): decisions are not recorded")
		return nil, nil
	}
	ctx := context.Background()
	opts := stores.Options{DataDir: s.cfg.DataDir, Cluster: s.cfg.Cluster, WAL: filepath.Join(s.cfg.DataDir, "wal"), Retention: time.Duration(s.cfg.AuditRetention), SegmentAge: s.cfg.AuditSegmentAge, Logger: s.log, Stdout: os.Stdout}
	var sinks []audit.Sink
	var query audit.Store
	closeAll := func() {
		for _, sk := range sinks {
			sk.Close()
		}
		if query != nil {
			query.Close()
		}
	}
	for _, dsn := range s.cfg.Audit {
		sink, err := stores.OpenSink(ctx, dsn, opts)
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("--audit: %w", err)
		}
		sinks = append(sinks, sink)
		if stores.Queryable(dsn) && query == nil {
			// The admin queries (/v1/decisions, /v1/verify, /ui/) get a
			// connection pool of their own: a long export or a verify of
			// the whole log must not take the connections the sink writes
			// through, or the write-ahead log backs up until Checks are
			// denied as audit-unavailable.
			if query, err = stores.Open(ctx, dsn, opts); err != nil {
				closeAll()
				return nil, fmt.Errorf("--audit: open for queries: %w", err)
			}
			s.storeSink = sink.Name()
		}
	}
	overflow := audit.OverflowDeny
	if s.cfg.AuditOverflow == "block" {
		overflow = audit.OverflowBlock
	}
	w, err := audit.Open(audit.Options{
		Dir:      filepath.Join(s.cfg.DataDir, "wal"),
		Buffer:   s.cfg.AuditBuffer,
		Overflow: overflow,
		Logger:   s.log,
	}, sinks...)
	if err != nil {
		closeAll()
		return nil, err
	}
	s.auditWriter = w
	if err := s.openArchive(ctx, sinks); err != nil {
		w.Close(ctx)
		if query != nil {
			query.Close()
		}
		return nil, err
	}
	s.closers = append(s.closers, w.Close)
	if query != nil {
		s.store = query
		s.closers = append(s.closers, func(context.Context) error { return query.Close() })
	}
	return w, nil
}

// openArchive keeps the rule set served, and every later one before it
// serves, in DATA/rulesets and in each sink that keeps an archive (a
// store down is retried in the background; the local copy comes first).
func (s *server) openArchive(ctx context.Context, sinks []audit.Sink) error {
	var stores []audit.RuleSetArchive
	for _, sk := range sinks {
		if a, ok := sk.(audit.RuleSetArchive); ok {
			stores = append(stores, a)
		}
	}
	a := audit.NewArchiver(filepath.Join(s.cfg.DataDir, "rulesets"), stores, s.log)
	if err := a.Resume(ctx); err != nil {
		return fmt.Errorf("rule-set archive: %w", err)
	}
	if err := a.Keep(ctx, compliance.ArchiveOf(s.live.Table().Set())); err != nil {
		return fmt.Errorf("rule-set archive: %w", err)
	}
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(runCtx, 10*time.Second); close(done) }()
	// Stopped before the sinks close: a version a store has not taken yet
	// is taken at the next start (Resume).
	s.closers = append(s.closers, func(ctx context.Context) error {
		stop()
		<-done
		dctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		if missing := a.Drain(dctx); len(missing) > 0 {
			// The local copies stay in DATA/rulesets: the next start on
			// this data directory puts them (Resume); on a data directory
			// that does not survive the pod, they are lost to the store.
			s.log.Error("rule-set archive: versions not in every store at shutdown", "versions", missing,
				"kept_in", filepath.Join(s.cfg.DataDir, "rulesets"))
		}
		return nil
	})
	s.archive = a
	s.metrics.WatchArchive(a.Pending)
	return nil
}

// keepRuleSet is the Reloader's BeforeSwap: a rule set serves only once
// it is archived.
func (s *server) keepRuleSet(ctx context.Context, t *rules.Table) error {
	if s.archive == nil {
		return nil
	}
	return s.archive.Keep(ctx, compliance.ArchiveOf(t.Set()))
}

// storedHeads says how far this server's writer has stored its chain in
// the queried store, for /v1/verify to notice a deleted tail.
func (s *server) storedHeads() map[string]uint64 {
	if s.auditWriter == nil {
		return nil
	}
	n, ok := s.auditWriter.Stored(s.storeSink)
	if !ok {
		return nil
	}
	return map[string]uint64{s.auditWriter.ID(): n}
}

// ruleIDs is the served rule set's version and rule ids, for /v1/stats.
func (s *server) ruleIDs() (string, []string) {
	t := s.live.Table()
	ids := make([]string, 0, len(t.Set().Rules))
	for _, r := range t.Set().Rules {
		ids = append(ids, r.ID)
	}
	return t.Version(), ids
}

func (s *server) adminExtras() map[string]http.Handler {
	extras := map[string]http.Handler{"GET /v1/explain": admin.ExplainHandler(s.live.Table, time.Now)}
	if s.store != nil {
		extras["GET /v1/decisions"] = admin.DecisionsHandler(s.store, time.Now)
		extras["GET /v1/verify"] = admin.VerifyHandler(s.store, s.storedHeads, time.Now)
		extras["GET /v1/stats"] = admin.StatsHandler(s.store, s.ruleIDs, time.Now)
		extras["GET /ui/"] = admin.UIHandler()
	}
	if s.archive != nil {
		extras["GET /v1/rulesets/{version}"] = admin.RuleSetHandler(s.archive)
		if s.store != nil {
			extras["GET /v1/processing"] = admin.ProcessingHandler(s.store, func() *rules.Set { return s.live.Table().Set() }, s.archive, time.Now)
		}
	}
	return extras
}

const auditUsage = `Usage:
  egress-authz audit query [--audit DSN] [--since 24h] [--until T] [--request-id ID] [--cluster NAME]
                           [--principal ID] [--namespace NS] [--host HOST|*.DOMAIN[:PORT]] [--port N]
                           [--method M] [--decision allow|deny] [--reason R] [--rule ID] [--processor P]
                           [--enforced true|false] [--dry-run] [--limit N] [--cursor C]
                           [--format table|json|ndjson|csv]
  egress-authz audit verify [--audit DSN] [--format text|json]
  egress-authz audit export --since T [filters of query] [--audit DSN] --out DIR|FILE.zip
  egress-authz audit export --check DIR|FILE.zip

DSN: parquet:DIR (default ` + defaultAuditDSN + `), sqlite:PATH, postgres://... or s3://BUCKET/PREFIX
`

func auditCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, auditUsage)
		return exitUsage
	}
	switch args[0] {
	case "query":
		return auditQueryCmd(ctx, args[1:], stdout, stderr)
	case "verify":
		return auditVerifyCmd(ctx, args[1:], stdout, stderr)
	case "export":
		return auditExportCmd(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, auditUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "egress-authz audit: unknown command %q\n\n%s", args[0], auditUsage)
	return exitUsage
}

func auditQueryCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit query", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dsn := fs.String("audit", defaultAuditDSN, "decision log `DSN`")
	filters := filterFlags(fs)
	format := fs.String("format", "table", "output `FORMAT`: "+strings.Join(admin.Formats, ", "))
	withRule := fs.Bool("with-rule", false, "add to each record (--format ndjson) the deciding rule as the rule-set version that decided wrote it, from the log's rule-set archive: \"rule_as_decided\"")
	if code, ok := parseArgs(fs, args); !ok {
		return code
	}
	f, err := admin.ParseFilter(filters(), time.Now())
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz audit query: --"+strings.ReplaceAll(err.Error(), "_", "-"))
		return exitUsage
	}
	if *withRule && *format != "ndjson" {
		fmt.Fprintln(stderr, "egress-authz audit query: --with-rule: give --format ndjson too (each line a record with its rule)")
		return exitUsage
	}
	enc, err := admin.NewEncoder(*format, stdout)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz audit query: --"+err.Error())
		return exitUsage
	}
	st, err := stores.OpenExisting(ctx, *dsn)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz audit query:", err)
		return exitFail
	}
	defer st.Close()
	encode := enc.Encode
	if *withRule {
		encode = ruleAsDecided(ctx, st, stdout)
	}
	next, err := st.Query(ctx, f, encode)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz audit query:", err)
		return exitFail
	}
	if err := enc.Close(next); err != nil {
		fmt.Fprintln(stderr, "egress-authz audit query:", err)
		return exitFail
	}
	if next != "" {
		// One convention for every format: the cursor of the next page is
		// on stderr, and stdout holds only records.
		fmt.Fprintln(stderr, "more: --cursor", next)
	}
	return exitOK
}

// walFlag declares --data-dir for the commands that verify: the server's
// write-ahead log vouches for the records no store holds yet.
func walFlag(fs *flag.FlagSet) *string {
	return fs.String("data-dir", "./data", "the server's data `DIR`: its write-ahead log (DIR/wal), when there, vouches for the newest records of its chain")
}

func auditVerifyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("audit verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	dsn := fs.String("audit", defaultAuditDSN, "decision log `DSN`")
	format := fs.String("format", "text", "output `FORMAT`: text or json")
	since := fs.String("since", "", "report the breaks of records from this `TIME` on (15m, 24h, 7d, a day or RFC 3339)")
	until := fs.String("until", "", "report the breaks of records before this `TIME`")
	dataDir := walFlag(fs)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: egress-authz audit verify [--audit DSN] [--since T] [--until T] [--data-dir DIR]\n\nChecks every writer's hash chain and lists every break. Exit status 0 only if every chain is intact.\n\nFlags:")
		fs.PrintDefaults()
	}
	if code, ok := parseArgs(fs, args); !ok {
		return code
	}
	if *format != "text" && *format != "json" {
		fmt.Fprintf(stderr, "egress-authz audit verify: --format %q: want text or json\n", *format)
		return exitUsage
	}
	var opts audit.VerifyOptions
	var err error
	now := time.Now()
	if opts.Since, err = when.ParseSince(*since, now); err != nil {
		fmt.Fprintln(stderr, "egress-authz audit verify: --since", err)
		return exitUsage
	}
	if opts.Until, err = when.ParseSince(*until, now); err != nil {
		fmt.Fprintln(stderr, "egress-authz audit verify: --until", err)
		return exitUsage
	}
	if wal := filepath.Join(*dataDir, "wal"); dirExists(wal) {
		opts.Logs = []string{wal}
	}
	st, err := stores.OpenExisting(ctx, *dsn)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz audit verify:", err)
		return exitFail
	}
	defer st.Close()
	v, err := audit.Verify(ctx, st, opts)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz audit verify:", err)
		return exitFail
	}
	if *format == "json" {
		printJSON(stdout, admin.NewVerifyReport(v, opts))
	} else {
		printVerification(stdout, v)
	}
	if !v.OK() {
		return exitFail
	}
	return exitOK
}

// printVerification writes a verification for people: OK or BROKEN, every
// break, and what could not be checked.
func printVerification(w io.Writer, v *audit.Verification) {
	if v.OK() {
		fmt.Fprintf(w, "OK: %s in %s intact\n", plural(v.Records, "record"), plural(len(v.Writers), "chain"))
	} else {
		broken := map[string]bool{}
		for _, b := range v.Breaks {
			broken[b.Writer] = true
		}
		fmt.Fprintf(w, "BROKEN: %s read, %s in %d of %s\n", plural(v.Records, "record"), plural(len(v.Breaks), "break"),
			len(broken), plural(len(v.Writers), "chain"))
		for _, b := range v.Breaks {
			fmt.Fprintln(w, "  "+b.String())
		}
	}
	if len(v.Unchecked) > 0 {
		fmt.Fprintln(w, "Not checked:")
		for _, u := range v.Unchecked {
			fmt.Fprintln(w, "  "+u)
		}
	}
}

func dirExists(path string) bool {
	st, err := os.Stat(path)
	return err == nil && st.IsDir()
}

// decidedRule is a record's deciding rule as the rule-set version that
// decided wrote it.
type decidedRule struct {
	Archived       bool      `json:"archived"` // false: the archive does not keep the version (Error says why)
	Error          string    `json:"error,omitempty"`
	ID             string    `json:"id,omitempty"`
	Pos            string    `json:"pos,omitempty"`
	Action         string    `json:"action,omitempty"`
	Mode           string    `json:"mode,omitempty"`
	Owner          string    `json:"owner,omitempty"`
	Ticket         string    `json:"ticket,omitempty"`
	Expires        time.Time `json:"expires,omitzero"`
	Hosts          []string  `json:"hosts,omitempty"`
	Processor      string    `json:"processor,omitempty"`
	Purposes       []string  `json:"purposes,omitempty"`
	DataCategories []string  `json:"data_categories,omitempty"`
}

// ruleAsDecided returns a Query callback that writes each record as an
// NDJSON line with "rule_as_decided", reading each version once.
func ruleAsDecided(ctx context.Context, st audit.Store, w io.Writer) func(*audit.Record) error {
	a, _ := st.(audit.RuleSetArchive)
	sets := map[string]*rules.Set{}
	errs := map[string]string{}
	return func(r *audit.Record) error {
		d := decidedRule{}
		set, known := sets[r.RuleSet]
		if !known && errs[r.RuleSet] == "" {
			var err error
			if a == nil {
				err = errors.New("the decision log keeps no rule-set archive")
			} else {
				set, err = compliance.ArchivedSet(ctx, a, r.RuleSet)
			}
			if err != nil {
				errs[r.RuleSet] = err.Error()
			} else {
				sets[r.RuleSet] = set
			}
		}
		if set != nil {
			d.Archived = true
			if rule := set.Rule(r.Rule); rule != nil {
				d.ID, d.Pos, d.Action, d.Mode = rule.ID, rule.Pos.String(), string(rule.Action), string(rule.Mode)
				d.Owner, d.Ticket, d.Expires, d.Hosts, d.Processor = rule.Owner, rule.Ticket, rule.Expires, rule.Hosts, rule.Processor
				d.Purposes, d.DataCategories = set.RulePurposes(rule), set.RuleDataCategories(rule)
			}
		} else {
			d.Error = errs[r.RuleSet]
		}
		rec, err := json.Marshal(r)
		if err != nil {
			return err
		}
		rule, err := json.Marshal(d)
		if err != nil {
			return err
		}
		line := append(rec[:len(rec)-1], `,"rule_as_decided":`...)
		line = append(append(line, rule...), '}', '\n')
		_, err = w.Write(line)
		return err
	}
}
