// Command egress-authz is an Envoy ext_authz server that decides, for every
// outbound request through an Istio egress gateway, whether the calling
// workload may reach the external host, from an allow-list kept in git.
//
// Run "egress-authz help" for the commands.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

const usage = `egress-authz decides which workloads may reach which external hosts.

Usage:
  egress-authz serve --rules PATH [flags]        run the ext_authz gRPC server
                                                 (--rules https://... or oci://...: a signed bundle)
  egress-authz check --addr HOST:PORT --principal SPIFFE_ID [-X METHOD] URL
  egress-authz check --addr HOST:PORT --principal SPIFFE_ID --sni HOST
                                                 send one Check; exit 0 allow, 3 deny
  egress-authz rules lint PATH...                validate rule files
  egress-authz rules test PATH --cases FILE      run expected-decision cases
  egress-authz rules explain PATH|--version V --principal ID [-X METHOD] URL
  egress-authz rules diff OLD NEW [--against DSN]
  egress-authz rules suggest --from DSN --namespace NS [--since 7d]
  egress-authz rules bundle build|sign|verify|keygen
                                                 a signed rule bundle for many clusters
  egress-authz rules schema                      JSON Schema of the files, for editors
  egress-authz rules import istio FILE...        AuthorizationPolicy to a rule set
  egress-authz rules export istio PATH           a rule set to AuthorizationPolicy
  egress-authz audit query [--audit DSN] [filters]
  egress-authz audit verify [--audit DSN]
  egress-authz report processing [--audit DSN] [--since 90d] [--format json|md|html|csv|fides]
                                                 the GDPR register of processors, as observed

Run "egress-authz COMMAND -h" for a command's flags.
`

// Exit codes shared by the commands.
const (
	exitOK    = 0
	exitFail  = 1 // an error: bad input, unreachable server, failed check
	exitUsage = 2
	exitDeny  = 3 // check: the request was denied
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}

// run dispatches to a command. It is main without the process: tests call
// it with their own arguments and writers.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return exitUsage
	}
	switch args[0] {
	case "serve":
		return serveCmd(ctx, args[1:], stdout, stderr)
	case "check":
		return checkCmd(ctx, args[1:], stdout, stderr)
	case "rules":
		return rulesCmd(ctx, args[1:], stdout, stderr)
	case "audit":
		return auditCmd(ctx, args[1:], stdout, stderr)
	case "report":
		return reportCmd(ctx, args[1:], stdout, stderr)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
		return exitOK
	}
	fmt.Fprintf(stderr, "egress-authz: unknown command %q\n\n%s", args[0], usage)
	return exitUsage
}

// parseArgs parses args with fs, letting flags follow positional arguments
// ("explain URL -X POST"). Which flags take a value is read from fs
// itself, so a bool flag never swallows the argument after it.
//
// ok is false when the command must stop at once, with code: exit 0 after
// -h (the flag set printed the usage), exit 2 for a bad flag (it printed
// the error).
func parseArgs(fs *flag.FlagSet, args []string) (code int, ok bool) {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || len(a) == 1 {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name, _, hasValue := strings.Cut(strings.TrimLeft(a, "-"), "=")
		f := fs.Lookup(name)
		if hasValue || f == nil {
			continue
		}
		if b, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && b.IsBoolFlag() {
			continue
		}
		if i+1 < len(args) {
			flags = append(flags, args[i+1])
			i++
		}
	}
	switch err := fs.Parse(append(append(flags, "--"), pos...)); {
	case err == nil:
		return exitOK, true
	case errors.Is(err, flag.ErrHelp):
		return exitOK, false
	default:
		return exitUsage, false
	}
}
