package main

import (
	"context"
	"fmt"
	"io"
	"net/http"

	"github.com/egress-authz/egress-authz/authz"
)

// openAudit opens the decision-log sinks named by --audit.
func (s *server) openAudit() (authz.Recorder, error) {
	for _, dsn := range s.cfg.Audit {
		if dsn != "none" {
			return nil, fmt.Errorf("--audit %q: not yet supported in this build; use --audit none", dsn)
		}
	}
	return nil, nil
}

func (s *server) adminExtras() map[string]http.Handler { return nil }

func auditCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fmt.Fprintln(stderr, "egress-authz audit: not yet supported in this build")
	return exitFail
}
