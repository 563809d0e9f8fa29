package rules

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReaderBoundsFileSize: a rule file over MaxFileSize is an error naming
// the file and the limit, whether it was that large when listed or not; a
// file of exactly the limit is read.
func TestReaderBoundsFileSize(t *testing.T) {
	dir := t.TempDir()
	src := ruleSet("v1", "allow")
	exact := writeFile(t, dir, "exact.yaml", src)
	rd := Reader{MaxFileSize: int64(len(src))}
	if _, err := rd.Load(context.Background(), exact); err != nil {
		t.Errorf("a file of exactly MaxFileSize: %v", err)
	}
	big := writeFile(t, dir, "big.yaml", src+"# one more byte\n")
	_, err := rd.Load(context.Background(), big)
	if err == nil || !strings.Contains(err.Error(), "big.yaml is larger than") || !strings.Contains(err.Error(), "the most a rule file may hold") {
		t.Errorf("a file over MaxFileSize: %v, want an error naming it and the limit", err)
	}
	// The default is 64 MiB: a sparse file just over it is refused without
	// being read.
	huge := filepath.Join(t.TempDir(), "huge.yaml")
	f, err := os.Create(huge)
	if err != nil {
		t.Fatal(err)
	}
	if err := f.Truncate(DefaultMaxFileSize + 1); err != nil {
		t.Fatal(err)
	}
	f.Close()
	if _, err := Load(huge); err == nil || !strings.Contains(err.Error(), "larger than 64 MiB") {
		t.Errorf("a file over the default: %v, want larger than 64 MiB", err)
	}
}

// TestReaderFollowsLinksToRegularFiles: a link to a regular file, as in a
// ConfigMap mount, is read; a link to a device is not, whether it is the
// rule path or an entry of the rule directory.
func TestReaderFollowsLinksToRegularFiles(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skipf("no /dev/zero: %v", err)
	}
	dir := t.TempDir()
	target := writeFile(t, dir, "data/rules.yaml", ruleSet("v1", "allow"))
	link := filepath.Join(dir, "rules.yaml")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	zero := filepath.Join(dir, "zero.yaml")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}
	var warned []Diagnostic
	set, err := Reader{Warn: func(d Diagnostic) { warned = append(warned, d) }}.Load(context.Background(), dir)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Files) != 1 || set.Files[0] != link {
		t.Errorf("files %v, want only %s", set.Files, link)
	}
	if len(warned) != 1 || warned[0].Pos.File != zero || !strings.Contains(warned[0].Msg, "skipped: a character device, not a regular file") {
		t.Errorf("warnings %v, want one skipping %s as a character device", warned, zero)
	}
	if _, err := Load(zero); err == nil || !strings.Contains(err.Error(), "zero.yaml is a character device, not a regular file") {
		t.Errorf("Load(link to /dev/zero) = %v, want an error saying it is not a regular file", err)
	}
}

// TestReaderStopsWithItsContext: a done context stops the read with its
// error, before the files are read or between two chunks of one.
func TestReaderStopsWithItsContext(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, dir, "a.yaml", ruleSet("v1", "allow"))
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := (Reader{}).ReadSources(ctx, dir); !errors.Is(err, context.Canceled) {
		t.Errorf("ReadSources with a cancelled context = %v, want context.Canceled", err)
	}

	// A file of three chunks, and a context done once the first is read.
	writeFile(t, dir, "a.yaml", ruleSet("v1", "allow")+"#"+strings.Repeat("x", 3*readChunk)+"\n")
	ctx = &doneAfter{Context: context.Background(), n: 3}
	if _, err := (Reader{}).ReadSources(ctx, dir); !errors.Is(err, context.Canceled) {
		t.Errorf("ReadSources with a context done after the first chunk = %v, want context.Canceled", err)
	}
}

// doneAfter is a context whose Err is nil n times, then context.Canceled.
type doneAfter struct {
	context.Context
	n int
}

func (c *doneAfter) Err() error {
	if c.n > 0 {
		c.n--
		return nil
	}
	return context.Canceled
}
