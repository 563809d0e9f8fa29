package sqlstore

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
)

// faultFixture is an audit writer feeding a SQLite file that a test then
// deletes, replaces or makes read-only.
type faultFixture struct {
	db, wal string
	w       *audit.Writer
	name    string
}

func newFaultFixture(t *testing.T, dir string) *faultFixture {
	t.Helper()
	f := &faultFixture{db: filepath.Join(dir, "d.db"), wal: filepath.Join(t.TempDir(), "wal")}
	st, err := OpenSQLite(context.Background(), f.db)
	if err != nil {
		t.Fatal(err)
	}
	f.name = st.Name()
	f.w, err = audit.Open(audit.Options{Dir: f.wal, SegmentRecords: 10, Linger: -1, SyncInterval: 5 * time.Millisecond}, st)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_ = f.w.Close(ctx)
	})
	return f
}

func (f *faultFixture) record(t *testing.T, from, n int) {
	t.Helper()
	for i := from; i < from+n; i++ {
		r := audittest.Sample(i)
		if err := f.w.Record(context.Background(), []audit.Record{r}); err != nil {
			t.Fatal(err)
		}
	}
}

func (f *faultFixture) stored(t *testing.T) {
	t.Helper()
	audittest.WaitUntil(t, "every record stored", func() bool {
		s := f.w.Stats()
		return s.Pending == 0 && !s.Failing[f.name]
	})
}

// failing waits until the sink is reported failing, and checks that the
// records since the fault are neither taken as stored nor gone from the
// write-ahead log.
func (f *faultFixture) failing(t *testing.T, since uint64, n int) {
	t.Helper()
	audittest.WaitUntil(t, "the sink reported failing", func() bool { return f.w.Stats().Failing[f.name] })
	if p := f.w.Stats().Pending; p != uint64(n) {
		t.Errorf("%d records pending, want the %d since the fault", p, n)
	}
	got := 0
	if err := audit.ReadLog(f.wal, since, func(*audit.Record) error { got++; return nil }); err != nil {
		t.Fatal(err)
	}
	if got != n {
		t.Errorf("the write-ahead log holds %d records since the fault, want %d", got, n)
	}
}

// otherDB makes a SQLite decision log holding another writer's record.
func otherDB(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "other.db")
	st, err := OpenSQLite(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	r := audittest.Sample(1)
	r.Writer, r.Seq, r.Hash = "other", 1, audit.ComputeHash(&r)
	if err := st.Write(context.Background(), []audit.Record{r}); err != nil {
		t.Fatal(err)
	}
	st.Close()
	return path
}

// TestSQLiteDeletedOrReplacedWhileServing: a decision log file deleted,
// or replaced by another (renamed over it, or copied over it in place),
// while the server writes to it must not swallow records: the sink is
// reported failing and the records stay in the write-ahead log.
func TestSQLiteDeletedOrReplacedWhileServing(t *testing.T) {
	for _, fault := range []string{"deleted", "renamed over", "copied over"} {
		t.Run(fault, func(t *testing.T) {
			f := newFaultFixture(t, t.TempDir())
			f.record(t, 0, 20)
			f.stored(t)
			switch fault {
			case "deleted":
				for _, sfx := range []string{"", "-wal", "-shm"} {
					if err := os.Remove(f.db + sfx); err != nil && !os.IsNotExist(err) {
						t.Fatal(err)
					}
				}
			case "renamed over":
				if err := os.Rename(otherDB(t), f.db); err != nil {
					t.Fatal(err)
				}
			case "copied over":
				b, err := os.ReadFile(otherDB(t))
				if err != nil {
					t.Fatal(err)
				}
				if err := os.WriteFile(f.db, b, 0o640); err != nil {
					t.Fatal(err)
				}
			}
			f.record(t, 20, 20)
			f.failing(t, 20, 20)
		})
	}
}

// TestSQLiteFullStoreRecovers: a file system that fills up under the
// decision log fails its writes, and once there is room again the sink
// stores everything without a restart (as a store that was read-only
// does: a failed write opens the file again). It mounts a small tmpfs,
// and is skipped where mounting is not allowed. (A read-only remount is
// refused while the file is open for writing, so the test fills the disk
// instead.)
func TestSQLiteFullStoreRecovers(t *testing.T) {
	mnt := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", mnt).CombinedOutput(); err != nil {
		t.Skipf("cannot mount a tmpfs here (needs root): %v: %s", err, out)
	}
	t.Cleanup(func() { _ = exec.Command("umount", "-l", mnt).Run() })
	f := newFaultFixture(t, mnt)
	f.record(t, 0, 20)
	f.stored(t)
	ballast := filepath.Join(mnt, "ballast")
	fill(t, ballast)
	f.record(t, 20, 400)
	f.failing(t, 20, 400)
	if err := os.Remove(ballast); err != nil {
		t.Fatal(err)
	}
	f.stored(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := f.w.Close(ctx); err != nil {
		t.Fatal(err)
	}
	st, err := OpenSQLite(context.Background(), f.db)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n := 0
	if _, err := st.Query(context.Background(), audit.Filter{}, func(*audit.Record) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	if n != 420 {
		t.Errorf("the store holds %d records, want 420", n)
	}
}

// fill writes path until its file system is full.
func fill(t *testing.T, path string) {
	t.Helper()
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 64<<10)
	for {
		if _, err := f.Write(buf); err != nil {
			return
		}
	}
}
