package authz

import (
	"context"
	"testing"
	"unsafe"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/checkreq"
	"github.com/egress-authz/egress-authz/internal/telemetry"
	"github.com/egress-authz/egress-authz/rules"
	"google.golang.org/protobuf/proto"
)

// TestFrameSize: a frame, with the runtime's 8-byte header for objects
// holding pointers, stays in the 1152-byte size class.
func TestFrameSize(t *testing.T) {
	if n := unsafe.Sizeof(checkFrame{}) + 8; n > 1152 {
		t.Errorf("a frame takes %d bytes, over the 1152-byte size class: make frameBytes smaller", n)
	}
}

type discardRecorder struct{ n int }

func (r *discardRecorder) Record(_ context.Context, recs []audit.Record) error {
	r.n += len(recs)
	return nil
}

// TestCheckAllocations: a Check the cache answers allocates its frame and
// nothing else, from the wire bytes to the encoded response, allow or
// deny, HTTP or TLS passthrough, with or without a decision log (a
// recorder that keeps nothing) and the server's metrics.
func TestCheckAllocations(t *testing.T) {
	const yaml = `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: stripe
    action: allow
    from: {namespaces: [payments]}
    to: {hosts: [api.stripe.com, files.stripe.com], ports: [443]}
  - id: trial
    mode: dry-run
    action: deny
    to: {hosts: ["*"]}
`
	const p = "spiffe://cluster.local/ns/payments/sa/checkout"
	allowed := typicalRequest(t)
	denied, err := checkreq.HTTP{Principal: "spiffe://cluster.local/ns/other/sa/x", URL: "https://api.stripe.com/v1/charges", RequestID: "3f1c0a52-7d1e-4d3b-9a57-2b8f6c1e4a90"}.Build()
	if err != nil {
		t.Fatal(err)
	}
	noID, err := checkreq.HTTP{Principal: p, Method: "POST", URL: "https://api.stripe.com/v1/charges"}.Build()
	if err != nil {
		t.Fatal(err)
	}
	reqs := map[string][]byte{"allow": allowed, "deny": mustMarshal(t, denied), "generated_id": mustMarshal(t, noID), "tls": mustMarshal(t, checkreq.SNI(p, "files.stripe.com", 443)),
		"header_map": mustMarshal(t, realRequests()[1])}
	for name, opts := range map[string]Options{
		"no_log":  {},
		"log":     {Recorder: &discardRecorder{}},
		"metrics": {Recorder: &discardRecorder{}, Observer: telemetry.NewMetrics()},
	} {
		s := NewServer(rules.NewLive(compileTable(t, "r.yaml", yaml), rules.LiveOptions{CacheSize: 100}), opts)
		for reqName, b := range reqs {
			t.Run(name+"/"+reqName, func(t *testing.T) {
				check := func() {
					f := new(checkFrame)
					decodeCheck(b, f)
					if e := s.serveFrame(context.Background(), f); len(e.b) == 0 {
						t.Fatal("no response")
					}
				}
				check() // the cache admits a request at its second miss
				check()
				if n := testing.AllocsPerRun(100, check); n != 1 {
					t.Errorf("%v allocations per Check, want 1 (the frame)", n)
				}
			})
		}
	}
}

func mustMarshal(t *testing.T, m proto.Message) []byte {
	t.Helper()
	b, err := proto.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
