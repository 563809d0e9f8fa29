package main

import (
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// TestClonedDataDirLosesNoDecision: a server's data directory is copied
// (a volume clone), and the original and the copy then serve at once into
// one SQLite decision log. Every allow of both is recorded, the chains
// verify, and the fork is counted on /metrics: one server became a new
// writer.
func TestClonedDataDirLosesNoDecision(t *testing.T) {
	dirA, dirB := t.TempDir(), t.TempDir()
	dsn := "sqlite:" + filepath.Join(t.TempDir(), "decisions.db")
	args := []string{"--rules", examplesPath(t), "--audit", dsn}
	a := startServer(t, dirA, args...)
	first := startLoad(t, a.grpcAddr, "first", 2)
	first.waitAnswered(t, 50)
	first.halt()
	if code, _ := a.terminate(15 * time.Second); code != 0 {
		t.Fatalf("the first server exited %d", code)
	}
	if out, err := exec.Command("cp", "-a", filepath.Join(dirA, "data"), dirB).CombinedOutput(); err != nil {
		t.Fatalf("copy the data directory: %v: %s", err, out)
	}

	a = startServer(t, dirA, args...)
	b := startServer(t, dirB, args...)
	la, lb := startLoad(t, a.grpcAddr, "a", 4), startLoad(t, b.grpcAddr, "b", 4)
	la.waitAnswered(t, 300)
	lb.waitAnswered(t, 300)
	la.halt()
	lb.halt()
	forks := 0.0
	for _, p := range []*proc{a, b} {
		m := metricsClient{url: "http://" + p.adminAddr + "/metrics"}
		eventually(t, 20*time.Second, 20*time.Millisecond, "every record stored", func() (bool, string) {
			s := m.scrape(t)
			return s["egress_authz_audit_pending_records"] == 0, ""
		})
		forks += m.scrape(t)["egress_authz_audit_forks_total"]
	}
	if forks < 1 {
		t.Error("neither server counted the fork in egress_authz_audit_forks_total")
	}
	for _, p := range []*proc{a, b} {
		if code, _ := p.terminate(15 * time.Second); code != 0 {
			t.Errorf("a server exited %d", code)
		}
	}
	allowed := append(append(append([]string(nil), first.allowed...), la.allowed...), lb.allowed...)
	checkAllRecorded(t, recordedRequestIDs(t, dirA, dsn), allowed)
	verifyLog(t, a, dsn)
}
