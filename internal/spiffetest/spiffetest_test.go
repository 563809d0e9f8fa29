package spiffetest

import (
	"go/build"
	"slices"
	"strings"
	"testing"
)

// TestImportsNoProductCode keeps the package usable from the tests of
// every package of the module, including the ones it helps to test.
func TestImportsNoProductCode(t *testing.T) {
	pkg, err := build.ImportDir(".", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, imp := range slices.Concat(pkg.Imports, pkg.TestImports, pkg.XTestImports) {
		if imp == "github.com/egress-authz/egress-authz" || strings.HasPrefix(imp, "github.com/egress-authz/egress-authz/") {
			t.Errorf("imports %s", imp)
		}
	}
}
