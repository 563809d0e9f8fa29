package evidence

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
	"github.com/egress-authz/egress-authz/internal/audit/parquetlog"
	"github.com/egress-authz/egress-authz/internal/audit/sqlstore"
)

// TestCheckFindsAnEditedRecord: a record edited in records.parquet, the
// manifest's hash made to match, is still found: its content does not
// give its hash, and the next record no longer follows it.
func TestCheckFindsAnEditedRecord(t *testing.T) {
	ctx := context.Background()
	st, err := sqlstore.OpenSQLite(ctx, filepath.Join(t.TempDir(), "d.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	start := time.Date(2026, 12, 1, 10, 0, 0, 0, time.UTC)
	recs := audittest.Realistic("w1", 0, "", 50, start, rand.New(rand.NewPCG(3, 4)))
	if err := st.Write(ctx, recs); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "pack")
	m, err := Write(ctx, dir, Options{Store: st, Filters: map[string]string{"since": "2026-12-01"}, Filter: audit.Filter{Since: start}, Now: start.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if c, err := Check(dir); err != nil || !c.OK() || c.Records != 50 || c.Hashes != 50 || c.Links != 49 || !c.Verify.OK {
		t.Fatalf("a fresh pack: %+v %v", c, err)
	}

	// Rewrite records.parquet with record 20's host changed, and the
	// manifest to match.
	pq := filepath.Join(dir, RecordsParquet)
	b, _ := os.ReadFile(pq)
	got, err := parquetlog.ReadRecords(strings.NewReader(string(b)), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	f, _ := os.Create(pq)
	w := parquetlog.NewRecordWriter(f)
	for i := range got {
		if got[i].Seq == 20 {
			got[i].Host = "exfil.example.net"
		}
		w.Write(&got[i])
	}
	w.Close()
	f.Close()
	b, _ = os.ReadFile(pq)
	sum := sha256.Sum256(b)
	for i := range m.Files {
		if m.Files[i].Name == RecordsParquet {
			m.Files[i].SHA256, m.Files[i].Bytes = hex.EncodeToString(sum[:]), int64(len(b))
		}
	}
	mb, _ := json.Marshal(m)
	os.WriteFile(filepath.Join(dir, ManifestFile), mb, 0o644)

	c, err := Check(dir)
	if err != nil {
		t.Fatal(err)
	}
	var probs []string
	for _, p := range c.Problems {
		probs = append(probs, p.String())
	}
	if len(probs) != 1 || !strings.Contains(probs[0], "records.parquet: writer w1, record 20") || !strings.Contains(probs[0], "does not give its hash") {
		t.Errorf("problems %q; want record 20 of records.parquet named", probs)
	}
}
