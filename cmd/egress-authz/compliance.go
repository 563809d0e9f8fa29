package main

import (
	"context"
	"fmt"
	"io"
)

func notYet(name string, stderr io.Writer) int {
	fmt.Fprintf(stderr, "egress-authz rules %s: not yet supported in this build\n", name)
	return exitFail
}

func rulesTestCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return notYet("test", stderr)
}
func explainCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return notYet("explain", stderr)
}
func diffCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return notYet("diff", stderr)
}
func suggestCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return notYet("suggest", stderr)
}
