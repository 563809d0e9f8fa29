package parquetlog

import (
	"context"
	"encoding/hex"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"
	"github.com/parquet-go/parquet-go/format"
)

func TestIDsStoredAsBytesOnlyWhenTheyRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		id   string
		uuid bool
	}{
		{"3f2b8c1e-9a4d-4e2f-8b1c-0d9e7f6a5b4c", true},
		{"3F2B8C1E-9A4D-4E2F-8B1C-0D9E7F6A5B4C", false}, // upper case would come back lower
		{"3f2b8c1e9a4d4e2f8b1c0d9e7f6a5b4c", false},
		{"{3f2b8c1e-9a4d-4e2f-8b1c-0d9e7f6a5b4c}", false},
		{"3f2b8c1e-9a4d-4e2f-8b1c-0d9e7f6a5b4g", false},
		{"ea-5c0a1e8f3b2d-1", false},
		{"", false},
	} {
		u, ok := canonicalUUID(tc.id)
		if ok != tc.uuid {
			t.Errorf("canonicalUUID(%q) = %v, want %v", tc.id, ok, tc.uuid)
		}
		if ok && u.String() != tc.id {
			t.Errorf("canonicalUUID(%q) = %s", tc.id, u)
		}
		if want, err := uuid.Parse(tc.id); ok && (err != nil || want != u) {
			t.Errorf("canonicalUUID(%q) = %s, uuid.Parse %s %v", tc.id, u, want, err)
		}
	}
	for _, tc := range []struct {
		id string
		ok bool
	}{
		{"4bf92f3577b34da6a3ce929d0e0e4736", true},
		{"4BF92F3577B34DA6A3CE929D0E0E4736", false},
		{"4bf92f3577b34da6a3ce929d0e0e473", false},
		{"", false},
	} {
		if _, ok := traceBytes(tc.id); ok != tc.ok {
			t.Errorf("traceBytes(%q) = %v, want %v", tc.id, ok, tc.ok)
		}
	}
}

// canonicalUUID agrees with uuid.Parse and String on every one-byte
// change of a UUID: it takes exactly the ids that round-trip; traceBytes
// agrees with hex.DecodeString on lower-case hex.
func TestCanonicalUUIDAgreesWithTheUUIDPackage(t *testing.T) {
	const id = "3f2b8c1e-9a4d-4e2f-8b1c-0d9e7f6a5b4c"
	for i := range len(id) {
		for _, c := range []byte("09afAFgz-{ \x00\xff") {
			s := id[:i] + string([]byte{c}) + id[i+1:]
			u, ok := canonicalUUID(s)
			want, err := uuid.Parse(s)
			if wantOK := err == nil && want.String() == s; ok != wantOK || ok && u != want {
				t.Errorf("canonicalUUID(%q) = %s %v, want %v", s, u, ok, wantOK)
			}
		}
	}
	const trace = "4bf92f3577b34da6a3ce929d0e0e4736"
	for i := range len(trace) {
		for _, c := range []byte("09afAFgz-\x00\xff") {
			s := trace[:i] + string([]byte{c}) + trace[i+1:]
			b, ok := traceBytes(s)
			want, err := hex.DecodeString(s)
			if wantOK := err == nil && strings.ToLower(s) == s; ok != wantOK || ok && string(b[:]) != string(want) {
				t.Errorf("traceBytes(%q) = %x %v, want %x %v", s, b, ok, want, wantOK)
			}
		}
	}
}

// TestEveryColumnCompressed: every column chunk of a segment is
// zstd-compressed (the codec is the writer's default, not a struct tag's).
func TestEveryColumnCompressed(t *testing.T) {
	dir := t.TempDir()
	writeAll(t, dir, Options{}, chain("w1", 0, "", 3000, t0, time.Second, rand.New(rand.NewPCG(1, 2))))
	eachSegment(t, dir, func(seg *segment) {
		for _, rg := range seg.pf.Metadata().RowGroups {
			for _, cc := range rg.Columns {
				if cc.MetaData.Codec != format.Zstd {
					t.Errorf("%s: column %v is compressed with %v", seg.ref.name, cc.MetaData.PathInSchema, cc.MetaData.Codec)
				}
			}
		}
	})
}

// eachSegment calls fn with every closed segment of dir, open, and fails
// when there is none.
func eachSegment(t *testing.T, dir string, fn func(*segment)) {
	t.Helper()
	refs, err := listSegments(context.Background(), Dir(dir))
	if err != nil || len(refs) == 0 {
		t.Fatal(refs, err)
	}
	for _, ref := range refs {
		seg, err := openSegment(context.Background(), Dir(dir), ref)
		if err != nil {
			t.Fatal(err)
		}
		fn(seg)
		seg.close()
	}
}
