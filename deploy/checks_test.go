package deploy_test

// Cross-reference checks over a rendered overlay: the names and ports that
// tie the Deployment, Service, mesh extensionProvider, AuthorizationPolicies
// and egress routes together must agree, and the Deployment's arguments must
// be ones the serve command accepts. Each check reports problems instead of
// failing a test directly, so that TestChecksCatchOneSidedChanges can break
// one side of a reference and watch a check notice.

import (
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/egress-authz/egress-authz/internal/admin"
	"github.com/egress-authz/egress-authz/internal/bundle"
	"github.com/egress-authz/egress-authz/internal/config"
	"github.com/egress-authz/egress-authz/rules"
)

// stack is everything one overlay deploys, with the mesh setting it needs.
type stack struct {
	dir     string
	objs    []*object
	mesh    *meshv1alpha1.MeshConfig
	op      *istioOperator
	example *rules.Set
}

// newStack renders dir and loads the mesh configuration, each time afresh,
// so that a test may change what it gets.
func newStack(t *testing.T, dir string) *stack {
	t.Helper()
	s := &stack{dir: dir, objs: render(t, dir)}
	var err error
	if s.mesh, err = loadMesh(meshValues); err != nil {
		t.Fatal(err)
	}
	if s.op, _, err = loadOperator(meshOperator); err != nil {
		t.Fatal(err)
	}
	if s.example, err = rules.Load(exampleRules); err != nil {
		t.Fatal(err)
	}
	return s
}

// problems collects what a check found wrong.
type problems struct{ list []string }

func (p *problems) errorf(format string, args ...any) {
	p.list = append(p.list, fmt.Sprintf(format, args...))
}

// stopCheck is panicked by fatalf and recovered by runCheck: the check
// cannot go on.
type stopCheck struct{}

func (p *problems) fatalf(format string, args ...any) {
	p.errorf(format, args...)
	panic(stopCheck{})
}

type check struct {
	name string
	fn   func(*stack, *problems)
}

func runCheck(c check, s *stack) (found []string) {
	p := &problems{}
	defer func() {
		if r := recover(); r != nil {
			if _, ok := r.(stopCheck); !ok {
				panic(r)
			}
		}
		found = p.list
	}()
	c.fn(s, p)
	return p.list
}

var checks = []check{
	{"workload_is_selected", checkSelectors},
	{"grpc_port", checkGRPCPort},
	{"extension_provider", checkProvider},
	{"http_extension_provider", checkHTTPProvider},
	{"gateway_policy", checkGatewayPolicy},
	{"only_the_gateway_calls_check", checkCallers},
	{"rules_configmap_mount", checkRulesMount},
	{"writable_paths", checkWritablePaths},
	{"serve_flags", checkFlags},
	{"decision_log_bucket", checkDecisionLogBucket},
	{"probes", checkProbes},
	{"hardening", checkHardening},
	{"egress_routes", checkRoutes},
	{"routed_hosts_have_rules", checkRoutesHaveRules},
}

func TestCrossReferences(t *testing.T) {
	for _, dir := range []string{overlayA, overlayB, overlayFleet} {
		t.Run(filepath.Base(dir), func(t *testing.T) {
			s := newStack(t, dir)
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

// ---- lookups ----

func (s *stack) all(kind string) []*object {
	var out []*object
	for _, o := range s.objs {
		if o.Kind == kind {
			out = append(out, o)
		}
	}
	return out
}

func (s *stack) find(kind, namespace, name string) *object {
	for _, o := range s.objs {
		if o.Kind == kind && o.Name == name && (namespace == "" || o.Namespace == namespace) {
			return o
		}
	}
	return nil
}

// deployment is egress-authz's Deployment: the only one the overlays ship.
func (s *stack) deployment(p *problems) *appsv1.Deployment {
	deps := s.all("Deployment")
	if len(deps) != 1 {
		p.fatalf("want one Deployment, found %d", len(deps))
	}
	return deps[0].Value.(*appsv1.Deployment)
}

func (s *stack) container(p *problems) *corev1.Container {
	dep := s.deployment(p)
	for i := range dep.Spec.Template.Spec.Containers {
		if c := &dep.Spec.Template.Spec.Containers[i]; c.Name == "egress-authz" {
			return c
		}
	}
	p.fatalf("Deployment %s has no container named egress-authz", dep.Name)
	return nil
}

func (s *stack) podLabels(p *problems) labels.Set {
	return labels.Set(s.deployment(p).Spec.Template.Labels)
}

func (s *stack) service(p *problems) *corev1.Service {
	svcs := s.all("Service")
	if len(svcs) != 1 {
		p.fatalf("want one Service, found %d", len(svcs))
	}
	return svcs[0].Value.(*corev1.Service)
}

// grpcServicePort is the Service port that carries Check: appProtocol grpc.
func (s *stack) grpcServicePort(p *problems) *corev1.ServicePort {
	svc := s.service(p)
	var found *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if sp := &svc.Spec.Ports[i]; sp.AppProtocol != nil && *sp.AppProtocol == "grpc" {
			if found != nil {
				p.fatalf("Service %s has more than one port with appProtocol grpc", svc.Name)
			}
			found = sp
		}
	}
	if found == nil {
		p.fatalf("Service %s has no port with appProtocol grpc", svc.Name)
	}
	return found
}

// containerPort resolves a Service targetPort or probe port, by name or
// number, to the egress-authz container's port.
func (s *stack) containerPort(p *problems, what string, port intstr.IntOrString) *corev1.ContainerPort {
	ctr := s.container(p)
	for i := range ctr.Ports {
		cp := &ctr.Ports[i]
		if (port.Type == intstr.String && cp.Name == port.StrVal) || (port.Type == intstr.Int && cp.ContainerPort == port.IntVal) {
			return cp
		}
	}
	p.fatalf("%s: port %s is not a port of container %s", what, port.String(), ctr.Name)
	return nil
}

// flags parses the container's arguments: "serve" and then --name=value or
// --name (a boolean).
func (s *stack) flags(p *problems) map[string][]string {
	args := s.container(p).Args
	if len(args) == 0 || args[0] != "serve" {
		p.fatalf("container args %q do not start with serve", args)
	}
	f := map[string][]string{}
	for _, a := range args[1:] {
		name, value, ok := strings.Cut(strings.TrimPrefix(a, "--"), "=")
		if !strings.HasPrefix(a, "--") {
			p.fatalf("argument %q: write flags as --name=value", a)
		}
		if !ok {
			value = "true"
		}
		f[name] = append(f[name], value)
	}
	return f
}

func (s *stack) flag(p *problems, name string) string {
	v := s.flags(p)[name]
	if len(v) != 1 {
		p.fatalf("want --%s once in the container args, found %d", name, len(v))
	}
	return v[0]
}

// flagPort is the port of a listen-address flag.
func (s *stack) flagPort(p *problems, name string) (host string, port int32) {
	h, ps, err := net.SplitHostPort(s.flag(p, name))
	if err != nil {
		p.fatalf("--%s: %v", name, err)
	}
	n, err := strconv.ParseInt(ps, 10, 32)
	if err != nil {
		p.fatalf("--%s: port %q: %v", name, ps, err)
	}
	return h, int32(n)
}

// mount finds the container's volume mount at path exactly or, with file
// set, at path's directory; it returns the mount and its volume.
func (s *stack) mount(p *problems, what, path string, file bool) (*corev1.VolumeMount, *corev1.Volume) {
	ctr := s.container(p)
	for i := range ctr.VolumeMounts {
		m := &ctr.VolumeMounts[i]
		if m.MountPath == path || (file && m.MountPath == filepath.Dir(path)) {
			for j := range s.deployment(p).Spec.Template.Spec.Volumes {
				if v := &s.deployment(p).Spec.Template.Spec.Volumes[j]; v.Name == m.Name {
					return m, v
				}
			}
			p.fatalf("%s: volume mount %s names no volume", what, m.Name)
		}
	}
	p.fatalf("%s: nothing is mounted at %s", what, path)
	return nil, nil
}

// customPolicy is the egress gateway's CUSTOM AuthorizationPolicy.
func (s *stack) customPolicy(p *problems) (*object, *security.AuthorizationPolicy) {
	var found *object
	for _, o := range s.all("AuthorizationPolicy") {
		if o.Spec.(*security.AuthorizationPolicy).GetAction() == security.AuthorizationPolicy_CUSTOM {
			if found != nil {
				p.fatalf("more than one CUSTOM AuthorizationPolicy: %s, %s", found, o)
			}
			found = o
		}
	}
	if found == nil {
		p.fatalf("no AuthorizationPolicy with action CUSTOM")
	}
	return found, found.Spec.(*security.AuthorizationPolicy)
}

// provider is the mesh extensionProvider the CUSTOM policy names.
func (s *stack) provider(p *problems) *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationGrpcProvider {
	_, pol := s.customPolicy(p)
	name := pol.GetProvider().GetName()
	for _, ep := range s.mesh.GetExtensionProviders() {
		if ep.GetName() == name {
			g := ep.GetEnvoyExtAuthzGrpc()
			if g == nil {
				p.fatalf("extensionProvider %q is not envoyExtAuthzGrpc", name)
			}
			return g
		}
	}
	p.fatalf("the CUSTOM AuthorizationPolicy names provider %q, which %s does not register", name, meshValues)
	return nil
}

// The egress gateway as installed by istio-operator.yaml: its namespace,
// ServiceAccount and Service.
func (s *stack) gatewayNamespace() string {
	if s.op.Metadata.Namespace != "" {
		return s.op.Metadata.Namespace
	}
	return "istio-system"
}

func (s *stack) gatewayName(p *problems) string {
	for _, g := range s.op.Spec.Components.EgressGateways {
		if g.Enabled {
			return g.Name
		}
	}
	p.fatalf("%s enables no egress gateway", meshOperator)
	return ""
}

func (s *stack) trustDomain() string {
	if td := s.mesh.GetTrustDomain(); td != "" {
		return td
	}
	return "cluster.local"
}

// gatewayPrincipal is the egress gateway's identity in AuthorizationPolicy
// form (no spiffe:// prefix). istioctl names a gateway's ServiceAccount
// <name>-service-account.
func (s *stack) gatewayPrincipal(p *problems) string {
	return fmt.Sprintf("%s/ns/%s/sa/%s-service-account", s.trustDomain(), s.gatewayNamespace(), s.gatewayName(p))
}

func (s *stack) gatewayHost(p *problems) string {
	return s.gatewayName(p) + "." + s.gatewayNamespace() + ".svc.cluster.local"
}

// inMesh reports whether the egress-authz pods get an Istio sidecar.
func (s *stack) inMesh(p *problems) bool {
	dep := s.deployment(p)
	ns := s.find("Namespace", "", dep.Namespace)
	if ns == nil {
		p.fatalf("no Namespace %s in the output", dep.Namespace)
	}
	nsl := ns.Value.(*corev1.Namespace).Labels
	injected := nsl["istio-injection"] == "enabled" || nsl["istio.io/rev"] != ""
	if v, ok := dep.Spec.Template.Labels["sidecar.istio.io/inject"]; ok {
		injected = v == "true"
	}
	return injected
}

// secretRefs lists the Secrets (and keys) the Deployment reads.
func (s *stack) secretRefs() map[string][]string {
	p := &problems{}
	refs := map[string][]string{}
	func() {
		defer func() { recover() }()
		ctr := s.container(p)
		for _, e := range ctr.Env {
			if r := e.ValueFrom; r != nil && r.SecretKeyRef != nil {
				refs[r.SecretKeyRef.Name] = append(refs[r.SecretKeyRef.Name], r.SecretKeyRef.Key)
			}
		}
		for _, v := range s.deployment(p).Spec.Template.Spec.Volumes {
			if v.Secret != nil {
				for _, it := range v.Secret.Items {
					refs[v.Secret.SecretName] = append(refs[v.Secret.SecretName], it.Key)
				}
			}
		}
	}()
	return refs
}

func selects(sel *metav1.LabelSelector, set labels.Set) bool {
	if sel == nil {
		return false
	}
	s, err := metav1.LabelSelectorAsSelector(sel)
	return err == nil && !s.Empty() && s.Matches(set)
}

// ---- the checks ----

func checkSelectors(s *stack, p *problems) {
	dep := s.deployment(p)
	pod := s.podLabels(p)
	if !selects(dep.Spec.Selector, pod) {
		p.errorf("Deployment %s: its selector does not match its pod labels", dep.Name)
	}
	if dep.Spec.Replicas == nil || *dep.Spec.Replicas < 2 {
		p.errorf("Deployment %s: want at least 2 replicas", dep.Name)
	}
	svc := s.service(p)
	if len(svc.Spec.Selector) == 0 || !labels.SelectorFromSet(svc.Spec.Selector).Matches(pod) {
		p.errorf("Service %s: selector %v does not select the egress-authz pods %v", svc.Name, svc.Spec.Selector, pod)
	}
	if sa := dep.Spec.Template.Spec.ServiceAccountName; sa == "" || s.find("ServiceAccount", dep.Namespace, sa) == nil {
		p.errorf("Deployment %s: ServiceAccount %q is not in the output", dep.Name, sa)
	}
	for _, o := range s.objs {
		switch o.Kind {
		case "Deployment", "Service", "ServiceAccount", "ConfigMap", "PodDisruptionBudget", "HorizontalPodAutoscaler":
			if o.Namespace != dep.Namespace {
				p.errorf("%s is not in the Deployment's namespace %s", o, dep.Namespace)
			}
		}
	}
	if s.find("Namespace", "", dep.Namespace) == nil {
		p.errorf("the output does not create namespace %s", dep.Namespace)
	}

	pdbs := s.all("PodDisruptionBudget")
	if len(pdbs) == 0 {
		p.errorf("no PodDisruptionBudget")
	}
	for _, o := range pdbs {
		if pdb := o.Value.(*policyv1.PodDisruptionBudget); !selects(pdb.Spec.Selector, pod) {
			p.errorf("%s does not select the egress-authz pods", o)
		}
	}

	hpas := s.all("HorizontalPodAutoscaler")
	if len(hpas) != 1 {
		p.fatalf("want one HorizontalPodAutoscaler, found %d", len(hpas))
	}
	hpa := hpas[0].Value.(*autoscalingv2.HorizontalPodAutoscaler)
	if ref := hpa.Spec.ScaleTargetRef; ref.APIVersion != "apps/v1" || ref.Kind != "Deployment" || ref.Name != dep.Name {
		p.errorf("HorizontalPodAutoscaler %s scales %s %s/%s, not Deployment %s", hpa.Name, ref.APIVersion, ref.Kind, ref.Name, dep.Name)
	}
	if hpa.Spec.MinReplicas == nil || *hpa.Spec.MinReplicas < 2 {
		p.errorf("HorizontalPodAutoscaler %s: want minReplicas >= 2", hpa.Name)
	}
	for _, m := range hpa.Spec.Metrics {
		if m.ContainerResource != nil {
			if !slices.ContainsFunc(dep.Spec.Template.Spec.Containers, func(c corev1.Container) bool { return c.Name == m.ContainerResource.Container }) {
				p.errorf("HorizontalPodAutoscaler %s measures container %q, which the Deployment does not have", hpa.Name, m.ContainerResource.Container)
			}
		}
	}

	spread := dep.Spec.Template.Spec.TopologySpreadConstraints
	byHost := false
	for _, c := range spread {
		if !selects(c.LabelSelector, pod) {
			p.errorf("topology spread constraint on %s does not select the egress-authz pods", c.TopologyKey)
		}
		byHost = byHost || c.TopologyKey == "kubernetes.io/hostname"
	}
	if !byHost {
		p.errorf("Deployment %s: no topology spread across nodes (kubernetes.io/hostname)", dep.Name)
	}
}

func checkGRPCPort(s *stack, p *problems) {
	sp := s.grpcServicePort(p)
	if sp.Name != "grpc" && !strings.HasPrefix(sp.Name, "grpc-") {
		p.errorf("Service port %q: Istio reads the protocol from the name; call it grpc or grpc-<suffix>", sp.Name)
	}
	cp := s.containerPort(p, "Service port "+sp.Name+" targetPort", sp.TargetPort)
	if _, port := s.flagPort(p, "grpc-addr"); cp.ContainerPort != port {
		p.errorf("Service port %s targets container port %s (%d), but --grpc-addr listens on %d", sp.Name, cp.Name, cp.ContainerPort, port)
	}
}

func checkProvider(s *stack, p *problems) {
	g := s.provider(p)
	svc := s.service(p)
	if want := svc.Name + "." + svc.Namespace + ".svc.cluster.local"; g.GetService() != want {
		p.errorf("extensionProvider service %q, want %q (the Service egress-authz ships)", g.GetService(), want)
	}
	if sp := s.grpcServicePort(p); g.GetPort() != uint32(sp.Port) {
		p.errorf("extensionProvider port %d, but Service %s serves gRPC on port %d", g.GetPort(), svc.Name, sp.Port)
	}
	if g.GetFailOpen() {
		p.errorf("extensionProvider has failOpen: true; egress-authz must fail closed")
	}
	if g.GetTimeout() == nil {
		p.errorf("extensionProvider has no timeout: Istio's default is 600 s")
	} else if d := g.GetTimeout().AsDuration(); d <= 0 || d > 5*time.Second {
		p.errorf("extensionProvider timeout %v: want more than 0 and at most 5 s", d)
	}
}

// checkHTTPProvider: the mesh's envoyExtAuthzHttp provider, when it
// registers one, reaches the --http-addr listener through the Service,
// fails closed, sends what egress-authz reads and passes on nothing of an
// allow; and only the egress gateway can reach that port.
func checkHTTPProvider(s *stack, p *problems) {
	var h *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationHttpProvider
	for _, ep := range s.mesh.GetExtensionProviders() {
		if x := ep.GetEnvoyExtAuthzHttp(); x != nil {
			if h != nil {
				p.fatalf("more than one envoyExtAuthzHttp extensionProvider")
			}
			h = x
		}
	}
	if h == nil {
		return
	}
	svc := s.service(p)
	if want := svc.Name + "." + svc.Namespace + ".svc.cluster.local"; h.GetService() != want {
		p.errorf("HTTP extensionProvider service %q, want %q (the Service egress-authz ships)", h.GetService(), want)
	}
	_, listen := s.flagPort(p, "http-addr")
	var sp *corev1.ServicePort
	for i := range svc.Spec.Ports {
		if uint32(svc.Spec.Ports[i].Port) == h.GetPort() {
			sp = &svc.Spec.Ports[i]
		}
	}
	if sp == nil {
		p.fatalf("HTTP extensionProvider port %d is not a port of Service %s", h.GetPort(), svc.Name)
	}
	if cp := s.containerPort(p, "Service port "+sp.Name, sp.TargetPort); cp.ContainerPort != listen {
		p.errorf("Service port %s targets container port %d, but --http-addr listens on %d", sp.Name, cp.ContainerPort, listen)
	}
	if !strings.HasPrefix(sp.Name, "http-") || sp.AppProtocol == nil || *sp.AppProtocol != "http" {
		p.errorf("Service port %s: want an http- name and appProtocol http, so that Istio reads HTTP", sp.Name)
	}
	if h.GetFailOpen() {
		p.errorf("HTTP extensionProvider has failOpen: true; egress-authz must fail closed")
	}
	if d := h.GetTimeout().AsDuration(); h.GetTimeout() == nil || d <= 0 || d > 5*time.Second {
		p.errorf("HTTP extensionProvider timeout %v: want one, more than 0 and at most 5 s (Istio's default is 600 s)", h.GetTimeout())
	}
	if h.GetStatusOnError() == "" || h.GetStatusOnError() == "403" {
		p.errorf("HTTP extensionProvider statusOnError %q: want one that is not a policy deny's 403", h.GetStatusOnError())
	}
	if h.GetPathPrefix() != "/ext-authz" {
		p.errorf("HTTP extensionProvider pathPrefix %q: egress-authz serves Envoy's HTTP service at /ext-authz", h.GetPathPrefix())
	}
	for _, hdr := range []string{"x-forwarded-client-cert", "x-forwarded-proto", "x-request-id"} {
		if !slices.Contains(h.GetIncludeRequestHeadersInCheck(), hdr) {
			p.errorf("HTTP extensionProvider does not send %s, which egress-authz reads", hdr)
		}
	}
	for _, hdr := range []string{"x-egress-authz-decision", "content-type"} {
		if !slices.Contains(h.GetHeadersToDownstreamOnDeny(), hdr) {
			p.errorf("HTTP extensionProvider does not pass the deny's %s to the caller", hdr)
		}
	}
	if len(h.GetHeadersToUpstreamOnAllow()) > 0 || len(h.GetHeadersToDownstreamOnAllow()) > 0 {
		p.errorf("HTTP extensionProvider passes headers of an allow on: the upstream is a third party")
	}

	dep := s.deployment(p)
	pod := s.podLabels(p)
	port := strconv.Itoa(int(listen))
	principal := s.gatewayPrincipal(p)
	if !s.inMesh(p) {
		found := false
		for _, o := range s.all("DestinationRule") {
			dr := o.Spec.(*networking.DestinationRule)
			for _, pl := range dr.GetTrafficPolicy().GetPortLevelSettings() {
				if dr.GetHost() == h.GetService() && pl.GetPort().GetNumber() == h.GetPort() {
					found = pl.GetTls().GetMode() == networking.ClientTLSSettings_ISTIO_MUTUAL
				}
			}
		}
		if !found {
			p.errorf("no DestinationRule sets ISTIO_MUTUAL for %s port %d: the gateway would call the out-of-mesh pods in plaintext", h.GetService(), h.GetPort())
		}
		return
	}
	allowed := false
	for _, o := range s.all("AuthorizationPolicy") {
		pol := o.Spec.(*security.AuthorizationPolicy)
		if o.Namespace != dep.Namespace || pol.GetAction() != security.AuthorizationPolicy_ALLOW ||
			!selects(&metav1.LabelSelector{MatchLabels: pol.GetSelector().GetMatchLabels()}, pod) {
			continue
		}
		for i, r := range pol.GetRules() {
			var ports, principals []string
			for _, to := range r.GetTo() {
				ports = append(ports, to.GetOperation().GetPorts()...)
			}
			if len(ports) > 0 && !slices.Contains(ports, port) {
				continue
			}
			for _, from := range r.GetFrom() {
				principals = append(principals, from.GetSource().GetPrincipals()...)
			}
			if !slices.Equal(principals, []string{principal}) {
				p.errorf("%s rule %d lets %q reach the HTTP authorization port %s; only the egress gateway (%s) may", o, i, principals, port, principal)
				continue
			}
			allowed = true
		}
	}
	if !allowed {
		p.errorf("no ALLOW AuthorizationPolicy lets the egress gateway (%s) reach the HTTP authorization port %s", principal, port)
	}
}

func checkGatewayPolicy(s *stack, p *problems) {
	o, pol := s.customPolicy(p)
	if o.Namespace != s.gatewayNamespace() {
		p.errorf("%s: a workload-selector policy applies only in its own namespace; the egress gateway runs in %s", o, s.gatewayNamespace())
	}
	want := pol.GetSelector().GetMatchLabels()
	if len(want) == 0 {
		p.errorf("%s: no selector; it would apply to every workload in %s", o, o.Namespace)
	}
	gws := s.all("Gateway")
	if len(gws) == 0 {
		p.errorf("no Gateway in the output")
	}
	for _, g := range gws {
		sel := g.Spec.(*networking.Gateway).GetSelector()
		for k, v := range want {
			if sel[k] != v {
				p.errorf("%s selects %v, which the CUSTOM policy (selector %v) does not cover", g, sel, want)
				break
			}
		}
	}
	if len(pol.GetRules()) == 0 {
		p.errorf("%s: a CUSTOM policy without rules matches nothing", o)
	}
	for i, r := range pol.GetRules() {
		for _, to := range r.GetTo() {
			op := to.GetOperation()
			if len(op.GetHosts())+len(op.GetNotHosts())+len(op.GetMethods())+len(op.GetNotMethods())+len(op.GetPaths())+len(op.GetNotPaths()) > 0 {
				p.errorf("%s rule %d names HTTP-only fields: Istio skips it for TLS-passthrough (TCP) traffic, which would then go unchecked", o, i)
			}
		}
		for _, from := range r.GetFrom() {
			if len(from.GetSource().GetRequestPrincipals())+len(from.GetSource().GetNotRequestPrincipals()) > 0 {
				p.errorf("%s rule %d names request principals, an HTTP-only field", o, i)
			}
		}
		if len(r.GetWhen()) > 0 {
			p.errorf("%s rule %d has conditions: every request and connection must be checked", o, i)
		}
	}
}

func checkCallers(s *stack, p *problems) {
	f := s.flags(p)
	dep := s.deployment(p)
	pod := s.podLabels(p)
	grpc := s.containerPort(p, "gRPC", s.grpcServicePort(p).TargetPort)
	principal := s.gatewayPrincipal(p)

	if !s.inMesh(p) {
		// Option B: egress-authz serves mutual TLS itself.
		if _, ok := f["plaintext"]; ok {
			p.errorf("no sidecar, yet --plaintext: anyone could call Check")
		}
		if got, want := f["allowed-clients"], []string{"spiffe://" + principal}; !slices.Equal(got, want) {
			p.errorf("--allowed-clients %q, want %q (the egress gateway)", got, want)
		}
		if sock, ok := f["spiffe-socket"]; ok {
			path := strings.TrimPrefix(sock[0], "unix://")
			_, v := s.mount(p, "--spiffe-socket", path, true)
			if v.CSI == nil || v.CSI.Driver != "csi.spiffe.io" {
				p.errorf("--spiffe-socket %s is not on a SPIFFE CSI driver volume", sock[0])
			}
		} else if _, ok := f["tls-cert"]; !ok {
			p.errorf("no sidecar and neither --spiffe-socket nor --tls-cert")
		}
		// The gateway must originate mutual TLS to the out-of-mesh pods.
		g := s.provider(p)
		var found bool
		for _, o := range s.all("DestinationRule") {
			dr := o.Spec.(*networking.DestinationRule)
			if dr.GetHost() != g.GetService() {
				continue
			}
			for _, pl := range dr.GetTrafficPolicy().GetPortLevelSettings() {
				if pl.GetPort().GetNumber() != g.GetPort() {
					continue
				}
				found = true
				if pl.GetTls().GetMode() != networking.ClientTLSSettings_ISTIO_MUTUAL {
					p.errorf("%s: port %d TLS mode %v, want ISTIO_MUTUAL", o, g.GetPort(), pl.GetTls().GetMode())
				}
				want := fmt.Sprintf("spiffe://%s/ns/%s/sa/%s", s.trustDomain(), dep.Namespace, dep.Spec.Template.Spec.ServiceAccountName)
				if !slices.Equal(pl.GetTls().GetSubjectAltNames(), []string{want}) {
					p.errorf("%s: subjectAltNames %q, want [%s] (egress-authz's ServiceAccount)", o, pl.GetTls().GetSubjectAltNames(), want)
				}
			}
		}
		if !found {
			p.errorf("no DestinationRule sets TLS for %s port %d: the gateway would call the out-of-mesh pods in plaintext", g.GetService(), g.GetPort())
		}
		return
	}

	// Option A: plaintext behind the sidecar; Istio authenticates the caller.
	if _, ok := f["plaintext"]; !ok {
		p.errorf("with a sidecar, serve --plaintext behind it (the sidecar terminates Istio's mutual TLS)")
	}
	strict := false
	for _, o := range s.all("PeerAuthentication") {
		pa := o.Spec.(*security.PeerAuthentication)
		if o.Namespace != dep.Namespace || !selects(&metav1.LabelSelector{MatchLabels: pa.GetSelector().GetMatchLabels()}, pod) {
			continue
		}
		strict = pa.GetMtls().GetMode() == security.PeerAuthentication_MutualTLS_STRICT
		for port, m := range pa.GetPortLevelMtls() {
			if port == uint32(grpc.ContainerPort) && m.GetMode() != security.PeerAuthentication_MutualTLS_STRICT {
				p.errorf("%s: the gRPC port %d must stay STRICT", o, port)
			}
			if !slices.ContainsFunc(s.container(p).Ports, func(cp corev1.ContainerPort) bool { return uint32(cp.ContainerPort) == port }) {
				p.errorf("%s: portLevelMtls for %d, which is not a container port", o, port)
			}
		}
	}
	if !strict {
		p.errorf("no STRICT PeerAuthentication selects the egress-authz pods")
	}
	grpcPort := strconv.Itoa(int(grpc.ContainerPort))
	allowed := false
	for _, o := range s.all("AuthorizationPolicy") {
		pol := o.Spec.(*security.AuthorizationPolicy)
		if o.Namespace != dep.Namespace || pol.GetAction() != security.AuthorizationPolicy_ALLOW ||
			!selects(&metav1.LabelSelector{MatchLabels: pol.GetSelector().GetMatchLabels()}, pod) {
			continue
		}
		for i, r := range pol.GetRules() {
			var ports []string
			for _, to := range r.GetTo() {
				ports = append(ports, to.GetOperation().GetPorts()...)
			}
			if len(ports) > 0 && !slices.Contains(ports, grpcPort) {
				continue // another port (admin)
			}
			var principals []string
			for _, from := range r.GetFrom() {
				principals = append(principals, from.GetSource().GetPrincipals()...)
			}
			if !slices.Equal(principals, []string{principal}) {
				p.errorf("%s rule %d lets %q call the gRPC port %s; only the egress gateway (%s) may", o, i, principals, grpcPort, principal)
				continue
			}
			allowed = true
		}
	}
	if !allowed {
		p.errorf("no ALLOW AuthorizationPolicy lets the egress gateway (%s) reach the gRPC port %s", principal, grpcPort)
	}
}

func checkRulesMount(s *stack, p *problems) {
	path := s.flag(p, "rules")
	if (&config.Config{Rules: path}).RulesFromBundle() {
		checkBundleSource(s, p, path)
		return
	}
	m, v := s.mount(p, "--rules", path, true)
	if v.ConfigMap == nil {
		p.fatalf("--rules %s: volume %s is not a ConfigMap", path, v.Name)
	}
	if !m.ReadOnly {
		p.errorf("--rules: mount %s is not readOnly", m.MountPath)
	}
	if m.SubPath != "" {
		p.errorf("--rules: a subPath mount never sees ConfigMap updates; mount the directory")
	}
	o := s.find("ConfigMap", s.deployment(p).Namespace, v.ConfigMap.Name)
	if o == nil {
		p.fatalf("--rules: the volume names ConfigMap %s, which is not in the output", v.ConfigMap.Name)
	}
	cm := o.Value.(*corev1.ConfigMap)
	dir, err := os.MkdirTemp("", "egress-authz-rules-")
	if err != nil {
		p.fatalf("%v", err)
	}
	defer os.RemoveAll(dir)
	for key, data := range cm.Data {
		if err := os.WriteFile(filepath.Join(dir, key), []byte(data), 0o644); err != nil {
			p.fatalf("%v", err)
		}
	}
	load := dir
	if m.MountPath != path { // a file inside the mount
		load = filepath.Join(dir, filepath.Base(path))
		if _, ok := cm.Data[filepath.Base(path)]; !ok {
			p.fatalf("--rules %s: ConfigMap %s has no key %s", path, cm.Name, filepath.Base(path))
		}
	}
	set, err := rules.Load(load)
	if err != nil {
		p.fatalf("--rules %s: ConfigMap %s as mounted: %v", path, cm.Name, err)
	}
	if len(set.Files) == 0 {
		p.errorf("--rules %s: ConfigMap %s holds no rule file", path, cm.Name)
	}
}

// checkBundleSource checks a Deployment that pulls its rules from a
// signed bundle: every --rules-public-key file is mounted, read-only, from
// a ConfigMap or Secret that holds an Ed25519 public key there; and in the
// mesh, a ServiceEntry visible in egress-authz's namespace lets the
// sidecar reach the source on 443, with no route sending it through the
// egress gateway (whose every request egress-authz decides).
func checkBundleSource(s *stack, p *problems, ref string) {
	keys := s.flags(p)["rules-public-key"]
	if len(keys) == 0 {
		p.errorf("--rules %s: no --rules-public-key", ref)
	}
	for _, key := range keys {
		m, v := s.mount(p, "--rules-public-key", key, true)
		if !m.ReadOnly {
			p.errorf("--rules-public-key: mount %s is not readOnly", m.MountPath)
		}
		file := strings.TrimPrefix(strings.TrimPrefix(key, m.MountPath), "/")
		var data string
		switch {
		case v.ConfigMap != nil:
			o := s.find("ConfigMap", s.deployment(p).Namespace, v.ConfigMap.Name)
			if o == nil {
				p.fatalf("--rules-public-key: the volume names ConfigMap %s, which is not in the output", v.ConfigMap.Name)
			}
			data = o.Value.(*corev1.ConfigMap).Data[file]
		case v.Secret != nil:
			continue // created by hand; nothing to read here
		default:
			p.fatalf("--rules-public-key %s: volume %s is neither a ConfigMap nor a Secret", key, v.Name)
		}
		if _, err := bundle.ParsePublicKeys([]byte(data)); err != nil {
			p.errorf("--rules-public-key %s: the ConfigMap %s has no public key at %s: %v", key, v.ConfigMap.Name, file, err)
		}
	}
	if !s.inMesh(p) {
		return
	}
	u, err := url.Parse(strings.Replace(ref, "oci://", "https://", 1))
	if err != nil {
		p.fatalf("--rules %s: %v", ref, err)
	}
	checkOwnWayOut(s, p, "--rules "+ref, "the bundle source", u.Hostname())
}

// checkOwnWayOut checks that egress-authz's sidecar can reach host on 443
// by itself: a ServiceEntry visible in its namespace names it, and no
// route sends it through the egress gateway (whose every request
// egress-authz decides).
func checkOwnWayOut(s *stack, p *problems, what, peer, host string) {
	ns := s.deployment(p).Namespace
	found := false
	for _, o := range s.all("ServiceEntry") {
		se := o.Spec.(*networking.ServiceEntry)
		visible := slices.Contains(se.GetExportTo(), "*") || len(se.GetExportTo()) == 0 ||
			slices.Contains(se.GetExportTo(), ns) || (o.Namespace == ns && slices.Contains(se.GetExportTo(), "."))
		if visible && slices.Contains(se.GetHosts(), host) && s.serviceEntryPort(se, 443) != nil {
			found = true
		}
	}
	if !found {
		p.errorf("%s: no ServiceEntry visible in namespace %s names %s with port 443: the sidecar cannot reach %s", what, ns, host, peer)
	}
	for _, o := range s.all("VirtualService") {
		if slices.Contains(o.Spec.(*networking.VirtualService).GetHosts(), host) {
			p.errorf("%s: %s routes %s; egress-authz's own traffic must not go through the egress gateway it decides for", what, o, host)
		}
	}
}

// checkDecisionLogBucket checks an s3:// decision log: the region and
// the credentials are where the AWS SDK looks (AWS_REGION, and the
// ServiceAccount's IAM role or keys from a Secret), the cluster is named,
// and in the mesh the sidecar can reach the bucket by itself.
func checkDecisionLogBucket(s *stack, p *problems) {
	ctr := s.container(p)
	env := map[string]corev1.EnvVar{}
	for _, e := range ctr.Env {
		env[e.Name] = e
	}
	for _, dsn := range s.flags(p)["audit"] {
		u, err := url.Parse(dsn)
		if err != nil || u.Scheme != "s3" {
			continue
		}
		if v := s.flags(p)["cluster"]; len(v) != 1 || v[0] == "" {
			if e, ok := env["EGRESS_AUTHZ_CLUSTER"]; !ok || e.Value == "" {
				p.errorf("--audit %s: no --cluster (or EGRESS_AUTHZ_CLUSTER): serve refuses to start", dsn)
			}
		}
		region := env["AWS_REGION"].Value
		if region == "" {
			p.errorf("--audit %s: no AWS_REGION in the container's env: the AWS SDK does not know where the bucket is", dsn)
		}
		dep := s.deployment(p)
		sa := s.find("ServiceAccount", dep.Namespace, dep.Spec.Template.Spec.ServiceAccountName)
		role := ""
		if sa != nil {
			role = sa.Value.(*corev1.ServiceAccount).Annotations["eks.amazonaws.com/role-arn"]
		}
		key, fromSecret := env["AWS_ACCESS_KEY_ID"]
		fromSecret = fromSecret && key.ValueFrom != nil && key.ValueFrom.SecretKeyRef != nil
		switch {
		case role == "" && !fromSecret:
			p.errorf("--audit %s: no credentials: annotate ServiceAccount %s with eks.amazonaws.com/role-arn, or take AWS_ACCESS_KEY_ID from a Secret", dsn, dep.Spec.Template.Spec.ServiceAccountName)
		case role != "" && !strings.HasPrefix(role, "arn:aws:iam::"):
			p.errorf("--audit %s: eks.amazonaws.com/role-arn %q is not an IAM role ARN", dsn, role)
		}
		if _, ok := env["AWS_SECRET_ACCESS_KEY"]; ok && (env["AWS_SECRET_ACCESS_KEY"].ValueFrom == nil || env["AWS_SECRET_ACCESS_KEY"].ValueFrom.SecretKeyRef == nil) {
			p.errorf("--audit %s: AWS_SECRET_ACCESS_KEY belongs in a Secret, not in the manifest", dsn)
		}
		if !s.inMesh(p) {
			continue
		}
		host := u.Host + ".s3." + region + ".amazonaws.com"
		if e := env["AWS_ENDPOINT_URL_S3"].Value; e != "" {
			eu, err := url.Parse(e)
			if err != nil {
				p.fatalf("AWS_ENDPOINT_URL_S3 %q: %v", e, err)
			}
			host = eu.Hostname()
		}
		checkOwnWayOut(s, p, "--audit "+dsn, "the bucket", host)
	}
}

func checkWritablePaths(s *stack, p *problems) {
	dataDir := s.flag(p, "data-dir")
	m, v := s.mount(p, "--data-dir", dataDir, false)
	if v.EmptyDir == nil && v.PersistentVolumeClaim == nil && v.Ephemeral == nil {
		p.errorf("--data-dir %s: volume %s is not writable storage (emptyDir or a claim)", dataDir, v.Name)
	}
	if m.ReadOnly {
		p.errorf("--data-dir %s is mounted readOnly", dataDir)
	}
	token := s.flag(p, "admin-token-file")
	m, v = s.mount(p, "--admin-token-file", token, true)
	if v.Secret == nil {
		p.fatalf("--admin-token-file %s: volume %s is not a Secret", token, v.Name)
	}
	if !m.ReadOnly {
		p.errorf("--admin-token-file: mount %s is not readOnly", m.MountPath)
	}
	file := strings.TrimPrefix(strings.TrimPrefix(token, m.MountPath), "/")
	if len(v.Secret.Items) > 0 && !slices.ContainsFunc(v.Secret.Items, func(k corev1.KeyToPath) bool { return k.Path == file }) {
		p.errorf("--admin-token-file %s: Secret volume %s projects no %s", token, v.Name, file)
	}
}

var envRef = regexp.MustCompile(`\$\(([A-Za-z_][A-Za-z0-9_]*)\)`)

func checkFlags(s *stack, p *problems) {
	ctr := s.container(p)
	env := map[string]corev1.EnvVar{}
	for _, e := range ctr.Env {
		env[e.Name] = e
	}
	args := slices.Clone(ctr.Args)
	for i, a := range args {
		for _, m := range envRef.FindAllStringSubmatch(a, -1) {
			e, ok := env[m[1]]
			if !ok {
				p.errorf("argument %q uses $(%s), which the container does not define: Kubernetes would pass it literally", a, m[1])
				continue
			}
			if e.ValueFrom == nil || e.ValueFrom.SecretKeyRef == nil {
				p.errorf("$(%s) in %q: want it from a Secret", m[1], a)
			}
		}
		// Stand-in values for the checks below.
		args[i] = envRef.ReplaceAllString(a, "postgres://egress_authz@postgres.example:5432/egress_authz?sslmode=verify-full")
	}
	for _, a := range s.flags(p)["audit"] {
		if !envRef.MatchString(a) && strings.Contains(a, "@") {
			p.errorf("--audit %q: the DSN belongs in a Secret, not in the manifest", a)
		}
	}
	fs := flag.NewFlagSet("serve", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	if _, err := config.FromArgs(fs, args[1:]); err != nil {
		p.errorf("egress-authz serve would refuse the container args: %v", err)
	}
}

func checkProbes(s *stack, p *problems) {
	ctr := s.container(p)
	host, port := s.flagPort(p, "admin-addr")
	if ip := net.ParseIP(host); host == "localhost" || (ip != nil && ip.IsLoopback()) {
		p.errorf("--admin-addr %s: the kubelet cannot probe a loopback address", host)
	}
	if _, ok := s.flags(p)["admin-token-file"]; !ok {
		p.errorf("--admin-addr off loopback needs --admin-token-file (serve refuses to start otherwise)")
	}
	handler := admin.Handler(admin.Options{Rules: func() rules.Status { return rules.Status{Version: "loaded"} }})
	for _, pr := range []struct {
		kind  string
		probe *corev1.Probe
		path  string
	}{
		{"readinessProbe", ctr.ReadinessProbe, "/readyz"},
		{"livenessProbe", ctr.LivenessProbe, "/healthz"},
	} {
		if pr.probe == nil || pr.probe.HTTPGet == nil {
			p.errorf("%s: want an httpGet probe", pr.kind)
			continue
		}
		get := pr.probe.HTTPGet
		if get.Path != pr.path {
			p.errorf("%s path %q, want %s", pr.kind, get.Path, pr.path)
		}
		if cp := s.containerPort(p, pr.kind, get.Port); cp.ContainerPort != port {
			p.errorf("%s probes container port %d, but --admin-addr listens on %d", pr.kind, cp.ContainerPort, port)
		}
		if get.Scheme != "" && get.Scheme != corev1.URISchemeHTTP {
			p.errorf("%s scheme %s: the admin listener serves HTTP", pr.kind, get.Scheme)
		}
		rec := httptest.NewRecorder()
		handler.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, get.Path, nil))
		if rec.Code != http.StatusOK {
			p.errorf("%s: the admin handler answers %s with %d", pr.kind, get.Path, rec.Code)
		}
	}
	// Not ready without a rule set.
	rec := httptest.NewRecorder()
	admin.Handler(admin.Options{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/readyz", nil))
	if rec.Code == http.StatusOK {
		p.errorf("/readyz is OK before any rule set is loaded")
	}
}

func checkHardening(s *stack, p *problems) {
	dep := s.deployment(p)
	pod := dep.Spec.Template.Spec
	ctr := s.container(p)
	sc := ctr.SecurityContext
	if sc == nil {
		p.fatalf("container %s has no securityContext", ctr.Name)
	}
	psc := pod.SecurityContext
	if psc == nil {
		psc = &corev1.PodSecurityContext{}
	}
	pick := func(c, p *int64) *int64 {
		if c != nil {
			return c
		}
		return p
	}
	if v := sc.RunAsNonRoot; (v == nil || !*v) && (psc.RunAsNonRoot == nil || !*psc.RunAsNonRoot) {
		p.errorf("runAsNonRoot is not set")
	}
	uid := dockerfileUID(p)
	if v := pick(sc.RunAsUser, psc.RunAsUser); v == nil {
		p.errorf("runAsUser is not set; want %d (the Dockerfile's USER)", uid)
	} else if *v != uid {
		p.errorf("runAsUser %d, want %d (the Dockerfile's USER)", *v, uid)
	}
	if v := sc.AllowPrivilegeEscalation; v == nil || *v {
		p.errorf("allowPrivilegeEscalation is not false")
	}
	if v := sc.ReadOnlyRootFilesystem; v == nil || !*v {
		p.errorf("readOnlyRootFilesystem is not true")
	}
	if v := sc.Privileged; v != nil && *v {
		p.errorf("privileged")
	}
	if sc.Capabilities == nil || !slices.Contains(sc.Capabilities.Drop, "ALL") || len(sc.Capabilities.Add) > 0 {
		p.errorf("capabilities: want drop [ALL] and nothing added")
	}
	seccomp := sc.SeccompProfile
	if seccomp == nil {
		seccomp = psc.SeccompProfile
	}
	if seccomp == nil || seccomp.Type == corev1.SeccompProfileTypeUnconfined {
		p.errorf("no seccomp profile (want RuntimeDefault)")
	}
	if pod.HostNetwork || pod.HostPID || pod.HostIPC {
		p.errorf("the pod shares a host namespace")
	}
	if v := pod.AutomountServiceAccountToken; v == nil || *v {
		p.errorf("automountServiceAccountToken is not false: egress-authz never calls the Kubernetes API")
	}
	req, lim := ctr.Resources.Requests, ctr.Resources.Limits
	if req.Cpu().IsZero() || req.Memory().IsZero() || lim.Memory().IsZero() {
		p.errorf("resources: want cpu and memory requests and a memory limit")
	}
	if s.dir != baseDir {
		if img := ctr.Image; !strings.Contains(img[strings.LastIndex(img, "/")+1:], ":") && !strings.Contains(img, "@") {
			p.errorf("image %q has no tag or digest", img)
		}
	}
}

// route is one VirtualService route, from whichever list it is in.
type route struct {
	gateways []string
	port     uint32
	sni      []string
	dests    []*networking.Destination
}

func vsRoutes(vs *networking.VirtualService) (kind string, routes []route) {
	dests := func(rds []*networking.RouteDestination) []*networking.Destination {
		var out []*networking.Destination
		for _, rd := range rds {
			out = append(out, rd.GetDestination())
		}
		return out
	}
	switch {
	case len(vs.GetHttp()) > 0 && len(vs.GetTls()) > 0:
		kind = "mixed"
	case len(vs.GetHttp()) > 0:
		kind = "http"
	case len(vs.GetTls()) > 0:
		kind = "tls"
	}
	for _, h := range vs.GetHttp() {
		for _, m := range h.GetMatch() {
			var ds []*networking.Destination
			for _, d := range h.GetRoute() {
				ds = append(ds, d.GetDestination())
			}
			routes = append(routes, route{gateways: m.GetGateways(), port: m.GetPort(), dests: ds})
		}
	}
	for _, t := range vs.GetTls() {
		for _, m := range t.GetMatch() {
			routes = append(routes, route{gateways: m.GetGateways(), port: m.GetPort(), sni: m.GetSniHosts(), dests: dests(t.GetRoute())})
		}
	}
	for _, t := range vs.GetTcp() {
		for _, m := range t.GetMatch() {
			routes = append(routes, route{gateways: m.GetGateways(), port: m.GetPort(), dests: dests(t.GetRoute())})
		}
	}
	return kind, routes
}

func checkRoutes(s *stack, p *problems) {
	gwHost := s.gatewayHost(p)
	vss := s.all("VirtualService")
	kinds := map[string]int{}
	for _, o := range vss {
		vs := o.Spec.(*networking.VirtualService)
		if len(vs.GetHosts()) != 1 {
			p.errorf("%s: route one external host per VirtualService", o)
			continue
		}
		host := vs.GetHosts()[0]
		exported := vs.GetExportTo()
		if len(exported) > 0 && !slices.Contains(exported, ".") && !slices.Contains(exported, "*") && !slices.Contains(exported, s.gatewayNamespace()) {
			p.errorf("%s: exportTo %v hides it from the egress gateway's namespace", o, exported)
		}
		se := s.serviceEntry(host)
		if se == nil {
			p.errorf("%s: no ServiceEntry for %s", o, host)
			continue
		}
		// The Gateway it binds to, besides mesh.
		var gwRef string
		for _, g := range vs.GetGateways() {
			if g != "mesh" {
				gwRef = g
			}
		}
		if !slices.Contains(vs.GetGateways(), "mesh") || gwRef == "" {
			p.errorf("%s: gateways %v, want mesh and the egress Gateway", o, vs.GetGateways())
			continue
		}
		if !strings.Contains(gwRef, "/") {
			gwRef = o.Namespace + "/" + gwRef
		}
		gwNS, gwName, _ := strings.Cut(gwRef, "/")
		gwObj := s.find("Gateway", gwNS, gwName)
		if gwObj == nil {
			p.errorf("%s: Gateway %s is not in the output", o, gwRef)
			continue
		}
		var srv *networking.Server
		for _, sv := range gwObj.Spec.(*networking.Gateway).GetServers() {
			if slices.Contains(sv.GetHosts(), host) || slices.Contains(sv.GetHosts(), "*/"+host) {
				srv = sv
			}
		}
		if srv == nil {
			p.errorf("%s: no server of %s serves host %s", o, gwObj, host)
			continue
		}
		if srv.GetTls().GetMode() != networking.ServerTLSSettings_ISTIO_MUTUAL {
			p.errorf("%s: server %s: TLS mode %v, want ISTIO_MUTUAL (without it egress-authz gets no caller identity)", gwObj, srv.GetPort().GetName(), srv.GetTls().GetMode())
		}
		kind, routes := vsRoutes(vs)
		var meshOK, gwOK bool
		for _, r := range routes {
			switch {
			case slices.Equal(r.gateways, []string{"mesh"}):
				meshOK = true
				s.checkMeshRoute(p, o, host, kind, r, srv, se)
				if len(r.dests) != 1 || r.dests[0].GetHost() != gwHost {
					p.errorf("%s: the mesh route goes to %v, want %s (the egress gateway)", o, r.dests, gwHost)
				}
			case len(r.gateways) == 1 && (r.gateways[0] == gwRef || o.Namespace+"/"+r.gateways[0] == gwRef):
				gwOK = true
				if r.port != srv.GetPort().GetNumber() {
					p.errorf("%s: the gateway route matches port %d, but the Gateway server listens on %d", o, r.port, srv.GetPort().GetNumber())
				}
				for _, d := range r.dests {
					if d.GetHost() != host {
						p.errorf("%s: the gateway route goes to %s, want %s", o, d.GetHost(), host)
					}
					sePort := s.serviceEntryPort(se, d.GetPort().GetNumber())
					if sePort == nil {
						p.errorf("%s: the gateway route goes to port %d, which ServiceEntry for %s does not list", o, d.GetPort().GetNumber(), host)
						continue
					}
					if kind == "http" {
						s.checkOrigination(p, o, host, d.GetPort().GetNumber())
					} else if sePort.GetProtocol() != "TLS" {
						p.errorf("%s: ServiceEntry port %d protocol %s, want TLS for passthrough", o, sePort.GetNumber(), sePort.GetProtocol())
					}
				}
			default:
				p.errorf("%s: a route matches gateways %v; want either [mesh] or [%s]", o, r.gateways, gwRef)
			}
		}
		if !meshOK || !gwOK {
			p.errorf("%s: want a route for the mesh (to the egress gateway) and one for the egress gateway (to %s)", o, host)
		}
		kinds[kind]++
	}
	if kinds["http"] == 0 || kinds["tls"] == 0 {
		p.errorf("want at least one TLS-origination (http) and one SNI-passthrough (tls) route, found %v", kinds)
	}
}

// checkMeshRoute checks the sidecar -> egress gateway hop of host's route:
// it must go to the Gateway server's port with Istio mutual TLS and the
// host as SNI.
func (s *stack) checkMeshRoute(p *problems, o *object, host, kind string, r route, srv *networking.Server, se *networking.ServiceEntry) {
	appPort := s.serviceEntryPort(se, r.port)
	switch {
	case appPort == nil:
		p.errorf("%s: the mesh route matches port %d, which the ServiceEntry for %s does not list", o, r.port, host)
	case kind == "http" && appPort.GetProtocol() != "HTTP":
		p.errorf("%s: port %d is %s in the ServiceEntry; TLS origination needs HTTP from the application", o, r.port, appPort.GetProtocol())
	}
	if kind == "http" && srv.GetPort().GetProtocol() != "HTTPS" {
		p.errorf("%s: Gateway server %s protocol %s, want HTTPS (mutual TLS terminated, HTTP inside)", o, srv.GetPort().GetName(), srv.GetPort().GetProtocol())
	}
	if kind == "tls" {
		if srv.GetPort().GetProtocol() != "TLS" {
			p.errorf("%s: Gateway server %s protocol %s, want TLS", o, srv.GetPort().GetName(), srv.GetPort().GetProtocol())
		}
		if !slices.Contains(r.sni, host) {
			p.errorf("%s: the mesh route matches SNI %v, not %s", o, r.sni, host)
		}
	}
	for _, d := range r.dests {
		if d.GetPort().GetNumber() != srv.GetPort().GetNumber() {
			p.errorf("%s: the mesh route goes to gateway port %d, but the Gateway server listens on %d", o, d.GetPort().GetNumber(), srv.GetPort().GetNumber())
		}
		tls := s.subsetTLS(p, d.GetHost(), d.GetSubset(), d.GetPort().GetNumber())
		if tls == nil {
			p.errorf("%s: no DestinationRule sets TLS for %s subset %q port %d: the sidecar -> gateway hop must be ISTIO_MUTUAL", o, d.GetHost(), d.GetSubset(), d.GetPort().GetNumber())
			continue
		}
		if tls.GetMode() != networking.ClientTLSSettings_ISTIO_MUTUAL {
			p.errorf("%s: subset %q port %d TLS mode %v, want ISTIO_MUTUAL", o, d.GetSubset(), d.GetPort().GetNumber(), tls.GetMode())
		}
		if tls.GetSni() != host {
			p.errorf("%s: subset %q sends SNI %q, want %s (the Gateway server picks the host by it)", o, d.GetSubset(), tls.GetSni(), host)
		}
	}
}

// checkOrigination checks the gateway's TLS to the external host.
func (s *stack) checkOrigination(p *problems, o *object, host string, port uint32) {
	for _, dro := range s.all("DestinationRule") {
		dr := dro.Spec.(*networking.DestinationRule)
		if dr.GetHost() != host {
			continue
		}
		for _, pl := range dr.GetTrafficPolicy().GetPortLevelSettings() {
			if pl.GetPort().GetNumber() != port {
				continue
			}
			if m := pl.GetTls().GetMode(); m != networking.ClientTLSSettings_SIMPLE && m != networking.ClientTLSSettings_MUTUAL {
				p.errorf("%s: TLS mode %v to %s:%d; TLS origination needs SIMPLE", dro, m, host, port)
			}
			if sni := pl.GetTls().GetSni(); sni != "" && sni != host {
				p.errorf("%s: SNI %q to %s", dro, sni, host)
			}
			return
		}
	}
	p.errorf("%s: no DestinationRule originates TLS to %s:%d", o, host, port)
}

func (s *stack) serviceEntry(host string) *networking.ServiceEntry {
	for _, o := range s.all("ServiceEntry") {
		if se := o.Spec.(*networking.ServiceEntry); slices.Contains(se.GetHosts(), host) {
			return se
		}
	}
	return nil
}

func (s *stack) serviceEntryPort(se *networking.ServiceEntry, n uint32) *networking.ServicePort {
	for _, sp := range se.GetPorts() {
		if sp.GetNumber() == n {
			return sp
		}
	}
	return nil
}

// subsetTLS is the client TLS a DestinationRule sets for host's subset on
// port: the subset's port-level setting, else the subset's, else the
// DestinationRule's.
func (s *stack) subsetTLS(p *problems, host, subset string, port uint32) *networking.ClientTLSSettings {
	portTLS := func(tp *networking.TrafficPolicy) *networking.ClientTLSSettings {
		for _, pl := range tp.GetPortLevelSettings() {
			if pl.GetPort().GetNumber() == port && pl.GetTls() != nil {
				return pl.GetTls()
			}
		}
		return tp.GetTls()
	}
	for _, o := range s.all("DestinationRule") {
		dr := o.Spec.(*networking.DestinationRule)
		if dr.GetHost() != host {
			continue
		}
		if subset == "" {
			return portTLS(dr.GetTrafficPolicy())
		}
		for _, ss := range dr.GetSubsets() {
			if ss.GetName() == subset {
				if tls := portTLS(ss.GetTrafficPolicy()); tls != nil {
					return tls
				}
				return portTLS(dr.GetTrafficPolicy())
			}
		}
	}
	return nil
}

// checkRoutesHaveRules: a host routed through the gateway with nothing in
// the example rules allowing it would only ever be denied; an SNI route
// needs a rule that can match TLS passthrough (no methods or paths).
func checkRoutesHaveRules(s *stack, p *problems) {
	for _, o := range s.all("VirtualService") {
		vs := o.Spec.(*networking.VirtualService)
		kind, _ := vsRoutes(vs)
		for _, host := range vs.GetHosts() {
			ok := slices.ContainsFunc(s.example.Rules, func(r *rules.Rule) bool {
				return r.Action == rules.Allow && hostMatches(r.Hosts, host) && (kind != "tls" || !r.HTTPOnly())
			})
			if !ok {
				p.errorf("%s routes %s (%s), but no allow rule in %s can match it", o, host, kind, exampleRules)
			}
		}
	}
}

func hostMatches(patterns []string, host string) bool {
	if len(patterns) == 0 {
		return true
	}
	for _, pat := range patterns {
		if pat == "*" || strings.EqualFold(pat, host) ||
			(strings.HasPrefix(pat, "*.") && strings.HasSuffix(strings.ToLower(host), strings.ToLower(pat[1:]))) {
			return true
		}
	}
	return false
}
