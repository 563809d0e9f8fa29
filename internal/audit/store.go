package audit

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"
)

// Filter selects decision records. Zero fields select everything. Every
// store applies it alike; Match is its meaning.
type Filter struct {
	Since, Until time.Time // Since inclusive, Until exclusive
	RequestID    string
	Cluster      string
	Principal    string
	Namespace    string
	Host         HostPattern
	Port         int // 0: any
	Method       string
	Rule         string
	Processor    string // the deciding rule's GDPR processor
	Decision     string // Allow or Deny
	Reason       string
	Enforced     *bool  // nil: both; false: only dry-run outcomes
	DryRun       bool   // only dry-run outcomes (Enforced false), as Enforced false
	Limit        int    // 0: no limit
	Cursor       string // continue after the page that returned it
}

// Match reports whether f selects r, the cursor and the limit aside.
func (f *Filter) Match(r *Record) bool {
	switch {
	case !f.Since.IsZero() && r.Time.Before(f.Since):
	case !f.Until.IsZero() && !r.Time.Before(f.Until):
	case f.RequestID != "" && r.RequestID != f.RequestID:
	case f.Cluster != "" && r.Cluster != f.Cluster:
	case f.Principal != "" && r.Principal != f.Principal:
	case f.Namespace != "" && r.Namespace != f.Namespace:
	case !f.Host.Match(r.Host, r.Port):
	case f.Port != 0 && r.Port != f.Port:
	case f.Method != "" && r.Method != f.Method:
	case f.Rule != "" && r.Rule != f.Rule:
	case f.Processor != "" && r.Processor != f.Processor:
	case f.Decision != "" && r.Decision != f.Decision:
	case f.Reason != "" && r.Reason != f.Reason:
	case f.Enforced != nil && r.Enforced != *f.Enforced:
	case f.DryRun && r.Enforced:
	default:
		return true
	}
	return false
}

// HostPattern selects records by destination as the rules write hosts: a
// name (matched case-insensitively, a trailing dot ignored), "*.domain"
// for any name below the domain (not the domain itself), and either with
// ":PORT" to select that port too ("api.stripe.com:443", as the query
// table shows a destination). The zero value selects every host.
type HostPattern struct {
	Name   string // lower case; "" with Suffix or for any host
	Suffix string // ".domain" for "*.domain"
	Port   int    // 0: any port
}

// ParseHostPattern reads a host filter. It refuses what can be no
// recorded host's pattern, so that a mistyped filter is an error rather
// than an empty answer.
func ParseHostPattern(s string) (HostPattern, error) {
	var p HostPattern
	if s == "" {
		return p, nil
	}
	h := s
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.HasSuffix(h, "]") {
		port, err := strconv.Atoi(h[i+1:])
		if err != nil || port < 1 || port > 65535 {
			return p, fmt.Errorf("%q: the port after ':' must be a number from 1 to 65535", s)
		}
		h, p.Port = h[:i], port
	}
	h = strings.TrimSuffix(strings.ToLower(h), ".")
	if rest, ok := strings.CutPrefix(h, "*."); ok {
		h, p.Suffix = "", "."+rest
		if rest == "" || strings.Contains(rest, "*") {
			return p, fmt.Errorf("%q: write *.example.com for the names below example.com", s)
		}
	} else if h == "" || strings.Contains(h, "*") {
		return p, fmt.Errorf("%q: write a host name, or *.example.com for the names below example.com", s)
	}
	p.Name = h
	return p, nil
}

// IsZero reports whether p selects every host.
func (p HostPattern) IsZero() bool { return p == HostPattern{} }

// Match reports whether a record's host and port are selected.
func (p HostPattern) Match(host string, port int) bool {
	if p.Port != 0 && port != p.Port {
		return false
	}
	switch {
	case p.Name != "":
		return strings.EqualFold(strings.TrimSuffix(host, "."), p.Name)
	case p.Suffix != "":
		h := strings.ToLower(strings.TrimSuffix(host, "."))
		return len(h) > len(p.Suffix) && strings.HasSuffix(h, p.Suffix)
	}
	return true
}

// String writes p as ParseHostPattern reads it.
func (p HostPattern) String() string {
	s := p.Name
	if p.Suffix != "" {
		s = "*" + p.Suffix
	}
	if p.Port != 0 {
		s += ":" + strconv.Itoa(p.Port)
	}
	return s
}

// Store is a decision log that can be queried and verified. The stores
// live in packages of their own (internal/audit/sqlstore, ...), and
// internal/audit/stores opens the one a DSN names.
type Store interface {
	// Query calls fn for the records matching f, newest first: by time,
	// then writer, then sequence number, each descending. When f.Limit cut
	// the result short it returns the cursor of the next page (see
	// Position). A cursor that ParseCursor refuses is an error wrapping
	// ErrInvalidCursor, returned before fn is called.
	Query(ctx context.Context, f Filter, fn func(*Record) error) (next string, err error)
	// Chains calls fn for every record, ordered by writer and sequence.
	Chains(ctx context.Context, fn func(*Record) error) error
	Close() error
}

// Checkpointer is a Store whose retention removes the oldest records of a
// chain and leaves a Checkpoint where it cut, so that Verify can tell
// retention from deletion.
type Checkpointer interface {
	// Checkpoints returns, per writer, the last record retention removed.
	Checkpoints(ctx context.Context) (map[string]Checkpoint, error)
}

// Checkpoint is the last record of a writer's chain that retention removed:
// the chain continues from it.
type Checkpoint struct {
	Seq  uint64
	Hash string
}

// ErrInvalidCursor is wrapped by the error of a Query given a cursor that
// no Query returned.
var ErrInvalidCursor = errors.New("invalid cursor")

// Position is where a page of Query results ended: its last record's time
// (Unix nanoseconds), writer and sequence number. Every store orders
// records the same way and continues after a Position, so one cursor form
// serves them all.
type Position struct {
	Time   int64
	Seq    int64
	Writer string
}

// PositionOf returns the position of r.
func PositionOf(r *Record) Position {
	return Position{Time: r.Time.UnixNano(), Seq: int64(r.Seq), Writer: r.Writer}
}

// Cursor encodes p as the opaque cursor Query returns.
func (p Position) Cursor() string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(p.Time, 10) + "|" + strconv.FormatInt(p.Seq, 10) + "|" + p.Writer))
}

// ParseCursor is the inverse of Position.Cursor. Its error wraps
// ErrInvalidCursor.
func ParseCursor(s string) (Position, error) {
	var p Position
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return p, ErrInvalidCursor
	}
	parts := strings.SplitN(string(b), "|", 3)
	if len(parts) != 3 {
		return p, ErrInvalidCursor
	}
	if p.Time, err = strconv.ParseInt(parts[0], 10, 64); err != nil {
		return p, ErrInvalidCursor
	}
	if p.Seq, err = strconv.ParseInt(parts[1], 10, 64); err != nil {
		return p, ErrInvalidCursor
	}
	p.Writer = parts[2]
	return p, nil
}
