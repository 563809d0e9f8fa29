package rules

import (
	"os"
	"path/filepath"
	"reflect"
	"testing"
)

func gdprSources(t *testing.T) []Source {
	t.Helper()
	var srcs []Source
	for _, f := range []string{"processors.yaml", "rules.yaml"} {
		path := filepath.Join("..", "cmd", "egress-authz", "testdata", "gdpr", "rules", f)
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		srcs = append(srcs, Source{Name: f, Data: data})
	}
	return srcs
}

// TestProcessorsMarshalRoundTrip: a set written back by Marshal (as
// "rules suggest" does) keeps its register and each rule's processor.
func TestProcessorsMarshalRoundTrip(t *testing.T) {
	set, err := Parse(gdprSources(t)...)
	if err != nil {
		t.Fatal(err)
	}
	if len(set.Processors) != 4 || set.Processor("mailer").TransferReference != "DPF list entry 12345" {
		t.Fatalf("processors parsed wrong: %+v", set.Processors)
	}
	again, err := Parse(Source{Name: "out.yaml", Data: Marshal(set)})
	if err != nil {
		t.Fatalf("Marshal wrote a set Parse rejects: %v\n%s", err, Marshal(set))
	}
	clean := func(ps []*Processor) []Processor {
		var out []Processor
		for _, p := range ps {
			c := *p
			c.Pos, c.transferAt = Pos{}, Pos{}
			out = append(out, c)
		}
		return out
	}
	if !reflect.DeepEqual(clean(again.Processors), clean(set.Processors)) {
		t.Errorf("processors changed:\n%+v\n%+v", clean(again.Processors), clean(set.Processors))
	}
	if !reflect.DeepEqual(again.InternalDomains, set.InternalDomains) {
		t.Errorf("internalDomains %v, want %v", again.InternalDomains, set.InternalDomains)
	}
	for i, r := range set.Rules {
		a := again.Rules[i]
		if a.Processor != r.Processor || !reflect.DeepEqual(a.Purposes, r.Purposes) || !reflect.DeepEqual(a.DataCategories, r.DataCategories) {
			t.Errorf("rule %s: processor %q %v %v, want %q %v %v", r.ID, a.Processor, a.Purposes, a.DataCategories, r.Processor, r.Purposes, r.DataCategories)
		}
	}
	r := set.Rules[0]
	if got := set.RulePurposes(r); !reflect.DeepEqual(got, []string{"essential.service.payment_processing"}) {
		t.Errorf("narrowed purposes %v", got)
	}
	if got := set.RuleDataCategories(r); len(got) != 3 {
		t.Errorf("a rule without dataCategories has its processor's, got %v", got)
	}
}

func TestProcessorSafeguard(t *testing.T) {
	for _, c := range []struct {
		country  string
		transfer Transfer
		ok       bool
	}{
		{"IE", TransferNone, true},
		{"NO", TransferNone, true},
		{"US", TransferNone, false},
		{"US", TransferDPF, true},
		{"IN", TransferDPF, false},
		{"JP", TransferAdequacy, true},
		{"US", TransferAdequacy, false},
		{"IN", TransferSCC, true},
	} {
		p := &Processor{Country: c.country, Transfer: c.transfer}
		if why := p.Safeguard(); (why == "") != c.ok {
			t.Errorf("%s %s: Safeguard %q, want ok=%v", c.country, c.transfer, why, c.ok)
		}
	}
	if v := Taxonomy(); len(v.Countries) != 249 || len(v.EEA) != 30 {
		t.Errorf("%d countries, %d in the EEA; want 249 and 30", len(v.Countries), len(v.EEA))
	}
}

func TestInternalHosts(t *testing.T) {
	set := &Set{InternalDomains: []string{"retail.example"}}
	for host, want := range map[string]bool{
		"retail.example": true, "inventory.retail.example": true, "*.retail.example": true,
		"notretail.example": false, "api.stripe.com": false, "orders.shop.svc.cluster.local": true, "db.shop.svc": true,
	} {
		if got := set.Internal(host); got != want {
			t.Errorf("Internal(%q) = %v, want %v", host, got, want)
		}
	}
}
