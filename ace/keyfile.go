package ace

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"os"
	"strings"
)

// LoadKey reads an AS key from a file: for the symmetric algorithms hex text or raw bytes, for
// ES256 a PEM public key (a resource server) or private key (the AS). kid is hex.
func LoadKey(kid string, alg int, path string) (Key, error) {
	k := Key{Alg: alg}
	var err error
	if k.KID, err = hex.DecodeString(strings.ReplaceAll(kid, " ", "")); err != nil {
		return k, fmt.Errorf("ace: kid %q is not hex", kid)
	}
	if len(k.KID) == 0 {
		k.KID = nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return k, fmt.Errorf("ace: key: %w", err)
	}
	if alg == AlgES256 {
		blk, _ := pem.Decode(b)
		if blk == nil {
			return k, fmt.Errorf("ace: %s: no PEM block", path)
		}
		switch blk.Type {
		case "PUBLIC KEY":
			pub, err := x509.ParsePKIXPublicKey(blk.Bytes)
			if err != nil {
				return k, fmt.Errorf("ace: %s: %w", path, err)
			}
			ec, ok := pub.(*ecdsa.PublicKey)
			if !ok {
				return k, fmt.Errorf("ace: %s: not an EC public key", path)
			}
			k.PublicKey = ec
		case "EC PRIVATE KEY":
			if k.PrivateKey, err = x509.ParseECPrivateKey(blk.Bytes); err != nil {
				return k, fmt.Errorf("ace: %s: %w", path, err)
			}
		case "PRIVATE KEY":
			priv, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
			if err != nil {
				return k, fmt.Errorf("ace: %s: %w", path, err)
			}
			ec, ok := priv.(*ecdsa.PrivateKey)
			if !ok {
				return k, fmt.Errorf("ace: %s: not an EC private key", path)
			}
			k.PrivateKey = ec
		default:
			return k, fmt.Errorf("ace: %s: PEM type %q (want PUBLIC KEY or an EC private key)", path, blk.Type)
		}
	} else {
		t := bytes.TrimSpace(b)
		if h, err := hex.DecodeString(string(t)); err == nil && len(t) > 0 {
			k.Secret = h
		} else {
			k.Secret = b
		}
	}
	if err := k.Validate(); err != nil {
		return k, fmt.Errorf("%w (%s)", err, path)
	}
	return k, nil
}
