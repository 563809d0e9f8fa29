package deploy_test

// The chart's Prometheus Operator objects and Grafana dashboard: decoded
// strictly, their plain copies for kustomize and for a Prometheus without
// the operator kept in step, every alert with a runbook, and the rules
// checked and unit-tested by promtool.

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"
)

const (
	monitoringDir = "kubernetes/monitoring"
	plainRules    = "prometheus/egress-authz.rules.yaml"
	rulesTests    = "prometheus/egress-authz.rules_test.yaml"
	dashboardJSON = chartDir + "/dashboards/egress-authz.json"
	runbooks      = "../docs/runbooks.md"
	// updateEnv, set to 1, makes TestPlainMonitoringFilesAreTheChartsRender
	// rewrite the plain copies from the chart instead of comparing.
	updateEnv = "EGRESS_AUTHZ_UPDATE_MONITORING"
)

func init() {
	decoders["monitoring.coreos.com/v1/ServiceMonitor"] = kube[monitoringv1.ServiceMonitor]()
	decoders["monitoring.coreos.com/v1/PrometheusRule"] = kube[monitoringv1.PrometheusRule]()
}

// monitoringValues turns the chart's monitoring objects on.
var monitoringValues = []string{"serviceMonitor.enabled=true", "prometheusRule.enabled=true", "dashboard.enabled=true"}

func chartMonitoring(t *testing.T, set ...string) (sm *monitoringv1.ServiceMonitor, pr *object, dash *corev1.ConfigMap, s *stack) {
	t.Helper()
	s = newChartStack(t, chartVariants[0], append(slices.Clone(monitoringValues), set...)...)
	for _, o := range s.objs {
		switch v := o.Value.(type) {
		case *monitoringv1.ServiceMonitor:
			sm = v
		case *monitoringv1.PrometheusRule:
			pr = o
		case *corev1.ConfigMap:
			if o.Name == "egress-authz-dashboard" {
				dash = v
			}
		}
	}
	if sm == nil || pr == nil || dash == nil {
		t.Fatalf("the chart renders no ServiceMonitor, PrometheusRule or dashboard ConfigMap with %v", monitoringValues)
	}
	return sm, pr, dash, s
}

func TestChartMonitoringOffByDefault(t *testing.T) {
	for _, o := range renderChart(t, nil, nil) {
		if strings.HasPrefix(o.APIVersion, "monitoring.coreos.com/") || o.Name == "egress-authz-dashboard" {
			t.Errorf("%s rendered by default: it needs the Prometheus Operator's CRDs or a Grafana", o)
		}
	}
}

// The ServiceMonitor scrapes the admin port of the Service with the admin
// token, and the dashboard ConfigMap carries the JSON and the sidecar's label.
func TestChartMonitoringObjects(t *testing.T) {
	sm, _, dash, s := chartMonitoring(t)
	p := &problems{}
	svc := s.service(p)
	for k, v := range sm.Spec.Selector.MatchLabels {
		if svc.Labels[k] != v {
			t.Errorf("ServiceMonitor selects %s=%s; the Service has %q", k, v, svc.Labels[k])
		}
	}
	if len(sm.Spec.Endpoints) != 1 {
		t.Fatalf("%d endpoints, want 1", len(sm.Spec.Endpoints))
	}
	ep := sm.Spec.Endpoints[0]
	var admin *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if svc.Spec.Ports[i].Name == ep.Port {
			admin = &svc.Spec.Ports[i]
		}
	}
	ctr := s.container(p)
	switch {
	case admin == nil:
		t.Errorf("ServiceMonitor port %q is no port of the Service", ep.Port)
	case admin.TargetPort.StrVal != "admin":
		t.Errorf("ServiceMonitor port %q targets %v, not the container's admin port", ep.Port, admin.TargetPort)
	}
	if ep.Path != "/metrics" {
		t.Errorf("ServiceMonitor path %q", ep.Path)
	}
	var tokenSecret string
	for _, v := range s.deployment(p).Spec.Template.Spec.Volumes {
		if v.Name == "admin-token" && v.Secret != nil {
			tokenSecret = v.Secret.SecretName
		}
	}
	if a := ep.Authorization; a == nil || a.Credentials == nil || a.Credentials.Name != tokenSecret || a.Credentials.Key != "token" {
		t.Errorf("ServiceMonitor authorization %+v: want the bearer token of Secret %s, key token (the pod's --admin-token-file)", ep.Authorization, tokenSecret)
	}
	if !slices.Contains(ctr.Args, "--admin-token-file=/var/run/secrets/egress-authz/admin/token") {
		t.Errorf("the pod's admin token is not the one mounted from %s", tokenSecret)
	}

	if dash.Labels["grafana_dashboard"] == "" {
		t.Errorf("dashboard ConfigMap labels %v: no grafana_dashboard", dash.Labels)
	}
	want, err := os.ReadFile(dashboardJSON)
	if err != nil {
		t.Fatal(err)
	}
	if got := dash.Data["egress-authz.json"]; got != string(want) {
		t.Errorf("dashboard ConfigMap does not hold %s as is", dashboardJSON)
	}
}

// alertRules lists the rules of the PrometheusRule with the given values.
func alertRules(t *testing.T, set ...string) []monitoringv1.Rule {
	t.Helper()
	_, pr, _, _ := chartMonitoring(t, set...)
	var out []monitoringv1.Rule
	for _, g := range pr.Value.(*monitoringv1.PrometheusRule).Spec.Groups {
		out = append(out, g.Rules...)
	}
	return out
}

// Each alert links its section of docs/runbooks.md, which says what it
// means, how to confirm it and what to do.
func TestAlertsHaveRunbooks(t *testing.T) {
	data, err := os.ReadFile(runbooks)
	if err != nil {
		t.Fatal(err)
	}
	sections := map[string]string{} // GitHub anchor -> text
	parts := regexp.MustCompile(`(?m)^## `).Split(string(data), -1)
	for _, part := range parts[1:] {
		title, _, _ := strings.Cut(part, "\n")
		sections[strings.ToLower(strings.TrimSpace(title))] = part
	}
	alerts := 0
	for _, r := range alertRules(t) {
		if r.Alert == "" {
			continue
		}
		alerts++
		url := r.Annotations["runbook_url"]
		base, anchor, ok := strings.Cut(url, "#")
		if !ok || !strings.HasSuffix(base, "/docs/runbooks.md") {
			t.Errorf("alert %s: runbook_url %q does not point into docs/runbooks.md", r.Alert, url)
			continue
		}
		if anchor != strings.ToLower(r.Alert) {
			t.Errorf("alert %s: runbook_url anchor %q, want %q", r.Alert, anchor, strings.ToLower(r.Alert))
		}
		text, ok := sections[anchor]
		if !ok {
			t.Errorf("alert %s: docs/runbooks.md has no section ## %s", r.Alert, r.Alert)
			continue
		}
		for _, part := range []string{"**Meaning.**", "**Confirm.**", "**Act.**"} {
			if !strings.Contains(text, part) {
				t.Errorf("alert %s: its runbook section has no %s", r.Alert, part)
			}
		}
		for _, k := range []string{"summary", "description"} {
			if r.Annotations[k] == "" {
				t.Errorf("alert %s: no %s annotation", r.Alert, k)
			}
		}
		if sev := r.Labels["severity"]; !slices.Contains([]string{"critical", "warning", "info"}, sev) {
			t.Errorf("alert %s: severity %q", r.Alert, sev)
		}
	}
	if alerts < 9 {
		t.Errorf("only %d alerts", alerts)
	}
	if len(sections) != alerts {
		t.Errorf("docs/runbooks.md has %d sections for %d alerts", len(sections), alerts)
	}
}

// The thresholds are values.
func TestAlertThresholdsAreValues(t *testing.T) {
	exprs := func(set ...string) map[string]string {
		m := map[string]string{}
		for _, r := range alertRules(t, set...) {
			m[r.Alert+r.Record] = r.Expr.String()
		}
		return m
	}
	def := exprs()
	for value, alert := range map[string]string{
		"prometheusRule.checkLatencyP99Seconds=0.05": "EgressAuthzCheckLatencyHigh",
		"prometheusRule.ruleExpiryDays=3":            "EgressAuthzRuleExpiringSoon",
		"prometheusRule.certificateExpiryMinutes=90": "EgressAuthzServingCertificateExpiringSoon",
		"prometheusRule.noChecksFor=1h":              "EgressAuthzNoChecks",
		"prometheusRule.sinkBehindRecords=50000":     "EgressAuthzDecisionLogSinkBehind",
		"prometheusRule.denyRatePerSecond=5":         "EgressAuthzInvalidOrUntrustedDenies",
	} {
		if got := exprs(value)[alert]; got == def[alert] {
			t.Errorf("%s does not change %s: %s", value, alert, got)
		}
	}
}

// plainRuleGroups is the PrometheusRule's spec as a Prometheus rule file.
func plainRuleGroups(t *testing.T) []byte {
	t.Helper()
	_, pr, _, _ := chartMonitoring(t)
	var doc struct {
		Spec map[string]any `json:"spec"`
	}
	if err := yaml.Unmarshal(pr.YAML, &doc); err != nil {
		t.Fatal(err)
	}
	out, err := yaml.Marshal(doc.Spec)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

// plainObject is a chart object for kubectl apply -k: the chart's labels
// replaced by the base's.
func plainObject(t *testing.T, o *object) []byte {
	t.Helper()
	var m map[string]any
	if err := yaml.Unmarshal(o.YAML, &m); err != nil {
		t.Fatal(err)
	}
	meta := m["metadata"].(map[string]any)
	meta["labels"] = map[string]any{"app.kubernetes.io/name": "egress-authz"}
	out, err := yaml.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	return out
}

const generated = "# Generated from the Helm chart's defaults (deploy/helm/egress-authz) by\n# " + updateEnv + "=1 go test -run TestPlainMonitoringFilesAreTheChartsRender; do not edit.\n"

// The plain copies of the alerts (for Prometheus's rule_files, and for
// kubectl apply -k) are the chart's render with its defaults.
func TestPlainMonitoringFilesAreTheChartsRender(t *testing.T) {
	_, pr, _, s := chartMonitoring(t)
	var sm *object
	for _, o := range s.objs {
		if o.Kind == "ServiceMonitor" {
			sm = o
		}
	}
	want := map[string][]byte{
		plainRules: plainRuleGroups(t),
		filepath.Join(monitoringDir, "prometheusrule.yaml"): plainObject(t, pr),
		filepath.Join(monitoringDir, "servicemonitor.yaml"): plainObject(t, sm),
	}
	for path, body := range want {
		body = append([]byte(generated), body...)
		if os.Getenv(updateEnv) == "1" {
			if err := os.WriteFile(path, body, 0o644); err != nil {
				t.Fatal(err)
			}
			continue
		}
		got, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if string(got) != string(body) {
			t.Errorf("%s is not the chart's render: run %s=1 go test -run TestPlainMonitoringFilesAreTheChartsRender in deploy/", path, updateEnv)
		}
	}
	// kustomize renders them into the namespace, as the chart does.
	objs := render(t, monitoringDir)
	kinds := map[string]bool{}
	for _, o := range objs {
		kinds[o.Kind] = true
		if o.Namespace != chartNamespace {
			t.Errorf("%s not in %s", o, chartNamespace)
		}
	}
	if !kinds["ServiceMonitor"] || !kinds["PrometheusRule"] {
		t.Errorf("kustomize build %s: %v", monitoringDir, kinds)
	}
}

// promtool is Debian's prometheus package's (make test installs it with
// scripts/ensure-prometheus).
func promtool(t *testing.T) string {
	t.Helper()
	path, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("promtool not found: run scripts/ensure-prometheus (Debian's prometheus package)")
	}
	return path
}

func TestPromtoolCheckRules(t *testing.T) {
	out, err := exec.Command(promtool(t), "check", "rules", plainRules).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool check rules %s: %v\n%s", plainRules, err, out)
	}
	t.Logf("%s", out)
}

// promtool test rules fires each alert from synthetic series, and each
// alert is also tested quiet on healthy ones.
func TestPromtoolTestRules(t *testing.T) {
	data, err := os.ReadFile(rulesTests)
	if err != nil {
		t.Fatal(err)
	}
	var tests struct {
		RuleFiles []string `json:"rule_files"`
		Tests     []struct {
			AlertRuleTest []struct {
				Alertname string            `json:"alertname"`
				ExpAlerts []json.RawMessage `json:"exp_alerts"`
			} `json:"alert_rule_test"`
		} `json:"tests"`
	}
	if err := yaml.Unmarshal(data, &tests); err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(tests.RuleFiles, []string{filepath.Base(plainRules)}) {
		t.Errorf("%s tests rule_files %v, want [%s]", rulesTests, tests.RuleFiles, filepath.Base(plainRules))
	}
	fires, quiet := map[string]bool{}, map[string]bool{}
	for _, tc := range tests.Tests {
		for _, a := range tc.AlertRuleTest {
			if len(a.ExpAlerts) > 0 {
				fires[a.Alertname] = true
			} else {
				quiet[a.Alertname] = true
			}
		}
	}
	for _, r := range alertRules(t) {
		if r.Alert == "" {
			continue
		}
		if !fires[r.Alert] {
			t.Errorf("%s: no test fires alert %s", rulesTests, r.Alert)
		}
		if !quiet[r.Alert] {
			t.Errorf("%s: no test keeps alert %s quiet on healthy series", rulesTests, r.Alert)
		}
	}

	out, err := exec.Command(promtool(t), "test", "rules", rulesTests).CombinedOutput()
	if err != nil {
		t.Fatalf("promtool test rules %s: %v\n%s", rulesTests, err, out)
	}
	t.Logf("%s", out)
}
