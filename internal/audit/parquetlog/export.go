package parquetlog

import (
	"errors"
	"fmt"
	"io"

	"github.com/parquet-go/parquet-go"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// exportRow is a record as a RecordWriter writes it: a segment's columns,
// and the chain's hashes, which a segment leaves out (its records are one
// chain, so it recomputes them; an export's are any records).
type exportRow struct {
	row
	TraceText *string `parquet:"trace_id_text,optional,zstd"` // a trace id that is not 32 hex digits
	PrevHash  string  `parquet:"prev_hash,zstd"`
	Hash      string  `parquet:"hash,zstd"`
}

// RecordWriter writes records of any writers, in any order, to one Parquet
// file: the columns of a segment, and prev_hash and hash. ReadRecords
// reads it back; DuckDB and the like read it as any Parquet file.
type RecordWriter struct {
	w    *parquet.GenericWriter[exportRow]
	rows []exportRow
	buf  []byte
	n    int
}

// NewRecordWriter returns a RecordWriter to w.
func NewRecordWriter(w io.Writer) *RecordWriter {
	return &RecordWriter{w: parquet.NewGenericWriter[exportRow](w, parquet.Compression(&parquet.Zstd))}
}

// Write adds r.
func (w *RecordWriter) Write(r *audit.Record) error {
	w.rows = append(w.rows, exportRow{PrevHash: r.PrevHash, Hash: r.Hash})
	e := &w.rows[len(w.rows)-1]
	w.buf = toRow(r, &e.row, w.buf)
	if e.TraceID == ([16]byte{}) && r.TraceID != "" {
		id := r.TraceID
		e.TraceText = &id
	}
	w.n++
	if len(w.rows) >= 1024 {
		return w.flush()
	}
	return nil
}

func (w *RecordWriter) flush() error {
	if _, err := w.w.Write(w.rows); err != nil {
		return fmt.Errorf("write parquet records: %w", err)
	}
	clear(w.rows)
	w.rows = w.rows[:0]
	return nil
}

// Records is how many records were written.
func (w *RecordWriter) Records() int { return w.n }

// Close writes the file's footer.
func (w *RecordWriter) Close() error {
	if err := w.flush(); err != nil {
		return err
	}
	return w.w.Close()
}

// ReadRecords reads the records of a file a RecordWriter wrote, in its
// order.
func ReadRecords(r io.ReaderAt, size int64) ([]audit.Record, error) {
	f, err := parquet.OpenFile(r, size)
	if err != nil {
		return nil, fmt.Errorf("read parquet records: %w", err)
	}
	rd := parquet.NewGenericReader[exportRow](f)
	defer rd.Close()
	var out []audit.Record
	buf := make([]exportRow, 256)
	for {
		n, err := rd.Read(buf)
		for i := range buf[:n] {
			var rec audit.Record
			fromRow(&buf[i].row, &rec)
			rec.PrevHash, rec.Hash = buf[i].PrevHash, buf[i].Hash
			if buf[i].TraceText != nil {
				rec.TraceID = *buf[i].TraceText
			}
			out = append(out, rec)
		}
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("read parquet records: %w", err)
		}
	}
}
