// Package parquetlog stores the decision log as Parquet segment files: the
// embedded default sink and store, and the layout that object storage
// holds for a fleet.
//
// A segment is an immutable file of one writer's consecutive records, in
// sequence order, one column per record field (snake_case, the time as a
// UTC timestamp), dictionary-encoded and zstd-compressed, so that a busy
// gateway's log costs tens of bytes per decision and any engine that reads
// Parquet (DuckDB, pandas, Spark, Trino, Athena) reads it directly:
//
//	DIR/day=2026-12-04/<writer>-<first seq>-<last seq>.parquet
//
// A segment is written to a hidden temporary name, fsynced and renamed, so
// a reader never sees a half-written file; until then its records are
// only in the write-ahead log, which replays them after a crash.
//
// Tamper evidence: no per-record hash is stored (its 32 random bytes would
// cost more than the rest of the record). The chain is recomputed from the
// columns on verify and checked against the hashes the file's key-value
// metadata keeps at the segment's boundaries and every markEvery records;
// a CRC-32C of each record's content (record_crc) names an edited record
// among them. The CRC proves nothing by itself (anyone can recompute one):
// the chain does.
package parquetlog

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"hash/crc32"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/google/uuid"

	"github.com/egress-authz/egress-authz/internal/audit"
)

// row is a Record as a segment stores it. Identifiers that carry 16
// random bytes (a UUID request id, a W3C trace id) are stored as 16 bytes,
// not as their 32 to 36 characters of hex: in a log of random ids, how ids
// are stored decides the size of the whole file. Every column is
// compressed with the segment writer's codec (see segmentCodec).
//
// The optional columns are values, not pointers (a pointer would be an
// allocation per record): parquet-go writes a zero value as null and reads
// null back as zero, which the three columns can afford, since an empty
// request id, the nil UUID and the all-zero trace id (invalid in W3C) are
// never stored in them.
type row struct {
	Time           int64     `parquet:"time,timestamp(nanosecond),delta"`
	RequestID      string    `parquet:"request_id,optional"` // null when the id is a UUID, in request_uuid, or empty
	RequestUUID    uuid.UUID `parquet:"request_uuid,optional"`
	TraceID        [16]byte  `parquet:"trace_id,optional"` // the W3C trace id's 16 bytes; null when there was none
	Cluster        string    `parquet:"cluster,dict"`
	Principal      string    `parquet:"principal,dict"`
	TrustDomain    string    `parquet:"trust_domain,dict"`
	Namespace      string    `parquet:"namespace,dict"`
	ServiceAccount string    `parquet:"service_account,dict"`
	Host           string    `parquet:"host,dict"`
	Port           int64     `parquet:"port,dict"`
	Method         string    `parquet:"method,dict"`
	Path           string    `parquet:"path,dict"`
	Decision       string    `parquet:"decision,dict"`
	Enforced       bool      `parquet:"enforced"`
	Rule           string    `parquet:"rule,dict"`
	Owner          string    `parquet:"owner,dict"`
	Ticket         string    `parquet:"ticket,dict"`
	Processor      string    `parquet:"processor,dict"`
	RuleSet        string    `parquet:"ruleset,dict"`
	Reason         string    `parquet:"reason,dict"`
	CacheHit       bool      `parquet:"cache_hit"`
	LatencyNS      int64     `parquet:"latency_ns,delta"`
	Writer         string    `parquet:"writer,dict"`
	Seq            int64     `parquet:"seq,delta"`
	RecordCRC      uint32    `parquet:"record_crc,uint(32)"` // CRC-32C of the record's canonical encoding without its previous hash
}

// toRow converts r to its stored form; buf is scratch space, returned for
// the next call.
func toRow(r *audit.Record, out *row, buf []byte) []byte {
	*out = row{
		Time: r.Time.UnixNano(), Cluster: r.Cluster, Processor: r.Processor, Principal: r.Principal, TrustDomain: r.TrustDomain,
		Namespace: r.Namespace, ServiceAccount: r.ServiceAccount, Host: r.Host, Port: int64(r.Port), Method: r.Method,
		Path: r.Path, Decision: r.Decision, Enforced: r.Enforced, Rule: r.Rule, Owner: r.Owner, Ticket: r.Ticket,
		RuleSet: r.RuleSet, Reason: r.Reason, CacheHit: r.CacheHit, LatencyNS: int64(r.Latency),
		Writer: r.Writer, Seq: int64(r.Seq),
	}
	out.RecordCRC, buf = recordCRC(r, buf)
	if u, ok := canonicalUUID(r.RequestID); ok && u != uuid.Nil {
		out.RequestUUID = u
	} else {
		out.RequestID = r.RequestID
	}
	out.TraceID, _ = traceBytes(r.TraceID)
	return buf
}

var crcTable = crc32.MakeTable(crc32.Castagnoli)

// recordCRC is the CRC-32C of r's canonical encoding with an empty
// previous hash: a check of the record's own content that does not depend
// on the records before it, so that every edited record can be named,
// not only the first of a run.
func recordCRC(r *audit.Record, buf []byte) (uint32, []byte) {
	prev := r.PrevHash
	r.PrevHash = ""
	buf = audit.AppendCanonical(buf[:0], r)
	r.PrevHash = prev
	return crc32.Checksum(buf, crcTable), buf
}

// fromRow converts a stored row back to a Record; PrevHash and Hash are
// left for the caller, which recomputes the chain.
func fromRow(w *row, r *audit.Record) {
	*r = audit.Record{
		Time: time.Unix(0, w.Time).UTC(), Cluster: w.Cluster, Processor: w.Processor, Principal: w.Principal, TrustDomain: w.TrustDomain,
		Namespace: w.Namespace, ServiceAccount: w.ServiceAccount, Host: w.Host, Port: int(w.Port), Method: w.Method,
		Path: w.Path, Decision: w.Decision, Enforced: w.Enforced, Rule: w.Rule, Owner: w.Owner, Ticket: w.Ticket,
		RuleSet: w.RuleSet, Reason: w.Reason, CacheHit: w.CacheHit, Latency: time.Duration(w.LatencyNS),
		Writer: w.Writer, Seq: uint64(w.Seq),
	}
	r.RequestID = w.RequestID
	if w.RequestUUID != uuid.Nil {
		r.RequestID = w.RequestUUID.String()
	}
	if w.TraceID != ([16]byte{}) {
		r.TraceID = hex.EncodeToString(w.TraceID[:])
	}
}

// canonicalUUID parses s when it is a UUID written the one way
// uuid.UUID.String writes it back (lower-case hex, hyphenated), so that
// the record's canonical encoding, and with it the chain, survives the
// round trip.
func canonicalUUID(s string) (uuid.UUID, bool) {
	var u uuid.UUID
	if len(s) != 36 || s[8] != '-' || s[13] != '-' || s[18] != '-' || s[23] != '-' {
		return u, false
	}
	ok := decodeLowerHex(u[0:4], s[0:8]) && decodeLowerHex(u[4:6], s[9:13]) && decodeLowerHex(u[6:8], s[14:18]) &&
		decodeLowerHex(u[8:10], s[19:23]) && decodeLowerHex(u[10:16], s[24:36])
	return u, ok
}

// traceBytes decodes a trace id of 32 lower-case hex digits, the only form
// a record holds one in (never all zeros, which W3C rules out).
func traceBytes(s string) ([16]byte, bool) {
	var b [16]byte
	if len(s) != 32 || !decodeLowerHex(b[:], s) {
		return [16]byte{}, false
	}
	return b, b != [16]byte{}
}

// unhex maps a lower-case hex digit to its value, any other byte to 0xff.
var unhex = func() (t [256]byte) {
	for i := range t {
		t[i] = 0xff
	}
	for i, c := range "0123456789abcdef" {
		t[c] = byte(i)
	}
	return t
}()

// decodeLowerHex decodes the 2*len(dst) lower-case hex digits of s into
// dst, reporting whether they all were.
func decodeLowerHex(dst []byte, s string) bool {
	var bad byte
	for i := range dst {
		hi, lo := unhex[s[2*i]], unhex[s[2*i+1]]
		bad |= hi | lo
		dst[i] = hi<<4 | lo&0x0f
	}
	return bad&0xf0 == 0
}

// markEvery is how many records lie between two of the chain hashes a
// segment keeps in its metadata (and a row group holds a whole number of
// them, so that one can be read and checked alone).
const markEvery = 1024

// metaKey is the key of a segment's chain metadata.
const metaKey = "egress-authz.chain"

// chainMeta is what a segment says of its place in its writer's chain.
// Everything in it is checked against the records on verify.
type chainMeta struct {
	Format   int    `json:"format"` // 1
	Writer   string `json:"writer"`
	FirstSeq uint64 `json:"first_seq"`
	LastSeq  uint64 `json:"last_seq"`
	Records  int64  `json:"records"`
	MinTime  int64  `json:"min_time_ns"`
	MaxTime  int64  `json:"max_time_ns"`
	// PrevHash is the hash of the record before the first (empty for
	// record 1); LastHash the hash of the last record.
	PrevHash string `json:"prev_hash"`
	LastHash string `json:"last_hash"`
	// Marks[k] is the previous hash of the record at row k*markEvery: the
	// chain can be checked from there without the rows before it.
	Marks []string `json:"marks"`
}

// segmentName is the file name of a segment: the writer (escaped so that
// it is one path element), its first and last sequence numbers.
func segmentName(writer string, first, last uint64) string {
	return fmt.Sprintf("%s-%020d-%020d.parquet", writerFile(writer), first, last)
}

// writerFile is a writer id as one path element.
func writerFile(writer string) string { return url.PathEscape(writer) }

// parseSegmentName is segmentName's inverse.
func parseSegmentName(name string) (writer string, first, last uint64, ok bool) {
	base, ok := strings.CutSuffix(name, ".parquet")
	if !ok || strings.HasPrefix(name, ".") {
		return "", 0, 0, false
	}
	i := strings.LastIndexByte(base, '-')
	if i < 0 {
		return "", 0, 0, false
	}
	j := strings.LastIndexByte(base[:i], '-')
	if j < 0 {
		return "", 0, 0, false
	}
	var err1, err2, err3 error
	first, err1 = strconv.ParseUint(base[j+1:i], 10, 64)
	last, err2 = strconv.ParseUint(base[i+1:], 10, 64)
	writer, err3 = url.PathUnescape(base[:j])
	if err1 != nil || err2 != nil || err3 != nil || writer == "" || last < first {
		return "", 0, 0, false
	}
	return writer, first, last, true
}

const (
	dayPrefix     = "day="
	clusterPrefix = "cluster="
)

// dayDir is the partition directory of a UTC day.
func dayDir(t time.Time) string { return dayPrefix + t.UTC().Format(time.DateOnly) }

// parseDayDir returns the day a partition directory holds.
func parseDayDir(name string) (time.Time, bool) {
	s, ok := strings.CutPrefix(name, dayPrefix)
	if !ok {
		return time.Time{}, false
	}
	t, err := time.Parse(time.DateOnly, s)
	return t, err == nil
}

func readMeta(s string) (chainMeta, error) {
	var m chainMeta
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return m, fmt.Errorf("chain metadata: %w", err)
	}
	if m.Format != 1 {
		return m, fmt.Errorf("chain metadata: format %d is not one this build reads", m.Format)
	}
	return m, nil
}

var errNoMeta = errors.New("no chain metadata: not a segment written by egress-authz, or its footer was rewritten")
