package oscore

import (
	"encoding/hex"
	"encoding/json"
	"os"
	"testing"

	"github.com/plgd-dev/go-coap/v3/message"
	"github.com/plgd-dev/go-coap/v3/udp/coder"
)

// vectors mirrors testdata/oscore-rfc8613.json (RFC 8613 Appendix C, copied from ../shared/vectors).
type vectors struct {
	KeyDerivation []struct {
		ID, Role           string
		MasterSecret       string `json:"master_secret"`
		MasterSalt         string `json:"master_salt"`
		SenderID           string `json:"sender_id"`
		RecipientID        string `json:"recipient_id"`
		IDContext          string `json:"id_context"`
		InfoSenderKey      string `json:"info_sender_key"`
		InfoRecipientKey   string `json:"info_recipient_key"`
		InfoCommonIV       string `json:"info_common_iv"`
		SenderNoncePIV0    string `json:"sender_nonce_piv0"`
		RecipientNoncePIV0 string `json:"recipient_nonce_piv0"`
		SenderKeyJ         string `json:"sender_key"`
		RecipientKeyJ      string `json:"recipient_key"`
		CommonIVJ          string `json:"common_iv"`
	} `json:"key_derivation"`
	MessageProtection []struct {
		ID                  string  `json:"id"`
		SecurityContext     string  `json:"security_context"`
		Request             string  `json:"request"`
		AEADAlgorithm       int     `json:"aead_algorithm"`
		SSN                 uint64  `json:"sender_sequence_number"`
		UnprotectedRequest  string  `json:"unprotected_request"`
		UnprotectedResponse string  `json:"unprotected_response"`
		CommonIV            string  `json:"common_iv"`
		IDContext           string  `json:"id_context"`
		SenderID            string  `json:"sender_id"`
		SenderKey           string  `json:"sender_key"`
		PartialIV           *string `json:"partial_iv"`
		KID                 *string `json:"kid"`
		KIDContext          *string `json:"kid_context"`
		AADArray            string  `json:"aad_array"`
		AAD                 string  `json:"aad"`
		Plaintext           string  `json:"plaintext"`
		EncryptionKey       string  `json:"encryption_key"`
		Nonce               string  `json:"nonce"`
		OptionValue         string  `json:"oscore_option_value"`
		Ciphertext          string  `json:"ciphertext"`
		ProtectedRequest    string  `json:"protected_request"`
		ProtectedResponse   string  `json:"protected_response"`
	} `json:"message_protection"`
}

func loadVectors(t testing.TB) *vectors {
	t.Helper()
	b, err := os.ReadFile("testdata/oscore-rfc8613.json")
	if err != nil {
		t.Fatal(err)
	}
	var v vectors
	if err := json.Unmarshal(b, &v); err != nil {
		t.Fatal(err)
	}
	if len(v.KeyDerivation) != 6 || len(v.MessageProtection) != 5 {
		t.Fatalf("vector file has %d key derivations and %d messages, want 6 and 5", len(v.KeyDerivation), len(v.MessageProtection))
	}
	return &v
}

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatalf("bad hex %q: %v", s, err)
	}
	return b
}

// encoded(t)(b, err) returns b and fails the test if the encoder returned an error.
func encoded(t testing.TB) func([]byte, error) []byte {
	return func(b []byte, err error) []byte {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
}

func checkHex(t *testing.T, what string, got []byte, want string) {
	t.Helper()
	if hex.EncodeToString(got) != want {
		t.Errorf("%s = %x, want %s", what, got, want)
	}
}

// contextFor builds the context of a key-derivation vector with the given first sequence number.
func contextFor(t testing.TB, v *vectors, id string, ssn uint64) *Context {
	t.Helper()
	for _, kd := range v.KeyDerivation {
		if kd.ID != id {
			continue
		}
		c, err := NewContext(Params{
			MasterSecret:  unhex(t, kd.MasterSecret),
			MasterSalt:    unhex(t, kd.MasterSalt),
			SenderID:      unhex(t, kd.SenderID),
			RecipientID:   unhex(t, kd.RecipientID),
			IDContext:     unhex(t, kd.IDContext),
			SequenceStore: NewMemorySequenceStore(ssn),
		})
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		return c
	}
	t.Fatalf("no key derivation vector %s", id)
	return nil
}

func decodeMsg(t testing.TB, b []byte) *message.Message {
	t.Helper()
	m := &message.Message{Options: make(message.Options, 0, 16)}
	if _, err := coder.DefaultCoder.Decode(b, m); err != nil {
		t.Fatalf("decode %x: %v", b, err)
	}
	return m
}

func encodeMsg(t testing.TB, m *message.Message) []byte {
	t.Helper()
	n, _ := coder.DefaultCoder.Size(*m)
	b := make([]byte, n)
	if _, err := coder.DefaultCoder.Encode(*m, b); err != nil {
		t.Fatalf("encode: %v", err)
	}
	return b
}

// TestVectorsKeyDerivation checks RFC 8613 C.1–C.3: HKDF info strings, Sender/Recipient Keys,
// Common IV and the nonces for Partial IV 0.
func TestVectorsKeyDerivation(t *testing.T) {
	v := loadVectors(t)
	for _, kd := range v.KeyDerivation {
		t.Run(kd.ID, func(t *testing.T) {
			c := contextFor(t, v, kd.ID, 0)
			hasCtx := kd.IDContext != ""
			idc := unhex(t, kd.IDContext)
			checkHex(t, "info sender key", encoded(t)(hkdfInfo(unhex(t, kd.SenderID), idc, hasCtx, 10, "Key", 16)), kd.InfoSenderKey)
			checkHex(t, "info recipient key", encoded(t)(hkdfInfo(unhex(t, kd.RecipientID), idc, hasCtx, 10, "Key", 16)), kd.InfoRecipientKey)
			checkHex(t, "info common IV", encoded(t)(hkdfInfo(nil, idc, hasCtx, 10, "IV", 13)), kd.InfoCommonIV)
			sk, rk, iv := c.Keys()
			checkHex(t, "sender key", sk, kd.SenderKeyJ)
			checkHex(t, "recipient key", rk, kd.RecipientKeyJ)
			checkHex(t, "common IV", iv, kd.CommonIVJ)
			checkHex(t, "sender nonce (PIV 0)", c.nonce(c.senderID, encodePIV(0)), kd.SenderNoncePIV0)
			checkHex(t, "recipient nonce (PIV 0)", c.nonce(c.recipientID, encodePIV(0)), kd.RecipientNoncePIV0)
		})
	}
}

// TestVectorsMessages checks RFC 8613 C.4–C.8 byte for byte: every intermediate value (AAD array,
// AAD, plaintext, key, nonce, OSCORE option, ciphertext) and the whole protected message, then
// verifies each protected message on the other side and gets the original back.
func TestVectorsMessages(t *testing.T) {
	v := loadVectors(t)
	requests := map[string]*RequestState{} // client-side states of C.4-C.6, by vector id
	serverStates := map[string]*RequestState{}
	for _, mp := range v.MessageProtection {
		t.Run(mp.ID, func(t *testing.T) {
			isResp := mp.Request != ""
			c := contextFor(t, v, mp.SecurityContext, mp.SSN)
			if mp.AEADAlgorithm != c.AEAD() {
				t.Fatalf("AEAD %d, vector says %d", c.AEAD(), mp.AEADAlgorithm)
			}
			sk, _, iv := c.Keys()
			checkHex(t, "common IV", iv, mp.CommonIV)
			checkHex(t, "sender ID", c.senderID, mp.SenderID)
			checkHex(t, "sender key", sk, mp.SenderKey)
			checkHex(t, "encryption key", sk, mp.EncryptionKey)

			var orig *message.Message
			var kid, reqPIV []byte
			if !isResp {
				orig = decodeMsg(t, unhex(t, mp.UnprotectedRequest))
				kid, reqPIV = c.senderID, encodePIV(mp.SSN)
				checkHex(t, "partial IV", reqPIV, *mp.PartialIV)
				checkHex(t, "kid", kid, *mp.KID)
				if mp.KIDContext != nil {
					checkHex(t, "kid context", c.idContext, *mp.KIDContext)
				}
			} else {
				orig = decodeMsg(t, unhex(t, mp.UnprotectedResponse))
				reqPIV = encodePIV(20) // C.7 and C.8 answer the C.4 request (kid h'', PIV 0x14)
				if mp.PartialIV != nil {
					checkHex(t, "partial IV", encodePIV(mp.SSN), *mp.PartialIV)
				}
			}
			aadArr := encoded(t)(aadArray(10, kid, reqPIV))
			checkHex(t, "aad_array", aadArr, mp.AADArray)
			checkHex(t, "AAD", encoded(t)(encStructure(aadArr)), mp.AAD)

			inner, _, obs, err := splitOptions(orig.Options)
			if err != nil || obs != nil {
				t.Fatalf("split: %v %v", err, obs)
			}
			pt, err := encodePlaintext(byte(orig.Code), inner, orig.Payload)
			if err != nil {
				t.Fatal(err)
			}
			checkHex(t, "plaintext", pt, mp.Plaintext)

			var prot *message.Message
			if !isResp {
				checkHex(t, "nonce", c.nonce(c.senderID, reqPIV), mp.Nonce)
				var st *RequestState
				prot, st, err = c.ProtectRequest(orig)
				if err != nil {
					t.Fatal(err)
				}
				requests[mp.ID] = st
				checkHex(t, "whole protected request", encodeMsg(t, prot), mp.ProtectedRequest)
			} else {
				// The server verifies the C.4 request first, which gives it the request state.
				srvSt := serverStates[mp.Request]
				if srvSt == nil {
					t.Fatalf("no server state for %s", mp.Request)
				}
				srvSt.ctx = c // the vector's fresh server context (SSN 0)
				if mp.PartialIV == nil {
					checkHex(t, "nonce (request's)", srvSt.nonce, mp.Nonce)
					prot, err = c.ProtectResponse(srvSt, orig)
				} else {
					checkHex(t, "nonce", c.nonce(c.senderID, encodePIV(mp.SSN)), mp.Nonce)
					prot, err = c.ProtectResponseWithPIV(srvSt, orig)
				}
				if err != nil {
					t.Fatal(err)
				}
				checkHex(t, "whole protected response", encodeMsg(t, prot), mp.ProtectedResponse)
			}
			optv, _ := prot.Options.GetBytes(OptionNumber)
			checkHex(t, "OSCORE option value", optv, mp.OptionValue)
			checkHex(t, "ciphertext", prot.Payload, mp.Ciphertext)

			// Other side: parse the wire bytes and verify.
			var wire []byte
			if isResp {
				wire = unhex(t, mp.ProtectedResponse)
			} else {
				wire = unhex(t, mp.ProtectedRequest)
			}
			got := decodeMsg(t, wire)
			if !isResp {
				peer := peerOf(t, v, mp.SecurityContext)
				in, st, err := peer.UnprotectRequest(got)
				if err != nil {
					t.Fatalf("server verify: %v", err)
				}
				serverStates[mp.ID] = st
				checkHex(t, "verified request", encodeMsg(t, in), mp.UnprotectedRequest)
			} else {
				cli := contextFor(t, v, "C.1.1", 0)
				r := requests[mp.Request]
				cst := &RequestState{ctx: cli, client: true, kid: r.kid, piv: r.piv, nonce: r.nonce}
				in, err := cli.UnprotectResponse(cst, got)
				if err != nil {
					t.Fatalf("client verify: %v", err)
				}
				checkHex(t, "verified response", encodeMsg(t, in), mp.UnprotectedResponse)
			}
		})
	}
}

// peerOf returns the other side's context (C.x.1 ↔ C.x.2).
func peerOf(t testing.TB, v *vectors, id string) *Context {
	p := []byte(id)
	if p[len(p)-1] == '1' {
		p[len(p)-1] = '2'
	} else {
		p[len(p)-1] = '1'
	}
	return contextFor(t, v, string(p), 0)
}

func TestVectorAADExampleSection54(t *testing.T) {
	// RFC 8613 §5.4 example: alg 10, request_kid 0x00, request_piv 0x25.
	a := encoded(t)(aadArray(10, []byte{0}, []byte{0x25}))
	checkHex(t, "aad_array", a, "8501810a4100412540")
	checkHex(t, "AAD", encoded(t)(encStructure(a)), "8368456e63727970743040498501810a4100412540")
}

func TestOptionExamplesSection63(t *testing.T) {
	// RFC 8613 §6.3 compressed COSE object examples.
	tests := []struct {
		name string
		ov   OptionValue
		want string
	}{
		{"kid 25 piv 05", OptionValue{PartialIV: []byte{5}, KID: []byte{0x25}, HasKID: true}, "090525"},
		{"empty kid piv 00", OptionValue{PartialIV: []byte{0}, KID: []byte{}, HasKID: true}, "0900"},
		{"kid context", OptionValue{PartialIV: []byte{5}, KID: []byte{}, HasKID: true, KIDContext: []byte("Dalek"), HasKIDContext: true}, "19050544616c656b"},
		{"response no piv", OptionValue{}, ""},
		{"response piv 07", OptionValue{PartialIV: []byte{7}}, "0107"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			b, err := tc.ov.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			checkHex(t, "value", b, tc.want)
			back, err := ParseOptionValue(b)
			if err != nil || !back.Equal(tc.ov) {
				t.Fatalf("parse back: %+v %v", back, err)
			}
		})
	}
}
