package authz

import (
	"errors"
	"strings"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"
)

// Field numbers, in envoy/service/auth/v3/attribute_context.proto and
// envoy/config/core/v3/{address,base}.proto, of the parts of a
// CheckRequest that decodeWire reads. TestFieldNumbers holds them equal
// to the generated descriptors.
const (
	fieldCheckAttributes = 1 // CheckRequest.attributes

	fieldAttrSource      = 1  // AttributeContext.source
	fieldAttrDestination = 2  // AttributeContext.destination
	fieldAttrRequest     = 4  // AttributeContext.request
	fieldAttrTLSSession  = 12 // AttributeContext.tls_session

	fieldPeerAddress   = 1 // Peer.address
	fieldPeerService   = 2 // Peer.service
	fieldPeerPrincipal = 4 // Peer.principal

	fieldAddrSocket   = 1 // Address.socket_address (oneof address)
	fieldAddrPipe     = 2 // Address.pipe
	fieldAddrInternal = 3 // Address.envoy_internal_address

	fieldSocketPortValue = 3 // SocketAddress.port_value (oneof port_specifier)
	fieldSocketNamedPort = 4 // SocketAddress.named_port

	fieldRequestHTTP = 2 // Request.http

	fieldHTTPMethod    = 2  // HttpRequest.method
	fieldHTTPHeaders   = 3  // HttpRequest.headers (map<string, string>)
	fieldHTTPPath      = 4  // HttpRequest.path
	fieldHTTPHost      = 5  // HttpRequest.host
	fieldHTTPScheme    = 6  // HttpRequest.scheme
	fieldHTTPHeaderMap = 13 // HttpRequest.header_map

	fieldTLSSNI = 1 // TLSSession.sni

	fieldHeaderMapHeaders = 1 // HeaderMap.headers
	fieldHeaderKey        = 1 // HeaderValue.key
	fieldHeaderValue      = 2 // HeaderValue.value
	fieldHeaderRawValue   = 3 // HeaderValue.raw_value (bytes)

	fieldMapKey   = 1 // a map entry's key
	fieldMapValue = 2 // a map entry's value
)

// invalidUTF8 is the reason given for a string field read that is not
// valid UTF-8.
const invalidUTF8 = "a string field is not valid UTF-8"

var errFieldNumber = errors.New("field number out of range")

// decodeWire decodes the wire bytes of a CheckRequest into in, reading only
// the fields an input holds and skipping every other one, without looking
// inside it. Its strings point into b (see input.own).
//
// It means what proto.Unmarshal followed by inputFromProto means, on the
// fields it reads: the last of a repeated scalar wins, a message that comes
// twice is merged, map keys follow proto3 (the last entry wins), a oneof
// holds its last member, a known field of the wrong wire type is unknown,
// and unknown fields are skipped.
//
// Validation is of what is read. Bytes that cannot be walked (a truncated
// field, a bad tag, a group never closed) make in invalid, with nothing
// else decoded. A string field read that is not valid UTF-8 makes in
// invalid and is kept with U+FFFD for its invalid bytes, so that the
// decision log still shows the rest. Fields that are not read are not
// validated: invalid UTF-8 or malformed data inside them go unnoticed.
// The headers map and header_map are read entry by entry, but only the
// entries of the headers input.h holds are read past their key.
func decodeWire(b []byte, in *input) {
	*in = input{}
	d := wireDecoder{in: in}
	if err := d.checkRequest(b); err != nil {
		*in = input{invalid: "malformed CheckRequest: " + err.Error()}
		return
	}
	d.resolveHeaders()
}

// wireDecoder is decodeWire's state: what is known so far of the fields
// whose meaning depends on more than their last occurrence.
type wireDecoder struct {
	in *input
	// socket is set while destination.address holds its socket_address
	// member, which a later socket_address merges into.
	socket bool
	hdr    [numHeaders]headerSeen
}

// headerSeen is what was seen of one header read.
type headerSeen struct {
	inMap  bool   // the headers map has an entry for it: that wins
	mapVal string // its value (the last entry's)
	hmN    int    // header_map entries with its key
	hmVal  string // their values, joined with ","
	joined []byte // the join, once there are two
}

// fields walks the fields of one message: for f := (fields{b: b}); f.next(); { ... },
// then f.err says whether the bytes could be walked to their end.
type fields struct {
	b   []byte
	err error
	// The current field: its number, its wire type, and its value for a
	// length-delimited or a varint field.
	num protowire.Number
	typ protowire.Type
	val []byte
	v   uint64
}

// next moves to the next field, reporting false at the end of the message
// or at bytes that are no field (f.err then says why). One-byte tags and
// lengths, nearly all of a CheckRequest's, take the short path.
func (f *fields) next() bool {
	b := f.b
	if len(b) == 0 {
		return false
	}
	var tag uint64
	if b[0] < 0x80 {
		tag, b = uint64(b[0]), b[1:]
	} else {
		t, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return f.fail(protowire.ParseError(n))
		}
		tag, b = t, b[n:]
	}
	num := tag >> 3
	if num < uint64(protowire.MinValidNumber) || num > uint64(protowire.MaxValidNumber) {
		return f.fail(errFieldNumber)
	}
	f.num, f.typ = protowire.Number(num), protowire.Type(tag&7)
	switch f.typ {
	case protowire.BytesType:
		if len(b) > 0 && b[0] < 0x80 && int(b[0]) < len(b) {
			n := int(b[0]) + 1
			f.val, b = b[1:n], b[n:]
			break
		}
		v, n := protowire.ConsumeBytes(b)
		if n < 0 {
			return f.fail(protowire.ParseError(n))
		}
		f.val, b = v, b[n:]
	case protowire.VarintType:
		if len(b) > 0 && b[0] < 0x80 {
			f.v, b = uint64(b[0]), b[1:]
			break
		}
		v, n := protowire.ConsumeVarint(b)
		if n < 0 {
			return f.fail(protowire.ParseError(n))
		}
		f.v, b = v, b[n:]
	default:
		n := protowire.ConsumeFieldValue(f.num, f.typ, b)
		if n < 0 {
			return f.fail(protowire.ParseError(n))
		}
		b = b[n:]
	}
	f.b = b
	return true
}

func (f *fields) fail(err error) bool {
	f.err, f.b = err, nil
	return false
}

// is reports whether the current field is field num, of wire type typ: a
// field of another wire type is an unknown field to protobuf.
func (f *fields) is(num protowire.Number, typ protowire.Type) bool {
	return f.num == num && f.typ == typ
}

// str returns the string field value v as a string pointing into the wire
// bytes, or with U+FFFD for invalid UTF-8, marking the request invalid.
func (d *wireDecoder) str(v []byte) string {
	if !utf8.Valid(v) {
		d.in.invalid = invalidUTF8
		return strings.ToValidUTF8(string(v), "\uFFFD")
	}
	return bytesString(v)
}

func (d *wireDecoder) checkRequest(b []byte) error {
	f := fields{b: b}
	for f.next() {
		if f.is(fieldCheckAttributes, protowire.BytesType) {
			if err := d.attributes(f.val); err != nil {
				return err
			}
		}
	}
	return f.err
}

func (d *wireDecoder) attributes(b []byte) error {
	f := fields{b: b}
	for f.next() {
		if f.typ != protowire.BytesType {
			continue
		}
		var err error
		switch f.num {
		case fieldAttrSource:
			d.in.attrs = true
			err = d.source(f.val)
		case fieldAttrDestination:
			d.in.attrs = true
			err = d.destination(f.val)
		case fieldAttrRequest:
			d.in.attrs = true
			err = d.request(f.val)
		case fieldAttrTLSSession:
			d.in.attrs = true
			err = d.tlsSession(f.val)
		}
		if err != nil {
			return err
		}
	}
	return f.err
}

func (d *wireDecoder) source(b []byte) error {
	f := fields{b: b}
	for f.next() {
		if f.is(fieldPeerPrincipal, protowire.BytesType) {
			d.in.principal = d.str(f.val)
		}
	}
	return f.err
}

func (d *wireDecoder) destination(b []byte) error {
	f := fields{b: b}
	for f.next() {
		switch {
		case f.is(fieldPeerAddress, protowire.BytesType):
			if err := d.address(f.val); err != nil {
				return err
			}
		case f.is(fieldPeerService, protowire.BytesType):
			d.in.service = d.str(f.val)
		}
	}
	return f.err
}

// address reads the destination's Address, whose oneof holds the socket
// address or something else (a pipe, an internal address) that has no port.
func (d *wireDecoder) address(b []byte) error {
	f := fields{b: b}
	for f.next() {
		if f.typ != protowire.BytesType {
			continue
		}
		switch f.num {
		case fieldAddrSocket:
			if !d.socket {
				d.socket, d.in.socketPort = true, 0 // a new member, not a merge
			}
			if err := d.socketAddress(f.val); err != nil {
				return err
			}
		case fieldAddrPipe, fieldAddrInternal:
			d.socket, d.in.socketPort = false, 0
		}
	}
	return f.err
}

func (d *wireDecoder) socketAddress(b []byte) error {
	f := fields{b: b}
	for f.next() {
		switch {
		case f.is(fieldSocketPortValue, protowire.VarintType):
			d.in.socketPort = uint32(f.v) // as protobuf decodes a uint32
		case f.is(fieldSocketNamedPort, protowire.BytesType):
			d.in.socketPort = 0 // the other member of the port oneof
		}
	}
	return f.err
}

func (d *wireDecoder) request(b []byte) error {
	f := fields{b: b}
	for f.next() {
		if f.is(fieldRequestHTTP, protowire.BytesType) {
			d.in.http = true
			if err := d.httpRequest(f.val); err != nil {
				return err
			}
		}
	}
	return f.err
}

func (d *wireDecoder) tlsSession(b []byte) error {
	f := fields{b: b}
	for f.next() {
		if f.is(fieldTLSSNI, protowire.BytesType) {
			d.in.sni = d.str(f.val)
		}
	}
	return f.err
}

func (d *wireDecoder) httpRequest(b []byte) error {
	f := fields{b: b}
	for f.next() {
		if f.typ != protowire.BytesType {
			continue
		}
		var err error
		switch f.num {
		case fieldHTTPMethod:
			d.in.method = d.str(f.val)
		case fieldHTTPPath:
			d.in.path = d.str(f.val)
		case fieldHTTPHost:
			d.in.host = d.str(f.val)
		case fieldHTTPScheme:
			d.in.scheme = d.str(f.val)
		case fieldHTTPHeaders:
			err = d.headersEntry(f.val)
		case fieldHTTPHeaderMap:
			err = d.headerMap(f.val)
		}
		if err != nil {
			return err
		}
	}
	return f.err
}

// headersEntry reads one entry of the headers map. Only an entry whose key
// is a header read has its value read (and validated).
func (d *wireDecoder) headersEntry(b []byte) error {
	key, value, ok := shortEntry(b)
	if !ok {
		f := fields{b: b}
		for f.next() {
			switch {
			case f.is(fieldMapKey, protowire.BytesType):
				key = f.val
			case f.is(fieldMapValue, protowire.BytesType):
				value = f.val
			}
		}
		if f.err != nil {
			return f.err
		}
	}
	if i := headerIndex(bytesString(key)); i >= 0 {
		h := &d.hdr[i]
		h.inMap, h.mapVal = true, d.str(value)
	}
	return nil
}

// shortEntry splits a map entry as protobuf encoders write a short one (the
// key, then the value, each shorter than 128 bytes), the headers map's
// every entry but the longest: such an entry is read without walking it.
// ok is false for any other shape.
func shortEntry(b []byte) (key, value []byte, ok bool) {
	const keyTag, valueTag = byte(fieldMapKey<<3 | protowire.BytesType), byte(fieldMapValue<<3 | protowire.BytesType)
	if len(b) < 2 || b[0] != keyTag || b[1] >= 0x80 || 2+int(b[1]) > len(b) {
		return nil, nil, false
	}
	key, b = b[2:2+int(b[1])], b[2+int(b[1]):]
	if len(b) == 0 {
		return key, nil, true
	}
	if len(b) < 2 || b[0] != valueTag || b[1] >= 0x80 || 2+int(b[1]) != len(b) {
		return nil, nil, false
	}
	return key, b[2:], true
}

func (d *wireDecoder) headerMap(b []byte) error {
	f := fields{b: b}
	for f.next() {
		if f.is(fieldHeaderMapHeaders, protowire.BytesType) {
			if err := d.headerValue(f.val); err != nil {
				return err
			}
		}
	}
	return f.err
}

// headerValue reads one header_map entry. Only an entry whose key is a
// header read has its value read (and validated); raw_value, when not
// empty, wins over value, and is bytes: it is not validated here (see
// requestID).
func (d *wireDecoder) headerValue(b []byte) error {
	var key, value, raw []byte
	f := fields{b: b}
	for f.next() {
		switch {
		case f.is(fieldHeaderKey, protowire.BytesType):
			key = f.val
		case f.is(fieldHeaderValue, protowire.BytesType):
			value = f.val
		case f.is(fieldHeaderRawValue, protowire.BytesType):
			raw = f.val
		}
	}
	if f.err != nil {
		return f.err
	}
	i := headerIndexFold(bytesString(key))
	if i < 0 {
		return nil
	}
	v := d.str(value)
	if len(raw) > 0 {
		v = bytesString(raw)
	}
	h := &d.hdr[i]
	switch h.hmN {
	case 0:
		h.hmVal = v
	case 1:
		h.joined = append(append(append(h.joined, h.hmVal...), ','), v...)
	default:
		h.joined = append(append(h.joined, ','), v...)
	}
	h.hmN++
	return nil
}

// resolveHeaders sets in.h as header() resolves each header: the headers
// map's entry, else the header_map entries joined.
func (d *wireDecoder) resolveHeaders() {
	for i := range d.hdr {
		h := &d.hdr[i]
		switch {
		case h.inMap:
			d.in.h.set(i, h.mapVal)
		case h.hmN > 1:
			d.in.h.set(i, bytesString(h.joined))
		case h.hmN == 1:
			d.in.h.set(i, h.hmVal)
		}
	}
}
