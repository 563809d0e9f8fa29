package authz

import (
	"context"
	"fmt"
	"sync"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/egress-authz/egress-authz/internal/checkreq"
	"github.com/egress-authz/egress-authz/rules"
)

// viaWire decides req as the gRPC handler does and decodes what it would
// send, whichever form (proto or pre-encoded bytes) that is.
func viaWire(s *Server, ctx context.Context, req *authv3.CheckRequest, invalid string) (*authv3.CheckResponse, error) {
	switch v := s.wire(s.check(ctx, req, invalid)).(type) {
	case *encoded:
		var resp authv3.CheckResponse
		if err := proto.Unmarshal(v.b, &resp); err != nil {
			return nil, err
		}
		return &resp, nil
	case *authv3.CheckResponse:
		return v, nil
	}
	panic("wire returned an unknown form")
}

// TestWireMatchesResponse holds the pre-encoded allow responses equal to
// the protos Check builds, for HTTP and TLS passthrough, across rule-set
// versions.
func TestWireMatchesResponse(t *testing.T) {
	const yaml = `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: stripe
    owner: team-payments
    ticket: SEC-1
    action: allow
    from: {namespaces: [payments]}
    to: {hosts: [api.stripe.com]}
  - id: dry
    mode: dry-run
    action: deny
    to: {hosts: [api.stripe.com]}
`
	for _, cacheSize := range []int{0, 100} {
		live := rules.NewLive(compileTable(t, "r.yaml", yaml), rules.LiveOptions{CacheSize: cacheSize})
		s := NewServer(live, Options{})
		reqs := []*authv3.CheckRequest{
			checkreq.SNI("spiffe://cluster.local/ns/payments/sa/checkout", "api.stripe.com", 443),
			checkreq.SNI("spiffe://cluster.local/ns/other/sa/x", "api.stripe.com", 443),
		}
		for _, id := range []string{"", "req-1", "ünï\"code", string(make([]byte, 300))} {
			r, err := checkreq.HTTP{Principal: "spiffe://cluster.local/ns/payments/sa/checkout", URL: "https://api.stripe.com/v1/x", RequestID: id}.Build()
			if err != nil {
				t.Fatal(err)
			}
			reqs = append(reqs, r)
		}
		for round := 0; round < 2; round++ { // the second round uses the cached templates
			for i, req := range reqs {
				got, err := viaWire(s, context.Background(), req, "")
				if err != nil {
					t.Fatal(err)
				}
				o := s.check(context.Background(), req, "")
				want := response(&o.d, o.sni, got.GetDynamicMetadata().GetFields()["request_id"].GetStringValue())
				if !proto.Equal(got, want) {
					t.Fatalf("request %d: wire form\n%v\nwant\n%v", i, got, want)
				}
			}
		}
		// A new rule-set version gets new templates.
		live.Swap(compileTable(t, "r.yaml", yaml+"  - id: extra\n    action: deny\n    to: {hosts: [x.example]}\n"))
		got, _ := viaWire(s, context.Background(), reqs[2], "")
		if got.GetDynamicMetadata().GetFields()["ruleset"].GetStringValue() != live.Version() {
			t.Fatal("an allow after a reload carries the old rule-set version")
		}
	}
}

func compileTable(t *testing.T, name, yaml string) *rules.Table {
	t.Helper()
	set, err := rules.Parse(rules.Source{Name: name, Data: []byte(yaml)})
	if err != nil {
		t.Fatal(err)
	}
	table, err := rules.Compile(set)
	if err != nil {
		t.Fatal(err)
	}
	return table
}

// TestAllowTemplatesDuringAReload: while decisions of the old and the new
// rule-set version are both in flight, each keeps finding its own
// templates, and concurrent callers share one template per rule.
func TestAllowTemplatesDuringAReload(t *testing.T) {
	s := NewServer(rules.NewLive(compileTable(t, "r.yaml", "apiVersion: egress-authz/v1\nkind: RuleSet\ntrustDomains: [cluster.local]\nrules: []\n"), rules.LiveOptions{}), Options{})
	rule := &rules.Rule{ID: "r", Action: rules.Allow}
	decision := func(version string) *rules.Decision {
		return &rules.Decision{Allow: true, Reason: rules.ReasonAllowed, Rule: rule, Version: version}
	}
	old := s.allowTemplate(decision("v1"), false)
	var cur *template
	for i := range 4 {
		if got := s.allowTemplate(decision("v2"), false); cur == nil {
			cur = got
		} else if got != cur {
			t.Errorf("round %d: the new version's template was made again", i)
		}
		if got := s.allowTemplate(decision("v1"), false); got != old {
			t.Errorf("round %d: the old version's template was made again", i)
		}
	}

	// A third version: the oldest set is released, the previous one kept.
	third := s.allowTemplate(decision("v3"), false)
	if got := s.allowTemplate(decision("v2"), false); got != cur {
		t.Errorf("after v3: the v2 template was made again")
	}
	if got := s.allowTemplate(decision("v3"), false); got != third {
		t.Errorf("after v3: the v3 template was made again")
	}

	const callers = 32
	for round := range 20 {
		version := fmt.Sprintf("c%d", round)
		var wg sync.WaitGroup
		got := make([]*template, callers)
		start := make(chan struct{})
		for i := range callers {
			wg.Go(func() {
				<-start
				got[i] = s.allowTemplate(decision(version), i%2 == 0)
			})
		}
		close(start)
		wg.Wait()
		for i := range got {
			if want := s.allowTemplate(decision(version), i%2 == 0); got[i] != want {
				t.Fatalf("version %s: caller %d got a template that was lost", version, i)
			}
		}
	}
}
