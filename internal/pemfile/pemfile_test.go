package pemfile

import (
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"coapca/internal/testpki"
)

func TestParseCerts(t *testing.T) {
	der := testpki.SelfSigned(t, &x509.Certificate{Subject: pkix.Name{CommonName: "pemfile"}}, testpki.NewKey(t)).Raw
	cert := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	other := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1, 2, 3}})
	broken := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: []byte{0x30, 0x03, 1, 2, 3}})
	tests := []struct {
		name  string
		data  string
		count int
		err   string
	}{
		{"one", string(cert), 1, ""},
		{"two with a key between", string(cert) + string(other) + string(cert), 2, ""},
		{"empty", "", 0, "no PEM certificate"},
		{"only a key", string(other), 0, "no PEM certificate"},
		{"garbage", "-----BEGIN CERTIFICATE-----\nnot base64\n", 0, "no PEM certificate"},
		{"broken DER", string(cert) + string(broken), 0, "certificate 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			certs, err := ParseCerts([]byte(tt.data))
			if tt.err != "" {
				if err == nil || !strings.Contains(err.Error(), tt.err) {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil || len(certs) != tt.count || certs[0].Subject.CommonName != "pemfile" {
				t.Fatalf("got %d certificates, %v", len(certs), err)
			}
		})
	}

	dir := t.TempDir()
	p := filepath.Join(dir, "c.pem")
	if err := os.WriteFile(p, cert, 0o600); err != nil {
		t.Fatal(err)
	}
	if certs, err := ReadCerts(p); err != nil || len(certs) != 1 {
		t.Errorf("ReadCerts = %d, %v", len(certs), err)
	}
	if _, err := ReadCerts(filepath.Join(dir, "missing.pem")); err == nil {
		t.Error("ReadCerts of a missing file succeeded")
	}
	if err := os.WriteFile(p, other, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadCerts(p); err == nil || !strings.Contains(err.Error(), p) {
		t.Errorf("ReadCerts of a file without certificates: %v (want the path in the error)", err)
	}
}
