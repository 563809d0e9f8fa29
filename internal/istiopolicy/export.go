package istiopolicy

import (
	"encoding/json"
	"fmt"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/rules"
)

// ExportOptions tunes Export. The zero value writes the policy for
// istioctl's default egress gateway.
type ExportOptions struct {
	// Name and Namespace of the AuthorizationPolicy; default
	// egress-authz-allow in istio-system.
	Name, Namespace string
	// Selector is the egress gateway's labels; default istio=egressgateway.
	Selector map[string]string
	// Now decides which rules have expired (those are left out).
	Now time.Time
}

// Export writes one ALLOW AuthorizationPolicy for the egress gateway that
// allows, per enforce-mode allow rule of set, its callers to reach its
// hosts: by the HTTP authority (hosts) and, for rules that TLS
// passthrough can match, by the TLS server name (connection.sni). It is a
// second layer that holds if the ext_authz call fails open, so it allows
// a superset of what the rules allow: methods, paths, ports, deny rules
// and dry-run rules stay with egress-authz, and a principal pattern that
// Istio cannot say (a '*' inside it) is widened to the prefix Istio can.
// Every value is written double-quoted, so that it reads back as exactly
// the string (a service account named "on" or "1e3" stays a string).
// The findings say what was widened and what was left out.
func Export(set *rules.Set, opts ExportOptions) ([]byte, []Finding) {
	if opts.Name == "" {
		opts.Name = "egress-authz-allow"
	}
	if opts.Namespace == "" {
		opts.Namespace = "istio-system"
	}
	if len(opts.Selector) == 0 {
		opts.Selector = map[string]string{"istio": "egressgateway"}
	}
	var findings []Finding
	note := func(r *rules.Rule, outcome Outcome, format string, args ...any) {
		findings = append(findings, Finding{Pos: r.Pos, Policy: "rule " + r.ID, Outcome: outcome, Msg: fmt.Sprintf(format, args...)})
	}
	var b strings.Builder
	b.WriteString("# Written by \"egress-authz rules export istio\": a second layer for the egress\n")
	b.WriteString("# gateway, holding if the ext_authz call fails open. It allows who may reach\n")
	b.WriteString("# which hosts; methods, paths, ports and deny rules stay with egress-authz.\n")
	b.WriteString("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n")
	b.WriteString("  name: " + q(opts.Name) + "\n  namespace: " + q(opts.Namespace) + "\n")
	b.WriteString("  labels:\n    app.kubernetes.io/managed-by: \"egress-authz\"\n")
	if set.Version != "" {
		b.WriteString("  annotations:\n    egress-authz/ruleset: " + q(set.Version) + "\n")
	}
	b.WriteString("spec:\n  selector:\n    matchLabels:\n")
	keys := make([]string, 0, len(opts.Selector))
	for k := range opts.Selector {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b.WriteString("      " + q(k) + ": " + q(opts.Selector[k]) + "\n")
	}
	b.WriteString("  action: ALLOW\n")
	var body strings.Builder
	n := 0
	for _, r := range set.Rules {
		switch {
		case r.Action != rules.Allow:
			note(r, Dropped, "a deny rule: not exported, egress-authz enforces it (the second layer only allows)")
			continue
		case r.Mode != rules.Enforce:
			note(r, Dropped, "a dry-run rule decides nothing: not exported")
			continue
		case !r.Expires.IsZero() && !opts.Now.Before(r.Expires):
			note(r, Dropped, "expired on %s: not exported", r.Expires.Format(time.DateOnly))
			continue
		}
		src := exportSource(r, set.TrustDomains, func(format string, args ...any) { note(r, Mapped, format, args...) })
		var left []string
		if len(r.Ports) > 0 {
			left = append(left, "ports")
		}
		if len(r.Methods) > 0 {
			left = append(left, "methods")
		}
		if len(r.Paths) > 0 {
			left = append(left, "paths")
		}
		if len(left) > 0 {
			note(r, Mapped, "%s left to egress-authz: on the rule's hosts, the second layer allows its callers any of them", strings.Join(left, ", "))
		}
		anyHost := len(r.Hosts) == 0 || slices.Contains(r.Hosts, "*")
		write := func(comment string, to, when string) {
			n++
			body.WriteString("    # " + r.ID + comment + "\n    - ")
			first := true
			line := func(s string) {
				if !first {
					body.WriteString("      ")
				}
				body.WriteString(s + "\n")
				first = false
			}
			if src != "" {
				line("from:")
				body.WriteString("        - source:\n" + src)
			}
			if to != "" {
				line("to:")
				body.WriteString("        - operation:\n            hosts: " + to + "\n")
			}
			if when != "" {
				line("when:")
				body.WriteString("        - key: connection.sni\n          values: " + when + "\n")
			}
			if first {
				body.WriteString("{}\n")
			}
		}
		switch {
		case anyHost:
			write("", "", "")
		case r.HTTPOnly():
			write(" (HTTP)", httpHosts(r.Hosts), "")
		default:
			write(" (HTTP)", httpHosts(r.Hosts), "")
			write(" (TLS passthrough)", "", flow(r.Hosts))
		}
	}
	if n == 0 {
		b.WriteString("  rules: []   # no allow rule: the gateway allows nothing\n")
	} else {
		b.WriteString("  rules:\n" + body.String())
	}
	return []byte(b.String()), findings
}

// exportSource writes the source of an Istio rule for r (indented for
// "        - source:"), or "" for any caller.
func exportSource(r *rules.Rule, trustDomains []string, note func(string, ...any)) string {
	var b strings.Builder
	var principals []string
	for _, p := range r.Principals {
		ip, widened := istioPrincipal(p)
		if widened {
			note("principal %q written as %q: Istio matches only a prefix or a suffix", p, ip)
		}
		principals = append(principals, ip)
	}
	namespaces := r.Namespaces
	switch {
	case len(r.ServiceAccounts) > 0 && len(principals) > 0:
		note("serviceAccounts %v left to egress-authz: Istio cannot combine them with principals", r.ServiceAccounts)
	case len(r.ServiceAccounts) > 0 && len(r.Namespaces) > 0:
		for _, td := range trustDomains {
			for _, ns := range r.Namespaces {
				for _, sa := range r.ServiceAccounts {
					principals = append(principals, td+"/ns/"+ns+"/sa/"+sa)
				}
			}
		}
		namespaces = nil
	case len(r.ServiceAccounts) > 0:
		for _, sa := range r.ServiceAccounts {
			principals = append(principals, "*/sa/"+sa)
		}
	}
	if len(principals) > 0 {
		b.WriteString("            principals: " + flow(principals) + "\n")
	}
	if len(namespaces) > 0 {
		b.WriteString("            namespaces: " + flow(namespaces) + "\n")
	}
	return b.String()
}

// istioPrincipal writes a principal pattern the way Istio matches one:
// without spiffe://, with at most one '*', at the start or the end. A
// pattern with a '*' elsewhere is widened to the prefix before its first
// '*'.
func istioPrincipal(p string) (string, bool) {
	s := strings.TrimPrefix(p, "spiffe://")
	i := strings.IndexByte(s, '*')
	switch {
	case i < 0:
		return s, false
	case i == len(s)-1 || i == 0 && strings.Count(s, "*") == 1:
		return s, false // Istio's prefix or suffix: it also crosses '/', a wider match
	}
	return s[:i] + "*", true
}

// httpHosts writes the hosts of an HTTP rule: an exact host with ":*"
// beside it, since the authority may carry a port, which egress-authz
// ignores.
func httpHosts(hosts []string) string {
	var out []string
	for _, h := range hosts {
		out = append(out, h)
		if !strings.HasPrefix(h, "*") {
			out = append(out, h+":*")
		}
	}
	return flow(out)
}

// flow writes a YAML flow list of double-quoted strings.
func flow(s []string) string {
	q := make([]string, len(s))
	for i, v := range s {
		q[i] = jsonQuote(v)
	}
	return "[" + strings.Join(q, ", ") + "]"
}

func q(s string) string { return jsonQuote(s) }

// jsonQuote writes a YAML double-quoted scalar; JSON's escapes are
// YAML's, and nothing in double quotes is read as another type.
func jsonQuote(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}
