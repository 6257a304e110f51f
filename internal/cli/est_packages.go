package cli

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"coapca/client"
	"coapca/est"
	"coapca/est/cms"
	"coapca/internal/pemfile"
	"coapca/kms"
)

// printPAL prints the client's Package Availability List (RFC 8295 §2): one line per entry,
// to out (stdout when "").
func printPAL(ctx context.Context, hc *client.HTTPS, out string, stdout io.Writer) error {
	entries, err := hc.PAL(ctx)
	if err != nil {
		return err
	}
	w := stdout
	if out != "" {
		fh, err := os.OpenFile(out, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			return err
		}
		defer fh.Close()
		w = fh
	}
	tw := tabwriter.NewWriter(w, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tACKNOWLEDGED\tURI")
	for _, e := range entries {
		ack := "-"
		if !e.Date.IsZero() {
			ack = e.Date.Format(time.RFC3339)
		}
		fmt.Fprintf(tw, "%s %s\t%s\t%s\n", e.Type, palTypeName(e.Type), ack, e.URI)
	}
	return tw.Flush()
}

// palTypeName names the package types coapca lists (RFC 8295 §2.1.1).
func palTypeName(t est.PALType) string {
	switch t {
	case est.PALCACert:
		return "CA certificates"
	case est.PALEECert:
		return "EE certificates"
	case est.PALCRL:
		return "CRL"
	case est.PALSymmetricKeyPackage:
		return "symmetric key package"
	case est.PALSymmetricKeyReturn:
		return "symmetric key package receipt or error"
	case est.PALFirmwarePackage:
		return "firmware package"
	case est.PALFirmwareReturn:
		return "firmware package receipt or error"
	}
	for k := est.TAMPStatusQuery; k <= est.TAMPError; k++ {
		if pkg, ret, ok := est.PALTypesOfTAMP(k); ok && pkg == t {
			return "TAMP " + k.String()
		} else if ok && ret == t {
			return "TAMP " + k.Reply().String() + " or error"
		}
	}
	return ""
}

// fetchSymmetricKeys fetches, checks and opens the next symmetric key package (RFC 8295 §5.1),
// writes its keys to --out (0600) and returns a receipt signed with --cert/--key (RFC 8295
// §5.2.1: "The key package receipt is digitally signed").
func fetchSymmetricKeys(ctx context.Context, hc *client.HTTPS, f *estFlags, stdout, stderr io.Writer) error {
	if f.cert == "" || f.key == "" {
		return usagef("symmetrickeys needs --cert and --key: the package is encrypted for that certificate")
	}
	chain, err := pemfile.ReadCerts(f.cert)
	if err != nil {
		return err
	}
	errCode, err := returnErrorCode(f, est.ErrorCodeByName, "RFC 7191 error code (a name such as decryptFailure, or 0-127)")
	if err != nil {
		return err
	}
	key, err := kms.LoadKeyFile(f.key)
	if err != nil {
		return err
	}
	got, err := hc.SymmetricKeys(ctx, cms.Decrypter{Key: key, Cert: chain[0]})
	if err != nil {
		return err
	}
	if f.returnError != "" {
		// RFC 8295 §5.2: the client returns a key package error (RFC 7191) for the package it
		// refuses, naming it by the identifier it carried; it keeps none of its keys.
		if got.PkgID == nil {
			return errors.New("the package carries no identifier: no error can name it")
		}
		der, err := est.SignKeyPackageErrorFor(rand.Reader, errCode, got.PkgID, key, chain[0], chain[1:], time.Now())
		if err != nil {
			return err
		}
		if err := hc.ReturnSymmetricKeys(ctx, est.MediaKeyPackageError, der); err != nil {
			return fmt.Errorf("the server refused the key package error: %w", err)
		}
		fmt.Fprintf(stderr, "refused package %q (%d key(s) not written); the server took the error %s (204)\n", got.PkgID, len(got.Keys), f.returnError)
		return nil
	}
	var b strings.Builder
	for _, k := range got.Keys {
		alg := k.Algorithm
		if alg == "" {
			alg = "-"
		}
		fmt.Fprintf(&b, "%s %s %s\n", k.ID, alg, hex.EncodeToString(k.Key))
	}
	// The keys go to a new file of mode 0600, never into an existing one at its old (perhaps
	// world-readable) mode.
	if f.out == "" {
		io.WriteString(stdout, b.String())
	} else if err := kms.WriteFileAtomic(f.out, []byte(b.String()), 0o600); err != nil {
		return err
	}
	fmt.Fprintf(stderr, "received %d symmetric key(s), package %q\n", len(got.Keys), got.PkgID)
	if f.noReceipt {
		return nil
	}
	if got.PkgID == nil {
		fmt.Fprintln(stderr, "the package carries no identifier: no receipt returned")
		return nil
	}
	receipt, err := est.SignKeyPackageReceiptFor(rand.Reader, got.PkgID, key, chain[0], chain[1:], time.Now())
	if err != nil {
		return err
	}
	if err := hc.ReturnSymmetricKeys(ctx, est.MediaKeyPackageReceipt, receipt); err != nil {
		return fmt.Errorf("keys written, but the receipt was refused: %w", err)
	}
	fmt.Fprintln(stderr, "the server took the receipt (204)")
	return nil
}

// fetchFirmware fetches and verifies the next firmware package (RFC 8295 §6.1), writes its image
// to --out and returns a load receipt (RFC 4108 §3) signed with --cert/--key: the hardware
// type is the package's first target, the hardware serial number the client certificate's.
func fetchFirmware(ctx context.Context, hc *client.HTTPS, f *estFlags, stdout, stderr io.Writer) error {
	if f.cert == "" || f.key == "" {
		return usagef("firmware needs --cert and --key: they authenticate the client and sign its receipt")
	}
	chain, err := pemfile.ReadCerts(f.cert)
	if err != nil {
		return err
	}
	errCode, err := returnErrorCode(f, est.FirmwareErrorCodeByName, "RFC 4108 §4 error code (a name such as badFirmware, or 0-127)")
	if err != nil {
		return err
	}
	key, err := kms.LoadKeyFile(f.key)
	if err != nil {
		return err
	}
	fw, err := hc.Firmware(ctx)
	if err != nil {
		return err
	}
	if fw.Encrypted() && f.returnError == "" {
		if err := decryptFirmware(fw, f.firmwareKeys); err != nil {
			return err
		}
	}
	if f.returnError != "" {
		// RFC 8295 §6.2: the client returns a firmware package load error (RFC 4108 §4) for the
		// package it refuses, signed like a receipt, naming the package; it writes no image.
		if len(fw.HWTypes) == 0 {
			return errors.New("the package names no target hardware: no load error can be made")
		}
		body, err := est.MarshalFirmwareError(fw.HWTypes[0], chain[0].SerialNumber.Bytes(), errCode, &fw.Name)
		if err != nil {
			return err
		}
		der, err := est.SignFirmwareReturn(rand.Reader, false, body, key, chain[0], chain[1:], time.Now())
		if err != nil {
			return err
		}
		if err := hc.ReturnFirmware(ctx, est.MediaFirmwareError, der); err != nil {
			return fmt.Errorf("the server refused the load error: %w", err)
		}
		fmt.Fprintf(stderr, "refused firmware %s (image not written); the server took the error %s (204)\n", fw.Name, f.returnError)
		return nil
	}
	if f.out == "" {
		_, err = stdout.Write(fw.Image)
	} else {
		err = os.WriteFile(f.out, fw.Image, 0o644)
	}
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "received firmware %s (%d bytes)\n", fw.Name, len(fw.Image))
	if f.noReceipt {
		return nil
	}
	if len(fw.HWTypes) == 0 {
		fmt.Fprintln(stderr, "the package names no target hardware: no receipt returned")
		return nil
	}
	body, err := est.MarshalFirmwareReceipt(fw.HWTypes[0], chain[0].SerialNumber.Bytes(), fw.Name)
	if err != nil {
		return err
	}
	receipt, err := est.SignFirmwareReturn(rand.Reader, true, body, key, chain[0], chain[1:], time.Now())
	if err != nil {
		return err
	}
	if err := hc.ReturnFirmware(ctx, est.MediaFirmwareReceipt, receipt); err != nil {
		return fmt.Errorf("firmware written, but the receipt was refused: %w", err)
	}
	fmt.Fprintln(stderr, "the server took the receipt (204)")
	return nil
}

// fetchTAMP fetches and verifies the next TAMP message (RFC 8295 §7.1), prints it, writes the
// trust anchors it adds to --out and returns the response signed with --cert/--key (RFC 8295
// §7.2): a terse status response with the key identifiers of the --trust anchors, a terse
// confirm with success for each change, or with --error a TAMP error.
func fetchTAMP(ctx context.Context, hc *client.HTTPS, f *estFlags, stdout, stderr io.Writer) error {
	if f.cert == "" || f.key == "" {
		return usagef("tamp needs --cert and --key: they authenticate the client and sign its response")
	}
	chain, err := pemfile.ReadCerts(f.cert)
	if err != nil {
		return err
	}
	key, err := kms.LoadKeyFile(f.key)
	if err != nil {
		return err
	}
	m, _, err := hc.TAMP(ctx)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "TAMP %s, sequence number %d, signed by %s\n", m.Kind, m.SeqNum, m.Signed.Signer.Subject)
	var adds []*x509.Certificate
	for _, c := range m.Add {
		fmt.Fprintf(stdout, "  add trust anchor %s\n", c.Subject)
		adds = append(adds, c)
	}
	for range m.Remove {
		fmt.Fprintln(stdout, "  remove a trust anchor (by its public key)")
	}
	if m.Apex != nil {
		fmt.Fprintf(stdout, "  apex trust anchor %s (clear trust anchors: %v, clear communities: %v)\n", m.Apex.Subject, m.ClearTAs, m.ClearCommunities)
		adds = append(adds, m.Apex)
	}
	for _, o := range m.CommunityAdd {
		fmt.Fprintf(stdout, "  add community %s\n", o)
	}
	for _, o := range m.CommunityRemove {
		fmt.Fprintf(stdout, "  remove community %s\n", o)
	}
	if f.out != "" && len(adds) > 0 {
		if err := writeCerts(f.out, stdout, adds...); err != nil {
			return err
		}
	}
	if f.noReceipt {
		return nil
	}
	resp := &est.TAMPMessage{Kind: m.Kind.Reply(), SeqNum: m.SeqNum, Target: m.Target, HasRef: true}
	switch {
	case f.returnError != "":
		code, ok := est.TAMPStatusByName(f.returnError)
		if !ok {
			return usagef("--error %q: not an RFC 5934 StatusCode", f.returnError)
		}
		resp.Kind, resp.MsgType, resp.Status = est.TAMPError, m.Kind.OID(), []int{code}
	case m.Kind == est.TAMPStatusQuery:
		for _, ta := range f.anchors {
			resp.KeyIDs = append(resp.KeyIDs, est.SubjectKeyID(ta))
		}
	case m.Kind == est.TAMPUpdate:
		resp.Status = make([]int, len(m.Add)+len(m.Remove)) // success (0) for each
	default:
		resp.Status = []int{0}
	}
	der, err := est.SignTAMP(rand.Reader, resp, key, chain[0:1], time.Now())
	if err != nil {
		return err
	}
	if err := hc.ReturnTAMP(ctx, resp.Kind, der); err != nil {
		return fmt.Errorf("the server refused the TAMP %s: %w", resp.Kind, err)
	}
	fmt.Fprintf(stderr, "the server took the TAMP %s (204)\n", resp.Kind)
	return nil
}

// returnErrorCode checks --error (with byName, the code registry of the return) before anything
// is fetched, so that a bad code changes nothing on the server.
func returnErrorCode(f *estFlags, byName func(string) (int, bool), what string) (int, error) {
	if f.returnError == "" {
		return 0, nil
	}
	if f.noReceipt {
		return 0, usagef("--error and --no-receipt exclude each other")
	}
	code, ok := byName(f.returnError)
	if !ok {
		return 0, usagef("--error %q: not an %s", f.returnError, what)
	}
	return code, nil
}

// decryptFirmware decrypts an encrypted firmware package (RFC 4108 §2.1.3) with the key its
// decrypt-key-identifier names, read from keysFile ("ID ALGORITHM HEX" lines, as `est
// symmetrickeys` writes them).
func decryptFirmware(fw *est.Firmware, keysFile string) error {
	id := string(fw.DecryptKeyID)
	if keysFile == "" {
		return usagef("the firmware package is encrypted with key %q: fetch it with `est symmetrickeys --out FILE` and pass --firmware-keys FILE", id)
	}
	b, err := os.ReadFile(keysFile)
	if err != nil {
		return err
	}
	for _, line := range strings.Split(string(b), "\n") {
		fields := strings.Fields(line)
		if len(fields) != 3 || fields[0] != id {
			continue
		}
		key, err := hex.DecodeString(fields[2])
		if err != nil {
			return fmt.Errorf("%s: key %q is not hex", keysFile, id)
		}
		if err := fw.Decrypt(key); err != nil {
			return fmt.Errorf("firmware package: key %q from %s: %w", id, keysFile, err)
		}
		return nil
	}
	return fmt.Errorf("the firmware package is encrypted with key %q, which %s does not hold", id, keysFile)
}
