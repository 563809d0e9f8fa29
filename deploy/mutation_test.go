package deploy_test

// The cross-reference checks must notice a name or port changed on one side
// only. Each case takes a freshly rendered overlay, changes one thing, and
// expects at least one check to complain.

import (
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/types/known/durationpb"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/egress-authz/egress-authz/rules"
)

func mDeployment(s *stack) *appsv1.Deployment {
	return s.find("Deployment", "", "egress-authz").Value.(*appsv1.Deployment)
}

func mContainer(s *stack) *corev1.Container {
	return &mDeployment(s).Spec.Template.Spec.Containers[0]
}

func mService(s *stack) *corev1.Service { return s.all("Service")[0].Value.(*corev1.Service) }

func mPort(c *corev1.Container, name string) *corev1.ContainerPort {
	for i := range c.Ports {
		if c.Ports[i].Name == name {
			return &c.Ports[i]
		}
	}
	panic("no container port " + name)
}

func mMount(c *corev1.Container, name string) *corev1.VolumeMount {
	for i := range c.VolumeMounts {
		if c.VolumeMounts[i].Name == name {
			return &c.VolumeMounts[i]
		}
	}
	panic("no volume mount " + name)
}

func mVolume(s *stack, name string) *corev1.Volume {
	vols := mDeployment(s).Spec.Template.Spec.Volumes
	for i := range vols {
		if vols[i].Name == name {
			return &vols[i]
		}
	}
	panic("no volume " + name)
}

// mSetArg replaces the value of --name, or appends --name=value.
func mSetArg(s *stack, name, value string) {
	c := mContainer(s)
	for i, a := range c.Args {
		if strings.HasPrefix(a, "--"+name+"=") || a == "--"+name {
			c.Args[i] = "--" + name + "=" + value
			return
		}
	}
	c.Args = append(c.Args, "--"+name+"="+value)
}

func mIstio[T any](s *stack, kind, namespace, name string) T {
	o := s.find(kind, namespace, name)
	if o == nil {
		panic("no " + kind + " " + namespace + "/" + name)
	}
	return o.Spec.(T)
}

func mGatewayDR(s *stack) *networking.DestinationRule {
	return mIstio[*networking.DestinationRule](s, "DestinationRule", "istio-system", "istio-egressgateway")
}

func mCustom(s *stack) *security.AuthorizationPolicy {
	return mIstio[*security.AuthorizationPolicy](s, "AuthorizationPolicy", "istio-system", "egress-authz")
}

func mAllow(s *stack) *security.AuthorizationPolicy {
	return mIstio[*security.AuthorizationPolicy](s, "AuthorizationPolicy", "egress-authz", "egress-authz")
}

func TestChecksCatchOneSidedChanges(t *testing.T) {
	for _, tc := range []struct {
		name   string
		dir    string
		mutate func(s *stack)
	}{
		// Service, Deployment, flags, extensionProvider, policies: the gRPC port.
		{"Service gRPC port", overlayA, func(s *stack) { mService(s).Spec.Ports[0].Port = 9190 }},
		{"Service gRPC port name", overlayA, func(s *stack) { mService(s).Spec.Ports[0].Name = "tcp-ext-authz" }},
		{"Service targetPort", overlayA, func(s *stack) { mService(s).Spec.Ports[0].TargetPort = intstr.FromString("grpc-x") }},
		{"Service name", overlayA, func(s *stack) { mService(s).Name = "authz" }},
		{"Service namespace", overlayA, func(s *stack) { s.all("Service")[0].Namespace = "other"; mService(s).Namespace = "other" }},
		{"Service selector", overlayA, func(s *stack) { mService(s).Spec.Selector = map[string]string{"app.kubernetes.io/name": "authz"} }},
		{"container gRPC port number", overlayA, func(s *stack) { mPort(mContainer(s), "grpc").ContainerPort = 9190 }},
		{"container gRPC port name", overlayA, func(s *stack) { mPort(mContainer(s), "grpc").Name = "rpc" }},
		{"--grpc-addr", overlayA, func(s *stack) { mSetArg(s, "grpc-addr", ":9292") }},
		{"extensionProvider port", overlayA, func(s *stack) { s.mesh.ExtensionProviders[0].GetEnvoyExtAuthzGrpc().Port = 9190 }},
		{"extensionProvider service", overlayA, func(s *stack) {
			s.mesh.ExtensionProviders[0].GetEnvoyExtAuthzGrpc().Service = "egress-authz.other.svc.cluster.local"
		}},
		{"extensionProvider name", overlayA, func(s *stack) { s.mesh.ExtensionProviders[0].Name = "ext-authz" }},
		{"extensionProvider fails open", overlayA, func(s *stack) { s.mesh.ExtensionProviders[0].GetEnvoyExtAuthzGrpc().FailOpen = true }},
		{"extensionProvider without timeout", overlayA, func(s *stack) { s.mesh.ExtensionProviders[0].GetEnvoyExtAuthzGrpc().Timeout = nil }},
		{"extensionProvider timeout 600s", overlayA, func(s *stack) {
			s.mesh.ExtensionProviders[0].GetEnvoyExtAuthzGrpc().Timeout = durationpb.New(600e9)
		}},
		// The HTTP extensionProvider and the --http-addr listener.
		{"HTTP provider fails open", overlayA, func(s *stack) { s.mesh.ExtensionProviders[1].GetEnvoyExtAuthzHttp().FailOpen = true }},
		{"HTTP provider without timeout", overlayA, func(s *stack) { s.mesh.ExtensionProviders[1].GetEnvoyExtAuthzHttp().Timeout = nil }},
		{"HTTP provider statusOnError 403", overlayA, func(s *stack) { s.mesh.ExtensionProviders[1].GetEnvoyExtAuthzHttp().StatusOnError = "403" }},
		{"HTTP provider pathPrefix", overlayA, func(s *stack) { s.mesh.ExtensionProviders[1].GetEnvoyExtAuthzHttp().PathPrefix = "/check" }},
		{"HTTP provider port", overlayA, func(s *stack) { s.mesh.ExtensionProviders[1].GetEnvoyExtAuthzHttp().Port = 9192 }},
		{"HTTP provider without XFCC", overlayA, func(s *stack) {
			s.mesh.ExtensionProviders[1].GetEnvoyExtAuthzHttp().IncludeRequestHeadersInCheck = []string{"x-forwarded-proto", "x-request-id"}
		}},
		{"HTTP provider passes an allow's headers upstream", overlayA, func(s *stack) {
			s.mesh.ExtensionProviders[1].GetEnvoyExtAuthzHttp().HeadersToUpstreamOnAllow = []string{"x-egress-authz-decision"}
		}},
		{"--http-addr", overlayA, func(s *stack) { mSetArg(s, "http-addr", ":9194") }},
		{"container HTTP authorization port", overlayA, func(s *stack) { mPort(mContainer(s), "http-authz").ContainerPort = 9194 }},
		{"ALLOW policy HTTP port open to all", overlayA, func(s *stack) {
			mAllow(s).Rules[0].To[0].Operation.Ports = []string{"9191"}
			mAllow(s).Rules = append(mAllow(s).Rules, &security.Rule{To: []*security.Rule_To{{Operation: &security.Operation{Ports: []string{"9193"}}}}})
		}},
		{"B: DestinationRule HTTP port", overlayB, func(s *stack) {
			mIstio[*networking.DestinationRule](s, "DestinationRule", "egress-authz", "egress-authz").TrafficPolicy.PortLevelSettings[1].Tls.Mode = networking.ClientTLSSettings_DISABLE
		}},
		{"CUSTOM policy provider", overlayA, func(s *stack) { mCustom(s).GetProvider().Name = "ext-authz" }},
		{"CUSTOM policy selector", overlayA, func(s *stack) { mCustom(s).Selector.MatchLabels["istio"] = "ingressgateway" }},
		{"CUSTOM policy namespace", overlayA, func(s *stack) { s.find("AuthorizationPolicy", "istio-system", "egress-authz").Namespace = "egress" }},
		{"CUSTOM policy HTTP-only rule", overlayA, func(s *stack) {
			mCustom(s).Rules[0].To = []*security.Rule_To{{Operation: &security.Operation{Hosts: []string{"api.stripe.com"}}}}
		}},
		{"ALLOW policy port", overlayA, func(s *stack) { mAllow(s).Rules[0].To[0].Operation.Ports = []string{"9190"} }},
		{"ALLOW policy principal", overlayA, func(s *stack) {
			mAllow(s).Rules[0].From[0].Source.Principals = []string{"cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"}
		}},
		{"ALLOW policy open to all", overlayA, func(s *stack) { mAllow(s).Rules[0].From = nil }},
		{"PeerAuthentication permissive", overlayA, func(s *stack) {
			mIstio[*security.PeerAuthentication](s, "PeerAuthentication", "egress-authz", "egress-authz").Mtls.Mode = security.PeerAuthentication_MutualTLS_PERMISSIVE
		}},
		{"sidecar injection off, still plaintext", overlayA, func(s *stack) {
			s.find("Namespace", "", "egress-authz").Value.(*corev1.Namespace).Labels["istio-injection"] = "disabled"
		}},

		// The rule set.
		{"rules mountPath", overlayA, func(s *stack) { mMount(mContainer(s), "rules").MountPath = "/etc/rules" }},
		{"--rules", overlayA, func(s *stack) { mSetArg(s, "rules", "/etc/egress-authz/policy") }},
		{"rules ConfigMap name", overlayA, func(s *stack) { mVolume(s, "rules").ConfigMap.Name = "rules" }},
		{"rules ConfigMap broken", overlayA, func(s *stack) {
			s.find("ConfigMap", "", "egress-authz-rules").Value.(*corev1.ConfigMap).Data["rules.yaml"] += "\n  - id: Bad_ID\n"
		}},
		{"routed host without a rule", overlayA, func(s *stack) {
			var keep []*rules.Rule
			for _, r := range s.example.Rules {
				if r.ID != "notify-sendgrid" {
					keep = append(keep, r)
				}
			}
			s.example.Rules = keep
		}},

		// Admin port, probes, paths, flags.
		{"readiness path", overlayA, func(s *stack) { mContainer(s).ReadinessProbe.HTTPGet.Path = "/ready" }},
		{"liveness path", overlayA, func(s *stack) { mContainer(s).LivenessProbe.HTTPGet.Path = "/livez" }},
		{"liveness port", overlayA, func(s *stack) { mContainer(s).LivenessProbe.HTTPGet.Port = intstr.FromInt32(9193) }},
		{"container admin port number", overlayA, func(s *stack) { mPort(mContainer(s), "admin").ContainerPort = 9193 }},
		{"--admin-addr on loopback", overlayA, func(s *stack) { mSetArg(s, "admin-addr", "127.0.0.1:9192") }},
		{"--admin-token-file", overlayA, func(s *stack) { mSetArg(s, "admin-token-file", "/var/run/secrets/token") }},
		{"--data-dir", overlayA, func(s *stack) { mSetArg(s, "data-dir", "/data") }},
		{"data volume mountPath", overlayA, func(s *stack) { mMount(mContainer(s), "data").MountPath = "/var/lib/data" }},
		{"DSN env var renamed", overlayA, func(s *stack) { mContainer(s).Env[0].Name = "DSN" }},
		{"unknown serve flag", overlayA, func(s *stack) { mSetArg(s, "rule", "/etc/egress-authz/rules") }},
		{"DSN in the manifest", overlayA, func(s *stack) { mSetArg(s, "audit", "postgres://u:secret@db/egress") }},

		// Workload selection and hardening.
		{"HPA target", overlayA, func(s *stack) {
			s.all("HorizontalPodAutoscaler")[0].Value.(*autoscalingv2.HorizontalPodAutoscaler).Spec.ScaleTargetRef.Name = "authz"
		}},
		{"PDB selector", overlayA, func(s *stack) {
			s.all("PodDisruptionBudget")[0].Value.(*policyv1.PodDisruptionBudget).Spec.Selector.MatchLabels["app.kubernetes.io/name"] = "authz"
		}},
		{"pod labels", overlayA, func(s *stack) { mDeployment(s).Spec.Template.Labels["app.kubernetes.io/name"] = "authz" }},
		{"ServiceAccount name", overlayA, func(s *stack) { mDeployment(s).Spec.Template.Spec.ServiceAccountName = "authz" }},
		{"one replica", overlayA, func(s *stack) { one := int32(1); mDeployment(s).Spec.Replicas = &one }},
		{"runAsUser", overlayA, func(s *stack) { root := int64(0); mContainer(s).SecurityContext.RunAsUser = &root }},
		{"writable root", overlayA, func(s *stack) { f := false; mContainer(s).SecurityContext.ReadOnlyRootFilesystem = &f }},

		// Egress routes.
		{"Gateway selector", overlayA, func(s *stack) {
			mIstio[*networking.Gateway](s, "Gateway", "istio-system", "egress-api-stripe-com").Selector["istio"] = "ingressgateway"
		}},
		{"Gateway server port", overlayA, func(s *stack) {
			mIstio[*networking.Gateway](s, "Gateway", "istio-system", "egress-api-stripe-com").Servers[0].Port.Number = 8080
		}},
		{"Gateway server host", overlayA, func(s *stack) {
			mIstio[*networking.Gateway](s, "Gateway", "istio-system", "egress-api-sendgrid-com").Servers[0].Hosts = []string{"sendgrid.com"}
		}},
		{"Gateway passthrough loses identity", overlayA, func(s *stack) {
			mIstio[*networking.Gateway](s, "Gateway", "istio-system", "egress-api-sendgrid-com").Servers[0].Tls.Mode = networking.ServerTLSSettings_PASSTHROUGH
		}},
		{"DestinationRule subset name", overlayA, func(s *stack) { mGatewayDR(s).Subsets[0].Name = "stripe" }},
		{"DestinationRule SNI", overlayA, func(s *stack) {
			mGatewayDR(s).Subsets[1].TrafficPolicy.PortLevelSettings[0].Tls.Sni = "sendgrid.com"
		}},
		{"sidecar hop without mutual TLS", overlayA, func(s *stack) {
			mGatewayDR(s).Subsets[0].TrafficPolicy.PortLevelSettings[0].Tls.Mode = networking.ClientTLSSettings_DISABLE
		}},
		{"DestinationRule gateway host", overlayA, func(s *stack) { mGatewayDR(s).Host = "egressgateway.istio-system.svc.cluster.local" }},
		{"VirtualService gateway reference", overlayA, func(s *stack) {
			vs := mIstio[*networking.VirtualService](s, "VirtualService", "istio-system", "api-stripe-com")
			vs.Gateways[1] = "istio-system/egress-stripe"
		}},
		{"VirtualService mesh port", overlayA, func(s *stack) {
			mIstio[*networking.VirtualService](s, "VirtualService", "istio-system", "api-stripe-com").Http[0].Route[0].Destination.Port.Number = 443
		}},
		{"VirtualService hidden from gateway", overlayA, func(s *stack) {
			mIstio[*networking.VirtualService](s, "VirtualService", "istio-system", "api-sendgrid-com").ExportTo = []string{"notify"}
		}},
		{"ServiceEntry origination port", overlayA, func(s *stack) {
			mIstio[*networking.ServiceEntry](s, "ServiceEntry", "istio-system", "api-stripe-com").Ports[1].Number = 8443
		}},
		{"origination DestinationRule port", overlayA, func(s *stack) {
			mIstio[*networking.DestinationRule](s, "DestinationRule", "istio-system", "api-stripe-com").TrafficPolicy.PortLevelSettings[0].Port.Number = 8443
		}},
		{"SNI route host", overlayA, func(s *stack) {
			mIstio[*networking.VirtualService](s, "VirtualService", "istio-system", "api-sendgrid-com").Tls[0].Match[0].SniHosts = []string{"sendgrid.com"}
		}},

		// Option B.
		{"B: --allowed-clients", overlayB, func(s *stack) {
			mSetArg(s, "allowed-clients", "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account")
		}},
		{"B: --spiffe-socket outside the CSI mount", overlayB, func(s *stack) { mSetArg(s, "spiffe-socket", "unix:///run/spire/agent.sock") }},
		{"B: plaintext", overlayB, func(s *stack) { mSetArg(s, "plaintext", "true") }},
		{"B: DestinationRule SAN", overlayB, func(s *stack) {
			mIstio[*networking.DestinationRule](s, "DestinationRule", "egress-authz", "egress-authz").TrafficPolicy.PortLevelSettings[0].Tls.SubjectAltNames = []string{"spiffe://cluster.local/ns/egress-authz/sa/default"}
		}},
		{"B: DestinationRule port", overlayB, func(s *stack) {
			mIstio[*networking.DestinationRule](s, "DestinationRule", "egress-authz", "egress-authz").TrafficPolicy.PortLevelSettings[0].Port.Number = 9190
		}},
		{"B: Service gRPC port", overlayB, func(s *stack) { mService(s).Spec.Ports[0].Port = 9190 }},

		// The fleet: the bundle source and its key.
		{"fleet: no public key", overlayFleet, func(s *stack) {
			c := mContainer(s)
			c.Args = slices.DeleteFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--rules-public-key=") })
		}},
		{"fleet: public key outside the mount", overlayFleet, func(s *stack) {
			mSetArg(s, "rules-public-key", "/etc/egress-authz/rules-signing.pub")
		}},
		{"fleet: public key file name", overlayFleet, func(s *stack) {
			mSetArg(s, "rules-public-key", "/etc/egress-authz/keys/signing.pub")
		}},
		{"fleet: registry host", overlayFleet, func(s *stack) {
			mSetArg(s, "rules", "oci://registry.other.example/platform/egress-rules:prod")
		}},
		{"fleet: registry ServiceEntry hidden", overlayFleet, func(s *stack) {
			mIstio[*networking.ServiceEntry](s, "ServiceEntry", "egress-authz", "rules-registry").ExportTo = []string{"istio-system"}
		}},
		{"fleet: plain http source", overlayFleet, func(s *stack) {
			mSetArg(s, "rules", "http://registry.example.com/egress-rules/bundle.tar.gz")
		}},
		// The fleet: the decision log's bucket.
		{"fleet: no cluster", overlayFleet, func(s *stack) {
			c := mContainer(s)
			c.Args = slices.DeleteFunc(c.Args, func(a string) bool { return strings.HasPrefix(a, "--cluster=") })
		}},
		{"fleet: no region", overlayFleet, func(s *stack) {
			c := mContainer(s)
			c.Env = slices.DeleteFunc(c.Env, func(e corev1.EnvVar) bool { return e.Name == "AWS_REGION" })
		}},
		{"fleet: no IAM role", overlayFleet, func(s *stack) {
			delete(s.find("ServiceAccount", "egress-authz", "egress-authz").Value.(*corev1.ServiceAccount).Annotations, "eks.amazonaws.com/role-arn")
		}},
		{"fleet: another bucket", overlayFleet, func(s *stack) {
			mSetArg(s, "audit", "s3://other-decisions/fleet")
		}},
		{"fleet: bucket ServiceEntry hidden", overlayFleet, func(s *stack) {
			mIstio[*networking.ServiceEntry](s, "ServiceEntry", "egress-authz", "decision-log-bucket").ExportTo = []string{"istio-system"}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, tc.dir)
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Fatalf("the change cannot be made to %s (%v): have the manifests changed? TestCrossReferences says more", tc.dir, r)
					}
				}()
				tc.mutate(s)
			}()
			var found []string
			for _, c := range checks {
				for _, msg := range runCheck(c, s) {
					found = append(found, c.name+": "+msg)
				}
			}
			if len(found) == 0 {
				t.Fatal("no check noticed")
			}
			t.Log(found[0])
		})
	}
}
