package rules

// The processor register (GDPR Art. 28 and 30): the third parties a rule
// set lets personal data reach, declared beside the rules, with the
// vocabulary of the Fideslang taxonomy, and the checks lint makes of
// them.

import (
	_ "embed" // the taxonomy and the country lists are data files, with their sources
	"fmt"
	"slices"
	"strings"
	"sync"

	"go.yaml.in/yaml/v3"
)

// Role is a processor's role in the processing (GDPR Art. 4, 26, 28).
type Role string

// The roles a processor may have.
const (
	RoleProcessor       Role = "processor"
	RoleSubProcessor    Role = "sub-processor"
	RoleController      Role = "controller"
	RoleJointController Role = "joint-controller"
)

// Roles lists every Role, in the order the format reference names them.
var Roles = []Role{RoleProcessor, RoleSubProcessor, RoleController, RoleJointController}

// Transfer is the legal ground of a transfer of personal data to a
// processor (GDPR chapter V).
type Transfer string

// The transfer grounds.
const (
	TransferNone       Transfer = "none-needed" // the processor is in the EEA
	TransferAdequacy   Transfer = "adequacy"    // Art. 45 adequacy decision
	TransferDPF        Transfer = "dpf"         // EU-US Data Privacy Framework
	TransferSCC        Transfer = "scc"         // standard contractual clauses, Art. 46(2)(c)
	TransferBCR        Transfer = "bcr"         // binding corporate rules, Art. 47
	TransferDerogation Transfer = "derogation"  // Art. 49
)

// Transfers lists every Transfer, in the order the format reference names them.
var Transfers = []Transfer{TransferNone, TransferAdequacy, TransferDPF, TransferSCC, TransferBCR, TransferDerogation}

// Processor is one recipient of personal data, as declared in a rule
// set's processors list.
type Processor struct {
	ID                string
	LegalName         string
	Role              Role
	Country           string // ISO 3166-1 alpha-2
	Transfer          Transfer
	TransferReference string   // e.g. the SCC module, or the DPF listing
	DPA               string   // the data processing agreement's reference
	Purposes          []string // Fideslang data uses
	DataCategories    []string // Fideslang data categories
	DataSubjects      []string // Fideslang data subjects

	Pos Pos // where its entry starts

	transferAt Pos // where its transfer is written, for lint's errors
}

// Rule returns the rule of the set with that id, or nil.
func (s *Set) Rule(id string) *Rule {
	for _, r := range s.Rules {
		if r.ID == id {
			return r
		}
	}
	return nil
}

// Processor returns the processor of the set with that id, or nil.
func (s *Set) Processor(id string) *Processor {
	for _, p := range s.Processors {
		if p.ID == id {
			return p
		}
	}
	return nil
}

// The keys of a processor entry and of its transfer mapping.
var (
	processorKeys = []string{"id", "legalName", "role", "country", "transfer", "dpa", "purposes", "dataCategories", "dataSubjects"}
	transferKeys  = []string{"basis", "reference"}
)

//go:embed data/fideslang.txt
var fideslangData string

//go:embed data/countries.txt
var countriesData string

// Vocabulary is the shipped lists the processor checks use: a subset of
// the Fideslang default taxonomy (CC BY 4.0, Ethyca, Inc.) and the ISO
// 3166-1 alpha-2 codes with the EEA and the adequacy decisions.
type Vocabulary struct {
	DataCategories, DataUses, DataSubjects []string // sorted
	Countries, EEA, Adequacy, DPF          []string // sorted
}

var vocabulary = sync.OnceValue(func() *Vocabulary {
	v := &Vocabulary{}
	sections := func(data string, into map[string]*[]string) {
		var cur *[]string
		for _, line := range strings.Split(data, "\n") {
			line, _, _ = strings.Cut(line, "#")
			line = strings.TrimSpace(line)
			if strings.HasPrefix(line, "[") {
				cur = into[strings.Trim(line, "[]")]
				continue
			}
			if cur != nil {
				*cur = append(*cur, strings.Fields(line)...)
			}
		}
	}
	sections(fideslangData, map[string]*[]string{"data_categories": &v.DataCategories, "data_uses": &v.DataUses, "data_subjects": &v.DataSubjects})
	sections(countriesData, map[string]*[]string{"iso3166": &v.Countries, "eea": &v.EEA, "adequacy": &v.Adequacy, "dpf": &v.DPF})
	for _, l := range []*[]string{&v.DataCategories, &v.DataUses, &v.DataSubjects, &v.Countries, &v.EEA, &v.Adequacy, &v.DPF} {
		slices.Sort(*l)
	}
	return v
})

// Taxonomy returns the shipped vocabulary. The lists are shared: callers
// must not modify them.
func Taxonomy() *Vocabulary { return vocabulary() }

func has(sorted []string, s string) bool {
	_, ok := slices.BinarySearch(sorted, s)
	return ok
}

// InEEA reports whether an ISO 3166-1 alpha-2 country is in the European
// Economic Area, where personal data moves without a transfer safeguard.
func InEEA(country string) bool { return has(vocabulary().EEA, country) }

// Safeguard says why a processor's transfer is not lawful as declared
// ("" when it is): a processor outside the EEA needs a transfer ground,
// an adequacy decision must exist for its country, and the Data Privacy
// Framework covers the United States only.
func (p *Processor) Safeguard() string {
	v := vocabulary()
	switch {
	case InEEA(p.Country):
		return ""
	case p.Transfer == TransferNone:
		return fmt.Sprintf("%s is outside the EEA, so transfer none-needed is not enough: name the safeguard (adequacy, dpf, scc, bcr or derogation)", p.Country)
	case p.Transfer == TransferAdequacy && !has(v.Adequacy, p.Country):
		return fmt.Sprintf("transfer adequacy, but %s has no adequacy decision of the European Commission (those that do: %s)", p.Country, strings.Join(v.Adequacy, ", "))
	case p.Transfer == TransferDPF && !has(v.DPF, p.Country):
		return fmt.Sprintf("transfer dpf, but the Data Privacy Framework covers %s only, not %s", strings.Join(v.DPF, ", "), p.Country)
	}
	return ""
}

// processors reads a rule set's processors list.
func (p *parser) processors(n *yaml.Node) {
	if n.Kind != yaml.SequenceNode {
		p.errorDoc(n, "processors", "processors must be a list, got %s", p.describe(n))
		return
	}
	for _, e := range n.Content {
		p.processor(e)
	}
}

func (p *parser) processor(n *yaml.Node) {
	pr := &Processor{Pos: Pos{File: p.name, Line: n.Line, Col: n.Column}}
	v := vocabulary()
	var idNode *yaml.Node
	errsBefore := p.nerrs()
	seen := map[string]bool{}
	ok := p.fields(n, "processor", processorKeys, func(key string, k, val *yaml.Node) {
		seen[key] = true
		switch key {
		case "id":
			idNode = val
			pr.ID, _ = p.scalar(val, "id")
		case "legalName":
			pr.LegalName, _ = p.scalar(val, "legalName")
		case "dpa":
			pr.DPA, _ = p.scalar(val, "dpa")
		case "role":
			if s, ok := p.scalar(val, "role"); ok {
				pr.Role = Role(s)
				if !slices.Contains(Roles, pr.Role) {
					p.errorDoc(val, "processors", "role must be one of %s, got %s", joinOf(Roles), quoteShort(s))
				}
			}
		case "country":
			if s, ok := p.scalar(val, "country"); ok {
				pr.Country = s
				if !has(v.Countries, s) {
					hint := ""
					if up := strings.ToUpper(s); up != s && has(v.Countries, up) {
						hint = fmt.Sprintf(" (codes are upper case: %s)", up)
					}
					p.errorDoc(val, "processors", "country %s is not an ISO 3166-1 alpha-2 code%s", quoteShort(s), hint)
				}
			}
		case "transfer":
			p.transfer(val, pr)
		case "purposes":
			pr.Purposes = p.taxonomy(val, key, "data use", v.DataUses)
		case "dataCategories":
			pr.DataCategories = p.taxonomy(val, key, "data category", v.DataCategories)
		case "dataSubjects":
			pr.DataSubjects = p.taxonomy(val, key, "data subject", v.DataSubjects)
		}
	})
	if !ok {
		return
	}
	for _, key := range []string{"id", "legalName", "role", "country", "transfer"} {
		if !seen[key] {
			p.errorDoc(n, "processors", "processor %s has no %s", quoteShort(pr.ID), key)
		}
	}
	if idNode != nil && pr.ID != "" {
		if !ruleIDPattern.MatchString(pr.ID) {
			p.errorDoc(idNode, "processors", "processor id %s: use only lower-case letters, digits and '-'", quoteShort(pr.ID))
		} else if prev, dup := p.procs[pr.ID]; dup {
			p.errorf(idNode, "processor id %s already used at %s", quoteShort(pr.ID), prev)
		} else {
			p.procs[pr.ID] = pr.Pos
		}
	}
	if p.nerrs() == errsBefore {
		p.set.Processors = append(p.set.Processors, pr)
	}
}

// transfer reads a processor's transfer: a basis alone
// ("transfer: scc"), or a mapping with a basis and a reference.
func (p *parser) transfer(n *yaml.Node, pr *Processor) {
	pr.transferAt = Pos{File: p.name, Line: n.Line, Col: n.Column}
	basis := n
	if n.Kind == yaml.MappingNode {
		basis = nil
		p.fields(n, "transfer", transferKeys, func(key string, k, v *yaml.Node) {
			switch key {
			case "basis":
				basis = v
			case "reference":
				pr.TransferReference, _ = p.scalar(v, "transfer.reference")
			}
		})
		if basis == nil {
			p.errorDoc(n, "processors", "transfer has no basis (%s)", joinOf(Transfers))
			return
		}
	}
	if s, ok := p.scalar(basis, "transfer"); ok {
		pr.Transfer = Transfer(s)
		if !slices.Contains(Transfers, pr.Transfer) {
			p.errorDoc(basis, "processors", "transfer must be one of %s, got %s", joinOf(Transfers), quoteShort(s))
		}
	}
}

// taxonomy reads a list of Fideslang keys, each of which must be in
// known.
func (p *parser) taxonomy(n *yaml.Node, key, what string, known []string) []string {
	var out []string
	for _, e := range p.strings(n, key) {
		if !has(known, e.Value) {
			p.errorDoc(e, "taxonomy", "%s: %s is not a Fideslang %s key this version knows (see rules/data/fideslang.txt)", key, quoteShort(e.Value), what)
			continue
		}
		if !slices.Contains(out, e.Value) {
			out = append(out, e.Value)
		}
	}
	return out
}

// ruleProcessor is what a rule said of its processor, kept until every
// file of the set is read: the processor may be declared in another file.
type ruleProcessor struct {
	rule                     *Rule
	id, purposes, categories *yaml.Node
	file                     string
}

// resolveProcessors checks each rule's processor against the set's
// processors: it must be declared, and a rule's purposes and data
// categories must be among the processor's.
func (p *parser) resolveProcessors() {
	for _, rp := range p.ruleProcs {
		p.name = rp.file
		r := rp.rule
		pr := p.set.Processor(r.Processor)
		if pr == nil {
			if _, declared := p.procs[r.Processor]; !declared { // else the declaration has its own error
				p.errorDoc(rp.id, "processors", "rule %s: processor %s is not declared in the rule set's processors (declared: %s)",
					quoteShort(r.ID), quoteShort(r.Processor), p.declared())
			}
			continue
		}
		subset := func(n *yaml.Node, key string, got, of []string) {
			for i, s := range got {
				if !slices.Contains(of, s) {
					at := n
					if n.Kind == yaml.SequenceNode && i < len(n.Content) {
						at = n.Content[i]
					}
					p.errorDoc(at, "processors", "rule %s: %s %s is not among processor %s's %s %v: a rule may only narrow them",
						quoteShort(r.ID), key, quoteShort(s), pr.ID, key, of)
				}
			}
		}
		if rp.purposes != nil {
			subset(rp.purposes, "purposes", r.Purposes, pr.Purposes)
		}
		if rp.categories != nil {
			subset(rp.categories, "dataCategories", r.DataCategories, pr.DataCategories)
		}
	}
}

func (p *parser) declared() string {
	if len(p.set.Processors) == 0 {
		return "none"
	}
	ids := make([]string, len(p.set.Processors))
	for i, pr := range p.set.Processors {
		ids[i] = pr.ID
	}
	return strings.Join(ids, ", ")
}

func joinOf[T ~string](l []T) string {
	s := make([]string, len(l))
	for i, v := range l {
		s[i] = string(v)
	}
	return strings.Join(s, ", ")
}

// RulePurposes returns the purposes a rule's traffic serves: the rule's
// own narrowing, else its processor's.
func (s *Set) RulePurposes(r *Rule) []string {
	if len(r.Purposes) > 0 {
		return r.Purposes
	}
	if pr := s.Processor(r.Processor); pr != nil {
		return pr.Purposes
	}
	return nil
}

// RuleDataCategories returns the data categories a rule's traffic
// carries: the rule's own narrowing, else its processor's.
func (s *Set) RuleDataCategories(r *Rule) []string {
	if len(r.DataCategories) > 0 {
		return r.DataCategories
	}
	if pr := s.Processor(r.Processor); pr != nil {
		return pr.DataCategories
	}
	return nil
}

// Internal reports whether host belongs to the company: it is, or is
// below, one of the set's internalDomains, or it is a Kubernetes service
// name (below .svc, .cluster.local or .internal). Traffic to such hosts
// does not leave the company, so it needs no processor.
func (s *Set) Internal(host string) bool {
	host = strings.TrimPrefix(host, "*.")
	for _, d := range append(slices.Clip(s.InternalDomains), "svc", "cluster.local", "internal") {
		if host == d || strings.HasSuffix(host, "."+d) {
			return true
		}
	}
	return false
}

// LintProcessors checks a valid set's processor register: a transfer
// without a safeguard is an error; a processor without a DPA, and an
// allow rule to a host outside the company (see Set.Internal) that names
// no processor, are warnings; the last only in a set that declares
// processors or internalDomains.
func LintProcessors(set *Set) (errs, warnings []Diagnostic) {
	for _, pr := range set.Processors {
		if why := pr.Safeguard(); why != "" {
			at := pr.transferAt
			if at.Line == 0 {
				at = pr.Pos
			}
			errs = append(errs, Diagnostic{Pos: at, Msg: "processor " + quoteShort(pr.ID) + ": " + why, Doc: "processors"})
		}
		if pr.DPA == "" {
			warnings = append(warnings, Diagnostic{Pos: pr.Pos, Msg: "processor " + quoteShort(pr.ID) + ": no dpa: name the data processing agreement (GDPR Art. 28(3))", Doc: "processors"})
		}
	}
	if len(set.Processors) == 0 && len(set.InternalDomains) == 0 {
		// A set that declares neither has not taken up the register:
		// its rules would all warn, and --strict CI fail, on an upgrade.
		return errs, warnings
	}
	for _, r := range set.Rules {
		if r.Action != Allow || r.Processor != "" {
			continue
		}
		var outside []string
		for _, h := range r.Hosts {
			if !set.Internal(h) {
				outside = append(outside, h)
			}
		}
		if len(outside) > 0 {
			warnings = append(warnings, Diagnostic{Pos: r.Pos, Doc: "processors",
				Msg: fmt.Sprintf("rule %s: allows %s, outside the company, and names no processor: add processor (or list the domain in internalDomains)", quoteShort(r.ID), strings.Join(outside, ", "))})
		}
	}
	return errs, warnings
}
