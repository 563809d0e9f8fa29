package authz

import (
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// CheckDecode holds the wire decoder and Server.Check's mapping to the
// reference (see decode_test.go) for cr, so that the external tests'
// requests are compared too.
func CheckDecode(t testing.TB, cr *authv3.CheckRequest) { checkProto(t, cr) }

// CheckDecodeBytes is CheckDecode for the wire bytes of a request.
func CheckDecodeBytes(t testing.TB, b []byte) { checkWire(t, b) }
