package cli

import (
	"crypto"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"

	"coapca/client"
	"coapca/kms"
)

// An enrollment in progress keeps its state in a file next to --key-out, KEYOUT.pending (mode
// 0600): the new private key and, unless the CSR is bound to one session (--pop), the CSR. It
// is written before the CSR is sent, so the key of a certificate the server issues is on disk
// before the certificate can exist; it is removed once the key and the certificate are written.
// A run that is interrupted (the server stays pending past --wait, the network or the client
// dies) leaves it, and the same command run again resumes: it sends the identical CSR (RFC 9148
// §4.7, RFC 7030 §4.2.3: the client resends the same request), so a request that was pending,
// or approved meanwhile, is found again, and the key that the certificate will certify is the
// one saved. A request the server refused for good (4.xx) removes it.

// pendingSuffix is added to --key-out to name the state file.
const pendingSuffix = ".pending"

// statePath is the state file of --key-out, or "" when there can be none: no --key-out, "-"
// (stdout), or a device or FIFO (a file "next to /dev/null" is no place for a key).
func statePath(keyOut string) string {
	if keyOut == "" || keyOut == "-" {
		return ""
	}
	if fi, err := os.Stat(keyOut); err == nil && !fi.Mode().IsRegular() {
		return ""
	}
	return keyOut + pendingSuffix
}

// enrollState is what a state file holds.
type enrollState struct {
	key crypto.Signer
	csr []byte // nil when the CSR is bound to its session and is made again
}

// loadEnrollState reads the state file at path; (nil, nil) when there is none.
func loadEnrollState(path string) (*enrollState, error) {
	if path == "" {
		return nil, nil
	}
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("pending enrollment %s: %w", path, err)
	}
	st := &enrollState{}
	rest := data
	for {
		var b *pem.Block
		b, rest = pem.Decode(rest)
		if b == nil {
			break
		}
		switch b.Type {
		case "PRIVATE KEY":
			if st.key, err = kms.ParsePrivateKeyPEM(pem.EncodeToMemory(b)); err != nil {
				return nil, fmt.Errorf("pending enrollment %s: %w", path, err)
			}
		case "CERTIFICATE REQUEST":
			if _, err := x509.ParseCertificateRequest(b.Bytes); err != nil {
				return nil, fmt.Errorf("pending enrollment %s: %w", path, err)
			}
			st.csr = b.Bytes
		}
	}
	if st.key == nil {
		return nil, fmt.Errorf("pending enrollment %s holds no private key (remove it to start afresh)", path)
	}
	return st, nil
}

// saveEnrollState writes the state file (atomically, mode 0600).
func saveEnrollState(path string, key crypto.Signer, csr []byte) error {
	data, err := kms.MarshalPrivateKeyPEM(key)
	if err != nil {
		return err
	}
	if csr != nil {
		data = append(data, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: csr})...)
	}
	if err := kms.WriteFileAtomic(path, data, 0o600); err != nil {
		return fmt.Errorf("saving the new key before sending the CSR: %w", err)
	}
	return nil
}

// checkResumedSubject refuses to resume a saved CSR for another subject than --subject asks.
func checkResumedSubject(f *clientFlags, path string, csr []byte) error {
	if f.subject == "" || csr == nil {
		return nil
	}
	want, err := client.ParseSubject(f.subject)
	if err != nil {
		return usagef("--subject: %v", err)
	}
	req, err := x509.ParseCertificateRequest(csr)
	if err != nil {
		return fmt.Errorf("pending enrollment %s: %w", path, err)
	}
	if req.Subject.String() != want.String() {
		return fmt.Errorf("pending enrollment %s is for %s, not %s: finish it, or remove the file to start afresh", path, req.Subject, want)
	}
	return nil
}

// refusedForGood tells a definitive refusal (4.xx) from an interruption worth resuming.
func refusedForGood(err error) bool {
	var se *client.StatusError
	if errors.As(err, &se) {
		return se.Code>>5 == 4
	}
	var he *client.HTTPStatusError
	if errors.As(err, &he) {
		return he.Status >= 400 && he.Status < 500
	}
	return false
}

// writeOutput writes data to path: "" or "-" is w (stdout); a regular file is replaced
// atomically; a device or FIFO is written through and a symbolic link followed
// (kms.WriteFileAtomic), never replaced.
func writeOutput(path string, w io.Writer, data []byte, mode os.FileMode) error {
	if path == "" || path == "-" {
		_, err := w.Write(data)
		return err
	}
	return kms.WriteFileAtomic(path, data, mode)
}
