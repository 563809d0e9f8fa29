package s3log_test

import (
	"testing"

	"github.com/egress-authz/egress-authz/internal/audit/audittest"
	"github.com/egress-authz/egress-authz/internal/audit/parquetlog"
	"github.com/egress-authz/egress-authz/internal/audit/s3log"
	"github.com/egress-authz/egress-authz/internal/s3test"
)

// TestRuleSetArchive: the archive is an object per version in the bucket,
// beside the clusters, which a reader of the bucket finds.
func TestRuleSetArchive(t *testing.T) {
	srv := s3test.Start(t)
	dsn := "s3://" + srv.Bucket("archive") + "/decisions"
	w := newWriter(t, dsn, "eu-west-1", 100)
	defer w.close(t)
	audittest.ArchiveConformance(t, w.sink)
	b, err := s3log.NewBucket(t.Context(), dsn)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parquetlog.OpenStorage(b).RuleSet(t.Context(), "0123456789abcdef"); err != nil {
		t.Errorf("a reader of the bucket: %v", err)
	}
}
