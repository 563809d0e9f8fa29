package authztest

import (
	"context"
	"fmt"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/egress-authz/egress-authz/authz"
	"github.com/egress-authz/egress-authz/internal/checkreq"
	"github.com/egress-authz/egress-authz/rules"
)

const testRules = `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: example
    action: allow
    to: {hosts: [example.com]}
`

func TestNewServerServesCheckOverLoopback(t *testing.T) {
	s := NewServer(t, rules.NewLive(Table(t, "rules.yaml", testRules), rules.LiveOptions{}), authz.Options{})
	req, err := checkreq.HTTP{Principal: "spiffe://cluster.local/ns/a/sa/b", URL: "https://example.com/"}.Build()
	if err != nil {
		t.Fatal(err)
	}
	resp := s.Check(t, req)
	if got := resp.GetStatus().GetCode(); got != int32(code.Code_OK) {
		t.Fatalf("status %d, want OK", got)
	}
	if md := Metadata(resp); md["decision"] != "allow" || md["rule"] != "example" {
		t.Fatalf("metadata %v, want an allow by rule example", md)
	}

	// The same request as raw bytes gets the same answer.
	b, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), Timeout)
	defer cancel()
	raw, err := s.CheckRaw(ctx, b)
	if err != nil {
		t.Fatalf("CheckRaw: %v", err)
	}
	if got := Metadata(raw)["rule"]; got != "example" {
		t.Fatalf("CheckRaw: rule %q, want example", got)
	}
}

// recorder is a testing.TB that keeps what Errorf reports instead of
// failing the test.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}

func (r *recorder) Errorf(format string, args ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, args...))
}

func TestVerdictOf(t *testing.T) {
	s := NewServer(t, rules.NewLive(Table(t, "rules.yaml", testRules), rules.LiveOptions{}), authz.Options{})
	const principal = "spiffe://cluster.local/ns/a/sa/b"
	check := func(url string) *authv3.CheckResponse {
		req, err := checkreq.HTTP{Principal: principal, URL: url}.Build()
		if err != nil {
			t.Fatal(err)
		}
		return s.Check(t, req)
	}
	allowed, denied := check("https://example.com/"), check("https://other.example/")
	tlsDenied := s.Check(t, checkreq.SNI(principal, "other.example", 443))

	t.Run("real_answers_are_well_formed", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			resp *authv3.CheckResponse
			want Verdict
		}{
			{"allow", allowed, Verdict{Allow: true, Reason: string(rules.ReasonAllowed), Rule: "example", HTTP: true}},
			{"deny", denied, Verdict{Reason: string(rules.ReasonNoMatchingRule), HTTP: true}},
			{"tls_deny", tlsDenied, Verdict{Reason: string(rules.ReasonNoMatchingRule)}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				r := &recorder{TB: t}
				got := VerdictOf(r, tc.resp)
				if len(r.errs) > 0 {
					t.Errorf("VerdictOf reported %q on a real answer", r.errs)
				}
				if got.RuleSet == "" || got.RequestID == "" {
					t.Errorf("verdict %+v: want the rule set and request id filled in", got)
				}
				got.RuleSet, got.RequestID = "", ""
				if got != tc.want {
					t.Errorf("verdict %+v, want %+v", got, tc.want)
				}
			})
		}
	})

	t.Run("malformed_answers_are_reported", func(t *testing.T) {
		for _, tc := range []struct {
			name string
			resp *authv3.CheckResponse
			edit func(*authv3.CheckResponse)
		}{
			{"allow_without_rule", allowed, func(r *authv3.CheckResponse) {
				r.DynamicMetadata.Fields["rule"] = structpb.NewStringValue("")
			}},
			{"allow_adding_headers", allowed, func(r *authv3.CheckResponse) {
				r.GetOkResponse().HeadersToRemove = []string{"authorization"}
			}},
			{"missing_request_id", allowed, func(r *authv3.CheckResponse) {
				delete(r.DynamicMetadata.Fields, "request_id")
			}},
			{"unknown_decision", denied, func(r *authv3.CheckResponse) {
				r.DynamicMetadata.Fields["decision"] = structpb.NewStringValue("maybe")
			}},
			{"deny_message_not_the_reason", denied, func(r *authv3.CheckResponse) {
				r.Status.Message = "forbidden"
			}},
			{"deny_body_disagrees", denied, func(r *authv3.CheckResponse) {
				r.GetDeniedResponse().Body = `{"decision":"deny"}`
			}},
			{"deny_without_decision_header", denied, func(r *authv3.CheckResponse) {
				r.GetDeniedResponse().Headers = nil
			}},
			{"unexpected_status", tlsDenied, func(r *authv3.CheckResponse) {
				r.Status.Code = int32(code.Code_UNAVAILABLE)
			}},
		} {
			t.Run(tc.name, func(t *testing.T) {
				resp := proto.Clone(tc.resp).(*authv3.CheckResponse)
				tc.edit(resp)
				r := &recorder{TB: t}
				VerdictOf(r, resp)
				if len(r.errs) == 0 {
					t.Errorf("VerdictOf accepted %v", resp)
				}
			})
		}
	})
}
