package audit

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
)

// segmentLog is the write-ahead log on disk: the segment files of one
// directory (frames as wal.go describes them), appended to in whole
// frames, rotated every perSegment records, fsynced in the background, and
// removed once every sink has stored their records.
//
// Its lock guards the bookkeeping and covers the one write(2) of an
// append, so that a failed write is cut back before the next one starts.
// It is never held across an fsync: sync notes under the lock what it must
// fsync and fsyncs outside it, so that a slow disk can delay the sinks but
// never a Check. For the same reason a rotation, which happens on the
// Check path, does not fsync the segment it closes: it hands it to the
// next sync and asks for that sync at once.
//
// synced is how far the sinks may read: every record up to it is fsynced,
// and so is the directory entry of its segment, so that no store can ever
// hold a record a power loss could take from the log (after which the
// writer would reuse its sequence number).
type segmentLog struct {
	dir        string
	perSegment int
	kick       chan struct{} // a sync is wanted now: a segment was closed
	fsync      func(*os.File) error
	synced     atomic.Uint64
	notify     func() // called, with no lock held, when synced has moved
	recovered  uint64 // the last sequence number recovery found; set once by openSegmentLog

	mu        sync.Mutex
	head      *os.File
	headLeft  int        // records the head segment still takes
	headSize  int64      // bytes of whole frames in the head segment
	segs      []uint64   // first sequence numbers of the segment files, oldest first
	last      uint64     // the last sequence number written
	stored    uint64     // how far every sink has stored, as release last heard
	lastFrame []byte     // the frame of record last, for compact
	sealed    []*os.File // closed-off segments still to be fsynced (then closed) by sync
	created   uint64     // segment files created so far,
	dirSynced uint64     // and as of the last fsync of the directory
}

// openSegmentLog opens the write-ahead log in dir, which belongs to the
// writer id, and recovers it after a crash: it cuts a torn tail, drops
// empty segments, opens the head segment for appending and fsyncs what it
// found. It returns the last record of the log (zero when it is empty).
func openSegmentLog(dir string, perSegment int, id string, fsync func(*os.File) error, notify func()) (*segmentLog, Record, error) {
	l := &segmentLog{dir: dir, perSegment: perSegment, kick: make(chan struct{}, 1), fsync: fsync, notify: notify}
	last, err := l.recover(id)
	if err != nil {
		return nil, Record{}, err
	}
	return l, last, nil
}

func (l *segmentLog) path(first uint64) string { return filepath.Join(l.dir, segmentName(first)) }

func (l *segmentLog) recover(id string) (Record, error) {
	var last Record
	segs, err := segments(l.dir)
	if err != nil {
		return last, fmt.Errorf("audit: %w", err)
	}
	// A new head compact was writing when the process died.
	if tmps, _ := filepath.Glob(filepath.Join(l.dir, "*.wal.tmp")); len(tmps) > 0 {
		for _, t := range tmps {
			_ = os.Remove(t)
		}
	}
	// Empty segments (made just before a crash, or left by a failed
	// write) hold nothing; a reader looking for a record by segment name
	// would stop in one of them.
	l.segs = segs[:0:0]
	for _, first := range segs {
		if st, err := os.Stat(l.path(first)); err == nil && st.Size() == 0 {
			_ = os.Remove(l.path(first))
			continue
		}
		l.segs = append(l.segs, first)
	}
	segs = append([]uint64(nil), l.segs...)
	for i := len(segs) - 1; i >= 0; i-- {
		rec, n, frame, err := recoverSegmentFrame(l.path(segs[i]))
		if err != nil {
			return last, fmt.Errorf("audit: recover write-ahead log: %w", err)
		}
		if n == 0 {
			// Only a torn frame: as empty as an empty file.
			_ = os.Remove(l.path(segs[i]))
			l.segs = append(l.segs[:i:i], l.segs[i+1:]...)
			continue
		}
		if rec.Writer != id {
			return last, fmt.Errorf("audit: write-ahead log in %s belongs to writer %q, not %q", l.dir, rec.Writer, id)
		}
		last, l.last, l.lastFrame = rec, rec.Seq, frame
		if i == len(segs)-1 && n < l.perSegment {
			l.headLeft = l.perSegment - n
			l.head, err = os.OpenFile(l.path(segs[i]), os.O_WRONLY|os.O_APPEND, 0)
			if err != nil {
				return last, fmt.Errorf("audit: %w", err)
			}
			st, err := l.head.Stat()
			if err != nil {
				return last, fmt.Errorf("audit: %w", err)
			}
			l.headSize = st.Size()
		}
		break
	}
	// Drop empty trailing segments: they hold nothing and would confuse
	// the next segment's name.
	for len(l.segs) > 0 && l.segs[len(l.segs)-1] > l.last {
		_ = os.Remove(l.path(l.segs[len(l.segs)-1]))
		l.segs = l.segs[:len(l.segs)-1]
	}
	if l.head == nil {
		if err := l.rotateLocked(); err != nil {
			return last, fmt.Errorf("audit: %w", err)
		}
	}
	// What recovery read may be in the page cache only, if the process
	// died before its last fsync: make it durable before any sink sees
	// it, or a power loss now could leave a sink ahead of the log.
	for _, first := range l.segs {
		if err := l.syncPath(l.path(first)); err != nil {
			return last, fmt.Errorf("audit: fsync the write-ahead log: %w", err)
		}
	}
	if err := l.syncPath(l.dir); err != nil {
		return last, fmt.Errorf("audit: fsync the write-ahead log directory: %w", err)
	}
	l.dirSynced = l.created
	l.recovered = l.last
	l.synced.Store(l.last)
	return last, nil
}

// syncPath fsyncs the file or directory at path.
func (l *segmentLog) syncPath(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return l.fsync(f)
}

// append writes frames, the n records up to sequence number last, to the
// head segment with one write(2), after starting a new segment if the head
// has no room for them. The caller serializes appends (the Writer holds
// its chain lock), so frames reach the log in sequence order.
func (l *segmentLog) append(frames []byte, n int, last uint64, lastFrame []byte) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.head == nil {
		return errors.New("write-ahead log closed")
	}
	// A head every sink has stored is rolled once it is big enough to
	// matter, so that release can free its disk: a quiet log would
	// otherwise keep up to a whole segment that no sink needs.
	stale := l.stored >= l.last && l.headSize >= rollBytes
	if l.headLeft < n || stale {
		if err := l.rotateLocked(); err != nil {
			return err
		}
	}
	if _, err := l.head.Write(frames); err != nil {
		// A short write may have left whole frames of records that were
		// never acknowledged: cut the segment back to its last good frame.
		// Only if that fails, start a fresh segment (the old one then
		// ends in frames that recovery would take for records).
		if terr := l.head.Truncate(l.headSize); terr != nil {
			_ = l.rotateLocked()
		}
		return fmt.Errorf("write-ahead log: %w", err)
	}
	l.last = last
	l.headLeft -= n
	l.headSize += int64(len(frames))
	l.lastFrame = append(l.lastFrame[:0], lastFrame...)
	return nil
}

// rollBytes is how big a head segment whose records every sink has
// stored may grow before the next append starts a new one.
const rollBytes = 1 << 20

// rotateLocked starts a new head segment for the records after l.last. The
// old head goes to sync, which the rotation asks for: fsyncing it here
// would put an fsync on the Check path, under the lock.
func (l *segmentLog) rotateLocked() error {
	first := l.last + 1
	f, err := os.OpenFile(l.path(first), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o640)
	if err != nil {
		return fmt.Errorf("new write-ahead segment: %w", err)
	}
	if l.head != nil {
		l.sealed = append(l.sealed, l.head)
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
	l.head, l.headLeft, l.headSize = f, l.perSegment, 0
	l.created++
	if len(l.segs) == 0 || l.segs[len(l.segs)-1] != first {
		l.segs = append(l.segs, first)
	}
	return nil
}

// sync fsyncs every record written so far, with the directory when a
// segment was created since its last fsync, and then publishes how far
// that is. The fsyncs run outside the lock. One goroutine syncs at a time:
// the Writer's sync loop, and Close once that loop has stopped.
func (l *segmentLog) sync() error {
	l.mu.Lock()
	sealed := l.sealed[:len(l.sealed):len(l.sealed)]
	head, last, created := l.head, l.last, l.created
	dirty := created != l.dirSynced
	l.mu.Unlock()
	if len(sealed) == 0 && !dirty && last <= l.synced.Load() {
		return nil
	}
	for _, f := range sealed {
		if err := l.fsync(f); err != nil {
			return fmt.Errorf("fsync %s: %w", f.Name(), err)
		}
	}
	if dirty {
		if err := l.syncPath(l.dir); err != nil {
			return fmt.Errorf("fsync %s: %w", l.dir, err)
		}
	}
	// A rotation since the lock was released made head a sealed segment;
	// it is still open, since only sync closes sealed segments.
	if head != nil {
		if err := l.fsync(head); err != nil {
			return fmt.Errorf("fsync %s: %w", head.Name(), err)
		}
	}
	l.mu.Lock()
	l.sealed = append([]*os.File(nil), l.sealed[len(sealed):]...)
	l.dirSynced = created
	l.mu.Unlock()
	for _, f := range sealed {
		_ = f.Close()
	}
	l.publish(last)
	return nil
}

// publish records that every record up to seq is fsynced.
func (l *segmentLog) publish(seq uint64) {
	for {
		old := l.synced.Load()
		if seq <= old {
			return
		}
		if l.synced.CompareAndSwap(old, seq) {
			break
		}
	}
	if l.notify != nil {
		l.notify()
	}
}

// segments returns the first sequence numbers of the segment files.
func (l *segmentLog) segments() []uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]uint64(nil), l.segs...)
}

// oldest returns the first sequence number still in the log.
func (l *segmentLog) oldest() uint64 {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.segs[0]
}

// release removes the segments whose records are all at or below stored,
// which every sink has; the head stays, and so does the segment holding
// the newest record (while the head after it is empty), so that a restart
// finds where the chain stands. The files are removed outside the lock.
func (l *segmentLog) release(stored uint64) {
	var done []uint64
	l.mu.Lock()
	l.stored = max(l.stored, stored)
	// Segment i holds records segs[i] .. segs[i+1]-1.
	for len(l.segs) > 1 && l.segs[1]-1 <= stored && l.segs[1] <= l.last {
		done = append(done, l.segs[0])
		l.segs = l.segs[1:]
	}
	l.mu.Unlock()
	for _, first := range done {
		_ = os.Remove(l.path(first))
	}
}

// compact frees the disk of a head segment whose records every sink has
// stored, when no append came to roll it: it starts a new head holding a
// copy of the newest record alone (so that a restart finds where the
// chain stands), written and fsynced outside the lock, and releases the
// old head. A full disk needs room for that one small file only.
func (l *segmentLog) compact() {
	l.mu.Lock()
	n := len(l.segs)
	ok := l.head != nil && n > 0 && l.stored >= l.last && l.headSize >= rollBytes &&
		l.segs[n-1] < l.last && len(l.lastFrame) > 0
	last, frame := l.last, append([]byte(nil), l.lastFrame...)
	l.mu.Unlock()
	if !ok {
		return
	}
	final := l.path(last)
	tmp := final + ".tmp"
	err := func() error {
		f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
		if err != nil {
			return err
		}
		defer f.Close()
		if _, err := f.Write(frame); err != nil {
			return err
		}
		return l.fsync(f)
	}()
	if err != nil {
		_ = os.Remove(tmp)
		return // tried again after the next batch stored
	}
	l.mu.Lock()
	if l.last != last || l.head == nil {
		l.mu.Unlock()
		_ = os.Remove(tmp) // an append came first, and rolls the head itself
		return
	}
	head, err := os.OpenFile(tmp, os.O_WRONLY|os.O_APPEND, 0)
	if err == nil {
		err = os.Rename(tmp, final)
	}
	if err != nil {
		l.mu.Unlock()
		if head != nil {
			head.Close()
		}
		_ = os.Remove(tmp)
		return
	}
	l.sealed = append(l.sealed, l.head)
	l.head, l.headLeft, l.headSize = head, l.perSegment-1, int64(len(frame))
	l.segs = append(l.segs, last)
	l.created++
	select {
	case l.kick <- struct{}{}:
	default:
	}
	stored := l.stored
	l.mu.Unlock()
	l.release(stored)
}

// close fsyncs and closes the segment files; the log takes no more
// appends. Like sync, it must not run beside another sync.
func (l *segmentLog) close() error {
	l.mu.Lock()
	files := append(l.sealed, l.head)
	l.sealed, l.head = nil, nil
	l.mu.Unlock()
	var err error
	for _, f := range files {
		if f != nil {
			err = errors.Join(err, l.fsync(f), f.Close())
		}
	}
	return err
}
