package rules

// The lint policy: what a compliance team requires of every rule beyond a
// valid file (an owner, a ticket, an expiry within a horizon), given as
// flags or as a small YAML file kept beside the rules.

import (
	"fmt"
	"slices"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/egress-authz/egress-authz/internal/when"
)

// Placeholder is the value "rules suggest" writes for a rule's owner and
// ticket. Policy.Check warns of it wherever it is, and counts it as
// missing where the policy requires the field, so that a proposal merged
// unread fails "rules lint --strict".
const Placeholder = "TODO"

// PolicyKind is the kind of a lint policy file.
const PolicyKind = "LintPolicy"

// Field is a rule field a Policy can require.
type Field string

// The fields a Policy can require.
const (
	FieldOwner       Field = "owner"
	FieldTicket      Field = "ticket"
	FieldExpires     Field = "expires"
	FieldDescription Field = "description"
)

// requirable is every Field, in the order diagnostics name them.
var requirable = []Field{FieldOwner, FieldTicket, FieldExpires, FieldDescription}

// Policy is what every rule of a set must have beyond a valid format. The
// zero value requires nothing (Check then only warns of placeholders).
type Policy struct {
	// Require lists the fields every rule must set, to something other
	// than Placeholder. Expires is required of allow rules only: a deny
	// rule that expires opens access, which no policy means to ask for.
	Require []Field
	// MaxExpiry, when positive, is how far ahead an allow rule's expires
	// may lie, from the day the check runs; an allow rule without expires
	// exceeds it.
	MaxExpiry time.Duration
	// WarnExpiry, when positive, is the window of lint's expiry warnings
	// that the policy file sets (the --warn-expiry flag wins over it).
	WarnExpiry time.Duration

	// From says where each setting came from, for the diagnostics: a flag
	// ("--require") or a place in a policy file.
	RequireFrom, MaxExpiryFrom string
}

// ParseFields reads a comma-separated list of fields ("owner,ticket"), as
// the --require flag takes it.
func ParseFields(s string) ([]Field, error) {
	var out []Field
	for _, f := range strings.Split(s, ",") {
		f = strings.TrimSpace(f)
		if f == "" {
			continue
		}
		if !slices.Contains(requirable, Field(f)) {
			return nil, fmt.Errorf("%s is not a field a policy can require (%s)", quoteShort(f), fieldList())
		}
		if !slices.Contains(out, Field(f)) {
			out = append(out, Field(f))
		}
	}
	return out, nil
}

func fieldList() string {
	s := make([]string, len(requirable))
	for i, f := range requirable {
		s[i] = string(f)
	}
	return strings.Join(s, ", ")
}

// Check returns the rules of set that break the policy, as errors at each
// rule's position, and warnings for placeholders left where the policy
// does not require the field.
func (p *Policy) Check(set *Set, now time.Time) (errs, warnings []Diagnostic) {
	say := func(to *[]Diagnostic, r *Rule, format string, args ...any) {
		*to = append(*to, Diagnostic{Pos: r.Pos, Msg: "rule " + quoteShort(r.ID) + ": " + fmt.Sprintf(format, args...), Doc: "lint-policy"})
	}
	from := func(s, def string) string {
		if s == "" {
			return def
		}
		return s
	}
	today := now.UTC().Truncate(24 * time.Hour)
	for _, r := range set.Rules {
		for _, f := range requirable {
			v := fieldValue(r, f)
			required := slices.Contains(p.Require, f) && (f != FieldExpires || r.Action == Allow)
			switch {
			case required && v == "":
				say(&errs, r, "no %s, which the lint policy requires (%s)", f, from(p.RequireFrom, "--require"))
			case required && v == Placeholder:
				say(&errs, r, "%s is the placeholder %s, which the lint policy does not accept (%s)", f, Placeholder, from(p.RequireFrom, "--require"))
			case v == Placeholder:
				say(&warnings, r, "%s is the placeholder %s (\"rules suggest\" writes it): fill it in", f, Placeholder)
			}
		}
		if p.MaxExpiry <= 0 || r.Action != Allow {
			continue
		}
		limit := today.Add(p.MaxExpiry)
		horizon := fmt.Sprintf("the lint policy's maxExpiry (%s) is %s from today", from(p.MaxExpiryFrom, "--max-expiry"), humanDays(p.MaxExpiry))
		switch {
		case r.Expires.IsZero():
			if !slices.Contains(p.Require, FieldExpires) { // else said above
				say(&errs, r, "no expires, and %s: an allow rule must expire by %s", horizon, limit.Format(time.DateOnly))
			}
		case r.Expires.After(limit):
			say(&errs, r, "expires on %s, after %s: %s", r.Expires.Format(time.DateOnly), limit.Format(time.DateOnly), horizon)
		}
	}
	return errs, warnings
}

func fieldValue(r *Rule, f Field) string {
	switch f {
	case FieldOwner:
		return r.Owner
	case FieldTicket:
		return r.Ticket
	case FieldDescription:
		return r.Description
	case FieldExpires:
		if !r.Expires.IsZero() {
			return r.Expires.Format(time.DateOnly)
		}
	}
	return ""
}

// policyKeys are the keys of a lint policy file.
var policyKeys = []string{"apiVersion", "kind", "require", "maxExpiry", "warnExpiry"}

// ParsePolicy parses a lint policy file:
//
//	apiVersion: egress-authz/v1
//	kind: LintPolicy
//	require: [owner, ticket, expires]   # owner, ticket, expires, description
//	maxExpiry: 180d                     # allow rules expire at most this far ahead
//	warnExpiry: 14d                     # optional: lint's --warn-expiry
//
// Unknown keys are errors; every problem is reported, as an ErrorList,
// with its file:line:col.
func ParsePolicy(src Source) (*Policy, error) {
	p := &parser{name: src.Name, set: &Set{}}
	pol := &Policy{}
	docs := 0
	p.documents(src, "empty lint policy file: expected apiVersion, kind and require or maxExpiry", func(doc *yaml.Node) {
		docs++
		if docs > 1 {
			p.errorf(doc, "a lint policy file holds one document")
			return
		}
		p.policyDocument(doc, pol)
	})
	if len(p.errs) > 0 {
		return nil, p.list()
	}
	return pol, nil
}

func (p *parser) policyDocument(doc *yaml.Node, pol *Policy) {
	if len(doc.Content) == 0 || doc.Content[0].Kind == yaml.ScalarNode && doc.Content[0].Tag == "!!null" {
		p.errorf(doc, "empty document: expected apiVersion, kind and require or maxExpiry")
		return
	}
	root := doc.Content[0]
	p.known = isKind(root, PolicyKind)
	defer func() { p.known = false }()
	var api, kind *yaml.Node
	duration := func(v *yaml.Node, key string) (time.Duration, string) {
		s, ok := p.scalar(v, key)
		if !ok {
			return 0, ""
		}
		d, err := when.ParseDuration(s)
		if err != nil || d <= 0 {
			p.errorf(v, "%s must be a duration like 180d or 72h", key)
			return 0, ""
		}
		return d, Pos{File: p.name, Line: v.Line, Col: v.Column}.String()
	}
	ok := p.fields(root, "lint policy", policyKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "apiVersion":
			api = v
			if s, ok := p.scalar(v, key); ok && s != APIVersion {
				p.errorf(v, "apiVersion must be %q", APIVersion)
			}
		case "kind":
			kind = v
			if s, ok := p.scalar(v, key); ok && s != PolicyKind {
				p.errorf(v, "kind must be %q", PolicyKind)
			}
		case "require":
			if !p.known {
				return
			}
			for _, e := range p.strings(v, key) {
				f := Field(e.Value)
				if !slices.Contains(requirable, f) {
					p.errorf(e, "require: %s is not a field a policy can require (%s)", quoteShort(e.Value), fieldList())
					continue
				}
				if !slices.Contains(pol.Require, f) {
					pol.Require = append(pol.Require, f)
				}
			}
			pol.RequireFrom = Pos{File: p.name, Line: v.Line, Col: v.Column}.String()
		case "maxExpiry":
			if p.known {
				pol.MaxExpiry, pol.MaxExpiryFrom = duration(v, key)
			}
		case "warnExpiry":
			if p.known {
				pol.WarnExpiry, _ = duration(v, key)
			}
		}
	})
	if !ok {
		return
	}
	if api == nil {
		p.errorf(root, "missing apiVersion (want %q)", APIVersion)
	}
	if kind == nil {
		p.errorf(root, "missing kind (want %q)", PolicyKind)
	}
}

// isKind reports whether a document's root is a mapping with the right
// apiVersion and the given kind.
func isKind(root *yaml.Node, kind string) bool {
	if root.Kind != yaml.MappingNode {
		return false
	}
	var api, k string
	for i := 0; i+1 < len(root.Content); i += 2 {
		key, v := root.Content[i], root.Content[i+1]
		if key.Kind != yaml.ScalarNode || v.Kind != yaml.ScalarNode {
			continue
		}
		switch key.Value {
		case "apiVersion":
			api = v.Value
		case "kind":
			k = v.Value
		}
	}
	return api == APIVersion && k == kind
}
