package rules

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"
	"go.yaml.in/yaml/v3"
)

// compiledSchema compiles Schema with a JSON Schema validator that is not
// ours, as an editor would.
func compiledSchema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	doc, err := jsonschema.UnmarshalJSON(bytes.NewReader(Schema()))
	if err != nil {
		t.Fatalf("the schema is not JSON: %v", err)
	}
	c := jsonschema.NewCompiler()
	c.DefaultDraft(jsonschema.Draft7)
	if err := c.AddResource("schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("schema.json")
	if err != nil {
		t.Fatalf("the schema does not compile: %v", err)
	}
	return s
}

// validateYAML validates each document of a YAML file against s, the way
// the YAML language server does: as the JSON the YAML stands for, read
// with YAML 1.2's core schema (2027-06-30 is a string, not a time).
func validateYAML(t *testing.T, s *jsonschema.Schema, data []byte) error {
	t.Helper()
	dec := yaml.NewDecoder(bytes.NewReader(data))
	for {
		var n yaml.Node
		if err := dec.Decode(&n); err != nil {
			return nil // io.EOF, or YAML the parser would reject anyway
		}
		js, err := json.Marshal(jsonOf(&n))
		if err != nil {
			t.Fatalf("YAML that is not JSON: %v", err)
		}
		inst, err := jsonschema.UnmarshalJSON(bytes.NewReader(js))
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(inst); err != nil {
			return err
		}
	}
}

// jsonOf is the JSON value a YAML node stands for.
func jsonOf(n *yaml.Node) any {
	switch n.Kind {
	case yaml.DocumentNode:
		if len(n.Content) == 0 {
			return nil
		}
		return jsonOf(n.Content[0])
	case yaml.AliasNode:
		return jsonOf(n.Alias)
	case yaml.SequenceNode:
		out := []any{}
		for _, c := range n.Content {
			out = append(out, jsonOf(c))
		}
		return out
	case yaml.MappingNode:
		out := map[string]any{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			out[n.Content[i].Value] = jsonOf(n.Content[i+1])
		}
		return out
	}
	switch n.Tag {
	case "!!int", "!!float":
		return json.Number(n.Value)
	case "!!bool":
		return n.Value == "true"
	case "!!null":
		return nil
	}
	return n.Value
}

// TestSchemaValidatesWhatTheParserAccepts: the example rules and cases,
// the rule files of the tests, and every fuzz seed the parser accepts are
// valid for the schema.
func TestSchemaValidatesWhatTheParserAccepts(t *testing.T) {
	s := compiledSchema(t)
	files := []string{
		"../deploy/examples/rules.yaml", "../deploy/examples/rules_test_cases.yaml",
		"testdata/payments.yaml", "testdata/spec-example.yaml",
	}
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if err := validateYAML(t, s, data); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
	policy := "apiVersion: egress-authz/v1\nkind: LintPolicy\nrequire: [owner, ticket, expires]\nmaxExpiry: 180d\nwarnExpiry: 336h\n"
	if _, err := ParsePolicy(Source{Name: "p.yaml", Data: []byte(policy)}); err != nil {
		t.Fatal(err)
	}
	if err := validateYAML(t, s, []byte(policy)); err != nil {
		t.Errorf("a lint policy: %v", err)
	}
	seeds, err := filepath.Glob("testdata/fuzz/FuzzParseRules/*")
	if err != nil || len(seeds) == 0 {
		t.Fatalf("no fuzz seeds: %v", err)
	}
	accepted := 0
	for _, f := range seeds {
		raw, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.SplitN(string(raw), "\n", 2)
		lit := strings.TrimSuffix(strings.TrimPrefix(strings.TrimSpace(lines[1]), "[]byte("), ")")
		src, err := strconv.Unquote(lit)
		if err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		if _, err := Parse(Source{Name: "seed.yaml", Data: []byte(src)}); err != nil {
			continue
		}
		accepted++
		if err := validateYAML(t, s, []byte(src)); err != nil {
			t.Errorf("%s: the parser accepts it, the schema does not: %v", filepath.Base(f), err)
		}
	}
	if accepted == 0 {
		t.Error("the parser accepted no fuzz seed: the check checked nothing")
	}
}

// TestSchemaRejectsCommonMistakes: what people get wrong while they type
// is flagged by the editor too.
func TestSchemaRejectsCommonMistakes(t *testing.T) {
	s := compiledSchema(t)
	const head = "apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local]\nrules:\n"
	for _, tc := range []struct{ name, src string }{
		{"unknown_rule_key", head + "  - {id: a, action: allow, colour: blue}\n"},
		{"no_action", head + "  - {id: a}\n"},
		{"upper_case_id", head + "  - {id: A, action: allow}\n"},
		{"lower_case_method", head + "  - {id: a, action: allow, to: {methods: [post]}}\n"},
		{"host_with_scheme", head + "  - {id: a, action: allow, to: {hosts: [\"https://api.mailchimp.com\"]}}\n"},
		{"host_with_path", head + "  - {id: a, action: allow, to: {hosts: [api.mailchimp.com/3.0]}}\n"},
		{"host_with_port", head + "  - {id: a, action: allow, to: {hosts: [\"api.mailchimp.com:443\"]}}\n"},
		{"relative_path", head + "  - {id: a, action: allow, to: {paths: [v1/charges]}}\n"},
		{"path_with_query", head + "  - {id: a, action: allow, to: {paths: [\"/v1?x=1\"]}}\n"},
		{"methods_under_from", head + "  - {id: a, action: allow, from: {methods: [GET]}}\n"},
		{"empty_list", head + "  - {id: a, action: allow, to: {hosts: []}}\n"},
		{"port_out_of_range", head + "  - {id: a, action: allow, to: {ports: [70000]}}\n"},
		{"bad_expiry", head + "  - {id: a, action: allow, expires: next year}\n"},
		{"bad_mode", head + "  - {id: a, action: allow, mode: audit}\n"},
		{"wrong_kind", "apiVersion: egress-authz/v1\nkind: Rules\nrules: []\n"},
		{"no_rules", "apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local]\n"},
		{"case_with_url_and_sni", "cases:\n  - {name: a, url: \"https://a.example/\", sni: a.example, expect: allow}\n"},
		{"case_without_url", "cases:\n  - {name: a, expect: allow}\n"},
		{"case_bad_expect", "cases:\n  - {name: a, url: \"https://a.example/\", expect: maybe}\n"},
		{"case_bad_reason", "cases:\n  - {name: a, url: \"https://a.example/\", expect: deny, reason: audit-unavailable}\n"},
		{"case_method_with_sni", "cases:\n  - {name: a, sni: a.example, method: GET, expect: allow}\n"},
		{"policy_unknown_field", "apiVersion: egress-authz/v1\nkind: LintPolicy\nrequire: [team]\n"},
		{"policy_bad_duration", "apiVersion: egress-authz/v1\nkind: LintPolicy\nmaxExpiry: half a year\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := validateYAML(t, s, []byte(tc.src)); err == nil {
				t.Errorf("the schema accepts:\n%s", tc.src)
			}
		})
	}
}

// TestSchemaKnowsTheFormat keeps the schema's keys and words equal to the
// parser's: a key added to one and not the other fails here.
func strs[T ~string](l []T) []string {
	out := make([]string, len(l))
	for i, v := range l {
		out[i] = string(v)
	}
	return out
}

// transferEnum is the schema's list of transfer bases.
func transferEnum(t *testing.T) []string {
	var doc struct {
		Definitions struct {
			TransferBasis struct {
				Enum []string `json:"enum"`
			} `json:"transferBasis"`
		} `json:"definitions"`
	}
	if err := json.Unmarshal(Schema(), &doc); err != nil {
		t.Fatal(err)
	}
	return doc.Definitions.TransferBasis.Enum
}

func TestSchemaKnowsTheFormat(t *testing.T) {
	var doc struct {
		Definitions map[string]struct {
			Properties map[string]struct {
				Enum  []string `json:"enum"`
				Const string   `json:"const"`
				Items struct {
					Enum []string `json:"enum"`
				} `json:"items"`
			} `json:"properties"`
		} `json:"definitions"`
	}
	if err := json.Unmarshal(Schema(), &doc); err != nil {
		t.Fatal(err)
	}
	keys := func(def string) []string {
		var out []string
		for k := range doc.Definitions[def].Properties {
			out = append(out, k)
		}
		slices.Sort(out)
		return out
	}
	sorted := func(s []string) []string {
		s = slices.Clone(s)
		slices.Sort(s)
		return s
	}
	for def, want := range map[string][]string{
		"ruleSet": ruleSetKeys, "rule": ruleKeys, "from": fromKeys, "to": toKeys,
		"caseFile": {"cases"}, "case": caseKeys, "lintPolicy": policyKeys, "processor": processorKeys,
	} {
		if got := keys(def); !slices.Equal(got, sorted(want)) {
			t.Errorf("schema %s has keys %v, the parser %v", def, got, sorted(want))
		}
	}
	var reasons, fields []string
	for _, r := range caseReasons() {
		reasons = append(reasons, string(r))
	}
	for _, f := range requirable {
		fields = append(fields, string(f))
	}
	props := func(def, key string) []string { return doc.Definitions[def].Properties[key].Enum }
	for _, c := range []struct {
		what      string
		got, want []string
	}{
		{"rule modes", props("rule", "mode"), []string{string(Enforce), string(DryRun)}},
		{"rule actions", props("rule", "action"), []string{string(Allow), string(Deny)}},
		{"processor roles", props("processor", "role"), strs(Roles)},
		{"transfer bases", transferEnum(t), strs(Transfers)},
		{"case expects", props("case", "expect"), []string{string(Allow), string(Deny)}},
		{"case reasons", props("case", "reason"), reasons},
		{"policy fields", doc.Definitions["lintPolicy"].Properties["require"].Items.Enum, fields},
		{"consts", []string{doc.Definitions["ruleSet"].Properties["apiVersion"].Const, doc.Definitions["ruleSet"].Properties["kind"].Const,
			doc.Definitions["lintPolicy"].Properties["kind"].Const}, []string{APIVersion, Kind, PolicyKind}},
	} {
		if !slices.Equal(c.got, c.want) {
			t.Errorf("schema %s %v, the parser %v", c.what, c.got, c.want)
		}
	}
}
