package main

// The rules commands, for the compliance team: lint (lint.go), test
// (casetest.go), explain (explain.go), diff (diff.go), suggest
// (suggest.go), bundle (bundle.go), schema (schema.go), and import and
// export of Istio policies (istio.go). Each answers in plain words, or in JSON for CI with
// --format json; what they share is in cli.go.

import (
	"context"
	"fmt"
	"io"
)

const rulesUsage = `Usage:
  egress-authz rules lint [--strict] [--require owner,ticket,expires] [--max-expiry 180d] [--policy FILE] PATH...
  egress-authz rules test PATH --cases FILE
  egress-authz rules explain PATH --principal ID [-X METHOD] URL   (or --sni HOST)
  egress-authz rules diff OLD NEW [--against DSN [--since 7d]]
  egress-authz rules suggest --from DSN --namespace NS [--since 7d] [--widen]
  egress-authz rules bundle build|sign|verify|keygen ...
  egress-authz rules schema                                          (JSON Schema, for editors)
  egress-authz rules import istio FILE...                            (AuthorizationPolicy to rules)
  egress-authz rules export istio PATH                               (rules to AuthorizationPolicy)

test, explain, diff and suggest take --format text|json. test, explain and
diff read a bundle file (.tar.gz) as a rule set too, checking its signature
with --public-key KEY.
Run "egress-authz rules COMMAND -h" for a command's flags.
`

func rulesCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, rulesUsage)
		return exitUsage
	}
	switch args[0] {
	case "lint":
		return lintCmd(ctx, args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, rulesUsage)
		return exitOK
	case "test":
		return rulesTestCmd(ctx, args[1:], stdout, stderr)
	case "explain":
		return explainCmd(ctx, args[1:], stdout, stderr)
	case "diff":
		return diffCmd(ctx, args[1:], stdout, stderr)
	case "suggest":
		return suggestCmd(ctx, args[1:], stdout, stderr)
	case "bundle":
		return bundleCmd(ctx, args[1:], stdout, stderr)
	case "schema":
		return schemaCmd(ctx, args[1:], stdout, stderr)
	case "import":
		return importCmd(ctx, args[1:], stdout, stderr)
	case "export":
		return exportCmd(ctx, args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "egress-authz rules: unknown command %q\n\n%s", args[0], rulesUsage)
	return exitUsage
}
