package oscore

// The few CBOR items OSCORE needs (RFC 8949 §3): the HKDF info array (RFC 8613 §3.2.1) and
// the AAD (RFC 8613 §5.4). Hand-encoded so the bytes are exactly the deterministic encoding.

func cborHead(b []byte, major byte, v uint64) []byte {
	m := major << 5
	switch {
	case v < 24:
		return append(b, m|byte(v))
	case v <= 0xff:
		return append(b, m|24, byte(v))
	case v <= 0xffff:
		return append(b, m|25, byte(v>>8), byte(v))
	case v <= 0xffffffff:
		return append(b, m|26, byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	default:
		return append(b, m|27, byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32),
			byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
}

func cborInt(b []byte, v int) []byte {
	if v < 0 {
		return cborHead(b, 1, uint64(-1-v))
	}
	return cborHead(b, 0, uint64(v))
}

func cborBstr(b, s []byte) []byte { return append(cborHead(b, 2, uint64(len(s))), s...) }
func cborTstr(b []byte, s string) []byte {
	return append(cborHead(b, 3, uint64(len(s))), s...)
}
func cborArray(b []byte, n int) []byte { return cborHead(b, 4, uint64(n)) }

const cborNull = 0xf6

// hkdfInfo builds info = [id, id_context / nil, alg_aead, type, L] (RFC 8613 §3.2.1).
func hkdfInfo(id, idContext []byte, hasIDContext bool, alg int, typ string, l int) []byte {
	b := make([]byte, 0, 24+len(id)+len(idContext))
	b = cborArray(b, 5)
	b = cborBstr(b, id)
	if hasIDContext {
		b = cborBstr(b, idContext)
	} else {
		b = append(b, cborNull)
	}
	b = cborInt(b, alg)
	b = cborTstr(b, typ)
	return cborInt(b, l)
}

// aadArray builds aad_array = [oscore_version 1, [alg_aead], request_kid, request_piv, options]
// (RFC 8613 §5.4); there are no Class I options, so options is the empty bstr.
func aadArray(alg int, requestKID, requestPIV []byte) []byte {
	b := make([]byte, 0, 16+len(requestKID)+len(requestPIV))
	b = cborArray(b, 5)
	b = cborInt(b, 1)
	b = cborArray(b, 1)
	b = cborInt(b, alg)
	b = cborBstr(b, requestKID)
	b = cborBstr(b, requestPIV)
	return cborBstr(b, nil)
}

// encStructure builds AAD = Enc_structure = ["Encrypt0", empty bstr, external_aad] with
// external_aad = bstr .cbor aad_array (RFC 8613 §5.4, RFC 9052 §5.3).
func encStructure(aadArr []byte) []byte {
	b := make([]byte, 0, 16+len(aadArr))
	b = cborArray(b, 3)
	b = cborTstr(b, "Encrypt0")
	b = cborBstr(b, nil)
	return cborBstr(b, aadArr)
}
