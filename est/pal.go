package est

import (
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"time"
)

// The Package Availability List (RFC 8295 §2): what /pal answers, an XML document in the
// namespace urn:ietf:params:xml:ns:pal whose entries name a package type (a four-digit number
// of the IANA "PAL Package Types" registry, §2.1.1), optionally the date the client last
// acknowledged the package, its size and information identifying it, and the URI to GET or
// POST it at.

// PALNamespace is the XML namespace of the PAL (RFC 8295 §2.1, IANA XML registry).
const PALNamespace = "urn:ietf:params:xml:ns:pal"

// MediaPAL is the Content-Type of the XML PAL (RFC 8295 §2.2).
const MediaPAL = "application/xml"

// PALType is a PAL package type (RFC 8295 §2.1.1, IANA "PAL Package Types").
type PALType string

// The package types coapca lists. Numbers and descriptions checked against RFC 8295 §2.1.1
// Table 1 and the IANA "PAL Package Types" registry (0000 Reserved ... 0037 Sequence Number
// Adjust Confirm or Error; 0020-0023 are the asymmetric key packages, 0024-0037 these).
const (
	PALCACert              PALType = "0002" // X.509 CA certificate
	PALEECert              PALType = "0003" // X.509 EE certificate
	PALCRL                 PALType = "0005" // X.509 CRL
	PALSymmetricKeyPackage PALType = "0024" // Symmetric Key Package
	PALSymmetricKeyReturn  PALType = "0025" // Symmetric Key Package Receipt or Error
	PALFirmwarePackage     PALType = "0026" // Firmware Package
	PALFirmwareReturn      PALType = "0027" // Firmware Package Receipt or Error
	// 0028..0037: the TAMP messages and their responses (PALTypesOfTAMP).
)

// PALTypesOfTAMP returns the PAL package types of a TAMP request kind and of its response,
// confirm or error (RFC 8295 §2.1.1: 0028 TAMP Status Query, 0029 its Response or Error, 0030
// Trust Anchor Update, 0031 its Confirm or Error, 0032/0033 Apex Trust Anchor Update, 0034/0035
// Community Update, 0036/0037 Sequence Number Adjust).
func PALTypesOfTAMP(k TAMPKind) (pkg, ret PALType, ok bool) {
	n := map[TAMPKind]int{TAMPStatusQuery: 28, TAMPUpdate: 30, TAMPApexUpdate: 32, TAMPCommunityUpdate: 34, TAMPSeqNumAdjust: 36}[k]
	if n == 0 {
		return "", "", false
	}
	return PALType(fmt.Sprintf("%04d", n)), PALType(fmt.Sprintf("%04d", n+1)), true
}

// Bounds of a PAL coapca writes and reads. The URI, DN and SKI bounds are the maxLength of
// ThisURI, DistinguishedName and SubjectKeyIdentifier in the RFC 8295 §2.1.2 schema.
const (
	palMaxEntries  = 1000
	palMaxURI      = 1024
	palMaxInfo     = 1024
	palMaxDocument = 1 << 20
	palMaxSize     = int64(1) << 40
	// palDateLayout is the PAL date: YYYY-MM-DDTHH:MM:SSZ (RFC 8295 §2.1).
	palDateLayout = "2006-01-02T15:04:05Z"
)

// PALEntry is one package of the PAL (RFC 8295 §2.1).
type PALEntry struct {
	Type PALType
	// Date is when the client last acknowledged the package (zero: never, or not applicable).
	Date time.Time
	// Size is the package's size in bytes; 0 when the client is to begin a transaction or
	// return a receipt or error (RFC 8295 §2.1), and where coapca does not know it in advance.
	Size int64
	// Info is exactly one of URI, DN, SKI (hex) or IASN (RFC 8295 §2.1: "[<info> | 'info']
	// MUST include exactly one"). URI is where the client retrieves (GET) or returns (POST)
	// the package; DN, SKI or IASN name the certificate that is the subject of the entry.
	URI  string
	DN   string
	SKI  string
	IASN *PALIssuerSerial
}

// PALIssuerSerial names a certificate by issuer and serial number (PAL info iasn).
type PALIssuerSerial struct {
	Issuer string `xml:"issuer"`
	Serial string `xml:"serial"`
}

type palXML struct {
	XMLName  xml.Name     `xml:"urn:ietf:params:xml:ns:pal pal"`
	Messages []palMessage `xml:"message"`
}

// palMessage is the PALEntry complexType of RFC 8295 §2.1.2: the sequence type, date
// (optional), size and info, the latter two mandatory.
type palMessage struct {
	Type string   `xml:"type"`
	Date string   `xml:"date,omitempty"`
	Size *int64   `xml:"size"`
	Info *palInfo `xml:"info"`
}

// palInfo is the PackageInfoType choice of RFC 8295 §2.1.2.
type palInfo struct {
	DN   string           `xml:"dn,omitempty"`
	SKI  string           `xml:"ski,omitempty"`
	IASN *PALIssuerSerial `xml:"iasn,omitempty"`
	URI  string           `xml:"uri,omitempty"`
}

func (t PALType) valid() bool {
	// Four digits; 0000 is Reserved (RFC 8295 §2.1.1).
	if len(t) != 4 || t == "0000" {
		return false
	}
	for _, c := range []byte(t) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// MarshalPAL returns the XML PAL of entries (RFC 8295 §2.1).
func MarshalPAL(entries []PALEntry) ([]byte, error) {
	doc := palXML{Messages: make([]palMessage, 0, len(entries))}
	for i, e := range entries {
		if err := e.check(); err != nil {
			return nil, fmt.Errorf("pal entry %d: %w", i, err)
		}
		size := e.Size
		m := palMessage{Type: string(e.Type), Size: &size,
			Info: &palInfo{URI: e.URI, DN: e.DN, SKI: e.SKI, IASN: e.IASN}}
		if !e.Date.IsZero() {
			m.Date = e.Date.UTC().Format(palDateLayout)
		}
		doc.Messages = append(doc.Messages, m)
	}
	var buf bytes.Buffer
	buf.WriteString(xml.Header)
	enc := xml.NewEncoder(&buf)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return nil, fmt.Errorf("pal: %w", err)
	}
	buf.WriteByte('\n')
	return buf.Bytes(), nil
}

func (e PALEntry) check() error {
	n := 0
	for _, set := range []bool{e.URI != "", e.DN != "", e.SKI != "", e.IASN != nil} {
		if set {
			n++
		}
	}
	switch {
	case !e.Type.valid():
		return fmt.Errorf("package type %q is not a four-digit registered number", e.Type)
	case len(e.URI) > palMaxURI:
		return fmt.Errorf("URI of %d bytes (at most %d)", len(e.URI), palMaxURI)
	case e.Size < 0 || e.Size > palMaxSize:
		return fmt.Errorf("size %d out of range", e.Size)
	case n != 1:
		// RFC 8295 §2.1: info MUST include exactly one of dn, ski, iasn or uri.
		return fmt.Errorf("info names the package %d ways (exactly one of uri, dn, ski, iasn)", n)
	case len(e.DN)+len(e.SKI) > palMaxInfo || (e.IASN != nil && len(e.IASN.Issuer)+len(e.IASN.Serial) > palMaxInfo):
		return errors.New("info too long")
	}
	return nil
}

// ParsePAL reads an XML PAL (RFC 8295 §2.1), bounded: at most 1 MiB and 1000 entries.
func ParsePAL(r io.Reader) ([]PALEntry, error) {
	data, err := io.ReadAll(io.LimitReader(r, palMaxDocument+1))
	if err != nil {
		return nil, fmt.Errorf("pal: %w", err)
	}
	if len(data) > palMaxDocument {
		return nil, fmt.Errorf("pal: larger than %d bytes", palMaxDocument)
	}
	var doc palXML
	dec := xml.NewDecoder(bytes.NewReader(data))
	dec.Strict = true
	if err := dec.Decode(&doc); err != nil {
		return nil, fmt.Errorf("pal: %w", err)
	}
	if len(doc.Messages) > palMaxEntries {
		return nil, fmt.Errorf("pal: more than %d entries", palMaxEntries)
	}
	out := make([]PALEntry, 0, len(doc.Messages))
	for i, m := range doc.Messages {
		// RFC 8295 §2.1: size and info MUST be present.
		if m.Size == nil || m.Info == nil {
			return nil, fmt.Errorf("pal entry %d: size or info missing", i)
		}
		e := PALEntry{Type: PALType(m.Type), Size: *m.Size,
			URI: m.Info.URI, DN: m.Info.DN, SKI: m.Info.SKI, IASN: m.Info.IASN}
		if m.Date != "" {
			if e.Date, err = time.Parse(palDateLayout, m.Date); err != nil {
				return nil, fmt.Errorf("pal entry %d: date %q is not YYYY-MM-DDTHH:MM:SSZ", i, m.Date)
			}
		}
		if err := e.check(); err != nil {
			return nil, fmt.Errorf("pal entry %d: %w", i, err)
		}
		out = append(out, e)
	}
	return out, nil
}
