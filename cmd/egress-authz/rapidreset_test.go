package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"net"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/protobuf/proto"

	"github.com/egress-authz/egress-authz/authz/authztest"
	"github.com/egress-authz/egress-authz/internal/checkreq"
)

// TestRapidResetClosesTheConnection: a client that opens Checks and
// resets each at once (HTTP/2 rapid reset) has its connection closed once
// it is over the reset budget, and may not connect again at once, while
// another client's Checks are still answered.
func TestRapidResetClosesTheConnection(t *testing.T) {
	srv := startServer(t, t.TempDir(), "--rules", examplesPath(t))
	req, err := checkreq.HTTP{Principal: checkoutID, Method: "POST", URL: "https://api.stripe.com/v1/charges"}.Build()
	if err != nil {
		t.Fatal(err)
	}
	msg, err := proto.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	body := binary.BigEndian.AppendUint32([]byte{0}, uint32(len(msg)))
	body = append(body, msg...)

	// The attacker connects from another loopback address: its own goes
	// into the penalty box.
	d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2)}}
	conn, err := d.Dial("tcp", srv.grpcAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(conn, conn)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/envoy.service.auth.v3.Authorization/Check"},
		{":authority", "egress-authz"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
		_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	block := hb.Bytes()

	ended := make(chan string, 1)
	go func() {
		rd := http2.NewFramer(nil, conn)
		for {
			f, err := rd.ReadFrame()
			if err != nil {
				ended <- "closed: " + err.Error()
				return
			}
			if ga, ok := f.(*http2.GoAwayFrame); ok {
				ended <- "GOAWAY " + ga.ErrCode.String()
				return
			}
		}
	}()
	deadline := time.Now().Add(60 * time.Second)
	_ = conn.SetWriteDeadline(deadline)
	const attack = 100_000
	sent, early := 0, false
	for id := uint32(1); sent < attack && time.Now().Before(deadline); id += 2 {
		err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block, EndHeaders: true})
		if err == nil {
			err = fr.WriteData(id, true, body)
		}
		if err == nil {
			err = fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
		if err != nil {
			early = true // the server closed the connection
			break
		}
		sent++
		select {
		case how := <-ended:
			ended <- how
			early = true
		default:
		}
		if early {
			break
		}
	}
	if !early {
		t.Fatalf("the server kept a connection that reset %d Checks", sent)
	}
	select {
	case how := <-ended:
		t.Logf("after %d reset streams the server ended the connection: %s", sent, how)
	case <-time.After(time.Until(deadline)):
		t.Fatalf("the connection was not ended after %d reset streams", sent)
	}

	again, err := d.Dial("tcp", srv.grpcAddr)
	if err == nil {
		_ = again.SetReadDeadline(time.Now().Add(10 * time.Second))
		_, err = again.Read(make([]byte, 1))
		again.Close()
	}
	if err == nil {
		t.Error("the attacker's address could connect again at once")
	}

	client := authv3.NewAuthorizationClient(authztest.Dial(t, srv.grpcAddr))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := client.Check(ctx, req)
	if err != nil {
		t.Fatalf("a Check after the attack: %v", err)
	}
	if got := authztest.Metadata(resp)["decision"]; got != "allow" {
		t.Errorf("a Check after the attack: %s, want allow", got)
	}
}
