package cmp

import "encoding/asn1"

// Object identifiers used by CMP (RFC 9810 Appendix A, RFC 9481, RFC 9483).
var (
	// OIDPasswordBasedMac is id-PasswordBasedMac (RFC 9481 §6.1.1).
	OIDPasswordBasedMac = asn1.ObjectIdentifier{1, 2, 840, 113533, 7, 66, 13}
	// OIDPBMAC1 is id-PBMAC1 (RFC 8018 §7.1, RFC 9481 §6.1.2).
	OIDPBMAC1 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 14}
	// OIDPBKDF2 is id-PBKDF2 (RFC 8018 §5.2).
	OIDPBKDF2 = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 5, 12}

	OIDHMACSHA1       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 8, 1, 2} // hmac-sha1 (RFC 2104/3370)
	OIDHMACWithSHA1   = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 7}
	OIDHMACWithSHA224 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 8}
	OIDHMACWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 9}
	OIDHMACWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 10}
	OIDHMACWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 113549, 2, 11}

	OIDSHA1   = asn1.ObjectIdentifier{1, 3, 14, 3, 2, 26}
	OIDSHA224 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 4}
	OIDSHA256 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 1}
	OIDSHA384 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 2}
	OIDSHA512 = asn1.ObjectIdentifier{2, 16, 840, 1, 101, 3, 4, 2, 3}

	OIDECDSAWithSHA256 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 2}
	OIDECDSAWithSHA384 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 3}
	OIDECDSAWithSHA512 = asn1.ObjectIdentifier{1, 2, 840, 10045, 4, 3, 4}
	OIDEd25519         = asn1.ObjectIdentifier{1, 3, 101, 112}
	OIDSHA256WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 11}
	OIDSHA384WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 12}
	OIDSHA512WithRSA   = asn1.ObjectIdentifier{1, 2, 840, 113549, 1, 1, 13}

	// id-it arc 1.3.6.1.5.5.7.4 (RFC 9810 §5.3.19, RFC 9483 §4.3).
	OIDITImplicitConfirm = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 4, 13}
	OIDITConfirmWaitTime = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 4, 14}
	OIDITCACerts         = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 4, 17}
	OIDITRootCAKeyUpdate = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 4, 18}
	OIDITCertReqTemplate = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 4, 19}
	OIDITRootCACert      = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 4, 20}
	OIDITCertProfile     = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 4, 21}
	OIDITCRLStatusList   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 4, 22}
	OIDITCRLs            = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 4, 23}

	// OIDRegCtrlOldCertID is id-regCtrl-oldCertID (RFC 4211 §6.5), used in kur (RFC 9483 §4.1.3).
	OIDRegCtrlOldCertID = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 5, 1, 5}
)
