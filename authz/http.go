package authz

import (
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"net/http"
	"net/textproto"
	"net/url"
	"strconv"
	"strings"
	"time"

	lru "github.com/hashicorp/golang-lru/v2"

	"github.com/egress-authz/egress-authz/rules"
)

// The HTTP front doors: the request paths an egress proxy that is not
// Envoy's gRPC client asks on. Each reads the request it authorizes from
// its own place in the HTTP request, fills the same input as a gRPC Check,
// and is decided by the same Server.check, so that no transport can
// decide differently.
const (
	// ExtAuthzPath is Envoy's HTTP ext_authz service (Istio's
	// envoyExtAuthzHttp with pathPrefix /ext-authz): the original method is
	// the request's own, the original path and query follow the prefix, the
	// authority is in Host, the scheme in X-Forwarded-Proto.
	ExtAuthzPath = "/ext-authz"
	// ForwardAuthPath is forward-auth (Traefik's forwardAuth, Caddy's
	// forward_auth): X-Forwarded-Method, -Proto, -Host and -Uri.
	ForwardAuthPath = "/forward-auth"
	// AuthRequestPath is NGINX's auth_request: X-Original-Method,
	// X-Original-URI, the authority in X-Forwarded-Host (else Host), the
	// scheme in X-Forwarded-Proto.
	AuthRequestPath = "/auth-request"
)

// DenyBodyHeader carries a deny's JSON body in a header too, for proxies
// that discard the body of an authorization answer (NGINX's auth_request
// does; its error_page can return the header's value as the body).
const DenyBodyHeader = "x-egress-authz-deny"

// Verified forwarded certificates are remembered, so that a workload's
// requests after its first cost no signature check: at most
// certCacheSize of them, each for at most certCacheTTL (and never past
// its certificate's NotAfter). A certificate whose CA leaves the trust
// bundle is still an identity for up to that long, as the bundle file
// itself is reread at most once a second.
const (
	certCacheSize = 4096
	certCacheTTL  = time.Second
)

// verifiedCert is a forwarded certificate that verified, and until when
// that verdict is used.
type verifiedCert struct {
	id    string
	until time.Time
}

// maxForwardedCerts bounds the certificates read from a forwarded chain: a
// leaf and a few intermediates.
const maxForwardedCerts = 8

// HTTPOptions configures the HTTP authorization handler. The zero value
// takes the caller's identity only from the URI= of
// x-forwarded-client-cert, and only when the Server's Options.TrustXFCC is
// set: no other header names a principal, since anyone could send one.
type HTTPOptions struct {
	// ClientCertHeader names the header in which the proxy forwards the
	// certificate its client presented: URL-escaped PEM (NGINX's
	// $ssl_client_escaped_cert, Envoy's XFCC Cert=), or URL-escaped
	// base64 DER without PEM lines, comma-separated for a chain (Traefik's
	// X-Forwarded-Tls-Client-Cert, Caddy's certificate_der_base64). For
	// x-forwarded-client-cert, the Cert= of its last element is read. The
	// certificate must verify with VerifyCert; one that does not is no
	// identity (the request is denied no-identity), and XFCC's URI= does
	// not stand in for it.
	ClientCertHeader string
	// VerifyCert verifies a forwarded chain (leaf first) as an X.509 SVID
	// of the trust bundle and returns its SPIFFE ID. It is required with
	// ClientCertHeader: spiffetls.Source.VerifyX509SVID.
	VerifyCert func(chain []*x509.Certificate) (string, error)
	// OnCertRefused, when set, is told about each forwarded certificate
	// that is not an identity: "malformed" (it does not parse) or
	// "untrusted" (it does not verify).
	OnCertRefused func(reason string)
}

// HTTPHandler returns the HTTP authorization handler: ExtAuthzPath and
// the paths below it, ForwardAuthPath and AuthRequestPath; anything else
// is a 404. An allow is a 200 with no body and no header a proxy could
// pass upstream; a deny is a 403 with the gRPC deny's JSON body and
// DecisionHeader, and the body again in DenyBodyHeader; bad input is a
// deny with its reason, never a 5xx.
//
// The handler trusts whoever may connect to it to be the proxy: serve it
// behind mutual TLS that admits only the proxy, and have the proxy set
// every header the endpoint reads (NGINX passes its client's own headers
// into the auth_request subrequest unless told otherwise).
func (s *Server) HTTPHandler(opts HTTPOptions) (http.Handler, error) {
	h := &httpHandler{s: s, opts: opts}
	if opts.ClientCertHeader != "" {
		if opts.VerifyCert == nil {
			return nil, errors.New("http authz: a client certificate header needs a verifier (the trust bundle)")
		}
		if !rules.IsToken(opts.ClientCertHeader) {
			return nil, errors.New("http authz: client certificate header " + strconv.Quote(opts.ClientCertHeader) + " is not a header name")
		}
		h.certHeader = textproto.CanonicalMIMEHeaderKey(opts.ClientCertHeader)
		h.certInXFCC = h.certHeader == xfccKey
		h.verified, _ = lru.New[string, verifiedCert](certCacheSize)
	}
	return h, nil
}

type httpHandler struct {
	s          *Server
	opts       HTTPOptions
	certHeader string // canonical; "" when none is read
	certInXFCC bool   // the certificate is the Cert= of x-forwarded-client-cert
	// verified remembers certificates that verified, by the forwarded
	// value (see certCacheTTL).
	verified *lru.Cache[string, verifiedCert]
}

// Header keys as net/http holds them.
var (
	xfccKey         = textproto.CanonicalMIMEHeaderKey(headerXFCC)
	requestIDKey    = textproto.CanonicalMIMEHeaderKey(headerRequestID)
	traceparentKey  = textproto.CanonicalMIMEHeaderKey(headerTraceparent)
	tracestateKey   = textproto.CanonicalMIMEHeaderKey(headerTracestate)
	fwdProtoKey     = "X-Forwarded-Proto"
	fwdHostKey      = "X-Forwarded-Host"
	fwdMethodKey    = "X-Forwarded-Method"
	fwdURIKey       = "X-Forwarded-Uri"
	origMethodKey   = "X-Original-Method"
	origURIKey      = "X-Original-Uri"
	contentTypeKey  = "Content-Type"
	decisionHdrKey  = textproto.CanonicalMIMEHeaderKey(DecisionHeader)
	denyBodyKey     = textproto.CanonicalMIMEHeaderKey(DenyBodyHeader)
	jsonContentType = []string{"application/json"}
	denyWord        = []string{"deny"}
)

func (h *httpHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	// The raw request target, as the proxy sent it: r.URL.Path is decoded,
	// and a ServeMux would clean and redirect it.
	target := r.RequestURI
	route, _, _ := strings.Cut(target, "?")
	in := input{attrs: true, http: true}
	switch {
	case route == ForwardAuthPath:
		in.method = h.single(r, fwdMethodKey, &in)
		in.path = h.single(r, fwdURIKey, &in)
		in.host = h.single(r, fwdHostKey, &in)
		in.scheme = h.single(r, fwdProtoKey, &in)
	case route == AuthRequestPath:
		in.method = h.single(r, origMethodKey, &in)
		in.path = h.single(r, origURIKey, &in)
		if _, ok := r.Header[fwdHostKey]; ok {
			in.host = h.single(r, fwdHostKey, &in)
		} else {
			in.host = r.Host
		}
		in.scheme = h.single(r, fwdProtoKey, &in)
	case route == ExtAuthzPath || strings.HasPrefix(target, ExtAuthzPath+"/") || strings.HasPrefix(target, ExtAuthzPath+"?"):
		in.method = r.Method
		in.path = target[len(ExtAuthzPath):]
		in.host = r.Host
		in.scheme = h.single(r, fwdProtoKey, &in)
	default:
		http.Error(w, "not an authorization endpoint: ask "+ExtAuthzPath+"/..., "+ForwardAuthPath+" or "+AuthRequestPath, http.StatusNotFound)
		return
	}
	in.h.requestID = joined(r.Header[requestIDKey])
	in.h.traceparent = joined(r.Header[traceparentKey])
	in.h.tracestate = joined(r.Header[tracestateKey])
	h.identity(r, &in)

	var o outcome
	h.s.check(r.Context(), &in, &o)
	h.respond(w, &o)
}

// single returns the one value of a header that says what the request is.
// Sent twice, it is ambiguous (a proxy adding to what its client sent),
// and the request is invalid.
func (h *httpHandler) single(r *http.Request, key string, in *input) string {
	vs := r.Header[key]
	switch len(vs) {
	case 0:
		return ""
	case 1:
		return vs[0]
	}
	if in.invalid == "" {
		in.invalid = "header " + key + " sent more than once"
	}
	return vs[0]
}

// joined is a repeated header as Envoy hands it to a gRPC Check: its
// values joined with ",".
func joined(vs []string) string {
	switch len(vs) {
	case 0:
		return ""
	case 1:
		return vs[0]
	}
	return strings.Join(vs, ",")
}

// identity sets the principal from a forwarded certificate that verifies,
// or leaves it empty with x-forwarded-client-cert for mapRequest, which
// reads its URI= only with TrustXFCC, as for a gRPC Check without a peer
// principal. A forwarded certificate that does not verify leaves neither:
// the request is denied no-identity.
func (h *httpHandler) identity(r *http.Request, in *input) {
	xfcc := joined(r.Header[xfccKey])
	if h.certHeader == "" {
		in.h.xfcc = xfcc
		return
	}
	var raw string
	if h.certInXFCC {
		raw = xfccField(xfcc, "Cert")
	} else {
		raw = h.single(r, h.certHeader, in)
	}
	if raw == "" {
		in.h.xfcc = xfcc
		return
	}
	now := h.s.opts.Now()
	if v, ok := h.verified.Get(raw); ok && now.Before(v.until) {
		in.principal = v.id
		return
	}
	chain, err := parseForwardedCert(raw)
	if err != nil {
		h.refused("malformed")
		return
	}
	id, err := h.opts.VerifyCert(chain)
	if err != nil || id == "" {
		h.refused("untrusted")
		return
	}
	until := now.Add(certCacheTTL)
	if na := chain[0].NotAfter; na.Before(until) {
		until = na
	}
	h.verified.Add(raw, verifiedCert{id: id, until: until})
	in.principal = id
}

func (h *httpHandler) refused(reason string) {
	if h.opts.OnCertRefused != nil {
		h.opts.OnCertRefused(reason)
	}
}

// respond writes the answer to o: 200 with nothing a proxy could copy
// upstream, or 403 with the deny body the gRPC response carries (the same
// template, so the two cannot drift).
func (h *httpHandler) respond(w http.ResponseWriter, o *outcome) {
	hdr := w.Header()
	hdr["Date"] = nil // nothing but the status and an empty body
	if o.d.Allow {
		hdr["Content-Length"] = []string{"0"}
		w.WriteHeader(http.StatusOK)
		return
	}
	t := h.s.responseTemplate(&o.d, false)
	var scratch [256]byte
	body := append(scratch[:0], t.bodyPrefix...)
	body = appendJSONString(body, o.requestID)
	body = append(body, t.bodySuffix...)
	hdr[decisionHdrKey] = denyWord
	hdr[denyBodyKey] = []string{string(body)}
	hdr[contentTypeKey] = jsonContentType
	hdr["Content-Length"] = []string{strconv.Itoa(len(body))}
	w.WriteHeader(http.StatusForbidden)
	_, _ = w.Write(body)
}

// parseForwardedCert reads a forwarded certificate chain, leaf first:
// URL-escaped PEM, or URL-escaped base64 DER certificates separated by
// commas.
func parseForwardedCert(v string) ([]*x509.Certificate, error) {
	unescape := url.PathUnescape // NGINX and Envoy escape a space as %20
	if strings.Contains(v, "BEGIN+CERTIFICATE") {
		// Escaped as a query parameter (a space as +): base64's own + is
		// then %2B.
		unescape = url.QueryUnescape
	}
	s, err := unescape(v)
	if err != nil {
		return nil, err
	}
	var ders [][]byte
	if strings.Contains(s, "-----BEGIN") {
		rest := []byte(s)
		for len(ders) <= maxForwardedCerts {
			var block *pem.Block
			if block, rest = pem.Decode(rest); block == nil {
				break
			}
			if block.Type == "CERTIFICATE" {
				ders = append(ders, block.Bytes)
			}
		}
	} else {
		for part := range strings.SplitSeq(s, ",") {
			if len(ders) > maxForwardedCerts {
				break
			}
			der, err := base64.StdEncoding.DecodeString(strings.Join(strings.Fields(part), ""))
			if err != nil {
				return nil, err
			}
			ders = append(ders, der)
		}
	}
	if len(ders) == 0 {
		return nil, errors.New("no certificate")
	}
	if len(ders) > maxForwardedCerts {
		return nil, errors.New("too many certificates")
	}
	chain := make([]*x509.Certificate, 0, len(ders))
	for _, der := range ders {
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, err
		}
		chain = append(chain, c)
	}
	return chain, nil
}
