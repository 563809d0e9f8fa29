// Package rules reads egress allow-lists, validates them, and compiles them
// into an immutable, indexed Table that decides a Request in well under a
// microsecond.
//
// The package knows nothing of gRPC or Envoy: callers translate their own
// request shape into a Request and read the answer from a Decision. A Table
// is never mutated after Compile; Live publishes a new one atomically and
// fronts it with a decision cache that can never serve an answer from an
// older table or past a rule's expiry.
//
// rules is the engine only: the format (rule files and the test-case files
// beside them), compiling, deciding, explaining, the live table and its
// reload, lint, and writing a set back as YAML. The offline tools built on
// it (running test cases, diff, suggest, replaying the decision log) are
// in internal/compliance.
package rules

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"
)

// APIVersion and Kind are the only values the format accepts in the
// apiVersion and kind keys of a rule file.
const (
	APIVersion = "egress-authz/v1"
	Kind       = "RuleSet"
)

// Action is what a matching rule does.
type Action string

// The actions a rule may take.
const (
	Allow Action = "allow"
	Deny  Action = "deny"
)

// Mode says whether a rule decides (enforce) or only records its would-be
// outcome beside the decision (dry-run).
type Mode string

// The modes a rule may have.
const (
	Enforce Mode = "enforce"
	DryRun  Mode = "dry-run"
)

// Pos is a place in a rule file.
type Pos struct {
	File      string
	Line, Col int
}

func (p Pos) String() string {
	if p.Line == 0 {
		return p.File
	}
	return fmt.Sprintf("%s:%d:%d", p.File, p.Line, p.Col)
}

// Diagnostic is an error or warning about a place in a rule file. Its
// Error text is "file:line:col: message", the form editors and CI
// annotations understand.
type Diagnostic struct {
	Pos Pos
	Msg string
	// Doc, when set, is the section of the format reference (DocFile)
	// that explains the problem: "paths" for docs/rules.md#paths. Error
	// leaves it out; "rules lint" ends its line with it.
	Doc string
}

func (d Diagnostic) Error() string { return d.Pos.String() + ": " + d.Msg }

// DocFile is the format reference, in the repository: every field of a
// rule file, how requests match, and the lint policy.
const DocFile = "docs/rules.md"

// See returns where the format reference explains the diagnostic
// ("see docs/rules.md#paths"), or "".
func (d Diagnostic) See() string {
	if d.Doc == "" {
		return ""
	}
	return "see " + DocFile + "#" + d.Doc
}

// ErrorList is the errors found in a rule set, in file order. Loading
// reports them all at once so that a reviewer fixes a file in one pass, up
// to MaxErrors: past that, Parse and ParseCases count the rest and end the
// list with one diagnostic saying how many more there were.
type ErrorList []Diagnostic

// MaxErrors is the most errors Parse and ParseCases keep. Fifty megabytes
// of invalid rules once made a 249 MB error, logged in one line and shown
// at /v1/rules; a hundred errors are more than anyone fixes before looking
// again.
const MaxErrors = 100

// Error writes one diagnostic a line. A list longer than Parse makes (more
// than MaxErrors and its closing count) is cut to MaxErrors lines and a
// count of the rest, so that the text stays bounded however it was built.
func (l ErrorList) Error() string {
	shown := l
	if len(l) > MaxErrors+1 {
		shown = l[:MaxErrors]
	}
	var b strings.Builder
	for i, d := range shown {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(d.Error())
	}
	if rest := len(l) - len(shown); rest > 0 {
		fmt.Fprintf(&b, "\nand %d more errors", rest)
	}
	return b.String()
}

// Rule is one rule as written in a rule file.
type Rule struct {
	ID          string
	Description string
	Owner       string
	Ticket      string
	Expires     time.Time // zero: never; otherwise 00:00 UTC of the day the rule stops matching
	Mode        Mode
	Action      Action

	Principals      []string
	Namespaces      []string
	ServiceAccounts []string

	Hosts   []string
	Ports   []int
	Methods []string
	Paths   []string

	// Processor is the id of the processor (Set.Processors) that the
	// traffic this rule allows reaches; "" when it names none. Purposes
	// and DataCategories narrow the processor's, when set.
	Processor      string
	Purposes       []string
	DataCategories []string

	Pos Pos // where the rule starts
}

// HTTPOnly reports whether the rule names methods or paths, so that it can
// never match a TLS-passthrough (SNI-only) request.
func (r *Rule) HTTPOnly() bool { return len(r.Methods) > 0 || len(r.Paths) > 0 }

// Set is a parsed and validated rule set: the rules of one file or of every
// rule file in a directory, merged.
type Set struct {
	Rules        []*Rule
	TrustDomains []string
	// Processors is the processor register: the recipients of personal
	// data the rules name, from the processors lists of every file.
	Processors []*Processor
	// InternalDomains are the company's own domains: a host at or below
	// one needs no processor (see Internal).
	InternalDomains []string
	Files           []string
	// Version identifies the content: the SHA-256 of the files' names and
	// bytes. Two replicas with the same files report the same version.
	Version string
	// Sources are the files as read, kept so that the rule set that
	// decided can be archived beside the decision log as it was.
	Sources []Source

	// patterns holds the compiled patterns of Rules, by index, as the
	// parser made them (see patternsOf).
	patterns []rulePatterns
}

var ruleIDPattern = regexp.MustCompile(`^[a-z0-9-]+$`)

// Version returns the version a rule set made of srcs has: the first 16 hex
// digits of a SHA-256 over the files' base names and contents.
func Version(srcs ...Source) string {
	h := sha256.New()
	for _, src := range srcs {
		h.Write([]byte(filepath.Base(src.Name)))
		h.Write([]byte{0})
		h.Write(src.Data)
		h.Write([]byte{0})
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// Source is one rule file's name and content.
type Source struct {
	Name string
	Data []byte
}

// Parse parses and validates rule files and merges them into one Set.
// Every problem is reported, as an ErrorList, with its file:line:col.
func Parse(srcs ...Source) (*Set, error) {
	p := &parser{set: &Set{}, ids: map[string]Pos{}, tds: map[string]bool{}, procs: map[string]Pos{}}
	for _, src := range srcs {
		p.set.Files = append(p.set.Files, src.Name)
		p.file(src)
	}
	p.resolveProcessors()
	if len(p.set.TrustDomains) == 0 && len(p.errs) == 0 && len(srcs) > 0 {
		p.add(Diagnostic{Pos: Pos{File: srcs[0].Name, Line: 1, Col: 1},
			Msg: "no trustDomains in the rule set: every identity would be denied (add e.g. \"trustDomains: [cluster.local]\")"})
	}
	if len(srcs) == 0 {
		p.add(Diagnostic{Msg: "no rule files"})
	}
	if len(p.errs) > 0 {
		return nil, p.list()
	}
	p.set.Version = Version(srcs...)
	p.set.Sources = slices.Clone(srcs)
	sort.Strings(p.set.TrustDomains)
	return p.set, nil
}

type parser struct {
	name string
	set  *Set
	errs ErrorList // the first MaxErrors errors
	// more counts the errors past MaxErrors, which are not kept, the first
	// of them in moreFile.
	more     int
	moreFile string
	ids      map[string]Pos
	tds      map[string]bool
	// procs is where each processor id was declared; ruleProcs the rules
	// that name a processor, checked once every file is read.
	procs     map[string]Pos
	ruleProcs []ruleProcessor
	// known is set while the document being read is known to be what the
	// parser reads (a rule set whose apiVersion and kind are right, a case
	// file with a cases list): only then do errors quote its values.
	known bool
}

// add records an error, or only counts it once MaxErrors are kept.
func (p *parser) add(d Diagnostic) {
	if len(p.errs) >= MaxErrors {
		if p.more == 0 {
			p.moreFile = d.Pos.File
		}
		p.more++
		return
	}
	p.errs = append(p.errs, d)
}

// nerrs is how many errors were found so far, kept or not.
func (p *parser) nerrs() int { return len(p.errs) + p.more }

// list is the errors found, closed by the count of those not kept.
func (p *parser) list() ErrorList {
	if p.more == 0 {
		return p.errs
	}
	return append(p.errs, Diagnostic{Pos: Pos{File: p.moreFile},
		Msg: fmt.Sprintf("and %d more errors (only the first %d are listed)", p.more, MaxErrors)})
}

func (p *parser) errorf(n *yaml.Node, format string, args ...any) {
	p.errorDoc(n, "", format, args...)
}

// errorDoc is errorf for an error that section doc of DocFile explains.
func (p *parser) errorDoc(n *yaml.Node, doc, format string, args ...any) {
	if len(p.errs) >= MaxErrors {
		p.add(Diagnostic{Pos: Pos{File: p.name}}) // counted, not formatted
		return
	}
	pos := Pos{File: p.name}
	if n != nil {
		pos.Line, pos.Col = n.Line, n.Column
	}
	p.add(Diagnostic{Pos: pos, Msg: fmt.Sprintf(format, args...), Doc: doc})
}

func (p *parser) file(src Source) {
	p.documents(src, "empty rule file: expected apiVersion, kind and rules", p.document)
}

// documents calls fn for each YAML document of src, reporting a syntax
// error, or an empty file with the message empty.
func (p *parser) documents(src Source, empty string, fn func(doc *yaml.Node)) {
	p.name = src.Name
	dec := yaml.NewDecoder(bytes.NewReader(src.Data))
	docs := 0
	for {
		var doc yaml.Node
		err := dec.Decode(&doc)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			p.add(yamlError(src.Name, src.Data, err))
			return
		}
		docs++
		fn(&doc)
	}
	if docs == 0 {
		p.add(Diagnostic{Pos: Pos{File: src.Name, Line: 1, Col: 1}, Msg: empty})
	}
}

var yamlLineRE = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)

// yamlAnchorRE matches what the YAML library quotes from the source in its
// errors, an anchor's name, which yamlError leaves out: the file may not
// be a rule file at all (see parser.describe).
var yamlAnchorRE = regexp.MustCompile(`anchor '[^']*'`)

// yamlError turns the YAML library's syntax error into a Diagnostic. The
// library reports no column, and its line is where the enclosing construct
// starts: 0-based for parser errors ("did not find expected ..."), which
// we correct, 1-based for scanner errors. A tab in indentation, the most
// common scanner error, is located exactly from the source instead.
func yamlError(file string, data []byte, err error) Diagnostic {
	if line, col, ok := indentTab(data); ok {
		return Diagnostic{Pos: Pos{File: file, Line: line, Col: col}, Msg: "invalid YAML: a tab in indentation (YAML indents with spaces only)"}
	}
	msg := yamlAnchorRE.ReplaceAllString(err.Error(), "anchor")
	if m := yamlLineRE.FindStringSubmatch(msg); m != nil {
		line, _ := strconv.Atoi(m[1])
		if strings.HasPrefix(m[2], "did not find expected") {
			line++
		}
		d := Diagnostic{Pos: Pos{File: file, Line: line, Col: 1}, Msg: "invalid YAML: " + m[2], Doc: "yaml"}
		if at, col, ok := problemLine(data, line, err.Error()); ok && at != line {
			d.Pos.Line, d.Pos.Col = at, col
			d.Msg += fmt.Sprintf(" (inside the block that starts on line %d: check this line's indentation)", line)
		}
		return d
	}
	var te *yaml.TypeError
	if errors.As(err, &te) && len(te.Errors) > 0 {
		msg = yamlAnchorRE.ReplaceAllString(te.Errors[0], "anchor")
	}
	return Diagnostic{Pos: Pos{File: file, Line: 1, Col: 1}, Msg: "invalid YAML: " + strings.TrimPrefix(msg, "yaml: "), Doc: "yaml"}
}

// maxProblemSearch is the most bytes problemLine parses again at once: the
// search is for people reading an error, and a huge broken file is not
// worth seconds of a reload.
const maxProblemSearch = 4 << 20

// problemLine finds the line a YAML syntax error is about. The library
// names the line where the enclosing construct starts (a mis-indented
// "methods:" on line 11 is reported on line 5, where its rule starts),
// never the offending one; that is the first line whose inclusion makes
// the source fail with the same error. Cutting the source after a line
// keeps every line before it intact, so a prefix fails with this error
// only once it holds the offending token: the search gallops from line
// from and then bisects, parsing O(log n) prefixes. col is the line's
// first non-blank column.
func problemLine(data []byte, from int, want string) (line, col int, ok bool) {
	var ends []int // ends[i] is the offset just past line i+1
	for i, c := range data {
		if c == '\n' {
			ends = append(ends, i+1)
		}
	}
	if len(data) > 0 && data[len(data)-1] != '\n' {
		ends = append(ends, len(data))
	}
	fails := func(n int) bool { // whether the first n lines fail with want
		dec := yaml.NewDecoder(bytes.NewReader(data[:ends[n-1]]))
		for {
			var doc yaml.Node
			err := dec.Decode(&doc)
			if err == nil {
				continue
			}
			return !errors.Is(err, io.EOF) && err.Error() == want
		}
	}
	if from < 1 || from > len(ends) || ends[from-1] > maxProblemSearch {
		return 0, 0, false
	}
	lo, hi := from-1, from // fails(lo) is false (or lo is before from); find the first hi that fails
	for step := 1; !fails(hi); step *= 2 {
		if hi == len(ends) {
			return 0, 0, false
		}
		lo, hi = hi, min(hi+step, len(ends))
		if ends[hi-1] > maxProblemSearch {
			return 0, 0, false
		}
	}
	for hi-lo > 1 {
		mid := (lo + hi) / 2
		if fails(mid) {
			hi = mid
		} else {
			lo = mid
		}
	}
	start := 0
	if hi > 1 {
		start = ends[hi-2]
	}
	col = 1
	for i := start; i < ends[hi-1] && (data[i] == ' ' || data[i] == '\t'); i++ {
		col++
	}
	return hi, col, true
}

// indentTab finds the first tab in the leading white space of a line.
func indentTab(data []byte) (line, col int, ok bool) {
	for i, l := range bytes.Split(data, []byte("\n")) {
		for j, c := range l {
			if c == '\t' {
				return i + 1, j + 1, true
			}
			if c != ' ' {
				break
			}
		}
	}
	return 0, 0, false
}

// fields walks a mapping node, rejecting unknown and repeated keys, and
// calls fn for each known key with its value node.
func (p *parser) fields(n *yaml.Node, what string, known []string, fn func(key string, k, v *yaml.Node)) bool {
	if n.Kind != yaml.MappingNode {
		p.errorDoc(n, docOf(what), "%s must be a mapping, got %s", what, p.describe(n))
		return false
	}
	var seenArr [16]bool // known key sets are small: no map per mapping
	seen := seenArr[:len(known)]
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			p.errorf(k, "%s: keys must be plain strings", what)
			continue
		}
		idx := slices.Index(known, k.Value)
		if idx < 0 {
			if p.known {
				p.errorDoc(k, docOf(what), "%s: unknown key %s (known: %s)", what, quoteShort(k.Value), strings.Join(known, ", "))
			} else {
				p.errorDoc(k, docOf(what), "%s: unknown key (known: %s)", what, strings.Join(known, ", "))
			}
			continue
		}
		if seen[idx] { // the key is one of known: naming it quotes nothing of the file
			p.errorf(k, "%s: key %q repeated", what, k.Value)
			continue
		}
		seen[idx] = true
		fn(k.Value, k, v)
	}
	return true
}

// docOf is the section of DocFile about the mapping fields calls what.
func docOf(what string) string {
	switch what {
	case "rule set":
		return "rule-files"
	case "rule":
		return "rules"
	case "from", "to":
		return what
	case "case file", "case":
		return "test-cases"
	case "lint policy":
		return "lint-policy"
	case "processor", "transfer":
		return "processors"
	}
	return ""
}

// describe names what n is, for an error saying it is not what was
// expected. A value is quoted only in a document known to be what the
// parser reads: a rule file may be a link to anything (/etc/passwd, a
// file of secrets), and its errors go to logs and /v1/rules. Elsewhere a
// value is named by its type, and the error's line:col says where it is.
func (p *parser) describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.ScalarNode:
		if n.Tag == "!!null" {
			return "nothing"
		}
		if p.known {
			return quoteShort(n.Value)
		}
		switch n.Tag {
		case "!!int", "!!float":
			return "a number"
		case "!!bool":
			return "a boolean"
		case "!!timestamp":
			return "a date"
		}
		return "a string"
	case yaml.AliasNode:
		return "an alias"
	}
	return "something else"
}

// maxQuoted is the most bytes of a value an error quotes.
const maxQuoted = 80

// quoteShort quotes s for an error message, as %q does, shortened to
// maxQuoted bytes and its length when longer: errors stay one readable
// line, and their list stays small, however long the values of a file are.
func quoteShort(s string) string {
	if len(s) <= maxQuoted {
		return strconv.Quote(s)
	}
	cut := maxQuoted
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return fmt.Sprintf("%s… (%d bytes)", strconv.Quote(s[:cut]), len(s))
}

// isRuleSet reports whether a document's root says it is a rule set: a
// mapping with one apiVersion and one kind, both right.
func isRuleSet(root *yaml.Node) bool {
	if root.Kind != yaml.MappingNode {
		return false
	}
	api, kind := 0, 0
	for i := 0; i+1 < len(root.Content); i += 2 {
		k, v := root.Content[i], root.Content[i+1]
		if k.Kind != yaml.ScalarNode {
			continue
		}
		ok := v.Kind == yaml.ScalarNode
		switch k.Value {
		case "apiVersion":
			api++
			if !ok || v.Value != APIVersion {
				return false
			}
		case "kind":
			kind++
			if !ok || v.Value != Kind {
				return false
			}
		}
	}
	return api == 1 && kind == 1
}

func (p *parser) document(doc *yaml.Node) {
	if len(doc.Content) == 0 {
		p.errorf(doc, "empty document: expected apiVersion, kind and rules")
		return
	}
	root := doc.Content[0]
	if root.Kind == yaml.ScalarNode && root.Tag == "!!null" {
		p.errorf(root, "empty document: expected apiVersion, kind and rules")
		return
	}
	// Until its apiVersion and kind say it is a rule set, nothing of the
	// document is quoted (see describe), and only its shape is checked:
	// the errors inside rules would quote them.
	p.known = isRuleSet(root)
	defer func() { p.known = false }()
	var api, kind, rules *yaml.Node
	ok := p.fields(root, "rule set", ruleSetKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "apiVersion":
			api = v
			if s, ok := p.scalar(v, "apiVersion"); ok && s != APIVersion {
				p.errorf(v, "apiVersion must be %q", APIVersion)
			}
		case "kind":
			kind = v
			if s, ok := p.scalar(v, "kind"); ok && s != Kind {
				p.errorf(v, "kind must be %q", Kind)
			}
		case "trustDomains":
			if !p.known {
				return
			}
			for _, td := range p.strings(v, "trustDomains") {
				if _, err := spiffeid.TrustDomainFromString(td.Value); err != nil || strings.Contains(td.Value, "/") {
					p.errorDoc(td, "trustdomains", "trustDomains: %s is not a SPIFFE trust domain name", quoteShort(td.Value))
					continue
				}
				if !p.tds[td.Value] {
					p.tds[td.Value] = true
					p.set.TrustDomains = append(p.set.TrustDomains, td.Value)
				}
			}
		case "rules":
			rules = v
		case "processors":
			if p.known {
				p.processors(v)
			}
		case "internalDomains":
			if !p.known {
				return
			}
			for _, d := range p.strings(v, "internalDomains") {
				if _, err := compileHost(d.Value); err != nil || strings.Contains(d.Value, "*") {
					p.errorDoc(d, "processors", "internalDomains: %s is not a domain name", quoteShort(d.Value))
					continue
				}
				if !slices.Contains(p.set.InternalDomains, d.Value) {
					p.set.InternalDomains = append(p.set.InternalDomains, d.Value)
				}
			}
		}
	})
	if !ok {
		return
	}
	if api == nil {
		p.errorf(root, "missing apiVersion (want %q)", APIVersion)
	}
	if kind == nil {
		p.errorf(root, "missing kind (want %q)", Kind)
	}
	if rules == nil {
		p.errorf(root, "missing rules (write \"rules: []\" to deny everything)")
		return
	}
	if rules.Kind != yaml.SequenceNode {
		p.errorf(rules, "rules must be a list, got %s", p.describe(rules))
		return
	}
	if !p.known {
		return
	}
	p.set.Rules = slices.Grow(p.set.Rules, len(rules.Content))
	p.set.patterns = slices.Grow(p.set.patterns, len(rules.Content))
	for _, rn := range rules.Content {
		p.rule(rn)
	}
}

func (p *parser) scalar(n *yaml.Node, what string) (string, bool) {
	if n.Kind != yaml.ScalarNode || n.Tag == "!!null" {
		p.errorf(n, "%s must be a single value, got %s", what, p.describe(n))
		return "", false
	}
	return n.Value, true
}

// strings returns the scalar entries of a list; an empty list is an error,
// since "any" is written by leaving the field out.
func (p *parser) strings(n *yaml.Node, what string) []*yaml.Node {
	if n.Kind != yaml.SequenceNode {
		p.errorf(n, "%s must be a list, got %s", what, p.describe(n))
		return nil
	}
	if len(n.Content) == 0 {
		p.errorf(n, "%s is an empty list, which would match nothing; leave the key out to match anything", what)
		return nil
	}
	var out []*yaml.Node
	for _, e := range n.Content {
		if _, ok := p.scalar(e, what+" entry"); ok {
			out = append(out, e)
		}
	}
	return out
}

// The keys of a rule set, a rule, and its from and to sections (Schema
// lists them too: TestSchemaKnowsTheFormat keeps the two equal).
var (
	ruleSetKeys = []string{"apiVersion", "kind", "trustDomains", "internalDomains", "processors", "rules"}
	ruleKeys    = []string{"id", "description", "owner", "ticket", "expires", "mode", "action", "processor", "purposes", "dataCategories", "from", "to"}
	fromKeys    = []string{"principals", "namespaces", "serviceAccounts"}
	toKeys      = []string{"hosts", "ports", "methods", "paths"}
)

func (p *parser) rule(n *yaml.Node) {
	r := &Rule{Pos: Pos{File: p.name, Line: n.Line, Col: n.Column}, Mode: Enforce}
	pats := rulePatterns{rule: r}
	var idNode, actionNode *yaml.Node
	rp := ruleProcessor{rule: r, file: p.name}
	errsBefore := p.nerrs()
	ok := p.fields(n, "rule", ruleKeys, func(key string, k, v *yaml.Node) {
		switch key {
		case "id":
			idNode = v
			r.ID, _ = p.scalar(v, "id")
		case "description":
			r.Description, _ = p.scalar(v, "description")
		case "owner":
			r.Owner, _ = p.scalar(v, "owner")
		case "ticket":
			r.Ticket, _ = p.scalar(v, "ticket")
		case "expires":
			if s, ok := p.scalar(v, "expires"); ok {
				t, err := time.Parse(time.DateOnly, s)
				if err != nil {
					p.errorDoc(v, "rules", "expires must be a date YYYY-MM-DD, got %s", quoteShort(s))
				}
				r.Expires = t
			}
		case "mode":
			if s, ok := p.scalar(v, "mode"); ok {
				switch Mode(s) {
				case Enforce, DryRun:
					r.Mode = Mode(s)
				default:
					p.errorDoc(v, "rules", "mode must be enforce or dry-run, got %s", quoteShort(s))
				}
			}
		case "action":
			actionNode = v
			if s, ok := p.scalar(v, "action"); ok {
				switch Action(s) {
				case Allow, Deny:
					r.Action = Action(s)
				default:
					p.errorDoc(v, "rules", "action must be allow or deny, got %s", quoteShort(s))
				}
			}
		case "processor":
			rp.id = v
			r.Processor, _ = p.scalar(v, "processor")
		case "purposes":
			rp.purposes = v
			r.Purposes = p.taxonomy(v, key, "data use", vocabulary().DataUses)
		case "dataCategories":
			rp.categories = v
			r.DataCategories = p.taxonomy(v, key, "data category", vocabulary().DataCategories)
		case "from":
			p.from(v, r, &pats)
		case "to":
			p.to(v, r, &pats)
		}
	})
	if !ok {
		return
	}
	if idNode == nil {
		p.errorf(n, "rule has no id")
	} else if idNode.Kind == yaml.ScalarNode && idNode.Tag != "!!null" && !ruleIDPattern.MatchString(r.ID) {
		// Checked whenever id is a value, so that `id: ""` is rejected too.
		p.errorDoc(idNode, "rules", "id %s: use only lower-case letters, digits and '-'", quoteShort(r.ID))
	} else if prev, dup := p.ids[r.ID]; dup && r.ID != "" {
		p.errorf(idNode, "id %s already used at %s", quoteShort(r.ID), prev)
	} else if r.ID != "" {
		p.ids[r.ID] = r.Pos
	}
	if actionNode == nil {
		p.errorf(n, "rule %s has no action (allow or deny)", quoteShort(r.ID))
	}
	if (rp.purposes != nil || rp.categories != nil) && rp.id == nil {
		p.errorDoc(n, "processors", "rule %s narrows purposes or dataCategories but names no processor", quoteShort(r.ID))
	}
	if p.nerrs() == errsBefore {
		p.set.Rules = append(p.set.Rules, r)
		p.set.patterns = append(p.set.patterns, pats)
		if rp.id != nil {
			p.ruleProcs = append(p.ruleProcs, rp)
		}
	}
}

// from reads a rule's from section into r, and the compiled principal
// patterns into pats.
func (p *parser) from(n *yaml.Node, r *Rule, pats *rulePatterns) {
	p.fields(n, "from", fromKeys, func(key string, k, v *yaml.Node) {
		// Sized once: a large set has tens of thousands of these lists.
		entries := p.strings(v, key)
		switch key {
		case "principals":
			r.Principals = make([]string, 0, len(entries))
			pats.principals = make([]principalPattern, 0, len(entries))
		case "namespaces":
			r.Namespaces = make([]string, 0, len(entries))
		case "serviceAccounts":
			r.ServiceAccounts = make([]string, 0, len(entries))
		}
		for _, e := range entries {
			var err error
			switch key {
			case "principals":
				var pp principalPattern
				pp, err = compilePrincipal(e.Value)
				r.Principals = append(r.Principals, e.Value)
				pats.principals = append(pats.principals, pp)
			case "namespaces":
				err = checkName(e.Value)
				r.Namespaces = append(r.Namespaces, e.Value)
			case "serviceAccounts":
				err = checkName(e.Value)
				r.ServiceAccounts = append(r.ServiceAccounts, e.Value)
			}
			if err != nil {
				p.errorDoc(e, strings.ToLower(key), "%s: %v", key, err)
			}
		}
	})
}

// to reads a rule's to section into r, and the compiled host and path
// patterns into pats.
func (p *parser) to(n *yaml.Node, r *Rule, pats *rulePatterns) {
	p.fields(n, "to", toKeys, func(key string, k, v *yaml.Node) {
		// Sized once: a large set has tens of thousands of these lists.
		entries := p.strings(v, key)
		switch key {
		case "hosts":
			r.Hosts = make([]string, 0, len(entries))
			pats.hosts = make([]hostPattern, 0, len(entries))
		case "ports":
			r.Ports = make([]int, 0, len(entries))
		case "methods":
			r.Methods = make([]string, 0, len(entries))
		case "paths":
			r.Paths = make([]string, 0, len(entries))
			pats.paths = make([]pathPattern, 0, len(entries))
		}
		for _, e := range entries {
			var err error
			switch key {
			case "hosts":
				var hp hostPattern
				hp, err = compileHost(e.Value)
				r.Hosts = append(r.Hosts, e.Value)
				pats.hosts = append(pats.hosts, hp)
			case "ports":
				port, perr := strconv.Atoi(e.Value)
				if perr != nil || port < 1 || port > 65535 {
					err = fmt.Errorf("%s is not a port number (1-65535)", quoteShort(e.Value))
				}
				r.Ports = append(r.Ports, port)
			case "methods":
				err = CheckMethod(e.Value)
				r.Methods = append(r.Methods, e.Value)
			case "paths":
				var pp pathPattern
				pp, err = compilePath(e.Value)
				r.Paths = append(r.Paths, e.Value)
				pats.paths = append(pats.paths, pp)
			}
			if err != nil {
				p.errorDoc(e, key, "%s: %v", key, err)
			}
		}
	})
}

// checkName validates a Kubernetes namespace or service account name as it
// appears in an Istio SPIFFE path.
func checkName(s string) error {
	if s == "" || strings.ContainsAny(s, "/*") {
		return fmt.Errorf("%s is not a namespace or service account name", quoteShort(s))
	}
	return nil
}

// CheckMethod says why s cannot be listed in a rule's to.methods, or
// returns nil: a method there is an HTTP token in upper case.
func CheckMethod(s string) error {
	if !IsToken(s) {
		return fmt.Errorf("%s is not an HTTP method", quoteShort(s))
	}
	if up := strings.ToUpper(s); up != s {
		if len(up) > maxQuoted {
			return fmt.Errorf("%s: methods are case-sensitive and written in upper case", quoteShort(s))
		}
		return fmt.Errorf("%s: methods are case-sensitive and written in upper case (%s)", quoteShort(s), up)
	}
	return nil
}
