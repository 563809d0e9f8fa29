package main

import (
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"math/rand/v2"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/google/uuid"
)

// Identifier modes of the load client (--ids).
const (
	idsNone   = "none"   // no x-request-id or traceparent: the server makes a request id
	idsRandom = "random" // a fresh UUIDv4 x-request-id and W3C traceparent in every request
)

func checkIDs(mode string) error {
	if mode != idsNone && mode != idsRandom {
		return fmt.Errorf("--ids %q: want %s or %s", mode, idsNone, idsRandom)
	}
	return nil
}

// withIDs returns req with a fresh x-request-id and traceparent, as a
// gateway behind a tracing mesh sends: every decision record then holds
// two 16-byte random values, which is what decides how well a decision log
// compresses. The pooled req is shared by all workers and stays as it is.
func withIDs(req *authv3.CheckRequest, rng *rand.Rand) *authv3.CheckRequest {
	return new(idCopy).fill(req, rng)
}

// idCopy is what a request with ids of its own does not share with the
// pooled request it is made from: a shallow copy down to the HTTP
// attributes, with their own headers map. Peers, TLS session and metadata
// stay shared, read-only (gRPC only reads a message it sends). A closed-loop
// caller has one request in flight at a time, and once its call returns
// gRPC holds no reference to the message: it fills the same idCopy for
// every request, and pays for the two id strings only.
type idCopy struct {
	req     authv3.CheckRequest
	attrs   authv3.AttributeContext
	request authv3.AttributeContext_Request
	http    authv3.AttributeContext_HttpRequest
}

// fill makes c req with fresh ids and returns it.
func (c *idCopy) fill(req *authv3.CheckRequest, rng *rand.Rand) *authv3.CheckRequest {
	a := req.GetAttributes()
	h := a.GetRequest().GetHttp()
	if h == nil {
		return req // TLS passthrough: no headers to carry ids
	}
	headers := c.http.Headers
	if headers == nil {
		headers = make(map[string]string, len(h.Headers)+2)
	} else {
		clear(headers)
	}
	for k, v := range h.Headers {
		headers[k] = v
	}
	setIDs(headers, rng)
	// Field by field, because a generated message must not be copied by
	// value; TestWithIDsCopiesEveryField fails if a field is left out.
	c.http.Id = h.Id
	c.http.Method = h.Method
	c.http.Headers = headers
	c.http.HeaderMap = h.HeaderMap
	c.http.Path = h.Path
	c.http.Host = h.Host
	c.http.Scheme = h.Scheme
	c.http.Query = h.Query
	c.http.Fragment = h.Fragment
	c.http.Size = h.Size
	c.http.Protocol = h.Protocol
	c.http.Body = h.Body
	c.http.RawBody = h.RawBody
	c.request.Time = a.Request.Time
	c.request.Http = &c.http
	c.attrs.Source = a.Source
	c.attrs.Destination = a.Destination
	c.attrs.Request = &c.request
	c.attrs.ContextExtensions = a.ContextExtensions
	c.attrs.MetadataContext = a.MetadataContext
	c.attrs.RouteMetadataContext = a.RouteMetadataContext
	c.attrs.TlsSession = a.TlsSession
	c.req.Attributes = &c.attrs
	return &c.req
}

// setIDs puts a fresh request id and trace context into headers.
func setIDs(headers map[string]string, rng *rand.Rand) {
	headers["x-request-id"] = uuidV4(rng)
	headers["traceparent"] = traceparent(rng)
}

// uuidV4 returns a random (version 4, RFC 9562 variant) UUID in its
// canonical 36-character form. The load client's own PCG generator is
// uniform, which is all a log's compression sees; it need not be secret.
func uuidV4(rng *rand.Rand) string {
	var b [16]byte
	binary.LittleEndian.PutUint64(b[:8], rng.Uint64())
	binary.LittleEndian.PutUint64(b[8:], rng.Uint64())
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return uuid.UUID(b).String()
}

// traceparent returns a W3C trace context header for a sampled request:
// "00-<32 hex trace id>-<16 hex parent id>-01", both ids random and, as
// the recommendation requires, not all zeros.
func traceparent(rng *rand.Rand) string {
	var b [24]byte
	for {
		hi, lo, parent := rng.Uint64(), rng.Uint64(), rng.Uint64()
		if (hi != 0 || lo != 0) && parent != 0 {
			binary.LittleEndian.PutUint64(b[0:8], hi)
			binary.LittleEndian.PutUint64(b[8:16], lo)
			binary.LittleEndian.PutUint64(b[16:24], parent)
			break
		}
	}
	var s [55]byte
	copy(s[0:3], "00-")
	hex.Encode(s[3:35], b[0:16])
	s[35] = '-'
	hex.Encode(s[36:52], b[16:24])
	copy(s[52:55], "-01")
	return string(s[:])
}
