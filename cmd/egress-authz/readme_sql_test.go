package main

// The README's queries of a fleet's bucket, checked against real segments:
// the DuckDB query is run, the Athena and Trino tables are compared, column
// by column, with what DuckDB reads in a segment.

import (
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/egress-authz/egress-authz/internal/duckdbtest"
)

// readmeSQL returns the README's ```sql block that contains marker.
func readmeSQL(t *testing.T, marker string) string {
	t.Helper()
	data, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	blocks := strings.Split(string(data), "```sql\n")
	for _, b := range blocks[1:] {
		b, _, _ = strings.Cut(b, "```")
		if strings.Contains(b, marker) {
			return b
		}
	}
	t.Fatalf("README.md has no sql block containing %q", marker)
	return ""
}

// ddlColumn is one "name type" line of a CREATE TABLE's column list.
var ddlColumn = regexp.MustCompile("^\\s+[`\"]?([a-z_]+)[`\"]?\\s+([a-z]+),?$")

// ddlColumns lists the columns of a CREATE TABLE statement by name, with
// their types, in order.
func ddlColumns(t *testing.T, ddl string) ([]string, map[string]string) {
	t.Helper()
	var names []string
	types := map[string]string{}
	for _, line := range strings.Split(ddl, "\n") {
		if m := ddlColumn.FindStringSubmatch(line); m != nil {
			names = append(names, m[1])
			types[m[1]] = m[2]
		}
	}
	if len(names) == 0 {
		t.Fatalf("no columns in\n%s", ddl)
	}
	return names, types
}

// readsAs lists, for a column type as DuckDB reads it in a segment, the
// Hive types (Athena's and Trino's) that read it without loss.
var readsAs = map[string][]string{
	"TIMESTAMP":                {"timestamp"},
	"TIMESTAMP WITH TIME ZONE": {"timestamp"},
	"TIMESTAMP_NS":             {"timestamp"},
	"VARCHAR":                  {"string", "varchar"},
	"BLOB":                     {"binary", "varbinary"},
	"UUID":                     {"binary", "varbinary", "uuid"}, // 16 bytes, FIXED_LEN_BYTE_ARRAY
	"BOOLEAN":                  {"boolean"},
	"BIGINT":                   {"bigint"},
	"UBIGINT":                  {"bigint"},
	"INTEGER":                  {"bigint", "int", "integer"},
	"UINTEGER":                 {"bigint"},
}

// checkFleetQueries runs the README's DuckDB query over the bucket's
// objects as the S3 server keeps them on disk (root is the directory of
// the prefix), wanting allowed[cluster] allows per cluster, and checks the
// Athena and Trino tables against the columns of segment.
func checkFleetQueries(t *testing.T, root, segment string, allowed map[string]int) {
	const prefix = "s3://egress-authz-decisions/fleet/"
	var query []string
	for _, line := range strings.Split(readmeSQL(t, prefix+"cluster=*"), "\n") {
		if strings.HasPrefix(line, "INSTALL ") || strings.HasPrefix(line, "CREATE SECRET ") {
			continue // S3 access: here the objects are read where the S3 server keeps them
		}
		query = append(query, strings.ReplaceAll(line, prefix, root+"/"))
	}
	rows := duckdbtest.Query(t, strings.Join(query, "\n"))
	got := map[string]int{}
	for _, r := range rows {
		if r["decision"] != "allow" {
			continue
		}
		n, ok := r["decisions"].(string) // DuckDB renders a BIGINT as a string
		if !ok {
			t.Fatalf("the README's DuckDB query: decisions is %T in %v", r["decisions"], r)
		}
		count, err := strconv.Atoi(n)
		if err != nil {
			t.Fatalf("the README's DuckDB query: decisions %q: %v", n, err)
		}
		got[r["cluster"].(string)] += count
	}
	for c, want := range allowed {
		if got[c] != want {
			t.Errorf("the README's DuckDB query: %d allows of cluster %s, want the %d allowed\n%v", got[c], c, want, rows)
		}
	}
	if len(got) != len(allowed) {
		t.Errorf("the README's DuckDB query: allows of clusters %v, want %v", got, allowed)
	}

	described := duckdbtest.Query(t, "DESCRIBE SELECT * FROM read_parquet('"+segment+"', hive_partitioning = false)")
	segCols := map[string]string{}
	for _, r := range described {
		segCols[r["column_name"].(string)] = r["column_type"].(string)
	}
	if len(segCols) == 0 {
		t.Fatalf("DuckDB describes no columns of %s", segment)
	}
	partitions := map[string]bool{"cluster": true, "day": true}
	for _, table := range []struct{ name, marker string }{
		{"Athena", "CREATE EXTERNAL TABLE egress_authz_decisions"},
		{"Trino", "CREATE TABLE hive.audit.egress_authz_decisions"},
	} {
		names, types := ddlColumns(t, readmeSQL(t, table.marker))
		for col, duck := range segCols {
			typ, ok := types[col]
			if !ok {
				if partitions[col] && table.name == "Athena" {
					continue // a partition column, in PARTITIONED BY
				}
				t.Errorf("the README's %s table has no column %s (%s in a segment)", table.name, col, duck)
				continue
			}
			if fits, known := readsAs[duck]; !known {
				t.Errorf("column %s is %s in a segment, a type this test does not map to Hive's", col, duck)
			} else if !slices.Contains(fits, typ) {
				t.Errorf("the README's %s table has column %s as %s; a segment's %s is read as one of %v", table.name, col, typ, duck, fits)
			}
		}
		for _, col := range names {
			if _, ok := segCols[col]; !ok && !partitions[col] {
				t.Errorf("the README's %s table has column %s, which no segment has", table.name, col)
			}
		}
	}
}
