package datadir

import (
	"crypto/x509"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestOpenCreatesThenReuses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "data")
	d1, err := Open(Options{Dir: dir, ServerNames: []string{"ca.example", "192.0.2.7"}})
	if err != nil {
		t.Fatal(err)
	}
	p := d1.Paths
	wantCreated := []string{p.RootKey, p.Root, p.IssuingKey, p.IssuingCA, p.ServerKey, p.Server,
		p.CMPSignerKey, p.CMPSigner, p.ManufacturerKey, p.ManufacturerCA, p.DeviceKey, p.Device, p.CMPSecret}
	if !slices.Equal(d1.Created, wantCreated) {
		t.Errorf("Created = %v\nwant %v", d1.Created, wantCreated)
	}
	// The documented interface.
	for _, f := range []string{"ca.pem", "demo/manufacturer-ca.pem", "demo/device.pem", "demo/device.key", "issuing-ca.pem", "server.pem", "cmp-signer.pem", "demo/cmp-secret"} {
		if _, err := os.Stat(filepath.Join(dir, f)); err != nil {
			t.Error(err)
		}
	}
	for _, f := range []string{p.RootKey, p.IssuingKey, p.ServerKey, p.CMPSignerKey, p.ManufacturerKey, p.DeviceKey, p.CMPSecret} {
		st, err := os.Stat(f)
		if err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, %v; want 0600", f, st.Mode().Perm(), err)
		}
	}
	if st, _ := os.Stat(p.Private); st.Mode().Perm() != 0o700 {
		t.Errorf("private dir mode %v", st.Mode().Perm())
	}

	d2, err := Open(Options{Dir: dir, ServerNames: []string{"ca.example", "192.0.2.7"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(d2.Created) != 0 {
		t.Errorf("second Open created %v", d2.Created)
	}
	for _, pair := range [][2]*x509.Certificate{{d1.Root, d2.Root}, {d1.IssuingCA, d2.IssuingCA},
		{d1.Server, d2.Server}, {d1.Device, d2.Device}, {d1.CMPSigner, d2.CMPSigner}, {d1.ManufacturerCA, d2.ManufacturerCA}} {
		if !pair[0].Equal(pair[1]) {
			t.Errorf("%s changed on the second start", pair[0].Subject)
		}
	}
	if string(d1.CMPSecret) != string(d2.CMPSecret) || len(d1.CMPSecret) != 24 {
		t.Errorf("CMP secret %q / %q", d1.CMPSecret, d2.CMPSecret)
	}

	// A new server name re-issues only the server certificate (same key).
	d3, err := Open(Options{Dir: dir, ServerNames: []string{"other.example"}})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(d3.Created, []string{p.Server}) {
		t.Errorf("Created = %v, want only the server certificate", d3.Created)
	}
	if !slices.Contains(d3.Server.DNSNames, "other.example") || !d3.Root.Equal(d1.Root) {
		t.Error("server certificate not re-issued for the new name")
	}
}

func TestChains(t *testing.T) {
	d, err := Open(Options{Dir: t.TempDir(), ServerNames: []string{"ca.example", "192.0.2.7"}})
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(d.Root)
	inter := x509.NewCertPool()
	inter.AddCert(d.IssuingCA)
	host, _ := os.Hostname()
	for _, name := range []string{"localhost", "127.0.0.1", "::1", "ca.example", "192.0.2.7", host} {
		if _, err := d.Server.Verify(x509.VerifyOptions{DNSName: name, Roots: roots, Intermediates: inter}); err != nil {
			t.Errorf("server certificate for %q: %v", name, err)
		}
	}
	if _, err := d.CMPSigner.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter,
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("CMP signer: %v", err)
	}
	mfr := x509.NewCertPool()
	mfr.AddCert(d.ManufacturerCA)
	if _, err := d.Device.Verify(x509.VerifyOptions{Roots: mfr, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("device: %v", err)
	}
	if d.Device.Subject.SerialNumber != DeviceSerialNumber || d.Device.Subject.CommonName != "demo-device-0001" {
		t.Errorf("device subject %s", d.Device.Subject)
	}
	if !d.Device.NotAfter.Equal(time.Date(9999, 12, 31, 23, 59, 59, 0, time.UTC)) {
		t.Errorf("device notAfter %v", d.Device.NotAfter)
	}
	if !d.IssuingCA.IsCA || !d.IssuingCA.MaxPathLenZero {
		t.Error("issuing CA constraints")
	}
	tc := d.ServerCertificate()
	if len(tc.Certificate) != 2 || tc.PrivateKey == nil {
		t.Error("ServerCertificate")
	}
	if !slices.ContainsFunc(d.Server.IPAddresses, net.ParseIP("::1").Equal) {
		t.Error("::1 missing")
	}
}

func TestInconsistentDirectoryRefused(t *testing.T) {
	dir := t.TempDir()
	d, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	// A missing root key is an offline root: it must not silently make a new root; the
	// directory runs on with the same root and issuing CA, without the root key.
	if err := os.Remove(d.Paths.RootKey); err != nil {
		t.Fatal(err)
	}
	again, err := Open(Options{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Root.Equal(d.Root) || !again.IssuingCA.Equal(d.IssuingCA) || again.RootKey != nil || fileExists(d.Paths.RootKey) {
		t.Fatal("a missing root key changed the root or the issuing CA")
	}
	// Without the root key, a lost issuing CA certificate cannot be re-made: refused.
	if err := os.Remove(d.Paths.IssuingCA); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(Options{Dir: dir}); err == nil || !strings.Contains(err.Error(), "off line") {
		t.Fatalf("Open with the root off line and no issuing CA: %v", err)
	}
	// A replaced root no longer signs the issuing CA: refused, not re-issued.
	dir2 := t.TempDir()
	d2, _ := Open(Options{Dir: dir2})
	os.Remove(d2.Paths.Root)
	os.Remove(d2.Paths.RootKey)
	if _, err := Open(Options{Dir: dir2}); err == nil {
		t.Fatal("Open succeeded with an issuing CA that the new root did not sign")
	}
}
