package parquetlog

import (
	"testing"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
)

// TestRuleSetArchive: the archive is a file per version beside the
// segments, which listing, query and verify leave alone.
func TestRuleSetArchive(t *testing.T) {
	dir := t.TempDir()
	s, err := Open(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	audittest.ArchiveConformance(t, s)
	r, err := OpenExisting(dir, Options{})
	if err != nil {
		t.Fatal(err)
	}
	var _ audit.RuleSetArchive = r
	if _, err := r.RuleSet(t.Context(), "0123456789abcdef"); err != nil {
		t.Errorf("a reader of the directory: %v", err)
	}
	refs, strays, err := listFiles(t.Context(), Dir(dir))
	if err != nil || len(refs) != 0 || len(strays) != 0 {
		t.Errorf("listFiles with an archive: %v, strays %v, %v; want nothing", refs, strays, err)
	}
}
