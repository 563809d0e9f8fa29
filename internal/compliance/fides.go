package compliance

import (
	"cmp"
	"regexp"
	"slices"
	"strings"

	"github.com/egress-authz/egress-authz/rules"
)

// A processing report as Fides system declarations (a fideslang manifest,
// `system:`): each processor a system that receives data, each workload
// that sent it some a system with egress to it, a privacy declaration per
// data use. Only the fields the report knows are written.

// FidesManifest is the document: fides apply reads it.
type FidesManifest struct {
	System []FidesSystem `yaml:"system" json:"system"`
}

// FidesSystem is one fideslang system.
type FidesSystem struct {
	FidesKey                   string                    `yaml:"fides_key" json:"fides_key"`
	Name                       string                    `yaml:"name" json:"name"`
	Description                string                    `yaml:"description,omitempty" json:"description,omitempty"`
	SystemType                 string                    `yaml:"system_type" json:"system_type"`
	LegalName                  string                    `yaml:"legal_name,omitempty" json:"legal_name,omitempty"`
	Responsibility             []string                  `yaml:"responsibility,omitempty" json:"responsibility,omitempty"`
	DoesInternationalTransfers bool                      `yaml:"does_international_transfers,omitempty" json:"does_international_transfers,omitempty"`
	LegalBasisForTransfers     []string                  `yaml:"legal_basis_for_transfers,omitempty" json:"legal_basis_for_transfers,omitempty"`
	DPALocation                string                    `yaml:"dpa_location,omitempty" json:"dpa_location,omitempty"`
	Egress                     []FidesDataFlow           `yaml:"egress,omitempty" json:"egress,omitempty"`
	Ingress                    []FidesDataFlow           `yaml:"ingress,omitempty" json:"ingress,omitempty"`
	PrivacyDeclarations        []FidesPrivacyDeclaration `yaml:"privacy_declarations" json:"privacy_declarations"`
}

// FidesDataFlow is a system's egress or ingress.
type FidesDataFlow struct {
	FidesKey       string   `yaml:"fides_key" json:"fides_key"`
	Type           string   `yaml:"type" json:"type"`
	DataCategories []string `yaml:"data_categories,omitempty" json:"data_categories,omitempty"`
}

// FidesPrivacyDeclaration is what a system does with data, for one use.
type FidesPrivacyDeclaration struct {
	Name           string   `yaml:"name" json:"name"`
	DataUse        string   `yaml:"data_use" json:"data_use"`
	DataCategories []string `yaml:"data_categories" json:"data_categories"`
	DataSubjects   []string `yaml:"data_subjects" json:"data_subjects"`
	Egress         []string `yaml:"egress,omitempty" json:"egress,omitempty"`
	Ingress        []string `yaml:"ingress,omitempty" json:"ingress,omitempty"`
}

// fidesTransfer is a transfer ground as Fides names it.
var fidesTransfer = map[string]string{
	string(rules.TransferAdequacy):   "Adequacy Decision",
	string(rules.TransferDPF):        "Adequacy Decision", // the EU-US Data Privacy Framework is one
	string(rules.TransferSCC):        "SCCs",
	string(rules.TransferBCR):        "BCRs",
	string(rules.TransferDerogation): "Other",
}

var fidesResponsibility = map[string]string{
	string(rules.RoleProcessor):       "Processor",
	string(rules.RoleSubProcessor):    "Sub-Processor",
	string(rules.RoleController):      "Controller",
	string(rules.RoleJointController): "Controller",
}

var notFidesKey = regexp.MustCompile(`[^a-zA-Z0-9_.-]+`)

// FidesKey makes a fides_key of s: the characters fideslang allows, the
// others as '_'.
func FidesKey(s string) string { return notFidesKey.ReplaceAllString(s, "_") }

// workloadKey names a workload's system: namespace.serviceaccount for a
// Kubernetes SPIFFE ID, else the ID made a key.
func workloadKey(principal string) string {
	if _, path, ok := strings.Cut(strings.TrimPrefix(principal, "spiffe://"), "/"); ok {
		if p := strings.Split(path, "/"); len(p) == 4 && p[0] == "ns" && p[2] == "sa" {
			return FidesKey("workload." + p[1] + "." + p[3])
		}
	}
	return FidesKey("workload." + principal)
}

// Fides returns the report as Fides systems: processors first, by id, then
// workloads, by key.
func Fides(rep *ProcessingReport) FidesManifest {
	var m FidesManifest
	type sent struct {
		categories map[string]bool
		uses       map[string]map[string]bool // data use -> processors
		subjects   map[string]bool
		principal  string
	}
	workloads := map[string]*sent{}
	for _, p := range rep.Processors {
		if p.Requests-p.Denied == 0 {
			continue
		}
		key := FidesKey(p.ID)
		sys := FidesSystem{FidesKey: key, Name: cmp.Or(p.LegalName, p.ID), SystemType: "Service", LegalName: p.LegalName,
			Description: "Third-party processor " + p.ID + " (" + p.Country + "), reached through the egress gateway",
			DPALocation: p.DPA, PrivacyDeclarations: []FidesPrivacyDeclaration{}}
		if r, ok := fidesResponsibility[p.Role]; ok {
			sys.Responsibility = []string{r}
		}
		if p.Country != "" && !rules.InEEA(p.Country) {
			// Outside the EEA it is a transfer, whatever the register says
			// of its ground; the basis only where one is declared.
			sys.DoesInternationalTransfers = true
			if basis, ok := fidesTransfer[p.Transfer]; ok {
				sys.LegalBasisForTransfers = []string{basis}
			}
		}
		uses := map[string][]string{} // data use -> categories, from the rules as they decided
		for _, u := range p.Rules {
			for _, use := range u.Purposes {
				uses[use] = union(uses[use], u.DataCategories)
			}
		}
		var ingress []string
		for _, w := range p.Workloads {
			if w.Requests == w.Denied {
				continue
			}
			wk := workloadKey(w.Principal)
			ingress = append(ingress, wk)
			s := workloads[wk]
			if s == nil {
				s = &sent{categories: map[string]bool{}, uses: map[string]map[string]bool{}, subjects: map[string]bool{}, principal: w.Principal}
				workloads[wk] = s
			}
			for use, cats := range uses {
				if s.uses[use] == nil {
					s.uses[use] = map[string]bool{}
				}
				s.uses[use][key] = true
				for _, c := range cats {
					s.categories[c] = true
				}
			}
			for _, d := range p.DataSubjects {
				s.subjects[d] = true
			}
		}
		slices.Sort(ingress)
		ingress = slices.Compact(ingress)
		for _, wk := range ingress {
			sys.Ingress = append(sys.Ingress, FidesDataFlow{FidesKey: wk, Type: "system"})
		}
		for _, use := range sortedKeys(uses) {
			sys.PrivacyDeclarations = append(sys.PrivacyDeclarations, FidesPrivacyDeclaration{Name: p.ID + ": " + use, DataUse: use,
				DataCategories: uses[use], DataSubjects: nonNil(p.DataSubjects), Ingress: ingress})
		}
		m.System = append(m.System, sys)
	}
	for _, wk := range sortedKeys(workloads) {
		s := workloads[wk]
		sys := FidesSystem{FidesKey: wk, Name: wk, SystemType: "Service", Description: "Workload " + s.principal + ", as the egress gateway saw it",
			PrivacyDeclarations: []FidesPrivacyDeclaration{}}
		egress := map[string]bool{}
		for _, use := range sortedKeys(s.uses) {
			to := sortedKeys(s.uses[use])
			for _, k := range to {
				egress[k] = true
			}
			sys.PrivacyDeclarations = append(sys.PrivacyDeclarations, FidesPrivacyDeclaration{Name: wk + ": " + use, DataUse: use,
				DataCategories: sortedKeys(s.categories), DataSubjects: sortedKeys(s.subjects), Egress: to})
		}
		for _, k := range sortedKeys(egress) {
			sys.Egress = append(sys.Egress, FidesDataFlow{FidesKey: k, Type: "system"})
		}
		m.System = append(m.System, sys)
	}
	if m.System == nil {
		m.System = []FidesSystem{}
	}
	return m
}

func union(a, b []string) []string {
	out := append(slices.Clone(a), b...)
	slices.Sort(out)
	return slices.Compact(out)
}
