package rules

import (
	"bytes"
	_ "embed" // the schema is a file, so that editors and reviewers read it as JSON
)

//go:embed schema.json
var schema []byte

// Schema returns a JSON Schema (draft-07, the draft the YAML language
// server of VS Code and other editors supports best) of the files this
// package reads: rule sets, the test cases beside them, and lint
// policies. Editors use it to complete and check the files as people
// type; the parser stays the judge (it checks what a schema cannot, such
// as normalized paths and unique ids). The slice is the caller's own.
func Schema() []byte { return bytes.Clone(schema) }
