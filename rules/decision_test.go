package rules

import (
	"go/ast"
	goparser "go/parser"
	"go/token"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
)

// TestReasonsListsEveryReason reads the package's source for every
// constant of type Reason and checks that Reasons lists each exactly once,
// that they are all declared in decision.go, and that Describe has words
// for each. Metrics, case files and the tools take their reasons from
// Reasons, so a reason missing there would go uncounted or be refused.
func TestReasonsListsEveryReason(t *testing.T) {
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	fset := token.NewFileSet()
	declared := map[Reason]string{} // value -> constant name
	for _, name := range files {
		if filepath.Ext(name) != ".go" || len(name) > 8 && name[len(name)-8:] == "_test.go" {
			continue
		}
		f, err := goparser.ParseFile(fset, name, nil, 0)
		if err != nil {
			t.Fatal(err)
		}
		for _, decl := range f.Decls {
			gd, ok := decl.(*ast.GenDecl)
			if !ok || gd.Tok != token.CONST {
				continue
			}
			for _, spec := range gd.Specs {
				vs := spec.(*ast.ValueSpec)
				if id, ok := vs.Type.(*ast.Ident); !ok || id.Name != "Reason" {
					continue
				}
				for i, n := range vs.Names {
					lit, ok := vs.Values[i].(*ast.BasicLit)
					if !ok || lit.Kind != token.STRING {
						t.Fatalf("%s: %s is not a string literal", fset.Position(n.Pos()), n.Name)
					}
					v, _ := strconv.Unquote(lit.Value)
					if name != "decision.go" {
						t.Errorf("%s: reason %s declared outside decision.go", fset.Position(n.Pos()), n.Name)
					}
					declared[Reason(v)] = n.Name
				}
			}
		}
	}
	if len(declared) < 11 {
		t.Fatalf("found %d Reason constants, want at least 11: the source scan is broken", len(declared))
	}
	got := Reasons()
	for v, name := range declared {
		if n := countOf(got, v); n != 1 {
			t.Errorf("%s (%q) is in Reasons %d times, want once", name, v, n)
		}
	}
	for _, r := range got {
		if _, ok := declared[r]; !ok {
			t.Errorf("Reasons lists %q, which is no Reason constant", r)
		}
		if r.Describe(nil) == string(r) {
			t.Errorf("Describe has no words for %q", r)
		}
	}
	if got[0] != ReasonAllowed || got[len(got)-1] != ReasonAuditUnavailable {
		t.Errorf("Reasons = %q: want allowed-by-rule first, then the SPEC's order ending in audit-unavailable", got)
	}
	got[0] = "changed"
	if Reasons()[0] != ReasonAllowed {
		t.Error("Reasons returns its own array: a caller changed it")
	}
}

func countOf(s []Reason, r Reason) int {
	n := 0
	for _, v := range s {
		if v == r {
			n++
		}
	}
	return n
}

// TestPrepare checks the ladder Decide and the offline tools share: the
// first reason that applies, in the SPEC's order, and what is known of the
// request at that point.
func TestPrepare(t *testing.T) {
	onlyCluster := func(td string) bool { return td == "cluster.local" }
	for _, tc := range []struct {
		name    string
		req     Request
		trusted func(string) bool
		want    Prepared
		reason  Reason
	}{
		{"no_identity_first", Request{Host: "bad host", Path: "x"}, onlyCluster, Prepared{}, ReasonNoIdentity},
		{"invalid_identity", Request{Principal: "checkout", Host: "a.example"}, onlyCluster, Prepared{}, ReasonInvalidIdentity},
		{"untrusted_keeps_only_the_trust_domain", Request{Principal: "spiffe://partner.example/ns/payments/sa/checkout", Host: "a.example"},
			onlyCluster, Prepared{Identity: Identity{TrustDomain: "partner.example"}}, ReasonUntrustedDomain},
		{"nil_trusts_every_trust_domain", httpReq("spiffe://partner.example/ns/payments/sa/checkout", "GET", "A.example.", "/v1/./x?q"),
			nil, Prepared{Identity: Identity{"partner.example", "payments", "checkout"}, Host: "a.example", Port: 443, Path: "/v1/x"}, ""},
		{"no_host", Request{Principal: checkout}, onlyCluster, Prepared{Identity: Identity{"cluster.local", "payments", "checkout"}}, ReasonNoHost},
		{"invalid_host", httpReq(checkout, "GET", "user@api.stripe.com", "/"), onlyCluster,
			Prepared{Identity: Identity{"cluster.local", "payments", "checkout"}}, ReasonInvalidHost},
		{"unsafe_path_keeps_host_and_port", httpReq(checkout, "GET", "api.stripe.com:8443", "/a%2Fb"), onlyCluster,
			Prepared{Identity: Identity{"cluster.local", "payments", "checkout"}, Host: "api.stripe.com", Port: 8443}, ReasonUnsafePath},
		{"sni_has_no_path", sniReq(checkout, "api.sendgrid.com"), onlyCluster,
			Prepared{Identity: Identity{"cluster.local", "payments", "checkout"}, Host: "api.sendgrid.com", Port: 443}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, reason := Prepare(tc.req, tc.trusted)
			if p != tc.want || reason != tc.reason {
				t.Errorf("Prepare = %+v, %q; want %+v, %q", p, reason, tc.want, tc.reason)
			}
		})
	}
}

// TestDecideIsPrepareThenRules: for every request Prepare refuses, Decide
// denies with Prepare's reason and shows what Prepare established.
func TestDecideIsPrepareThenRules(t *testing.T) {
	tab := compileRules(t, `- {id: any, action: allow}`)
	for _, req := range []Request{
		{}, {Principal: "x"}, {Principal: "spiffe://other.example/a", Host: "a.example"},
		{Principal: checkout}, httpReq(checkout, "GET", "a b", "/"), httpReq(checkout, "GET", "a.example", "/%00"),
		httpReq(checkout, "GET", "a.example", "/ok"),
	} {
		p, reason := Prepare(req, func(td string) bool { return slices.Contains(tab.trustDomains, td) })
		d := tab.Decide(req, testNow)
		if reason == "" {
			reason = ReasonAllowed
		}
		if d.Reason != reason || d.Identity != p.Identity || d.Host != p.Host || d.Port != p.Port || d.Path != p.Path {
			t.Errorf("%+v: Decide %+v, Prepare %+v %q", req, d, p, reason)
		}
	}
}
