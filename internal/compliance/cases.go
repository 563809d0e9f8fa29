package compliance

import (
	"fmt"
	"slices"
	"time"

	"github.com/egress-authz/egress-authz/internal/checkreq"
	"github.com/egress-authz/egress-authz/rules"
)

// CaseReport is the result of RunCases.
type CaseReport struct {
	RuleSet string    // the version of the rule set the cases ran against
	At      time.Time // when the cases without at: were decided
	Passed  int
	Failed  int
	// Results holds one result per case: Results[i] is cases[i]'s.
	Results []CaseResult
}

// CaseResult is how one case fared. Its JSON form is an entry of the
// results of "rules test --format json".
type CaseResult struct {
	Name     string      `json:"name"`
	Pos      string      `json:"pos"` // where the case is, file:line:col
	Passed   bool        `json:"passed"`
	Request  CaseRequest `json:"request"`
	Expected Outcome     `json:"expected"`
	Got      Outcome     `json:"got"`
	// Problems says, one difference an entry, how the decision differs
	// from the expected one; empty when the case passed.
	Problems []string `json:"problems,omitempty"`
}

// CaseRequest is the request of a case, as the case wrote it (the method
// filled in when it left it out).
type CaseRequest struct {
	Principal string `json:"principal"`
	Method    string `json:"method,omitempty"`
	URL       string `json:"url,omitempty"`
	SNI       string `json:"sni,omitempty"`
	Port      int    `json:"port,omitempty"` // TLS passthrough only
	At        string `json:"at,omitempty"`   // the case's own at:, RFC 3339
}

// RunCases decides the request of every case with t, as of the case's at:
// or else now, and compares the decision with what the case expects.
//
// A case's URL is turned into a request exactly as the gateway's Envoy
// would send it (see checkreq), so a case decides as the real request
// does. A URL that cannot be a request is an error in the case file, not a
// failed case: RunCases then returns a rules.ErrorList naming every such
// case, and no report.
func RunCases(t *rules.Table, cases []rules.Case, now time.Time) (*CaseReport, error) {
	reqs := make([]rules.Request, len(cases))
	var bad rules.ErrorList
	for i, c := range cases {
		if c.SNI != "" {
			reqs[i] = checkreq.SNIRequest(c.Principal, c.SNI, uint32(c.Port))
			continue
		}
		var err error
		if reqs[i], err = (checkreq.HTTP{Principal: c.Principal, Method: c.Method, URL: c.URL}).Request(); err != nil {
			bad = append(bad, rules.Diagnostic{Pos: c.URLPos, Msg: fmt.Sprintf("case %q: %v", c.Name, err)})
		}
	}
	if len(bad) > 0 {
		return nil, bad
	}
	rep := &CaseReport{RuleSet: t.Version(), At: now, Results: make([]CaseResult, len(cases))}
	for i := range cases {
		c := &cases[i]
		at := now
		if !c.At.IsZero() {
			at = c.At
		}
		d := t.Decide(reqs[i], at)
		res := CaseResult{Name: c.Name, Pos: c.Pos.String(),
			Request:  CaseRequest{Principal: c.Principal, Method: reqs[i].Method, URL: c.URL, SNI: c.SNI},
			Expected: Outcome{Decision: string(c.Expect), Rule: c.Rule, Reason: c.Reason},
			Got:      OutcomeOf(&d),
		}
		if c.SNI != "" {
			res.Request.Port = c.Port
		}
		if !c.At.IsZero() {
			res.Request.At = c.At.Format(time.RFC3339)
		}
		res.Problems = caseProblems(c, d, t.Set())
		res.Passed = len(res.Problems) == 0
		if res.Passed {
			rep.Passed++
		} else {
			rep.Failed++
		}
		rep.Results[i] = res
	}
	return rep, nil
}

// caseProblems compares the decision d of the case's request with what
// the case expects, and returns each difference in plain words (none: the
// case passes). set is the rule set d came from, to catch a rule id that
// is not in it.
func caseProblems(c *rules.Case, d rules.Decision, set *rules.Set) []string {
	var out []string
	got := rules.Deny
	if d.Allow {
		got = rules.Allow
	}
	gotRule := ""
	if d.Rule != nil {
		gotRule = d.Rule.ID
	}
	if got != c.Expect {
		out = append(out, fmt.Sprintf("expected %s, got %s", c.Expect, got))
	}
	if c.HasRule && c.Rule != gotRule {
		switch {
		case c.Rule != "" && !slices.ContainsFunc(set.Rules, func(r *rules.Rule) bool { return r.ID == c.Rule }):
			out = append(out, fmt.Sprintf("expected rule %s, which is not in the rule set (a typo, or was it removed?)", c.Rule))
		case c.Rule == "":
			out = append(out, fmt.Sprintf("expected no deciding rule, got rule %s", gotRule))
		case gotRule == "":
			out = append(out, fmt.Sprintf("expected rule %s to decide, but no rule decided", c.Rule))
		default:
			out = append(out, fmt.Sprintf("expected rule %s to decide, got rule %s", c.Rule, gotRule))
		}
	}
	if c.Reason != "" && c.Reason != d.Reason {
		out = append(out, fmt.Sprintf("expected reason %s, got %s", c.Reason, d.Reason))
	}
	return out
}
