package audit

import (
	"encoding/json"
	"strconv"
	"time"
)

// Kind is how a Field's value is stored.
type Kind int

// The kinds of Field.
const (
	KindString Kind = iota
	KindBool
	KindInt  // an integer, stored as an int64
	KindTime // a time, stored as Unix nanoseconds, written as RFC 3339 in text
)

// Field is one field of a Record as the stores and outputs spell it.
//
// Fields lists every field of a Record once, in the order the outputs show
// them. The SQL stores' column lists, the CSV header and rows, the OTLP
// attributes and the cleaning of recorded strings are made from it; the
// JSON shape (MarshalJSON) and the canonical encoding (canonical.go) are
// written out, the first to keep its typed contract, the second because
// stored chains depend on its exact bytes. A test changes each field of a
// Record in turn, by reflection, and fails when any of them misses it.
type Field struct {
	// Name is the field in snake_case: the JSON key, the CSV column and
	// the OTLP attribute (egress_authz.NAME).
	Name string
	// Column is the SQL column.
	Column string
	Kind   Kind

	str  func(*Record) *string // KindString
	bool func(*Record) *bool   // KindBool
	get  func(*Record) int64   // KindInt, KindTime
	set  func(*Record, int64)  // KindInt, KindTime
}

// Str returns a pointer to r's field of KindString, nil for other kinds.
func (f *Field) Str(r *Record) *string {
	if f.str == nil {
		return nil
	}
	return f.str(r)
}

// Bool returns a pointer to r's field of KindBool, nil for other kinds.
func (f *Field) Bool(r *Record) *bool {
	if f.bool == nil {
		return nil
	}
	return f.bool(r)
}

// Int returns r's field of KindInt or KindTime (in Unix nanoseconds) as an
// int64, 0 for other kinds.
func (f *Field) Int(r *Record) int64 {
	if f.get == nil {
		return 0
	}
	return f.get(r)
}

// SetInt sets r's field of KindInt or KindTime from v, as Int returns it.
func (f *Field) SetInt(r *Record, v int64) {
	if f.set != nil {
		f.set(r, v)
	}
}

// Value returns r's field as a SQL store takes it: a string, a bool or an
// int64.
func (f *Field) Value(r *Record) any {
	switch f.Kind {
	case KindString:
		return *f.str(r)
	case KindBool:
		return *f.bool(r)
	}
	return f.get(r)
}

// Text returns r's field as the CSV output writes it.
func (f *Field) Text(r *Record) string {
	switch f.Kind {
	case KindString:
		return *f.str(r)
	case KindBool:
		return strconv.FormatBool(*f.bool(r))
	case KindTime:
		return r.Time.UTC().Format(time.RFC3339Nano)
	}
	return strconv.FormatInt(f.get(r), 10)
}

func strField(name string, p func(*Record) *string) Field {
	return Field{Name: name, Column: name, Kind: KindString, str: p}
}

func boolField(name string, p func(*Record) *bool) Field {
	return Field{Name: name, Column: name, Kind: KindBool, bool: p}
}

func intField(name string, get func(*Record) int64, set func(*Record, int64)) Field {
	return Field{Name: name, Column: name, Kind: KindInt, get: get, set: set}
}

// fields is the table behind Fields. It is never modified.
var fields = []Field{
	{Name: "time", Column: "ts_ns", Kind: KindTime,
		get: func(r *Record) int64 { return r.Time.UnixNano() },
		set: func(r *Record, v int64) { r.Time = time.Unix(0, v).UTC() }},
	strField("request_id", func(r *Record) *string { return &r.RequestID }),
	strField("trace_id", func(r *Record) *string { return &r.TraceID }),
	strField("cluster", func(r *Record) *string { return &r.Cluster }),
	strField("principal", func(r *Record) *string { return &r.Principal }),
	strField("trust_domain", func(r *Record) *string { return &r.TrustDomain }),
	strField("namespace", func(r *Record) *string { return &r.Namespace }),
	strField("service_account", func(r *Record) *string { return &r.ServiceAccount }),
	strField("host", func(r *Record) *string { return &r.Host }),
	intField("port", func(r *Record) int64 { return int64(r.Port) }, func(r *Record, v int64) { r.Port = int(v) }),
	strField("method", func(r *Record) *string { return &r.Method }),
	strField("path", func(r *Record) *string { return &r.Path }),
	strField("decision", func(r *Record) *string { return &r.Decision }),
	boolField("enforced", func(r *Record) *bool { return &r.Enforced }),
	strField("rule", func(r *Record) *string { return &r.Rule }),
	strField("owner", func(r *Record) *string { return &r.Owner }),
	strField("ticket", func(r *Record) *string { return &r.Ticket }),
	strField("processor", func(r *Record) *string { return &r.Processor }),
	strField("ruleset", func(r *Record) *string { return &r.RuleSet }),
	strField("reason", func(r *Record) *string { return &r.Reason }),
	boolField("cache_hit", func(r *Record) *bool { return &r.CacheHit }),
	intField("latency_ns", func(r *Record) int64 { return int64(r.Latency) }, func(r *Record, v int64) { r.Latency = time.Duration(v) }),
	strField("writer", func(r *Record) *string { return &r.Writer }),
	intField("seq", func(r *Record) int64 { return int64(r.Seq) }, func(r *Record, v int64) { r.Seq = uint64(v) }),
	strField("prev_hash", func(r *Record) *string { return &r.PrevHash }),
	strField("hash", func(r *Record) *string { return &r.Hash }),
}

// Fields returns the fields of a Record, in the order the outputs show
// them: the time first, the chain last.
func Fields() []Field { return append([]Field(nil), fields...) }

// jsonRecord is a Record as JSON shows it: the outputs of audit query and
// GET /v1/decisions, and the stdout sink. Its keys are the Fields' names.
type jsonRecord struct {
	Time           string `json:"time"`
	RequestID      string `json:"request_id"`
	TraceID        string `json:"trace_id,omitempty"`
	Cluster        string `json:"cluster,omitempty"`
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
	Processor      string `json:"processor,omitempty"`
	RuleSet        string `json:"ruleset"`
	Reason         string `json:"reason"`
	CacheHit       bool   `json:"cache_hit"`
	LatencyNS      int64  `json:"latency_ns"`
	Writer         string `json:"writer"`
	Seq            uint64 `json:"seq"`
	PrevHash       string `json:"prev_hash"`
	Hash           string `json:"hash"`
}

// MarshalJSON writes r with the Fields' names as keys, the time in RFC
// 3339 and the latency in nanoseconds; an empty trace id is left out.
func (r Record) MarshalJSON() ([]byte, error) {
	return json.Marshal(jsonRecord{Time: r.Time.UTC().Format(time.RFC3339Nano), RequestID: r.RequestID, TraceID: r.TraceID,
		Cluster: r.Cluster, Principal: r.Principal, TrustDomain: r.TrustDomain, Namespace: r.Namespace, ServiceAccount: r.ServiceAccount,
		Host: r.Host, Port: r.Port, Method: r.Method, Path: r.Path, Decision: r.Decision, Enforced: r.Enforced,
		Rule: r.Rule, Owner: r.Owner, Ticket: r.Ticket, Processor: r.Processor, RuleSet: r.RuleSet, Reason: r.Reason, CacheHit: r.CacheHit,
		LatencyNS: int64(r.Latency), Writer: r.Writer, Seq: r.Seq, PrevHash: r.PrevHash, Hash: r.Hash})
}
