package main

// rules bundle build|sign|verify|keygen: one signed file that carries a
// rule set to every cluster (internal/bundle), and the --public-key flag
// of the commands that read a rule set, which may be such a file.

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/egress-authz/egress-authz/internal/bundle"
	"github.com/egress-authz/egress-authz/internal/compliance"
	"github.com/egress-authz/egress-authz/internal/when"
	"github.com/egress-authz/egress-authz/rules"
)

const bundleUsage = `Usage:
  egress-authz rules bundle build PATH -o FILE [--revision REV] [--expires 30d] [--cases FILE] [--strict]
  egress-authz rules bundle sign --key KEY FILE [-o OUT]
  egress-authz rules bundle verify --public-key KEY [--public-key KEY...] FILE
  egress-authz rules bundle keygen --out NAME

A bundle is one signed file (tar.gz) that carries a rule set and its test
cases to every cluster: serve --rules https://... or oci://... pulls it, and
serves it only if a configured key signed it, every file matches its
manifest, it is newer than the bundle served, and it has not expired.
Run "egress-authz rules bundle COMMAND -h" for a command's flags.
`

func bundleCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, bundleUsage)
		return exitUsage
	}
	switch args[0] {
	case "build":
		return bundleBuildCmd(ctx, args[1:], stdout, stderr)
	case "sign":
		return bundleSignCmd(ctx, args[1:], stdout, stderr)
	case "verify":
		return bundleVerifyCmd(ctx, args[1:], stdout, stderr)
	case "keygen":
		return bundleKeygenCmd(args[1:], stdout, stderr)
	case "-h", "--help", "help":
		fmt.Fprint(stdout, bundleUsage)
		return exitOK
	}
	fmt.Fprintf(stderr, "egress-authz rules bundle: unknown command %q\n\n%s", args[0], bundleUsage)
	return exitUsage
}

func bundleBuildCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules bundle build", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("o", "", "write the bundle to `FILE` (required)")
	revision := fs.String("revision", "", "the bundle's `REV`ision: a build number, a commit (default: the time, 20060102T150405Z)")
	expires := fs.String("expires", "30d", "the bundle expires after this `DURATION`: servers refuse it then, so publish a new one before")
	casesPath := fs.String("cases", "", "test-case `FILE` the rules must pass; it goes into the bundle")
	strict := fs.Bool("strict", false, "refuse to build on lint warnings too")
	warnExpiry := fs.String("warn-expiry", "14d", "warn about rules expiring within this `DURATION`")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egress-authz rules bundle build PATH -o FILE [--revision REV] [--expires 30d] [--cases FILE]

Builds an unsigned bundle of the rule file or directory PATH: the rule files,
the test cases, and a manifest (revision, created, expires, each file's
SHA-256). The rules are linted and the cases run first, as "rules lint" and
"rules test" do: an error or a failed case means no bundle. Sign it next with
"egress-authz rules bundle sign --key KEY FILE".

Exit status: 0 built, 1 invalid rules, a failed case or an error.

Flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := parseArgs(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 || *out == "" {
		fs.Usage()
		return exitUsage
	}
	life, err := when.ParseDuration(*expires)
	if err != nil || life <= 0 {
		fmt.Fprintf(stderr, "egress-authz rules bundle build: --expires %q: want a positive duration like 30d\n", *expires)
		return exitUsage
	}
	window, err := when.ParseDuration(*warnExpiry)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz rules bundle build: --warn-expiry:", err)
		return exitUsage
	}
	path := fs.Arg(0)
	now := time.Now().UTC().Truncate(time.Second)
	if *revision == "" {
		*revision = now.Format("20060102T150405Z")
	}

	// Lint, as "rules lint" does: skipped files and warnings first.
	var skipped []rules.Diagnostic
	rd := rules.Reader{Warn: func(d rules.Diagnostic) { skipped = append(skipped, d) }}
	srcs, err := rd.ReadSources(ctx, path)
	if err != nil {
		fmt.Fprintf(stdout, "%s: %v\n", path, err)
		return exitFail
	}
	for _, w := range skipped {
		fmt.Fprintf(stdout, "%s: warning: %s\n", w.Pos, w.Msg)
	}
	set, err := rules.Parse(srcs...)
	var table *rules.Table
	if err == nil {
		table, err = rules.Compile(set)
	}
	if err != nil {
		printInvalid(stdout, "text", err)
		fmt.Fprintf(stderr, "egress-authz rules bundle build: the rule set %s is invalid (errors above); no bundle written\n", path)
		return exitFail
	}
	warnings := rules.Lint(set, now, window)
	for _, w := range warnings {
		fmt.Fprintf(stdout, "%s: warning: %s\n", w.Pos, w.Msg)
	}
	if *strict && len(warnings)+len(skipped) > 0 {
		fmt.Fprintf(stderr, "egress-authz rules bundle build: %s with --strict; no bundle written\n", plural(len(warnings)+len(skipped), "warning"))
		return exitFail
	}

	// The cases, as "rules test" runs them.
	in := bundle.Input{Rules: srcs, Revision: *revision, Created: now, Expires: now.Add(life)}
	passed := 0
	if *casesPath != "" {
		if st, err := os.Stat(*casesPath); err == nil && st.IsDir() {
			fmt.Fprintf(stderr, "egress-authz rules bundle build: --cases %s: a directory; want the case file\n", *casesPath)
			return exitUsage
		}
		csrcs, err := rules.Reader{}.ReadSources(ctx, *casesPath)
		if err != nil {
			fmt.Fprintln(stderr, "egress-authz rules bundle build: --cases:", err)
			return exitFail
		}
		cases, err := rules.ParseCases(csrcs[0])
		var rep *compliance.CaseReport
		if err == nil {
			rep, err = compliance.RunCases(table, cases, now)
		}
		if err != nil {
			printInvalid(stdout, "text", err)
			fmt.Fprintf(stderr, "egress-authz rules bundle build: the case file %s is invalid (errors above); no bundle written\n", *casesPath)
			return exitFail
		}
		if rep.Failed > 0 {
			printCaseResults(stdout, path, cases, rep)
			fmt.Fprintf(stderr, "egress-authz rules bundle build: %s failed; no bundle written\n", plural(rep.Failed, "case"))
			return exitFail
		}
		passed = rep.Passed
		in.Cases = csrcs
	}

	data, err := bundle.Build(in)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz rules bundle build:", err)
		return exitFail
	}
	if err := writeFileAtomic(*out, data); err != nil {
		fmt.Fprintln(stderr, "egress-authz rules bundle build:", err)
		return exitFail
	}
	fmt.Fprintf(stdout, "%s: revision %s, version %s, %s in %s, %s passed, expires %s\n",
		*out, *revision, set.Version, plural(len(set.Rules), "rule"), plural(len(srcs), "file"),
		plural(passed, "case"), now.Add(life).Format(time.RFC3339))
	fmt.Fprintf(stdout, "unsigned: sign it with egress-authz rules bundle sign --key KEY %s\n", shellQuote(*out))
	return exitOK
}

func bundleSignCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules bundle sign", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keyFile := fs.String("key", "", "Ed25519 private key `FILE` (PEM, PKCS #8: rules bundle keygen, or openssl genpkey -algorithm ed25519)")
	out := fs.String("o", "", "write the signed bundle to `FILE` (default: FILE itself)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egress-authz rules bundle sign --key KEY FILE [-o OUT]

Adds a signature by KEY to the bundle FILE. Other signatures are kept, so a
bundle can carry the old and the new key's while servers move from one to
the other; signing again with the same key replaces its signature. Only a
bundle whose files match its manifest is signed.

Flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := parseArgs(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 || *keyFile == "" {
		fs.Usage()
		return exitUsage
	}
	keyPEM, err := os.ReadFile(*keyFile)
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz rules bundle sign: --key:", err)
		return exitFail
	}
	key, err := bundle.ParsePrivateKey(keyPEM)
	if err != nil {
		fmt.Fprintf(stderr, "egress-authz rules bundle sign: --key %s: %v\n", *keyFile, err)
		return exitFail
	}
	b, err := readBundleFile(ctx, fs.Arg(0))
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz rules bundle sign:", err)
		return exitFail
	}
	data, err := b.Sign(key)
	if err != nil {
		fmt.Fprintf(stderr, "egress-authz rules bundle sign: %s: %v\n", fs.Arg(0), err)
		return exitFail
	}
	dst := *out
	if dst == "" {
		dst = fs.Arg(0)
	}
	if err := writeFileAtomic(dst, data); err != nil {
		fmt.Fprintln(stderr, "egress-authz rules bundle sign:", err)
		return exitFail
	}
	id := bundle.KeyID(key.Public().(ed25519.PublicKey))
	fmt.Fprintf(stdout, "%s: revision %s signed by key %s (%s in all)\n", dst, b.Manifest.Revision, id, plural(len(b.Signatures())+1-countKey(b, id), "signature"))
	if !time.Now().Before(b.Manifest.Expires) {
		fmt.Fprintf(stderr, "egress-authz rules bundle sign: warning: the bundle expired at %s: servers refuse it\n", b.Manifest.Expires.Format(time.RFC3339))
	}
	return exitOK
}

func countKey(b *bundle.Bundle, id string) int {
	n := 0
	for _, s := range b.Signatures() {
		if s.KeyID == id {
			n++
		}
	}
	return n
}

func bundleVerifyCmd(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules bundle verify", flag.ContinueOnError)
	fs.SetOutput(stderr)
	keys := addBundleKeys(fs, "rules bundle verify", stderr)
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egress-authz rules bundle verify --public-key KEY [--public-key KEY...] FILE

Checks the bundle FILE as a server would before serving it: a signature by
one of the keys, every file as the manifest says (none missing, none extra),
not expired, and rules that parse and compile; then runs the test cases it
carries. Prints what the bundle is.

Exit status: 0 a server would serve it, 1 it would not (the reason is printed).

Flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := parseArgs(fs, args); !ok {
		return code
	}
	if fs.NArg() != 1 || len(keys.files) == 0 {
		fs.Usage()
		return exitUsage
	}
	path := fs.Arg(0)
	pubs, err := keys.load()
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz rules bundle verify:", err)
		return exitFail
	}
	b, err := readBundleFile(ctx, path)
	if err != nil {
		fmt.Fprintf(stdout, "%s: refused: %v\n", path, err)
		return exitFail
	}
	now := time.Now().UTC()
	v, err := b.Verify(bundle.VerifyOptions{Keys: pubs, Now: now})
	if err != nil {
		fmt.Fprintf(stdout, "%s: refused: %s\n", path, strings.ReplaceAll(err.Error(), "\n", "; "))
		return exitFail
	}
	set, err := rules.Parse(v.Rules...)
	var table *rules.Table
	if err == nil {
		table, err = rules.Compile(set)
	}
	if err != nil {
		fmt.Fprintf(stdout, "%s: refused: its rules are invalid:\n", path)
		printInvalid(stdout, "text", err)
		return exitFail
	}
	m := v.Manifest
	fmt.Fprintf(stdout, "%s: verified\n", path)
	fmt.Fprintf(stdout, "revision:   %s\n", m.Revision)
	fmt.Fprintf(stdout, "created:    %s\n", m.Created.Format(time.RFC3339))
	fmt.Fprintf(stdout, "expires:    %s (in %s)\n", m.Expires.Format(time.RFC3339), when.FormatDuration(m.Expires.Sub(now).Round(time.Hour)))
	fmt.Fprintf(stdout, "ruleset:    %s (%s in %s)\n", m.RuleSet, plural(len(set.Rules), "rule"), plural(len(v.Rules), "file"))
	fmt.Fprintf(stdout, "digest:     %s\n", v.Digest)
	fmt.Fprintf(stdout, "signed by:  %s\n", strings.Join(v.SignedBy, ", "))
	fmt.Fprintln(stdout, "files:")
	for _, f := range m.Files {
		fmt.Fprintf(stdout, "  %s  %d bytes  sha256 %s\n", f.Path, f.Size, f.SHA256)
	}
	code := exitOK
	for _, c := range v.Cases {
		cases, err := rules.ParseCases(c)
		var rep *compliance.CaseReport
		if err == nil {
			rep, err = compliance.RunCases(table, cases, now)
		}
		if err != nil {
			fmt.Fprintf(stdout, "%s: the case file is invalid:\n", c.Name)
			printInvalid(stdout, "text", err)
			code = exitFail
			continue
		}
		fmt.Fprintf(stdout, "cases %s: ", c.Name)
		if rep.Failed == 0 {
			fmt.Fprintf(stdout, "%d passed\n", rep.Passed)
			continue
		}
		fmt.Fprintln(stdout)
		printCaseResults(stdout, path, cases, rep)
		code = exitFail
	}
	return code
}

func bundleKeygenCmd(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("rules bundle keygen", flag.ContinueOnError)
	fs.SetOutput(stderr)
	out := fs.String("out", "", "write the key pair to `NAME`.key (private, mode 0600) and NAME.pub (public)")
	fs.Usage = func() {
		fmt.Fprint(stderr, `Usage: egress-authz rules bundle keygen --out NAME

Makes an Ed25519 signing key: NAME.key (PEM, PKCS #8; keep it in CI's
secrets, nowhere else) and NAME.pub (PEM; give it to every server with
--rules-public-key). An existing file is never overwritten.

Flags:
`)
		fs.PrintDefaults()
	}
	if code, ok := parseArgs(fs, args); !ok {
		return code
	}
	if fs.NArg() != 0 || *out == "" {
		fs.Usage()
		return exitUsage
	}
	privPEM, pubPEM, err := bundle.GenerateKey()
	if err != nil {
		fmt.Fprintln(stderr, "egress-authz rules bundle keygen:", err)
		return exitFail
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{{*out + ".key", privPEM, 0o600}, {*out + ".pub", pubPEM, 0o644}} {
		w, err := os.OpenFile(f.name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, f.mode)
		if err == nil {
			_, err = w.Write(f.data)
			if cerr := w.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			fmt.Fprintln(stderr, "egress-authz rules bundle keygen:", err)
			return exitFail
		}
	}
	keys, _ := bundle.ParsePublicKeys(pubPEM)
	fmt.Fprintf(stdout, "%s.key, %s.pub: key %s\n", *out, *out, bundle.KeyID(keys[0]))
	return exitOK
}

// bundleKeys is the --public-key flag of a command that reads a rule set
// (diff, explain, test) or a bundle (verify).
type bundleKeys struct {
	cmd    string
	files  []string
	stderr io.Writer
}

func addBundleKeys(fs *flag.FlagSet, cmd string, stderr io.Writer) *bundleKeys {
	k := &bundleKeys{cmd: cmd, stderr: stderr}
	fs.Func("public-key", "with a bundle file: Ed25519 public key `FILE` (PEM) it must be signed by; repeatable", func(s string) error {
		k.files = append(k.files, s)
		return nil
	})
	return k
}

func (k *bundleKeys) load() ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for _, f := range k.files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--public-key: %w", err)
		}
		ks, err := bundle.ParsePublicKeys(data)
		if err != nil {
			return nil, fmt.Errorf("--public-key %s: %w", f, err)
		}
		keys = append(keys, ks...)
	}
	return keys, nil
}

// loadBundle reads the rule set in the bundle file at path: its files
// must match its manifest, and with --public-key, a signature by one of
// the keys must verify. An expired bundle is read (to look at an old one),
// with a note; so is an unsigned one when no key is given.
func (k *bundleKeys) loadBundle(path string) (*rules.Set, error) {
	keys, err := k.load()
	if err != nil {
		return nil, err
	}
	b, err := readBundleFile(context.Background(), path)
	if err != nil {
		return nil, err
	}
	v, err := b.Verify(bundle.VerifyOptions{Keys: keys, IgnoreExpiry: true})
	if err != nil {
		return nil, fmt.Errorf("bundle: %s", strings.ReplaceAll(err.Error(), "\n", "; "))
	}
	if len(keys) == 0 {
		fmt.Fprintf(k.stderr, "egress-authz %s: %s: note: signature not checked (give --public-key to check it)\n", k.cmd, path)
	}
	if !time.Now().Before(v.Manifest.Expires) {
		fmt.Fprintf(k.stderr, "egress-authz %s: %s: note: revision %s expired at %s; servers refuse it\n", k.cmd, path, v.Manifest.Revision, v.Manifest.Expires.Format(time.RFC3339))
	}
	return rules.Parse(v.Rules...)
}

// isBundleFile reports whether path names a bundle rather than rule
// files: a .tar.gz or .tgz name, or a regular file starting with gzip's
// magic number (a rule file is YAML text, which never does).
func isBundleFile(path string) bool {
	if strings.HasSuffix(path, ".tar.gz") || strings.HasSuffix(path, ".tgz") {
		return true
	}
	st, err := os.Stat(path)
	if err != nil || !st.Mode().IsRegular() {
		return false
	}
	f, err := os.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	head := make([]byte, 2)
	n, _ := io.ReadFull(f, head)
	return bytes.Equal(head[:n], []byte{0x1f, 0x8b})
}

// readBundleFile reads and opens the bundle file at path, within the
// bounds rule files are read in (a regular file, at most bundle.MaxSize).
func readBundleFile(ctx context.Context, path string) (*bundle.Bundle, error) {
	srcs, err := rules.Reader{MaxFileSize: bundle.MaxSize}.ReadSources(ctx, path)
	if err != nil {
		return nil, err
	}
	b, err := bundle.Open(srcs[0].Data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return b, nil
}

// writeFileAtomic writes data to path by a rename, so that a reader sees
// the old file or the new one.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		tmp.Close()
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}
