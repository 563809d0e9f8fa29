package authz

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"sync"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/egress-authz/egress-authz/internal/checkreq"
	"github.com/egress-authz/egress-authz/rules"
)

// viaWire decides in as the gRPC handler does and decodes the bytes it
// would send.
func viaWire(s *Server, ctx context.Context, in *input) (*authv3.CheckResponse, error) {
	var o outcome
	s.check(ctx, in, &o)
	var e encoded
	s.wire(&o, in.spare, &e)
	var resp authv3.CheckResponse
	if err := proto.Unmarshal(e.b, &resp); err != nil {
		return nil, err
	}
	return &resp, nil
}

// mapProto maps a proto CheckRequest as Server.Check does.
func mapProto(cr *authv3.CheckRequest, trustXFCC bool) (rules.Request, meta, string) {
	in := inputFromProto(cr)
	return mapRequest(&in, trustXFCC)
}

// protoViaWire decides cr as the gRPC handler does.
func protoViaWire(s *Server, ctx context.Context, cr *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	in := inputFromProto(cr)
	return viaWire(s, ctx, &in)
}

// TestWireMatchesResponse holds the pre-encoded responses equal to the
// protos Check builds, allows and denies, for HTTP and TLS passthrough,
// across rule-set versions.
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
  - id: no-files
    action: deny
    to: {hosts: [files.stripe.com]}
`
	for _, cacheSize := range []int{0, 100} {
		live := rules.NewLive(compileTable(t, "r.yaml", yaml), rules.LiveOptions{CacheSize: cacheSize})
		s := NewServer(live, Options{})
		reqs := []*authv3.CheckRequest{
			checkreq.SNI("spiffe://cluster.local/ns/payments/sa/checkout", "api.stripe.com", 443),
			checkreq.SNI("spiffe://cluster.local/ns/other/sa/x", "api.stripe.com", 443),
		}
		ids := []string{"", "req-1", "ünï\"code", string(make([]byte, 300)), "<a&b>\\\u2028\u2029\x01\b\f\n\r\t\x7f\xff", strings.Repeat("\u2028", 60)}
		for _, url := range []string{"https://api.stripe.com/v1/x", "https://files.stripe.com/", "https://other.test/"} {
			for _, id := range ids {
				r, err := checkreq.HTTP{Principal: "spiffe://cluster.local/ns/payments/sa/checkout", URL: url, RequestID: id}.Build()
				if err != nil {
					t.Fatal(err)
				}
				reqs = append(reqs, r)
			}
		}
		reqs = append(reqs,
			checkreq.SNI("spiffe://cluster.local/ns/payments/sa/checkout", "files.stripe.com", 443),
			&authv3.CheckRequest{},
			httpReqWith(t, "GET", func(cr *authv3.CheckRequest) { cr.Attributes.Request.Http.Method = "G T" }),
		)
		for round := 0; round < 2; round++ { // the second round uses the cached templates
			for i, req := range reqs {
				got, err := protoViaWire(s, context.Background(), req)
				if err != nil {
					t.Fatal(err)
				}
				in := inputFromProto(req)
				var o outcome
				s.check(context.Background(), &in, &o)
				want := response(&o.d, o.sni, got.GetDynamicMetadata().GetFields()["request_id"].GetStringValue())
				if !proto.Equal(got, want) {
					t.Fatalf("request %d: wire form\n%v\nwant\n%v", i, got, want)
				}
			}
		}
		// A new rule-set version gets new templates.
		live.Swap(compileTable(t, "r.yaml", yaml+"  - id: extra\n    action: deny\n    to: {hosts: [x.example]}\n"))
		got, _ := protoViaWire(s, context.Background(), reqs[2])
		if got.GetDynamicMetadata().GetFields()["ruleset"].GetStringValue() != live.Version() {
			t.Fatal("an allow after a reload carries the old rule-set version")
		}
	}
}

func httpReqWith(t *testing.T, method string, edit func(*authv3.CheckRequest)) *authv3.CheckRequest {
	t.Helper()
	r, err := checkreq.HTTP{Principal: "spiffe://cluster.local/ns/payments/sa/checkout", Method: method, URL: "https://api.stripe.com/"}.Build()
	if err != nil {
		t.Fatal(err)
	}
	edit(r)
	return r
}

// TestAppendJSONString holds appendJSONString to encoding/json.
func TestAppendJSONString(t *testing.T) {
	var inputs []string
	for r := rune(0); r < 0x3000; r++ {
		inputs = append(inputs, string(r), "a"+string(r)+"b")
	}
	for b := 0x80; b < 0x100; b++ {
		inputs = append(inputs, string([]byte{byte(b)}), "x"+string([]byte{byte(b), 'y'}))
	}
	inputs = append(inputs, "", "\u2028\u2029", "\U0001F600", "\xed\xa0\x80", "\xf4\x90\x80\x80", "é\xc3")
	for _, s := range inputs {
		want, err := json.Marshal(s)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendJSONString(nil, s); string(got) != string(want[1:len(want)-1]) {
			t.Errorf("appendJSONString(%q) = %s, want %s", s, got, want)
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
	old := s.responseTemplate(decision("v1"), false)
	var cur *template
	for i := range 4 {
		if got := s.responseTemplate(decision("v2"), false); cur == nil {
			cur = got
		} else if got != cur {
			t.Errorf("round %d: the new version's template was made again", i)
		}
		if got := s.responseTemplate(decision("v1"), false); got != old {
			t.Errorf("round %d: the old version's template was made again", i)
		}
	}

	// A third version: the oldest set is released, the previous one kept.
	third := s.responseTemplate(decision("v3"), false)
	if got := s.responseTemplate(decision("v2"), false); got != cur {
		t.Errorf("after v3: the v2 template was made again")
	}
	if got := s.responseTemplate(decision("v3"), false); got != third {
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
				got[i] = s.responseTemplate(decision(version), i%2 == 0)
			})
		}
		close(start)
		wg.Wait()
		for i := range got {
			if want := s.responseTemplate(decision(version), i%2 == 0); got[i] != want {
				t.Fatalf("version %s: caller %d got a template that was lost", version, i)
			}
		}
	}
}
