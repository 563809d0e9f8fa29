package stores

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
)

// TestKeyIsTheSinkName: the name a DSN's sink goes by in Stats and metrics
// is known before it is opened, and holds no credentials.
func TestKeyIsTheSinkName(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	opts := Options{DataDir: dir, Stdout: &out}
	for _, dsn := range []string{"sqlite:" + filepath.Join(dir, "a.db"), filepath.Join(dir, "b.db"), "stdout", "otlp"} {
		s, err := OpenSink(context.Background(), dsn, opts)
		if err != nil {
			t.Fatalf("OpenSink(%q): %v", dsn, err)
		}
		if s.Name() != Key(dsn) {
			t.Errorf("OpenSink(%q).Name() = %q, Key = %q", dsn, s.Name(), Key(dsn))
		}
		s.Close()
	}
	if got := Key(filepath.Join(dir, "b.db")); got != "sqlite:"+filepath.Join(dir, "b.db") {
		t.Errorf("Key of a bare .db path = %q, want it as sqlite:PATH", got)
	}
	for dsn, want := range map[string]string{
		"postgres://alice:s3cret@db.example:5432/audit":          "postgres://db.example:5432/audit",
		"postgresql://db.example/audit?password=s3cret":          "postgresql://db.example/audit",
		"mysql://alice:s3cret@db.example/audit":                  "mysql://db.example/audit",
		"postgres://alice:s3cret@db.example/audit?sslmode=allow": "postgres://db.example/audit?sslmode=allow",
	} {
		if got := Key(dsn); got != want {
			t.Errorf("Key(%q) = %q, want %q", dsn, got, want)
		}
	}
}

func TestOpenSaysWhatItTakes(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		open func() error
		want string
	}{
		{func() error { _, err := Open(ctx, "otlp", Options{}); return err }, "want parquet:DIR, sqlite:PATH, postgres://... or s3://BUCKET/PREFIX"},
		{func() error { _, err := Open(ctx, "decisions.sqlite", Options{}); return err }, "want parquet:DIR, sqlite:PATH, postgres://... or s3://BUCKET/PREFIX"},
		{func() error { _, err := OpenSink(ctx, "mysql://db/audit", Options{}); return err }, "want parquet:DIR, sqlite:PATH, postgres://..., s3://BUCKET/PREFIX, otlp or stdout"},
	} {
		if err := tc.open(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("error %v, want one saying %q", err, tc.want)
		}
	}
}

// TestOpenExistingDoesNotCreateALog: a reader with a mistyped path must
// not get an empty log, which verify would call intact.
func TestOpenExistingDoesNotCreateALog(t *testing.T) {
	path := filepath.Join(t.TempDir(), "data", "decisions.db")
	dir := filepath.Join(t.TempDir(), "data", "decisions")
	if _, err := OpenExisting(context.Background(), "parquet:"+dir); err == nil || !strings.Contains(err.Error(), dir) {
		t.Errorf("OpenExisting(parquet:%s): %v, want an error naming the directory", dir, err)
	}
	if _, err := os.Stat(dir); err == nil {
		t.Errorf("OpenExisting created %s", dir)
	}
	for _, dsn := range []string{"sqlite:" + path, path} {
		if _, err := OpenExisting(context.Background(), dsn); err == nil || !strings.Contains(err.Error(), path) {
			t.Errorf("OpenExisting(%q): %v, want an error naming the file", dsn, err)
		}
		if _, err := os.Stat(path); err == nil {
			t.Fatalf("OpenExisting(%q) created the log", dsn)
		}
	}
	s, err := Open(context.Background(), "sqlite:"+path, Options{})
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	s, err = OpenExisting(context.Background(), "sqlite:"+path)
	if err != nil {
		t.Fatalf("OpenExisting after Open: %v", err)
	}
	s.Close()
}

// TestSinksAndStoresAreOneLog: what a store opened as a sink stores, the
// same DSN opened with Open reads.
func TestSinksAndStoresAreOneLog(t *testing.T) {
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "decisions.db")
	sink, err := OpenSink(context.Background(), dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	if _, ok := sink.(audit.Store); !ok {
		t.Fatalf("the sink of %s cannot be queried", dsn)
	}
	r := audittest.Full()
	if err := sink.Write(context.Background(), []audit.Record{r}); err != nil {
		t.Fatal(err)
	}
	st, err := Open(context.Background(), dsn, Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	n := 0
	if _, err := st.Query(context.Background(), audit.Filter{}, func(*audit.Record) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("query: %d records, %v; want 1", n, err)
	}
}

func TestS3DSN(t *testing.T) {
	if got := Key("s3://decisions/fleet/"); got != "s3://decisions/fleet" {
		t.Errorf("Key(s3://decisions/fleet/) = %q", got)
	}
	if !Queryable("s3://decisions/fleet") || Queryable("otlp") || Queryable("stdout") || !Queryable("parquet:x") {
		t.Error("Queryable: want s3:// and parquet: queryable, otlp and stdout not")
	}
	if _, err := OpenSink(context.Background(), "s3://decisions/fleet", Options{DataDir: t.TempDir()}); err == nil || !strings.Contains(err.Error(), "--cluster") {
		t.Errorf("an s3:// sink without a cluster: %v, want an error naming --cluster", err)
	}
	if _, err := Open(context.Background(), "s3://", Options{}); err == nil || !strings.Contains(err.Error(), "s3://BUCKET/PREFIX") {
		t.Errorf("s3:// without a bucket: %v", err)
	}
}
