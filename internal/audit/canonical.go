package audit

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"strings"
	"time"
	"unicode/utf8"
	"unsafe"
)

// The canonical encoding of a Record is what its hash is computed over and
// what the write-ahead log stores. It must be reproducible from a stored
// row, byte for byte, or verification would fail on intact data, so each
// record has exactly one form:
//
//	"EA1" version tag
//	then each field in the fixed order of appendCanonical: strings as a
//	uvarint length and the bytes, integers as a zig-zag varint, booleans
//	as one byte 0 or 1; the time in Unix nanoseconds, the latency in
//	nanoseconds.
//
// A record with a cluster or a processor (fields added after EA1) is
// tagged "EA2" and has those two strings after the EA1 fields. A record
// without either keeps the EA1 form, so chains written before the fields
// existed verify unchanged, and no record has two forms: blanking a
// cluster changes the tag, and so the hash.
//
// The hash of a record is SHA-256 over its canonical encoding, which
// includes the writer id, the sequence number and the previous record's
// hash: changing, removing, inserting or reordering a record breaks the
// chain at that point.
const (
	canonicalTag  = "EA1"
	canonicalTag2 = "EA2"
)

var errCorrupt = errors.New("corrupt record encoding")

// AppendCanonical appends r's canonical encoding (without Hash), the bytes
// its hash is computed over, to b.
func AppendCanonical(b []byte, r *Record) []byte { return appendCanonical(b, r) }

func appendCanonical(b []byte, r *Record) []byte {
	v2 := r.Cluster != "" || r.Processor != ""
	if v2 {
		b = append(b, canonicalTag2...)
	} else {
		b = append(b, canonicalTag...)
	}
	b = appendString(b, r.Writer)
	b = binary.AppendUvarint(b, r.Seq)
	b = appendString(b, r.PrevHash)
	b = binary.AppendVarint(b, r.Time.UnixNano())
	b = appendString(b, r.RequestID)
	b = appendString(b, r.TraceID)
	b = appendString(b, r.Principal)
	b = appendString(b, r.TrustDomain)
	b = appendString(b, r.Namespace)
	b = appendString(b, r.ServiceAccount)
	b = appendString(b, r.Host)
	b = binary.AppendVarint(b, int64(r.Port))
	b = appendString(b, r.Method)
	b = appendString(b, r.Path)
	b = appendString(b, r.Decision)
	b = appendBool(b, r.Enforced)
	b = appendString(b, r.Rule)
	b = appendString(b, r.Owner)
	b = appendString(b, r.Ticket)
	b = appendString(b, r.RuleSet)
	b = appendString(b, r.Reason)
	b = appendBool(b, r.CacheHit)
	b = binary.AppendVarint(b, int64(r.Latency))
	if v2 {
		b = appendString(b, r.Cluster)
		b = appendString(b, r.Processor)
	}
	return b
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendBool(b []byte, v bool) []byte {
	if v {
		return append(b, 1)
	}
	return append(b, 0)
}

// decodeCanonical is the inverse of appendCanonical; it also sets Hash.
func decodeCanonical(b []byte) (Record, error) { return decodeInterned(b, nil) }

// interner shares the strings that repeat from record to record (callers,
// hosts, rules), so that decoding a batch does not allocate them again.
type interner map[string]string

func (in interner) str(b []byte) string {
	if in == nil {
		return string(b)
	}
	if s, ok := in[string(b)]; ok { // no allocation for the lookup
		return s
	}
	if len(in) > 50000 {
		clear(in)
	}
	s := string(b)
	in[s] = s
	return s
}

// decodeInterned decodes like decodeCanonical, taking low-cardinality
// strings from in when it is not nil.
func decodeInterned(b []byte, in interner) (Record, error) {
	r, err := decodeWith(decoder{b: b, in: in})
	if err == nil {
		sum := sha256.Sum256(b)
		r.Hash = hex.EncodeToString(sum[:])
	}
	return r, err
}

// decodeAliased decodes a record whose strings point into b, which must
// never change afterwards (an arena's copy of the frame), and leaves Hash
// empty: decoding a sink's batch allocates nothing per record, and the
// feeder takes each hash from the next record's PrevHash.
func decodeAliased(b []byte) (Record, error) {
	return decodeWith(decoder{b: b, alias: true})
}

func decodeWith(d decoder) (Record, error) {
	var r Record
	b := d.b
	if len(b) < len(canonicalTag) {
		return r, errCorrupt
	}
	v2 := false
	switch string(b[:len(canonicalTag)]) {
	case canonicalTag:
	case canonicalTag2:
		v2 = true
	default:
		return r, errCorrupt
	}
	d.b = b[len(canonicalTag):]
	r.Writer = d.istr()
	r.Seq = d.uvarint()
	r.PrevHash = d.str()
	r.Time = time.Unix(0, d.varint()).UTC()
	r.RequestID = d.str()
	r.TraceID = d.str()
	r.Principal = d.istr()
	r.TrustDomain = d.istr()
	r.Namespace = d.istr()
	r.ServiceAccount = d.istr()
	r.Host = d.istr()
	r.Port = int(d.varint())
	r.Method = d.istr()
	r.Path = d.str()
	r.Decision = d.istr()
	r.Enforced = d.bool()
	r.Rule = d.istr()
	r.Owner = d.istr()
	r.Ticket = d.istr()
	r.RuleSet = d.istr()
	r.Reason = d.istr()
	r.CacheHit = d.bool()
	r.Latency = time.Duration(d.varint())
	if v2 {
		r.Cluster = d.istr()
		r.Processor = d.istr()
		if !d.err && r.Cluster == "" && r.Processor == "" {
			return Record{}, errCorrupt // such a record is written EA1
		}
	}
	if d.err || len(d.b) != 0 {
		return Record{}, errCorrupt
	}
	return r, nil
}

// arena holds copies of frames that decoded records alias (see
// decodeAliased). Without reuse, its bytes are never written twice: a
// full block is left to the records that still point into it, and the
// garbage collector frees it with the last of them. With reuse (for a
// sink that keeps nothing of a batch, Copying), it keeps its blocks, and
// reset lets the next batch fill them again.
type arena struct {
	reuse  bool
	buf    []byte
	blocks [][]byte // with reuse, every block
	cur    int      // with reuse, the block buf is, in blocks
}

const arenaSize = 1 << 20

// copy returns a copy of p in the arena.
func (a *arena) copy(p []byte) []byte {
	if cap(a.buf)-len(a.buf) < len(p) {
		switch {
		case a.reuse && a.cur+1 < len(a.blocks) && cap(a.blocks[a.cur+1]) >= len(p):
			a.cur++
			a.buf = a.blocks[a.cur][:0]
		default:
			a.buf = make([]byte, 0, max(arenaSize, len(p)))
			if a.reuse {
				a.blocks = append(a.blocks[:min(a.cur+1, len(a.blocks))], a.buf)
				a.cur = len(a.blocks) - 1
			}
		}
	}
	n := len(a.buf)
	a.buf = append(a.buf, p...)
	return a.buf[n:len(a.buf):len(a.buf)]
}

// reset makes a reused arena's memory free for the next batch: every
// string the records decoded so far hold will be overwritten. Without
// reuse it does nothing.
func (a *arena) reset() {
	if a.reuse && len(a.blocks) > 0 {
		a.cur, a.buf = 0, a.blocks[0][:0]
	}
}

type decoder struct {
	b     []byte
	err   bool
	in    interner
	alias bool // strings point into b (decodeAliased)
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err, d.b = true, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) varint() int64 {
	v, n := binary.Varint(d.b)
	if n <= 0 {
		d.err, d.b = true, nil
		return 0
	}
	d.b = d.b[n:]
	return v
}

// str reads a string that seldom repeats; istr one that does, shared
// through the decoder's interner.
func (d *decoder) str() string { return d.string(nil) }

func (d *decoder) istr() string { return d.string(d.in) }

func (d *decoder) string(in interner) string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.err, d.b = true, nil
		return ""
	}
	var s string
	switch {
	case n == 0:
	case d.alias:
		s = unsafe.String(&d.b[0], n)
	default:
		s = in.str(d.b[:n])
	}
	d.b = d.b[n:]
	return s
}

func (d *decoder) bool() bool {
	if len(d.b) == 0 || d.b[0] > 1 {
		d.err, d.b = true, nil
		return false
	}
	v := d.b[0] == 1
	d.b = d.b[1:]
	return v
}

// ComputeHash returns the hash r should carry, from its fields (Hash
// itself ignored).
func ComputeHash(r *Record) string {
	var buf [512]byte
	sum := sha256.Sum256(appendCanonical(buf[:0], r))
	return hex.EncodeToString(sum[:])
}

// cleanString makes s storable everywhere a record goes: valid UTF-8
// (PostgreSQL and JSON require it) without NUL bytes (PostgreSQL text
// rejects them). Request fields can carry either when a request is denied
// as invalid.
func cleanString(s string) string {
	if storable(s) {
		return s
	}
	return strings.ReplaceAll(strings.ToValidUTF8(s, "\uFFFD"), "\x00", "\uFFFD")
}

// storable reports whether s is valid UTF-8 without NUL bytes. Nearly
// every string of a record is ASCII, which it checks eight bytes at a
// time, in one pass.
func storable(s string) bool {
	i := 0
	for ; i+8 <= len(s); i += 8 {
		v := uint64(s[i]) | uint64(s[i+1])<<8 | uint64(s[i+2])<<16 | uint64(s[i+3])<<24 |
			uint64(s[i+4])<<32 | uint64(s[i+5])<<40 | uint64(s[i+6])<<48 | uint64(s[i+7])<<56
		// A byte of 0x80 or more has its high bit set in v, a NUL in
		// v-0x0101...; a borrow into the next byte can only set more.
		if (v|(v-0x0101010101010101))&0x8080808080808080 != 0 {
			return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
		}
	}
	for ; i < len(s); i++ {
		if s[i] == 0 || s[i] >= utf8.RuneSelf {
			return utf8.ValidString(s) && strings.IndexByte(s, 0) < 0
		}
	}
	return true
}

// clean makes every string of r storable (see cleanString), writing only
// the ones it changes.
func (r *Record) clean() {
	for i := range fields {
		if p := fields[i].Str(r); p != nil && !storable(*p) {
			*p = cleanString(*p)
		}
	}
}
