package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"google.golang.org/genproto/googleapis/rpc/code"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/egress-authz/egress-authz/internal/checkreq"
	"github.com/egress-authz/egress-authz/internal/spiffetls"
)

// headerFlag collects repeated -H "name: value" flags.
type headerFlag map[string]string

func (h headerFlag) String() string { return "" }
func (h headerFlag) Set(s string) error {
	k, v, ok := strings.Cut(s, ":")
	if !ok {
		return fmt.Errorf("header %q: want \"name: value\"", s)
	}
	h[strings.ToLower(strings.TrimSpace(k))] = strings.TrimSpace(v)
	return nil
}

func checkCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	addr := fs.String("addr", "127.0.0.1:9191", "egress-authz gRPC `HOST:PORT`")
	principal := fs.String("principal", "", "caller's SPIFFE `ID`, sent as Envoy's source.principal")
	method := fs.String("X", "GET", "HTTP `METHOD`")
	sni := fs.String("sni", "", "check a TLS-passthrough connection to this server `NAME` instead of a URL")
	port := fs.Uint("port", 443, "destination port of an --sni connection")
	requestID := fs.String("request-id", "", "x-request-id to send (default: none, the server makes one)")
	timeout := fs.Duration("timeout", 5*time.Second, "how long to wait for the answer")
	asJSON := fs.Bool("json", false, "print the answer as JSON")
	var tc tlsClient
	fs.StringVar(&tc.cert, "tls-cert", "", "client certificate `FILE` (PEM) for a server that requires mTLS")
	fs.StringVar(&tc.key, "tls-key", "", "client key `FILE` (PEM)")
	fs.StringVar(&tc.ca, "tls-ca", "", "CA bundle `FILE` (PEM) the server's certificate must chain to")
	fs.StringVar(&tc.serverID, "server-id", "", "expected SPIFFE `ID` of the server (verifies an SVID without DNS names)")
	headers := headerFlag{}
	fs.Var(headers, "H", "extra request header \"name: value\", repeatable")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: egress-authz check --addr HOST:PORT --principal SPIFFE_ID [-X METHOD] URL\n       egress-authz check --addr HOST:PORT --principal SPIFFE_ID --sni HOST\n\nSends one real Check to a running server and prints decision, rule and reason.\nExit status: 0 allow, 3 deny, 1 error.\n\nFlags:")
		fs.PrintDefaults()
	}
	if code, ok := parseArgs(fs, args); !ok {
		return code
	}
	if *port == 0 || *port > 65535 {
		fmt.Fprintf(stderr, "egress-authz check: --port %d: want 1..65535\n", *port)
		return exitUsage
	}
	var cr *authv3.CheckRequest
	switch {
	case *sni != "" && fs.NArg() == 0:
		cr = checkreq.SNI(*principal, *sni, uint32(*port))
	case *sni == "" && fs.NArg() == 1:
		var err error
		cr, err = checkreq.HTTP{Principal: *principal, Method: *method, URL: fs.Arg(0), Headers: headers, RequestID: *requestID}.Build()
		if err != nil {
			fmt.Fprintln(stderr, "egress-authz check:", err)
			return exitUsage
		}
	default:
		fs.Usage()
		return exitUsage
	}

	creds, err := tc.credentials()
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz check:", err)
		return exitUsage
	}
	conn, err := grpc.NewClient(*addr, grpc.WithTransportCredentials(creds))
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz check:", err)
		return exitFail
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, cr)
	if err != nil {
		fmt.Fprintf(stderr, "egress-authz check: %s: %v\n", *addr, err)
		return exitFail
	}
	a := readAnswer(resp)
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		_ = enc.Encode(a)
	} else {
		fmt.Fprintf(stdout, "decision:   %s\nrule:       %s\nreason:     %s\nrequest-id: %s\nruleset:    %s\n",
			a.Decision, orDash(a.Rule), a.Reason, orDash(a.RequestID), orDash(a.RuleSet))
	}
	if a.Decision == "allow" {
		return exitOK
	}
	return exitDeny
}

// answer is what check prints.
type answer struct {
	Decision   string `json:"decision"`
	Rule       string `json:"rule"`
	Reason     string `json:"reason"`
	RequestID  string `json:"request_id,omitempty"`
	RuleSet    string `json:"ruleset,omitempty"`
	HTTPStatus int    `json:"http_status,omitempty"`
}

func readAnswer(resp *authv3.CheckResponse) answer {
	a := answer{Decision: "deny"}
	if resp.GetStatus().GetCode() == int32(code.Code_OK) {
		a.Decision = "allow"
	}
	md := resp.GetDynamicMetadata().GetFields()
	a.Rule = md["rule"].GetStringValue()
	a.Reason = md["reason"].GetStringValue()
	a.RuleSet = md["ruleset"].GetStringValue()
	a.RequestID = md["request_id"].GetStringValue()
	if a.Reason == "" {
		a.Reason = resp.GetStatus().GetMessage()
	}
	if d := resp.GetDeniedResponse(); d != nil {
		a.HTTPStatus = int(d.GetStatus().GetCode())
		var body struct {
			Reason    string `json:"reason"`
			Rule      string `json:"rule"`
			RequestID string `json:"request_id"`
		}
		if json.Unmarshal([]byte(d.GetBody()), &body) == nil {
			a.Reason, a.Rule, a.RequestID = body.Reason, body.Rule, body.RequestID
		}
	}
	return a
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// tlsClient is check's optional mTLS client identity.
type tlsClient struct{ cert, key, ca, serverID string }

func (c tlsClient) credentials() (credentials.TransportCredentials, error) {
	if c.cert == "" && c.key == "" && c.ca == "" {
		return insecure.NewCredentials(), nil
	}
	if c.cert == "" || c.key == "" || c.ca == "" {
		return nil, errors.New("--tls-cert, --tls-key and --tls-ca go together")
	}
	pair, err := tls.LoadX509KeyPair(c.cert, c.key)
	if err != nil {
		return nil, fmt.Errorf("--tls-cert/--tls-key: %w", err)
	}
	pemBytes, err := os.ReadFile(c.ca)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca: %w", err)
	}
	cas, err := spiffetls.ParseCAs(pemBytes)
	if err != nil {
		return nil, fmt.Errorf("--tls-ca %s: %w", c.ca, err)
	}
	pool := x509.NewCertPool()
	for _, ca := range cas {
		pool.AddCert(ca)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{pair}, RootCAs: pool}
	if c.serverID != "" {
		id, err := spiffeid.FromString(c.serverID)
		if err != nil {
			return nil, fmt.Errorf("--server-id: %w", err)
		}
		bundle := x509bundle.FromX509Authorities(id.TrustDomain(), cas)
		cfg.InsecureSkipVerify = true // verified below as a SPIFFE SVID instead of by host name
		cfg.VerifyPeerCertificate = tlsconfig.VerifyPeerCertificate(bundle, tlsconfig.AuthorizeID(id))
	}
	return credentials.NewTLS(cfg), nil
}
