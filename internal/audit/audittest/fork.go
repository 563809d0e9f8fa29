package audittest

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// ForkStore is what Fork needs of a store: a sink for each of two writers
// whose write-ahead log is in dir, and a reader of what they stored.
type ForkStore struct {
	Sink   func(t *testing.T, walDir string) audit.Sink
	Reader func(t *testing.T) audit.Store
}

// Fork tests a store against a copied data directory: a writer records
// and stops, its write-ahead log is copied, and the original and the copy
// then both record into the store. No record may be lost (the store holds
// every request of both), the chains must verify, and the fork must be
// reported: one writer continues as a new one, counted in Stats.Forks.
// When ahead is set, the original stores records beyond the copy before
// the copy starts (the store is then ahead of the copy's log).
func Fork(t *testing.T, s ForkStore, ahead bool) {
	root := t.TempDir()
	dirA, dirB := filepath.Join(root, "a", "wal"), filepath.Join(root, "b", "wal")
	opts := func(dir string) audit.Options {
		return audit.Options{Dir: dir, Linger: -1, SyncInterval: 5 * time.Millisecond, BatchSize: 7}
	}
	open := func(dir string) *audit.Writer {
		w, err := audit.Open(opts(dir), s.Sink(t, dir))
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	closeW := func(w *audit.Writer) {
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		if err := w.Close(ctx); err != nil {
			t.Fatal(err)
		}
	}
	want := map[string]bool{}
	rec := func(w *audit.Writer, name string, from, n int) {
		for i := from; i < from+n; i++ {
			r := Sample(i)
			r.RequestID = fmt.Sprintf("%s-%d", name, i)
			if err := w.Record(context.Background(), []audit.Record{r}); err != nil {
				t.Error(err)
				return
			}
		}
	}
	a := open(dirA)
	id := a.ID()
	rec(a, "before", 0, 20)
	for i := range 20 {
		want[fmt.Sprintf("before-%d", i)] = true
	}
	closeW(a)
	copyDir(t, dirA, dirB)

	a = open(dirA)
	if ahead {
		rec(a, "a", 100, 10)
		WaitUntil(t, "the original stores records beyond the copy", func() bool { return a.Stats().Pending == 0 })
	}
	b := open(dirB)
	var wg sync.WaitGroup
	for _, x := range []struct {
		w    *audit.Writer
		name string
	}{{a, "a"}, {b, "b"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rec(x.w, x.name, 0, 50)
		}()
	}
	wg.Wait()
	for i := range 50 {
		want[fmt.Sprintf("a-%d", i)], want[fmt.Sprintf("b-%d", i)] = true, true
	}
	if ahead {
		for i := 100; i < 110; i++ {
			want[fmt.Sprintf("a-%d", i)] = true
		}
	}
	// Every record reaches the store, under whichever chain.
	WaitUntil(t, "both writers store everything", func() bool {
		return a.Stats().Pending == 0 && b.Stats().Pending == 0
	})
	forks := a.Stats().Forks + b.Stats().Forks
	ids := []string{a.ID(), b.ID()}
	closeW(a)
	closeW(b)
	if forks == 0 {
		t.Error("neither writer reported the fork (Stats.Forks 0)")
	}
	if ids[0] == ids[1] {
		t.Errorf("both writers still write chain %s", ids[0])
	}
	if ids[0] != id && ids[1] != id {
		t.Errorf("neither writer kept the original chain %s: %v", id, ids)
	}

	st := s.Reader(t)
	got := map[string]int{}
	if _, err := st.Query(context.Background(), audit.Filter{}, func(r *audit.Record) error {
		got[r.RequestID]++
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	for rid := range want {
		if got[rid] == 0 {
			t.Errorf("record %s was lost", rid)
		}
	}
	if len(got) != len(want) {
		t.Errorf("the store holds %d requests, want %d", len(got), len(want))
	}
	v, err := audit.Verify(context.Background(), st, audit.VerifyOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if !v.OK() {
		t.Errorf("the chains do not verify: %v", v.Breaks)
	}
}

// copyDir copies the regular files of src into dst, as a volume clone
// would.
func copyDir(t *testing.T, src, dst string) {
	t.Helper()
	err := filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if d.IsDir() {
			return os.MkdirAll(filepath.Join(dst, rel), 0o750)
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		return os.WriteFile(filepath.Join(dst, rel), b, 0o640)
	})
	if err != nil {
		t.Fatal(err)
	}
}
