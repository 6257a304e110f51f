package cli

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/x509"
	"encoding/asn1"
	"encoding/hex"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"coapca/authority"
	"coapca/est"
	"coapca/est/estserver"
	"coapca/internal/pemfile"
	"coapca/internal/server"
)

// symkeyFlags are the flags of `coapca ca symkey add` and `coapca ca firmware add`.
type symkeyFlags struct {
	to, keyID, keyFile, algorithm string
	forms                         string
	random                        int
	image, name, hwType           string
	encrypt                       bool
	// ca tamp
	addTA, removeTA, apex          string
	addCommunity, removeCommunity  string
	terse, clearTAs, clearCommunit bool
}

func (f *symkeyFlags) registerTAMP(fs *flag.FlagSet) {
	fs.StringVar(&f.to, "to", "", "tamp: the clients: label:L, serial:HEX or subject:DN")
	fs.StringVar(&f.addTA, "add-ta", "", "tamp update: PEM file of trust anchors (certificates) to add")
	fs.StringVar(&f.removeTA, "remove-ta", "", "tamp update: PEM file of trust anchors (certificates) whose keys to remove")
	fs.StringVar(&f.apex, "apex", "", "tamp apex-update: PEM file of the new apex trust anchor (certificate)")
	fs.BoolVar(&f.clearTAs, "clear-tas", false, "tamp apex-update: clear the other trust anchors")
	fs.BoolVar(&f.clearCommunit, "clear-communities", false, "tamp apex-update: clear the communities")
	fs.StringVar(&f.addCommunity, "add-community", "", "tamp community-update: community OIDs to add (comma-separated)")
	fs.StringVar(&f.removeCommunity, "remove-community", "", "tamp community-update: community OIDs to remove (comma-separated)")
	fs.BoolVar(&f.terse, "terse", false, "tamp: ask for terse responses (RFC 5934 TerseOrVerbose)")
}

// runTAMP is `coapca ca tamp KIND|list`: the operator's side of /tamp (RFC 8295 §7). The message
// is signed with the server's key and carries the next TAMP sequence number.
func runTAMP(ctx context.Context, h *server.House, args []string, f symkeyFlags, limit int, stdout io.Writer) error {
	auth := h.Authority()
	if len(args) != 1 {
		return usagef("ca tamp takes one of status-query, update, apex-update, community-update, sequence-adjust, list")
	}
	if args[0] == "list" {
		return listPackages(ctx, auth, authority.PackageTAMP, limit, stdout)
	}
	kind, ok := est.TAMPKindByName(args[0])
	if !ok || !kind.IsRequest() {
		return usagef("ca tamp %s: not a TAMP message a TA manager sends", args[0])
	}
	if f.to == "" {
		return usagef("ca tamp %s needs --to", args[0])
	}
	m := &est.TAMPMessage{Kind: kind, Terse: f.terse, HasRef: true}
	certsOf := func(path string) ([]*x509.Certificate, error) {
		if path == "" {
			return nil, nil
		}
		return pemfile.ReadCerts(path)
	}
	var err error
	switch kind {
	case est.TAMPUpdate:
		if m.Add, err = certsOf(f.addTA); err != nil {
			return err
		}
		rm, err := certsOf(f.removeTA)
		if err != nil {
			return err
		}
		for _, c := range rm {
			m.Remove = append(m.Remove, c.RawSubjectPublicKeyInfo)
		}
		if len(m.Add)+len(m.Remove) == 0 {
			return usagef("ca tamp update needs --add-ta or --remove-ta")
		}
	case est.TAMPApexUpdate:
		apex, err := certsOf(f.apex)
		if err != nil {
			return err
		}
		if len(apex) != 1 {
			return usagef("ca tamp apex-update needs --apex with one certificate")
		}
		m.Apex, m.ClearTAs, m.ClearCommunities = apex[0], f.clearTAs, f.clearCommunit
	case est.TAMPCommunityUpdate:
		if m.CommunityAdd, err = parseOIDs(f.addCommunity); err != nil {
			return usagef("--add-community: %v", err)
		}
		if m.CommunityRemove, err = parseOIDs(f.removeCommunity); err != nil {
			return usagef("--remove-community: %v", err)
		}
		if len(m.CommunityAdd)+len(m.CommunityRemove) == 0 {
			return usagef("ca tamp community-update needs --add-community or --remove-community")
		}
	}
	if m.SeqNum, err = auth.NextTAMPSequence(ctx); err != nil {
		return err
	}
	d := h.Data()
	der, err := est.SignTAMP(rand.Reader, m, d.ServerKey, []*x509.Certificate{d.Server, d.IssuingCA}, time.Now())
	if err != nil {
		return usagef("%v", err)
	}
	p, err := auth.AddPackage(ctx, authority.PackageTAMP, f.to, estserver.TAMPName(kind, m.SeqNum), der, nil)
	if err != nil {
		return err
	}
	fmt.Fprintf(stdout, "queued TAMP %s (sequence number %d) as package %d for %s\n", kind, m.SeqNum, p.ID, p.Target)
	return nil
}

// parseOIDs reads comma-separated dotted OIDs ("" is none).
func parseOIDs(s string) ([]asn1.ObjectIdentifier, error) {
	var out []asn1.ObjectIdentifier
	for _, part := range strings.Split(s, ",") {
		if part = strings.TrimSpace(part); part == "" {
			continue
		}
		n, err := est.ParseFirmwareName(part + ":0")
		if err != nil {
			return nil, fmt.Errorf("%q is not an OID", part)
		}
		out = append(out, n.ID)
	}
	return out, nil
}

func (f *symkeyFlags) registerFirmware(fs *flag.FlagSet) {
	fs.StringVar(&f.to, "to", "", "firmware add: the clients: label:L (every certificate issued under label L), serial:HEX or subject:DN")
	fs.StringVar(&f.image, "image", "", "firmware add: the firmware image file")
	fs.StringVar(&f.name, "name", "", "firmware add: the firmware package identifier OID:VERSION (RFC 4108 PreferredPackageIdentifier)")
	fs.StringVar(&f.hwType, "hw-type", "", "firmware add: the target hardware module type (an OID, RFC 4108 target-hardware-module-identifiers)")
	fs.BoolVar(&f.encrypt, "encrypt", false, "firmware add: encrypt the image (RFC 4108 EncryptedData, AES-256-CBC) under a fresh key, queued for the "+
		"same clients as a symmetric key package (RFC 8295 §5) named by the package's decrypt-key-identifier")
}

// runFirmware is `coapca ca firmware add|list`: the operator's side of /firmware (RFC 8295 §6).
// The image is signed with the server's key (the certificate that signs every package).
func runFirmware(ctx context.Context, h *server.House, args []string, f symkeyFlags, limit int, stdout io.Writer) error {
	auth := h.Authority()
	if len(args) != 1 || (args[0] != "add" && args[0] != "list") {
		return usagef("ca firmware takes one of add, list")
	}
	if args[0] == "list" {
		return listPackages(ctx, auth, authority.PackageFirmware, limit, stdout)
	}
	if f.to == "" || f.image == "" || f.name == "" || f.hwType == "" {
		return usagef("ca firmware add needs --to, --image, --name and --hw-type")
	}
	name, err := est.ParseFirmwareName(f.name)
	if err != nil {
		return usagef("--name: %v", err)
	}
	hw, err := est.ParseFirmwareName(f.hwType + ":0")
	if err != nil {
		return usagef("--hw-type %q is not an OID", f.hwType)
	}
	image, err := os.ReadFile(f.image)
	if err != nil {
		return err
	}
	d := h.Data()
	signers := []*x509.Certificate{d.Server, d.IssuingCA}
	if !f.encrypt {
		pkg, err := est.SignFirmwarePackage(rand.Reader, image, name, []asn1.ObjectIdentifier{hw.ID}, d.ServerKey, signers, time.Now())
		if err != nil {
			return usagef("%v", err)
		}
		p, err := auth.AddPackage(ctx, authority.PackageFirmware, f.to, name.String(), pkg, nil)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "queued firmware package %d (%s, %d bytes) for %s\n", p.ID, p.Name, len(image), p.Target)
		return nil
	}
	// RFC 4108 §2.1.3, §2.2.5: the image encrypted under a fresh key that the package names by
	// its decrypt-key-identifier; the key travels to the same clients as a symmetric key
	// package, encrypted for each client's certificate (RFC 8295 §5.1.2).
	key, kid := make([]byte, 32), make([]byte, 8)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	if _, err := rand.Read(kid); err != nil {
		return err
	}
	keyID := "coapca-firmware-key-" + hex.EncodeToString(kid)
	pkg, err := est.SignEncryptedFirmwarePackage(rand.Reader, image, name, []asn1.ObjectIdentifier{hw.ID}, key, []byte(keyID),
		d.ServerKey, signers, time.Now())
	if err != nil {
		return usagef("%v", err)
	}
	keyPkg, err := est.MarshalSymmetricKeyPackage([]est.SymmetricKey{{ID: keyID, Algorithm: "http://www.w3.org/2001/04/xmlenc#aes256-cbc", Key: key}})
	if err != nil {
		return err
	}
	kp, err := auth.AddPackage(ctx, authority.PackageSymmetricKeys, f.to, keyID, keyPkg, nil)
	if err != nil {
		return err
	}
	p, err := auth.AddPackage(ctx, authority.PackageFirmware, f.to, name.String(), pkg, nil)
	if err != nil {
		return fmt.Errorf("the key is queued as symmetric key package %d, but the firmware is not: %w", kp.ID, err)
	}
	fmt.Fprintf(stdout, "queued encrypted firmware package %d (%s, %d bytes) for %s; its key %s as symmetric key package %d\n",
		p.ID, p.Name, len(image), p.Target, keyID, kp.ID)
	return nil
}

func (f *symkeyFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.to, "to", "", "symkey add: the clients: serial:HEX (one certificate of this CA), subject:DN (its certificates with that subject) or label:L (every certificate issued under label L)")
	fs.StringVar(&f.keyID, "key-id", "", "symkey add: the key's identifier (RFC 6031 id-pskc-keyId)")
	fs.StringVar(&f.keyFile, "key-file", "", "symkey add: file holding the key (hex, or raw bytes)")
	fs.IntVar(&f.random, "random", 0, "symkey add: generate a random key of this many bytes instead of --key-file")
	fs.StringVar(&f.algorithm, "algorithm", "", "symkey add: the key's algorithm URI (RFC 6031 id-pskc-algorithm), e.g. http://www.w3.org/2001/04/xmlenc#aes128-cbc")
	fs.StringVar(&f.forms, "forms", "", "symkey add: the forms of RFC 8295 §5.1.2 the key may be delivered in, comma-separated ("+
		strings.Join(authority.SymKeyForms(), ", ")+", or all); default: "+strings.Join(authority.DefaultSymKeyForms(), ", ")+
		" (those that encrypt for the client; plain and signed are protected by TLS only)")
}

// runSymkey is `coapca ca symkey add|list`: the operator's side of /symmetrickeys (RFC 8295 §5).
func runSymkey(ctx context.Context, auth *authority.Authority, args []string, f symkeyFlags, limit int, stdout io.Writer) error {
	if len(args) != 1 || (args[0] != "add" && args[0] != "list") {
		return usagef("ca symkey takes one of add, list")
	}
	if args[0] == "list" {
		return listPackages(ctx, auth, authority.PackageSymmetricKeys, limit, stdout)
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
	var forms []string
	if f.forms != "" {
		forms = strings.Split(f.forms, ",")
	}
	p, err := auth.AddPackage(ctx, authority.PackageSymmetricKeys, f.to, f.keyID, pkg, forms)
	if err != nil {
		return err
	}
	allowed := p.Forms
	if len(allowed) == 0 {
		allowed = authority.DefaultSymKeyForms()
	}
	fmt.Fprintf(stdout, "queued symmetric key package %d (key %q, %d bytes) for %s, delivered as %s\n", p.ID, f.keyID, len(key), p.Target,
		strings.Join(allowed, ", "))
	return nil
}

func listPackages(ctx context.Context, auth *authority.Authority, kind authority.PackageKind, limit int, stdout io.Writer) error {
	ps, err := auth.ListPackages(ctx, kind, limit)
	if err != nil {
		return err
	}
	tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tNAME\tFOR\tQUEUED\tCLIENT\tFETCHED\tRETURNED")
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
			fetched := fmt.Sprintf("%s (%d×)", d.FetchedAt.Format(time.RFC3339), d.Fetches)
			if d.Form != "" {
				fetched = fmt.Sprintf("%s (%d×, latest %s)", d.FetchedAt.Format(time.RFC3339), d.Fetches, d.Form)
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", head, d.ClientSerial, fetched, ret)
		}
	}
	return tw.Flush()
}
