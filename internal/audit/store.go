package audit

import (
	"context"
	"encoding/base64"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Filter selects decision records. Zero fields select everything.
type Filter struct {
	Since, Until time.Time // Since inclusive, Until exclusive
	Principal    string
	Namespace    string
	Host         string
	Rule         string
	Decision     string // Allow or Deny
	DryRun       bool   // only dry-run outcomes (Enforced false)
	Limit        int    // 0: no limit
	Cursor       string // continue after the page that returned it
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
