//go:build linux || darwin

package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

// TestRulesLintSkipsFilesThatAreNotRegular: a named pipe and a link to
// /dev/zero in a rule directory are skipped, each with a warning, and the
// rest is linted (lint once waited on the pipe for ever, and read
// /dev/zero until it was killed at 24 GB); given as the path itself, a
// link to /dev/zero is an error. runCLI bounds each run in time.
func TestRulesLintSkipsFilesThatAreNotRegular(t *testing.T) {
	if _, err := os.Stat("/dev/zero"); err != nil {
		t.Skipf("no /dev/zero: %v", err)
	}
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "a.yaml"), `apiVersion: egress-authz/v1
kind: RuleSet
trustDomains: [cluster.local]
rules:
  - id: a
    action: allow
    from: {namespaces: [a]}
    to: {hosts: [a.example.com]}
`)
	fifo := filepath.Join(dir, "pipe.yaml")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("mkfifo: %v", err)
	}
	zero := filepath.Join(dir, "zero.yaml")
	if err := os.Symlink("/dev/zero", zero); err != nil {
		t.Fatal(err)
	}

	r := runCLI(t, dir, "rules", "lint", dir)
	want := fifo + ": warning: skipped: a named pipe (FIFO), not a regular file (rule files must be regular files or links to them)\n" +
		zero + ": warning: skipped: a character device, not a regular file (rule files must be regular files or links to them)\n"
	if r.code != exitOK || r.stdout != want || !strings.Contains(r.stderr, "1 rule, 2 warnings") {
		t.Errorf("want exit 0 and the two warnings\n%s", r)
	}
	if r := runCLI(t, dir, "rules", "lint", "--strict", dir); r.code != exitFail {
		t.Errorf("--strict: want exit 1 on the skipped files\n%s", r)
	}
	r = runCLI(t, dir, "rules", "lint", zero)
	if r.code != exitFail || !strings.Contains(r.stdout, zero+" is a character device, not a regular file") {
		t.Errorf("lint of a link to /dev/zero: want exit 1 saying it is not a regular file\n%s", r)
	}
}

// TestRulesLintQuotesNothingOfAFileThatIsNotARuleSet: a rule file linked
// to an /etc/passwd-like file or a file of secrets is reported by type and
// place, without a word of it.
func TestRulesLintQuotesNothingOfAFileThatIsNotARuleSet(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "passwd")
	writeFile(t, target, "root:x:0:0:root:/root:/bin/bash\nsk_live_51H8xQ2eZvKYlo2C9Xq\n")
	link := filepath.Join(dir, "rules.yaml")
	if err := os.Symlink(target, link); err != nil {
		t.Fatal(err)
	}
	r := runCLI(t, dir, "rules", "lint", link)
	if r.code != exitFail || r.stdout != link+":1:1: rule set must be a mapping, got a string; see docs/rules.md#rule-files\n" {
		t.Errorf("want exit 1 and the error by type and place\n%s", r)
	}
	if strings.Contains(r.stdout+r.stderr, "root") || strings.Contains(r.stdout+r.stderr, "sk_live") {
		t.Errorf("lint quotes the linked file\n%s", r)
	}
}
