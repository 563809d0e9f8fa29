package rules

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

// readDoc reads the format reference, docs/rules.md.
func readDoc(t *testing.T) string {
	t.Helper()
	data, err := os.ReadFile("../" + DocFile)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

// anchor is the fragment GitHub gives a heading.
func anchor(heading string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(heading) {
		switch {
		case r == ' ':
			b.WriteByte('-')
		case r == '-' || r == '_' || 'a' <= r && r <= 'z' || '0' <= r && r <= '9':
			b.WriteRune(r)
		}
	}
	return b.String()
}

// TestDocSectionsExist: every section a diagnostic links to is a heading
// of docs/rules.md, and so is every link inside the page.
func TestDocSectionsExist(t *testing.T) {
	doc := readDoc(t)
	anchors := map[string]bool{}
	for _, m := range regexp.MustCompile(`(?m)^#+ (.+)$`).FindAllStringSubmatch(doc, -1) {
		anchors[anchor(m[1])] = true
	}
	var used []string
	for _, what := range []string{"rule set", "rule", "from", "to", "case file", "case", "lint policy"} {
		used = append(used, docOf(what))
	}
	for _, k := range append(append([]string{}, fromKeys...), toKeys...) {
		used = append(used, strings.ToLower(k))
	}
	// The sections named in the source: errorDoc(n, "x", ...) and Doc: "x".
	for _, f := range []string{"format.go", "policy.go", "cases.go", "pattern.go", "processors.go"} {
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`(?:errorDoc\([^,]+, |Doc: +)"([a-z-]+)"`).FindAllStringSubmatch(string(src), -1) {
			used = append(used, m[1])
		}
	}
	for _, m := range regexp.MustCompile(`\]\(#([^)]+)\)`).FindAllStringSubmatch(doc, -1) {
		used = append(used, m[1])
	}
	for _, a := range used {
		if a != "" && !anchors[a] {
			t.Errorf("%s has no section #%s", DocFile, a)
		}
	}
	if len(used) < 20 {
		t.Errorf("only %d sections used: the check checks little", len(used))
	}
}

// TestDocStarTable decides every cell of the "* and ** at a glance" table
// with the engine, so the reference cannot drift from matching.
func TestDocStarTable(t *testing.T) {
	doc := readDoc(t)
	i := strings.Index(doc, "at a glance\n")
	if i < 0 {
		t.Fatal("no table")
	}
	var rows [][]string
	for _, line := range strings.Split(doc[i:], "\n")[2:] {
		if !strings.HasPrefix(line, "|") {
			if len(rows) > 0 {
				break
			}
			continue
		}
		var cells []string
		for _, c := range strings.Split(strings.Trim(line, "|"), "|") {
			cells = append(cells, strings.Trim(strings.TrimSpace(c), "`"))
		}
		rows = append(rows, cells)
	}
	if len(rows) < 4 {
		t.Fatalf("table of %d rows", len(rows))
	}
	paths := rows[0][1:]
	for _, row := range rows[2:] {
		tab := compileRules(t, `- {id: r, action: allow, to: {paths: ["`+row[0]+`"]}}`)
		for j, p := range paths {
			got := tab.Decide(httpReq("spiffe://cluster.local/ns/a/sa/b", "GET", "a.example", p), testNow).Allow
			if want := row[j+1] == "yes"; got != want {
				t.Errorf("pattern %s, path %s: the table says %s, the engine %v", row[0], p, row[j+1], got)
			}
		}
	}
}
