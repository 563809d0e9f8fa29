//go:build linux || darwin

package rules

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// TestReloaderStatusDoesNotWaitForAReload: Status answers while a reload is
// under way (here, stuck reading a FIFO that nobody writes yet), since
// /readyz, /v1/rules and the metrics call it.
func TestReloaderStatusDoesNotWaitForAReload(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "rules.yaml", ruleSet("v1", "allow"))
	live, r, _ := newReloader(t, path, ReloaderOptions{})
	before := r.Status()
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	type result struct {
		swapped bool
		err     error
	}
	reloaded := make(chan result, 1)
	go func() {
		swapped, err := r.Reload()
		reloaded <- result{swapped, err}
	}()
	// Opening the FIFO without blocking succeeds only once the reload has
	// it open for reading, that is, once the reload is under way.
	var w *os.File
	waitFor(t, "the reload to open the rule file", func() bool {
		f, err := os.OpenFile(path, os.O_WRONLY|syscall.O_NONBLOCK, 0)
		if errors.Is(err, syscall.ENXIO) {
			return false
		}
		if err != nil {
			t.Fatal(err)
		}
		w = f
		return true
	})

	got := make(chan Status, 1)
	go func() { got <- r.Status() }()
	blocked := false
	select {
	case st := <-got:
		if st.Version != before.Version || st.Generation != 1 || st.LastError != "" {
			t.Errorf("Status during the reload: %+v, want the served set's, %+v", st, before)
		}
	case <-time.After(reloadDeadline):
		t.Errorf("Status did not return within %v while a reload was reading the rule files", reloadDeadline)
		blocked = true
	}

	if _, err := w.WriteString(ruleSet("v2", "deny")); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if res := <-reloaded; !res.swapped || res.err != nil {
		t.Fatalf("Reload() = %v, %v; want true, nil", res.swapped, res.err)
	}
	if blocked {
		<-got
	}
	checkServing(t, live, r, []string{filepath.Join(dir, "rules.yaml")})
	if st := r.Status(); st.Generation != 2 || st.Reloads != 1 {
		t.Errorf("after the reload: generation %d, %d reloads; want 2, 1", st.Generation, st.Reloads)
	}
}
