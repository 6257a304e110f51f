package est

import (
	"crypto/x509"
	"encoding/asn1"
)

// Object identifiers used by the EST wire formats.
var (
	OIDChallengePassword = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 7}  // PKCS#9, RFC 2985 §5.4.1
	OIDExtensionRequest  = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 14} // PKCS#9, RFC 2985 §5.4.2
	OIDSMIMECapabilities = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 15} // RFC 8551 §2.5.2
	// RFC 7030 §4.4.1.1: the client asks for a symmetrically encrypted server-generated key.
	OIDDecryptKeyIdentifier = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 37}
	// RFC 7030 §4.4.1.2: the client asks for an asymmetrically encrypted server-generated key.
	OIDAsymmetricDecryptKeyIdentifier = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 9, 16, 2, 54}
	OIDHardwareModuleName             = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 4}  // RFC 4108 §5
	OIDCmcRA                          = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 3, 28} // id-kp-cmcRA, RFC 6402 §2.10

	oidECPublicKey  = asn1.ObjectIdentifier{1, 2, 840, 10045, 2, 1}
	oidRSAEncrypton = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 1}
	oidEd25519      = asn1.ObjectIdentifier{1, 3, 101, 112}
	oidP256         = asn1.ObjectIdentifier{1, 2, 840, 10045, 3, 1, 7}
	oidP384         = asn1.ObjectIdentifier{1, 3, 132, 0, 34}
	oidP521         = asn1.ObjectIdentifier{1, 3, 132, 0, 35}

	oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidKeyUsage       = asn1.ObjectIdentifier{2, 5, 29, 15}
	oidExtKeyUsage    = asn1.ObjectIdentifier{2, 5, 29, 37}
)

// sigAlgOIDs maps the signature algorithms a CsrAttrs can name to their OIDs.
var sigAlgOIDs = []struct {
	alg x509.SignatureAlgorithm
	oid asn1.ObjectIdentifier
}{
	{x509.ECDSAWithSHA256, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}},
	{x509.ECDSAWithSHA384, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}},
	{x509.ECDSAWithSHA512, asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}},
	{x509.SHA256WithRSA, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}},
	{x509.SHA384WithRSA, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}},
	{x509.SHA512WithRSA, asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}},
	{x509.PureEd25519, oidEd25519},
}

// oidNames gives readable names for OIDs printed by (*CsrAttrs).String.
var oidNames = map[string]string{
	"1.2.840.113549.1.9.7":       "challengePassword",
	"1.2.840.113549.1.9.14":      "extensionRequest",
	"1.2.840.113549.1.9.15":      "smimeCapabilities",
	"1.2.840.113549.1.9.20":      "friendlyName",
	"1.2.840.113549.1.9.16.2.37": "decryptKeyIdentifier",
	"1.2.840.113549.1.9.16.2.54": "asymmetricDecryptKeyIdentifier",
	"1.2.840.10045.2.1":          "ecPublicKey",
	"1.2.840.113549.1.1.1":       "rsaEncryption",
	"1.3.101.112":                "Ed25519",
	"1.2.840.10045.3.1.7":        "secp256r1 (P-256)",
	"1.3.132.0.34":               "secp384r1 (P-384)",
	"1.3.132.0.35":               "secp521r1 (P-521)",
	"1.3.36.3.3.2.8.1.1.7":       "brainpoolP256r1",
	"1.3.36.3.3.2.8.1.1.11":      "brainpoolP384r1",
	"1.3.36.3.3.2.8.1.1.13":      "brainpoolP512r1",
	"1.2.840.10045.4.3.2":        "ecdsa-with-SHA256",
	"1.2.840.10045.4.3.3":        "ecdsa-with-SHA384",
	"1.2.840.10045.4.3.4":        "ecdsa-with-SHA512",
	"1.2.840.113549.1.1.11":      "sha256WithRSAEncryption",
	"1.2.840.113549.1.1.12":      "sha384WithRSAEncryption",
	"1.2.840.113549.1.1.13":      "sha512WithRSAEncryption",
	"2.16.840.1.101.3.4.2.1":     "sha256",
	"2.16.840.1.101.3.4.2.2":     "sha384",
	"2.16.840.1.101.3.4.2.3":     "sha512",
	"1.3.6.1.1.1.1.22":           "macAddress",
	"0.9.2342.19200300.100.1.5":  "favouriteDrink",
	"2.5.4.3":                    "commonName",
	"2.5.4.5":                    "serialNumber",
	"2.5.4.10":                   "organizationName",
	"2.5.29.14":                  "subjectKeyIdentifier",
	"2.5.29.15":                  "keyUsage",
	"2.5.29.17":                  "subjectAltName",
	"2.5.29.19":                  "basicConstraints",
	"2.5.29.37":                  "extKeyUsage",
	"1.3.6.1.5.5.7.8.4":          "id-on-hardwareModuleName",
	"1.3.6.1.5.5.7.8.10":         "id-on-AcpNodeName",
	"1.3.6.1.5.5.7.3.1":          "serverAuth",
	"1.3.6.1.5.5.7.3.2":          "clientAuth",
	"1.3.6.1.5.5.7.3.28":         "cmcRA",
}

func oidName(o asn1.ObjectIdentifier) string {
	if n, ok := oidNames[o.String()]; ok {
		return n + " (" + o.String() + ")"
	}
	return o.String()
}
