// Package config is the serve command's configuration: one struct, filled
// from an optional YAML file and then from flags (flags win), validated
// once, and passed down. Nothing else in the program reads flags or the
// environment for its settings.
package config

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"

	"github.com/egress-authz/egress-authz/internal/when"
	"github.com/egress-authz/egress-authz/rules"
)

// Config is the serve command's configuration. The YAML keys are the flag
// names.
type Config struct {
	Rules            string        `yaml:"rules"`
	RulesMaxFileSize Size          `yaml:"rules-max-file-size"`
	RulesPublicKey   []string      `yaml:"rules-public-key"`
	RulesPoll        time.Duration `yaml:"rules-poll"`
	RulesCA          string        `yaml:"rules-ca"`
	GRPCAddr         string        `yaml:"grpc-addr"`
	AdminAddr        string        `yaml:"admin-addr"`
	HTTPAddr         string        `yaml:"http-addr"`
	ClientCertHeader string        `yaml:"client-cert-header"`
	Audit            []string      `yaml:"audit"`
	AuditOverflow    string        `yaml:"audit-overflow"`
	AuditKeepQuery   bool          `yaml:"audit-keep-query"`
	AuditBuffer      uint64        `yaml:"audit-buffer"`
	AuditRetention   Days          `yaml:"audit-retention"`
	AuditSegmentAge  time.Duration `yaml:"audit-segment-age"`
	DataDir          string        `yaml:"data-dir"`
	Cluster          string        `yaml:"cluster"`
	Plaintext        bool          `yaml:"plaintext"`
	TLSCert          string        `yaml:"tls-cert"`
	TLSKey           string        `yaml:"tls-key"`
	TLSCA            string        `yaml:"tls-ca"`
	SPIFFESocket     string        `yaml:"spiffe-socket"`
	AllowedClients   []string      `yaml:"allowed-clients"`
	AdminTokenFile   string        `yaml:"admin-token-file"`
	AdminMTLS        bool          `yaml:"admin-mtls"`
	CheckTimeout     time.Duration `yaml:"check-timeout"`
	MaxRecvMsgSize   int           `yaml:"max-recv-msg-size"`
	MaxStreams       uint          `yaml:"max-concurrent-streams"`
	TrustXFCC        bool          `yaml:"trust-xfcc"`
	CacheSize        int           `yaml:"cache-size"`
	ShutdownGrace    time.Duration `yaml:"shutdown-grace"`
	LogFormat        string        `yaml:"log-format"`
	Pprof            bool          `yaml:"pprof"`
}

// Default returns the configuration used where neither file nor flag
// says otherwise.
func Default() Config {
	return Config{
		RulesPoll:        30 * time.Second,
		GRPCAddr:         ":9191",
		AdminAddr:        "127.0.0.1:9192",
		Audit:            []string{"parquet:./data/decisions"},
		AuditOverflow:    "deny",
		AuditBuffer:      1_000_000,
		AuditSegmentAge:  10 * time.Minute,
		DataDir:          "./data",
		Cluster:          os.Getenv("EGRESS_AUTHZ_CLUSTER"),
		RulesMaxFileSize: 64 << 20,
		CacheSize:        100000,
		ShutdownGrace:    15 * time.Second,
		CheckTimeout:     2 * time.Second,
		MaxRecvMsgSize:   4 << 20,
		MaxStreams:       1024,
		LogFormat:        "auto",
	}
}

// listFlag is a repeatable, comma-splitting string list flag.
type listFlag struct {
	dst *[]string
	set bool
}

func (l *listFlag) String() string {
	if l.dst == nil {
		return ""
	}
	return strings.Join(*l.dst, ",")
}

func (l *listFlag) Set(s string) error {
	if !l.set {
		*l.dst, l.set = nil, true
	}
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part != "" {
			*l.dst = append(*l.dst, part)
		}
	}
	return nil
}

// Flags registers the serve flags on fs, writing into c, and returns the
// name of the --config file flag's destination.
func (c *Config) Flags(fs *flag.FlagSet) *string {
	file := fs.String("config", "", "YAML `FILE` with any of these settings as keys (flags win)")
	fs.StringVar(&c.Rules, "rules", c.Rules, "rule `PATH` (a YAML file or a directory of them, watched for changes), or a signed bundle at https://HOST/PATH or oci://REGISTRY/REPOSITORY:TAG, polled (required)")
	fs.Var(sizeFlag{&c.RulesMaxFileSize}, "rules-max-file-size", "largest rule file read, in bytes or with a unit (`SIZE`: 64MiB, 1GiB); a larger one is an error, never read in part")
	fs.Var(&listFlag{dst: &c.RulesPublicKey}, "rules-public-key", "public key `FILE` (Ed25519, PEM) a bundle must be signed by; repeatable, for key rotation; required with an https:// or oci:// --rules")
	fs.DurationVar(&c.RulesPoll, "rules-poll", c.RulesPoll, "how often a bundle source is asked for a new bundle (less up to a quarter, at random, so that replicas spread out)")
	fs.StringVar(&c.RulesCA, "rules-ca", c.RulesCA, "CA bundle `FILE` (PEM) the bundle source's TLS certificate must chain to, instead of the system's roots")
	fs.StringVar(&c.GRPCAddr, "grpc-addr", c.GRPCAddr, "ext_authz gRPC listen `ADDR`")
	fs.StringVar(&c.AdminAddr, "admin-addr", c.AdminAddr, "admin HTTP listen `ADDR` (health, metrics, rules, decisions, /ui/)")
	fs.StringVar(&c.HTTPAddr, "http-addr", c.HTTPAddr, "HTTP authorization listen `ADDR` (off when empty; :9193 is the documented port): Envoy HTTP ext_authz at /ext-authz, forward-auth at /forward-auth, NGINX auth_request at /auth-request; secured like gRPC")
	fs.StringVar(&c.ClientCertHeader, "client-cert-header", c.ClientCertHeader, "HTTP authorization: the `HEADER` in which the proxy forwards its client's certificate (URL-escaped PEM, as NGINX's $ssl_client_escaped_cert; x-forwarded-client-cert reads its Cert=), verified against the trust bundle as an X.509 SVID")
	fs.Var(&listFlag{dst: &c.Audit}, "audit", "decision-log sink `DSN`, repeatable: parquet:DIR (Parquet segments, the default), sqlite:PATH, postgres://..., s3://BUCKET/PREFIX (a fleet's bucket; needs --cluster), otlp, stdout, none")
	fs.StringVar(&c.AuditOverflow, "audit-overflow", c.AuditOverflow, "when the decision log cannot keep up: deny (new requests denied, reason audit-unavailable) or block")
	fs.BoolVar(&c.AuditKeepQuery, "audit-keep-query", c.AuditKeepQuery, "keep the query string in logged paths (dropped by default: it may hold personal data)")
	fs.Uint64Var(&c.AuditBuffer, "audit-buffer", c.AuditBuffer, "records that may wait on disk for a slow or down decision-log sink before --audit-overflow applies")
	fs.DurationVar(&c.AuditSegmentAge, "audit-segment-age", c.AuditSegmentAge, "decision log (Parquet and S3): close a segment this `DURATION` after its first record; an S3 sink uploads it then, so this is how far the bucket lags (1s to 24h)")
	fs.Var(daysFlag{&c.AuditRetention}, "audit-retention", "decision log (Parquet, S3 and PostgreSQL): remove whole days older than this `DURATION` (e.g. 400d; 0 keeps all)")
	fs.StringVar(&c.Cluster, "cluster", c.Cluster, "`NAME` of the cluster, recorded in every decision and a partition of a fleet's bucket (default $EGRESS_AUTHZ_CLUSTER)")
	fs.StringVar(&c.DataDir, "data-dir", c.DataDir, "`DIR` for the decision log's write-ahead and spill files")
	fs.BoolVar(&c.Plaintext, "plaintext", c.Plaintext, "serve gRPC without TLS (local runs and tests only)")
	fs.StringVar(&c.TLSCert, "tls-cert", c.TLSCert, "server certificate `FILE` (PEM) for mTLS")
	fs.StringVar(&c.TLSKey, "tls-key", c.TLSKey, "server key `FILE` (PEM) for mTLS")
	fs.StringVar(&c.TLSCA, "tls-ca", c.TLSCA, "CA bundle `FILE` (PEM) that client certificates must chain to")
	fs.StringVar(&c.SPIFFESocket, "spiffe-socket", c.SPIFFESocket, "SPIFFE Workload API `ADDR` (unix:///path) for the server's SVID and trust bundle")
	fs.Var(&listFlag{dst: &c.AllowedClients}, "allowed-clients", "SPIFFE `IDs` allowed to call Check (the egress gateway's), comma-separated")
	fs.StringVar(&c.AdminTokenFile, "admin-token-file", c.AdminTokenFile, "`FILE` holding the bearer token the admin listener requires")
	fs.BoolVar(&c.AdminMTLS, "admin-mtls", c.AdminMTLS, "require a client certificate on the admin listener, verified like gRPC callers' (needs --tls-* or --spiffe-socket)")
	fs.DurationVar(&c.CheckTimeout, "check-timeout", c.CheckTimeout, "deadline for one Check when Envoy sends none (bounds waiting on a full decision log with --audit-overflow block)")
	fs.IntVar(&c.MaxRecvMsgSize, "max-recv-msg-size", c.MaxRecvMsgSize, "largest CheckRequest accepted, in bytes (headers count); also the largest HTTP authorization request head (request line and headers)")
	fs.UintVar(&c.MaxStreams, "max-concurrent-streams", c.MaxStreams, "concurrent Checks per gRPC connection")
	fs.BoolVar(&c.TrustXFCC, "trust-xfcc", c.TrustXFCC, "take the caller's identity from x-forwarded-client-cert's URI= when Envoy sends no peer principal (and, over HTTP, when no forwarded certificate is configured or sent)")
	fs.IntVar(&c.CacheSize, "cache-size", c.CacheSize, "decision cache entries; 0 disables the cache")
	fs.DurationVar(&c.ShutdownGrace, "shutdown-grace", c.ShutdownGrace, "how long SIGTERM waits for in-flight Checks before closing")
	fs.BoolVar(&c.Pprof, "pprof", c.Pprof, "serve Go's profiler at /debug/pprof/ on the admin listener")
	fs.StringVar(&c.LogFormat, "log-format", c.LogFormat, "log format: json, text, or auto (text on a terminal, JSON otherwise)")
	return file
}

// FromArgs parses serve's arguments: defaults, then the --config file, then
// the flags given on the command line.
func FromArgs(fs *flag.FlagSet, args []string) (Config, error) {
	c := Default()
	file := c.Flags(fs)
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		// The flag package stops at the first argument that is not a
		// flag: every flag after it would be dropped without a word.
		return c, fmt.Errorf("unexpected argument %q: serve takes only flags", fs.Arg(0))
	}
	if *file == "" {
		return c, c.Validate()
	}
	// Re-read: file values first, then the command line over them.
	fileCfg := Default()
	if err := fileCfg.loadFile(*file); err != nil {
		return c, err
	}
	fs2 := flag.NewFlagSet(fs.Name(), flag.ContinueOnError)
	fs2.SetOutput(fs.Output())
	fileCfg.Flags(fs2)
	var again []string
	fs.Visit(func(f *flag.Flag) {
		if f.Name != "config" {
			again = append(again, "-"+f.Name+"="+f.Value.String())
		}
	})
	if err := fs2.Parse(again); err != nil {
		return c, err
	}
	return fileCfg, fileCfg.Validate()
}

func (c *Config) loadFile(path string) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("read config: %w", err)
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil && !errors.Is(err, io.EOF) {
		return fmt.Errorf("config %s: %w", path, err)
	}
	return nil
}

// Validate checks the settings that can be checked without doing anything.
func (c *Config) Validate() error {
	if c.Rules == "" {
		return errors.New("--rules is required: the rule file or directory to serve")
	}
	if err := c.validateRules(); err != nil {
		return err
	}
	if _, _, err := net.SplitHostPort(c.GRPCAddr); err != nil {
		return fmt.Errorf("--grpc-addr %q: %w", c.GRPCAddr, err)
	}
	if _, _, err := net.SplitHostPort(c.AdminAddr); err != nil {
		return fmt.Errorf("--admin-addr %q: %w", c.AdminAddr, err)
	}
	if c.HTTPAddr != "" {
		if _, _, err := net.SplitHostPort(c.HTTPAddr); err != nil {
			return fmt.Errorf("--http-addr %q: %w", c.HTTPAddr, err)
		}
	}
	if c.ClientCertHeader != "" {
		switch {
		case c.HTTPAddr == "":
			return errors.New("--client-cert-header is read by the HTTP authorization listener: give --http-addr too")
		case !rules.IsToken(c.ClientCertHeader):
			return fmt.Errorf("--client-cert-header %q: not a header name", c.ClientCertHeader)
		case c.Plaintext:
			return errors.New("--client-cert-header needs the trust bundle to verify certificates against: give --tls-cert/--tls-key/--tls-ca or --spiffe-socket, not --plaintext")
		}
	}
	if c.MaxStreams == 0 || c.MaxRecvMsgSize < 4096 || c.CheckTimeout <= 0 {
		return errors.New("--max-concurrent-streams, --max-recv-msg-size (>= 4096) and --check-timeout must be positive")
	}
	if !validCluster(c.Cluster) {
		return fmt.Errorf("--cluster %q: use at most 63 letters, digits, '.', '_' and '-' (it names a directory of the fleet's bucket)", c.Cluster)
	}
	if c.AuditSegmentAge < time.Second || c.AuditSegmentAge > 24*time.Hour {
		return fmt.Errorf("--audit-segment-age %s: want 1s to 24h", c.AuditSegmentAge)
	}
	for _, dsn := range c.Audit {
		if strings.HasPrefix(dsn, "s3://") && c.Cluster == "" {
			return fmt.Errorf("--audit %s needs --cluster (or EGRESS_AUTHZ_CLUSTER): it is the first level of the fleet's bucket", dsn)
		}
	}
	if c.RulesMaxFileSize < 1 {
		return fmt.Errorf("--rules-max-file-size %d: must be at least 1 byte", c.RulesMaxFileSize)
	}
	if c.CacheSize < 0 {
		return fmt.Errorf("--cache-size %d: must be 0 (off) or more", c.CacheSize)
	}
	switch c.AuditOverflow {
	case "deny", "block":
	default:
		return fmt.Errorf("--audit-overflow %q: must be deny or block", c.AuditOverflow)
	}
	if c.AuditBuffer < 1 {
		return fmt.Errorf("--audit-buffer %d: must be at least 1", c.AuditBuffer)
	}
	if len(c.Audit) == 0 {
		return errors.New("--audit: give at least one sink, or none")
	}
	for _, a := range c.Audit {
		if a == "none" && len(c.Audit) > 1 {
			return errors.New("--audit none cannot be combined with other sinks")
		}
	}
	switch c.LogFormat {
	case "auto", "json", "text":
	default:
		return fmt.Errorf("--log-format %q: must be auto, json or text", c.LogFormat)
	}
	tlsFiles := c.TLSCert != "" || c.TLSKey != "" || c.TLSCA != ""
	switch {
	case c.Plaintext && (tlsFiles || c.SPIFFESocket != ""):
		return errors.New("--plaintext cannot be combined with --tls-* or --spiffe-socket")
	case !c.Plaintext && !tlsFiles && c.SPIFFESocket == "":
		return errors.New("no transport security configured: give --tls-cert/--tls-key/--tls-ca or --spiffe-socket, or --plaintext for a local run")
	case tlsFiles && c.SPIFFESocket != "":
		return errors.New("choose one of --tls-cert/--tls-key/--tls-ca and --spiffe-socket")
	case tlsFiles && (c.TLSCert == "" || c.TLSKey == "" || c.TLSCA == ""):
		return errors.New("--tls-cert, --tls-key and --tls-ca go together")
	}
	return nil
}

// MinRulesPoll is the shortest --rules-poll: tests poll this fast; a
// fleet should not.
const MinRulesPoll = 100 * time.Millisecond

// RulesFromBundle reports whether --rules names a bundle source (https://
// or oci://; http:// is one too, refused by Validate) rather than rule
// files.
func (c *Config) RulesFromBundle() bool {
	for _, p := range []string{"https://", "http://", "oci://"} {
		if strings.HasPrefix(c.Rules, p) {
			return true
		}
	}
	return false
}

func (c *Config) validateRules() error {
	if !c.RulesFromBundle() {
		if len(c.RulesPublicKey) > 0 || c.RulesCA != "" {
			return fmt.Errorf("--rules-public-key and --rules-ca apply to a bundle source (--rules https://... or oci://...), not to rule files at %s", c.Rules)
		}
		return nil
	}
	if strings.HasPrefix(c.Rules, "http://") {
		return fmt.Errorf("--rules %s: use https://", c.Rules)
	}
	if len(c.RulesPublicKey) == 0 {
		return fmt.Errorf("--rules %s: a bundle source needs --rules-public-key FILE: a bundle is served only if signed by a key you trust", c.Rules)
	}
	if c.RulesPoll < MinRulesPoll {
		return fmt.Errorf("--rules-poll %s: at least %s", c.RulesPoll, MinRulesPoll)
	}
	return nil
}

// String renders the configuration for the start-up log line.
func (c *Config) String() string {
	http := ""
	if c.HTTPAddr != "" {
		http = " http=" + c.HTTPAddr
	}
	return "rules=" + c.Rules + " grpc=" + c.GRPCAddr + " admin=" + c.AdminAddr + http +
		" audit=" + strings.Join(c.Audit, ",") + " cache=" + strconv.Itoa(c.CacheSize) +
		" plaintext=" + strconv.FormatBool(c.Plaintext)
}

// Days is a duration written in days ("400d") or in Go's units ("72h"),
// as when.ParseDuration reads it, in the --config file as on the command line.
// (yaml.v3 reads a time.Duration with time.ParseDuration, which has no
// days.)
type Days time.Duration

// UnmarshalYAML implements yaml.Unmarshaler.
func (d *Days) UnmarshalYAML(n *yaml.Node) error {
	var s string
	if err := n.Decode(&s); err != nil {
		return err
	}
	v, err := when.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*d = Days(v)
	return nil
}

// daysFlag is a Days flag.
type daysFlag struct{ d *Days }

func (f daysFlag) String() string {
	if f.d == nil {
		return "0"
	}
	return when.FormatDuration(time.Duration(*f.d))
}

func (f daysFlag) Set(s string) error {
	d, err := when.ParseDuration(s)
	if err != nil {
		return err
	}
	*f.d = Days(d)
	return nil
}

// Size is a number of bytes, written as ParseSize reads it ("64MiB"), in
// the --config file as on the command line.
type Size int64

// UnmarshalYAML implements yaml.Unmarshaler.
func (s *Size) UnmarshalYAML(n *yaml.Node) error {
	v, err := ParseSize(n.Value)
	if err != nil {
		return fmt.Errorf("line %d: %w", n.Line, err)
	}
	*s = Size(v)
	return nil
}

// sizeFlag is a Size flag.
type sizeFlag struct{ n *Size }

func (f sizeFlag) String() string {
	if f.n == nil {
		return "0"
	}
	n := int64(*f.n)
	for _, u := range []struct {
		name string
		size int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if n >= u.size && n%u.size == 0 {
			return strconv.FormatInt(n/u.size, 10) + u.name
		}
	}
	return strconv.FormatInt(n, 10)
}

func (f sizeFlag) Set(s string) error {
	n, err := ParseSize(s)
	if err != nil {
		return err
	}
	*f.n = Size(n)
	return nil
}

// ParseSize reads a byte size: "1048576", "64MiB", "1GiB", "512KiB".
func ParseSize(s string) (int64, error) {
	num, mult := s, int64(1)
	for _, u := range []struct {
		name string
		size int64
	}{{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}} {
		if v, ok := strings.CutSuffix(s, u.name); ok {
			num, mult = v, u.size
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("%q is not a size (like 64MiB or 1048576)", s)
	}
	return n * mult, nil
}

// validCluster reports whether name can be a cluster: empty, or a word
// that is safe as a path element of an object key.
func validCluster(name string) bool {
	if len(name) > 63 || name == "." || name == ".." {
		return false
	}
	for _, c := range name {
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '.' || c == '_' || c == '-') {
			return false
		}
	}
	return true
}
