// Package evidence writes and checks evidence packs: the decision records
// a query selects, as CSV and as Parquet, with the query, the rule sets
// the records name (from the archive), the verification of the log for the range,
// and a manifest of every file's SHA-256, in a directory or a zip file.
// A pack is checked offline, with no access to the log it came from.
package evidence

import (
	"archive/zip"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/csv"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/internal/admin"
	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/parquetlog"
	"github.com/egress-authz/egress-authz/rules"
)

// The files of a pack.
const (
	RecordsCSV     = "records.csv"
	RecordsParquet = "records.parquet"
	QueryFile      = "query.json"
	RuleSetsFile   = "rulesets.json"
	VerifyFile     = "verify.json"
	ManifestFile   = "manifest.json"
)

// Manifest is manifest.json: what the pack holds.
type Manifest struct {
	Format  int       `json:"format"` // 1
	Created time.Time `json:"created"`
	Records int       `json:"records"`
	Files   []File    `json:"files"` // every file but the manifest, by name

	Missing []MissingRuleSet `json:"-"` // the rule sets the pack lacks, as rulesets.json says
}

// File is one file of a pack and its SHA-256.
type File struct {
	Name   string `json:"name"`
	Bytes  int64  `json:"bytes"`
	SHA256 string `json:"sha256"`
}

// Query is query.json: the filters the records were selected with.
type Query struct {
	Filters map[string]string `json:"filters"` // as GET /v1/decisions takes them
	Source  string            `json:"source"`  // the decision log, as --audit named it, without credentials
	Since   time.Time         `json:"since,omitzero"`
	Until   time.Time         `json:"until,omitzero"`
}

// RuleSets is rulesets.json: the rule-set versions the records name, and
// which of them the pack holds (as rulesets/VERSION.json, the files that
// made the version, from the rule-set archive).
type RuleSets struct {
	Versions []string         `json:"versions"`
	Included []string         `json:"included"`
	Missing  []MissingRuleSet `json:"missing"`
}

// MissingRuleSet is a version the pack could not include, and why.
type MissingRuleSet struct {
	Version string `json:"version"`
	Why     string `json:"why"`
}

// RuleSetFile is where a pack holds an archived rule-set version.
func RuleSetFile(version string) string { return "rulesets/" + version + ".json" }

// Options say what Write packs.
type Options struct {
	Store   audit.Store
	Filter  audit.Filter
	Filters map[string]string // the filters as given, for query.json
	Source  string
	Logs    []string // write-ahead logs that vouch for the chains' ends (audit.VerifyOptions)
	// Archives are where the rule sets the records name are looked up, in
	// order (the store itself, the server's DATA/rulesets).
	Archives []audit.RuleSetArchive
	Now      time.Time
}

// Write writes a pack of the records opts selects to out: a directory
// (new, or empty), or a zip file when out ends in ".zip". It returns the
// manifest written.
func Write(ctx context.Context, out string, opts Options) (*Manifest, error) {
	zipped := strings.HasSuffix(strings.ToLower(out), ".zip")
	dir := out
	if zipped {
		if _, err := os.Stat(out); err == nil {
			return nil, fmt.Errorf("%s exists: give a new file", out)
		}
		tmp, err := os.MkdirTemp(filepath.Dir(out), ".evidence-*")
		if err != nil {
			return nil, err
		}
		defer os.RemoveAll(tmp)
		dir = tmp
	} else if err := emptyDir(dir); err != nil {
		return nil, err
	}
	m, err := writeDir(ctx, dir, opts)
	if err != nil {
		return nil, err
	}
	if zipped {
		if err := zipDir(dir, out, m); err != nil {
			os.Remove(out)
			return nil, err
		}
	}
	return m, nil
}

func emptyDir(dir string) error {
	ents, err := os.ReadDir(dir)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return os.MkdirAll(dir, 0o750)
	case err != nil:
		return err
	case len(ents) > 0:
		return fmt.Errorf("%s is not empty: give a new or empty directory", dir)
	}
	return nil
}

func writeDir(ctx context.Context, dir string, opts Options) (*Manifest, error) {
	m := &Manifest{Format: 1, Created: opts.Now.UTC()}
	add := func(name string, write func(io.Writer) error) error {
		if err := os.MkdirAll(filepath.Dir(filepath.Join(dir, name)), 0o750); err != nil {
			return err
		}
		f, err := os.OpenFile(filepath.Join(dir, name), os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
		if err != nil {
			return err
		}
		h := sha256.New()
		cw := &countWriter{w: io.MultiWriter(f, h)}
		err = write(cw)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		m.Files = append(m.Files, File{Name: name, Bytes: cw.n, SHA256: hex.EncodeToString(h.Sum(nil))})
		return nil
	}

	// The records, once through the store, into both files.
	csvF, err := os.CreateTemp(dir, ".csv-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(csvF.Name())
	defer csvF.Close()
	pqF, err := os.CreateTemp(dir, ".parquet-*")
	if err != nil {
		return nil, err
	}
	defer os.Remove(pqF.Name())
	defer pqF.Close()
	csvEnc, _ := admin.NewEncoder("csv", csvF)
	pq := parquetlog.NewRecordWriter(pqF)
	versions := map[string]bool{}
	f := opts.Filter
	f.Cursor = ""
	if _, err := opts.Store.Query(ctx, f, func(r *audit.Record) error {
		if r.RuleSet != "" {
			versions[r.RuleSet] = true
		}
		if err := csvEnc.Encode(r); err != nil {
			return err
		}
		return pq.Write(r)
	}); err != nil {
		return nil, fmt.Errorf("query: %w", err)
	}
	if err := csvEnc.Close(""); err != nil {
		return nil, err
	}
	if err := pq.Close(); err != nil {
		return nil, err
	}
	m.Records = pq.Records()
	for _, tmp := range []struct {
		f    *os.File
		name string
	}{{csvF, RecordsCSV}, {pqF, RecordsParquet}} {
		if _, err := tmp.f.Seek(0, io.SeekStart); err != nil {
			return nil, err
		}
		if err := add(tmp.name, func(w io.Writer) error { _, err := io.Copy(w, tmp.f); return err }); err != nil {
			return nil, err
		}
	}

	q := Query{Filters: opts.Filters, Source: opts.Source, Since: f.Since, Until: f.Until}
	if q.Filters == nil {
		q.Filters = map[string]string{}
	}
	if err := add(QueryFile, jsonOf(q)); err != nil {
		return nil, err
	}
	rs := RuleSets{Versions: slices.Sorted(maps.Keys(versions)), Included: []string{}, Missing: []MissingRuleSet{}}
	for _, v := range rs.Versions {
		set, why := archived(ctx, opts.Archives, v)
		if why != "" {
			rs.Missing = append(rs.Missing, MissingRuleSet{v, why})
			continue
		}
		if err := add(RuleSetFile(v), jsonOf(set)); err != nil {
			return nil, err
		}
		rs.Included = append(rs.Included, v)
	}
	if rs.Versions == nil {
		rs.Versions = []string{}
	}
	m.Missing = rs.Missing
	if err := add(RuleSetsFile, jsonOf(rs)); err != nil {
		return nil, err
	}

	vopts := audit.VerifyOptions{Since: f.Since, Until: f.Until, Logs: opts.Logs}
	v, err := audit.Verify(ctx, opts.Store, vopts)
	if err != nil {
		return nil, fmt.Errorf("verify: %w", err)
	}
	if err := add(VerifyFile, jsonOf(admin.NewVerifyReport(v, vopts))); err != nil {
		return nil, err
	}

	b, err := json.MarshalIndent(m, "", "  ")
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(dir, ManifestFile), append(b, '\n'), 0o640); err != nil {
		return nil, err
	}
	return m, nil
}

// archived looks version up in archives, in order, and returns the first
// copy whose files hash to it; else why there is none.
func archived(ctx context.Context, archives []audit.RuleSetArchive, version string) (audit.RuleSet, string) {
	why := "no rule-set archive to read it from"
	for _, a := range archives {
		rs, err := a.RuleSet(ctx, version)
		if err != nil {
			why = err.Error()
			continue
		}
		if got := ruleSetVersion(rs); got != version {
			why = "the archived copy was altered: its files hash to " + got
			continue
		}
		return rs, ""
	}
	return audit.RuleSet{}, why
}

// ruleSetVersion is the version rs's files hash to.
func ruleSetVersion(rs audit.RuleSet) string {
	srcs := make([]rules.Source, 0, len(rs.Files))
	for _, f := range rs.Files {
		srcs = append(srcs, rules.Source{Name: f.Name, Data: []byte(f.Content)})
	}
	return rules.Version(srcs...)
}

func jsonOf(v any) func(io.Writer) error {
	return func(w io.Writer) error {
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	}
}

type countWriter struct {
	w io.Writer
	n int64
}

func (c *countWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

func zipDir(dir, out string, m *Manifest) error {
	f, err := os.OpenFile(out, os.O_CREATE|os.O_EXCL|os.O_WRONLY, 0o640)
	if err != nil {
		return err
	}
	zw := zip.NewWriter(f)
	names := []string{ManifestFile}
	for _, file := range m.Files {
		names = append(names, file.Name)
	}
	for _, name := range names {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Deflate, Modified: m.Created})
		if err != nil {
			f.Close()
			return err
		}
		src, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			f.Close()
			return err
		}
		_, err = io.Copy(w, src)
		src.Close()
		if err != nil {
			f.Close()
			return err
		}
	}
	if err := zw.Close(); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// Problem is something wrong with a pack: the file and what.
type Problem struct {
	File    string `json:"file"`
	Problem string `json:"problem"`
}

func (p Problem) String() string { return p.File + ": " + p.Problem }

// Checked is the result of Check.
type Checked struct {
	Manifest Manifest  `json:"manifest"`
	Records  int       `json:"records"`  // in records.parquet
	Hashes   int       `json:"hashes"`   // records whose content gives their hash
	Links    int       `json:"links"`    // records checked against the one before them in their chain
	RuleSets int       `json:"rulesets"` // rule sets whose files hash to their version
	Problems []Problem `json:"problems"`
	// Verify is the pack's verify.json: what the log's verification said
	// when the pack was made.
	Verify admin.VerifyReport `json:"verify"`
}

// OK reports whether the pack is as its manifest says.
func (c *Checked) OK() bool { return len(c.Problems) == 0 }

// Check re-verifies the pack at path (a directory or a .zip) offline:
// every file's SHA-256 against the manifest, no file left out of it, the
// record count of both record files, the records' hashes and the links
// between records of a chain where the pack holds consecutive ones, and
// that each rule set's files hash to its version.
// An error is a pack that cannot be read at all; what is wrong with a
// readable one is in Problems.
func Check(path string) (*Checked, error) {
	var fsys fs.FS
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if st.IsDir() {
		fsys = os.DirFS(path)
	} else {
		zr, err := zip.OpenReader(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		defer zr.Close()
		fsys = zr
	}
	c := &Checked{Problems: []Problem{}}
	mb, err := fs.ReadFile(fsys, ManifestFile)
	if err != nil {
		return nil, fmt.Errorf("%s: no %s: %w", path, ManifestFile, err)
	}
	if err := json.Unmarshal(mb, &c.Manifest); err != nil || c.Manifest.Format != 1 {
		c.Problems = append(c.Problems, Problem{ManifestFile, fmt.Sprintf("not a format 1 manifest (%v)", err)})
		return c, nil
	}
	listed := map[string]bool{ManifestFile: true}
	files := map[string][]byte{}
	for _, file := range c.Manifest.Files {
		listed[file.Name] = true
		b, err := fs.ReadFile(fsys, file.Name)
		if err != nil {
			c.Problems = append(c.Problems, Problem{file.Name, "missing: " + err.Error()})
			continue
		}
		sum := sha256.Sum256(b)
		if got := hex.EncodeToString(sum[:]); got != file.SHA256 || int64(len(b)) != file.Bytes {
			c.Problems = append(c.Problems, Problem{file.Name, fmt.Sprintf("altered: SHA-256 %s (%d bytes), the manifest says %s (%d bytes)", got, len(b), file.SHA256, file.Bytes)})
		}
		files[file.Name] = b
	}
	_ = fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && !listed[p] {
			c.Problems = append(c.Problems, Problem{p, "not in the manifest"})
		}
		return nil
	})
	for _, name := range []string{RecordsCSV, RecordsParquet, QueryFile, RuleSetsFile, VerifyFile} {
		if !listed[name] {
			c.Problems = append(c.Problems, Problem{name, "not in the manifest"})
		}
	}
	if b, ok := files[RecordsParquet]; ok {
		recs, err := parquetlog.ReadRecords(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			c.Problems = append(c.Problems, Problem{RecordsParquet, err.Error()})
		} else {
			c.Records = len(recs)
			if len(recs) != c.Manifest.Records {
				c.Problems = append(c.Problems, Problem{RecordsParquet, fmt.Sprintf("%d records, the manifest says %d", len(recs), c.Manifest.Records)})
			}
			c.checkChains(recs)
		}
	}
	if b, ok := files[RecordsCSV]; ok {
		rows, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
		switch {
		case err != nil:
			c.Problems = append(c.Problems, Problem{RecordsCSV, err.Error()})
		case len(rows)-1 != c.Manifest.Records:
			c.Problems = append(c.Problems, Problem{RecordsCSV, fmt.Sprintf("%d records, the manifest says %d", len(rows)-1, c.Manifest.Records)})
		}
	}
	for _, file := range c.Manifest.Files {
		v, ok := strings.CutPrefix(file.Name, "rulesets/")
		v, ok2 := strings.CutSuffix(v, ".json")
		b, read := files[file.Name]
		if !ok || !ok2 || !read {
			continue
		}
		rs, err := audit.DecodeRuleSet(v, b)
		if err != nil {
			c.Problems = append(c.Problems, Problem{file.Name, err.Error()})
			continue
		}
		if got := ruleSetVersion(rs); got != v {
			c.Problems = append(c.Problems, Problem{file.Name, "its files hash to " + got + ", not to its version"})
			continue
		}
		c.RuleSets++
	}
	if b, ok := files[VerifyFile]; ok {
		if err := json.Unmarshal(b, &c.Verify); err != nil {
			c.Problems = append(c.Problems, Problem{VerifyFile, err.Error()})
		}
	}
	return c, nil
}

// checkChains checks each record's hash, and each record against the one
// before it in its chain when the pack holds both.
func (c *Checked) checkChains(recs []audit.Record) {
	byPos := map[string]map[uint64]*audit.Record{}
	for i := range recs {
		r := &recs[i]
		if byPos[r.Writer] == nil {
			byPos[r.Writer] = map[uint64]*audit.Record{}
		}
		byPos[r.Writer][r.Seq] = r
		if audit.ComputeHash(r) != r.Hash {
			c.Problems = append(c.Problems, Problem{RecordsParquet, fmt.Sprintf("writer %s, record %d (request %s): its content does not give its hash", r.Writer, r.Seq, r.RequestID)})
			continue
		}
		c.Hashes++
	}
	for i := range recs {
		r := &recs[i]
		prev, ok := byPos[r.Writer][r.Seq-1]
		if !ok || r.Seq == 0 {
			continue
		}
		c.Links++
		if r.PrevHash != prev.Hash {
			c.Problems = append(c.Problems, Problem{RecordsParquet, fmt.Sprintf("writer %s, record %d does not follow record %d", r.Writer, r.Seq, prev.Seq)})
		}
	}
}
