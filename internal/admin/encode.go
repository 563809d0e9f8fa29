package admin

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
	"text/tabwriter"
	"unicode"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// csvHeader is the header row of the CSV output: the names of the
// record's fields.
func csvHeader() []string {
	var h []string
	for _, f := range audit.Fields() {
		h = append(h, f.Name)
	}
	return h
}

func csvRow(row []string, fields []audit.Field, r *audit.Record) []string {
	for i := range fields {
		row = append(row, CSVSafe(fields[i].Text(r)))
	}
	return row
}

// CSVSafe keeps a spreadsheet from reading a cell as a formula: workloads
// choose request ids, hosts and paths, and auditors open the export in
// Excel. A cell starting with = + - @ or a tab or carriage return gets a
// leading apostrophe (OWASP's advice); JSON and NDJSON keep exact values.
func CSVSafe(v string) string {
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

// Encoder writes decision records in one of the query formats, for audit
// query and GET /v1/decisions.
type Encoder interface {
	Encode(r *audit.Record) error
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
		return &csvEncoder{w: c, fields: audit.Fields()}, c.Write(csvHeader())
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

func (e *jsonEncoder) Encode(r *audit.Record) error {
	sep := ",\n  "
	if e.n == 0 {
		sep = "{\"records\": [\n  "
	}
	e.n++
	b, err := json.Marshal(r)
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

func (e *ndjsonEncoder) Encode(r *audit.Record) error { return e.enc.Encode(r) }

// Close writes nothing: every line of NDJSON is a record, and the cursor
// goes where the caller puts it (the X-Next-Cursor trailer, stderr).
func (e *ndjsonEncoder) Close(string) error { return nil }

// csvEncoder drops the next page's cursor: CSV has no place for it. The
// HTTP handler sends it as a trailer; audit query prints it on stderr.
type csvEncoder struct {
	w      *csv.Writer
	fields []audit.Field
	row    []string
}

func (e *csvEncoder) Encode(r *audit.Record) error {
	e.row = csvRow(e.row[:0], e.fields, r)
	return e.w.Write(e.row)
}
func (e *csvEncoder) Close(next string) error {
	e.w.Flush()
	return e.w.Error()
}

type tableEncoder struct {
	tw *tabwriter.Writer
	n  int
}

func (e *tableEncoder) Encode(r *audit.Record) error {
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

// Close flushes the table; the cursor goes where the caller puts it (the
// CLI prints it on stderr).
func (e *tableEncoder) Close(string) error { return e.tw.Flush() }

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func hostPort(r *audit.Record) string {
	if r.Port == 0 {
		return r.Host
	}
	return r.Host + ":" + strconv.Itoa(r.Port)
}
