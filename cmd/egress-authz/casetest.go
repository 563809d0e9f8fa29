package main

// rules test: run a rule set's test cases.

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/internal/compliance"
	"github.com/egress-authz/egress-authz/rules"
)

// rulesTestOutput is the JSON of "rules test --format json". The fields
// are in the order of their names, the order they had when this was a map.
type rulesTestOutput struct {
	At      string                  `json:"at"` // when cases without at: were decided, RFC 3339
	Cases   string                  `json:"cases"`
	Failed  int                     `json:"failed"`
	Passed  int                     `json:"passed"`
	Results []compliance.CaseResult `json:"results"`
	Rules   string                  `json:"rules"`
	RuleSet string                  `json:"ruleset"`
}

func rulesTestCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules test", flag.ContinueOnError)
	fs.SetOutput(stderr)
	casesPath := fs.String("cases", "", "test-case `FILE` (YAML, see below)")
	at := fs.String("at", "", "decide as of this `TIME` (YYYY-MM-DD or RFC 3339; default now); a case's own at: wins")
	format := formatFlag(fs)
	keys := addBundleKeys(fs, "rules test", stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egress-authz rules test PATH --cases FILE [--at TIME] [--format text|json]

Runs the test cases in FILE against the rule file or directory (or bundle
file) PATH: each
case is a request and the decision it must get. URLs are decided exactly as
the real request through the egress gateway would be.

  cases:
    - name: checkout charges Stripe
      principal: spiffe://cluster.local/ns/payments/sa/checkout
      method: POST                              # default GET
      url: https://api.stripe.com/v1/charges    # or sni: HOST (TLS passthrough), port: 443
      expect: allow                             # allow | deny
      rule: payments-stripe-charges             # optional: the deciding rule ("" for none)
      reason: allowed-by-rule                   # optional
      at: 2027-07-01                            # optional: decide as of this day

Exit status: 0 every case passed, 1 a case failed or a file is invalid.

Flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := parseArgs(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 || *casesPath == "" || !checkFormat("rules test", *format, stderr) {
		fs.Usage()
		return exitUsage
	}
	now, table, code := tableAt("rules test", fs.Arg(0), *at, *format, keys, stdout, stderr)
	if table == nil {
		return code
	}
	data, err := os.ReadFile(*casesPath)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz rules test:", err)
		return exitFail
	}
	cases, err := rules.ParseCases(rules.Source{Name: *casesPath, Data: data})
	if err != nil {
		printInvalid(stdout, *format, err)
		fmt.Fprintf(stderr, "egress-authz rules test: the case file %s is invalid (errors above)\n", *casesPath)
		return exitFail
	}
	rep, err := compliance.RunCases(table, cases, now)
	if err != nil {
		// A URL that cannot be a request: an error in the case file.
		printInvalid(stdout, *format, err)
		fmt.Fprintf(stderr, "egress-authz rules test: the case file %s is invalid (errors above)\n", *casesPath)
		return exitFail
	}

	if *format == "json" {
		printJSON(stdout, rulesTestOutput{At: now.Format(time.RFC3339), Cases: *casesPath, Failed: rep.Failed,
			Passed: rep.Passed, Results: rep.Results, Rules: fs.Arg(0), RuleSet: rep.RuleSet})
	} else {
		printCaseResults(stdout, fs.Arg(0), cases, rep)
	}
	if rep.Failed > 0 {
		return exitFail
	}
	return exitOK
}

// printCaseResults prints a case report as "rules test" does: ok or FAIL
// per case, why a case failed and how to look closer, and the counts.
func printCaseResults(w io.Writer, rulesPath string, cases []rules.Case, rep *compliance.CaseReport) {
	for i, res := range rep.Results {
		if res.Passed {
			fmt.Fprintf(w, "ok    %s\n", res.Name)
			continue
		}
		fmt.Fprintf(w, "FAIL  %s  (%s)\n", res.Name, res.Pos)
		fmt.Fprintf(w, "      request:  %s\n", describeCase(&cases[i], res.Request.Method))
		fmt.Fprintf(w, "      expected: %s\n", describeExpected(&cases[i]))
		fmt.Fprintf(w, "      got:      %s\n", describeOutcome(res.Got))
		for _, p := range res.Problems {
			fmt.Fprintf(w, "      - %s\n", p)
		}
		fmt.Fprintf(w, "      why:      %s\n", explainCommand(rulesPath, &cases[i]))
	}
	fmt.Fprintf(w, "%d passed, %d failed\n", rep.Passed, rep.Failed)
}

// describeCase writes a case's request in words; method is the one
// decided (GET when the case names none).
func describeCase(c *rules.Case, method string) string {
	who := c.Principal
	if who == "" {
		who = "(no principal)"
	}
	if c.SNI != "" {
		return fmt.Sprintf("TLS passthrough to %s port %d from %s", c.SNI, c.Port, who)
	}
	return fmt.Sprintf("%s %s from %s", method, c.URL, who)
}

func describeExpected(c *rules.Case) string {
	s := string(c.Expect)
	switch {
	case c.HasRule && c.Rule != "":
		s += " by " + c.Rule
	case c.HasRule:
		s += ", no rule deciding"
	}
	if c.Reason != "" {
		s += " (" + string(c.Reason) + ")"
	}
	return s
}

func describeOutcome(o compliance.Outcome) string {
	s := o.Decision
	if o.Rule != "" {
		s += " by " + o.Rule
	}
	return s + " (" + string(o.Reason) + ")"
}

// explainCommand is the command that shows why a case's request gets the
// decision it gets.
func explainCommand(rulesPath string, c *rules.Case) string {
	args := []string{"egress-authz rules explain", shellQuote(rulesPath), "--principal", shellQuote(c.Principal)}
	if c.SNI != "" {
		args = append(args, "--sni", shellQuote(c.SNI))
		if c.Port != 443 {
			args = append(args, "--port", strconv.Itoa(c.Port))
		}
	} else {
		if c.Method != "" && c.Method != "GET" {
			args = append(args, "-X", shellQuote(c.Method))
		}
		args = append(args, shellQuote(c.URL))
	}
	if !c.At.IsZero() {
		args = append(args, "--at", c.At.Format(time.RFC3339))
	}
	return strings.Join(args, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.Trim(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-_./:@%+=,") == "" {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}
