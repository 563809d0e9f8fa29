package parquetlog

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/google/uuid"
	"github.com/parquet-go/parquet-go"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// A row group is decoded column by column, straight from its pages into
// records: a dictionary-encoded column costs a lookup in a table of the
// dictionary's strings, made once per column chunk, and no allocation per
// record. A query decodes the columns its filter reads first and the
// others only for row groups with a match. (parquet-go's row reader
// allocates every string of every row: an order of magnitude slower on a
// log of millions of records.)

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

// stringField returns the record field a string column fills, or nil.
func stringField(c column, r *audit.Record) *string {
	switch c {
	case colCluster:
		return &r.Cluster
	case colPrincipal:
		return &r.Principal
	case colTrustDomain:
		return &r.TrustDomain
	case colNamespace:
		return &r.Namespace
	case colServiceAccount:
		return &r.ServiceAccount
	case colHost:
		return &r.Host
	case colMethod:
		return &r.Method
	case colPath:
		return &r.Path
	case colDecision:
		return &r.Decision
	case colRule:
		return &r.Rule
	case colOwner:
		return &r.Owner
	case colTicket:
		return &r.Ticket
	case colProcessor:
		return &r.Processor
	case colRuleSet:
		return &r.RuleSet
	case colReason:
		return &r.Reason
	case colWriter:
		return &r.Writer
	}
	return nil
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

// decoder decodes row groups of segments. It keeps, per column, the
// strings of the dictionary it saw last. It is not safe for concurrent use.
type decoder struct {
	leaves [numColumns]int // leaf column index in the file's schema; -1 when absent
	dicts  [numColumns]dictTable
	vals   []parquet.Value
	crcs   []uint32 // record_crc of the rows decoded last, when asked for
}

// dictTable is a column chunk's dictionary as Go values.
type dictTable struct {
	d     parquet.Dictionary
	strs  []string
	ints  []int64
	bools []bool
}

func newDecoder(schema *parquet.Schema) (*decoder, error) {
	d := &decoder{}
	for c := range numColumns {
		d.leaves[c] = -1
		if leaf, ok := schema.Lookup(columnNames[c]); ok {
			d.leaves[c] = leaf.ColumnIndex
		}
	}
	for _, c := range []column{colTime, colWriter, colSeq, colCRC} {
		if d.leaves[c] < 0 {
			return nil, fmt.Errorf("no %s column: not a segment of the decision log", columnNames[c])
		}
	}
	return d, nil
}

// decode fills recs (one per row of rg; other fields are left as they
// are) with the columns in cols (request_id and request_uuid go
// together). PrevHash and Hash are the chain's to recompute.
func (d *decoder) decode(rg parquet.RowGroup, recs []audit.Record, cols columnSet) error {
	if int64(len(recs)) != rg.NumRows() {
		return fmt.Errorf("row group of %d rows decoded into %d records", rg.NumRows(), len(recs))
	}
	if cols.has(colCRC) {
		d.crcs = append(d.crcs[:0], make([]uint32, len(recs))...)
	}
	chunks := rg.ColumnChunks()
	for c := range numColumns {
		if !cols.has(c) || d.leaves[c] < 0 {
			continue
		}
		if err := d.decodeColumn(c, chunks[d.leaves[c]], recs); err != nil {
			return fmt.Errorf("column %s: %w", columnNames[c], err)
		}
	}
	return nil
}

func (d *decoder) decodeColumn(c column, chunk parquet.ColumnChunk, recs []audit.Record) error {
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
		if row+n > len(recs) {
			parquet.Release(p)
			return fmt.Errorf("pages hold more than the row group's %d rows", len(recs))
		}
		err = d.decodePage(c, p, recs[row:row+n], row)
		parquet.Release(p)
		if err != nil {
			return err
		}
		row += n
	}
	if row != len(recs) {
		return fmt.Errorf("pages hold %d of the row group's %d rows", row, len(recs))
	}
	return nil
}

// decodePage fills recs from one page of column c; first is the row of
// recs[0] in the row group.
func (d *decoder) decodePage(c column, p parquet.Page, recs []audit.Record, first int) error {
	if dict := p.Dictionary(); dict != nil && p.NumNulls() == 0 {
		data := p.Data()
		idx := data.Int32()
		if len(idx) != len(recs) {
			return fmt.Errorf("a dictionary page of %d rows holds %d indexes", len(recs), len(idx))
		}
		t := d.table(c, dict)
		for i, k := range idx {
			if k < 0 || int(k) >= dict.Len() {
				return fmt.Errorf("dictionary index %d out of range", k)
			}
			d.setFromDict(c, t, k, &recs[i], first+i)
		}
		return nil
	}
	// Plain values (or a dictionary page with nulls), one Value each:
	// strings are copied out of the page.
	if cap(d.vals) < len(recs) {
		d.vals = make([]parquet.Value, len(recs))
	}
	vals := d.vals[:len(recs)]
	n, err := p.Values().ReadValues(vals)
	if err != nil && !errors.Is(err, io.EOF) {
		return err
	}
	if n != len(recs) {
		return fmt.Errorf("a page of %d rows holds %d values", len(recs), n)
	}
	for i := range vals {
		d.setValue(c, vals[i], &recs[i], first+i)
	}
	return nil
}

// table returns the Go values of dict, made when the column's dictionary
// changed (a new column chunk).
func (d *decoder) table(c column, dict parquet.Dictionary) *dictTable {
	t := &d.dicts[c]
	if t.d == dict && (t.strs != nil || t.ints != nil || t.bools != nil) {
		return t
	}
	*t = dictTable{d: dict}
	n := dict.Len()
	switch c {
	case colPort, colTime, colLatency, colSeq, colCRC:
		t.ints = make([]int64, n)
		for i := range n {
			t.ints[i] = dict.Index(int32(i)).Int64()
		}
	case colEnforced, colCacheHit:
		t.bools = make([]bool, n)
		for i := range n {
			t.bools[i] = dict.Index(int32(i)).Boolean()
		}
	default:
		t.strs = make([]string, n)
		for i := range n {
			t.strs[i] = string(dict.Index(int32(i)).ByteArray())
		}
	}
	return t
}

func (d *decoder) setFromDict(c column, t *dictTable, k int32, r *audit.Record, row int) {
	switch {
	case t.ints != nil:
		d.setInt(c, t.ints[k], r, row)
	case t.bools != nil:
		d.setBool(c, t.bools[k], r)
	default:
		d.setString(c, t.strs[k], r)
	}
}

func (d *decoder) setValue(c column, v parquet.Value, r *audit.Record, row int) {
	switch c {
	case colRequestID: // decoded before request_uuid, which holds the UUIDs
		if v.IsNull() {
			r.RequestID = ""
		} else {
			r.RequestID = string(v.ByteArray())
		}
	case colRequestUUID:
		if !v.IsNull() {
			var u uuid.UUID
			copy(u[:], v.ByteArray())
			r.RequestID = u.String()
		}
	case colTraceID:
		if v.IsNull() {
			r.TraceID = ""
		} else {
			r.TraceID = hex.EncodeToString(v.ByteArray())
		}
	case colPort, colTime, colLatency, colSeq, colCRC:
		d.setInt(c, v.Int64(), r, row)
	case colEnforced, colCacheHit:
		d.setBool(c, v.Boolean(), r)
	default:
		d.setString(c, string(v.ByteArray()), r)
	}
}

func (d *decoder) setString(c column, s string, r *audit.Record) {
	if p := stringField(c, r); p != nil {
		*p = s
	}
}

func (d *decoder) setInt(c column, v int64, r *audit.Record, row int) {
	switch c {
	case colTime:
		r.Time = time.Unix(0, v).UTC()
	case colPort:
		r.Port = int(v)
	case colLatency:
		r.Latency = time.Duration(v)
	case colSeq:
		r.Seq = uint64(v)
	case colCRC:
		d.crcs[row] = uint32(v)
	}
}

func (d *decoder) setBool(c column, v bool, r *audit.Record) {
	switch c {
	case colEnforced:
		r.Enforced = v
	case colCacheHit:
		r.CacheHit = v
	}
}
