package compliance

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/rules"
)

// The record of processing (GDPR Art. 30) as observed: the processor
// register of the rule sets that decided, with who sent what to each
// processor, and what the traffic shows is wrong with the register.

// Finding kinds of a ProcessingReport.
const (
	// FindingUnregisteredRecipient: traffic allowed to a host outside
	// the company by a rule that names no processor.
	FindingUnregisteredRecipient = "unregistered-recipient"
	// FindingUnusedProcessor: a processor of the register that received
	// nothing in the period.
	FindingUnusedProcessor = "unused-processor"
	// FindingTransferWithoutSafeguard: a processor outside the EEA whose
	// declared transfer is no lawful ground (rules.Processor.Safeguard).
	FindingTransferWithoutSafeguard = "transfer-without-safeguard"
	// FindingExpiredRuleUsed: a rule decided after its expiry date (an
	// older rule-set version served it, or the clock was off).
	FindingExpiredRuleUsed = "expired-rule-used"
	// FindingUnarchivedRuleSet: decisions name a rule-set version the
	// archive does not keep; their processors' metadata is today's.
	FindingUnarchivedRuleSet = "unarchived-ruleset"
)

// ProcessingReport is the register as observed over [Since, Until).
type ProcessingReport struct {
	Since      time.Time         `json:"since"`
	Until      time.Time         `json:"until"`
	RuleSets   []string          `json:"ruleSets"` // the versions that decided in the period, oldest first
	Decisions  int               `json:"decisions"`
	Processors []ProcessorReport `json:"processors"`
	Findings   []Finding         `json:"findings"`
}

// ProcessorReport is one processor: its entry in the register (as the
// newest rule-set version that sent it traffic declares it, else the
// current one), the rules that reach it, and the workloads that did.
type ProcessorReport struct {
	ID                string        `json:"id"`
	LegalName         string        `json:"legalName"`
	Role              string        `json:"role"`
	Country           string        `json:"country"`
	Transfer          string        `json:"transfer"`
	TransferReference string        `json:"transferReference,omitempty"`
	DPA               string        `json:"dpa"`
	Purposes          []string      `json:"purposes"`
	DataCategories    []string      `json:"dataCategories"`
	DataSubjects      []string      `json:"dataSubjects"`
	RuleSet           string        `json:"ruleSet"` // the version the entry is from
	Requests          int           `json:"requests"`
	Denied            int           `json:"denied"`
	Rules             []RuleUse     `json:"rules"`
	Workloads         []WorkloadUse `json:"workloads"`
	processor         *rules.Processor
	lastSeen          time.Time
}

// RuleUse is a rule, as one rule-set version wrote it, that decided
// traffic to a processor: a rule edited between versions is one entry per
// version, each with that version's purposes and data categories.
type RuleUse struct {
	ID             string    `json:"id"`
	RuleSet        string    `json:"ruleSet"`
	Owner          string    `json:"owner"`
	Ticket         string    `json:"ticket"`
	Hosts          []string  `json:"hosts"`
	Purposes       []string  `json:"purposes"`
	DataCategories []string  `json:"dataCategories"`
	Requests       int       `json:"requests"`
	FirstSeen      time.Time `json:"firstSeen"`
	LastSeen       time.Time `json:"lastSeen"`
}

// WorkloadUse is one workload's traffic to a processor.
type WorkloadUse struct {
	Principal string    `json:"principal"`
	Namespace string    `json:"namespace"`
	Requests  int       `json:"requests"`
	Denied    int       `json:"denied"`
	FirstSeen time.Time `json:"firstSeen"`
	LastSeen  time.Time `json:"lastSeen"`
}

// Finding is something the register and the traffic disagree on.
type Finding struct {
	Kind      string    `json:"kind"`
	Detail    string    `json:"detail"`
	Processor string    `json:"processor,omitempty"`
	Rule      string    `json:"rule,omitempty"`
	RuleSet   string    `json:"ruleSet,omitempty"`
	Host      string    `json:"host,omitempty"`
	Requests  int       `json:"requests,omitempty"`
	Workloads int       `json:"workloads,omitempty"`
	FirstSeen time.Time `json:"firstSeen,omitzero"`
	LastSeen  time.Time `json:"lastSeen,omitzero"`
}

// ProcessingOptions say what a report covers and where rule sets come from.
type ProcessingOptions struct {
	Since, Until time.Time
	// Current is the rule set served now (the processors declared today),
	// or nil: then the newest version that decided in the period is.
	Current *rules.Set
	// RuleSet returns an archived version (see ArchivedSet); an error
	// wrapping audit.ErrRuleSetNotFound is a finding, any other stops the
	// report.
	RuleSet func(ctx context.Context, version string) (*rules.Set, error)
}

// versionUse is what the report knows of one rule-set version.
type versionUse struct {
	set      *rules.Set             // nil when not archived
	rules    map[string]*rules.Rule // set's, or the current set's, by id
	hosts    map[string]string      // processorOfHost, as asked
	first    time.Time
	last     time.Time
	records  int
	archived bool
	err      error // why the archive's copy could not be used, if it could not
}

type ruleKey struct{ version, rule string }

// noSet stands in for the rule set of a version no one knows: only
// Kubernetes service names are the company's.
var noSet = &rules.Set{}

// unsafeKey is a processor as one version declares it.
type unsafeKey struct{ processor, version string }

type hostKey struct{ rule, version, host string }

type unsafeUse struct {
	processor *rules.Processor
	requests  int
}

type recipient struct {
	requests    int
	workloads   map[string]bool
	first, last time.Time
}

// Processing reads the decisions of [opts.Since, opts.Until) from store
// and returns the observed register.
func Processing(ctx context.Context, store audit.Store, opts ProcessingOptions) (*ProcessingReport, error) {
	rep := &ProcessingReport{Since: opts.Since, Until: opts.Until, RuleSets: []string{}, Processors: []ProcessorReport{}, Findings: []Finding{}}
	versions := map[string]*versionUse{}
	byID := map[string]*ProcessorReport{}
	ruleUses := map[string]map[ruleKey]*RuleUse{}     // processor -> uses
	workloads := map[string]map[string]*WorkloadUse{} // processor -> principal -> use
	unregistered := map[hostKey]*recipient{}
	expired := map[ruleKey]*recipient{}
	unlawful := map[unsafeKey]*unsafeUse{} // allowed traffic to a processor whose version's transfer has no safeguard
	var order []string

	version := func(v string) (*versionUse, error) {
		if vu, ok := versions[v]; ok {
			return vu, nil
		}
		vu := &versionUse{rules: map[string]*rules.Rule{}, hosts: map[string]string{}}
		versions[v] = vu
		order = append(order, v)
		if opts.Current != nil && opts.Current.Version == v {
			vu.set, vu.archived = opts.Current, true
		} else if opts.RuleSet != nil && v != "" {
			set, err := opts.RuleSet(ctx, v)
			switch {
			case err == nil:
				vu.set, vu.archived = set, true
			case errors.Is(err, audit.ErrRuleSetNotFound):
			case ctx.Err() != nil:
				return nil, ctx.Err()
			default:
				vu.err = err // altered, or unparsable by this build: reported, not fatal
			}
		}
		if set := cmp.Or(vu.set, opts.Current); set != nil {
			for _, r := range set.Rules {
				vu.rules[r.ID] = r
			}
		}
		return vu, nil
	}
	processor := func(id string) *ProcessorReport {
		p := byID[id]
		if p == nil {
			p = &ProcessorReport{ID: id}
			byID[id] = p
			ruleUses[id] = map[ruleKey]*RuleUse{}
			workloads[id] = map[string]*WorkloadUse{}
		}
		return p
	}

	_, err := store.Query(ctx, audit.Filter{Since: opts.Since, Until: opts.Until, Enforced: new(true)}, func(r *audit.Record) error {
		rep.Decisions++
		vu, err := version(r.RuleSet)
		if err != nil {
			return err
		}
		vu.records++
		if vu.first.IsZero() || r.Time.Before(vu.first) {
			vu.first = r.Time
		}
		if r.Time.After(vu.last) {
			vu.last = r.Time
		}
		set := cmp.Or(vu.set, opts.Current)
		rule := vu.rules[r.Rule]
		if rule != nil && !rule.Expires.IsZero() && !r.Time.Before(rule.Expires) {
			note(expired, ruleKey{r.RuleSet, r.Rule}, r)
		}
		id := r.Processor
		if id == "" && r.Decision == audit.Deny && set != nil {
			var ok bool
			if id, ok = vu.hosts[r.Host]; !ok {
				id = processorOfHost(set, r.Host)
				vu.hosts[r.Host] = id
			}
		}
		if id == "" {
			if r.Decision == audit.Allow && r.Rule != "" && !cmp.Or(set, noSet).Internal(r.Host) {
				recipient := note(unregistered, hostKey{r.Rule, r.RuleSet, r.Host}, r)
				recipient.workloads[r.Principal] = true
			}
			return nil
		}
		p := processor(id)
		p.Requests++
		if r.Decision == audit.Deny {
			p.Denied++
		} else if set != nil {
			if pr := set.Processor(id); pr != nil && pr.Safeguard() != "" {
				k := unsafeKey{id, set.Version}
				if unlawful[k] == nil {
					unlawful[k] = &unsafeUse{processor: pr}
				}
				unlawful[k].requests++
			}
		}
		if set != nil && r.Time.After(p.lastSeen) {
			if pr := set.Processor(id); pr != nil {
				p.processor, p.RuleSet, p.lastSeen = pr, set.Version, r.Time
			}
		}
		w := workloads[id][r.Principal]
		if w == nil {
			w = &WorkloadUse{Principal: r.Principal, Namespace: r.Namespace, FirstSeen: r.Time, LastSeen: r.Time}
			workloads[id][r.Principal] = w
		}
		w.Requests++
		if r.Decision == audit.Deny {
			w.Denied++
		}
		w.FirstSeen, w.LastSeen = minTime(w.FirstSeen, r.Time), maxTime(w.LastSeen, r.Time)
		if r.Decision == audit.Allow && r.Rule != "" {
			k := ruleKey{r.RuleSet, r.Rule}
			u := ruleUses[id][k]
			if u == nil {
				u = &RuleUse{ID: r.Rule, RuleSet: r.RuleSet, Owner: r.Owner, Ticket: r.Ticket, Hosts: []string{}, Purposes: []string{}, DataCategories: []string{}, FirstSeen: r.Time, LastSeen: r.Time}
				if rule != nil {
					u.Hosts = slices.Clone(rule.Hosts)
					u.Purposes = nonNil(set.RulePurposes(rule))
					u.DataCategories = nonNil(set.RuleDataCategories(rule))
				}
				ruleUses[id][k] = u
			}
			u.Requests++
			u.FirstSeen, u.LastSeen = minTime(u.FirstSeen, r.Time), maxTime(u.LastSeen, r.Time)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}

	// The versions, oldest first; the register today is the current set,
	// else the newest version that decided.
	slices.SortFunc(order, func(a, b string) int { return versions[a].first.Compare(versions[b].first) })
	rep.RuleSets = append(rep.RuleSets, order...)
	register := opts.Current
	if register == nil {
		for i := len(order) - 1; i >= 0; i-- {
			if s := versions[order[i]].set; s != nil {
				register = s
				break
			}
		}
	}
	for _, v := range order {
		vu := versions[v]
		if vu.archived {
			continue
		}
		why := "which the archive does not keep"
		if vu.err != nil {
			why = "whose archived copy cannot be used (" + vu.err.Error() + ")"
		}
		how := "the rule set given with --rules (the one served, on the admin API) writes them"
		if opts.Current == nil {
			how = "no rule set known here writes them: rules, purposes and whether a host is the company's are unknown"
		}
		rep.Findings = append(rep.Findings, Finding{Kind: FindingUnarchivedRuleSet, RuleSet: v, Requests: vu.records, FirstSeen: vu.first, LastSeen: vu.last,
			Detail: fmt.Sprintf("%s by rule-set version %q, %s: their rules are reported as %s", count(vu.records, "decision"), v, why, how)})
	}
	if register != nil {
		for _, pr := range register.Processors {
			p := processor(pr.ID)
			if p.processor == nil {
				p.processor, p.RuleSet = pr, register.Version
			}
		}
	}

	ids := make([]string, 0, len(byID))
	for id := range byID {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	for _, id := range ids {
		p := byID[id]
		if pr := p.processor; pr != nil {
			p.LegalName, p.Role, p.Country, p.Transfer, p.TransferReference, p.DPA = pr.LegalName, string(pr.Role), pr.Country, string(pr.Transfer), pr.TransferReference, pr.DPA
			p.Purposes, p.DataCategories, p.DataSubjects = nonNil(pr.Purposes), nonNil(pr.DataCategories), nonNil(pr.DataSubjects)
			// Declared so now, with no traffic under that version: the
			// register is wrong before any data moved.
			if why := pr.Safeguard(); why != "" && unlawful[unsafeKey{id, p.RuleSet}] == nil {
				rep.Findings = append(rep.Findings, Finding{Kind: FindingTransferWithoutSafeguard, Processor: id, RuleSet: p.RuleSet,
					Detail: fmt.Sprintf("processor %s (%s, %s), as version %s declares it: %s", id, pr.LegalName, pr.Country, p.RuleSet, why)})
			}
		} else {
			p.Purposes, p.DataCategories, p.DataSubjects = []string{}, []string{}, []string{}
			rep.Findings = append(rep.Findings, Finding{Kind: FindingUnregisteredRecipient, Processor: id, Requests: p.Requests,
				Detail: fmt.Sprintf("decisions name processor %q, which no rule-set version known here declares", id)})
		}
		for _, u := range ruleUses[id] {
			p.Rules = append(p.Rules, *u)
		}
		slices.SortFunc(p.Rules, func(a, b RuleUse) int {
			return cmp.Or(strings.Compare(a.ID, b.ID), a.FirstSeen.Compare(b.FirstSeen))
		})
		for _, w := range workloads[id] {
			p.Workloads = append(p.Workloads, *w)
		}
		slices.SortFunc(p.Workloads, func(a, b WorkloadUse) int {
			return cmp.Or(b.Requests-a.Requests, strings.Compare(a.Principal, b.Principal))
		})
		if p.Rules == nil {
			p.Rules = []RuleUse{}
		}
		if p.Workloads == nil {
			p.Workloads = []WorkloadUse{}
		}
		if p.Requests-p.Denied == 0 && p.processor != nil {
			rep.Findings = append(rep.Findings, Finding{Kind: FindingUnusedProcessor, Processor: id, RuleSet: p.RuleSet,
				Detail: fmt.Sprintf("processor %s (%s) is declared and received no traffic from %s to %s: end the contract, or remove it from the register",
					id, p.LegalName, opts.Since.UTC().Format(time.DateOnly), opts.Until.UTC().Format(time.DateOnly))})
		}
		rep.Processors = append(rep.Processors, *p)
	}

	for k, u := range unlawful {
		pr := u.processor
		rep.Findings = append(rep.Findings, Finding{Kind: FindingTransferWithoutSafeguard, Processor: k.processor, RuleSet: k.version, Requests: u.requests,
			Detail: fmt.Sprintf("processor %s (%s, %s) received %s under version %s, which declares: %s", k.processor, pr.LegalName, pr.Country,
				count(u.requests, "allowed request"), k.version, pr.Safeguard())})
	}
	for k, rc := range unregistered {
		rep.Findings = append(rep.Findings, Finding{Kind: FindingUnregisteredRecipient, Rule: k.rule, RuleSet: k.version, Host: k.host,
			Requests: rc.requests, Workloads: len(rc.workloads), FirstSeen: rc.first, LastSeen: rc.last,
			Detail: fmt.Sprintf("rule %s allowed %s from %s to %s, outside the company, and names no processor",
				k.rule, count(rc.requests, "request"), count(len(rc.workloads), "workload"), k.host)})
	}
	for k, rc := range expired {
		exp := "on a day the archive does not say"
		if s := versions[k.version].set; s != nil {
			if r := s.Rule(k.rule); r != nil {
				exp = r.Expires.UTC().Format(time.DateOnly)
			}
		}
		rep.Findings = append(rep.Findings, Finding{Kind: FindingExpiredRuleUsed, Rule: k.rule, RuleSet: k.version, Requests: rc.requests, FirstSeen: rc.first, LastSeen: rc.last,
			Detail: fmt.Sprintf("rule %s of version %s, expired %s, decided %s from %s to %s", k.rule, k.version, exp, count(rc.requests, "request"),
				rc.first.UTC().Format(time.RFC3339), rc.last.UTC().Format(time.RFC3339))})
	}
	slices.SortFunc(rep.Findings, func(a, b Finding) int {
		return cmp.Or(strings.Compare(a.Kind, b.Kind), strings.Compare(a.Processor, b.Processor), strings.Compare(a.Rule, b.Rule),
			strings.Compare(a.RuleSet, b.RuleSet), strings.Compare(a.Host, b.Host))
	})
	return rep, nil
}

// note counts r in m[k].
func note[K comparable](m map[K]*recipient, k K, r *audit.Record) *recipient {
	rc := m[k]
	if rc == nil {
		rc = &recipient{workloads: map[string]bool{}, first: r.Time, last: r.Time}
		m[k] = rc
	}
	rc.requests++
	rc.first, rc.last = minTime(rc.first, r.Time), maxTime(rc.last, r.Time)
	return rc
}

// processorOfHost names the processor that an allow rule of set sends
// host to, so that a denied request to a processor counts as its; "" when
// none does, or more than one.
func processorOfHost(set *rules.Set, host string) string {
	id := ""
	for _, r := range set.Rules {
		if r.Action != rules.Allow || r.Processor == "" || r.Processor == id {
			continue
		}
		for _, h := range r.Hosts {
			if hostCovers(h, host) {
				if id != "" {
					return ""
				}
				id = r.Processor
				break
			}
		}
	}
	return id
}

// hostCovers reports whether a rule's host (a name, or "*.domain")
// matches a recorded host.
func hostCovers(pattern, host string) bool {
	host = strings.TrimSuffix(host, ".")
	if d, ok := strings.CutPrefix(pattern, "*."); ok {
		return len(host) > len(d)+1 && strings.HasSuffix(strings.ToLower(host), "."+strings.ToLower(d))
	}
	return strings.EqualFold(pattern, host)
}

func minTime(a, b time.Time) time.Time {
	if b.Before(a) {
		return b
	}
	return a
}

func maxTime(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return slices.Clone(s)
}

// count writes n things, in the plural unless n is 1.
func count(n int, thing string) string {
	if n == 1 {
		return "1 " + thing
	}
	return fmt.Sprintf("%d %ss", n, thing)
}
