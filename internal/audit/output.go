package audit

import (
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
	"unicode"

	"github.com/egress-authz/egress-authz/internal/when"
)

// jsonRecord is a Record as the query outputs render it.
type jsonRecord struct {
	Time           string `json:"time"`
	RequestID      string `json:"request_id"`
	TraceID        string `json:"trace_id,omitempty"`
	Principal      string `json:"principal"`
	TrustDomain    string `json:"trust_domain"`
	Namespace      string `json:"namespace"`
	ServiceAccount string `json:"service_account"`
	Host           string `json:"host"`
	Port           int    `json:"port"`
	Method         string `json:"method"`
	Path           string `json:"path"`
	Decision       string `json:"decision"`
	Enforced       bool   `json:"enforced"`
	Rule           string `json:"rule"`
	Owner          string `json:"owner"`
	Ticket         string `json:"ticket"`
	RuleSet        string `json:"ruleset"`
	Reason         string `json:"reason"`
	CacheHit       bool   `json:"cache_hit"`
	LatencyNS      int64  `json:"latency_ns"`
	Writer         string `json:"writer"`
	Seq            uint64 `json:"seq"`
	PrevHash       string `json:"prev_hash"`
	Hash           string `json:"hash"`
}

func toJSON(r *Record) jsonRecord {
	return jsonRecord{Time: r.Time.UTC().Format(time.RFC3339Nano), RequestID: r.RequestID, TraceID: r.TraceID,
		Principal: r.Principal, TrustDomain: r.TrustDomain, Namespace: r.Namespace, ServiceAccount: r.ServiceAccount,
		Host: r.Host, Port: r.Port, Method: r.Method, Path: r.Path, Decision: r.Decision, Enforced: r.Enforced,
		Rule: r.Rule, Owner: r.Owner, Ticket: r.Ticket, RuleSet: r.RuleSet, Reason: r.Reason, CacheHit: r.CacheHit,
		LatencyNS: int64(r.Latency), Writer: r.Writer, Seq: r.Seq, PrevHash: r.PrevHash, Hash: r.Hash}
}

var csvHeader = []string{"time", "request_id", "trace_id", "principal", "trust_domain", "namespace", "service_account",
	"host", "port", "method", "path", "decision", "enforced", "rule", "owner", "ticket", "ruleset", "reason",
	"cache_hit", "latency_ns", "writer", "seq", "prev_hash", "hash"}

func csvRow(r *Record) []string {
	row := []string{r.Time.UTC().Format(time.RFC3339Nano), r.RequestID, r.TraceID, r.Principal, r.TrustDomain,
		r.Namespace, r.ServiceAccount, r.Host, strconv.Itoa(r.Port), r.Method, r.Path, r.Decision,
		strconv.FormatBool(r.Enforced), r.Rule, r.Owner, r.Ticket, r.RuleSet, r.Reason, strconv.FormatBool(r.CacheHit),
		strconv.FormatInt(int64(r.Latency), 10), r.Writer, strconv.FormatUint(r.Seq, 10), r.PrevHash, r.Hash}
	for i, v := range row {
		row[i] = csvSafe(v)
	}
	return row
}

// csvSafe keeps a spreadsheet from reading a cell as a formula: workloads
// choose request ids, hosts and paths, and auditors open the export in
// Excel. A cell starting with = + - @ or a tab or carriage return gets a
// leading apostrophe (OWASP's advice); JSON and NDJSON keep exact values.
func csvSafe(v string) string {
	if v != "" && strings.ContainsRune("=+-@\t\r", rune(v[0])) {
		return "'" + v
	}
	return v
}

// termSafe escapes what is not graphic (control and format characters,
// such as escapes and bidi overrides), so that a field cannot move the
// cursor, fake or reorder a row, or send escape sequences to an auditor's
// terminal.
func termSafe(v string) string {
	if !strings.ContainsFunc(v, func(r rune) bool { return !unicode.IsGraphic(r) }) {
		return v
	}
	q := strconv.QuoteToGraphic(v)
	return q[1 : len(q)-1]
}

// Encoder writes records in one of the query formats.
type Encoder interface {
	Encode(r *Record) error
	// Close finishes the output; next is the cursor of the next page, if any.
	Close(next string) error
}

// Formats are the names NewEncoder accepts.
var Formats = []string{"table", "json", "ndjson", "csv"}

// NewEncoder returns an encoder for format ("table", "json", "ndjson" or
// "csv") writing to w.
func NewEncoder(format string, w io.Writer) (Encoder, error) {
	switch format {
	case "json":
		return &jsonEncoder{w: w}, nil
	case "ndjson":
		return &ndjsonEncoder{enc: json.NewEncoder(w)}, nil
	case "csv":
		c := csv.NewWriter(w)
		return &csvEncoder{w: c}, c.Write(csvHeader)
	case "table":
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		_, err := fmt.Fprintln(tw, "TIME\tDECISION\tREASON\tRULE\tPRINCIPAL\tHOST\tMETHOD\tPATH\tREQUEST")
		return &tableEncoder{tw: tw}, err
	}
	return nil, fmt.Errorf("format %q: want one of %s", format, strings.Join(Formats, ", "))
}

type jsonEncoder struct {
	w io.Writer
	n int
}

func (e *jsonEncoder) Encode(r *Record) error {
	sep := ",\n  "
	if e.n == 0 {
		sep = "{\"records\": [\n  "
	}
	e.n++
	b, err := json.Marshal(toJSON(r))
	if err != nil {
		return err
	}
	_, err = io.WriteString(e.w, sep+string(b))
	return err
}

func (e *jsonEncoder) Close(next string) error {
	head := "\n]"
	if e.n == 0 {
		head = "{\"records\": ["
		head += "]"
	}
	nb, _ := json.Marshal(next)
	_, err := fmt.Fprintf(e.w, "%s, \"count\": %d, \"next_cursor\": %s}\n", head, e.n, nb)
	return err
}

type ndjsonEncoder struct{ enc *json.Encoder }

func (e *ndjsonEncoder) Encode(r *Record) error { return e.enc.Encode(toJSON(r)) }
func (e *ndjsonEncoder) Close(next string) error {
	if next != "" {
		return e.enc.Encode(map[string]string{"next_cursor": next})
	}
	return nil
}

// csvEncoder drops the next page's cursor: CSV has no place for it. The
// HTTP handler sends it as a trailer; audit query prints it on stderr.
type csvEncoder struct{ w *csv.Writer }

func (e *csvEncoder) Encode(r *Record) error { return e.w.Write(csvRow(r)) }
func (e *csvEncoder) Close(next string) error {
	e.w.Flush()
	return e.w.Error()
}

type tableEncoder struct {
	tw *tabwriter.Writer
	n  int
}

func (e *tableEncoder) Encode(r *Record) error {
	e.n++
	dec := r.Decision
	if !r.Enforced {
		dec += " (dry-run)"
	}
	_, err := fmt.Fprintf(e.tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Time.UTC().Format("2006-01-02T15:04:05.000Z"),
		dec, termSafe(r.Reason), termSafe(dash(r.Rule)), termSafe(r.Principal), termSafe(hostPort(r)), termSafe(dash(r.Method)),
		termSafe(dash(r.Path)), termSafe(r.RequestID))
	return err
}

func (e *tableEncoder) Close(next string) error {
	if err := e.tw.Flush(); err != nil {
		return err
	}
	if next != "" {
		_, err := fmt.Fprintf(e.tw, "(more: --cursor %s)\n", next)
		if err == nil {
			err = e.tw.Flush()
		}
		return err
	}
	return nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func hostPort(r *Record) string {
	if r.Port == 0 {
		return r.Host
	}
	return r.Host + ":" + strconv.Itoa(r.Port)
}

// MaxLimit is the most records one query may ask for.
const MaxLimit = 1_000_000

// FilterFromQuery reads a Filter from URL query parameters, as
// /v1/decisions and audit query share them.
func FilterFromQuery(get func(string) string, now time.Time) (Filter, error) {
	var f Filter
	var err error
	if f.Since, err = when.ParseSince(get("since"), now); err != nil {
		return f, fmt.Errorf("since: %w", err)
	}
	if f.Until, err = when.ParseSince(get("until"), now); err != nil {
		return f, fmt.Errorf("until: %w", err)
	}
	f.Principal, f.Namespace, f.Host, f.Rule = get("principal"), get("namespace"), get("host"), get("rule")
	f.Decision = get("decision")
	if f.Decision != "" && f.Decision != Allow && f.Decision != Deny {
		return f, fmt.Errorf("decision %q: want allow or deny", f.Decision)
	}
	if v := get("dry_run"); v != "" {
		if f.DryRun, err = strconv.ParseBool(v); err != nil {
			return f, fmt.Errorf("dry_run %q: want true or false", v)
		}
	}
	if v := get("limit"); v != "" {
		if f.Limit, err = strconv.Atoi(v); err != nil || f.Limit < 0 || f.Limit > MaxLimit {
			return f, fmt.Errorf("limit %q: want a number from 0 (no limit) to %d", v, MaxLimit)
		}
	}
	f.Cursor = get("cursor")
	return f, nil
}

// Handler serves GET /v1/decisions from s: the Filter's fields as query
// parameters (since, until, principal, namespace, host, decision, rule,
// dry_run, limit, cursor), JSON by default, NDJSON for Accept:
// application/x-ndjson, CSV for text/csv (or format=json|ndjson|csv).
// Records are streamed as they are read. limit defaults to 1,000 for JSON.
func Handler(s Store, now func() time.Time) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		q := r.URL.Query()
		f, err := FilterFromQuery(q.Get, now())
		if err == nil && f.Cursor != "" {
			_, _, _, err = decodeCursor(f.Cursor)
		}
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		format := q.Get("format")
		if format == "" {
			accept := r.Header.Get("Accept")
			switch {
			case strings.Contains(accept, "application/x-ndjson"):
				format = "ndjson"
			case strings.Contains(accept, "text/csv"):
				format = "csv"
			default:
				format = "json"
			}
		}
		ctype := map[string]string{"json": "application/json", "ndjson": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}[format]
		if ctype == "" {
			http.Error(w, "format: want json, ndjson or csv", http.StatusBadRequest)
			return
		}
		if f.Limit == 0 && format == "json" && q.Get("limit") == "" {
			f.Limit = 1000
		}
		w.Header().Set("Content-Type", ctype)
		w.Header().Set("Trailer", "X-Next-Cursor")
		enc, _ := NewEncoder(format, w)
		next, err := s.Query(r.Context(), f, enc.Encode)
		if err != nil {
			if errors.Is(err, r.Context().Err()) {
				return
			}
			// Headers may be out already; say so in the body as well.
			http.Error(w, "query: "+err.Error(), http.StatusInternalServerError)
			return
		}
		_ = enc.Close(next)
		w.Header().Set("X-Next-Cursor", next) // a trailer: the body is streamed
	})
}
