package main

// serve --rules https://... or oci://...: the rule set from a signed
// bundle, pulled (internal/pull) instead of rule files watched.

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/egress-authz/egress-authz/internal/bundle"
	"github.com/egress-authz/egress-authz/internal/config"
	"github.com/egress-authz/egress-authz/internal/pull"
	"github.com/egress-authz/egress-authz/rules"
)

// startupFetchTimeout bounds fetching the first bundle when none is kept.
const startupFetchTimeout = time.Minute

// openRemote returns the bundle source --rules names and the set to serve
// first, compiled: the bundle kept in the data directory, verified again,
// if there is one (the source is asked at once after start-up, and a
// newer bundle swapped in); else the source's, fetched now. With neither,
// start-up stops with the reasons.
func openRemote(cfg config.Config, log *slog.Logger) (*pull.Remote, *rules.Fetched, *rules.Table, error) {
	keys, err := readPublicKeys(cfg.RulesPublicKey)
	if err != nil {
		return nil, nil, nil, err
	}
	var roots *x509.CertPool
	if cfg.RulesCA != "" {
		data, err := os.ReadFile(cfg.RulesCA)
		if err != nil {
			return nil, nil, nil, fmt.Errorf("--rules-ca: %w", err)
		}
		roots = x509.NewCertPool()
		if !roots.AppendCertsFromPEM(data) {
			return nil, nil, nil, fmt.Errorf("--rules-ca %s: no PEM certificate", cfg.RulesCA)
		}
	}
	remote, err := pull.New(cfg.Rules, pull.Options{Keys: keys, RootCAs: roots,
		Dir: filepath.Join(cfg.DataDir, "rules-bundles"), UserAgent: "egress-authz/" + version})
	if err != nil {
		return nil, nil, nil, err
	}
	var problems []error
	kept, err := remote.Kept()
	if err != nil {
		log.Warn("the kept rule bundle is refused; fetching one from the source", "path", cfg.Rules, "error", err.Error())
		problems = append(problems, err)
	}
	if kept != nil {
		t, err := compileSources(kept.Sources)
		if err == nil {
			log.Info("serving the kept rule bundle until the source answers", "path", cfg.Rules,
				"revision", kept.Bundle.Revision, "source", kept.Source, "version", t.Version())
			return remote, kept, t, nil
		}
		log.Warn("the kept rule bundle does not compile; fetching one from the source", "path", cfg.Rules, "error", err.Error())
		problems = append(problems, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), startupFetchTimeout)
	defer cancel()
	f, err := remote.Fetch(ctx)
	if err == nil && f == nil {
		err = errors.New("the source answered with nothing") // cannot happen on a first fetch
	}
	var t *rules.Table
	if err == nil {
		t, err = compileSources(f.Sources)
	}
	if err != nil {
		return nil, nil, nil, errors.Join(append(problems, err)...)
	}
	if f.Accept != nil {
		if err := f.Accept(); err != nil {
			log.Warn("rule bundle served, but not kept", "path", cfg.Rules, "error", err.Error())
		}
	}
	return remote, f, t, nil
}

func compileSources(srcs []rules.Source) (*rules.Table, error) {
	set, err := rules.Parse(srcs...)
	if err != nil {
		return nil, err
	}
	return rules.Compile(set)
}

// readPublicKeys reads the Ed25519 public keys in files (each may hold
// several).
func readPublicKeys(files []string) ([]ed25519.PublicKey, error) {
	var keys []ed25519.PublicKey
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return nil, fmt.Errorf("--rules-public-key: %w", err)
		}
		k, err := bundle.ParsePublicKeys(data)
		if err != nil {
			return nil, fmt.Errorf("--rules-public-key %s: %w", f, err)
		}
		keys = append(keys, k...)
	}
	return keys, nil
}
