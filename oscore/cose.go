package oscore

import (
	"fmt"

	"github.com/fxamacker/cbor/v2"
)

// The CBOR items OSCORE encodes: the HKDF info array (RFC 8613 §3.2.1) and the AAD
// (RFC 8613 §5.4), both in the deterministic encoding of RFC 8949 §4.2.1, which is what the
// RFC 8613 Appendix C vectors show. OSCORE decodes no CBOR.

// cborEnc is the encoding mode: core deterministic encoding (RFC 8949 §4.2.1), with a nil
// []byte encoded as the empty bstr h” (an absent kid is h” in the AAD, §5.4). It is
// immutable and safe for concurrent use.
var cborEnc = func() cbor.EncMode {
	o := cbor.CoreDetEncOptions()
	o.NilContainers = cbor.NilContainerAsEmpty
	em, err := o.EncMode()
	if err != nil {
		panic(fmt.Sprintf("oscore: CBOR encoding options: %v", err)) // constant options
	}
	return em
}()

func encode(what string, v any) ([]byte, error) {
	b, err := cborEnc.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("oscore: encode %s: %w", what, err)
	}
	return b, nil
}

// hkdfInfoArray is info = [id: bstr, id_context: bstr / nil, alg_aead: int / tstr,
// type: tstr, L: uint] (RFC 8613 §3.2.1).
type hkdfInfoArray struct {
	_         struct{} `cbor:",toarray"`
	ID        []byte
	IDContext any // []byte, or nil for CBOR null when there is no ID Context
	AlgAEAD   int
	Type      string
	L         int
}

// hkdfInfo builds the info of RFC 8613 §3.2.1.
func hkdfInfo(id, idContext []byte, hasIDContext bool, alg int, typ string, l int) ([]byte, error) {
	info := hkdfInfoArray{ID: id, AlgAEAD: alg, Type: typ, L: l}
	if hasIDContext {
		info.IDContext = idContext
	}
	return encode("HKDF info", info)
}

// aadArrayItems is aad_array = [oscore_version: uint, algorithms: [alg_aead: int / tstr],
// request_kid: bstr, request_piv: bstr, options: bstr] (RFC 8613 §5.4).
type aadArrayItems struct {
	_             struct{} `cbor:",toarray"`
	OSCOREVersion int
	Algorithms    []int
	RequestKID    []byte
	RequestPIV    []byte
	Options       []byte
}

// aadArray builds aad_array for OSCORE version 1 (RFC 8613 §5.4); there are no Class I
// options, so options is the empty bstr.
func aadArray(alg int, requestKID, requestPIV []byte) ([]byte, error) {
	return encode("aad_array", aadArrayItems{OSCOREVersion: 1, Algorithms: []int{alg}, RequestKID: requestKID, RequestPIV: requestPIV})
}

// encStructureItems is a COSE Enc_structure for COSE_Encrypt0 (RFC 9052 §5.3).
type encStructureItems struct {
	_           struct{} `cbor:",toarray"`
	Context     string
	Protected   []byte
	ExternalAAD []byte
}

// encStructure builds AAD = Enc_structure = ["Encrypt0", empty bstr, external_aad] with
// external_aad = bstr .cbor aad_array (RFC 8613 §5.4, RFC 9052 §5.3).
func encStructure(aadArr []byte) ([]byte, error) {
	return encode("Enc_structure", encStructureItems{Context: "Encrypt0", ExternalAAD: aadArr})
}

// requestAAD is the AAD of a message that belongs to the request with requestKID and
// requestPIV (RFC 8613 §5.4: a response uses its request's kid and Partial IV).
func requestAAD(alg int, requestKID, requestPIV []byte) ([]byte, error) {
	a, err := aadArray(alg, requestKID, requestPIV)
	if err != nil {
		return nil, err
	}
	return encStructure(a)
}
