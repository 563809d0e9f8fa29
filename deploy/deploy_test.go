package deploy_test

// Loading and strict decoding of the manifests, and the kustomize renders
// the other tests check. Paths are relative to deploy/, the directory the
// tests run in.

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networking "istio.io/api/networking/v1alpha3"
	security "istio.io/api/security/v1beta1"
	istionet "istio.io/client-go/pkg/apis/networking/v1"
	istiosec "istio.io/client-go/pkg/apis/security/v1"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	k8syaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/kustomize/api/krusty"
	kusttypes "sigs.k8s.io/kustomize/api/types"
	"sigs.k8s.io/kustomize/kyaml/filesys"
	"sigs.k8s.io/yaml"

	"github.com/egress-authz/egress-authz/rules"
)

const (
	baseDir      = "kubernetes/base"
	overlayA     = "kubernetes/overlays/example"      // option A: in the mesh
	overlayB     = "kubernetes/overlays/outside-mesh" // option B: SPIFFE mTLS
	overlayFleet = "kubernetes/overlays/fleet"        // option A, rules from a signed bundle
	istioDir     = "istio"
	meshValues   = "istio/mesh/istiod-values.yaml"
	meshOperator = "istio/mesh/istio-operator.yaml"
	exampleRules = "examples/rules.yaml"
	baseRules    = "kubernetes/base/rules.yaml"
)

// object is one decoded manifest.
type object struct {
	Source     string // file (and document) or kustomization it came from
	APIVersion string
	Kind       string
	Namespace  string
	Name       string
	// Value is the decoded object: *appsv1.Deployment, *istionet.Gateway, ...
	Value any
	// Spec is an Istio object's spec, decoded strictly by protojson; nil
	// for Kubernetes objects.
	Spec proto.Message
	// YAML is the document Value was decoded from.
	YAML []byte
}

func (o *object) String() string {
	return fmt.Sprintf("%s %s/%s (%s)", o.Kind, o.Namespace, o.Name, o.Source)
}

// decoder decodes one document strictly: an unknown or duplicate field is an
// error.
type decoder func(doc []byte) (value any, spec proto.Message, err error)

// kube decodes a Kubernetes object into its API type.
func kube[T any]() decoder {
	return func(doc []byte) (any, proto.Message, error) {
		v := new(T)
		return v, nil, yaml.UnmarshalStrict(doc, v)
	}
}

// istio decodes an Istio object: the envelope (apiVersion, kind, metadata,
// spec, status) with the client-go type, as the API server's schema would,
// and then the spec with protojson, strictly. The client-go types decode the
// spec with Istio's own JSON unmarshaler, which ignores unknown fields: a
// misspelt field there would silently mean nothing.
func istio[T any, S any, PS interface {
	*S
	proto.Message
}]() decoder {
	return func(doc []byte) (any, proto.Message, error) {
		v := new(T)
		if err := yaml.UnmarshalStrict(doc, v); err != nil {
			return nil, nil, err
		}
		var env struct {
			Spec json.RawMessage `json:"spec"`
		}
		if err := yaml.Unmarshal(doc, &env); err != nil {
			return nil, nil, err
		}
		if len(env.Spec) == 0 {
			return nil, nil, errors.New("no spec")
		}
		spec := PS(new(S))
		if err := protojson.Unmarshal(env.Spec, spec); err != nil {
			return nil, nil, fmt.Errorf("spec: %w", err)
		}
		return v, spec, nil
	}
}

// decoders knows every apiVersion/kind this directory may ship. A manifest
// of another kind fails the tests until its type is added here.
var decoders = map[string]decoder{
	"v1/Namespace":                                  kube[corev1.Namespace](),
	"v1/ServiceAccount":                             kube[corev1.ServiceAccount](),
	"v1/Service":                                    kube[corev1.Service](),
	"v1/ConfigMap":                                  kube[corev1.ConfigMap](),
	"apps/v1/Deployment":                            kube[appsv1.Deployment](),
	"policy/v1/PodDisruptionBudget":                 kube[policyv1.PodDisruptionBudget](),
	"autoscaling/v2/HorizontalPodAutoscaler":        kube[autoscalingv2.HorizontalPodAutoscaler](),
	"kustomize.config.k8s.io/v1beta1/Kustomization": kube[kusttypes.Kustomization](),
	"networking.istio.io/v1/Gateway":                istio[istionet.Gateway, networking.Gateway](),
	"networking.istio.io/v1/VirtualService":         istio[istionet.VirtualService, networking.VirtualService](),
	"networking.istio.io/v1/DestinationRule":        istio[istionet.DestinationRule, networking.DestinationRule](),
	"networking.istio.io/v1/ServiceEntry":           istio[istionet.ServiceEntry, networking.ServiceEntry](),
	"security.istio.io/v1/AuthorizationPolicy":      istio[istiosec.AuthorizationPolicy, security.AuthorizationPolicy](),
	"security.istio.io/v1/PeerAuthentication":       istio[istiosec.PeerAuthentication, security.PeerAuthentication](),
}

// decodeAll decodes every document of a YAML stream. Empty documents (only
// comments) are skipped.
func decodeAll(source string, data []byte) ([]*object, error) {
	r := k8syaml.NewYAMLReader(bufio.NewReader(bytes.NewReader(data)))
	var out []*object
	for i := 0; ; i++ {
		doc, err := r.Read()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", source, err)
		}
		var head struct {
			metav1.TypeMeta `json:",inline"`
			Metadata        struct {
				Name      string `json:"name"`
				Namespace string `json:"namespace"`
			} `json:"metadata"`
		}
		var fields map[string]any
		if err := yaml.Unmarshal(doc, &fields); err != nil {
			return nil, fmt.Errorf("%s, document %d: %w", source, i+1, err)
		}
		if fields == nil {
			continue
		}
		if err := yaml.Unmarshal(doc, &head); err != nil {
			return nil, fmt.Errorf("%s, document %d: %w", source, i+1, err)
		}
		src := source
		if i > 0 {
			src = fmt.Sprintf("%s, document %d", source, i+1)
		}
		gvk := head.APIVersion + "/" + head.Kind
		dec, ok := decoders[gvk]
		if !ok {
			return nil, fmt.Errorf("%s: no API type for %q: add it to decoders", src, gvk)
		}
		value, spec, err := dec(doc)
		if err != nil {
			return nil, fmt.Errorf("%s: %s %q: %w", src, gvk, head.Metadata.Name, err)
		}
		out = append(out, &object{
			Source: src, APIVersion: head.APIVersion, Kind: head.Kind,
			Namespace: head.Metadata.Namespace, Name: head.Metadata.Name,
			Value: value, Spec: spec, YAML: doc,
		})
	}
}

// manifestFiles lists the Kubernetes and Istio manifests in the tree: every
// YAML file under kubernetes/ and istio/ except the rule file and the mesh
// configuration (which are not Kubernetes objects; they have tests of their
// own).
func manifestFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	for _, root := range []string{"kubernetes", "istio"} {
		err := filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
			if err != nil {
				return err
			}
			if d.IsDir() || (filepath.Ext(path) != ".yaml" && filepath.Ext(path) != ".yml") {
				return nil
			}
			if path == baseRules || filepath.Dir(path) == filepath.Dir(meshValues) {
				return nil
			}
			files = append(files, path)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	return files
}

// render runs kustomize on dir the way kubectl apply -k does (files only
// from inside the kustomization's root) and decodes the result.
func render(t *testing.T, dir string) []*object {
	t.Helper()
	data, err := renderYAML(dir)
	if err != nil {
		t.Fatal(err)
	}
	objs, err := decodeAll("kustomize build "+dir, data)
	if err != nil {
		t.Fatal(err)
	}
	return objs
}

// rendered caches renderYAML's output: kustomize is slow enough that the
// mutation tests would notice rendering once per case.
var rendered = map[string][]byte{}

func renderYAML(dir string) ([]byte, error) {
	if data, ok := rendered[dir]; ok {
		return data, nil
	}
	opts := krusty.MakeDefaultOptions()
	if opts.LoadRestrictions != kusttypes.LoadRestrictionsRootOnly {
		return nil, errors.New("kustomize's default load restrictor is not the one kubectl uses")
	}
	m, err := krusty.MakeKustomizer(opts).Run(filesys.MakeFsOnDisk(), dir)
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	data, err := m.AsYaml()
	if err != nil {
		return nil, fmt.Errorf("kustomize build %s: %w", dir, err)
	}
	rendered[dir] = data
	return data, nil
}

// loadMesh decodes the istiod Helm values: nothing but meshConfig, which
// must decode strictly as Istio's MeshConfig.
func loadMesh(path string) (*meshv1alpha1.MeshConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var values struct {
		MeshConfig json.RawMessage `json:"meshConfig"`
	}
	if err := yaml.UnmarshalStrict(data, &values); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	mc := &meshv1alpha1.MeshConfig{}
	if err := protojson.Unmarshal(values.MeshConfig, mc); err != nil {
		return nil, fmt.Errorf("%s: meshConfig: %w", path, err)
	}
	return mc, nil
}

// istioOperator is the part of istioctl's IstioOperator that
// istio-operator.yaml uses. The operator's Go types live in the istio
// module itself, too large to depend on for this; meshConfig is decoded
// with the real MeshConfig type.
type istioOperator struct {
	metav1.TypeMeta `json:",inline"`
	Metadata        metav1.ObjectMeta `json:"metadata"`
	Spec            struct {
		Components struct {
			EgressGateways []struct {
				Name    string `json:"name"`
				Enabled bool   `json:"enabled"`
			} `json:"egressGateways"`
		} `json:"components"`
		MeshConfig json.RawMessage `json:"meshConfig"`
	} `json:"spec"`
}

func loadOperator(path string) (*istioOperator, *meshv1alpha1.MeshConfig, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	op := &istioOperator{}
	if err := yaml.UnmarshalStrict(data, op); err != nil {
		return nil, nil, fmt.Errorf("%s: %w", path, err)
	}
	if op.APIVersion != "install.istio.io/v1alpha1" || op.Kind != "IstioOperator" {
		return nil, nil, fmt.Errorf("%s: %s/%s is not an IstioOperator", path, op.APIVersion, op.Kind)
	}
	mc := &meshv1alpha1.MeshConfig{}
	if err := protojson.Unmarshal(op.Spec.MeshConfig, mc); err != nil {
		return nil, nil, fmt.Errorf("%s: spec.meshConfig: %w", path, err)
	}
	return op, mc, nil
}

func TestEveryManifestDecodesStrictly(t *testing.T) {
	files := manifestFiles(t)
	if len(files) < 10 {
		t.Fatalf("found only %d manifests under kubernetes/ and istio/: %v", len(files), files)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			objs, err := decodeAll(f, data)
			if err != nil {
				t.Fatal(err)
			}
			if len(objs) == 0 {
				t.Fatal("no objects")
			}
		})
	}
}

// The decoders must actually be strict: a misspelt field anywhere, in a
// Kubernetes object or deep in an Istio spec, is an error.
func TestDecodingRejectsUnknownFields(t *testing.T) {
	for name, doc := range map[string]string{
		"deployment": `
apiVersion: apps/v1
kind: Deployment
metadata: {name: x}
spec:
  template:
    spec:
      containers:
        - name: x
          readinesProbe: {}
`,
		"duplicate field": `
apiVersion: v1
kind: Service
metadata: {name: x}
spec:
  ports: [{port: 1}]
  ports: [{port: 2}]
`,
		"istio envelope": `
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: x}
spce: {}
`,
		"istio spec": `
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: x}
spec:
  host: x
  trafficPolicy:
    portLevelSettings:
      - port: {number: 80}
        tls: {mode: ISTIO_MUTUAL, snii: x}
`,
		"istio enum": `
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: x}
spec:
  action: CUSTOMM
`,
		"kustomization": `
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resource: [a.yaml]
`,
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := decodeAll(name, []byte(doc)); err == nil {
				t.Fatal("decoded without error")
			} else {
				t.Log(err)
			}
		})
	}
	t.Run("mesh config", func(t *testing.T) {
		mc := &meshv1alpha1.MeshConfig{}
		err := protojson.Unmarshal([]byte(`{"extensionProviders":[{"name":"x","envoyExtAuthzGrpc":{"service":"s","port":1,"failopen":true}}]}`), mc)
		if err == nil {
			t.Fatal("decoded without error")
		}
	})
}

func TestKustomizationsRender(t *testing.T) {
	for _, tc := range []struct {
		dir   string
		kinds []string // at least these
	}{
		{baseDir, []string{"Namespace", "ServiceAccount", "Deployment", "Service", "PodDisruptionBudget", "HorizontalPodAutoscaler", "ConfigMap", "PeerAuthentication", "AuthorizationPolicy"}},
		{istioDir, []string{"AuthorizationPolicy", "Gateway", "VirtualService", "DestinationRule", "ServiceEntry"}},
		{overlayA, []string{"Deployment", "Service", "ConfigMap", "PeerAuthentication", "AuthorizationPolicy", "Gateway", "VirtualService", "DestinationRule", "ServiceEntry"}},
		{overlayB, []string{"Deployment", "Service", "ConfigMap", "AuthorizationPolicy", "Gateway", "VirtualService", "DestinationRule", "ServiceEntry"}},
		{overlayFleet, []string{"Deployment", "Service", "ConfigMap", "PeerAuthentication", "AuthorizationPolicy", "Gateway", "VirtualService", "DestinationRule", "ServiceEntry"}},
	} {
		t.Run(tc.dir, func(t *testing.T) {
			objs := render(t, tc.dir)
			seen := map[string]bool{}
			for _, o := range objs {
				seen[o.Kind] = true
				if o.Namespace == "" && o.Kind != "Namespace" {
					t.Errorf("%s has no namespace", o)
				}
			}
			for _, k := range tc.kinds {
				if !seen[k] {
					t.Errorf("no %s in the output", k)
				}
			}
		})
	}
}

// kubectl apply -k reads files only from inside the kustomization's
// directory, so the base mounts a copy of the example rules. The copy must
// not drift, and the example must pass rules lint.
func TestRulesConfigMapIsTheExampleRuleSet(t *testing.T) {
	example, err := os.ReadFile(exampleRules)
	if err != nil {
		t.Fatal(err)
	}
	copied, err := os.ReadFile(baseRules)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(example, copied) {
		t.Fatalf("%s differs from %s: run cp deploy/%s deploy/%s", baseRules, exampleRules, exampleRules, baseRules)
	}
	data, err := os.ReadFile(filepath.Join(baseDir, "kustomization.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var k kusttypes.Kustomization
	if err := yaml.UnmarshalStrict(data, &k); err != nil {
		t.Fatal(err)
	}
	found := false
	for _, g := range k.ConfigMapGenerator {
		if slices.Contains(g.FileSources, filepath.Base(baseRules)) {
			found = true
		}
	}
	if !found {
		t.Errorf("no configMapGenerator in %s reads %s", baseDir, filepath.Base(baseRules))
	}

	// rules lint: errors fail, warnings are reported.
	set, err := rules.Load(exampleRules)
	if err != nil {
		t.Fatalf("rules lint %s: %v", exampleRules, err)
	}
	for _, w := range rules.Lint(set, time.Now(), 14*24*time.Hour) {
		t.Logf("rules lint warning: %v", w)
	}
}

func TestMeshConfigFilesAgree(t *testing.T) {
	values, err := loadMesh(meshValues)
	if err != nil {
		t.Fatal(err)
	}
	op, fromOp, err := loadOperator(meshOperator)
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(values, fromOp) {
		t.Errorf("meshConfig differs between %s and %s:\n%v\n%v", meshValues, meshOperator, values, fromOp)
	}
	if len(values.GetExtensionProviders()) == 0 {
		t.Errorf("%s registers no extensionProviders", meshValues)
	}
	enabled := 0
	for _, g := range op.Spec.Components.EgressGateways {
		if g.Enabled {
			enabled++
		}
	}
	if enabled != 1 {
		t.Errorf("%s enables %d egress gateways, want 1", meshOperator, enabled)
	}
}

// The walkthrough must name what the manifests expect to exist.
func TestREADMEMatchesManifests(t *testing.T) {
	data, err := os.ReadFile("README.md")
	if err != nil {
		t.Fatal(err)
	}
	readme := string(data)
	for _, s := range []string{
		"kubectl apply -k deploy/kubernetes/overlays/example",
		"deploy/kubernetes/overlays/outside-mesh",
		"deploy/kubernetes/overlays/fleet",
		meshValues, meshOperator,
		"nginx/egress-proxy.conf", "egress-authz-http",
		"helm install egress-authz deploy/helm/egress-authz", "docs/runbooks.md",
		"kubectl apply -k deploy/kubernetes/monitoring",
	} {
		if !strings.Contains(readme, s) {
			t.Errorf("deploy/README.md does not mention %s", s)
		}
	}
	// Every Secret the Deployment reads must be created in the walkthrough.
	s := newStack(t, overlayA)
	for name, keys := range s.secretRefs() {
		for _, key := range keys {
			want := fmt.Sprintf("kubectl create secret generic %s", name)
			if !strings.Contains(readme, want) || !strings.Contains(readme, "--from-literal="+key+"=") && !strings.Contains(readme, "--from-file="+key+"=") {
				t.Errorf("deploy/README.md does not show how to create Secret %s with key %s (%q ... --from-literal=%s=...)", name, key, want, key)
			}
		}
	}
}
