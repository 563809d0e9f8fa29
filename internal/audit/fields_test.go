package audit_test

import (
	"encoding/json"
	"slices"
	"strings"
	"testing"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
)

// A Record's fields are listed once, in audit.Fields. These tests change
// each field of Record in turn, by reflection, and fail when a field is
// missing from the list, the JSON shape or the canonical encoding. The
// stores' columns, the CSV output and the OTLP attributes have tests of
// the same kind beside them.

func values(r *audit.Record) []any {
	var out []any
	fields := audit.Fields()
	for i := range fields {
		out = append(out, fields[i].Value(r))
	}
	return out
}

func TestFieldsListEveryRecordFieldOnce(t *testing.T) {
	full := audittest.Full()
	base := values(&full)
	for _, v := range audittest.Vary(full) {
		changed := values(&v.Record)
		var moved []string
		for i := range base {
			if base[i] != changed[i] {
				moved = append(moved, audit.Fields()[i].Name)
			}
		}
		if len(moved) != 1 {
			t.Errorf("changing Record.%s changes fields %v, want exactly one", v.Field, moved)
		}
	}
	if n := len(audittest.Vary(full)); n != len(audit.Fields()) {
		t.Errorf("Record has %d fields, audit.Fields %d", n, len(audit.Fields()))
	}
	// The accessors write what they read: a record rebuilt from them is
	// the record.
	var rebuilt audit.Record
	for _, f := range audit.Fields() {
		switch f.Kind {
		case audit.KindString:
			*f.Str(&rebuilt) = *f.Str(&full)
		case audit.KindBool:
			*f.Bool(&rebuilt) = *f.Bool(&full)
		default:
			f.SetInt(&rebuilt, f.Int(&full))
		}
	}
	if d := audittest.Diff(rebuilt, full); d != "" {
		t.Errorf("a record rebuilt through audit.Fields differs:%s", d)
	}
	var names []string
	for _, f := range audit.Fields() {
		if f.Name != strings.ToLower(f.Name) || strings.ContainsAny(f.Name, " -") || slices.Contains(names, f.Name) {
			t.Errorf("field name %q: want snake_case, once", f.Name)
		}
		names = append(names, f.Name)
	}
}

// TestCanonicalHashCoversEveryField: changing any field but the hash
// itself changes the hash, so no field can be edited unseen.
func TestCanonicalHashCoversEveryField(t *testing.T) {
	full := audittest.Full()
	h := audit.ComputeHash(&full)
	for _, v := range audittest.Vary(full) {
		got := audit.ComputeHash(&v.Record)
		if v.Field == "Hash" {
			if got != h {
				t.Errorf("the hash depends on the Hash field it is stored in")
			}
			continue
		}
		if got == h {
			t.Errorf("changing Record.%s leaves the hash as it was: the canonical encoding misses it", v.Field)
		}
	}
}

// TestCanonicalEncodingIsUnchanged: stored chains verify only as long as
// the encoding gives the same bytes; this hash was computed when the
// encoding "EA1" shipped.
func TestCanonicalEncodingIsUnchanged(t *testing.T) {
	r := audittest.Sample(7)
	r.Writer, r.Seq, r.PrevHash = "pod-1-0a1b2c3d", 42, strings.Repeat("ab", 32)
	const want = "372e98464c924d6ffc8a46aabdef620d33cfe8fe41901650fbae1586565e47da"
	if got := audit.ComputeHash(&r); got != want {
		t.Fatalf("hash of a fixed record = %s, want %s: the canonical encoding changed, and stored chains would no longer verify", got, want)
	}
}

// TestCanonicalEncodingOfTheFleetFields: a record with a cluster or a
// processor is encoded EA2, with them; one with neither keeps EA1, byte
// for byte, so that chains written before the fields existed still verify;
// and an EA2 encoding of a record without them is refused (each record has
// one encoding).
func TestCanonicalEncodingOfTheFleetFields(t *testing.T) {
	r := audittest.Sample(7)
	r.Writer, r.Seq, r.PrevHash = "pod-1-0a1b2c3d", 42, strings.Repeat("ab", 32)
	ea1 := audit.AppendCanonical(nil, &r)
	if string(ea1[:3]) != "EA1" {
		t.Fatalf("a record without cluster or processor is encoded %q", ea1[:3])
	}
	for _, tc := range []struct{ cluster, processor string }{{"eu-west-1", ""}, {"", "stripe"}, {"eu-west-1", "stripe"}} {
		r2 := r
		r2.Cluster, r2.Processor = tc.cluster, tc.processor
		b := audit.AppendCanonical(nil, &r2)
		if string(b[:3]) != "EA2" {
			t.Fatalf("%+v: encoded %q, want EA2", tc, b[:3])
		}
		got, err := audit.DecodeCanonical(b)
		if err != nil || got.Cluster != tc.cluster || got.Processor != tc.processor {
			t.Fatalf("%+v: decoded %+v, %v", tc, got, err)
		}
		if audit.ComputeHash(&r2) == audit.ComputeHash(&r) {
			t.Fatalf("%+v: same hash as without", tc)
		}
	}
	forged := append([]byte("EA2"), ea1[3:]...)
	forged = append(forged, 0, 0) // two empty strings
	if _, err := audit.DecodeCanonical(forged); err == nil {
		t.Fatal("an EA2 encoding with an empty cluster and processor decoded")
	}
}

func TestCanonicalRoundTrip(t *testing.T) {
	r := audittest.Full()
	r.Seq, r.PrevHash = 42, strings.Repeat("a", 64)
	b := audit.AppendCanonical(nil, &r)
	got, err := audit.DecodeCanonical(b)
	if err != nil {
		t.Fatal(err)
	}
	r.Hash = audit.ComputeHash(&r)
	if d := audittest.Diff(got, r); d != "" {
		t.Fatalf("decoded record differs:%s", d)
	}
	for i := 0; i < len(b); i++ {
		if _, err := audit.DecodeCanonical(b[:i]); err == nil {
			t.Fatalf("truncated encoding (%d of %d bytes) decoded", i, len(b))
		}
	}
}

// TestJSONShowsEveryField: the JSON of a record has a key per field, named
// as audit.Fields names it, and changes with every field.
func TestJSONShowsEveryField(t *testing.T) {
	full := audittest.Full()
	b, err := json.Marshal(full)
	if err != nil {
		t.Fatal(err)
	}
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	var keys, names []string
	for k := range m {
		keys = append(keys, k)
	}
	for _, f := range audit.Fields() {
		names = append(names, f.Name)
	}
	slices.Sort(keys)
	slices.Sort(names)
	if !slices.Equal(keys, names) {
		t.Errorf("JSON keys %v, want the field names %v", keys, names)
	}
	for _, v := range audittest.Vary(full) {
		c, err := json.Marshal(&v.Record)
		if err != nil {
			t.Fatal(err)
		}
		if string(c) == string(b) {
			t.Errorf("changing Record.%s leaves the JSON as it was", v.Field)
		}
	}
	if b, _ := json.Marshal(audit.Record{}); strings.Contains(string(b), "trace_id") {
		t.Errorf("an empty trace id is shown: %s", b)
	}
}
