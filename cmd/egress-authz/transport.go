package main

import (
	"errors"

	"google.golang.org/grpc"
)

// transportCredentials returns the gRPC server's transport security, or nil
// for --plaintext.
func (s *server) transportCredentials() (grpc.ServerOption, error) {
	if s.cfg.Plaintext {
		return nil, nil
	}
	return nil, errors.New("mTLS (--tls-cert/--tls-key/--tls-ca, --spiffe-socket) is not yet supported in this build; use --plaintext for a local run")
}
