package rules

import (
	"fmt"
	"slices"
	"testing"
)

func TestMarshalRoundTrips(t *testing.T) {
	set := parseYAML(t, explainRules)
	again := parseYAML(t, string(Marshal(set)))
	if len(again.Rules) != len(set.Rules) || !slices.Equal(again.TrustDomains, set.TrustDomains) {
		t.Fatalf("%d rules, trust domains %v", len(again.Rules), again.TrustDomains)
	}
	for i, r := range set.Rules {
		a := *again.Rules[i]
		b := *r
		a.Pos, b.Pos = Pos{}, Pos{}
		if fmt.Sprintf("%+v", a) != fmt.Sprintf("%+v", b) {
			t.Errorf("rule %d:\n got %+v\nwant %+v", i, a, b)
		}
	}
}
