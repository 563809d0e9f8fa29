package parquetlog

import (
	kzstd "github.com/klauspost/compress/zstd"
	"github.com/parquet-go/parquet-go/compress/zstd"
)

// segmentCodec compresses every segment's pages with one long-lived zstd
// encoder. parquet-go's own codec keeps its encoders in a sync.Pool, which
// each garbage collection may empty: under load a collection runs between
// two pages, and each page then built a new encoder with its 2 MB history
// (an eighth of the server's allocations, and the collections they cause).
// Decoding stays parquet-go's.
//
// Every column goes through it: the row's struct tags name no codec (a
// tag's would be parquet-go's pooled one, with a second history), the
// writer's default is this one. Its window is 1 MiB, not zstd's 8 MiB: a
// page is compressed alone, and holds pageBufferSize bytes before encoding
// (a dictionary page, the column chunk's whole dictionary: a few hundred
// KiB), so a longer window finds nothing more, and the encoder's history,
// twice the window, was most of the sink's memory.
type segmentCodec struct {
	zstd.Codec
	enc *kzstd.Encoder
}

func newSegmentCodec() *segmentCodec {
	enc, err := kzstd.NewWriter(nil,
		kzstd.WithEncoderConcurrency(1),
		kzstd.WithEncoderLevel(zstd.SpeedDefault),
		kzstd.WithZeroFrames(true),
		kzstd.WithEncoderCRC(false),
		kzstd.WithWindowSize(1<<20),
	)
	if err != nil {
		panic(err) // only for invalid options
	}
	return &segmentCodec{Codec: zstd.Codec{Level: zstd.SpeedDefault}, enc: enc}
}

// Encode compresses src into dst; EncodeAll may be called concurrently.
func (c *segmentCodec) Encode(dst, src []byte) ([]byte, error) {
	return c.enc.EncodeAll(src, dst[:0]), nil
}

// codec is shared by every segment a process writes.
var codec = newSegmentCodec()
