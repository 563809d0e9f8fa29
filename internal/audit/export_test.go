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
	AppendCanonical = appendCanonical
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
