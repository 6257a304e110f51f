package edhoc

import (
	"encoding/hex"
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
)

type invalidCase struct {
	Group       string `json:"group"`
	Case        string `json:"case"`
	Label       string `json:"label"`
	Hex         string `json:"hex"`
	Explanation string `json:"explanation"`
}

func loadInvalid(t testing.TB) []invalidCase {
	b, err := os.ReadFile("testdata/edhoc-rfc9529-invalid.json")
	if err != nil {
		t.Fatal(err)
	}
	var f struct {
		Cases []invalidCase `json:"cases"`
	}
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	return f.Cases
}

// TestInvalidMessages checks that each of the 15 invalid messages of RFC 9529 §4 is rejected by
// the decoder for its kind, for the reason the RFC gives.
func TestInvalidMessages(t *testing.T) {
	// why: a fragment of the error the decoder must give, per case (in file order).
	why := map[string]string{
		"Surplus array encoding of message":              "METHOD",
		"Surplus bstr encoding of connection identifier": "must be encoded as an integer",
		"Surplus array encoding of ciphersuite":          "fewer than two suites",
		"Text string encoding of ephemeral key":          "G_X",
		"Wrong number of CBOR sequence elements":         "more than one element",
		"Surplus map encoding of ID_CRED field":          "compact encoding",
		"Surplus bstr encoding of ID_CRED field":         "must be encoded as an integer",
		"Error in length of ephemeral key":               "suite 24 needs 48",
		"Error in elliptic curve representation":         "not below p",
		"Error in elliptic curve point":                  "not on P-256",
		"Curve point of low order":                       "low order",
		"Error in length of MAC":                         "is 4 bytes, want 8",
		"Error in elliptic curve encoding":               "31 bytes",
		"Unnecessary long encoding":                      "not shortest",
		"Indefinite-length array encoding":               "indefinite-length",
	}
	cases := loadInvalid(t)
	if len(cases) != 15 {
		t.Fatalf("%d cases, want 15", len(cases))
	}
	for _, tc := range cases {
		t.Run(tc.Case, func(t *testing.T) {
			b, err := hex.DecodeString(tc.Hex)
			if err != nil {
				t.Fatal(err)
			}
			switch tc.Label {
			case "Invalid message_1":
				_, err = ParseMessage1(b)
				// The Responder must refuse it too (and not with an internal error).
				r, rerr := NewResponder(Config{Suites: []Suite{Suite2, Suite0}, Credential: &Credential{}, PrivateKey: 1,
					Resolve: func(*IDCred, []EAD) (*Credential, error) { return nil, ErrUnknownCredential }})
				if rerr != nil {
					t.Fatal(rerr)
				}
				if _, perr := r.ProcessMessage1(b); perr == nil || ReplyFor(perr) == nil {
					t.Errorf("Responder accepted it or sent no error message: %v", perr)
				}
			case "Invalid message_2":
				_, _, err = ParseMessage2(b, Suite2)
			case "Invalid PLAINTEXT_2":
				// The PLAINTEXT_2 cases belong to trace 2: method 3, suite 2, MAC length 8.
				_, err = ParsePlaintext2(b, 8)
			default:
				t.Fatalf("unknown label %q", tc.Label)
			}
			if err == nil {
				t.Fatalf("accepted: %s", tc.Explanation)
			}
			if !errors.Is(err, ErrMalformed) {
				t.Errorf("error does not wrap ErrMalformed: %v", err)
			}
			if w := why[tc.Case]; w == "" || !strings.Contains(err.Error(), w) {
				t.Errorf("rejected for another reason: %v (want %q)", err, w)
			}
		})
	}
}
