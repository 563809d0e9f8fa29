package authz

import (
	"encoding/json"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/code"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/egress-authz/egress-authz/rules"
)

// DecisionHeader is the header a denied caller receives, so that an
// application team can tell an egress-authz deny from an upstream 403.
const DecisionHeader = "x-egress-authz-decision"

// denyBody is the JSON body of an HTTP deny.
type denyBody struct {
	Decision  string `json:"decision"`
	Reason    string `json:"reason"`
	Rule      string `json:"rule"`
	RequestID string `json:"request_id"`
}

// metadataFields is the dynamic_metadata of a response, for Envoy's access
// log; request_id is left out when empty (see wire).
func metadataFields(d *rules.Decision, requestID string) map[string]*structpb.Value {
	ruleID := ""
	if d.Rule != nil {
		ruleID = d.Rule.ID
	}
	m := map[string]*structpb.Value{
		"decision": structpb.NewStringValue(rules.DecisionWord(d.Allow)),
		"rule":     structpb.NewStringValue(ruleID),
		"ruleset":  structpb.NewStringValue(d.Version),
		"reason":   structpb.NewStringValue(string(d.Reason)),
	}
	if requestID != "" {
		m["request_id"] = structpb.NewStringValue(requestID)
	}
	return m
}

// response builds the CheckResponse for a decision. An allow adds nothing
// upstream (the upstream is a third party); a deny tells the caller why,
// except for TLS passthrough, where Envoy can only close the connection.
func response(d *rules.Decision, sni bool, requestID string) *authv3.CheckResponse {
	ruleID := ""
	if d.Rule != nil {
		ruleID = d.Rule.ID
	}
	md := &structpb.Struct{Fields: metadataFields(d, requestID)}
	if d.Allow {
		resp := &authv3.CheckResponse{Status: &rpcstatus.Status{Code: int32(code.Code_OK)}, DynamicMetadata: md}
		if !sni {
			resp.HttpResponse = &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{}}
		}
		return resp
	}
	resp := &authv3.CheckResponse{
		Status:          &rpcstatus.Status{Code: int32(code.Code_PERMISSION_DENIED), Message: string(d.Reason)},
		DynamicMetadata: md,
	}
	if sni {
		return resp
	}
	body, _ := json.Marshal(denyBody{Decision: "deny", Reason: string(d.Reason), Rule: ruleID, RequestID: requestID})
	resp.HttpResponse = &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
		Status: &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
		Headers: []*corev3.HeaderValueOption{
			{Header: &corev3.HeaderValue{Key: DecisionHeader, Value: "deny"}},
			{Header: &corev3.HeaderValue{Key: "content-type", Value: "application/json"}},
		},
		Body: string(body),
	}}
	return resp
}
