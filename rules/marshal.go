package rules

import (
	"bytes"
	"encoding/json"
	"regexp"
	"strconv"
	"strings"
	"time"
)

// Marshal writes a rule set as one rule file in the SPEC format, the way
// deploy/examples/rules.yaml is written. Parsing the result gives back the
// same rules.
func Marshal(set *Set) []byte {
	var b bytes.Buffer
	b.WriteString("apiVersion: " + APIVersion + "\nkind: " + Kind + "\n")
	b.WriteString("trustDomains: " + flowList(set.TrustDomains) + "\n")
	if len(set.InternalDomains) > 0 {
		b.WriteString("internalDomains: " + flowList(set.InternalDomains) + "\n")
	}
	marshalProcessors(&b, set.Processors)
	if len(set.Rules) == 0 {
		b.WriteString("rules: []\n")
		return b.Bytes()
	}
	b.WriteString("rules:\n")
	for i, r := range set.Rules {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString("  - id: " + yamlScalar(r.ID) + "\n")
		field := func(k, v string) {
			if v != "" {
				b.WriteString("    " + k + ": " + v + "\n")
			}
		}
		if r.Description != "" {
			field("description", quote(r.Description))
		}
		if r.Owner != "" {
			field("owner", yamlScalar(r.Owner))
		}
		if r.Ticket != "" {
			field("ticket", yamlScalar(r.Ticket))
		}
		if !r.Expires.IsZero() {
			field("expires", r.Expires.Format(time.DateOnly))
		}
		if r.Mode == DryRun {
			field("mode", string(DryRun))
		}
		field("action", string(r.Action))
		if r.Processor != "" {
			field("processor", yamlScalar(r.Processor))
		}
		field("purposes", flowList(r.Purposes))
		field("dataCategories", flowList(r.DataCategories))
		section := func(name string, kv ...string) {
			any := false
			for i := 1; i < len(kv); i += 2 {
				any = any || kv[i] != ""
			}
			if !any {
				return
			}
			b.WriteString("    " + name + ":\n")
			for i := 0; i+1 < len(kv); i += 2 {
				if kv[i+1] != "" {
					b.WriteString("      " + kv[i] + ": " + kv[i+1] + "\n")
				}
			}
		}
		section("from", "principals", flowList(r.Principals), "namespaces", flowList(r.Namespaces),
			"serviceAccounts", flowList(r.ServiceAccounts))
		section("to", "hosts", flowList(r.Hosts), "ports", flowList(intStrings(r.Ports)),
			"methods", flowList(r.Methods), "paths", flowList(r.Paths))
	}
	return b.Bytes()
}

// marshalProcessors writes a processors list.
func marshalProcessors(b *bytes.Buffer, procs []*Processor) {
	if len(procs) == 0 {
		return
	}
	b.WriteString("processors:\n")
	for _, p := range procs {
		b.WriteString("  - id: " + yamlScalar(p.ID) + "\n")
		field := func(k, v string) {
			if v != "" {
				b.WriteString("    " + k + ": " + v + "\n")
			}
		}
		field("legalName", quote(p.LegalName))
		field("role", string(p.Role))
		field("country", p.Country)
		if p.TransferReference != "" {
			b.WriteString("    transfer: {basis: " + string(p.Transfer) + ", reference: " + quote(p.TransferReference) + "}\n")
		} else {
			field("transfer", string(p.Transfer))
		}
		if p.DPA != "" {
			field("dpa", quote(p.DPA))
		}
		field("purposes", flowList(p.Purposes))
		field("dataCategories", flowList(p.DataCategories))
		field("dataSubjects", flowList(p.DataSubjects))
	}
}

// flowList writes a YAML flow sequence, or "" for an empty list (the key
// is then left out: an absent field matches anything).
func flowList(s []string) string {
	if len(s) == 0 {
		return ""
	}
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = yamlScalar(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

var plainRE = regexp.MustCompile(`^[A-Za-z0-9/_][A-Za-z0-9._/-]*$`)

// yamlScalar writes s plain when the rule parser reads it back as the same
// text (it reads a scalar's text whatever its YAML type, and rejects only
// nulls), quoted otherwise.
func yamlScalar(s string) string {
	if plainRE.MatchString(s) && strings.ToLower(s) != "null" {
		return s
	}
	return quote(s)
}

// quote writes a YAML double-quoted scalar; JSON's escapes are YAML's.
func quote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

func intStrings(ns []int) []string {
	out := make([]string, len(ns))
	for i, n := range ns {
		out[i] = strconv.Itoa(n)
	}
	return out
}
