package parquetlog

import "github.com/egress-authz/egress-authz/internal/audit"

// cursorPos is where the previous page ended (set is false for the first
// page): records older than it in the query order come next.
type cursorPos struct {
	set bool
	audit.Position
}

func encodeCursor(r *audit.Record) string { return audit.PositionOf(r).Cursor() }

func decodeCursor(s string) (cursorPos, error) {
	p, err := audit.ParseCursor(s)
	if err != nil {
		return cursorPos{}, err
	}
	return cursorPos{set: true, Position: p}, nil
}

// before reports whether r comes after the cursor's page: it is older in
// the query order (time, writer, seq descending).
func (c cursorPos) before(r *audit.Record) bool {
	if !c.set {
		return true
	}
	ts := r.Time.UnixNano()
	switch {
	case ts != c.Time:
		return ts < c.Time
	case r.Writer != c.Writer:
		return r.Writer < c.Writer
	}
	return int64(r.Seq) < c.Seq
}
