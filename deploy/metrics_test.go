package deploy_test

// Every metric an alert, a recording rule or a dashboard panel uses must be
// one the server exports: the PromQL is parsed with Prometheus's own parser,
// its selectors listed, and the names looked up in the /metrics of the real
// binary after it has decided a few Checks, refused a caller and reloaded
// its rules (some series appear only after such an event).

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/egress-authz/egress-authz/internal/spiffetest"
)

// metricUses maps a metric name to who uses it: "alert X", "recording
// rule Y", "dashboard panel Z".
type metricUses map[string][]string

func (u metricUses) add(t *testing.T, user, expr string) {
	t.Helper()
	// Grafana's interval variables are not PromQL; any duration stands in.
	for _, v := range []string{"$__rate_interval", "$__interval", "$__range"} {
		expr = strings.ReplaceAll(expr, v, "5m")
	}
	e, err := parser.NewParser(parser.Options{}).ParseExpr(expr)
	if err != nil {
		t.Errorf("%s: %q does not parse: %v", user, expr, err)
		return
	}
	n := 0
	parser.Inspect(e, func(node parser.Node, _ []parser.Node) error {
		vs, ok := node.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel && m.Type == labels.MatchEqual {
				name = m.Value
			}
		}
		if name == "" {
			t.Errorf("%s: selector %s names no metric", user, vs)
			return nil
		}
		n++
		if !slices.Contains(u[name], user) {
			u[name] = append(u[name], user)
		}
		return nil
	})
	if n == 0 {
		t.Errorf("%s: %q selects no metric", user, expr)
	}
}

// usedMetrics lists the metrics of the chart's rules and dashboard. Series
// that a recording rule makes count as exported.
func usedMetrics(t *testing.T) (uses metricUses, recorded map[string]bool) {
	t.Helper()
	uses, recorded = metricUses{}, map[string]bool{}
	for _, r := range alertRules(t) {
		if r.Record != "" {
			recorded[r.Record] = true
			uses.add(t, "recording rule "+r.Record, r.Expr.String())
		} else {
			uses.add(t, "alert "+r.Alert, r.Expr.String())
		}
	}
	data, err := os.ReadFile(dashboardJSON)
	if err != nil {
		t.Fatal(err)
	}
	var dash struct {
		Panels []struct {
			Title   string `json:"title"`
			Targets []struct {
				Expr string `json:"expr"`
			} `json:"targets"`
		} `json:"panels"`
		Templating struct {
			List []struct {
				Name       string `json:"name"`
				Definition string `json:"definition"`
			} `json:"list"`
		} `json:"templating"`
	}
	if err := json.Unmarshal(data, &dash); err != nil {
		t.Fatalf("%s: %v", dashboardJSON, err)
	}
	panels := 0
	for _, p := range dash.Panels {
		if len(p.Targets) == 0 {
			continue
		}
		panels++
		for _, tg := range p.Targets {
			uses.add(t, fmt.Sprintf("dashboard panel %q", p.Title), tg.Expr)
		}
	}
	if panels < 8 {
		t.Errorf("%s: only %d panels with queries", dashboardJSON, panels)
	}
	// label_values(METRIC, LABEL): Grafana's, not PromQL; METRIC is.
	for _, v := range dash.Templating.List {
		if inner, ok := strings.CutPrefix(v.Definition, "label_values("); ok {
			metric, _, _ := strings.Cut(inner, ",")
			uses.add(t, fmt.Sprintf("dashboard variable %q", v.Name), strings.TrimSpace(metric))
		}
	}
	return uses, recorded
}

// exportedNames are the series names a scrape's families provide: a
// histogram's _bucket, _sum and _count, a summary's _sum and _count.
func exportedNames(fams map[string]*dto.MetricFamily) map[string]bool {
	out := map[string]bool{}
	for name, f := range fams {
		out[name] = true
		switch f.GetType() {
		case dto.MetricType_HISTOGRAM, dto.MetricType_GAUGE_HISTOGRAM:
			out[name+"_bucket"], out[name+"_sum"], out[name+"_count"] = true, true, true
		case dto.MetricType_SUMMARY:
			out[name+"_sum"], out[name+"_count"] = true, true
		}
	}
	return out
}

// missingMetrics says, per metric the server does not export, who uses it.
func missingMetrics(uses metricUses, recorded, exported map[string]bool) []string {
	var out []string
	for name, users := range uses {
		if !exported[name] && !recorded[name] {
			out = append(out, fmt.Sprintf("%s uses %s, which the server does not export", strings.Join(users, ", "), name))
		}
	}
	sort.Strings(out)
	return out
}

func TestMonitoringUsesOnlyExportedMetrics(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the binary")
	}
	uses, recorded := usedMetrics(t)
	fams := scrapeRunningServer(t)
	exported := exportedNames(fams)
	for _, msg := range missingMetrics(uses, recorded, exported) {
		t.Error(msg)
	}

	// The check itself: a metric gone from the server is reported with the
	// alert and the panel that use it.
	for _, gone := range []string{"egress_authz_audit_sink_failing", "egress_authz_check_duration_seconds_bucket"} {
		less := maps.Clone(exported)
		delete(less, gone)
		msgs := strings.Join(missingMetrics(uses, recorded, less), "\n")
		for _, user := range uses[gone] {
			if !strings.Contains(msgs, user) {
				t.Errorf("without %s, no failure names %s:\n%s", gone, user, msgs)
			}
		}
		if len(uses[gone]) == 0 {
			t.Errorf("nothing uses %s: pick another metric for this check", gone)
		}
	}
}

// scrapeRunningServer runs egress-authz with mutual TLS (so that a refused
// caller and the certificate's expiry are real), the example rules and a
// SQLite decision log; sends allowed, denied, dry-run and foreign-trust-
// domain Checks with egress-authz check; refuses a caller that is not the
// gateway; changes the rules; and scrapes /metrics.
func scrapeRunningServer(t *testing.T) map[string]*dto.MetricFamily {
	t.Helper()
	const (
		serverID  = "spiffe://cluster.local/ns/egress-authz/sa/egress-authz"
		gatewayID = "spiffe://cluster.local/ns/istio-system/sa/istio-egressgateway-service-account"
	)
	root := t.TempDir()
	certs, rulesDir, dataDir := filepath.Join(root, "certs"), filepath.Join(root, "rules"), filepath.Join(root, "data")
	for _, d := range []string{certs, rulesDir, dataDir} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	ca := spiffetest.NewCA(t, "cluster.local CA")
	caFile := filepath.Join(certs, "ca.pem")
	spiffetest.WriteBundle(t, caFile, ca)
	srvCert, srvKey := ca.ServerSVID(t, serverID).WriteFiles(t, certs, "server")
	gwCert, gwKey := ca.SVID(t, gatewayID).WriteFiles(t, certs, "gateway")
	otherCert, otherKey := ca.SVID(t, "spiffe://cluster.local/ns/default/sa/intruder").WriteFiles(t, certs, "intruder")
	example, err := os.ReadFile(exampleRules)
	if err != nil {
		t.Fatal(err)
	}
	rulesFile := filepath.Join(rulesDir, "rules.yaml")
	if err := os.WriteFile(rulesFile, example, 0o644); err != nil {
		t.Fatal(err)
	}

	bin := buildBinary(t)
	grpcAddr, adminAddr := freeAddr(t), freeAddr(t)
	args := []string{"serve", "--rules=" + rulesDir,
		"--tls-cert=" + srvCert, "--tls-key=" + srvKey, "--tls-ca=" + caFile, "--allowed-clients=" + gatewayID,
		"--grpc-addr=" + grpcAddr, "--admin-addr=" + adminAddr,
		"--audit=sqlite:" + filepath.Join(root, "decisions.db"), "--data-dir=" + dataDir, "--log-format=json"}
	var stderr strings.Builder
	cmd := exec.Command(bin, args...)
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-exited
		if t.Failed() {
			t.Logf("egress-authz %s\nstderr:\n%s", strings.Join(args, " "), stderr.String())
		}
	})

	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + adminAddr + path)
		if err != nil {
			return 0, err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	waitFor := func(what string, ok func() bool) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		for !ok() {
			select {
			case err := <-exited:
				t.Fatalf("egress-authz exited while waiting for %s: %v", what, err)
			case <-ctx.Done():
				t.Fatalf("no %s within 30 s", what)
			case <-time.After(50 * time.Millisecond):
			}
		}
	}
	waitFor("readiness", func() bool { code, _ := get("/readyz"); return code == http.StatusOK })

	check := func(cert, key, principal, method, url string, want int) {
		t.Helper()
		c := exec.Command(bin, "check", "--addr", grpcAddr, "--tls-cert", cert, "--tls-key", key, "--tls-ca", caFile,
			"--server-id", serverID, "--principal", principal, "-X", method, url)
		out, err := c.CombinedOutput()
		code := 0
		var exit *exec.ExitError
		if errors.As(err, &exit) {
			code = exit.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		if code != want {
			t.Errorf("check %s %s as %s: exit %d, want %d\n%s", method, url, principal, code, want, out)
		}
	}
	const checkout = "spiffe://cluster.local/ns/payments/sa/checkout"
	check(gwCert, gwKey, checkout, "POST", "https://api.stripe.com/v1/charges", 0)
	check(gwCert, gwKey, checkout, "POST", "https://api.stripe.com/v1/charges", 0) // from the cache
	check(gwCert, gwKey, checkout, "DELETE", "https://api.stripe.com/v1/charges", 3)
	check(gwCert, gwKey, checkout, "POST", "https://api.fraudscore.example/v2/score", 3) // a dry-run rule's
	check(gwCert, gwKey, "spiffe://other.example/ns/payments/sa/checkout", "GET", "https://api.stripe.com/v1/charges", 3)
	check(otherCert, otherKey, checkout, "GET", "https://api.stripe.com/v1/charges", 1) // refused at the handshake

	// A rule change: a reload, counted.
	tmp := filepath.Join(rulesDir, ".rules.yaml.tmp")
	if err := os.WriteFile(tmp, append(example, "\n# changed\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, rulesFile); err != nil {
		t.Fatal(err)
	}
	var fams map[string]*dto.MetricFamily
	waitFor("rule reload in /metrics", func() bool {
		code, body := get("/metrics")
		if code != http.StatusOK {
			return false
		}
		p := expfmt.NewTextParser(model.UTF8Validation)
		fams, err = p.TextToMetricFamilies(strings.NewReader(body))
		if err != nil {
			t.Fatalf("parse /metrics: %v", err)
		}
		_, ok := fams["egress_authz_rules_reloads_total"]
		return ok
	})
	for name, want := range map[string]string{
		"egress_authz_dry_run_outcomes_total": "the dry-run Check",
		"egress_authz_refused_clients_total":  "the refused caller",
		"egress_authz_audit_sink_failing":     "the SQLite sink",
	} {
		if _, ok := fams[name]; !ok {
			t.Errorf("no %s after %s", name, want)
		}
	}
	return fams
}
