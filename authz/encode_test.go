package authz

import (
	"context"
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
