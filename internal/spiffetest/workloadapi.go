package spiffetest

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
)

// WorkloadAPI is an in-process SPIFFE Workload API, standing in for the
// SPIRE agent: it streams one X.509 SVID and its trust bundle to every
// FetchX509SVID caller, and pushes a new one to all of them when told to,
// as the agent does on rotation. Like the agent it refuses calls without
// the "workload.spiffe.io: true" metadata header.
type WorkloadAPI struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	// Addr is the socket address for go-spiffe's workloadapi.WithAddr and
	// the --spiffe-socket flag: unix:///.../agent.sock.
	Addr string

	mu      sync.Mutex
	svid    *workload.X509SVIDResponse
	bundle  *workload.X509BundlesResponse
	changed chan struct{} // closed and replaced on every update
	streams int
}

// StartWorkloadAPI serves the Workload API on a unix socket in a new
// temporary directory, handing out svid with the given CAs as the bundle
// of svid's trust domain. It is stopped when the test ends.
func StartWorkloadAPI(tb testing.TB, svid *Cert, bundle ...*CA) *WorkloadAPI {
	tb.Helper()
	// Not tb.TempDir(): a unix socket path must stay under ~100 bytes, and
	// test names make TempDir paths long.
	dir, err := os.MkdirTemp("", "wlapi-")
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	path := filepath.Join(dir, "agent.sock")
	lis, err := net.Listen("unix", path)
	if err != nil {
		tb.Fatalf("workload api: listen %s: %v", path, err)
	}
	w := &WorkloadAPI{Addr: "unix://" + path, changed: make(chan struct{})}
	w.SetX509SVID(tb, svid, bundle...)
	g := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(g, w)
	done := make(chan struct{})
	go func() {
		_ = g.Serve(lis)
		close(done)
	}()
	tb.Cleanup(func() {
		g.Stop()
		<-done
	})
	return w
}

// SetX509SVID replaces the SVID and bundle and pushes them to every open
// FetchX509SVID and FetchX509Bundles stream.
func (w *WorkloadAPI) SetX509SVID(tb testing.TB, svid *Cert, bundle ...*CA) {
	tb.Helper()
	if len(svid.Cert.URIs) != 1 {
		tb.Fatalf("workload api: an X.509 SVID has exactly one URI SAN, got %v", svid.Cert.URIs)
	}
	id, err := spiffeid.FromURI(svid.Cert.URIs[0])
	if err != nil {
		tb.Fatalf("workload api: %v", err)
	}
	key, err := x509.MarshalPKCS8PrivateKey(svid.Key)
	if err != nil {
		tb.Fatalf("workload api: marshal key: %v", err)
	}
	// The Workload API carries certificates as concatenated DER.
	var bundleDER []byte
	for _, ca := range bundle {
		bundleDER = append(bundleDER, ca.Cert.Raw...)
	}
	resp := &workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
		SpiffeId:    id.String(),
		X509Svid:    svid.Cert.Raw,
		X509SvidKey: key,
		Bundle:      bundleDER,
	}}}
	bundles := &workload.X509BundlesResponse{Bundles: map[string][]byte{id.TrustDomain().IDString(): bundleDER}}
	w.mu.Lock()
	w.svid, w.bundle = resp, bundles
	close(w.changed)
	w.changed = make(chan struct{})
	w.mu.Unlock()
}

// Streams is how many FetchX509SVID streams have been opened.
func (w *WorkloadAPI) Streams() int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.streams
}

func checkHeader(md metadata.MD) error {
	if v := md.Get("workload.spiffe.io"); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

// current returns what to send and the channel closed on the next update.
func (w *WorkloadAPI) current() (*workload.X509SVIDResponse, *workload.X509BundlesResponse, <-chan struct{}) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.svid, w.bundle, w.changed
}

// FetchX509SVID implements the Workload API: the current SVID, then each
// update, until the caller goes away.
func (w *WorkloadAPI) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	if err := checkHeader(md); err != nil {
		return err
	}
	w.mu.Lock()
	w.streams++
	w.mu.Unlock()
	for {
		resp, _, changed := w.current()
		if err := stream.Send(resp); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// FetchX509Bundles implements the Workload API for bundle-only watchers
// (workloadapi.NewBundleSource).
func (w *WorkloadAPI) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	md, _ := metadata.FromIncomingContext(stream.Context())
	if err := checkHeader(md); err != nil {
		return err
	}
	for {
		_, resp, changed := w.current()
		if err := stream.Send(resp); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}
