package deploy_test

// The AuthorizationPolicies of "egress-authz rules export istio", decoded
// strictly with Istio's own API types, and the policies the import is
// tested on, checked to be what Istio accepts.

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	security "istio.io/api/security/v1beta1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/egress-authz/egress-authz/internal/istiopolicy"
	"github.com/egress-authz/egress-authz/rules"
)

// decodePolicies decodes each document of data as an AuthorizationPolicy,
// strictly; errs holds the error of each document that does not decode.
func decodePolicies(t *testing.T, data []byte) (policies []*security.AuthorizationPolicy, errs []error) {
	t.Helper()
	dec := decoders["security.istio.io/v1/AuthorizationPolicy"]
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	for {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return policies, errs
		}
		if err != nil {
			t.Fatal(err)
		}
		_, spec, err := dec(doc)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if _, ok := spec.(*security.AuthorizationPolicy); !ok {
			t.Fatalf("decoded %T", spec)
		}
		policies = append(policies, spec.(*security.AuthorizationPolicy))
	}
}

func TestExportedPoliciesDecodeStrictly(t *testing.T) {
	set, err := rules.Load(exampleRules)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := istiopolicy.Export(set, istiopolicy.ExportOptions{Now: time.Date(2026, 3, 1, 0, 0, 0, 0, time.UTC)})
	policies, errs := decodePolicies(t, out)
	if len(errs) > 0 || len(policies) != 1 {
		t.Fatalf("%d policies, errors %v\n%s", len(policies), errs, out)
	}
	p := policies[0]
	if p.GetAction() != security.AuthorizationPolicy_ALLOW || p.GetSelector().GetMatchLabels()["istio"] != "egressgateway" {
		t.Errorf("action %s, selector %v", p.GetAction(), p.GetSelector())
	}
	// One rule per HTTP rule, two (authority and server name) where TLS
	// passthrough can match: payments-stripe-charges, -files, then the
	// indexer and the mailer twice each.
	if n := len(p.GetRules()); n != 6 {
		t.Errorf("%d rules, want 6\n%s", n, out)
	}
	var sni []string
	for _, r := range p.GetRules() {
		for _, w := range r.GetWhen() {
			if w.GetKey() == "connection.sni" {
				sni = append(sni, w.GetValues()...)
			}
		}
	}
	if !slices.Equal(sni, []string{"*.googleapis.com", "api.sendgrid.com"}) {
		t.Errorf("connection.sni values %v", sni)
	}

	// Service-account names that YAML would read as other types stay the
	// exact strings.
	odd, err := rules.Parse(rules.Source{Name: "odd.yaml", Data: []byte(`apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: odd
    action: allow
    from: {namespaces: ["yes"], serviceAccounts: ["1e3", "null", "0x1F", "a:b"]}
    to: {hosts: [a.example]}
`)})
	if err != nil {
		t.Fatal(err)
	}
	out, _ = istiopolicy.Export(odd, istiopolicy.ExportOptions{})
	policies, errs = decodePolicies(t, out)
	if len(errs) > 0 || len(policies) != 1 {
		t.Fatalf("%v\n%s", errs, out)
	}
	got := policies[0].GetRules()[0].GetFrom()[0].GetSource().GetPrincipals()
	want := []string{"cluster.local/ns/yes/sa/1e3", "cluster.local/ns/yes/sa/null", "cluster.local/ns/yes/sa/0x1F", "cluster.local/ns/yes/sa/a:b"}
	if !slices.Equal(got, want) {
		t.Errorf("principals %q, want %q", got, want)
	}
}

// TestImportTestPoliciesAreIstios: the real-world-shaped policies the
// import is tested on are valid for Istio's API types, but for the one
// that is there to be rejected (and the ConfigMap beside them).
func TestImportTestPoliciesAreIstios(t *testing.T) {
	data, err := os.ReadFile("../internal/istiopolicy/testdata/policies.yaml")
	if err != nil {
		t.Fatal(err)
	}
	policies, errs := decodePolicies(t, data)
	if len(policies) != 7 || len(errs) != 2 {
		t.Errorf("%d policies decoded, %d errors, want 7 and 2: %v", len(policies), len(errs), errs)
	}
	if len(errs) > 0 && !strings.Contains(errs[0].Error(), "principal") {
		t.Errorf("the misspelt policy fails for another reason: %v", errs[0])
	}
}
