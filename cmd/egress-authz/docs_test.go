package main

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// mdLink is a Markdown link's target, or an autolink.
var mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)|<(https?://[^>\s]+)>`)

// TestDocsLinkInsideTheRepo: the README and docs/ carry their own
// documentation: a link names a file of the repository (that exists), an
// anchor, or the local server of the tour, never a page elsewhere.
func TestDocsLinkInsideTheRepo(t *testing.T) {
	root := "../.."
	files := []string{"README.md", "deploy/README.md"}
	docs, _ := filepath.Glob(filepath.Join(root, "docs", "*.md"))
	for _, d := range docs {
		rel, _ := filepath.Rel(root, d)
		files = append(files, rel)
	}
	for _, f := range files {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range mdLink.FindAllStringSubmatch(string(data), -1) {
			target := m[1] + m[2]
			switch {
			case strings.HasPrefix(target, "http://127.0.0.1") || strings.HasPrefix(target, "http://localhost"):
			case strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:"):
				t.Errorf("%s links outside the repository: %s", f, target)
			case strings.HasPrefix(target, "#"):
			default:
				path, _, _ := strings.Cut(target, "#")
				if _, err := os.Stat(filepath.Join(root, filepath.Dir(f), path)); err != nil {
					t.Errorf("%s links to %s, which is not in the repository", f, target)
				}
			}
		}
	}
}
