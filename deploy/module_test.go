package deploy_test

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// TestServerModuleLeavesOutTheManifestLibraries keeps the reason this
// directory is a module of its own: the server's go.mod requires none of
// the libraries that only these tests use.
func TestServerModuleLeavesOutTheManifestLibraries(t *testing.T) {
	server, err := os.ReadFile("../go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, mod := range requires(string(server)) {
		for _, prefix := range []string{"k8s.io/", "istio.io/", "sigs.k8s.io/kustomize/", "helm.sh/", "github.com/prometheus/prometheus", "github.com/prometheus-operator/"} {
			if strings.HasPrefix(mod, prefix) {
				t.Errorf("../go.mod requires %s: it belongs in deploy/go.mod", mod)
			}
		}
	}
	deploy, err := os.ReadFile("go.mod")
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^replace github\.com/egress-authz/egress-authz => \.\./?$`).Match(deploy) {
		t.Error("deploy/go.mod does not replace the server's module with ../: the manifests would be tested against another version of the code")
	}
}

// requires returns the module paths of a go.mod's require directives, in
// both the one-line and the block form.
func requires(gomod string) []string {
	var out []string
	inBlock := false
	for _, line := range strings.Split(gomod, "\n") {
		line, _, _ = strings.Cut(line, "//")
		f := strings.Fields(line)
		switch {
		case inBlock && len(f) == 1 && f[0] == ")":
			inBlock = false
		case inBlock && len(f) >= 2:
			out = append(out, f[0])
		case len(f) == 2 && f[0] == "require" && f[1] == "(":
			inBlock = true
		case len(f) >= 3 && f[0] == "require":
			out = append(out, f[1])
		}
	}
	return out
}
