package admin

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/egress-authz/egress-authz/internal/audit"
	"github.com/egress-authz/egress-authz/internal/audit/audittest"
	"github.com/egress-authz/egress-authz/internal/audit/sqlstore"
)

// filledSQLite is a SQLite decision log of n records of one chain.
func filledSQLite(t *testing.T, n int) *sqlstore.SQLite {
	t.Helper()
	st, err := sqlstore.OpenSQLite(context.Background(), filepath.Join(t.TempDir(), "d.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	prev := ""
	for from := 0; from < n; from += 5000 {
		var recs []audit.Record
		for i := from; i < min(n, from+5000); i++ {
			r := audittest.Sample(i)
			r.Writer, r.Seq, r.PrevHash = "w", uint64(i+1), prev
			r.Hash = audit.ComputeHash(&r)
			prev = r.Hash
			recs = append(recs, r)
		}
		if err := st.Write(context.Background(), recs); err != nil {
			t.Fatal(err)
		}
	}
	return st
}

// TestSlowReadersAreCutOff: clients that ask for the whole log and then
// stop reading are disconnected once a write has blocked for
// ChunkTimeout; meanwhile they hold no connection of the store, so that
// /v1/verify and a page still answer, and an export beyond MaxExports is
// a 503 with Retry-After.
func TestSlowReadersAreCutOff(t *testing.T) {
	oldT, oldP := ChunkTimeout, PageRecords
	ChunkTimeout, PageRecords = 2*time.Second, 1000
	t.Cleanup(func() { ChunkTimeout, PageRecords = oldT, oldP })
	st := filledSQLite(t, 30_000)
	mux := http.NewServeMux()
	mux.Handle("GET /v1/decisions", DecisionsHandler(st, time.Now))
	mux.Handle("GET /v1/verify", VerifyHandler(st, nil, time.Now))
	srv := httptest.NewUnstartedServer(mux)
	var active, closed atomic.Int32
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		switch s {
		case http.StateActive:
			active.Add(1)
		case http.StateClosed:
			closed.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	var slow []net.Conn
	for range MaxExports {
		c, err := net.Dial("tcp", srv.Listener.Addr().String())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		_ = c.(*net.TCPConn).SetReadBuffer(4096)
		if _, err := io.WriteString(c, "GET /v1/decisions?limit=0&format=ndjson HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			t.Fatal(err)
		}
		slow = append(slow, c) // and never read
	}
	client := &http.Client{Timeout: 30 * time.Second}
	get := func(path string) *http.Response {
		t.Helper()
		resp, err := client.Get(srv.URL + path)
		if err != nil {
			t.Fatalf("GET %s while exports are stuck: %v", path, err)
		}
		t.Cleanup(func() { resp.Body.Close() })
		return resp
	}
	audittest.WaitUntil(t, "the exports under way", func() bool { return active.Load() >= int32(len(slow)) })
	if resp := get("/v1/decisions?limit=0&format=ndjson"); resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
		t.Errorf("an export beyond %d: %s, Retry-After %q; want 503 with Retry-After", MaxExports, resp.Status, resp.Header.Get("Retry-After"))
	}
	if resp := get("/v1/verify"); resp.StatusCode != http.StatusOK {
		t.Errorf("/v1/verify while exports are stuck: %s", resp.Status)
	}
	if resp := get("/v1/decisions?limit=10"); resp.StatusCode != http.StatusOK {
		t.Errorf("a page while exports are stuck: %s", resp.Status)
	}
	audittest.WaitUntil(t, fmt.Sprintf("the %d stuck exports disconnected", len(slow)), func() bool {
		return closed.Load() >= int32(len(slow))
	})
}
