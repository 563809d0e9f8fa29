package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"
)

const (
	checkoutID = "spiffe://cluster.local/ns/payments/sa/checkout"
	indexerID  = "spiffe://cluster.local/ns/search/sa/indexer"
	mailerID   = "spiffe://cluster.local/ns/notify/sa/mailer"
)

var requestIDLine = regexp.MustCompile(`(?m)^request-id: (\S+)$`)

// TestTour follows the README's tour: serve the example rules, send real
// Checks with the check command, then read the decision log back with
// audit query and prove with audit verify that it was not altered — and
// that it notices when it was.
func TestTour(t *testing.T) {
	dir := t.TempDir()
	srv := startServer(t, dir, "--rules", examplesPath(t))

	type want struct {
		decision, rule, reason string
		principal, host        string
		method, path           string
		port                   int
		owner, ticket          string
	}
	checks := []struct {
		name   string
		args   []string
		code   int
		stdout []string // lines check prints
		record want     // the enforced decision record
	}{
		{
			name:   "checkout_creates_a_stripe_charge",
			args:   []string{"--principal", checkoutID, "-X", "POST", "https://api.stripe.com/v1/charges"},
			code:   0,
			stdout: []string{"decision:   allow", "rule:       payments-stripe-charges", "reason:     allowed-by-rule"},
			record: want{decision: "allow", rule: "payments-stripe-charges", reason: "allowed-by-rule", principal: checkoutID,
				host: "api.stripe.com", port: 443, method: "POST", path: "/v1/charges", owner: "team-payments", ticket: "SEC-1234"},
		},
		{
			name:   "checkout_may_not_delete_charges",
			args:   []string{"--principal", checkoutID, "-X", "DELETE", "https://api.stripe.com/v1/charges"},
			code:   3,
			stdout: []string{"decision:   deny", "rule:       -", "reason:     no-matching-rule"},
			record: want{decision: "deny", reason: "no-matching-rule", principal: checkoutID,
				host: "api.stripe.com", port: 443, method: "DELETE", path: "/v1/charges"},
		},
		{
			name:   "deny_rule_beats_the_wildcard_google_allow",
			args:   []string{"--principal", indexerID, "https://generativelanguage.googleapis.com/x"},
			code:   3,
			stdout: []string{"decision:   deny", "rule:       deny-generative-language", "reason:     denied-by-rule"},
			record: want{decision: "deny", rule: "deny-generative-language", reason: "denied-by-rule", principal: indexerID,
				host: "generativelanguage.googleapis.com", port: 443, method: "GET", path: "/x", owner: "compliance", ticket: "GDPR-77"},
		},
		{
			name:   "mailer_tls_passthrough_decided_on_sni",
			args:   []string{"--principal", mailerID, "--sni", "api.sendgrid.com"},
			code:   0,
			stdout: []string{"decision:   allow", "rule:       notify-sendgrid"},
			record: want{decision: "allow", rule: "notify-sendgrid", reason: "allowed-by-rule", principal: mailerID,
				host: "api.sendgrid.com", port: 443, owner: "team-notify", ticket: "SEC-3100"},
		},
		{
			name:   "dry_run_rule_does_not_allow",
			args:   []string{"--principal", checkoutID, "-X", "POST", "https://api.fraudscore.example/v2/score"},
			code:   3,
			stdout: []string{"decision:   deny", "reason:     no-matching-rule"},
			record: want{decision: "deny", reason: "no-matching-rule", principal: checkoutID,
				host: "api.fraudscore.example", port: 443, method: "POST", path: "/v2/score"},
		},
	}
	ids := map[string]string{} // check name -> request id it printed
	for _, c := range checks {
		t.Run("check/"+c.name, func(t *testing.T) {
			r := runCLI(t, dir, append([]string{"check", "--addr", srv.grpcAddr}, c.args...)...)
			if r.code != c.code {
				t.Fatalf("exit %d, want %d\n%s", r.code, c.code, r)
			}
			for _, line := range c.stdout {
				if !containsLine(r.stdout, line) {
					t.Errorf("output lacks the line %q\n%s", line, r)
				}
			}
			m := requestIDLine.FindStringSubmatch(r.stdout)
			if m == nil || m[1] == "-" {
				t.Fatalf("no request id printed\n%s", r)
			}
			ids[c.name] = m[1]
		})
	}
	t.Run("check/nothing_listening_is_an_error", func(t *testing.T) {
		addr := freeAddr(t)
		r := runCLI(t, dir, "check", "--addr", addr, "--timeout", "5s", "--principal", checkoutID, "https://api.stripe.com/v1/charges")
		if r.code != 1 {
			t.Fatalf("exit %d, want 1 (error, neither allow nor deny)\n%s", r.code, r)
		}
		if !strings.Contains(r.stderr, addr) || r.stdout != "" {
			t.Errorf("want the address in an error on stderr and nothing on stdout\n%s", r)
		}
	})
	if t.Failed() {
		t.FailNow()
	}

	// The README's tour, word for word: the default decision log
	// (parquet:./data/decisions) shows every decision the moment it is
	// made, from the write-ahead log while no segment holds it yet.
	r := runCLI(t, dir, "audit", "query", "--since", "5m", "--format", "json")
	if r.code != 0 {
		t.Fatalf("audit query: %s", r)
	}
	page := decodePage(t, "audit query", r.stdout)
	if len(page.Records) != len(checks)+1 { // +1: the dry-run outcome
		t.Fatalf("audit query lists %d records at once, want %d\n%s", len(page.Records), len(checks)+1, r.stdout)
	}
	byID := map[string]queriedRecord{}
	for _, rec := range page.Records {
		if rec.Enforced {
			if _, dup := byID[rec.RequestID]; dup {
				t.Errorf("request %s recorded twice", rec.RequestID)
			}
			byID[rec.RequestID] = rec
		}
	}
	for _, c := range checks {
		got, ok := byID[ids[c.name]]
		if !ok {
			t.Errorf("%s: request %s not in the decision log", c.name, ids[c.name])
			continue
		}
		w := c.record
		if got.Decision != w.decision || got.Rule != w.rule || got.Reason != w.reason || got.Principal != w.principal ||
			got.Host != w.host || got.Port != w.port || got.Method != w.method || got.Path != w.path ||
			got.Owner != w.owner || got.Ticket != w.ticket {
			t.Errorf("%s: recorded %+v\nwant %+v", c.name, got, w)
		}
	}

	t.Run("audit_query_dry_run", func(t *testing.T) {
		r := runCLI(t, dir, "audit", "query", "--since", "5m", "--format", "json", "--dry-run")
		if r.code != 0 {
			t.Fatalf("%s", r)
		}
		p := decodePage(t, "audit query --dry-run", r.stdout)
		if len(p.Records) != 1 {
			t.Fatalf("want exactly the fraud vendor's dry-run outcome, got %d records\n%s", len(p.Records), r.stdout)
		}
		got := p.Records[0]
		if got.Enforced || got.Decision != "allow" || got.Rule != "payments-fraud-vendor-trial" ||
			got.RequestID != ids["dry_run_rule_does_not_allow"] || got.Ticket != "SEC-1302" {
			t.Errorf("dry-run outcome %+v: want the not-enforced allow by payments-fraud-vendor-trial for request %s",
				got, ids["dry_run_rule_does_not_allow"])
		}
	})

	t.Run("audit_verify_intact", func(t *testing.T) {
		r := runCLI(t, dir, "audit", "verify")
		if r.code != 0 || !strings.HasPrefix(r.stdout, "OK") {
			t.Fatalf("want exit 0 and OK\n%s", r)
		}
		if !strings.Contains(r.stdout, "6 records in 1 chain intact") {
			t.Errorf("want 6 records in 1 chain\n%s", r)
		}
	})

	if code, _ := srv.terminate(20 * time.Second); code != 0 {
		t.Fatalf("serve exited %d after SIGTERM, want 0", code)
	}

	// seq of each check's enforced record, to tamper with known records.
	seqOf := func(name string) uint64 { return byID[ids[name]].Seq }
	if seqOf("checkout_may_not_delete_charges") != 2 {
		t.Fatalf("the second check's record has seq %d, want 2 (records are chained in decision order)", seqOf("checkout_may_not_delete_charges"))
	}
	// After SIGTERM every record is in a closed segment. Tamper with a
	// copy, as a Parquet tool would: rows read, one changed or removed,
	// the file written again with its metadata.
	tamper := []struct {
		name     string
		edit     func(t *testing.T, seqCol, decisionCol int, rows []parquet.Row) []parquet.Row
		target   uint64 // the record edit changes
		wantSeq  uint64
		wantText []string
	}{
		{
			name: "a_deny_turned_into_an_allow",
			edit: func(t *testing.T, seqCol, decisionCol int, rows []parquet.Row) []parquet.Row {
				for _, row := range rows {
					if row[seqCol].Int64() == 2 {
						row[decisionCol] = parquet.ByteArrayValue([]byte("allow")).Level(0, 0, decisionCol)
						return rows
					}
				}
				t.Fatal("no record 2 in the segment")
				return nil
			},
			target:   2,
			wantSeq:  2,
			wantText: []string{"record 2", ids["checkout_may_not_delete_charges"], "edited"},
		},
		{
			name: "a_record_deleted",
			edit: func(t *testing.T, seqCol, _ int, rows []parquet.Row) []parquet.Row {
				return slices.DeleteFunc(rows, func(row parquet.Row) bool { return row[seqCol].Int64() == 3 })
			},
			target:   3,
			wantSeq:  4,
			wantText: []string{"record 4", "records 3..3 were deleted"},
		},
	}
	for _, tc := range tamper {
		t.Run("audit_verify_detects/"+tc.name, func(t *testing.T) {
			copyDir := filepath.Join(t.TempDir(), "decisions")
			if err := os.CopyFS(copyDir, os.DirFS(filepath.Join(dir, "data", "decisions"))); err != nil {
				t.Fatalf("copy the decision log: %v", err)
			}
			// The tour's records are usually in one segment; a segment
			// closed mid-tour (by age, or at midnight) splits them, and
			// the record to tamper with is then in one of them.
			segs, _ := filepath.Glob(filepath.Join(copyDir, "day=*", "*.parquet"))
			seg := ""
			for _, path := range segs {
				parts := strings.Split(strings.TrimSuffix(filepath.Base(path), ".parquet"), "-")
				first, err1 := strconv.ParseUint(parts[len(parts)-2], 10, 64)
				last, err2 := strconv.ParseUint(parts[len(parts)-1], 10, 64)
				if err1 == nil && err2 == nil && first <= tc.target && tc.target <= last {
					seg = path
				}
			}
			if seg == "" {
				t.Fatalf("no segment holds record %d: %v", tc.target, segs)
			}
			if len(segs) > 1 {
				t.Logf("the tour's records are in %d segments: %v", len(segs), segs)
			}
			rewriteParquet(t, seg, tc.edit)

			r := runCLI(t, dir, "audit", "verify", "--audit", "parquet:"+copyDir)
			if r.code != 1 {
				t.Fatalf("exit %d, want 1\n%s", r.code, r)
			}
			for _, s := range tc.wantText {
				if !strings.Contains(r.stdout, s) {
					t.Errorf("output does not say %q\n%s", s, r)
				}
			}
			r = runCLI(t, dir, "audit", "verify", "--audit", "parquet:"+copyDir, "--format", "json")
			var v struct {
				OK     bool `json:"ok"`
				Breaks []struct {
					Seq uint64 `json:"seq"`
				} `json:"breaks"`
			}
			if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
				t.Fatalf("verify --format json: %v\n%s", err, r)
			}
			if r.code != 1 || v.OK || len(v.Breaks) != 1 || v.Breaks[0].Seq != tc.wantSeq {
				t.Errorf("verify --format json: exit %d, %+v; want exit 1 and one break at record %d", r.code, v, tc.wantSeq)
			}
		})
	}
}

// rewriteParquet rewrites a Parquet file as a generic tool would: its
// rows read, edit applied, the file written again with the same schema
// and key-value metadata. edit gets the column indexes of seq and
// decision.
func rewriteParquet(t *testing.T, path string, edit func(t *testing.T, seqCol, decisionCol int, rows []parquet.Row) []parquet.Row) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	st, _ := f.Stat()
	pf, err := parquet.OpenFile(f, st.Size())
	if err != nil {
		t.Fatal(err)
	}
	var opts []parquet.WriterOption
	for _, kv := range pf.Metadata().KeyValueMetadata {
		opts = append(opts, parquet.KeyValueMetadata(kv.Key, kv.Value))
	}
	var rows []parquet.Row
	for _, rg := range pf.RowGroups() {
		rr := rg.Rows()
		buf := make([]parquet.Row, 64)
		for {
			n, err := rr.ReadRows(buf)
			for _, row := range buf[:n] {
				rows = append(rows, row.Clone())
			}
			if err != nil {
				break
			}
		}
		rr.Close()
	}
	f.Close()
	seq, ok1 := pf.Schema().Lookup("seq")
	decision, ok2 := pf.Schema().Lookup("decision")
	if !ok1 || !ok2 {
		t.Fatal("no seq or decision column")
	}
	rows = edit(t, seq.ColumnIndex, decision.ColumnIndex, rows)
	out, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	w := parquet.NewWriter(out, append(opts, pf.Schema())...)
	if _, err := w.WriteRows(rows); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	out.Close()
}

func containsLine(out, line string) bool {
	for _, l := range strings.Split(out, "\n") {
		if strings.TrimRight(l, " ") == line {
			return true
		}
	}
	return false
}
