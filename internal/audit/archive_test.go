package audit_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
)

func TestDirArchive(t *testing.T) {
	audittest.ArchiveConformance(t, audit.DirArchive(t.TempDir()))
}

// failingArchive refuses every version until it is told to take them.
type failingArchive struct {
	audit.DirArchive
	down chan bool
}

func (f *failingArchive) PutRuleSet(ctx context.Context, rs audit.RuleSet) error {
	select {
	case down := <-f.down:
		if down {
			return errors.New("store down")
		}
	default:
		return errors.New("store down")
	}
	return f.DirArchive.PutRuleSet(ctx, rs)
}

// TestArchiverRetriesAStoreThatIsDown: the local copy is written at once,
// the store's when it takes it, and Resume queues what a store missed.
func TestArchiverRetriesAStoreThatIsDown(t *testing.T) {
	dir := t.TempDir()
	st := &failingArchive{DirArchive: audit.DirArchive(filepath.Join(dir, "store")), down: make(chan bool, 1)}
	a := audit.NewArchiver(filepath.Join(dir, "local"), []audit.RuleSetArchive{st}, nil)
	rs := audit.RuleSet{Version: "00000000000000aa", Files: []audit.RuleSetFile{{Name: "a.yaml", Content: "a"}}}
	if err := a.Keep(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	if _, err := audit.DirArchive(filepath.Join(dir, "local")).RuleSet(context.Background(), rs.Version); err != nil {
		t.Fatalf("local copy: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { a.Run(ctx, 10*time.Millisecond); close(done) }()
	time.Sleep(50 * time.Millisecond)
	if a.Pending() != 1 {
		t.Fatalf("Pending = %d while the store is down, want 1", a.Pending())
	}
	if _, err := st.DirArchive.RuleSet(context.Background(), rs.Version); !errors.Is(err, audit.ErrRuleSetNotFound) {
		t.Fatalf("the store has the version while down: %v", err)
	}
	st.down <- false
	audittest.WaitUntil(t, "the version in the store", func() bool { return a.Pending() == 0 })
	cancel()
	<-done
	if got, err := st.DirArchive.RuleSet(context.Background(), rs.Version); err != nil || got.Files[0].Content != "a" {
		t.Fatalf("store copy: %+v, %v", got, err)
	}
	// A new archiver over the same local directory, and a store that
	// missed everything: Resume queues the version again.
	st2 := audit.DirArchive(filepath.Join(dir, "store2"))
	a2 := audit.NewArchiver(filepath.Join(dir, "local"), []audit.RuleSetArchive{st2}, nil)
	if err := a2.Resume(context.Background()); err != nil {
		t.Fatal(err)
	}
	if a2.Pending() != 1 {
		t.Fatalf("Pending after Resume = %d, want 1", a2.Pending())
	}
	if got, err := a2.RuleSet(context.Background(), rs.Version); err != nil || got.Version != rs.Version {
		t.Fatalf("Archiver.RuleSet: %+v, %v", got, err)
	}
}

// TestArchiverDrain: at shutdown Drain says which versions a store still
// lacks, and puts those it now takes.
func TestArchiverDrain(t *testing.T) {
	dir := t.TempDir()
	st := &failingArchive{DirArchive: audit.DirArchive(filepath.Join(dir, "store")), down: make(chan bool, 1)}
	a := audit.NewArchiver(filepath.Join(dir, "local"), []audit.RuleSetArchive{st}, nil)
	rs := audit.RuleSet{Version: "00000000000000bb", Files: []audit.RuleSetFile{{Name: "b.yaml", Content: "b"}}}
	if err := a.Keep(context.Background(), rs); err != nil {
		t.Fatal(err)
	}
	if missing := a.Drain(context.Background()); len(missing) != 1 || missing[0] != rs.Version {
		t.Fatalf("Drain with the store down = %v, want [%s]", missing, rs.Version)
	}
	st.down <- false
	if missing := a.Drain(context.Background()); len(missing) != 0 || a.Pending() != 0 {
		t.Fatalf("Drain with the store up = %v, %d pending; want none", missing, a.Pending())
	}
	if _, err := st.DirArchive.RuleSet(context.Background(), rs.Version); err != nil {
		t.Fatalf("the store after Drain: %v", err)
	}
}
