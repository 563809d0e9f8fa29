package authztest

import (
	"encoding/json"
	"maps"
	"slices"
	"testing"
	"unicode/utf8"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/proto"

	"github.com/egress-authz/egress-authz/authz"
	"github.com/egress-authz/egress-authz/rules"
)

// Verdict is what a CheckResponse says, read from its dynamic metadata
// after VerdictOf has checked that every part of the response agrees.
type Verdict struct {
	Allow     bool
	Reason    string
	Rule      string
	RuleSet   string
	RequestID string
	HTTP      bool // the response has an HTTP part (OkResponse or DeniedResponse)
}

// VerdictOf checks that resp is a well-formed answer as the SPEC's
// "Response" section describes it, reporting each disagreement with
// tb.Errorf, and returns what it says.
func VerdictOf(tb testing.TB, resp *authv3.CheckResponse) Verdict {
	tb.Helper()
	md := Metadata(resp)
	wantKeys := []string{"decision", "reason", "request_id", "rule", "ruleset"}
	if got := slices.Sorted(maps.Keys(md)); !slices.Equal(got, wantKeys) {
		tb.Errorf("dynamic_metadata keys %v, want %v", got, wantKeys)
	}
	v := Verdict{Allow: md["decision"] == "allow", Reason: md["reason"], Rule: md["rule"], RuleSet: md["ruleset"], RequestID: md["request_id"]}
	if md["decision"] != "allow" && md["decision"] != "deny" {
		tb.Errorf("dynamic_metadata decision %q, want allow or deny", md["decision"])
	}
	if v.RequestID == "" || !utf8.ValidString(v.RequestID) {
		tb.Errorf("request_id %q: want a non-empty UTF-8 string", v.RequestID)
	}
	switch c := code.Code(resp.GetStatus().GetCode()); c {
	case code.Code_OK:
		if !v.Allow || v.Reason != string(rules.ReasonAllowed) || v.Rule == "" {
			tb.Errorf("status OK but metadata %v", md)
		}
		switch hr := resp.GetHttpResponse().(type) {
		case nil:
		case *authv3.CheckResponse_OkResponse:
			v.HTTP = true
			// Nothing may be added upstream: the upstream is a third party.
			if !proto.Equal(hr.OkResponse, &authv3.OkHttpResponse{}) {
				tb.Errorf("allow changes the request: %v", hr.OkResponse)
			}
		default:
			tb.Errorf("status OK with HTTP response %T", hr)
		}
	case code.Code_PERMISSION_DENIED:
		if v.Allow || v.Reason == "" || v.Reason == string(rules.ReasonAllowed) {
			tb.Errorf("status PERMISSION_DENIED but metadata %v", md)
		}
		if msg := resp.GetStatus().GetMessage(); msg != v.Reason {
			tb.Errorf("status message %q, want the reason %q", msg, v.Reason)
		}
		switch hr := resp.GetHttpResponse().(type) {
		case nil:
		case *authv3.CheckResponse_DeniedResponse:
			v.HTTP = true
			checkDenied(tb, hr.DeniedResponse, v)
		default:
			tb.Errorf("status PERMISSION_DENIED with HTTP response %T", hr)
		}
	default:
		tb.Errorf("status code %v, want OK or PERMISSION_DENIED", c)
	}
	return v
}

// checkDenied checks the HTTP part of a deny: 403, the decision header and
// a JSON body with exactly decision, reason, rule and request_id.
func checkDenied(tb testing.TB, d *authv3.DeniedHttpResponse, v Verdict) {
	tb.Helper()
	if got := d.GetStatus().GetCode(); got != typev3.StatusCode_Forbidden {
		tb.Errorf("HTTP status %v, want 403", got)
	}
	if got := headerValues(d.GetHeaders(), authz.DecisionHeader); !slices.Equal(got, []string{"deny"}) {
		tb.Errorf("header %s: %q, want [deny]", authz.DecisionHeader, got)
	}
	var body map[string]any
	if err := json.Unmarshal([]byte(d.GetBody()), &body); err != nil {
		tb.Errorf("deny body %q is not JSON: %v", d.GetBody(), err)
		return
	}
	want := map[string]any{"decision": "deny", "reason": v.Reason, "rule": v.Rule, "request_id": v.RequestID}
	if !maps.Equal(body, want) {
		tb.Errorf("deny body %v, want %v", body, want)
	}
}

func headerValues(hs []*corev3.HeaderValueOption, key string) []string {
	var out []string
	for _, h := range hs {
		if h.GetHeader().GetKey() == key {
			out = append(out, h.GetHeader().GetValue())
		}
	}
	return out
}
