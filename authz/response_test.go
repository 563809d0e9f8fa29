package authz

import (
	"encoding/json"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/protobuf/proto"

	"github.com/egress-authz/egress-authz/rules"
)

func TestResponse(t *testing.T) {
	rule := &rules.Rule{ID: "r1"}
	cases := []struct {
		name     string
		d        rules.Decision
		sni      bool
		wantCode code.Code
		wantHTTP string // "ok", "denied" or "" for none
		wantRule string
	}{
		{"http_allow", rules.Decision{Allow: true, Reason: rules.ReasonAllowed, Rule: rule, Version: "v1"}, false, code.Code_OK, "ok", "r1"},
		{"tls_allow", rules.Decision{Allow: true, Reason: rules.ReasonAllowed, Rule: rule, Version: "v1"}, true, code.Code_OK, "", "r1"},
		{"http_deny_by_rule", rules.Decision{Reason: rules.ReasonDeniedByRule, Rule: rule, Version: "v1"}, false, code.Code_PERMISSION_DENIED, "denied", "r1"},
		{"http_deny_no_rule", rules.Decision{Reason: rules.ReasonNoMatchingRule, Version: "v1"}, false, code.Code_PERMISSION_DENIED, "denied", ""},
		{"tls_deny", rules.Decision{Reason: rules.ReasonNoMatchingRule, Version: "v1"}, true, code.Code_PERMISSION_DENIED, "", ""},
		{"dry_run_outcomes_not_shown", rules.Decision{Reason: rules.ReasonNoMatchingRule, Version: "v1", DryRun: []rules.Outcome{{Rule: rule, Allow: true}}}, false, code.Code_PERMISSION_DENIED, "denied", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			resp := response(&tc.d, tc.sni, `req-"1"<`)
			if _, err := proto.Marshal(resp); err != nil {
				t.Fatalf("response cannot be sent: %v", err)
			}
			if got := code.Code(resp.GetStatus().GetCode()); got != tc.wantCode {
				t.Errorf("code %v, want %v", got, tc.wantCode)
			}
			md := resp.GetDynamicMetadata().GetFields()
			wantMD := map[string]string{"decision": rules.DecisionWord(tc.d.Allow), "rule": tc.wantRule, "ruleset": "v1", "reason": string(tc.d.Reason), "request_id": `req-"1"<`}
			if len(md) != len(wantMD) {
				t.Errorf("metadata %v, want %v", md, wantMD)
			}
			for k, v := range wantMD {
				if md[k].GetStringValue() != v {
					t.Errorf("metadata %s = %v, want %q", k, md[k], v)
				}
			}
			switch hr := resp.GetHttpResponse().(type) {
			case nil:
				if tc.wantHTTP != "" {
					t.Errorf("no HTTP part, want %s", tc.wantHTTP)
				}
			case *authv3.CheckResponse_OkResponse:
				if tc.wantHTTP != "ok" || !proto.Equal(hr.OkResponse, &authv3.OkHttpResponse{}) {
					t.Errorf("OkResponse %v, want %s", hr.OkResponse, tc.wantHTTP)
				}
			case *authv3.CheckResponse_DeniedResponse:
				if tc.wantHTTP != "denied" {
					t.Fatalf("DeniedResponse, want %q", tc.wantHTTP)
				}
				d := hr.DeniedResponse
				if d.GetStatus().GetCode() != typev3.StatusCode_Forbidden {
					t.Errorf("HTTP status %v, want 403", d.GetStatus())
				}
				var body map[string]any
				if err := json.Unmarshal([]byte(d.Body), &body); err != nil {
					t.Fatalf("body %q: %v", d.Body, err)
				}
				want := map[string]any{"decision": "deny", "reason": string(tc.d.Reason), "rule": tc.wantRule, "request_id": `req-"1"<`}
				if len(body) != len(want) {
					t.Errorf("body %v, want %v", body, want)
				}
				for k, v := range want {
					if body[k] != v {
						t.Errorf("body %s = %v, want %v", k, body[k], v)
					}
				}
				found := false
				for _, h := range d.Headers {
					if h.GetHeader().GetKey() == DecisionHeader && h.GetHeader().GetValue() == "deny" {
						found = true
					}
				}
				if !found {
					t.Errorf("headers %v: no %s: deny", d.Headers, DecisionHeader)
				}
			}
		})
	}
}
