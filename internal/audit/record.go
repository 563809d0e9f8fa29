// Package audit is the decision log: every decision the server makes becomes
// one Record, written off the request path, chained by hash per writer so
// that an edit, a deletion, an insertion or a reordering is detected, and
// queryable by auditors.
//
// The package is the record (its fields listed once, in Fields), the
// chain and its verification, the write-ahead log, and the Writer that
// feeds the sinks from it; and the small interfaces a store implements
// (Sink, Store, Checkpointer). The stores are packages beside it
// (sqlstore, otlpsink; stores opens the one a DSN names), so that what
// imports audit for its Record, as authz does, imports no database driver
// and no exporter. It knows nothing of rule matching or of Envoy: a Record
// is flat data that the authz package fills in.
package audit

import "time"

// Decision values of a Record.
const (
	Allow = "allow"
	Deny  = "deny"
)

// Record is one decision of the log. For a dry-run rule that matched, a
// second Record with Enforced false carries its would-be outcome beside the
// enforced one.
type Record struct {
	Time           time.Time
	RequestID      string
	TraceID        string
	Cluster        string // the --cluster of the server that decided
	Principal      string
	TrustDomain    string
	Namespace      string
	ServiceAccount string
	Host           string
	Port           int
	Method         string
	Path           string
	Decision       string // Allow or Deny
	Enforced       bool   // false for a dry-run rule's would-be outcome
	Rule           string
	Owner          string
	Ticket         string
	Processor      string // the deciding rule's processor (GDPR), if it names one
	RuleSet        string // rule-set version
	Reason         string
	CacheHit       bool
	Latency        time.Duration

	// Set by the writer that chains the record.
	Writer   string
	Seq      uint64
	PrevHash string
	Hash     string
}
