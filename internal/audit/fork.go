package audit

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// ForkError is returned by a Sink's Write (or a Buffered sink's Flush)
// when the store already holds a different record at the writer and
// sequence number of one being written: another process writes the same
// chain, from a copy of this write-ahead log (a cloned volume, a restored
// snapshot). Storing the records would drop them as duplicates.
type ForkError struct {
	Writer string
	Seq    uint64
}

func (e *ForkError) Error() string {
	return fmt.Sprintf("the store holds a different record %d of writer %s: another process writes this chain (a copied data directory)", e.Seq, e.Writer)
}

// A fork is resolved by the writer that finds it: it continues as a new
// writer, with a chain of its own, and chains again under it the records
// of its log from the fork on, which no store holds as its own. The other
// process keeps the old chain.
//
// The new chain is staged in forkDir (its segment, then its id in
// forkIDFile, then its writer-id file, last) and committed by renaming
// that writer-id file over the log's. Open finishes a fork a crash
// interrupted once its staging was complete, and discards a partial one.
const (
	forkDir    = "fork"
	forkIDFile = "id"
)

// forkSegment is the one segment file of a staged fork: the records
// chained again, from sequence number 1.
var forkSegment = segmentName(1)

// forkAt is where a feeder found a fork: writer's chain from seq on.
type forkAt struct {
	writer string
	seq    uint64
}

// requestFork asks the writer's fork loop to resolve a fork of writer's
// chain at seq.
func (w *Writer) requestFork(writer string, seq uint64) {
	select {
	case w.forkReq <- forkAt{writer, seq}:
	default: // one is pending; the feeders all start again after it
	}
}

// forkLoop resolves the forks the feeders find, until Close has waited
// for the sinks.
func (w *Writer) forkLoop() {
	defer close(w.forkDone)
	for {
		select {
		case <-w.forkStop:
			return
		case at := <-w.forkReq:
			w.fork(at)
		}
	}
}

// fork makes this writer a new one: it stops the feeders and the sync
// loop, chains the records from seq on again under a new writer id,
// replaces the log with them, and restarts the feeders, which ask each
// sink for the new chain's position.
func (w *Writer) fork(at forkAt) {
	w.forkMu.Lock()
	defer w.forkMu.Unlock()
	w.stopFeeding()
	defer w.startFeeding()
	w.mu.Lock()
	defer w.mu.Unlock()
	old, oldSeq, seq := w.id, w.seq, at.seq
	if at.writer != old || seq == 0 || seq > oldSeq+1 {
		return // found by a feeder of a chain resolved since
	}
	var recs []Record
	err := ReadLog(w.opts.Dir, seq-1, func(r *Record) error {
		recs = append(recs, *r)
		return nil
	})
	if err != nil {
		w.opts.Logger.Error("decision log: a fork of the chain was found, and the write-ahead log cannot be read to resolve it; retrying", "writer", old, "seq", seq, "error", err.Error())
		return
	}
	id := newWriterID()
	frames := chainAgain(recs, id)
	if err := stageFork(w.opts.Dir, id, frames, w.opts.fsync); err != nil {
		w.opts.Logger.Error("decision log: a fork of the chain was found and cannot be resolved yet; retrying", "writer", old, "seq", seq, "error", err.Error())
		return
	}
	if err := w.log.close(); err != nil {
		w.opts.Logger.Warn("decision log: closing the write-ahead log for a fork", "error", err.Error())
	}
	log, last, err := func() (*segmentLog, Record, error) {
		if err := commitFork(w.opts.Dir); err != nil {
			return nil, Record{}, err
		}
		return openSegmentLog(w.opts.Dir, w.opts.SegmentRecords, id, w.opts.fsync, w.wakeFeeders)
	}()
	if err != nil {
		// The log is closed and the new one cannot be opened: nothing can
		// be recorded; a restart finishes the fork.
		w.broken.Store(true)
		w.opts.Logger.Error("decision log: a fork of the chain could not be completed; no decision is recorded until a restart", "writer", old, "new_writer", id, "error", err.Error())
		return
	}
	w.log, w.id, w.seq, w.prev = log, id, last.Seq, last.Hash
	w.written.Store(last.Seq)
	w.taken.Add(last.Seq - oldSeq) // admitted records not yet written stay counted
	for _, r := range w.runners {
		r.stored.Store(log.oldest() - 1)
	}
	w.forks.Add(1)
	w.opts.Logger.Error("decision log: another process writes this writer's chain (its data directory was copied); this one continues as a new writer, and its records since the fork are chained again under it",
		"writer", old, "new_writer", id, "fork_seq", seq, "records", len(recs))
}

// chainAgain chains recs as records 1.. of writer id, and returns their
// frames.
func chainAgain(recs []Record, id string) []byte {
	var frames []byte
	var scratch [512]byte
	prev := ""
	for i := range recs {
		r := &recs[i]
		r.Writer, r.Seq, r.PrevHash = id, uint64(i+1), prev
		payload := appendCanonical(scratch[:0], r)
		sum := sha256.Sum256(payload)
		r.Hash = hex.EncodeToString(sum[:])
		prev = r.Hash
		frames = appendFrame(frames, payload)
	}
	return frames
}

// stopFeeding stops the feeders and the sync loop (unless Close stopped
// it); forkMu is held.
func (w *Writer) stopFeeding() {
	if !w.syncStopped {
		close(w.syncStop)
		<-w.syncDone
	}
	for _, r := range w.runners {
		close(r.stop)
		<-r.done
	}
}

// startFeeding starts what stopFeeding stopped; forkMu is held.
func (w *Writer) startFeeding() {
	for _, r := range w.runners {
		r.restart()
		go r.run()
	}
	if !w.syncStopped {
		w.syncStop, w.syncDone = make(chan struct{}), make(chan struct{})
		go w.syncLoop()
	}
	w.wakeFeeders()
}

// newWriterID makes a writer id: the host name (the pod name in
// Kubernetes) and a random suffix, so that two replicas never share a
// chain.
func newWriterID() string {
	host, _ := os.Hostname()
	if host == "" {
		host = "writer"
	}
	var r [4]byte
	_, _ = rand.Read(r[:])
	return host + "-" + hex.EncodeToString(r[:])
}

// stageFork writes the new chain's segment and writer id into dir/fork,
// durably.
func stageFork(dir, id string, frames []byte, fsync func(*os.File) error) error {
	fd := filepath.Join(dir, forkDir)
	if err := os.RemoveAll(fd); err != nil {
		return err
	}
	if err := os.Mkdir(fd, 0o750); err != nil {
		return err
	}
	write := func(name string, b []byte) error {
		f, err := os.OpenFile(filepath.Join(fd, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o640)
		if err != nil {
			return err
		}
		if _, err := f.Write(b); err != nil {
			f.Close()
			return err
		}
		if err := fsync(f); err != nil {
			f.Close()
			return err
		}
		return f.Close()
	}
	if len(frames) > 0 {
		if err := write(forkSegment, frames); err != nil {
			return err
		}
	}
	if err := write(forkIDFile, []byte(id+"\n")); err != nil {
		return err
	}
	if err := syncDir(fd, fsync); err != nil {
		return err
	}
	if err := write(writerIDFile, []byte(id+"\n")); err != nil { // the staging is complete
		return err
	}
	return syncDir(fd, fsync)
}

// commitFork makes a staged fork the log: the new writer id replaces the
// old (the commit), then the old segments are removed and the new one
// moved in. It is also how Open finishes a fork a crash interrupted (or
// discards a partial staging), and does nothing when there is none.
func commitFork(dir string) error {
	fd := filepath.Join(dir, forkDir)
	if _, err := os.Stat(fd); errors.Is(err, os.ErrNotExist) {
		return nil
	}
	fsync := (*os.File).Sync
	fail := func(err error) error { return fmt.Errorf("audit: commit fork: %w", err) }
	id, _ := LogWriter(fd) // fork/writer-id: "" once renamed, or before the staging completed
	if id == "" {
		b, _ := os.ReadFile(filepath.Join(fd, forkIDFile))
		forkID := strings.TrimSpace(string(b))
		if cur, err := LogWriter(dir); err != nil {
			return fail(err)
		} else if forkID == "" || cur != forkID {
			// A partial staging: the log is as it was, and the fork will
			// be found again.
			return os.RemoveAll(fd)
		}
	} else {
		if err := os.Rename(filepath.Join(fd, writerIDFile), filepath.Join(dir, writerIDFile)); err != nil {
			return fail(err)
		}
		if err := syncDir(dir, fsync); err != nil {
			return fail(err)
		}
	}
	// Committed: the old chain's segments go (the other process's log
	// holds them), and the new chain's segment, if any, comes in.
	if _, err := os.Stat(filepath.Join(fd, forkSegment)); err == nil {
		segs, err := segments(dir)
		if err != nil {
			return fail(err)
		}
		for _, first := range segs {
			if err := os.Remove(filepath.Join(dir, segmentName(first))); err != nil {
				return fail(err)
			}
		}
		if err := os.Rename(filepath.Join(fd, forkSegment), filepath.Join(dir, forkSegment)); err != nil {
			return fail(err)
		}
	} else {
		// Moved in already, or no records to chain again: only the old
		// chain's segments, if still there, must go.
		id, err := LogWriter(dir)
		if err != nil {
			return fail(err)
		}
		segs, _ := segments(dir)
		for _, first := range segs {
			path := filepath.Join(dir, segmentName(first))
			if rec, n, err := recoverSegment(path); first != 1 || err != nil || n == 0 || rec.Writer != id {
				_ = os.Remove(path)
			}
		}
	}
	if err := syncDir(dir, fsync); err != nil {
		return fail(err)
	}
	return os.RemoveAll(fd)
}

func syncDir(dir string, fsync func(*os.File) error) error {
	f, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer f.Close()
	return fsync(f)
}
