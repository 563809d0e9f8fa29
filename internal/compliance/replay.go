package compliance

import (
	"context"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/rules"
)

// Request returns the request a decision record was made for, in the form
// the rule table takes, and false for a record no table decided (reason
// invalid-request: the CheckRequest itself was unusable).
//
// The record holds the normalized host, port and path, and deciding those
// again gives the same answer as the raw ones did: normalization is
// idempotent, a host or path that could not be normalized was recorded
// raw, and a TLS-passthrough connection is the one kind of request without
// a method. A query kept with --audit-keep-query is removed again by the
// table.
func Request(r *audit.Record) (rules.Request, bool) {
	if r.Reason == string(rules.ReasonInvalidRequest) {
		return rules.Request{}, false
	}
	req := rules.Request{Principal: r.Principal, Host: r.Host, Port: r.Port, Method: r.Method, Path: r.Path}
	req.SNI = r.Method == ""
	if req.SNI {
		req.Path = ""
	}
	return req, true
}

// Outcome is a decision in short: what it was, by which rule, why.
type Outcome struct {
	Decision string       `json:"decision"`
	Rule     string       `json:"rule"`
	Reason   rules.Reason `json:"reason,omitempty"`
}

// String writes the outcome as the text outputs do: "allow by RULE",
// "deny (no-matching-rule)".
func (o Outcome) String() string {
	switch {
	case o.Rule != "":
		return fmt.Sprintf("%s by %s", o.Decision, o.Rule)
	case o.Decision == rules.DecisionWord(true):
		return o.Decision
	}
	return fmt.Sprintf("%s (%s)", o.Decision, o.Reason)
}

// OutcomeOf returns the short form of d.
func OutcomeOf(d *rules.Decision) Outcome {
	o := Outcome{Decision: rules.DecisionWord(d.Allow), Reason: d.Reason}
	if d.Rule != nil {
		o.Rule = d.Rule.ID
	}
	return o
}

// Cause says why a replayed request is decided differently.
type Cause string

// The causes of a Group.
const (
	// CauseChange: the old rule set decides it as recorded, the new one
	// does not. The change under review does this.
	CauseChange Cause = "change"
	// CauseBefore: the old rule set already decides it differently from
	// the record (the log was written under another rule set, or a rule
	// has expired since), and the new one does too.
	CauseBefore Cause = "before"
)

// Group is recorded requests that would now be decided alike, differently
// from how they were: same caller, host, port, method and path pattern,
// same outcome then and now. The pattern is made as "rules suggest" makes
// one: an identifier-like segment is "*" where the group's paths differ,
// and literal otherwise.
type Group struct {
	Principal string    `json:"principal"`
	Host      string    `json:"host"`
	Port      int       `json:"port,omitempty"`
	TLS       bool      `json:"tls_passthrough,omitempty"`
	Method    string    `json:"method,omitempty"`
	Path      string    `json:"path,omitempty"` // a path pattern
	Example   string    `json:"example_path,omitempty"`
	Was       Outcome   `json:"was"`
	Now       Outcome   `json:"now"`
	Cause     Cause     `json:"cause"`
	Count     int       `json:"count"`
	First     time.Time `json:"first"`
	Last      time.Time `json:"last"`
}

// Report is the result of Replay.
type Report struct {
	// Records is how many enforced decision records were read; Skipped
	// how many of them could not be decided again (invalid-request).
	Records, Skipped int
	// Unchanged is how many replayed records the new rule set decides as
	// recorded, decision and rule.
	Unchanged int
	// Changed is the records decided the other way now (allow to deny or
	// deny to allow), most requests first; RuleChanged those with the same
	// decision by another rule or for another reason.
	Changed, RuleChanged []Group
	// ChangedCount and RuleChangedCount are the records in each.
	ChangedCount, RuleChangedCount int
	// From and To are the times of the oldest and newest record read.
	From, To time.Time
}

// Replay decides again every enforced decision record of s that f selects,
// with the new table at now, and reports those decided differently from
// the record. old, the table the change starts from, is only used to tell
// the change's effects from earlier ones (Group.Cause).
func Replay(ctx context.Context, s audit.Store, f audit.Filter, old, new *rules.Table, now time.Time) (*Report, error) {
	rep := &Report{}
	// Records are grouped as Suggest groups requests: by caller, host,
	// port, method and outcome, and within those by path skeleton, an
	// identifier segment written "*" only where the group's paths differ.
	type key struct {
		principal, host string
		port            int
		tls             bool
		method          string
		was, now        Outcome
		cause           Cause
	}
	type groupKey struct {
		key
		sk *skeleton
	}
	mergers := map[key]*pathMerger{}
	groups := map[groupKey]*Group{}
	var order []groupKey
	_, err := s.Query(ctx, f, func(r *audit.Record) error {
		if !r.Enforced {
			return nil // a dry-run rule's would-be outcome, not a decision
		}
		rep.Records++
		if rep.From.IsZero() || r.Time.Before(rep.From) {
			rep.From = r.Time
		}
		if r.Time.After(rep.To) {
			rep.To = r.Time
		}
		req, ok := Request(r)
		if !ok {
			rep.Skipped++
			return nil
		}
		was := Outcome{Decision: r.Decision, Rule: r.Rule, Reason: rules.Reason(r.Reason)}
		nd := new.Decide(req, now)
		got := OutcomeOf(&nd)
		if got == was {
			rep.Unchanged++
			return nil
		}
		cause := CauseChange
		if od := old.Decide(req, now); OutcomeOf(&od) != was {
			cause = CauseBefore
		}
		k := key{principal: r.Principal, host: r.Host, port: r.Port, tls: req.SNI, method: r.Method,
			was: was, now: got, cause: cause}
		m := mergers[k]
		if m == nil {
			m = &pathMerger{}
			mergers[k] = m
		}
		gk := groupKey{k, m.add(r.Path)}
		g := groups[gk]
		if g == nil {
			g = &Group{Principal: k.principal, Host: k.host, Port: k.port, TLS: k.tls, Method: k.method,
				Example: r.Path, Was: was, Now: got, Cause: cause, First: r.Time, Last: r.Time}
			groups[gk] = g
			order = append(order, gk)
		}
		g.Count++
		if r.Time.Before(g.First) {
			g.First = r.Time
		}
		if r.Time.After(g.Last) {
			g.Last, g.Example = r.Time, r.Path
		}
		if got.Decision != was.Decision {
			rep.ChangedCount++
		} else {
			rep.RuleChangedCount++
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("replay decisions: %w", err)
	}
	for _, gk := range order {
		g := groups[gk]
		if !g.TLS {
			g.Path = gk.sk.pattern()
		}
		if g.Now.Decision != g.Was.Decision {
			rep.Changed = append(rep.Changed, *g)
		} else {
			rep.RuleChanged = append(rep.RuleChanged, *g)
		}
	}
	for _, l := range [][]Group{rep.Changed, rep.RuleChanged} {
		sort.Slice(l, func(i, j int) bool {
			a, b := &l[i], &l[j]
			if a.Count != b.Count {
				return a.Count > b.Count
			}
			return a.sortKey() < b.sortKey()
		})
	}
	return rep, nil
}

func (g *Group) sortKey() string {
	return g.Principal + " " + g.Host + " " + strconv.Itoa(g.Port) + " " + g.Method + " " + g.Path + " " + string(g.Cause)
}

// Requests reads the requests of the enforced decision records f selects,
// for Suggest. Left out are records no table decided
// (invalid-request) and those of callers outside the trust domains of the
// rule set that decided them (untrusted-trust-domain): trusting a new
// trust domain is a decision for a person, not something to learn from
// traffic. byReason counts every record read by its recorded reason.
func Requests(ctx context.Context, s audit.Store, f audit.Filter) (reqs []rules.Request, byReason map[string]int, err error) {
	byReason = map[string]int{}
	f.DryRun = false
	_, err = s.Query(ctx, f, func(r *audit.Record) error {
		if !r.Enforced {
			return nil
		}
		byReason[r.Reason]++
		if r.Reason == string(rules.ReasonUntrustedDomain) {
			return nil
		}
		if req, ok := Request(r); ok {
			reqs = append(reqs, req)
		}
		return nil
	})
	if err != nil {
		return nil, nil, fmt.Errorf("read decisions: %w", err)
	}
	return reqs, byReason, nil
}
