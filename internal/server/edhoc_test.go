package server

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"coapca/edhoc"
	"coapca/internal/config"
)

// rawCoAP is a CoAP message as a constrained initiator without block-wise sees it.
type rawCoAP struct {
	typ, code byte
	mid       uint16
	opts      map[int][]byte // last value of each option number
	payload   []byte
}

func parseRawCoAP(b []byte) (*rawCoAP, error) {
	if len(b) < 4 || b[0]>>6 != 1 {
		return nil, errors.New("not CoAP")
	}
	m := &rawCoAP{typ: b[0] >> 4 & 3, code: b[1], mid: binary.BigEndian.Uint16(b[2:4]), opts: map[int][]byte{}}
	i := 4 + int(b[0]&0xf)
	num := 0
	for i < len(b) {
		if b[i] == 0xff {
			m.payload = b[i+1:]
			return m, nil
		}
		d, l := int(b[i]>>4), int(b[i]&0xf)
		i++
		ext := func(v int) int {
			switch v {
			case 13:
				v = 13 + int(b[i])
				i++
			case 14:
				v = 269 + int(binary.BigEndian.Uint16(b[i:]))
				i += 2
			}
			return v
		}
		d, l = ext(d), ext(l)
		num += d
		if i+l > len(b) {
			return nil, errors.New("option overruns the message")
		}
		m.opts[num] = b[i : i+l]
		i += l
	}
	return m, nil
}

// edhocPOST encodes a CON POST /.well-known/edhoc (RFC 9528 Appendix A.2) with an optional
// Echo option (RFC 9175, number 252).
func edhocPOST(mid uint16, echo, payload []byte) []byte {
	b := []byte{0x40, 0x02, byte(mid >> 8), byte(mid)}
	b = append(b, 0xbb)
	b = append(b, ".well-known"...)
	b = append(b, 0x05)
	b = append(b, "edhoc"...)
	b = append(b, 0x11, 65) // Content-Format (12 = 11 + 1): 65, application/cid-edhoc+cbor-seq
	if echo != nil {        // Echo: delta 240 = 13 + 227 (RFC 7252 §3.1 extended delta)
		if len(echo) < 13 {
			b = append(b, 0xd0|byte(len(echo)), 227)
		} else {
			b = append(b, 0xdd, 227, byte(len(echo)-13))
		}
		b = append(b, echo...)
	}
	b = append(b, 0xff)
	return append(b, payload...)
}

// TestEDHOCMessage2ForConstrainedInitiator is the failure of issue 13 item 7 as a test: an
// initiator without block-wise transfers that takes one certificate per x5chain sends
// message_1 and must get all of message_2 in one response of at most 1024 bytes, and
// complete it. With the server's certificate and its issuing CA in x5chain (the former
// behaviour, "x5chain") message_2 is 1,059 bytes and arrives in Block2 pieces; the default
// (x5chain-leaf) and x5t fit (RFC 9528 §3.5.3, RFC 9360 §2).
func TestEDHOCMessage2ForConstrainedInitiator(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		credential string
		fits       bool
	}{
		{"", true}, {"x5chain-leaf", true}, {"x5t", true}, {"x5chain", false},
	} {
		t.Run(fmt.Sprintf("credential=%q", tc.credential), func(t *testing.T) {
			cfg := config.Default()
			cfg.Data = dir
			cfg.Listen = config.Listen{CoAP: "127.0.0.1:0"}
			cfg.EDHOC.Credential = tc.credential
			s, err := Start(context.Background(), cfg, quiet())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			d := s.Data()
			dev := d.DeviceCertificate()
			devLeaf, err := x509.ParseCertificate(dev.Certificate[0])
			if err != nil {
				t.Fatal(err)
			}
			devCred, err := edhoc.NewX509Credential([]*x509.Certificate{devLeaf}, edhoc.ByX5Chain)
			if err != nil {
				t.Fatal(err)
			}
			// The initiator knows the root and the issuing CA, and (for x5t) the server's
			// certificate; it verifies whatever it is sent.
			roots, inter := x509.NewCertPool(), x509.NewCertPool()
			roots.AddCert(d.Root)
			inter.AddCert(d.IssuingCA)
			resolve := func(id *edhoc.IDCred, _ []edhoc.EAD) (*edhoc.Credential, error) {
				var leaf *x509.Certificate
				switch {
				case len(id.X5Chain) == 1:
					if leaf, err = x509.ParseCertificate(id.X5Chain[0]); err != nil {
						return nil, err
					}
				case len(id.X5Chain) > 1:
					return nil, fmt.Errorf("%w: %d certificates in x5chain, this initiator takes one", edhoc.ErrUnknownCredential, len(id.X5Chain))
				case id.MatchesCert(d.Server.Raw):
					leaf = d.Server
				default:
					return nil, edhoc.ErrUnknownCredential
				}
				if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter}); err != nil {
					return nil, err
				}
				return edhoc.NewX509Credential([]*x509.Certificate{leaf}, edhoc.ByX5T)
			}
			in, err := edhoc.NewInitiator(edhoc.Config{Suites: []edhoc.Suite{2}, Credential: devCred, PrivateKey: dev.PrivateKey, Resolve: resolve})
			if err != nil {
				t.Fatal(err)
			}
			m1, err := in.Message1(nil)
			if err != nil {
				t.Fatal(err)
			}
			conn, err := net.Dial("udp", strings.TrimPrefix(s.CoAPURL(), "coap://"))
			if err != nil {
				t.Fatal(err)
			}
			defer conn.Close()
			buf := make([]byte, 2048)
			exchange := func(req []byte) *rawCoAP {
				t.Helper()
				if _, err := conn.Write(req); err != nil {
					t.Fatal(err)
				}
				_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
				n, err := conn.Read(buf)
				if err != nil {
					t.Fatal(err)
				}
				m, err := parseRawCoAP(bytes.Clone(buf[:n]))
				if err != nil {
					t.Fatal(err)
				}
				return m
			}
			var mid [2]byte
			_, _ = rand.Read(mid[:])
			body := append([]byte{0xf5}, m1...) // CBOR true ‖ message_1
			resp := exchange(edhocPOST(binary.BigEndian.Uint16(mid[:]), nil, body))
			if resp.code == 0x81 && resp.opts[252] != nil { // 4.01 + Echo: prove the address (RFC 9175 §2.4)
				resp = exchange(edhocPOST(binary.BigEndian.Uint16(mid[:])+1, resp.opts[252], body))
			}
			if resp.code != 0x44 { // 2.04 Changed
				t.Fatalf("message_1 answered %d.%02d: %s", resp.code>>5, resp.code&0x1f, resp.payload)
			}
			_, block2 := resp.opts[23]
			fits := !block2 && len(resp.payload) <= 1024
			t.Logf("credential %q: message_2 response payload %d bytes, Block2 %v", tc.credential, len(resp.payload), block2)
			if fits != tc.fits {
				t.Fatalf("message_2 in one block = %v (%d bytes, Block2 %v), want %v", fits, len(resp.payload), block2, tc.fits)
			}
			if !fits {
				return
			}
			if _, err := in.ProcessMessage2(resp.payload); err != nil {
				t.Fatalf("the constrained initiator cannot complete message_2: %v", err)
			}
		})
	}
}

// TestStartRefusesUnknownEDHOCCredential: a mistyped edhoc.credential is refused before the
// first start creates a data directory.
func TestStartRefusesUnknownEDHOCCredential(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	cfg := config.Default()
	cfg.Data = dir
	cfg.Listen = config.Listen{CoAP: "127.0.0.1:0"}
	cfg.EDHOC.Credential = "x5chain-full"
	s, err := Start(context.Background(), cfg, quiet())
	if err == nil {
		s.Close()
		t.Fatal("Start accepted edhoc.credential x5chain-full")
	}
	if !strings.Contains(err.Error(), "x5chain-full") {
		t.Errorf("error %q does not name the value", err)
	}
	if _, err := os.Stat(dir); !os.IsNotExist(err) {
		t.Errorf("Start created %s before refusing the configuration", dir)
	}
}
