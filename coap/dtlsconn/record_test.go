package dtlsconn

import (
	"bytes"
	"net"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
)

// record builds one epoch-0 handshake record holding the given fragments.
func record(epoch uint16, frags ...[]byte) []byte {
	body := bytes.Join(frags, nil)
	h := []byte{contentTypeHandshake, 0xfe, 0xfd, byte(epoch >> 8), byte(epoch), 0, 0, 0, 0, 0, 1,
		byte(len(body) >> 8), byte(len(body))}
	return append(h, body...)
}

// frag builds a handshake fragment.
func frag(typ uint8, seq uint16, length, off int, data []byte) []byte {
	h := make([]byte, handshakeHeaderLen)
	h[0] = typ
	put24(h[1:4], length)
	h[4], h[5] = byte(seq>>8), byte(seq)
	put24(h[6:9], off)
	put24(h[9:12], len(data))
	return append(h, data...)
}

func unfragmented(typ uint8, seq uint16, body []byte) []byte {
	return frag(typ, seq, len(body), 0, body)
}

func TestTranscript(t *testing.T) {
	ch1 := []byte("client-hello-1, no cookie.......")
	ch2 := []byte("client-hello-2 with cookie......")
	sh := []byte("server hello")
	cert := bytes.Repeat([]byte{'C'}, 3000)
	ske, shd := []byte("ske"), []byte{}
	ccert, cke, cv := []byte("client cert"), []byte("cke"), []byte("cv")
	want := bytes.Join([][]byte{
		unfragmented(hsClientHello, 1, ch2),
		unfragmented(hsServerHello, 1, sh), unfragmented(hsCertificate, 2, cert),
		unfragmented(hsServerKeyExchange, 3, ske), unfragmented(hsServerHelloDone, 4, shd),
		unfragmented(hsCertificate, 2, ccert), unfragmented(hsClientKeyExchange, 3, cke),
		unfragmented(hsCertificateVerify, 4, cv),
	}, nil)
	for _, tc := range []struct {
		name    string
		feed    func(tr *transcript)
		wantErr bool
	}{
		{"in-order", func(tr *transcript) {
			tr.addDatagram(record(0, unfragmented(hsClientHello, 0, ch1)), true)
			tr.addDatagram(record(0, unfragmented(hsHelloVerifyRequest, 0, []byte("hvr"))), false)
			tr.addDatagram(record(0, unfragmented(hsClientHello, 1, ch2)), true)
			tr.addDatagram(append(record(0, unfragmented(hsServerHello, 1, sh), frag(hsCertificate, 2, len(cert), 0, cert[:1000])),
				record(0, frag(hsCertificate, 2, len(cert), 1000, cert[1000:]))...), false)
			tr.addDatagram(record(0, unfragmented(hsServerKeyExchange, 3, ske), unfragmented(hsServerHelloDone, 4, shd)), false)
			tr.addDatagram(record(0, unfragmented(hsCertificate, 2, ccert), unfragmented(hsClientKeyExchange, 3, cke),
				unfragmented(hsCertificateVerify, 4, cv)), true)
			tr.addDatagram(record(1, []byte("encrypted finished")), true)
		}, false},
		{"reordered-retransmitted-overlapping", func(tr *transcript) {
			tr.addDatagram(record(0, unfragmented(hsClientHello, 1, ch2)), true)
			tr.addDatagram(record(0, frag(hsCertificate, 2, len(cert), 500, cert[500:])), false)
			tr.addDatagram(record(0, frag(hsCertificate, 2, len(cert), 0, cert[:600])), false)
			tr.addDatagram(record(0, unfragmented(hsServerHelloDone, 4, shd), unfragmented(hsServerKeyExchange, 3, ske)), false)
			tr.addDatagram(record(0, unfragmented(hsServerHello, 1, sh)), false)
			tr.addDatagram(record(0, unfragmented(hsServerHello, 1, sh)), false)
			tr.addDatagram(record(0, unfragmented(hsCertificateVerify, 4, cv), unfragmented(hsCertificate, 2, ccert),
				unfragmented(hsClientKeyExchange, 3, cke)), true)
			tr.addDatagram(record(0, unfragmented(hsClientHello, 0, ch1)), true) // late first hello
		}, false},
		{"hello-verify-request-ignored", func(tr *transcript) {
			// The HelloVerifyRequest is not part of handshake_messages (RFC 6347 §4.2.6), so
			// not even a conflicting retransmission of it matters.
			tr.addDatagram(record(0, unfragmented(hsClientHello, 0, ch1)), true)
			tr.addDatagram(record(0, unfragmented(hsHelloVerifyRequest, 0, []byte("hvr"))), false)
			tr.addDatagram(record(0, unfragmented(hsHelloVerifyRequest, 0, []byte("HVR"))), false)
			tr.addDatagram(record(0, unfragmented(hsClientHello, 1, ch2)), true)
			tr.addDatagram(record(0, unfragmented(hsServerHello, 1, sh), unfragmented(hsCertificate, 2, cert)), false)
			tr.addDatagram(record(0, unfragmented(hsServerKeyExchange, 3, ske), unfragmented(hsServerHelloDone, 4, shd)), false)
			tr.addDatagram(record(0, unfragmented(hsCertificate, 2, ccert), unfragmented(hsClientKeyExchange, 3, cke),
				unfragmented(hsCertificateVerify, 4, cv)), true)
		}, false},
		{"whole-then-consistent-fragments", func(tr *transcript) {
			tr.addDatagram(record(0, unfragmented(hsClientHello, 1, ch2)), true)
			tr.addDatagram(record(0, unfragmented(hsServerHello, 1, sh), unfragmented(hsCertificate, 2, cert)), false)
			tr.addDatagram(record(0, frag(hsCertificate, 2, len(cert), 0, cert[:1000]), frag(hsCertificate, 2, len(cert), 999, cert[999:2000])), false)
			tr.addDatagram(record(0, frag(hsServerHelloDone, 4, 0, 0, nil), unfragmented(hsServerKeyExchange, 3, ske)), false)
			tr.addDatagram(record(0, unfragmented(hsCertificate, 2, ccert), unfragmented(hsClientKeyExchange, 3, cke),
				unfragmented(hsCertificateVerify, 4, cv)), true)
		}, false},
		{"in-order-then-gap-then-fill", func(tr *transcript) {
			tr.addDatagram(record(0, unfragmented(hsClientHello, 1, ch2)), true)
			tr.addDatagram(record(0, unfragmented(hsServerHello, 1, sh), frag(hsCertificate, 2, len(cert), 0, cert[:1000])), false)
			tr.addDatagram(record(0, frag(hsCertificate, 2, len(cert), 2000, cert[2000:])), false)
			tr.addDatagram(record(0, frag(hsCertificate, 2, len(cert), 900, cert[900:2100])), false)
			tr.addDatagram(record(0, unfragmented(hsServerKeyExchange, 3, ske), unfragmented(hsServerHelloDone, 4, shd)), false)
			tr.addDatagram(record(0, unfragmented(hsCertificate, 2, ccert), unfragmented(hsClientKeyExchange, 3, cke),
				unfragmented(hsCertificateVerify, 4, cv)), true)
		}, false},
		{"empty-fragment-then-whole", func(tr *transcript) {
			tr.addDatagram(record(0, unfragmented(hsClientHello, 1, ch2)), true)
			tr.addDatagram(record(0, frag(hsCertificate, 2, len(cert), 100, nil)), false)
			tr.addDatagram(record(0, unfragmented(hsServerHello, 1, sh), unfragmented(hsCertificate, 2, cert)), false)
			tr.addDatagram(record(0, unfragmented(hsServerKeyExchange, 3, ske), unfragmented(hsServerHelloDone, 4, shd)), false)
			tr.addDatagram(record(0, unfragmented(hsCertificate, 2, ccert), unfragmented(hsClientKeyExchange, 3, cke),
				unfragmented(hsCertificateVerify, 4, cv)), true)
		}, false},
		{"whole-then-conflicting-fragment", func(tr *transcript) {
			tr.addDatagram(record(0, unfragmented(hsClientHello, 1, ch2)), true)
			tr.addDatagram(record(0, unfragmented(hsServerHello, 1, sh), unfragmented(hsCertificate, 2, cert)), false)
			tr.addDatagram(record(0, frag(hsCertificate, 2, len(cert), 2000, bytes.Repeat([]byte{'X'}, 10))), false)
			tr.addDatagram(record(0, unfragmented(hsServerKeyExchange, 3, ske), unfragmented(hsServerHelloDone, 4, shd)), false)
			tr.addDatagram(record(0, unfragmented(hsCertificate, 2, ccert), unfragmented(hsClientKeyExchange, 3, cke),
				unfragmented(hsCertificateVerify, 4, cv)), true)
		}, true},
		{"fragment-then-conflicting-whole", func(tr *transcript) {
			tr.addDatagram(record(0, unfragmented(hsClientHello, 1, ch2)), true)
			tr.addDatagram(record(0, frag(hsCertificate, 2, len(cert), 0, bytes.Repeat([]byte{'X'}, 10))), false)
			tr.addDatagram(record(0, unfragmented(hsServerHello, 1, sh), unfragmented(hsCertificate, 2, cert)), false)
			tr.addDatagram(record(0, unfragmented(hsServerKeyExchange, 3, ske), unfragmented(hsServerHelloDone, 4, shd)), false)
			tr.addDatagram(record(0, unfragmented(hsCertificate, 2, ccert), unfragmented(hsClientKeyExchange, 3, cke),
				unfragmented(hsCertificateVerify, 4, cv)), true)
		}, true},
		{"missing-fragment", func(tr *transcript) {
			tr.addDatagram(record(0, unfragmented(hsClientHello, 1, ch2)), true)
			tr.addDatagram(record(0, frag(hsCertificate, 2, len(cert), 0, cert[:600])), false)
		}, true},
		{"conflicting-bytes", func(tr *transcript) {
			tr.addDatagram(record(0, unfragmented(hsClientHello, 0, ch2)), true)
			bad := append([]byte(nil), ch2...)
			bad[3] ^= 1
			tr.addDatagram(record(0, unfragmented(hsClientHello, 0, bad)), true)
		}, true},
		{"complete-then-conflicting-fragment", func(tr *transcript) {
			// A message first seen whole, then a fragment of it with other bytes: an attacker
			// (or a broken peer) must not get a transcript that mixes the two.
			tr.addDatagram(record(0, unfragmented(hsClientHello, 1, ch2)), true)
			tr.addDatagram(record(0, unfragmented(hsServerHello, 1, sh)), false)
			bad := append([]byte(nil), sh[4:8]...)
			bad[0] ^= 1
			tr.addDatagram(record(0, frag(hsServerHello, 1, len(sh), 4, bad)), false)
		}, true},
		{"complete-then-same-fragment-and-other-type", func(tr *transcript) {
			tr.addDatagram(record(0, unfragmented(hsClientHello, 1, ch2)), true)
			tr.addDatagram(record(0, unfragmented(hsServerHello, 1, sh)), false)
			tr.addDatagram(record(0, frag(hsServerHello, 1, len(sh), 4, sh[4:8])), false) // agrees: kept
			tr.addDatagram(record(0, unfragmented(hsServerKeyExchange, 1, sh)), false)    // same seq, other type
		}, true},
		{"fragments-then-conflicting-retransmission", func(tr *transcript) {
			tr.addDatagram(record(0, unfragmented(hsClientHello, 1, ch2)), true)
			tr.addDatagram(record(0, frag(hsCertificate, 2, len(cert), 0, cert[:1000])), false)
			tr.addDatagram(record(0, frag(hsCertificate, 2, len(cert), 1000, cert[1000:])), false)
			tr.addDatagram(record(0, unfragmented(hsCertificate, 2, bytes.Repeat([]byte{'D'}, len(cert)))), false)
		}, true},
		{"no-client-hello", func(tr *transcript) {
			tr.addDatagram(record(0, unfragmented(hsServerHello, 0, sh)), false)
		}, true},
		{"too-big", func(tr *transcript) {
			tr.addDatagram(record(0, frag(hsCertificate, 2, maxHandshakeMsgLen+1, 0, []byte{1})), false)
			tr.addDatagram(record(0, unfragmented(hsClientHello, 0, ch2)), true)
		}, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr := newTranscript()
			tc.feed(tr)
			got, err := tr.clientFinishedInput()
			if tc.wantErr {
				if err == nil {
					t.Fatal("want error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("transcript differs:\n got %x\nwant %x", got, want)
			}
		})
	}
}

func TestFirstClientHello(t *testing.T) {
	body := func(cookie []byte) []byte {
		b := append([]byte{0xfe, 0xfd}, make([]byte, 32)...)
		b = append(b, 0)                 // session_id
		b = append(b, byte(len(cookie))) // cookie
		b = append(b, cookie...)
		return append(b, 0, 2, 0xc0, 0xae, 1, 0) // suites, compression
	}
	for _, tc := range []struct {
		name       string
		b          []byte
		ok, cookie bool
	}{
		{"initial", record(0, unfragmented(hsClientHello, 0, body(nil))), true, false},
		{"with-cookie", record(0, unfragmented(hsClientHello, 1, body([]byte("cookie")))), true, true},
		{"epoch1", record(1, unfragmented(hsClientHello, 0, body(nil))), false, false},
		{"server-hello", record(0, unfragmented(hsServerHello, 0, body(nil))), false, false},
		{"second-fragment", record(0, frag(hsClientHello, 0, 100, 10, []byte("x"))), false, false},
		{"truncated", record(0, unfragmented(hsClientHello, 0, body(nil)))[:20], false, false},
		{"empty", nil, false, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ok, cookie := firstClientHello(tc.b)
			if ok != tc.ok || cookie != tc.cookie {
				t.Fatalf("got %v,%v want %v,%v", ok, cookie, tc.ok, tc.cookie)
			}
		})
	}
}

func TestSplitDatagram(t *testing.T) {
	r1 := record(0, make([]byte, 5000))
	r2 := record(0, make([]byte, 5000))
	r3 := record(0, make([]byte, 100))
	for _, tc := range []struct {
		name  string
		b     []byte
		parts int
	}{
		{"small", append(append([]byte(nil), r3...), r3...), 1},
		{"two-big", append(append([]byte(nil), r1...), r2...), 2},
		{"three", bytes.Join([][]byte{r1, r3, r2}, nil), 2},
		{"one-huge", record(0, make([]byte, 9000)), 1},
		{"bad-tail", append(append([]byte(nil), r1...), append(r2, 0x16, 0xfe)...), 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parts := splitDatagram(tc.b, pionInboundBuffer)
			if len(parts) != tc.parts || !bytes.Equal(bytes.Join(parts, nil), tc.b) {
				t.Fatalf("%d parts", len(parts))
			}
		})
	}
}

// FuzzSniffer feeds arbitrary datagrams in both directions through the
// record/handshake parser, the transcript and the ClientHello classifier.
func FuzzSniffer(f *testing.F) {
	ch := append([]byte{0xfe, 0xfd}, make([]byte, 32)...)
	ch = append(ch, 0, 0, 0, 2, 0xc0, 0xae, 1, 0)
	f.Add(record(0, unfragmented(hsClientHello, 0, ch)), false)
	f.Add(record(0, frag(hsCertificate, 2, 3000, 1000, make([]byte, 500))), true)
	f.Add(append(record(0, unfragmented(hsServerHello, 1, []byte("sh"))), record(1, []byte("x"))...), true)
	f.Add([]byte{0x19, 0xfe, 0xfd, 0, 1, 0, 0, 0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 0, 0}, false)
	f.Add([]byte{0x16, 0xfe, 0xfd, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff}, false)
	f.Fuzz(func(t *testing.T, b []byte, fromServer bool) {
		firstClientHello(b)
		hasHandshakeType(b, hsServerHello)
		parts := splitDatagram(b, 64)
		if !bytes.Equal(bytes.Join(parts, nil), b) {
			t.Fatal("split lost bytes")
		}
		tr := newTranscript()
		for i := 0; i < 3; i++ {
			tr.addDatagram(b, fromServer == (i%2 == 0))
		}
		if out, err := tr.clientFinishedInput(); err == nil && len(out) < handshakeHeaderLen {
			t.Fatal("short transcript without error")
		}
	})
}

// BenchmarkTranscript records one full mutually authenticated handshake as the listener sees it
// (ClientHello twice around the HelloVerifyRequest, certificate chains of realistic size) and
// hashes handshake_messages, as newConn does.
func BenchmarkTranscript(b *testing.B) {
	ch1 := bytes.Repeat([]byte{1}, 120)
	ch2 := bytes.Repeat([]byte{2}, 150)
	sh, cert, ske := bytes.Repeat([]byte{3}, 90), bytes.Repeat([]byte{4}, 900), bytes.Repeat([]byte{5}, 150)
	creq, ccert := bytes.Repeat([]byte{6}, 40), bytes.Repeat([]byte{7}, 700)
	cke, cv := bytes.Repeat([]byte{8}, 66), bytes.Repeat([]byte{9}, 74)
	dgrams := []struct {
		b          []byte
		fromClient bool
	}{
		{record(0, unfragmented(hsClientHello, 0, ch1)), true},
		{record(0, unfragmented(hsHelloVerifyRequest, 0, bytes.Repeat([]byte{0}, 35))), false},
		{record(0, unfragmented(hsClientHello, 1, ch2)), true},
		{append(record(0, unfragmented(hsServerHello, 1, sh)), record(0, unfragmented(hsCertificate, 2, cert))...), false},
		{record(0, unfragmented(hsServerKeyExchange, 3, ske), unfragmented(hsCertificateRequest, 4, creq),
			unfragmented(hsServerHelloDone, 5, nil)), false},
		{record(0, unfragmented(hsCertificate, 2, ccert), unfragmented(hsClientKeyExchange, 3, cke),
			unfragmented(hsCertificateVerify, 4, cv)), true},
		{record(1, make([]byte, 40)), true},
	}
	b.ReportAllocs()
	for b.Loop() {
		tr := newTranscript()
		for _, d := range dgrams {
			tr.addDatagram(d.b, d.fromClient)
		}
		if _, err := finishedHash(tr, dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8); err != nil {
			b.Fatal(err)
		}
	}
}

// TestClientPCReadFrom sends datagrams over a real loopback socket to a client session's
// packet conn and checks what pion would read: each datagram whole when it fits pion's
// buffer, else its records in chunks that fit, in order and unaltered, also when the
// pooled datagram buffer is reused for the next datagram while the previous one is still
// being handed over, and with the transcript seeing every datagram whole.
func TestClientPCReadFrom(t *testing.T) {
	r1 := record(0, bytes.Repeat([]byte{1}, 5000))
	r2 := record(0, bytes.Repeat([]byte{2}, 5000))
	r3 := record(0, bytes.Repeat([]byte{3}, 100))
	hs := record(0, unfragmented(hsServerHello, 1, []byte("server hello")))
	for _, tc := range []struct {
		name  string
		grams [][]byte
		reads [][]byte // what each ReadFrom returns, in order
	}{
		{"one small", [][]byte{r3}, [][]byte{r3}},
		{"small then small", [][]byte{r3, hs}, [][]byte{r3, hs}},
		{"two records in one datagram that fits", [][]byte{cat(r3, r3)}, [][]byte{cat(r3, r3)}},
		{"over pion's buffer: split at the record boundary", [][]byte{cat(r1, r2)}, [][]byte{r1, r2}},
		{"split, then the next datagram reuses a buffer", [][]byte{cat(r1, r2), cat(r2, r1), r3},
			[][]byte{r1, r2, r2, r1, r3}},
		{"single record over pion's buffer stays whole", [][]byte{record(0, make([]byte, 9000)), r3},
			[][]byte{record(0, make([]byte, 9000))[:pionInboundBuffer], r3}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			uc, err := net.DialUDP("udp", nil, srv.LocalAddr().(*net.UDPAddr))
			if err != nil {
				t.Fatal(err)
			}
			pc := &clientPC{uc: uc, raddr: srv.LocalAddr().(*net.UDPAddr), tr: newTranscript()}
			defer pc.Close()
			for _, g := range tc.grams {
				if _, err := srv.WriteToUDP(g, uc.LocalAddr().(*net.UDPAddr)); err != nil {
					t.Fatal(err)
				}
			}
			_ = pc.SetReadDeadline(time.Now().Add(5 * time.Second))
			buf := make([]byte, pionInboundBuffer)
			for i, want := range tc.reads {
				n, from, err := pc.ReadFrom(buf)
				if err != nil {
					t.Fatalf("read %d: %v", i, err)
				}
				if from.String() != srv.LocalAddr().String() {
					t.Fatalf("read %d from %v", i, from)
				}
				if !bytes.Equal(buf[:n], want) {
					t.Fatalf("read %d: %d bytes, want %d (%x…)", i, n, len(want), buf[:min(n, 16)])
				}
			}
			if pc.buf != nil || len(pc.pending) != 0 {
				t.Fatalf("a buffer is still held after every datagram was read (%d chunks pending)", len(pc.pending))
			}
			// The server hello datagram reached the transcript.
			wantMsgs := 0
			for _, g := range tc.grams {
				if bytes.Equal(g, hs) {
					wantMsgs++
				}
			}
			if got := countType(pc.tr, hsServerHello); got != wantMsgs {
				t.Fatalf("transcript holds %d ServerHello, want %d", got, wantMsgs)
			}
			// After Close, ReadFrom fails rather than returning stale bytes.
			_ = pc.Close()
			if _, _, err := pc.ReadFrom(buf); err == nil {
				t.Fatal("ReadFrom after Close succeeded")
			}
		})
	}
}

func cat(bs ...[]byte) []byte { return bytes.Join(bs, nil) }

func countType(tr *transcript, typ uint8) int {
	n := 0
	for _, m := range tr.msgs {
		if m.typ == typ {
			n++
		}
	}
	return n
}
