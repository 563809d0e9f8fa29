package audit

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
)

// The write-ahead log is a directory of segment files named after the
// sequence number of their first record ("00000000000000000001.wal").
// Each record is one frame:
//
//	uint32 length of payload, big endian
//	uint32 CRC-32C of payload
//	payload: the record's canonical encoding
//
// A frame is written with one write(2) before the decision it records is
// returned, so a killed process leaves every returned decision in the
// kernel's page cache and thus in the file. A crash mid-write leaves at most
// one torn frame at the tail, which recovery cuts off: its decision was
// never returned.

const frameHeader = 8

var crcTable = crc32.MakeTable(crc32.Castagnoli)

func segmentName(firstSeq uint64) string { return fmt.Sprintf("%020d.wal", firstSeq) }

// segments lists the segment files of dir by first sequence number.
func segments(dir string) ([]uint64, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []uint64
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".wal")
		if !ok {
			continue
		}
		n, err := strconv.ParseUint(name, 10, 64)
		if err != nil {
			continue
		}
		out = append(out, n)
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return out, nil
}

func appendFrame(b []byte, payload []byte) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(payload)))
	b = binary.BigEndian.AppendUint32(b, crc32.Checksum(payload, crcTable))
	return append(b, payload...)
}

const maxFrame = 1 << 24

// frameReader reads frames from a segment file.
type frameReader struct {
	r   *bufio.Reader
	off int64 // offset of the next frame
	buf []byte
}

var errTorn = errors.New("torn frame")

// next returns the next frame's payload (valid until the next call), io.EOF
// at a clean end, or errTorn for an incomplete or corrupt frame.
func (fr *frameReader) next() ([]byte, error) {
	var h [frameHeader]byte
	n, err := io.ReadFull(fr.r, h[:])
	if err == io.EOF {
		return nil, io.EOF
	}
	if err != nil || n < frameHeader {
		return nil, errTorn
	}
	size := binary.BigEndian.Uint32(h[:4])
	if size == 0 || size > maxFrame {
		return nil, errTorn
	}
	if cap(fr.buf) < int(size) {
		fr.buf = make([]byte, size)
	}
	p := fr.buf[:size]
	if _, err := io.ReadFull(fr.r, p); err != nil {
		return nil, errTorn
	}
	if crc32.Checksum(p, crcTable) != binary.BigEndian.Uint32(h[4:]) {
		return nil, errTorn
	}
	fr.off += frameHeader + int64(size)
	return p, nil
}

// recoverSegment reads a segment, returns its last record and the offset
// after the last whole frame, and cuts off a torn tail.
func recoverSegment(path string) (last Record, count int, err error) {
	last, count, _, err = recoverSegmentFrame(path)
	return last, count, err
}

// recoverSegmentFrame is recoverSegment, also returning the last record's
// frame.
func recoverSegmentFrame(path string) (last Record, count int, frame []byte, err error) {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return last, 0, nil, err
	}
	defer f.Close()
	fr := &frameReader{r: bufio.NewReaderSize(f, 1<<16)}
	for {
		p, err := fr.next()
		if err == io.EOF {
			return last, count, frame, nil
		}
		if err != nil {
			rest, rerr := readFrom(f, fr.off)
			if rerr != nil {
				return last, count, nil, fmt.Errorf("read %s: %w", path, rerr)
			}
			if !tornTail(rest) {
				// Not what a crash leaves: cutting here would throw away
				// the acknowledged records after the bad frame.
				return last, count, nil, fmt.Errorf("%s is corrupt at offset %d, after record %d, with %d bytes after it: keep a copy and move the write-ahead log directory aside to start a new chain",
					path, fr.off, last.Seq, len(rest))
			}
			// A torn tail: the process died inside the write of a decision
			// that was therefore never returned.
			if terr := f.Truncate(fr.off); terr != nil {
				return last, count, nil, fmt.Errorf("truncate torn tail of %s: %w", path, terr)
			}
			return last, count, frame, nil
		}
		rec, derr := decodeCanonical(p)
		if derr != nil {
			return last, count, nil, fmt.Errorf("%s at offset %d: %w", filepath.Base(path), fr.off, derr)
		}
		last = rec
		frame = appendFrame(frame[:0], p)
		count++
	}
}

// readFrom returns the bytes of f from off to its end.
func readFrom(f *os.File, off int64) ([]byte, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	b := make([]byte, max(0, st.Size()-off))
	_, err = f.ReadAt(b, off)
	if err == io.EOF {
		err = nil
	}
	return b, err
}

// tornTail reports whether rest, a segment from its first unreadable frame
// on, is what a crash can leave at the end of the log: a last frame cut
// short (the process died inside write(2)) or not all on disk, or zeros a
// file system filled in after a power loss. Anything else is corruption
// inside the log.
func tornTail(rest []byte) bool {
	if len(rest) < frameHeader {
		return true
	}
	after := rest
	if size := int(binary.BigEndian.Uint32(rest[:4])); size > 0 && size <= maxFrame {
		if frameHeader+size >= len(rest) {
			return true // the last frame
		}
		after = rest[frameHeader+size:]
	}
	for _, c := range after {
		if c != 0 {
			return false
		}
	}
	return true
}

// LogWriter returns the id of the writer whose chain the write-ahead log
// in dir holds, or "" when dir holds no log.
func LogWriter(dir string) (string, error) {
	b, err := os.ReadFile(filepath.Join(dir, writerIDFile))
	if errors.Is(err, os.ErrNotExist) {
		return "", nil
	}
	if err != nil {
		return "", fmt.Errorf("read write-ahead log: %w", err)
	}
	return strings.TrimSpace(string(b)), nil
}

// LogInUse reports whether a running writer holds the write-ahead log in
// dir (its lock is taken).
func LogInUse(dir string) bool {
	f, err := os.Open(filepath.Join(dir, "lock"))
	if err != nil {
		return false
	}
	defer f.Close()
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_SH|syscall.LOCK_NB); err != nil {
		return true
	}
	_ = syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
	return false
}

// ReadLog calls fn, in sequence order, with every record above after in
// the write-ahead log directory dir: the newest records of a writer,
// which no sink may have yet, for a reader in another process (a query of
// the Parquet log). It takes no lock and changes nothing. A frame cut
// short at the end of the last segment is a write in progress and ends
// the read; a segment removed while it reads was released because every
// sink had stored its records, and is skipped. A directory that does not
// exist holds no records.
func ReadLog(dir string, after uint64, fn func(*Record) error) error {
	segs, err := segments(dir)
	if errors.Is(err, os.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read write-ahead log: %w", err)
	}
	start := 0
	for i, first := range segs {
		if first <= after+1 {
			start = i
		}
	}
	in := interner{}
	for i := start; i < len(segs); i++ {
		path := filepath.Join(dir, segmentName(segs[i]))
		f, err := os.Open(path)
		if errors.Is(err, os.ErrNotExist) {
			continue
		}
		if err != nil {
			return fmt.Errorf("read write-ahead log: %w", err)
		}
		fr := &frameReader{r: bufio.NewReaderSize(f, 1<<16)}
		for {
			p, err := fr.next()
			if err == io.EOF {
				break
			}
			if err == errTorn {
				if i == len(segs)-1 {
					break // the write of the newest record, under way
				}
				f.Close()
				return fmt.Errorf("read write-ahead log: %s is unreadable at offset %d", path, fr.off)
			}
			rec, err := decodeInterned(p, in)
			if err != nil {
				f.Close()
				return fmt.Errorf("read write-ahead log: %s at offset %d: %w", path, fr.off, err)
			}
			if rec.Seq <= after {
				continue
			}
			if err := fn(&rec); err != nil {
				f.Close()
				return err
			}
		}
		f.Close()
	}
	return nil
}
