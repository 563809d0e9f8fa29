package deploy_test

// The Helm chart, rendered with the Helm SDK the way helm template renders
// it (values coalesced with the chart's defaults and validated against
// values.schema.json, templates rendered strictly), decoded strictly like
// the kustomize output, run through the same cross-reference checks, and
// compared field by field with the kustomize overlay it stands for.

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path"
	"slices"
	"sort"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"helm.sh/helm/v4/pkg/chart/common"
	chartutil "helm.sh/helm/v4/pkg/chart/common/util"
	helmchart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/cli/values"
	"helm.sh/helm/v4/pkg/engine"
	networking "istio.io/api/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/resource"
)

const (
	chartDir       = "helm/egress-authz"
	chartNamespace = "egress-authz"
	chartRelease   = "egress-authz"
)

// chartVariant is a values file for the chart and the kustomize overlay it
// must render the same as.
type chartVariant struct {
	name    string
	overlay string
	values  []string // files, as helm install -f
}

var chartVariants = []chartVariant{
	{"example", overlayA, nil},
	{"outside-mesh", overlayB, []string{chartDir + "/examples/outside-mesh.yaml"}},
	{"fleet", overlayFleet, []string{chartDir + "/examples/fleet.yaml"}},
}

var loadedChart *helmchart.Chart

// renderChartYAML renders the chart as helm template -n egress-authz
// egress-authz deploy/helm/egress-authz -f FILE... --set SET... does.
func renderChartYAML(files, set []string) ([]byte, error) {
	if loadedChart == nil {
		c, err := loader.LoadDir(chartDir)
		if err != nil {
			return nil, err
		}
		loadedChart = c
	}
	user, err := (&values.Options{ValueFiles: files, Values: set}).MergeValues(nil)
	if err != nil {
		return nil, err
	}
	vals, err := chartutil.ToRenderValuesWithSchemaValidation(loadedChart, user,
		common.ReleaseOptions{Name: chartRelease, Namespace: chartNamespace, IsInstall: true, Revision: 1}, nil, false)
	if err != nil {
		return nil, err
	}
	out, err := engine.Engine{Strict: true}.RenderWithContext(context.Background(), loadedChart, vals)
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(out))
	for name := range out {
		if path.Ext(name) == ".yaml" || path.Ext(name) == ".yml" {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	var buf bytes.Buffer
	for _, name := range names {
		if strings.TrimSpace(out[name]) == "" {
			continue
		}
		fmt.Fprintf(&buf, "---\n# Source: %s\n%s\n", name, out[name])
	}
	return buf.Bytes(), nil
}

func renderChart(t *testing.T, files, set []string) []*object {
	t.Helper()
	data, err := renderChartYAML(files, set)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeAll("helm template "+chartDir, data)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// newChartStack is the chart's objects beside the egress gateway's routes
// and policy (istio/), which the chart does not ship: what a cluster has
// after helm install and kubectl apply -k deploy/istio.
func newChartStack(t *testing.T, v chartVariant, set ...string) *stack {
	t.Helper()
	s := newStack(t, istioDir)
	s.dir = "helm " + v.name
	// The Namespace as an object, as the overlays ship it.
	s.objs = append(renderChart(t, v.values, append([]string{"namespace.create=true"}, set...)), s.objs...)
	return s
}

func TestChartRendersStrictly(t *testing.T) {
	for _, o := range renderChart(t, nil, nil) {
		if o.Kind == "Namespace" {
			t.Errorf("%s rendered by default: helm install -n needs it before, with the Secrets in it", o)
		}
	}
	for _, v := range chartVariants {
		t.Run(v.name, func(t *testing.T) {
			objs := renderChart(t, v.values, []string{"namespace.create=true"})
			if len(objs) < 7 {
				t.Fatalf("only %d objects", len(objs))
			}
			for _, o := range objs {
				if o.Kind != "Namespace" && o.Namespace != chartNamespace {
					t.Errorf("%s is not in namespace %s", o, chartNamespace)
				}
			}
		})
	}
}

// The chart passes every cross-reference check the overlays pass.
func TestChartCrossReferences(t *testing.T) {
	for _, v := range chartVariants {
		t.Run(v.name, func(t *testing.T) {
			s := newChartStack(t, v)
			for _, c := range checks {
				t.Run(c.name, func(t *testing.T) {
					for _, msg := range runCheck(c, s) {
						t.Error(msg)
					}
				})
			}
		})
	}
}

func TestChartMatchesKustomize(t *testing.T) {
	for _, v := range chartVariants {
		t.Run(v.name, func(t *testing.T) {
			for _, msg := range compareStacks(newStack(t, v.overlay), newChartStack(t, v)) {
				t.Error(msg)
			}
		})
	}
}

// compareStacks lists where the chart's objects in its namespace differ
// from the overlay's. Labels the chart adds (instance, managed-by, chart)
// and the checksum annotation are not differences; GOMEMLIMIT is a
// percentage of the limit in the chart and the limit itself in the base
// (checked by TestChartGOMEMLIMIT).
func compareStacks(kust, chart *stack) []string {
	var diffs []string
	errorf := func(format string, args ...any) { diffs = append(diffs, fmt.Sprintf(format, args...)) }
	p := &problems{}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(stopCheck); !ok {
				panic(r)
			}
			diffs = append(diffs, p.list...)
		}
	}()

	// The same objects, but for ConfigMaps' names (kustomize hashes some).
	ids := func(s *stack) []string {
		var out []string
		for _, o := range s.objs {
			if o.Namespace == chartNamespace && o.Kind != "ConfigMap" || o.Kind == "Namespace" {
				out = append(out, o.Kind+" "+o.Namespace+"/"+o.Name)
			}
		}
		sort.Strings(out)
		return out
	}
	if k, c := ids(kust), ids(chart); !slices.Equal(k, c) {
		errorf("objects differ:\n kustomize %v\n helm      %v", k, c)
	}

	kd, cd := kust.deployment(p), chart.deployment(p)
	kc, cc := kust.container(p), chart.container(p)
	same := func(what string, k, c any) {
		if !equality.Semantic.DeepEqual(k, c) {
			errorf("%s differs:\n kustomize %+v\n helm      %+v", what, k, c)
		}
	}
	same("container ports", kc.Ports, cc.Ports)
	same("readiness probe", kc.ReadinessProbe, cc.ReadinessProbe)
	same("liveness probe", kc.LivenessProbe, cc.LivenessProbe)
	same("container securityContext", kc.SecurityContext, cc.SecurityContext)
	same("pod securityContext", kd.Spec.Template.Spec.SecurityContext, cd.Spec.Template.Spec.SecurityContext)
	same("image", kc.Image, cc.Image)
	same("resources", kc.Resources, cc.Resources)
	byName := func(m []corev1.VolumeMount) []corev1.VolumeMount {
		return slices.SortedFunc(slices.Values(m), func(a, b corev1.VolumeMount) int { return strings.Compare(a.Name, b.Name) })
	}
	same("volume mounts", byName(kc.VolumeMounts), byName(cc.VolumeMounts))
	sortedArgs := func(args []string) []string { return slices.Sorted(slices.Values(args)) }
	same("args", sortedArgs(kc.Args), sortedArgs(cc.Args))
	envWithout := func(env []corev1.EnvVar) []corev1.EnvVar {
		return slices.DeleteFunc(slices.Clone(env), func(e corev1.EnvVar) bool { return e.Name == "GOMEMLIMIT" })
	}
	same("env (but GOMEMLIMIT)", envWithout(kc.Env), envWithout(cc.Env))
	hasEnv := func(env []corev1.EnvVar, name string) bool {
		return slices.ContainsFunc(env, func(e corev1.EnvVar) bool { return e.Name == name })
	}
	if hasEnv(kc.Env, "GOMEMLIMIT") != hasEnv(cc.Env, "GOMEMLIMIT") {
		errorf("GOMEMLIMIT set on one side only")
	}
	same("replicas", kd.Spec.Replicas, cd.Spec.Replicas)
	same("strategy", kd.Spec.Strategy, cd.Spec.Strategy)
	same("terminationGracePeriodSeconds", kd.Spec.Template.Spec.TerminationGracePeriodSeconds, cd.Spec.Template.Spec.TerminationGracePeriodSeconds)
	same("serviceAccountName", kd.Spec.Template.Spec.ServiceAccountName, cd.Spec.Template.Spec.ServiceAccountName)
	same("automountServiceAccountToken", kd.Spec.Template.Spec.AutomountServiceAccountToken, cd.Spec.Template.Spec.AutomountServiceAccountToken)
	same("topologySpreadConstraints", kd.Spec.Template.Spec.TopologySpreadConstraints, cd.Spec.Template.Spec.TopologySpreadConstraints)
	for k, v := range kd.Spec.Template.Labels {
		if cd.Spec.Template.Labels[k] != v {
			errorf("pod label %s: kustomize %q, helm %q", k, v, cd.Spec.Template.Labels[k])
		}
	}
	for k, v := range kd.Spec.Template.Annotations {
		if cd.Spec.Template.Annotations[k] != v {
			errorf("pod annotation %s: kustomize %q, helm %q", k, v, cd.Spec.Template.Annotations[k])
		}
	}
	for k := range cd.Spec.Template.Annotations {
		if _, ok := kd.Spec.Template.Annotations[k]; !ok && !strings.HasPrefix(k, "checksum/") {
			errorf("pod annotation %s in helm only", k)
		}
	}

	// Volumes by name; a ConfigMap volume by the data it mounts.
	volumes := func(s *stack, d *appsv1.Deployment) map[string]any {
		out := map[string]any{}
		for _, v := range d.Spec.Template.Spec.Volumes {
			if v.ConfigMap != nil {
				o := s.find("ConfigMap", chartNamespace, v.ConfigMap.Name)
				if o == nil {
					errorf("volume %s: no ConfigMap %s", v.Name, v.ConfigMap.Name)
					continue
				}
				out[v.Name] = o.Value.(*corev1.ConfigMap).Data
				continue
			}
			out[v.Name] = v.VolumeSource
		}
		return out
	}
	same("volumes", volumes(kust, kd), volumes(chart, cd))

	same("Service ports", kust.service(p).Spec.Ports, chart.service(p).Spec.Ports)
	same("Service selector", kust.service(p).Spec.Selector, chart.service(p).Spec.Selector)

	one := func(s *stack, kind string) any {
		if o := s.find(kind, chartNamespace, "egress-authz"); o != nil {
			return o.Value
		}
		return nil
	}
	if k, c := one(kust, "PodDisruptionBudget"), one(chart, "PodDisruptionBudget"); k != nil && c != nil {
		same("PodDisruptionBudget spec", k.(*policyv1.PodDisruptionBudget).Spec, c.(*policyv1.PodDisruptionBudget).Spec)
	}
	if k, c := one(kust, "HorizontalPodAutoscaler"), one(chart, "HorizontalPodAutoscaler"); k != nil && c != nil {
		same("HorizontalPodAutoscaler spec", k.(*autoscalingv2.HorizontalPodAutoscaler).Spec, c.(*autoscalingv2.HorizontalPodAutoscaler).Spec)
	}
	if k, c := one(kust, "ServiceAccount"), one(chart, "ServiceAccount"); k != nil && c != nil {
		ks, cs := k.(*corev1.ServiceAccount), c.(*corev1.ServiceAccount)
		same("ServiceAccount annotations", ks.Annotations, cs.Annotations)
		same("ServiceAccount automountServiceAccountToken", ks.AutomountServiceAccountToken, cs.AutomountServiceAccountToken)
	}
	if k, c := kust.find("Namespace", "", chartNamespace), chart.find("Namespace", "", chartNamespace); k != nil && c != nil {
		same("Namespace istio-injection", k.Value.(*corev1.Namespace).Labels["istio-injection"], c.Value.(*corev1.Namespace).Labels["istio-injection"])
	}
	// Istio objects in the namespace: the same specs.
	for _, ko := range kust.objs {
		if ko.Spec == nil || ko.Namespace != chartNamespace {
			continue
		}
		if co := chart.find(ko.Kind, chartNamespace, ko.Name); co != nil && !proto.Equal(ko.Spec, co.Spec) {
			errorf("%s %s spec differs:\n kustomize %v\n helm      %v", ko.Kind, ko.Name, ko.Spec, co.Spec)
		}
	}
	return diffs
}

// GOMEMLIMIT is goMemLimitPercent of the memory limit, in bytes, as the Go
// runtime reads it.
func TestChartGOMEMLIMIT(t *testing.T) {
	for _, tc := range []struct {
		limit   string
		percent int
	}{{"1Gi", 90}, {"512Mi", 90}, {"1.5Gi", 80}, {"2G", 90}, {"768Mi", 100}} {
		t.Run(tc.limit, func(t *testing.T) {
			s := newChartStack(t, chartVariants[0], "resources.limits.memory="+tc.limit, fmt.Sprintf("goMemLimitPercent=%d", tc.percent))
			c := s.container(&problems{})
			q := resource.MustParse(tc.limit)
			if got := c.Resources.Limits.Memory(); got.Cmp(q) != 0 {
				t.Fatalf("memory limit %v, want %v", got, q)
			}
			want := fmt.Sprint(q.Value() * int64(tc.percent) / 100)
			for _, e := range c.Env {
				if e.Name == "GOMEMLIMIT" {
					if e.Value != want {
						t.Errorf("GOMEMLIMIT=%q, want %s (%d%% of %s)", e.Value, want, tc.percent, tc.limit)
					}
					return
				}
			}
			t.Error("no GOMEMLIMIT")
		})
	}
	t.Run("no limit", func(t *testing.T) {
		c := newChartStack(t, chartVariants[0], "resources.limits.memory=null").container(&problems{})
		for _, e := range c.Env {
			if e.Name == "GOMEMLIMIT" {
				t.Errorf("GOMEMLIMIT=%s without a memory limit", e.Value)
			}
		}
	})
}

// Values the schema or the templates refuse, with a message naming them.
func TestChartRefusesBadValues(t *testing.T) {
	for name, tc := range map[string]struct {
		set  []string
		want string
	}{
		"unknown mode":          {[]string{"mode=sidecar"}, "mode"},
		"misspelt value":        {[]string{"decisionLog.postgress.enabled=false"}, "postgress"},
		"port out of range":     {[]string{"ports.grpc=70000"}, "grpc"},
		"plain http bundle":     {[]string{"rules.source=bundle", "rules.bundle.url=http://x/b.tgz"}, "url"},
		"bundle without keys":   {[]string{"rules.source=bundle", "rules.bundle.url=oci://r.example/x:1"}, "publicKeys"},
		"s3 without cluster":    {[]string{"decisionLog.s3.enabled=true", "decisionLog.s3.url=s3://b/p"}, "cluster"},
		"memory limit unit":     {[]string{"resources.limits.memory=1Gb"}, "memory"},
		"GOMEMLIMIT percentage": {[]string{"goMemLimitPercent=120"}, "goMemLimitPercent"},
	} {
		t.Run(name, func(t *testing.T) {
			_, err := renderChartYAML(nil, tc.set)
			if err == nil {
				t.Fatal("rendered")
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Errorf("error does not name %s: %v", tc.want, err)
			}
		})
	}
}

// The chart cannot read deploy/examples/rules.yaml (a chart holds only its
// own files), so it ships a copy, which must not drift.
func TestChartRulesAreTheExampleRuleSet(t *testing.T) {
	example, err := os.ReadFile(exampleRules)
	if err != nil {
		t.Fatal(err)
	}
	copied, err := os.ReadFile(chartDir + "/files/rules.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(example, copied) {
		t.Fatalf("%s/files/rules.yaml differs from %s: cp deploy/%s deploy/%s/files/rules.yaml", chartDir, exampleRules, exampleRules, chartDir)
	}
}

// A change on one side only, the chart's values or the overlay's render,
// is caught by the comparison (or by a cross-reference check).
func TestChartComparisonCatchesOneSidedChanges(t *testing.T) {
	for _, tc := range []struct {
		name    string
		variant int
		set     []string          // chart values
		mutate  func(kust *stack) // the kustomize side
	}{
		{name: "helm: gRPC port", set: []string{"ports.grpc=9190"}},
		{name: "helm: admin port", set: []string{"ports.admin=9195"}},
		{name: "helm: HTTP authorization port", set: []string{"ports.httpAuthz=9194"}},
		{name: "helm: B: gRPC port", variant: 1, set: []string{"ports.grpc=9190"}},
		{name: "helm: fleet: admin port", variant: 2, set: []string{"ports.admin=9195"}},
		{name: "kustomize: container gRPC port", mutate: func(s *stack) { mPort(mContainer(s), "grpc").ContainerPort = 9190 }},
		{name: "kustomize: Service admin port", mutate: func(s *stack) { mService(s).Spec.Ports[2].Port = 9195 }},
		{name: "kustomize: --http-addr", mutate: func(s *stack) { mSetArg(s, "http-addr", ":9194") }},
		{name: "kustomize: B: container admin port", variant: 1, mutate: func(s *stack) { mPort(mContainer(s), "admin").ContainerPort = 9195 }},
		{name: "kustomize: fleet: HTTP port", variant: 2, mutate: func(s *stack) { mPort(mContainer(s), "http-authz").ContainerPort = 9194 }},
		{name: "helm: mode", set: []string{"mode=spiffe"}},
		{name: "helm: retention", set: []string{"decisionLog.retention=30d"}},
		{name: "helm: memory limit", set: []string{"resources.limits.memory=2Gi"}},
		{name: "helm: gateway identity", set: []string{"gateway.serviceAccount=egress"}},
		{name: "helm: rules", set: []string{"rules.configMap.files.rules\\.yaml=rules: []"}},
		{name: "helm: fleet: poll", variant: 2, set: []string{"rules.bundle.poll=1m"}},
		{name: "kustomize: readiness path", mutate: func(s *stack) { mContainer(s).ReadinessProbe.HTTPGet.Path = "/ready" }},
		{name: "kustomize: runAsUser", mutate: func(s *stack) { u := int64(1000); mContainer(s).SecurityContext.RunAsUser = &u }},
		{name: "kustomize: env", mutate: func(s *stack) { mContainer(s).Env[0].ValueFrom.SecretKeyRef.Key = "url" }},
		{name: "kustomize: fleet: region", variant: 2, mutate: func(s *stack) {
			for i := range mContainer(s).Env {
				if e := &mContainer(s).Env[i]; e.Name == "AWS_REGION" {
					e.Value = "us-east-1"
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v := chartVariants[tc.variant]
			kust, chart := newStack(t, v.overlay), newChartStack(t, v, tc.set...)
			if tc.mutate != nil {
				tc.mutate(kust)
			}
			found := compareStacks(kust, chart)
			for _, c := range checks {
				for _, msg := range runCheck(c, chart) {
					found = append(found, "helm: "+c.name+": "+msg)
				}
			}
			if len(found) == 0 {
				t.Fatal("no difference noticed")
			}
			t.Log(found[0])
		})
	}
}

// helm lint, for each variant, with the monitoring objects on: no warning
// and no error.
func TestChartLints(t *testing.T) {
	for _, v := range chartVariants {
		t.Run(v.name, func(t *testing.T) {
			vals, err := (&values.Options{ValueFiles: v.values, Values: monitoringValues}).MergeValues(nil)
			if err != nil {
				t.Fatal(err)
			}
			kube, err := common.ParseKubeVersion("v1.30.0")
			if err != nil {
				t.Fatal(err)
			}
			l := lint.RunAll(chartDir, vals, chartNamespace, lint.WithKubeVersion(kube))
			for _, m := range l.Messages {
				if m.Severity >= support.WarningSev {
					t.Error(m)
				} else {
					t.Log(m)
				}
			}
		})
	}
}

// The values that pick the rule source and the decision-log sinks.
func TestChartValuesSelectSources(t *testing.T) {
	p := &problems{}
	t.Run("existing rules ConfigMap", func(t *testing.T) {
		s := newChartStack(t, chartVariants[0], "rules.configMap.existing=team-rules")
		if o := s.find("ConfigMap", chartNamespace, "egress-authz-rules"); o != nil {
			t.Errorf("%s rendered beside an existing ConfigMap", o)
		}
		if got := mVolume(s, "rules").ConfigMap.Name; got != "team-rules" {
			t.Errorf("rules volume mounts ConfigMap %s, want team-rules", got)
		}
	})
	t.Run("more sinks", func(t *testing.T) {
		s := newChartStack(t, chartVariants[0], "decisionLog.extraSinks={otlp,parquet:/var/lib/egress-authz/parquet}")
		var audit []string
		for _, a := range s.container(p).Args {
			if v, ok := strings.CutPrefix(a, "--audit="); ok {
				audit = append(audit, v)
			}
		}
		if want := []string{"$(EGRESS_AUTHZ_AUDIT_DSN)", "otlp", "parquet:/var/lib/egress-authz/parquet"}; !slices.Equal(audit, want) {
			t.Errorf("--audit %v, want %v", audit, want)
		}
		for _, c := range checks {
			for _, msg := range runCheck(c, s) {
				t.Errorf("%s: %s", c.name, msg)
			}
		}
	})
	t.Run("https bundle", func(t *testing.T) {
		s := newChartStack(t, chartVariants[2], "rules.bundle.url=https://rules.example.org/egress/bundle.tar.gz")
		se := s.find("ServiceEntry", chartNamespace, "rules-registry")
		if se == nil {
			t.Fatal("no ServiceEntry for the bundle's host")
		}
		if hosts := se.Spec.(*networking.ServiceEntry).Hosts; !slices.Equal(hosts, []string{"rules.example.org"}) {
			t.Errorf("ServiceEntry hosts %v, want [rules.example.org]", hosts)
		}
		for _, c := range checks {
			for _, msg := range runCheck(c, s) {
				t.Errorf("%s: %s", c.name, msg)
			}
		}
	})
}
