package main

import (
	"bytes"
	"encoding/json"
	"testing"

	"github.com/egress-authz/egress-authz/rules"
)

// TestRulesSchemaPrintsTheSchema: rules schema prints the package's JSON
// Schema as it is, for editors to load.
func TestRulesSchemaPrintsTheSchema(t *testing.T) {
	r := runCLI(t, t.TempDir(), "rules", "schema")
	if r.code != exitOK || !bytes.Equal([]byte(r.stdout), rules.Schema()) || !json.Valid([]byte(r.stdout)) {
		t.Errorf("want exit 0 and the schema\n%s", r)
	}
	if r := runCLI(t, t.TempDir(), "rules", "schema", "extra"); r.code != exitUsage {
		t.Errorf("an argument: exit %d, want 2", r.code)
	}
}
