package dtlsconn

import (
	"bytes"
	"context"
	"errors"
	"io"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/pion/dtls/v3"
)

func acceptOne(t *testing.T, ch <-chan *Conn) *Conn {
	t.Helper()
	select {
	case c := <-ch:
		return c
	case <-time.After(10 * time.Second):
		t.Fatal("no session accepted")
		return nil
	}
}

// TestPionClient: our client ↔ our listener; both sides compute the same
// tls-unique and tls-exporter, for each PRF hash and with/without CID.
func TestPionClient(t *testing.T) {
	p := testPKI(t)
	for _, tc := range []struct {
		name  string
		suite dtls.CipherSuiteID
		cid   bool
	}{
		{"ccm8", dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, false},
		{"ccm8-cid", dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8, true},
		{"gcm-sha256", dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, false},
		{"gcm-sha384", dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scfg := serverConfig(p)
			scfg.CipherSuites = []dtls.CipherSuiteID{tc.suite}
			scfg.ConnectionID = tc.cid
			l := listen(t, scfg)
			acc := serve(t, l)
			ccfg := clientConfig(p)
			ccfg.ConnectionID = tc.cid
			ccfg.CipherSuites = []dtls.CipherSuiteID{tc.suite}
			c, err := dialOnly(t, l, ccfg, tc.suite)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s := acceptOne(t, acc)
			if c.CipherSuite() != tc.suite || s.CipherSuite() != tc.suite {
				t.Fatalf("suite client %v server %v, want %v", c.CipherSuite(), s.CipherSuite(), tc.suite)
			}
			if len(s.TLSUnique()) != 12 || !bytes.Equal(c.TLSUnique(), s.TLSUnique()) {
				t.Fatalf("tls-unique client %x server %x", c.TLSUnique(), s.TLSUnique())
			}
			if len(s.TLSExporter()) != 32 || !bytes.Equal(c.TLSExporter(), s.TLSExporter()) {
				t.Fatalf("tls-exporter client %x server %x", c.TLSExporter(), s.TLSExporter())
			}
			if c.ConnectionID() != tc.cid || s.ConnectionID() != tc.cid {
				t.Fatalf("cid client %v server %v", c.ConnectionID(), s.ConnectionID())
			}
			if pc := s.PeerCertificates(); len(pc) == 0 || pc[0].Subject.CommonName != "device-1" {
				t.Fatalf("server sees peer %v", pc)
			}
			if pc := c.PeerCertificates(); len(pc) == 0 || pc[0].Subject.CommonName != "localhost" {
				t.Fatalf("client sees peer %v", pc)
			}
			if _, err := c.Write([]byte{0x40, 0x01, 0x12, 0x34}); err != nil {
				t.Fatal(err)
			}
			buf := make([]byte, 64)
			_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, err := c.Read(buf)
			if err != nil || !bytes.Equal(buf[:n], []byte{0x60, 0x45, 0x12, 0x34, 0xff, 'o', 'k'}) {
				t.Fatalf("echo %x %v", buf[:n], err)
			}
			if st := l.Stats(); st.HandshakesOK != 1 || st.ActiveSessions != 1 || st.HalfOpen != 0 {
				t.Fatalf("stats %+v", st)
			}
		})
	}
}

func dialOnly(t *testing.T, l *Listener, cfg ClientConfig, _ dtls.CipherSuiteID) (*Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	return Dial(ctx, "udp", l.Addr().String(), cfg)
}

// TestClientAuthPolicies: required certificates are enforced; requested ones are optional.
func TestClientAuthPolicies(t *testing.T) {
	p := testPKI(t)
	for _, tc := range []struct {
		name     string
		auth     ClientAuth
		sendCert bool
		ok       bool
	}{
		{"require-with", RequireClientCert, true, true},
		{"require-without", RequireClientCert, false, false},
		{"request-without", RequestClientCert, false, true},
		{"request-with", RequestClientCert, true, true},
		{"none", NoClientCert, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			scfg := serverConfig(p)
			scfg.ClientAuth = tc.auth
			scfg.HandshakeTimeout = 2 * time.Second
			l := listen(t, scfg)
			acc := serve(t, l)
			ccfg := clientConfig(p)
			ccfg.HandshakeTimeout = 2 * time.Second
			if !tc.sendCert {
				ccfg.Certificates = nil
			}
			c, err := dialOnly(t, l, ccfg, 0)
			if !tc.ok {
				if err == nil {
					c.Close()
					t.Fatal("handshake succeeded without a client certificate")
				}
				waitUntil(t, 5*time.Second, "the server to count the failed handshake",
					func() bool { return l.Stats().HandshakesFailed > 0 })
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s := acceptOne(t, acc)
			wantPeer := tc.sendCert && tc.auth != NoClientCert
			if (len(s.PeerCertificates()) > 0) != wantPeer {
				t.Fatalf("peer certs %d, want %v", len(s.PeerCertificates()), wantPeer)
			}
			if !bytes.Equal(c.TLSUnique(), s.TLSUnique()) || len(s.TLSUnique()) != 12 {
				t.Fatalf("tls-unique %x %x", c.TLSUnique(), s.TLSUnique())
			}
		})
	}
}

// TestReferenceTLSUnique is the proof: for the same handshake, OpenSSL's
// SSL_get_finished() and GnuTLS's gnutls_session_channel_binding(TLS_UNIQUE)
// (the client's Finished verify_data) equal our server-side TLSUnique, and
// their RFC 9266 exporters equal our TLSExporter.
func TestReferenceTLSUnique(t *testing.T) {
	gcc, err := exec.LookPath("gcc")
	if err != nil {
		t.Skip("gcc not installed")
	}
	build := func(t *testing.T, src, libs string) string {
		bin := filepath.Join(t.TempDir(), strings.TrimSuffix(filepath.Base(src), ".c"))
		args := append([]string{"-o", bin, src}, strings.Fields(libs)...)
		if out, err := exec.Command(gcc, args...).CombinedOutput(); err != nil {
			t.Skipf("cannot build %s (dev package missing?): %v\n%s", src, err, out)
		}
		return bin
	}
	p := testPKI(t)
	const gnutlsBase = "NORMAL:-VERS-ALL:+VERS-DTLS1.2:-KX-ALL:+ECDHE-ECDSA:-GROUP-ALL:+GROUP-SECP256R1:-CIPHER-ALL:"
	peers := []struct {
		name, src, lib string
		cases          []struct {
			name, ciphers string
			suite         dtls.CipherSuiteID
		}
	}{
		{"openssl", "testdata/tlsunique_client.c", "-lssl -lcrypto", []struct {
			name, ciphers string
			suite         dtls.CipherSuiteID
		}{
			{"ccm8", "ECDHE-ECDSA-AES128-CCM8:@SECLEVEL=0", dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8},
			{"gcm-sha256", "ECDHE-ECDSA-AES128-GCM-SHA256", dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
			{"gcm-sha384", "ECDHE-ECDSA-AES256-GCM-SHA384", dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384},
		}},
		{"gnutls", "testdata/tlsunique_gnutls.c", "-lgnutls", []struct {
			name, ciphers string
			suite         dtls.CipherSuiteID
		}{
			{"ccm8", gnutlsBase + "+AES-128-CCM-8", dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8},
			{"gcm-sha256", gnutlsBase + "+AES-128-GCM", dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
			{"gcm-sha384", gnutlsBase + "+AES-256-GCM", dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384},
		}},
	}
	for _, peer := range peers {
		t.Run(peer.name, func(t *testing.T) {
			bin := build(t, peer.src, peer.lib)
			for _, tc := range peer.cases {
				t.Run(tc.name, func(t *testing.T) {
					scfg := serverConfig(p)
					scfg.CipherSuites = []dtls.CipherSuiteID{dtls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256,
						dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384}
					scfg.ConnectionID = true // not negotiated by these peers; must not disturb
					l := listen(t, scfg)
					acc := serve(t, l)
					ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
					defer cancel()
					out, err := exec.CommandContext(ctx, bin, "127.0.0.1", portOf(l), p.clientPEM, p.keyPEM, p.caPEM,
						tc.ciphers).CombinedOutput()
					if err != nil {
						t.Fatalf("%s peer: %v\n%s", peer.name, err, out)
					}
					got := map[string]string{}
					for _, line := range strings.Split(string(out), "\n") {
						if k, v, ok := strings.Cut(line, " "); ok {
							got[k] = v
						}
					}
					s := acceptOne(t, acc)
					if s.CipherSuite() != tc.suite {
						t.Fatalf("suite %v, want %v", s.CipherSuite(), tc.suite)
					}
					if want := got["finished"]; want == "" || want != hexs(s.TLSUnique()) {
						t.Fatalf("tls-unique: %s says %s, ours %x\n%s", peer.name, want, s.TLSUnique(), out)
					}
					if want := got["exporter"]; want != hexs(s.TLSExporter()) {
						t.Fatalf("tls-exporter: %s says %s, ours %x", peer.name, want, s.TLSExporter())
					}
					if got["echo"] == "" {
						t.Fatalf("no echo:\n%s", out)
					}
					t.Logf("%s: tls-unique %x = %s's", got["cipher"], s.TLSUnique(), peer.name)
				})
			}
		})
	}
}

func hexs(b []byte) string {
	const digits = "0123456789abcdef"
	out := make([]byte, 0, 2*len(b))
	for _, c := range b {
		out = append(out, digits[c>>4], digits[c&15])
	}
	return string(out)
}

// TestLibcoap: Debian's libcoap 4.3.1 clients (OpenSSL and GnuTLS builds)
// complete a handshake with a client certificate and get the echo.
func TestLibcoap(t *testing.T) {
	p := testPKI(t)
	for _, bin := range []string{"coap-client-openssl", "coap-client-gnutls"} {
		t.Run(bin, func(t *testing.T) {
			path, err := exec.LookPath(bin)
			if err != nil {
				t.Skipf("%s not installed", bin)
			}
			scfg := serverConfig(p)
			scfg.ConnectionID = true
			l := listen(t, scfg)
			acc := serve(t, l)
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			defer cancel()
			cmd := exec.CommandContext(ctx, path, "-m", "get", "-B", "10", "-c", p.clientPEM, "-j", p.keyPEM,
				"-C", p.caPEM, "coaps://127.0.0.1:"+portOf(l)+"/x")
			out, err := cmd.CombinedOutput()
			if err != nil || !strings.Contains(string(out), "ok") {
				t.Fatalf("%s: %v\n%s", bin, err, out)
			}
			s := acceptOne(t, acc)
			if len(s.PeerCertificates()) == 0 || len(s.TLSUnique()) != 12 || len(s.TLSExporter()) != 32 {
				t.Fatalf("peer %d tls-unique %x", len(s.PeerCertificates()), s.TLSUnique())
			}
			t.Logf("%s: suite %v, tls-unique %x", bin, s.CipherSuite(), s.TLSUnique())
		})
	}
}

func portOf(l *Listener) string {
	_, port, _ := strings.Cut(l.Addr().String(), ":")
	return port
}

// TestLargeRecord: a record larger than the caller's buffer does not end the
// session, and a record of the maximum size is delivered whole.
func TestLargeRecord(t *testing.T) {
	p := testPKI(t)
	l := listen(t, serverConfig(p))
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { // echo whole records with a small application buffer
				buf := make([]byte, 1500)
				for {
					n, err := c.Read(buf)
					if errors.Is(err, io.ErrShortBuffer) {
						_, _ = c.Write([]byte("short"))
						continue
					}
					if err != nil {
						return
					}
					_, _ = c.Write(buf[:n])
				}
			}()
		}
	}()
	c, err := dialOnly(t, l, clientConfig(p), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 1<<16)
	// pion reads datagrams into an 8192-byte buffer: a larger record is lost
	// (not fatal); everything up to that size is delivered whole.
	if _, err := c.Write(make([]byte, 16000)); err != nil {
		t.Fatalf("write 16000: %v", err)
	}
	for _, size := range []int{8000, 100, 1500, 1501} {
		msg := bytes.Repeat([]byte{byte(size)}, size)
		if _, err := c.Write(msg); err != nil {
			t.Fatalf("write %d: %v", size, err)
		}
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("read after %d: %v", size, err)
		}
		want := msg
		if size > 1500 {
			want = []byte("short")
		}
		if !bytes.Equal(buf[:n], want) {
			t.Fatalf("size %d: got %d bytes", size, n)
		}
	}
}

// TestIdleTimeout: an idle session is closed and counted.
func TestIdleTimeout(t *testing.T) {
	p := testPKI(t)
	scfg := serverConfig(p)
	scfg.IdleTimeout = 300 * time.Millisecond
	l := listen(t, scfg)
	serve(t, l)
	c, err := dialOnly(t, l, clientConfig(p), 0)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	waitUntil(t, 5*time.Second, "the idle session to be closed", func() bool { return l.Stats().IdleClosed > 0 })
	if st := l.Stats(); st.IdleClosed != 1 || st.ActiveSessions != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestRateLimit: a source exceeding its handshake budget is refused until the
// bucket refills.
func TestRateLimit(t *testing.T) {
	p := testPKI(t)
	scfg := serverConfig(p)
	scfg.HandshakesPerSourcePerSecond = 0.5 // burst 2
	l := listen(t, scfg)
	serve(t, l)
	ccfg := clientConfig(p)
	ccfg.HandshakeTimeout = 1500 * time.Millisecond
	for i := 0; i < 2; i++ {
		c, err := dialOnly(t, l, ccfg, 0)
		if err != nil {
			t.Fatalf("handshake %d: %v", i, err)
		}
		c.Close()
	}
	if c, err := dialOnly(t, l, ccfg, 0); err == nil {
		c.Close()
		t.Fatal("third handshake within the burst window succeeded")
	}
	if st := l.Stats(); st.DroppedRateLimit == 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestSuiteWithoutState: a side configured with one cipher suite knows the negotiated one
// without copying pion's state out; a side offering several asks pion. Either way both sides
// report the suite pion negotiated, derive the same tls-unique and tls-exporter with its PRF
// hash, and see the other's chain.
func TestSuiteWithoutState(t *testing.T) {
	p := testPKI(t)
	ccm8 := dtls.TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8
	gcm384 := dtls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
	for _, tc := range []struct {
		name           string
		server, client []dtls.CipherSuiteID
		want           dtls.CipherSuiteID
	}{
		{"both ccm8 only", nil, nil, ccm8},
		{"server ccm8 only, client offers gcm first", nil, []dtls.CipherSuiteID{gcm384}, ccm8},
		{"server prefers gcm, client ccm8 only", []dtls.CipherSuiteID{gcm384}, nil, ccm8},
		{"both offer gcm first", []dtls.CipherSuiteID{gcm384}, []dtls.CipherSuiteID{gcm384}, gcm384},
		{"both offer both, the client ccm8 first", []dtls.CipherSuiteID{gcm384},
			[]dtls.CipherSuiteID{ccm8, gcm384}, ccm8}, // pion's server follows the client's order
	} {
		t.Run(tc.name, func(t *testing.T) {
			scfg := serverConfig(p)
			scfg.CipherSuites = tc.server
			l := listen(t, scfg)
			acc := serve(t, l)
			ccfg := clientConfig(p)
			ccfg.CipherSuites = tc.client
			c, err := dialOnly(t, l, ccfg, tc.want)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			s := acceptOne(t, acc)
			defer s.Close()
			if c.CipherSuite() != tc.want || s.CipherSuite() != tc.want {
				t.Fatalf("suite client %v server %v, want %v", c.CipherSuite(), s.CipherSuite(), tc.want)
			}
			if st, ok := c.dc.ConnectionState(); !ok || st.CipherSuiteID != c.CipherSuite() {
				t.Fatalf("client reports %v, pion negotiated %v", c.CipherSuite(), st.CipherSuiteID)
			}
			if len(s.TLSUnique()) != 12 || !bytes.Equal(c.TLSUnique(), s.TLSUnique()) {
				t.Fatalf("tls-unique client %x server %x", c.TLSUnique(), s.TLSUnique())
			}
			if len(s.TLSExporter()) != 32 || !bytes.Equal(c.TLSExporter(), s.TLSExporter()) {
				t.Fatalf("tls-exporter client %x server %x", c.TLSExporter(), s.TLSExporter())
			}
			if pc := s.PeerCertificates(); len(pc) == 0 || pc[0].Subject.CommonName != "device-1" {
				t.Fatalf("server sees peer %v", pc)
			}
			if pc := c.PeerCertificates(); len(pc) == 0 || pc[0].Subject.CommonName != "localhost" {
				t.Fatalf("client sees peer %v", pc)
			}
		})
	}
}
