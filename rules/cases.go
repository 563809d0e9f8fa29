package rules

import (
	"fmt"
	"slices"
	"strconv"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/egress-authz/egress-authz/internal/when"
)

// Case is one test case of a rule set, as the compliance team writes them
// beside the rules: a request and the decision it must get.
//
//	cases:
//	  - name: checkout charges Stripe
//	    principal: spiffe://cluster.local/ns/payments/sa/checkout
//	    method: POST                               # default GET
//	    url: https://api.stripe.com/v1/charges     # or sni: api.stripe.com (TLS passthrough; port: 443 by default)
//	    expect: allow                              # allow | deny
//	    rule: payments-stripe-charges              # optional: the deciding rule ("" for none)
//	    reason: no-matching-rule                   # optional
//	    at: 2027-07-01                             # optional: decide as of this day (00:00 UTC) or RFC 3339 time
type Case struct {
	Name      string
	Principal string
	Method    string // empty: GET; never set with SNI
	URL       string // scheme://authority/target, or empty with SNI
	SNI       string // server name of a TLS-passthrough connection
	Port      int    // SNI only; 0: 443
	Expect    Action // Allow or Deny
	Rule      string // the expected deciding rule, when HasRule
	HasRule   bool
	Reason    Reason    // the expected reason; empty: not checked
	At        time.Time // zero: the time the cases run

	Pos    Pos // where the case starts
	URLPos Pos // where its url (or sni) is, for errors about it
}

// caseKeys are the keys a case may have.
var caseKeys = []string{"name", "principal", "method", "url", "sni", "port", "expect", "rule", "reason", "at"}

// caseReasons are the reasons a case may expect: every reason a rule set
// decides with, which is all but audit-unavailable (the decision log's).
func caseReasons() []Reason {
	return slices.DeleteFunc(Reasons(), func(r Reason) bool { return r == ReasonAuditUnavailable })
}

// ParseCases parses a test-case file: a mapping with one key, cases, a list
// of cases. Every problem is reported, as an ErrorList, with its
// file:line:col.
func ParseCases(src Source) ([]Case, error) {
	p := &parser{name: src.Name, set: &Set{}}
	var cases []Case
	p.documents(src, "empty case file: expected \"cases:\" and a list of cases", func(doc *yaml.Node) {
		cases = append(cases, p.caseDocument(doc)...)
	})
	names := map[string]Pos{}
	for _, c := range cases {
		if prev, dup := names[c.Name]; dup {
			p.add(Diagnostic{Pos: c.Pos, Msg: fmt.Sprintf("case name %s already used at %s", quoteShort(c.Name), prev)})
		} else {
			names[c.Name] = c.Pos
		}
	}
	if len(p.errs) > 0 {
		return nil, p.list()
	}
	return cases, nil
}

func (p *parser) caseDocument(doc *yaml.Node) []Case {
	if len(doc.Content) == 0 || doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null" {
		p.errorf(doc, "empty document: expected \"cases:\" and a list of cases")
		return nil
	}
	root := doc.Content[0]
	// As for a rule set (see parser.document), nothing is quoted and only
	// the shape is checked until the document has a list of cases.
	p.known = isCaseFile(root)
	defer func() { p.known = false }()
	var list *yaml.Node
	if !p.fields(root, "case file", []string{"cases"}, func(key string, k, v *yaml.Node) { list = v }) {
		return nil
	}
	if list == nil {
		p.errorf(root, "missing cases (a list of cases)")
		return nil
	}
	if list.Kind != yaml.SequenceNode {
		p.errorf(list, "cases must be a list, got %s", p.describe(list))
		return nil
	}
	var out []Case
	for _, n := range list.Content {
		if c, ok := p.testCase(n); ok {
			out = append(out, c)
		}
	}
	return out
}

func (p *parser) testCase(n *yaml.Node) (Case, bool) {
	c := Case{Pos: Pos{File: p.name, Line: n.Line, Col: n.Column}}
	before := p.nerrs()
	var nameNode, urlNode, sniNode, expectNode, methodNode, portNode *yaml.Node
	ok := p.fields(n, "case", caseKeys, func(key string, k, v *yaml.Node) {
		s, ok := p.scalar(v, key)
		if !ok {
			return
		}
		switch key {
		case "name":
			nameNode, c.Name = v, s
		case "principal":
			c.Principal = s
		case "method":
			methodNode, c.Method = v, s
			if !IsToken(s) {
				p.errorf(v, "method %s is not an HTTP method", quoteShort(s))
			}
		case "url":
			urlNode, c.URL = v, s
			c.URLPos = Pos{File: p.name, Line: v.Line, Col: v.Column}
		case "sni":
			sniNode, c.SNI = v, s
			c.URLPos = Pos{File: p.name, Line: v.Line, Col: v.Column}
		case "port":
			portNode = v
			port, err := strconv.Atoi(s)
			if err != nil || port < 1 || port > 65535 {
				p.errorf(v, "port %s is not a port number (1-65535)", quoteShort(s))
			}
			c.Port = port
		case "expect":
			expectNode = v
			switch Action(s) {
			case Allow, Deny:
				c.Expect = Action(s)
			default:
				p.errorf(v, "expect must be allow or deny, got %s", quoteShort(s))
			}
		case "rule":
			c.Rule, c.HasRule = s, true
			if s != "" && !ruleIDPattern.MatchString(s) {
				p.errorf(v, "rule %s is not a rule id (lower-case letters, digits and '-'); write rule: \"\" to expect that no rule decides", quoteShort(s))
			}
		case "reason":
			c.Reason = Reason(s)
			if !slices.Contains(caseReasons(), c.Reason) {
				p.errorf(v, "reason %s is not a reason a decision can have (one of %s)", quoteShort(s), reasonList())
			}
		case "at":
			t, err := when.ParseTime(s)
			if err != nil {
				p.errorf(v, "at: %v", err)
			}
			c.At = t
		}
	})
	if !ok {
		return c, false
	}
	if nameNode == nil || c.Name == "" {
		p.errorf(n, "case has no name")
	}
	what := "case " + quoteShort(c.Name)
	switch {
	case urlNode == nil && sniNode == nil:
		p.errorf(n, "%s has neither url nor sni", what)
	case urlNode != nil && sniNode != nil:
		p.errorf(sniNode, "%s has both url and sni: a request is either HTTP (url) or TLS passthrough (sni)", what)
	case sniNode != nil && methodNode != nil:
		p.errorf(methodNode, "%s: a TLS-passthrough (sni) request has no method", what)
	case urlNode != nil && portNode != nil:
		p.errorf(portNode, "%s: port is for sni; write the port in the url (https://host:8443/...)", what)
	}
	if expectNode == nil {
		p.errorf(n, "%s has no expect (allow or deny)", what)
	}
	if c.Expect == Allow {
		if c.HasRule && c.Rule == "" {
			p.errorf(n, "%s expects allow with rule \"\": an allowed request is always allowed by a rule", what)
		}
		if c.Reason != "" && c.Reason != ReasonAllowed {
			p.errorf(n, "%s expects allow with reason %s: an allowed request's reason is %s", what, c.Reason, ReasonAllowed)
		}
	}
	if c.Expect == Deny && c.Reason == ReasonAllowed {
		p.errorf(n, "%s expects deny with reason %s", what, ReasonAllowed)
	}
	if c.SNI != "" && c.Port == 0 {
		c.Port = 443
	}
	return c, p.nerrs() == before
}

// isCaseFile reports whether a document's root is a mapping whose cases
// key holds a list.
func isCaseFile(root *yaml.Node) bool {
	if root.Kind != yaml.MappingNode {
		return false
	}
	for i := 0; i+1 < len(root.Content); i += 2 {
		if k := root.Content[i]; k.Kind == yaml.ScalarNode && k.Value == "cases" {
			return root.Content[i+1].Kind == yaml.SequenceNode
		}
	}
	return false
}

func reasonList() string {
	known := caseReasons()
	s := make([]string, len(known))
	for i, r := range known {
		s[i] = string(r)
	}
	return orList(s)
}
