package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"coapca/authority"
	"coapca/est"
)

// symkeyFlags are the flags of `coapca ca symkey add`.
type symkeyFlags struct {
	to, keyID, keyFile, algorithm string
	random                        int
}

func (f *symkeyFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.to, "to", "", "symkey add: the clients: serial:HEX (one certificate of this CA), subject:DN (its certificates with that subject) or label:L (every certificate issued under label L)")
	fs.StringVar(&f.keyID, "key-id", "", "symkey add: the key's identifier (RFC 6031 id-pskc-keyId)")
	fs.StringVar(&f.keyFile, "key-file", "", "symkey add: file holding the key (hex, or raw bytes)")
	fs.IntVar(&f.random, "random", 0, "symkey add: generate a random key of this many bytes instead of --key-file")
	fs.StringVar(&f.algorithm, "algorithm", "", "symkey add: the key's algorithm URI (RFC 6031 id-pskc-algorithm), e.g. http://www.w3.org/2001/04/xmlenc#aes128-cbc")
}

// runSymkey is `coapca ca symkey add|list`: the operator's side of /symmetrickeys (RFC 8295 §5).
func runSymkey(ctx context.Context, auth *authority.Authority, args []string, f symkeyFlags, limit int, stdout io.Writer) error {
	if len(args) != 1 || (args[0] != "add" && args[0] != "list") {
		return usagef("ca symkey takes one of add, list")
	}
	if args[0] == "list" {
		return listSymkeys(ctx, auth, limit, stdout)
	}
	if f.to == "" || f.keyID == "" {
		return usagef("ca symkey add needs --to and --key-id")
	}
	var key []byte
	switch {
	case (f.keyFile == "") == (f.random == 0):
		return usagef("ca symkey add needs exactly one of --key-file and --random N")
	case f.random != 0:
		if f.random < 0 || f.random > est.MaxSymmetricKeyBytes {
			return usagef("--random %d: 1..%d bytes", f.random, est.MaxSymmetricKeyBytes)
		}
		key = make([]byte, f.random)
		if _, err := rand.Read(key); err != nil {
			return err
		}
	default:
		b, err := os.ReadFile(f.keyFile)
		if err != nil {
			return err
		}
		key = b
		if h, err := hex.DecodeString(string(bytes.TrimSpace(b))); err == nil && len(h) > 0 {
			key = h
		}
	}
	pkg, err := est.MarshalSymmetricKeyPackage([]est.SymmetricKey{{ID: f.keyID, Algorithm: f.algorithm, Key: key}})
	if err != nil {
		return usagef("%v", err)
	}
	p, err := auth.AddPackage(ctx, authority.PackageSymmetricKeys, f.to, f.keyID, pkg)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "queued symmetric key package %d (key %q, %d bytes) for %s\n", p.ID, f.keyID, len(key), p.Target)
	return nil
}

func listSymkeys(ctx context.Context, auth *authority.Authority, limit int, stdout io.Writer) error {
	ps, err := auth.ListPackages(ctx, authority.PackageSymmetricKeys, limit)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tKEY\tFOR\tQUEUED\tCLIENT\tFETCHED\tRETURNED")
	for _, p := range ps {
		ds, err := auth.PackageDeliveries(ctx, p.ID)
		if err != nil {
			return err
		}
		head := fmt.Sprintf("%d\t%s\t%s\t%s", p.ID, p.Name, p.Target, p.CreatedAt.Format(time.RFC3339))
		if len(ds) == 0 {
			fmt.Fprintf(tw, "%s\t-\t-\t-\n", head)
		}
		for _, d := range ds {
			ret := "-"
			if d.ReturnKind != "" {
				ret = d.ReturnKind + " " + d.ReturnedAt.Format(time.RFC3339)
				if d.ErrorCode != "" {
					ret += " " + d.ErrorCode
				}
			}
			fmt.Fprintf(tw, "%s\t%s\t%s (%d×)\t%s\n", head, d.ClientSerial, d.FetchedAt.Format(time.RFC3339), d.Fetches, ret)
		}
	}
	return tw.Flush()
}
