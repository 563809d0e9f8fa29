package parquetlog

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/parquet-go/parquet-go"
	"github.com/parquet-go/parquet-go/encoding"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// A row group is decoded column by column, straight from its pages into
// compact arrays of per-row values (a dictionary-encoded string column
// into its rows' indexes in a table of the dictionary's strings, made once
// per column chunk), and records are assembled from them one row at a
// time, only for the rows a caller needs. A query decodes the columns its
// filter reads first, and the others only for row groups with a match;
// the rows it only hashes to rebuild the chain are assembled into one
// scratch record each, not kept. (parquet-go's row reader allocates every
// string of every row: an order of magnitude slower on a log of millions
// of records.)

// column is one column of the segment schema and where its values go.
type column int

const (
	colTime column = iota
	colRequestID
	colRequestUUID
	colTraceID
	colCluster
	colPrincipal
	colTrustDomain
	colNamespace
	colServiceAccount
	colHost
	colPort
	colMethod
	colPath
	colDecision
	colEnforced
	colRule
	colOwner
	colTicket
	colProcessor
	colRuleSet
	colReason
	colCacheHit
	colLatency
	colWriter
	colSeq
	colCRC
	numColumns
)

// columnNames are the Parquet column names, by column.
var columnNames = [numColumns]string{
	colTime: "time", colRequestID: "request_id", colRequestUUID: "request_uuid", colTraceID: "trace_id",
	colCluster: "cluster", colPrincipal: "principal", colTrustDomain: "trust_domain", colNamespace: "namespace",
	colServiceAccount: "service_account", colHost: "host", colPort: "port", colMethod: "method", colPath: "path",
	colDecision: "decision", colEnforced: "enforced", colRule: "rule", colOwner: "owner", colTicket: "ticket",
	colProcessor: "processor", colRuleSet: "ruleset", colReason: "reason", colCacheHit: "cache_hit",
	colLatency: "latency_ns", colWriter: "writer", colSeq: "seq", colCRC: "record_crc",
}

// kind is how a column's values are kept.
type kind int

const (
	kindString kind = iota // idx into strs
	kindInt                // ints
	kindBool               // bools
	kindID                 // ids, 16 bytes or null
)

func kindOf(c column) kind {
	switch c {
	case colTime, colPort, colLatency, colSeq, colCRC:
		return kindInt
	case colEnforced, colCacheHit:
		return kindBool
	case colRequestUUID, colTraceID:
		return kindID
	}
	return kindString
}

// columnSet is a set of columns.
type columnSet uint32

func setOf(cols ...column) columnSet {
	var s columnSet
	for _, c := range cols {
		s |= 1 << c
	}
	return s
}

func (s columnSet) has(c column) bool { return s&(1<<c) != 0 }

const allColumns = columnSet(1<<numColumns - 1)

// decoder decodes row groups of segments. It keeps the columns of the row
// group it decoded last, and its buffers from one row group to the next.
// It is not safe for concurrent use.
type decoder struct {
	leaves [numColumns]int // leaf column index in the file's schema; -1 when absent
	cols   [numColumns]colData
	have   columnSet // the columns decoded for the current row group
	rows   int       // of the current row group
	vals   []parquet.Value
	crcs   []uint32 // record_crc of the rows decode filled last, when asked for
}

// colData is one column of the current row group, a value per row.
type colData struct {
	idx  []int32  // kindString: the row's string in strs, -1 for null
	strs []string // kindString: the dictionaries' strings and the plain values
	ints []int64  // kindInt
	tab  []int64  // kindInt: the dictionaries' integers
	bits []bool   // kindBool
	ids  [][16]byte
	null []bool // kindID
	// kindID: the ids of rows textLo.. as text, in one string (a record's
	// id is a substring of it: one allocation, not one a row), made by
	// prepareIDs for the rows a caller is about to assemble.
	text   string
	textLo int

	dict parquet.Dictionary // the dictionary last copied into strs or tab
	base int32              // where in strs or tab it was copied
}

func newDecoder(schema *parquet.Schema) (*decoder, error) {
	d := &decoder{}
	if err := d.reset(schema); err != nil {
		return nil, err
	}
	return d, nil
}

// reset makes d decode segments of schema.
func (d *decoder) reset(schema *parquet.Schema) error {
	d.have, d.rows = 0, 0
	for c := range numColumns {
		d.leaves[c] = -1
		if leaf, ok := schema.Lookup(columnNames[c]); ok {
			d.leaves[c] = leaf.ColumnIndex
		}
	}
	for _, c := range []column{colTime, colWriter, colSeq, colCRC} {
		if d.leaves[c] < 0 {
			return fmt.Errorf("no %s column: not a segment of the decision log", columnNames[c])
		}
	}
	return nil
}

// decode fills recs (one per row of rg) with the columns in cols; the
// fields of other columns are zero. PrevHash and Hash are the chain's to
// recompute.
func (d *decoder) decode(rg parquet.RowGroup, recs []audit.Record, cols columnSet) error {
	if int64(len(recs)) != rg.NumRows() {
		return fmt.Errorf("row group of %d rows decoded into %d records", rg.NumRows(), len(recs))
	}
	d.start(rg)
	if err := d.decodeColumns(rg, cols); err != nil {
		return err
	}
	d.prepareIDs(0, d.rows)
	for i := range recs {
		d.record(i, &recs[i])
	}
	if cols.has(colCRC) {
		d.crcs = d.crcs[:0]
		for _, v := range d.cols[colCRC].ints {
			d.crcs = append(d.crcs, uint32(v))
		}
	}
	return nil
}

// start begins the decoding of rg: no column of it is decoded yet.
func (d *decoder) start(rg parquet.RowGroup) {
	d.have, d.rows = 0, int(rg.NumRows())
}

// decodeColumns decodes the columns of cols that the segment has and that
// are not decoded yet, for every row of the current row group rg.
func (d *decoder) decodeColumns(rg parquet.RowGroup, cols columnSet) error {
	chunks := rg.ColumnChunks()
	for c := range numColumns {
		if !cols.has(c) || d.have.has(c) || d.leaves[c] < 0 {
			continue
		}
		if err := d.decodeColumn(c, chunks[d.leaves[c]]); err != nil {
			return fmt.Errorf("column %s: %w", columnNames[c], err)
		}
		d.have |= setOf(c)
	}
	return nil
}

func (d *decoder) decodeColumn(c column, chunk parquet.ColumnChunk) error {
	col := &d.cols[c]
	col.idx, col.strs, col.ints, col.tab, col.bits, col.ids, col.null = col.idx[:0], col.strs[:0], col.ints[:0], col.tab[:0], col.bits[:0], col.ids[:0], col.null[:0]
	col.text, col.textLo = "", 0
	clear(col.strs[:cap(col.strs)]) // let the previous row group's strings go
	col.dict = nil
	pages := chunk.Pages()
	defer pages.Close()
	row := 0
	for {
		p, err := pages.ReadPage()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return err
		}
		n := int(p.NumRows())
		if row+n > d.rows {
			parquet.Release(p)
			return fmt.Errorf("pages hold more than the row group's %d rows", d.rows)
		}
		err = d.decodePage(c, col, p, n)
		parquet.Release(p)
		if err != nil {
			return err
		}
		row += n
	}
	if row != d.rows {
		return fmt.Errorf("pages hold %d of the row group's %d rows", row, d.rows)
	}
	return nil
}

// prepareIDs makes the text of the 16-byte ids of rows lo..hi-1, for the
// records about to be assembled from them.
func (d *decoder) prepareIDs(lo, hi int) {
	for _, c := range []column{colRequestUUID, colTraceID} {
		if d.have.has(c) {
			col := &d.cols[c]
			col.text, col.textLo = idText(c, col.ids[lo:hi]), lo
		}
	}
}

// idWidth is how many characters an id of the 16-byte column c is as text.
func idWidth(c column) int {
	if c == colRequestUUID {
		return 36
	}
	return 32
}

// idText is the text of ids, each idWidth(c) characters: a UUID as
// uuid.UUID.String writes it, a trace id as 32 lower-case hex digits.
func idText(c column, ids [][16]byte) string {
	w := idWidth(c)
	var sb strings.Builder
	sb.Grow(len(ids) * w)
	var buf [36]byte
	for i := range ids {
		t, id := buf[:w], &ids[i]
		encodeID(c, t, id)
		sb.Write(t)
	}
	return sb.String()
}

// encodeID writes the text of id, a value of column c, to t.
func encodeID(c column, t []byte, id *[16]byte) {
	if c != colRequestUUID {
		hex.Encode(t, id[:])
		return
	}
	hex.Encode(t[0:8], id[0:4])
	t[8] = '-'
	hex.Encode(t[9:13], id[4:6])
	t[13] = '-'
	hex.Encode(t[14:18], id[6:8])
	t[18] = '-'
	hex.Encode(t[19:23], id[8:10])
	t[23] = '-'
	hex.Encode(t[24:36], id[10:16])
}

// decodePage appends the n rows of one page of column c to col.
func (d *decoder) decodePage(c column, col *colData, p parquet.Page, n int) error {
	k := kindOf(c)
	if dict := p.Dictionary(); dict != nil && p.NumNulls() == 0 && (k == kindString || k == kindInt) {
		data := p.Data()
		idx := data.Int32()
		if len(idx) != n {
			return fmt.Errorf("a dictionary page of %d rows holds %d indexes", n, len(idx))
		}
		size := int32(dict.Len())
		if col.dict != dict {
			col.dict = dict
			if k == kindString {
				col.base = int32(len(col.strs))
				col.strs = appendDict(col.strs, dict)
			} else {
				col.base = int32(len(col.tab))
				for i := range size {
					col.tab = append(col.tab, dict.Index(i).Int64())
				}
			}
		}
		for _, i := range idx {
			if i < 0 || i >= size {
				return fmt.Errorf("dictionary index %d out of range", i)
			}
		}
		if k == kindString {
			for _, i := range idx {
				col.idx = append(col.idx, col.base+i)
			}
		} else {
			tab := col.tab[col.base : col.base+size]
			for _, i := range idx {
				col.ints = append(col.ints, tab[i])
			}
		}
		return nil
	}
	if p.NumNulls() == 0 && p.Dictionary() == nil {
		switch data := p.Data(); {
		case k == kindInt && data.Kind() == encoding.Int64 && len(data.Int64()) == n:
			col.ints = append(col.ints, data.Int64()...)
			return nil
		case k == kindInt && data.Kind() == encoding.Int32 && len(data.Int32()) == n:
			for _, v := range data.Int32() {
				col.ints = append(col.ints, int64(v))
			}
			return nil
		case k == kindBool:
			if r, ok := p.Values().(parquet.BooleanReader); ok {
				col.bits = append(col.bits, make([]bool, n)...)
				m, err := r.ReadBooleans(col.bits[len(col.bits)-n:])
				if err != nil && !errors.Is(err, io.EOF) {
					return err
				}
				if m != n {
					return fmt.Errorf("a page of %d rows holds %d values", n, m)
				}
				return nil
			}
		}
	}
	// Any other page (plain strings, optional values), one Value each:
	// strings are copied out of the page.
	if cap(d.vals) < n {
		d.vals = make([]parquet.Value, n)
	}
	vals := d.vals[:n]
	m, err := p.Values().ReadValues(vals)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if m != n {
		return fmt.Errorf("a page of %d rows holds %d values", n, m)
	}
	for _, v := range vals {
		switch k {
		case kindString:
			if v.IsNull() {
				col.idx = append(col.idx, -1)
			} else {
				col.idx = append(col.idx, int32(len(col.strs)))
				col.strs = append(col.strs, string(v.ByteArray()))
			}
		case kindInt:
			col.ints = append(col.ints, v.Int64())
		case kindBool:
			col.bits = append(col.bits, v.Boolean())
		case kindID:
			var id [16]byte
			copy(id[:], v.ByteArray())
			col.ids = append(col.ids, id)
			col.null = append(col.null, v.IsNull())
		}
	}
	return nil
}

// appendDict appends the strings of a dictionary of byte arrays to strs:
// substrings of one string, one allocation for the dictionary, not one a
// value.
func appendDict(strs []string, dict parquet.Dictionary) []string {
	n, size := int32(dict.Len()), 0
	for i := range n {
		size += len(dict.Index(i).ByteArray())
	}
	var sb strings.Builder
	sb.Grow(size)
	for i := range n {
		sb.Write(dict.Index(i).ByteArray())
	}
	all, off := sb.String(), 0
	for i := range n {
		l := len(dict.Index(i).ByteArray())
		strs = append(strs, all[off:off+l])
		off += l
	}
	return strs
}

// str is row i's value of the string column c, "" when it is not decoded.
func (d *decoder) str(c column, i int) string {
	if !d.have.has(c) {
		return ""
	}
	col := &d.cols[c]
	if k := col.idx[i]; k >= 0 {
		return col.strs[k]
	}
	return ""
}

// int is row i's value of the integer column c, 0 when it is not decoded.
func (d *decoder) int(c column, i int) int64 {
	if !d.have.has(c) {
		return 0
	}
	return d.cols[c].ints[i]
}

func (d *decoder) bool(c column, i int) bool {
	return d.have.has(c) && d.cols[c].bits[i]
}

// id is row i's value of a 16-byte column as text, and whether it has
// one. The text of a prepared row shares prepareIDs' string: a caller
// keeping it beyond the next prepareIDs clones it.
func (d *decoder) id(c column, i int) (string, bool) {
	if !d.have.has(c) || d.cols[c].null[i] {
		return "", false
	}
	col, w := &d.cols[c], idWidth(c)
	if j := i - col.textLo; j >= 0 && (j+1)*w <= len(col.text) {
		return col.text[j*w : (j+1)*w], true
	}
	var buf [36]byte
	encodeID(c, buf[:w], &col.ids[i])
	return string(buf[:w]), true
}

// record sets r from row i of the decoded columns (a column not decoded
// gives its zero value); PrevHash and Hash are left as they are.
func (d *decoder) record(i int, r *audit.Record) {
	r.Time = time.Unix(0, d.int(colTime, i)).UTC()
	r.RequestID = d.str(colRequestID, i) // null when the id is a UUID
	if u, ok := d.id(colRequestUUID, i); ok {
		r.RequestID = u
	}
	r.TraceID, _ = d.id(colTraceID, i)
	r.Cluster = d.str(colCluster, i)
	r.Principal = d.str(colPrincipal, i)
	r.TrustDomain = d.str(colTrustDomain, i)
	r.Namespace = d.str(colNamespace, i)
	r.ServiceAccount = d.str(colServiceAccount, i)
	r.Host = d.str(colHost, i)
	r.Port = int(d.int(colPort, i))
	r.Method = d.str(colMethod, i)
	r.Path = d.str(colPath, i)
	r.Decision = d.str(colDecision, i)
	r.Enforced = d.bool(colEnforced, i)
	r.Rule = d.str(colRule, i)
	r.Owner = d.str(colOwner, i)
	r.Ticket = d.str(colTicket, i)
	r.Processor = d.str(colProcessor, i)
	r.RuleSet = d.str(colRuleSet, i)
	r.Reason = d.str(colReason, i)
	r.CacheHit = d.bool(colCacheHit, i)
	r.Latency = time.Duration(d.int(colLatency, i))
	r.Writer = d.str(colWriter, i)
	r.Seq = uint64(d.int(colSeq, i))
}

// equal returns, for the decoded string column c, which entries of its
// table equal want (rows whose idx is k match when eq[k]), and whether any
// does.
func (d *decoder) equal(c column, want string, eq []bool) ([]bool, bool) {
	col := &d.cols[c]
	eq = append(eq[:0], make([]bool, len(col.strs))...)
	any := false
	for k, s := range col.strs {
		if s == want {
			eq[k], any = true, true
		}
	}
	return eq, any
}
