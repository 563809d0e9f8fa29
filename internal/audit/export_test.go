package audit

import (
	"bufio"
	"io"
	"os"
)

// What the external tests (package audit_test, which may import the
// stores) need of the write-ahead log's internals.

var (
	Segments        = segments
	SegmentName     = segmentName
	MaxFrame        = maxFrame
	FrameHeader     = frameHeader
	DecodeCanonical = decodeCanonical
)

// FrameOffsets returns the offset of each frame of the segment file at
// path, and of its end.
func FrameOffsets(path string) ([]int64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fr := &frameReader{r: bufio.NewReader(f)}
	offs := []int64{0}
	for {
		if _, err := fr.next(); err != nil {
			if err == io.EOF {
				return offs, nil
			}
			return offs, err
		}
		offs = append(offs, fr.off)
	}
}

// Waiting returns how many Records wait for room in the buffer.
func Waiting(w *Writer) int64 { return w.waiting.Load() }

// Synced returns how far the log is fsynced, which is as far as the sinks
// may read.
func Synced(w *Writer) uint64 { return w.log.synced.Load() }

// WithFsync returns opts with fsync as the log's fsync of a file, so that a
// test can hold an fsync up.
func WithFsync(opts Options, fsync func(*os.File) error) Options {
	opts.fsync = fsync
	return opts
}
