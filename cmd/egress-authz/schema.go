package main

// rules schema: the JSON Schema of rule, case and lint policy files, for
// editors.

import (
	"context"
	"flag"
	"fmt"
	"io"

	"github.com/egress-authz/egress-authz/rules"
)

func schemaCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules schema", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egress-authz rules schema > egress-authz.schema.json

Prints the JSON Schema (draft-07) of rule files, the test-case files kept
beside them, and lint policy files. Point an editor's YAML language server
at it to have the files completed and checked as you type; in VS Code, with
the YAML extension (redhat.vscode-yaml), in .vscode/settings.json:

  "yaml.schemas": {"./egress-authz.schema.json": ["rules/*.yaml", "rules-tests/*.yaml"]}

or a first line "# yaml-language-server: $schema=./egress-authz.schema.json"
in a file. "egress-authz rules lint" stays the judge: it checks what a
schema cannot (normalized paths, unique ids, expiry).
`)
	}
	if code, ok := parseArgs(fs, args); !ok {
		return code
	}
	if fs.NArg() != 0 {
		fs.Usage()
		return exitUsage
	}
	if _, err := stdout.Write(rules.Schema()); err != nil {
		fmt.Fprintln(stderr, "egress-authz rules schema:", err)
		return exitFail
	}
	return exitOK
}
