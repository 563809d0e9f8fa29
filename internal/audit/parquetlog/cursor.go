package parquetlog

import (
	"encoding/base64"
	"strconv"
	"strings"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// cursorPos is the position after the last record of a page: records
// older than it in the query order come next.
type cursorPos struct {
	set    bool
	ts     int64
	writer string
	seq    uint64
}

func encodeCursor(r *audit.Record) string {
	return base64.RawURLEncoding.EncodeToString([]byte(strconv.FormatInt(r.Time.UnixNano(), 10) + "|" +
		strconv.FormatUint(r.Seq, 10) + "|" + r.Writer))
}

func decodeCursor(s string) (cursorPos, error) {
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return cursorPos{}, errBadCursor
	}
	parts := strings.SplitN(string(b), "|", 3)
	if len(parts) != 3 {
		return cursorPos{}, errBadCursor
	}
	c := cursorPos{set: true, writer: parts[2]}
	if c.ts, err = strconv.ParseInt(parts[0], 10, 64); err != nil {
		return cursorPos{}, errBadCursor
	}
	if c.seq, err = strconv.ParseUint(parts[1], 10, 64); err != nil {
		return cursorPos{}, errBadCursor
	}
	return c, nil
}

// before reports whether r comes after the cursor's page: it is older in
// the query order (time, writer, seq descending).
func (c cursorPos) before(r *audit.Record) bool {
	if !c.set {
		return true
	}
	ts := r.Time.UnixNano()
	switch {
	case ts != c.ts:
		return ts < c.ts
	case r.Writer != c.writer:
		return r.Writer < c.writer
	}
	return r.Seq < c.seq
}
