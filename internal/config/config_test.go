package config

import (
	"flag"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"
)

func parse(t *testing.T, args ...string) (Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return FromArgs(fs, args)
}

func writeConfig(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsNeedOnlyRulesAndATransport(t *testing.T) {
	c, err := parse(t, "--rules", "r.yaml", "--plaintext")
	if err != nil {
		t.Fatal(err)
	}
	want := Default()
	want.Rules, want.Plaintext = "r.yaml", true
	if !reflect.DeepEqual(c, want) {
		t.Fatalf("got %+v\nwant %+v", c, want)
	}
	if c.HTTPAddr != "" || c.ClientCertHeader != "" {
		t.Fatalf("HTTP authorization must be off by default: %+v", c)
	}
	if c.GRPCAddr != ":9191" || c.AdminAddr != "127.0.0.1:9192" || c.Audit[0] != "parquet:./data/decisions" || c.CacheSize != 100000 {
		t.Fatalf("SPEC defaults changed: %+v", c)
	}
}

func TestConfigFileKeysAreFlagNamesAndFlagsWin(t *testing.T) {
	file := writeConfig(t, `
rules: /etc/egress-authz/rules
grpc-addr: 127.0.0.1:7000
audit: [sqlite:/data/d.db, otlp]
audit-retention: 9600h
cache-size: 5
plaintext: true
allowed-clients: [spiffe://cluster.local/ns/istio-system/sa/gw]
check-timeout: 500ms
`)
	c, err := parse(t, "--config", file, "--cache-size", "7", "--audit", "stdout")
	if err != nil {
		t.Fatal(err)
	}
	if c.Rules != "/etc/egress-authz/rules" || c.GRPCAddr != "127.0.0.1:7000" || !c.Plaintext || c.CheckTimeout != 500*time.Millisecond || time.Duration(c.AuditRetention) != 400*24*time.Hour {
		t.Fatalf("file values not applied: %+v", c)
	}
	if c.CacheSize != 7 || !reflect.DeepEqual(c.Audit, []string{"stdout"}) {
		t.Fatalf("flags must win over the file: cache %d audit %v", c.CacheSize, c.Audit)
	}
	if !reflect.DeepEqual(c.AllowedClients, []string{"spiffe://cluster.local/ns/istio-system/sa/gw"}) {
		t.Fatalf("allowed clients %v", c.AllowedClients)
	}
}

func TestInvalidSettingsNameTheFlag(t *testing.T) {
	tests := []struct {
		args []string
		want string
	}{
		{[]string{"--plaintext"}, "--rules"},
		{[]string{"--rules", "r"}, "--plaintext"},
		{[]string{"--rules", "r", "--plaintext", "--tls-cert", "c"}, "--plaintext cannot be combined"},
		{[]string{"--rules", "r", "--tls-cert", "c"}, "go together"},
		{[]string{"--rules", "r", "--plaintext", "--cache-size", "-1"}, "--cache-size"},
		{[]string{"--rules", "r", "--plaintext", "--audit-overflow", "drop"}, "--audit-overflow"},
		{[]string{"--rules", "r", "--plaintext", "--audit", "none", "--audit", "stdout"}, "--audit none"},
		{[]string{"--rules", "r", "--plaintext", "--grpc-addr", "9191"}, "--grpc-addr"},
		{[]string{"--rules", "r", "--plaintext", "--log-format", "xml"}, "--log-format"},
		{[]string{"--rules", "r", "--plaintext", "--audit-retention", "soon"}, "duration"},
		{[]string{"--rules", "r", "--plaintext", "stray", "--cache-size=-5"}, `unexpected argument "stray"`},
		{[]string{"--rules", "r", "--plaintext", "--http-addr", "9193"}, "--http-addr"},
		{[]string{"--rules", "r", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a", "--client-cert-header", "X-Client-Cert"}, "give --http-addr too"},
		{[]string{"--rules", "r", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a", "--http-addr", ":9193", "--client-cert-header", "X Client Cert"}, "not a header name"},
		{[]string{"--rules", "r", "--plaintext", "--http-addr", ":9193", "--client-cert-header", "X-Client-Cert"}, "not --plaintext"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			if _, err := parse(t, tt.args...); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("error %v, want one mentioning %q", err, tt.want)
			}
		})
	}
}

func TestConfigFileTakesRetentionInDays(t *testing.T) {
	for in, want := range map[string]time.Duration{"400d": 400 * 24 * time.Hour, "72h": 72 * time.Hour, "0": 0} {
		file := writeConfig(t, "rules: r\nplaintext: true\naudit-retention: "+in+"\n")
		c, err := parse(t, "--config", file)
		if err != nil {
			t.Fatalf("audit-retention: %s: %v", in, err)
		}
		if got := time.Duration(c.AuditRetention); got != want {
			t.Errorf("audit-retention: %s gave %v, want %v", in, got, want)
		}
	}
	file := writeConfig(t, "rules: r\nplaintext: true\naudit-retention: soon\n")
	if _, err := parse(t, "--config", file); err == nil || !strings.Contains(err.Error(), "duration") {
		t.Errorf("audit-retention: soon: error %v, want one saying it is not a duration", err)
	}
}

func TestUnknownConfigKeyIsAnError(t *testing.T) {
	file := writeConfig(t, "rules: r\nplaintext: true\ncache_size: 5\n")
	if _, err := parse(t, "--config", file); err == nil || !strings.Contains(err.Error(), "cache_size") {
		t.Fatalf("error %v, want the unknown key named", err)
	}
}

// A retention beyond a century overflowed time.Duration: 213504d became
// 25 minutes (dropping every PostgreSQL partition but today's), 200000d
// turned negative and disabled retention. Both are refused, by flag and in
// the config file.
func TestAuditRetentionOverflowIsRefused(t *testing.T) {
	for _, in := range []string{"213504d", "200000d", "36501d"} {
		if _, err := parse(t, "--rules", "r", "--plaintext", "--audit-retention", in); err == nil || !strings.Contains(err.Error(), "century") {
			t.Errorf("--audit-retention %s: error %v, want one saying it is over a century", in, err)
		}
		file := writeConfig(t, "rules: r\nplaintext: true\naudit-retention: "+in+"\n")
		if _, err := parse(t, "--config", file); err == nil || !strings.Contains(err.Error(), "century") {
			t.Errorf("audit-retention: %s in the config file: error %v, want one saying it is over a century", in, err)
		}
	}
	c, err := parse(t, "--rules", "r", "--plaintext", "--audit-retention", "36500d")
	if err != nil || time.Duration(c.AuditRetention) != 36500*24*time.Hour {
		t.Errorf("--audit-retention 36500d: %v, %v", c.AuditRetention, err)
	}
}

func TestRulesMaxFileSize(t *testing.T) {
	for in, want := range map[string]int64{"64MiB": 64 << 20, "1GiB": 1 << 30, "512KiB": 512 << 10, "1000": 1000} {
		c, err := parse(t, "--rules", "r", "--plaintext", "--rules-max-file-size", in)
		if err != nil || int64(c.RulesMaxFileSize) != want {
			t.Errorf("--rules-max-file-size %s: %d, %v; want %d", in, c.RulesMaxFileSize, err, want)
		}
		file := writeConfig(t, "rules: r\nplaintext: true\nrules-max-file-size: "+in+"\n")
		if c, err := parse(t, "--config", file); err != nil || int64(c.RulesMaxFileSize) != want {
			t.Errorf("rules-max-file-size: %s in the config file: %d, %v; want %d", in, c.RulesMaxFileSize, err, want)
		}
	}
	for _, in := range []string{"64MB", "-1", "", "0", "99999999999GiB"} {
		if _, err := parse(t, "--rules", "r", "--plaintext", "--rules-max-file-size", in); err == nil {
			t.Errorf("--rules-max-file-size %q accepted", in)
		}
	}
	if c, _ := parse(t, "--rules", "r", "--plaintext"); c.RulesMaxFileSize != 64<<20 {
		t.Errorf("default %d, want 64 MiB", c.RulesMaxFileSize)
	}
}

func TestCluster(t *testing.T) {
	t.Setenv("EGRESS_AUTHZ_CLUSTER", "eu-west-1")
	if c, err := parse(t, "--rules", "r", "--plaintext"); err != nil || c.Cluster != "eu-west-1" {
		t.Errorf("default from EGRESS_AUTHZ_CLUSTER: %q, %v", c.Cluster, err)
	}
	if c, err := parse(t, "--rules", "r", "--plaintext", "--cluster", "us.east_2"); err != nil || c.Cluster != "us.east_2" {
		t.Errorf("--cluster us.east_2: %q, %v", c.Cluster, err)
	}
	for _, bad := range []string{"a/b", "..", "eu west", strings.Repeat("x", 64), "é"} {
		if _, err := parse(t, "--rules", "r", "--plaintext", "--cluster", bad); err == nil || !strings.Contains(err.Error(), "--cluster") {
			t.Errorf("--cluster %q: %v, want an error", bad, err)
		}
	}
}

func TestBundleSourceSettings(t *testing.T) {
	file := writeConfig(t, `
rules: oci://registry.example.com/platform/egress-rules:prod
rules-public-key: [/etc/egress-authz/keys/2026.pub]
rules-poll: 1m
rules-ca: /etc/egress-authz/registry-ca.pem
plaintext: true
`)
	c, err := parse(t, "--config", file, "--rules-public-key", "/k/old.pub", "--rules-public-key", "/k/new.pub")
	if err != nil {
		t.Fatal(err)
	}
	if !c.RulesFromBundle() || c.RulesPoll != time.Minute || c.RulesCA != "/etc/egress-authz/registry-ca.pem" ||
		!reflect.DeepEqual(c.RulesPublicKey, []string{"/k/old.pub", "/k/new.pub"}) {
		t.Errorf("bundle settings %+v", c)
	}
	if d := Default(); d.RulesPoll != 30*time.Second {
		t.Errorf("default --rules-poll %s, want 30s", d.RulesPoll)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--rules", "https://rules.example.com/b.tar.gz", "--plaintext"}, "needs --rules-public-key"},
		{[]string{"--rules", "oci://r.example/x:prod", "--plaintext"}, "needs --rules-public-key"},
		{[]string{"--rules", "http://rules.example.com/b.tar.gz", "--rules-public-key", "k", "--plaintext"}, "use https://"},
		{[]string{"--rules", "oci://r.example/x:prod", "--rules-public-key", "k", "--rules-poll", "10ms", "--plaintext"}, "at least 100ms"},
		{[]string{"--rules", "./rules", "--rules-public-key", "k", "--plaintext"}, "apply to a bundle source"},
		{[]string{"--rules", "./rules", "--rules-ca", "ca.pem", "--plaintext"}, "apply to a bundle source"},
	} {
		if _, err := parse(t, tc.args...); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error saying %q", tc.args, err, tc.want)
		}
	}
	if _, err := parse(t, "--rules", "oci://r.example/x:prod", "--rules-public-key", "k", "--rules-poll", "200ms", "--plaintext"); err != nil {
		t.Errorf("a 200ms poll (tests): %v", err)
	}
}

func TestHTTPAuthorizationSettings(t *testing.T) {
	c, err := parse(t, "--rules", "r", "--tls-cert", "c", "--tls-key", "k", "--tls-ca", "a", "--http-addr", ":9193", "--client-cert-header", "X-Client-Cert")
	if err != nil || c.HTTPAddr != ":9193" || c.ClientCertHeader != "X-Client-Cert" {
		t.Fatalf("flags: %+v, %v", c, err)
	}
	file := writeConfig(t, "rules: r\nspiffe-socket: unix:///s\nhttp-addr: 127.0.0.1:9193\nclient-cert-header: x-forwarded-client-cert\n")
	if c, err := parse(t, "--config", file); err != nil || c.HTTPAddr != "127.0.0.1:9193" || c.ClientCertHeader != "x-forwarded-client-cert" {
		t.Fatalf("config file: %+v, %v", c, err)
	}
	// Plaintext HTTP authorization, for local runs: identities from XFCC.
	if _, err := parse(t, "--rules", "r", "--plaintext", "--http-addr", "127.0.0.1:0", "--trust-xfcc"); err != nil {
		t.Fatal(err)
	}
}

func TestS3NeedsCluster(t *testing.T) {
	t.Setenv("EGRESS_AUTHZ_CLUSTER", "")
	if _, err := parse(t, "--rules", "r", "--plaintext", "--audit", "s3://decisions/fleet"); err == nil || !strings.Contains(err.Error(), "needs --cluster") {
		t.Errorf("s3:// without --cluster: %v, want an error naming --cluster", err)
	}
	if c, err := parse(t, "--rules", "r", "--plaintext", "--audit", "s3://decisions/fleet", "--cluster", "eu-west-1"); err != nil || c.Audit[0] != "s3://decisions/fleet" {
		t.Errorf("s3:// with --cluster: %+v, %v", c.Audit, err)
	}
}
