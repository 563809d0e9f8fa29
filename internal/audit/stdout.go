package audit

import (
	"context"
	"encoding/json"
	"io"
)

// Stdout is a Sink that prints records as NDJSON (Record.MarshalJSON),
// for running under a log collector. It keeps no cursor: after a restart
// it prints again what the write-ahead log still holds, so a reader must
// de-duplicate by writer and seq.
type Stdout struct {
	enc *json.Encoder
}

// NewStdout returns a Stdout sink writing to w.
func NewStdout(w io.Writer) *Stdout { return &Stdout{enc: json.NewEncoder(w)} }

// Name implements Sink.
func (s *Stdout) Name() string { return "stdout" }

// Cursor implements Sink.
func (s *Stdout) Cursor(context.Context, string) (uint64, error) { return 0, nil }

// Write implements Sink.
func (s *Stdout) Write(_ context.Context, recs []Record) error {
	for i := range recs {
		if err := s.enc.Encode(&recs[i]); err != nil {
			return err
		}
	}
	return nil
}

// Close implements Sink.
func (s *Stdout) Close() error { return nil }
