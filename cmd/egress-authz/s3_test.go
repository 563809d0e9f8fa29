package main

// The fleet's decision log: servers of several clusters upload their
// segments into one bucket of a real S3 server (versitygw), which audit
// query and audit verify read as one log.

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/parquet-go/parquet-go"

	"github.com/egress-authz/egress-authz/internal/audit/s3log"
	"github.com/egress-authz/egress-authz/internal/s3test"
)

// fleetServer starts a server of cluster that writes to the bucket dsn,
// closing a segment a second after its first record.
func fleetServer(t *testing.T, dir, dsn, cluster string, env []string) *proc {
	t.Helper()
	return startServerEnv(t, dir, env, "--rules", examplesPath(t), "--audit", dsn, "--cluster", cluster,
		"--audit-segment-age", "1s", "--shutdown-grace", "15s")
}

// segmentObject is one segment in the bucket, as the POSIX backend keeps it.
type segmentObject struct {
	path, writer string
	first, last  uint64
}

// bucketSegments lists the segments of cluster under the bucket's prefix,
// by writer and first record.
func bucketSegments(t *testing.T, s3 *s3test.Server, bucket, prefix, cluster string) []segmentObject {
	t.Helper()
	paths, err := filepath.Glob(filepath.Join(s3.ObjectPath(bucket, prefix), "cluster="+cluster, "day=*", "*.parquet"))
	if err != nil {
		t.Fatal(err)
	}
	var out []segmentObject
	for _, p := range paths {
		parts := strings.Split(strings.TrimSuffix(filepath.Base(p), ".parquet"), "-")
		if len(parts) < 3 {
			t.Fatalf("segment %s: not WRITER-FIRST-LAST.parquet", p)
		}
		first, err1 := strconv.ParseUint(parts[len(parts)-2], 10, 64)
		last, err2 := strconv.ParseUint(parts[len(parts)-1], 10, 64)
		if err1 != nil || err2 != nil {
			t.Fatalf("segment %s: not WRITER-FIRST-LAST.parquet", p)
		}
		out = append(out, segmentObject{path: p, writer: strings.Join(parts[:len(parts)-2], "-"), first: first, last: last})
	}
	slices.SortFunc(out, func(a, b segmentObject) int {
		if c := strings.Compare(a.writer, b.writer); c != 0 {
			return c
		}
		return int(a.first) - int(b.first)
	})
	return out
}

// verifyJSON runs audit verify --format json on dsn.
func verifyJSON(t *testing.T, dir, dsn string) (int, struct {
	OK      bool              `json:"ok"`
	Records int               `json:"records"`
	Writers map[string]uint64 `json:"writers"`
	Breaks  []struct {
		Kind    string `json:"kind"`
		Writer  string `json:"writer"`
		Seq     uint64 `json:"seq"`
		Problem string `json:"problem"`
	} `json:"breaks"`
}) {
	t.Helper()
	r := runCLI(t, dir, "audit", "verify", "--audit", dsn, "--format", "json")
	var v struct {
		OK      bool              `json:"ok"`
		Records int               `json:"records"`
		Writers map[string]uint64 `json:"writers"`
		Breaks  []struct {
			Kind    string `json:"kind"`
			Writer  string `json:"writer"`
			Seq     uint64 `json:"seq"`
			Problem string `json:"problem"`
		} `json:"breaks"`
	}
	if err := json.Unmarshal([]byte(r.stdout), &v); err != nil {
		t.Fatalf("audit verify --format json: %v\n%s", err, r)
	}
	return r.code, v
}

// TestFleetBucket: two servers of two clusters, each with its own data
// directory, write into one bucket under load. audit query reads every
// record of both, --cluster one cluster's; audit verify checks both
// chains, and names an edited row and a deleted object.
func TestFleetBucket(t *testing.T) {
	s3 := s3test.Start(t)
	bucket := s3.Bucket("fleet-decisions")
	dsn := "s3://" + bucket + "/decisions"
	clusters := []string{"eu-west-1", "us-east-1"}
	var srvs []*proc
	var loads []*load
	for _, c := range clusters {
		srv := fleetServer(t, t.TempDir(), dsn, c, nil)
		srvs = append(srvs, srv)
		loads = append(loads, startLoad(t, srv.grpcAddr, c, 3))
	}
	for _, l := range loads {
		l.waitAnswered(t, 200)
	}
	time.Sleep(4 * time.Second) // several segments per writer
	// The fleet as one log: one cluster's admin API reads the other's
	// records from the bucket.
	eventually(t, 20*time.Second, 200*time.Millisecond, "us-east-1's records in eu-west-1's /v1/decisions", func() (bool, string) {
		_, body := httpGet(t, "http://"+srvs[0].adminAddr+"/v1/decisions?cluster=us-east-1&limit=5", nil)
		page := decodePage(t, "/v1/decisions", body)
		for _, r := range page.Records {
			if !strings.HasPrefix(r.RequestID, "us-east-1-") {
				t.Fatalf("/v1/decisions?cluster=us-east-1 returned %s", r.RequestID)
			}
		}
		return page.Count == 5, body
	})
	for i, l := range loads {
		l.halt()
		if code, _ := srvs[i].terminate(30 * time.Second); code != 0 {
			t.Fatalf("server of %s exited %d after SIGTERM, want 0", clusters[i], code)
		}
		for _, s := range l.odd {
			t.Errorf("improper answer: %s", s)
		}
		if len(l.allowed) == 0 {
			t.Fatalf("no Check of %s was allowed", clusters[i])
		}
	}
	dir := t.TempDir()

	all := recordedRequestIDs(t, dir, dsn)
	t.Logf("%d records in the bucket; %d and %d allowed", len(all), len(loads[0].allowed), len(loads[1].allowed))
	for _, l := range loads {
		checkAllRecorded(t, all, l.allowed)
	}
	if want := len(loads[0].allowed) + len(loads[1].allowed); len(all) != want {
		t.Errorf("audit query of the bucket: %d request ids, want the %d allowed", len(all), want)
	}
	eu := recordedRequestIDs(t, dir, dsn, "--cluster", clusters[0])
	checkAllRecorded(t, eu, loads[0].allowed)
	if len(eu) != len(loads[0].allowed) {
		t.Errorf("audit query --cluster %s: %d request ids, want its %d", clusters[0], len(eu), len(loads[0].allowed))
	}
	for id := range eu {
		if !strings.HasPrefix(id, clusters[0]+"-") {
			t.Errorf("audit query --cluster %s returned %s", clusters[0], id)
		}
	}

	r := runCLI(t, dir, "rules", "suggest", "--from", dsn, "--namespace", "payments", "--since", "1h")
	if r.code != 0 || !strings.Contains(r.stdout, "api.stripe.com") || !strings.Contains(r.stdout, "/v1/charges") {
		t.Errorf("rules suggest --from %s: want a rule for POST api.stripe.com/v1/charges\n%s", dsn, r)
	}

	code, v := verifyJSON(t, dir, dsn)
	if code != 0 || !v.OK || len(v.Writers) != 2 || v.Records != len(all) {
		t.Fatalf("audit verify of the bucket: exit %d, %+v; want exit 0, 2 writers, %d records", code, v, len(all))
	}

	segs := bucketSegments(t, s3, bucket, "decisions", clusters[0])
	if len(segs) < 3 {
		t.Fatalf("want at least 3 segments of %s in the bucket, got %d", clusters[0], len(segs))
	}
	t.Run("the_readme_queries", func(t *testing.T) {
		allowed := map[string]int{}
		for i, c := range clusters {
			allowed[c] = len(loads[i].allowed)
		}
		checkFleetQueries(t, s3.ObjectPath(bucket, "decisions"), segs[0].path, allowed)
	})
	mid := segs[1]
	t.Run("an_edited_row_is_named", func(t *testing.T) {
		// As someone with write access to the bucket would: the object
		// downloaded, one row edited, uploaded again (an object edited
		// where the server keeps it fails S3's own checksum instead).
		orig, err := os.ReadFile(mid.path)
		if err != nil {
			t.Fatal(err)
		}
		b, err := s3log.NewBucket(context.Background(), dsn)
		if err != nil {
			t.Fatal(err)
		}
		name, err := filepath.Rel(s3.ObjectPath(bucket, "decisions"), mid.path)
		if err != nil {
			t.Fatal(err)
		}
		name = filepath.ToSlash(name)
		defer func() {
			if err := b.Put(context.Background(), name, orig); err != nil {
				t.Errorf("restore %s: %v", name, err)
			}
		}()
		local := filepath.Join(t.TempDir(), "segment.parquet")
		if err := os.WriteFile(local, orig, 0o644); err != nil {
			t.Fatal(err)
		}
		edited := mid.first + 1
		rewriteParquet(t, local, func(t *testing.T, seqCol, decisionCol int, rows []parquet.Row) []parquet.Row {
			for _, row := range rows {
				if uint64(row[seqCol].Int64()) == edited {
					row[decisionCol] = parquet.ByteArrayValue([]byte("deny")).Level(0, 0, decisionCol)
					return rows
				}
			}
			t.Fatalf("no record %d in %s", edited, mid.path)
			return nil
		})
		data, err := os.ReadFile(local)
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Put(context.Background(), name, data); err != nil {
			t.Fatal(err)
		}
		code, v := verifyJSON(t, dir, dsn)
		if code != 1 || v.OK || len(v.Breaks) != 1 || v.Breaks[0].Kind != "edited" || v.Breaks[0].Seq != edited || v.Breaks[0].Writer != mid.writer {
			t.Errorf("audit verify after editing record %d of %s: exit %d, %+v; want one break, edited, at that record", edited, mid.writer, code, v)
		}
	})
	t.Run("a_deleted_object_is_named", func(t *testing.T) {
		if err := os.Remove(mid.path); err != nil {
			t.Fatal(err)
		}
		code, v := verifyJSON(t, dir, dsn)
		want := strconv.FormatUint(mid.first, 10) + ".." + strconv.FormatUint(mid.last, 10)
		if code != 1 || v.OK || len(v.Breaks) != 1 || v.Breaks[0].Kind != "deleted" || v.Breaks[0].Writer != mid.writer ||
			!strings.Contains(v.Breaks[0].Problem, want) {
			t.Errorf("audit verify after deleting %s: exit %d, %+v; want one break naming records %s deleted", filepath.Base(mid.path), code, v, want)
		}
		r := runCLI(t, dir, "audit", "verify", "--audit", dsn)
		if r.code != 1 || !strings.Contains(r.stdout, want) {
			t.Errorf("audit verify (text) after deleting a segment: want exit 1 naming records %s\n%s", want, r)
		}
	})
}

// metricValue returns the value of the series named by the text
// exposition line prefix (name{labels}), or "" when there is none.
func metricValue(t *testing.T, srv *proc, series string) string {
	t.Helper()
	_, body := httpGet(t, "http://"+srv.adminAddr+"/metrics", nil)
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, series+" "); ok {
			return v
		}
	}
	return ""
}

// TestS3DownMidLoad stops the S3 server for 20 s of a load run: the sink
// shows failing in /metrics, Checks go on being allowed (the records wait
// in the write-ahead log and the staged segments), and once the server is
// back every allow is in the bucket, once.
func TestS3DownMidLoad(t *testing.T) {
	s3 := s3test.Start(t)
	bucket := s3.Bucket("decisions")
	dsn := "s3://" + bucket + "/fleet"
	srv := fleetServer(t, t.TempDir(), dsn, "eu-west-1", nil)
	failing := `egress_authz_audit_sink_failing{sink="` + dsn + `"}`
	l := startLoad(t, srv.grpcAddr, "down", 2)
	l.waitAnswered(t, 100)
	s3.Stop()
	before := l.answered.Load()
	eventually(t, 15*time.Second, 100*time.Millisecond, "the S3 sink shown failing in /metrics", func() (bool, string) {
		v := metricValue(t, srv, failing)
		return v == "1", failing + " " + v
	})
	time.Sleep(20 * time.Second)
	pending := metricValue(t, srv, "egress_authz_audit_pending_records")
	t.Logf("S3 down for 20 s: %d Checks answered meanwhile, %s records pending", l.answered.Load()-before, pending)
	if l.answered.Load()-before < 100 {
		t.Errorf("only %d Checks answered while S3 was down: the server should go on deciding", l.answered.Load()-before)
	}
	s3.Restart()
	eventually(t, 90*time.Second, 200*time.Millisecond, "the S3 sink recovered", func() (bool, string) {
		v := metricValue(t, srv, failing)
		return v == "0", failing + " " + v
	})
	l.halt()
	if code, _ := srv.terminate(30 * time.Second); code != 0 {
		t.Errorf("exit %d after SIGTERM, want 0", code)
	}
	for _, s := range l.odd {
		t.Errorf("improper answer: %s", s)
	}
	recorded := recordedRequestIDs(t, t.TempDir(), dsn)
	checkAllRecorded(t, recorded, l.allowed)
	if len(recorded) != len(l.allowed) {
		t.Errorf("%d request ids in the bucket, want the %d allowed", len(recorded), len(l.allowed))
	}
	if code, v := verifyJSON(t, t.TempDir(), dsn); code != 0 || !v.OK {
		t.Errorf("audit verify: exit %d, %+v", code, v)
	}
}

// holdingProxy stands between a server and S3 and holds PUT requests
// (uploads): before forwarding them, or after, with the response not yet
// returned. Other requests pass.
type holdingProxy struct {
	after   bool // forward, then hold the response
	proxy   *httputil.ReverseProxy
	held    atomic.Int64
	release chan struct{}
	once    sync.Once
}

func (p *holdingProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPut {
		p.proxy.ServeHTTP(w, r)
		return
	}
	if !p.after {
		p.held.Add(1)
		select {
		case <-p.release:
		case <-r.Context().Done():
		}
		// Never sent on: the server died first.
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	rec := &heldResponse{header: http.Header{}}
	p.proxy.ServeHTTP(rec, r)
	p.held.Add(1)
	select {
	case <-p.release:
	case <-r.Context().Done():
		return // stored, but the server never heard so
	}
	for k, v := range rec.header {
		w.Header()[k] = v
	}
	w.WriteHeader(rec.code)
	w.Write(rec.body)
}

func (p *holdingProxy) stop() { p.once.Do(func() { close(p.release) }) }

// heldResponse keeps a response to send it later.
type heldResponse struct {
	header http.Header
	code   int
	body   []byte
}

func (h *heldResponse) Header() http.Header { return h.header }
func (h *heldResponse) WriteHeader(code int) {
	if h.code == 0 {
		h.code = code
	}
}
func (h *heldResponse) Write(b []byte) (int, error) {
	if h.code == 0 {
		h.code = http.StatusOK
	}
	h.body = append(h.body, b...)
	return len(b), nil
}

// TestS3KillDuringUpload kills the server (SIGKILL) while a segment's
// upload is in flight, once before S3 has it and once after S3 stored it
// but before the server heard: the restarted server uploads what is
// missing, and every allow is in the bucket exactly once.
func TestS3KillDuringUpload(t *testing.T) {
	s3 := s3test.Start(t)
	target, err := url.Parse(s3.Endpoint)
	if err != nil {
		t.Fatal(err)
	}
	for _, after := range []bool{false, true} {
		name := "before_s3_has_it"
		if after {
			name = "after_s3_stored_it"
		}
		t.Run(name, func(t *testing.T) {
			bucket := s3.Bucket(strings.ReplaceAll(name, "_", "-"))
			dsn := "s3://" + bucket + "/fleet"
			p := &holdingProxy{after: after, proxy: httputil.NewSingleHostReverseProxy(target), release: make(chan struct{})}
			p.proxy.ErrorLog = nil
			p.proxy.ErrorHandler = func(w http.ResponseWriter, _ *http.Request, _ error) { w.WriteHeader(http.StatusBadGateway) }
			front := newLoopbackServer(t, p)
			defer p.stop()

			dir := t.TempDir()
			srv := fleetServer(t, dir, dsn, "eu-west-1", []string{"AWS_ENDPOINT_URL_S3=" + front})
			l := startLoad(t, srv.grpcAddr, "kill", 2)
			eventually(t, 20*time.Second, 20*time.Millisecond, "an upload held by the proxy", func() (bool, string) {
				return p.held.Load() > 0, strconv.FormatInt(p.held.Load(), 10) + " held"
			})
			time.Sleep(300 * time.Millisecond) // more records, in the open segment and the write-ahead log
			srv.kill()
			l.halt()
			p.stop()
			for _, s := range l.odd {
				t.Errorf("improper answer: %s", s)
			}
			if len(l.allowed) == 0 {
				t.Fatal("no Check was allowed")
			}

			srv2 := fleetServer(t, dir, dsn, "eu-west-1", nil)
			again := startLoad(t, srv2.grpcAddr, "restarted", 1)
			again.waitAnswered(t, 20)
			again.halt()
			if code, _ := srv2.terminate(30 * time.Second); code != 0 {
				t.Errorf("restarted server exited %d after SIGTERM, want 0", code)
			}
			recorded := recordedRequestIDs(t, t.TempDir(), dsn)
			checkAllRecorded(t, recorded, l.allowed)
			checkAllRecorded(t, recorded, again.allowed)
			if want := len(l.allowed) + len(again.allowed); len(recorded) != want {
				t.Errorf("%d request ids in the bucket, want the %d allowed", len(recorded), want)
			}
			if code, v := verifyJSON(t, t.TempDir(), dsn); code != 0 || !v.OK || len(v.Writers) != 1 {
				t.Errorf("audit verify: exit %d, %+v; want exit 0 and one writer", code, v)
			}
		})
	}
}

// newLoopbackServer serves h on a free loopback port until the test ends
// and returns its URL.
func newLoopbackServer(t *testing.T, h http.Handler) string {
	t.Helper()
	addr := freeAddr(t)
	srv := &http.Server{Addr: addr, Handler: h, ErrorLog: nil}
	go srv.ListenAndServe()
	t.Cleanup(func() { srv.Close() })
	eventually(t, 5*time.Second, 10*time.Millisecond, "the proxy listening", func() (bool, string) {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			return false, err.Error()
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return true, ""
	})
	return "http://" + addr
}
