package cmp

import (
	"errors"
	"fmt"
	"math/bits"
	"strings"

	"coapca/errs"

	"golang.org/x/crypto/cryptobyte"
	cbasn1 "golang.org/x/crypto/cryptobyte/asn1"
)

// PKIStatus values (RFC 9810 §5.2.3).
type PKIStatus int

const (
	StatusAccepted               PKIStatus = 0
	StatusGrantedWithMods        PKIStatus = 1
	StatusRejection              PKIStatus = 2
	StatusWaiting                PKIStatus = 3
	StatusRevocationWarning      PKIStatus = 4
	StatusRevocationNotification PKIStatus = 5
	StatusKeyUpdateWarning       PKIStatus = 6
)

var statusNames = [...]string{"accepted", "grantedWithMods", "rejection", "waiting",
	"revocationWarning", "revocationNotification", "keyUpdateWarning"}

func (s PKIStatus) String() string {
	if s >= 0 && int(s) < len(statusNames) {
		return statusNames[s]
	}
	return fmt.Sprintf("status(%d)", int(s))
}

// FailureInfo is a PKIFailureInfo bit set (RFC 9810 §5.2.3): bit n of the BIT STRING is
// 1<<n here.
type FailureInfo uint32

// PKIFailureInfo bits.
const (
	FailBadAlg              FailureInfo = 1 << 0
	FailBadMessageCheck     FailureInfo = 1 << 1
	FailBadRequest          FailureInfo = 1 << 2
	FailBadTime             FailureInfo = 1 << 3
	FailBadCertID           FailureInfo = 1 << 4
	FailBadDataFormat       FailureInfo = 1 << 5
	FailWrongAuthority      FailureInfo = 1 << 6
	FailIncorrectData       FailureInfo = 1 << 7
	FailMissingTimeStamp    FailureInfo = 1 << 8
	FailBadPOP              FailureInfo = 1 << 9
	FailCertRevoked         FailureInfo = 1 << 10
	FailCertConfirmed       FailureInfo = 1 << 11
	FailWrongIntegrity      FailureInfo = 1 << 12
	FailBadRecipientNonce   FailureInfo = 1 << 13
	FailTimeNotAvailable    FailureInfo = 1 << 14
	FailUnacceptedPolicy    FailureInfo = 1 << 15
	FailUnacceptedExtension FailureInfo = 1 << 16
	FailAddInfoNotAvailable FailureInfo = 1 << 17
	FailBadSenderNonce      FailureInfo = 1 << 18
	FailBadCertTemplate     FailureInfo = 1 << 19
	FailSignerNotTrusted    FailureInfo = 1 << 20
	FailTransactionIDInUse  FailureInfo = 1 << 21
	FailUnsupportedVersion  FailureInfo = 1 << 22
	FailNotAuthorized       FailureInfo = 1 << 23
	FailSystemUnavail       FailureInfo = 1 << 24
	FailSystemFailure       FailureInfo = 1 << 25
	FailDuplicateCertReq    FailureInfo = 1 << 26
)

var failNames = [...]string{"badAlg", "badMessageCheck", "badRequest", "badTime", "badCertId",
	"badDataFormat", "wrongAuthority", "incorrectData", "missingTimeStamp", "badPOP", "certRevoked",
	"certConfirmed", "wrongIntegrity", "badRecipientNonce", "timeNotAvailable", "unacceptedPolicy",
	"unacceptedExtension", "addInfoNotAvailable", "badSenderNonce", "badCertTemplate",
	"signerNotTrusted", "transactionIdInUse", "unsupportedVersion", "notAuthorized",
	"systemUnavail", "systemFailure", "duplicateCertReq"}

func (f FailureInfo) String() string {
	var names []string
	for i := 0; i < 32; i++ {
		if f&(1<<i) == 0 {
			continue
		}
		if i < len(failNames) {
			names = append(names, failNames[i])
		} else {
			names = append(names, fmt.Sprintf("bit%d", i))
		}
	}
	return strings.Join(names, ",")
}

// StatusInfo is a PKIStatusInfo (RFC 9810 §5.2.3). FailInfo 0 means absent.
type StatusInfo struct {
	Status       PKIStatus
	StatusString []string
	FailInfo     FailureInfo
}

func (s StatusInfo) String() string {
	out := s.Status.String()
	if s.FailInfo != 0 {
		out += " (" + s.FailInfo.String() + ")"
	}
	if len(s.StatusString) > 0 {
		out += ": " + strings.Join(s.StatusString, "; ")
	}
	return out
}

func (s StatusInfo) marshal(b *cryptobyte.Builder) {
	b.AddASN1(cbasn1.SEQUENCE, func(b *cryptobyte.Builder) {
		b.AddASN1Int64(int64(s.Status))
		if len(s.StatusString) > 0 {
			addFreeText(b, s.StatusString)
		}
		if s.FailInfo != 0 {
			addNamedBits(b, uint32(s.FailInfo))
		}
	})
}

// addNamedBits writes a DER named-bit-list BIT STRING: bit n is the n-th bit from the most
// significant bit of the first octet, trailing zero bits removed (X.690 §11.2.2).
func addNamedBits(b *cryptobyte.Builder, v uint32) {
	n := 32 - bits.LeadingZeros32(v) // number of significant bits
	nbytes := (n + 7) / 8
	r := bits.Reverse32(v)
	out := make([]byte, 1+nbytes)
	out[0] = byte(nbytes*8 - n)
	for i := 0; i < nbytes; i++ {
		out[1+i] = byte(r >> (24 - 8*i))
	}
	b.AddASN1(cbasn1.BIT_STRING, func(b *cryptobyte.Builder) { b.AddBytes(out) })
}

func parseStatusInfo(s *cryptobyte.String) (StatusInfo, error) {
	var st StatusInfo
	var seq cryptobyte.String
	var v int64
	if !s.ReadASN1(&seq, cbasn1.SEQUENCE) || !seq.ReadASN1Integer(&v) || v < 0 || v > 100 {
		return st, errors.New("bad PKIStatusInfo")
	}
	st.Status = PKIStatus(v)
	if seq.PeekASN1Tag(cbasn1.SEQUENCE) {
		ft, err := parseFreeText(&seq)
		if err != nil {
			return st, fmt.Errorf("statusString: %w", err)
		}
		st.StatusString = ft
	}
	if seq.PeekASN1Tag(cbasn1.BIT_STRING) {
		var raw []byte
		if !seq.ReadASN1Bytes(&raw, cbasn1.BIT_STRING) || len(raw) < 1 || raw[0] > 7 || (len(raw) == 1 && raw[0] != 0) {
			return st, errors.New("bad failInfo")
		}
		var r uint32
		for i, c := range raw[1:] {
			if i >= 4 {
				if c != 0 {
					return st, errors.New("failInfo bit out of range")
				}
				continue
			}
			r |= uint32(c) << (24 - 8*i)
		}
		st.FailInfo = FailureInfo(bits.Reverse32(r))
	}
	if !seq.Empty() {
		return st, errors.New("bad PKIStatusInfo tail")
	}
	return st, nil
}

// FailureError is an error that names its PKIFailureInfo explicitly (for cases finer than an
// errs.Kind, e.g. badPOP, badMessageCheck, certRevoked). It unwraps to Err, so errs.KindOf
// still works. The table from errs.Kind to PKIFailureInfo for errors without explicit bits is
// server policy and lives with the server (cmp/cmpserver), not in this codec.
type FailureError struct {
	Info  FailureInfo
	Err   error
	cause error // the untyped error failure() typed, kept for errors.Is
}

// Error is Err's text, followed by the full cause when the client-visible text shortened it
// (for logs; peers get errs.Message).
func (e *FailureError) Error() string {
	if e.cause != nil {
		if c := e.cause.Error(); !strings.Contains(e.Err.Error(), c) {
			return e.Err.Error() + " (" + c + ")"
		}
	}
	return e.Err.Error()
}

// Unwrap returns Err (and the original cause of errors typed by this package).
func (e *FailureError) Unwrap() []error {
	if e.cause != nil {
		return []error{e.Err, e.cause}
	}
	return []error{e.Err}
}

// WithFailInfo annotates err with explicit failure bits.
func WithFailInfo(err error, info FailureInfo) error {
	if err == nil {
		return nil
	}
	return &FailureError{Info: info, Err: err}
}

// failure returns err typed for the front doors: errs Kind k with a short one-line message
// derived from err (shortError), explicit PKIFailureInfo bits, and err itself as the cause
// (for errors.Is and the server's log).
func failure(k errs.Kind, info FailureInfo, err error) error {
	return &FailureError{Info: info, Err: errs.New(k, "%s", shortError(err)), cause: err}
}

// maxDiagnostic bounds the client-visible text of a codec error.
const maxDiagnostic = 160

// shortError renders a codec error for the peer: one line, at most maxDiagnostic bytes, and
// without the Go struct dumps of encoding/asn1 ("asn1: structure error: tags don't match (16
// vs {class:0 tag:2 …}) {optional:false …}"), which are replaced by "ASN.1 structure error".
func shortError(err error) string {
	s := err.Error()
	if i := strings.Index(s, "asn1: "); i >= 0 {
		s = strings.TrimRight(s[:i], ": ")
		if s != "" {
			s += ": "
		}
		s += "ASN.1 structure error"
	}
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		s = s[:i]
	}
	if len(s) > maxDiagnostic {
		s = strings.ToValidUTF8(s[:maxDiagnostic], "") + "…"
	}
	return s
}

// FailInfoOf returns the explicit failure bits of err (WithFailInfo, or set by this package),
// or 0 when err carries none.
func FailInfoOf(err error) FailureInfo {
	var fe *FailureError
	if errors.As(err, &fe) {
		return fe.Info
	}
	return 0
}

// StatusError is returned by client-side helpers when a response reports rejection.
type StatusError struct {
	Status StatusInfo
}

func (e *StatusError) Error() string { return "cmp: server answered " + e.Status.String() }
