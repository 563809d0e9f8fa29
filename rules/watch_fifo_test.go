//go:build linux || darwin

package rules

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// TestReloaderStatusDoesNotWaitForAReload: Status answers while a reload is
// under way (here, held inside its read of the rule files), since /readyz,
// /v1/rules and the metrics call it.
func TestReloaderStatusDoesNotWaitForAReload(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "rules.yaml", ruleSet("v1", "allow"))
	live, r, _ := newReloader(t, path, ReloaderOptions{})
	before := r.Status()
	writeFile(t, dir, "rules.yaml", ruleSet("v2", "deny"))
	reading, release := make(chan struct{}), make(chan struct{})
	r.read = func(ctx context.Context, rd Reader, path string) ([]Source, error) {
		close(reading)
		<-release
		return rd.ReadSources(ctx, path)
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
	<-reading

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

	close(release)
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

// reloadWithin runs r.Reload, failing the test unless it returns within
// reloadDeadline: a reload stuck on a file never returns.
func reloadWithin(t *testing.T, r *Reloader) (bool, error) {
	t.Helper()
	type result struct {
		swapped bool
		err     error
	}
	done := make(chan result, 1)
	go func() {
		swapped, err := r.Reload()
		done <- result{swapped, err}
	}()
	select {
	case res := <-done:
		return res.swapped, res.err
	case <-time.After(reloadDeadline):
		// Not t.Fatal: a reload reading /dev/zero would go on eating
		// memory while the other tests run.
		panic(fmt.Sprintf("%s: Reload did not return within %v", t.Name(), reloadDeadline))
	}
}

// TestReloaderSkipsFilesThatAreNotRegular: a named pipe or a link to
// /dev/zero in the rule directory is skipped with a warning, logged once
// however many reloads see it, and the other files are served; a named
// pipe never opened cannot wedge the reload (and then shutdown), and
// /dev/zero, never read, cannot grow the server without end. Once the
// link is removed, reloads go on as before.
func TestReloaderSkipsFilesThatAreNotRegular(t *testing.T) {
	for _, tc := range []struct {
		name string
		make func(t *testing.T, path string)
		kind string
	}{
		{"named_pipe", func(t *testing.T, path string) {
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Skipf("mkfifo: %v", err)
			}
		}, "a named pipe (FIFO)"},
		{"link_to_dev_zero", func(t *testing.T, path string) {
			if _, err := os.Stat("/dev/zero"); err != nil {
				t.Skipf("no /dev/zero: %v", err)
			}
			if err := os.Symlink("/dev/zero", path); err != nil {
				t.Fatal(err)
			}
		}, "a character device"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			good := writeFile(t, dir, "a.yaml", ruleSet("v1", "allow"))
			var logs bytes.Buffer
			var logMu sync.Mutex
			logger := slog.New(slog.NewTextHandler(&lockedWriter{mu: &logMu, w: &logs}, nil))
			live, r, _ := newReloader(t, dir, ReloaderOptions{Logger: logger})
			odd := filepath.Join(dir, "z.yaml")
			tc.make(t, odd)
			writeFile(t, dir, "a.yaml", ruleSet("v2", "deny"))

			for i := range 3 {
				swapped, err := reloadWithin(t, r)
				if err != nil || swapped != (i == 0) {
					t.Fatalf("Reload %d = %v, %v; want %v, nil", i+1, swapped, err, i == 0)
				}
			}
			checkServing(t, live, r, []string{good})
			if d := live.Decide(watchReq); ruleID(d) != "v2" {
				t.Errorf("decided by %q, want v2 from a.yaml", ruleID(d))
			}
			logMu.Lock()
			log := logs.String()
			logMu.Unlock()
			if n := strings.Count(log, "level=WARN msg=\"rule file skipped\""); n != 1 || !strings.Contains(log, odd) || !strings.Contains(log, tc.kind) {
				t.Errorf("%d warnings logged over three reloads, want 1 naming %s and %q:\n%s", n, odd, tc.kind, log)
			}

			if err := os.Remove(odd); err != nil {
				t.Fatal(err)
			}
			writeFile(t, dir, "a.yaml", ruleSet("v3", "allow"))
			if swapped, err := reloadWithin(t, r); !swapped || err != nil {
				t.Fatalf("Reload after removing %s = %v, %v; want true, nil", odd, swapped, err)
			}
			if d := live.Decide(watchReq); ruleID(d) != "v3" {
				t.Errorf("decided by %q, want v3", ruleID(d))
			}
		})
	}
}

// TestReloaderRefusesARulePathThatIsNotRegular: when the rule path itself
// becomes a named pipe, the reload fails at once with an error saying so,
// and the last good set is still served.
func TestReloaderRefusesARulePathThatIsNotRegular(t *testing.T) {
	dir := t.TempDir()
	path := writeFile(t, dir, "rules.yaml", ruleSet("v1", "allow"))
	live, r, _ := newReloader(t, path, ReloaderOptions{})
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	swapped, err := reloadWithin(t, r)
	if swapped || err == nil || !strings.Contains(err.Error(), "is a named pipe (FIFO), not a regular file") {
		t.Fatalf("Reload = %v, %v; want false and an error naming the named pipe", swapped, err)
	}
	if st := r.Status(); !strings.Contains(st.LastError, "named pipe") {
		t.Errorf("Status.LastError %q, want the error", st.LastError)
	}
	if d := live.Decide(watchReq); ruleID(d) != "v1" {
		t.Errorf("decided by %q, want the last good set's v1", ruleID(d))
	}
}
