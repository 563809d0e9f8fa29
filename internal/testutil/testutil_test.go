package testutil

import (
	"context"
	"testing"

	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/proto"

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

func TestStartServesCheckOverLoopback(t *testing.T) {
	s := Start(t, rules.NewLive(Table(t, "rules.yaml", testRules), rules.LiveOptions{}), authz.Options{})
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
