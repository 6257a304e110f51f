package cli

import (
	"context"
	"encoding/pem"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"coapca/authority"
	"coapca/internal/server"
)

const caUsage = `Usage: coapca ca COMMAND [flags] [ARGS]

Manage the CA of a data directory. Works while 'coapca serve' runs on the same directory
(the database is shared; decisions take effect on the device's next retry).

Commands:
  list                 issued certificates, newest first (--subject, --label, --revoked)
  show SERIAL          one certificate: record and PEM
  revoke SERIAL        revoke (--reason N, RFC 5280 CRLReason, default 0 unspecified)
  pending              requests waiting for approval (--all for decided ones too)
  approve ID           approve a pending request; the device's next retry gets its certificate
  reject ID            reject a pending request (--why TEXT)
  crl                  print a freshly signed CRL (PEM; --der for DER)
  receipts [SERIAL]    key package receipts and errors clients returned for server-generated
                       keys (RFC 8295 §8.2, /serverkeygen/return), newest first
  backup FILE          write a consistent copy of the database to FILE (must not exist) while
                       the server runs; restore: docs/operations.md
  check                verify the database's integrity (SQLite integrity and foreign-key checks)
  issue-ra             certify a separate registrar host (RFC 9148 §5): id-kp-cmcRA, serverAuth
                       and clientAuth, from its CSR (--csr FILE) or for a new key (--key-out
                       FILE); --name DNS-or-IP (repeatable), --out FILE (docs/registrar.md)
  symkey add           queue a symmetric key for clients (RFC 8295 §5, RFC 6031): --to
                       serial:HEX | subject:DN | label:L, --key-id ID, and --key-file FILE (hex
                       or raw) or --random N (bytes); --algorithm URI (optional)
  symkey list          queued symmetric key packages and, per client, fetched / receipt / error
  firmware add         queue a firmware image, signed with the server's key as an RFC 4108
                       firmware package, for the clients of a label (RFC 8295 §6): --to label:L
                       (or serial:HEX, subject:DN), --image FILE, --name OID:VERSION, --hw-type OID
  firmware list        queued firmware packages and, per client, fetched / receipt / error
  tamp KIND            sign a TAMP message (RFC 5934) with the server's key and queue it for
                       clients (RFC 8295 §7): KIND is status-query, update (--add-ta FILE,
                       --remove-ta FILE), apex-update (--apex FILE, --clear-tas,
                       --clear-communities), community-update (--add-community OIDS,
                       --remove-community OIDS) or sequence-adjust; --to as for firmware;
                       --terse for terse responses
  tamp list            queued TAMP messages and, per client, fetched / confirm / error

Common flags: --data DIR (default ./coapca-data), --config FILE, --store sqlite|postgres://…
`

func runCA(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	cmd, err := subcommand("ca", args, caUsage, stdout, "list", "show", "revoke", "pending", "approve", "reject", "crl", "receipts", "symkey", "firmware", "tamp", "backup", "check", "issue-ra")
	if cmd == "" {
		return err
	}
	fs := newFlagSet("ca "+cmd, "coapca ca "+cmd+" [flags] [ARGS]", "See 'coapca ca help'.", stderr)
	dataDir := fs.String("data", "", "data directory (default ./coapca-data, or the config's)")
	cfgPath := fs.String("config", "", "YAML configuration file")
	storeFlag := fs.String("store", "", storeFlagHelp)
	var (
		subject = fs.String("subject", "", "list: only subjects containing this text")
		label   = fs.String("label", "", "list: only this profile label")
		revoked = fs.Bool("revoked", false, "list: only revoked certificates")
		limit   = fs.Int("limit", 100, "list, pending, receipts: at most this many rows")
		reason  = fs.Int("reason", 0, "revoke: RFC 5280 CRLReason code (0 unspecified, 1 keyCompromise, 4 superseded, 5 cessationOfOperation, ...)")
		why     = fs.String("why", "rejected by the operator", "reject: the reason told to the device")
		all     = fs.Bool("all", false, "pending: include approved, rejected and issued requests")
		der     = fs.Bool("der", false, "crl: write DER instead of PEM")
		sk      symkeyFlags
		ra      issueRAFlags
	)
	switch cmd {
	case "symkey":
		sk.register(fs)
	case "firmware":
		sk.registerFirmware(fs)
	case "tamp":
		sk.registerTAMP(fs)
	case "issue-ra":
		ra.register(fs)
	}
	rest, err := parseInterspersed(fs, args[1:])
	if err != nil {
		return err
	}
	needArg := func(what string) (string, error) {
		if len(rest) != 1 {
			return "", usagef("ca %s takes one %s", cmd, what)
		}
		return rest[0], nil
	}
	cfg, err := loadConfig(*cfgPath, *dataDir)
	if err != nil {
		return err
	}
	if err := applyStoreFlag(&cfg, *storeFlag); err != nil {
		return err
	}
	log, err := newLogger(stderr, "warn")
	if err != nil {
		return err
	}
	h, err := server.OpenHouse(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer h.Close()
	auth := h.Authority()

	switch cmd {
	case "symkey":
		return runSymkey(ctx, auth, rest, sk, *limit, stdout)
	case "firmware":
		return runFirmware(ctx, h, rest, sk, *limit, stdout)
	case "tamp":
		return runTAMP(ctx, h, rest, sk, *limit, stdout)
	case "issue-ra":
		return runIssueRA(h.Data(), rest, ra, stdout)
	case "list":
		f := authority.CertFilter{SubjectContains: *subject, Limit: *limit}
		if *label != "" {
			f.Label, f.LabelSet = *label, true
		}
		if *revoked {
			f.Revocation = authority.OnlyRevoked
		}
		certs, err := auth.ListCertificates(ctx, f)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "SERIAL\tSUBJECT\tLABEL\tVIA\tISSUED\tNOT AFTER\tSTATUS")
		for _, c := range certs {
			st := "valid"
			switch {
			case c.Revoked():
				st = "revoked"
			case time.Now().After(c.NotAfter):
				st = "expired"
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s/%s %s\t%s\t%s\t%s\n", c.Serial, c.Subject, orDash(c.Label),
				c.Protocol, c.Transport, c.Op, c.IssuedAt.Format(time.RFC3339), c.NotAfter.Format("2006-01-02"), st)
		}
		return tw.Flush()
	case "receipts":
		if len(rest) > 1 {
			return usagef("ca receipts takes at most one serial number")
		}
		serial := ""
		if len(rest) == 1 {
			serial = rest[0]
		}
		rets, err := auth.KeyPackageReturns(ctx, serial, *limit)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "RECEIVED\tKIND\tCERTIFICATE\tERROR\tBY\tSIGNED BY\tREQUESTER")
		for _, r := range rets {
			who := r.RequesterRef
			if r.RequesterSubject != "" {
				who = r.RequesterSubject
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s %s\n", r.ReceivedAt.Format(time.RFC3339), r.Kind, r.CertSerial, orDash(r.ErrorCode),
				r.By, orDash(r.SignerSerial), orDash(who), r.RequesterAddr)
		}
		return tw.Flush()
	case "show":
		serial, err := needArg("serial number")
		if err != nil {
			return err
		}
		c, err := auth.Certificate(ctx, serial)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		row := func(k, v string) { fmt.Fprintf(tw, "%s:\t%s\n", k, v) }
		row("Serial", c.Serial)
		row("Subject", c.Subject)
		row("Issuer", c.Issuer)
		row("Validity", c.NotBefore.Format(time.RFC3339)+" – "+c.NotAfter.Format(time.RFC3339))
		row("Profile", orDash(c.Label))
		row("Requested", fmt.Sprintf("%s via %s/%s at %s", c.Op, c.Protocol, c.Transport, c.IssuedAt.Format(time.RFC3339)))
		row("Requester", strings.TrimSpace(fmt.Sprintf("%s %s", orDash(c.RequesterSubject), c.RequesterRef)))
		if c.RequesterSerial != "" {
			row("Requester cert", c.RequesterSerial+" issued by "+c.RequesterIssuer)
		}
		row("Address", orDash(c.RequesterAddr))
		if c.PendingID != "" {
			row("Approved request", c.PendingID)
		}
		if c.Revoked() {
			row("Revoked", fmt.Sprintf("%s (reason %d)", c.RevokedAt.Format(time.RFC3339), c.RevocationReason))
		}
		tw.Flush()
		return pem.Encode(stdout, &pem.Block{Type: "CERTIFICATE", Bytes: c.DER})
	case "revoke":
		serial, err := needArg("serial number")
		if err != nil {
			return err
		}
		if err := auth.Revoke(ctx, serial, *reason); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "revoked %s (reason %d)\n", serial, *reason)
		return nil
	case "pending":
		f := authority.PendingFilter{Status: authority.StatusPending, Limit: *limit}
		if *all {
			f.Status = authority.StatusUnknown // every status
		}
		ps, err := auth.ListPending(ctx, f)
		if err != nil {
			return err
		}
		tw := tabwriter.NewWriter(stdout, 2, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tSTATUS\tSUBJECT\tLABEL\tREQUESTER\tVIA\tCREATED")
		for _, p := range ps {
			req := p.RequesterSubject
			if req == "" {
				req = p.RequesterRef
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s/%s %s\t%s\n", p.ID, p.Status, p.Subject, orDash(p.Label), orDash(req),
				p.Protocol, p.Transport, p.Op, p.CreatedAt.Format(time.RFC3339))
		}
		return tw.Flush()
	case "approve":
		id, err := needArg("request ID")
		if err != nil {
			return err
		}
		if err := auth.Approve(ctx, id); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "approved %s: the device gets its certificate on its next retry\n", id)
		return nil
	case "reject":
		id, err := needArg("request ID")
		if err != nil {
			return err
		}
		if err := auth.Reject(ctx, id, *why); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "rejected %s\n", id)
		return nil
	case "backup":
		file, err := needArg("backup file name")
		if err != nil {
			return err
		}
		if err := h.Backup(ctx, file); err != nil {
			return err
		}
		fmt.Fprintf(stdout, "backed up the database to %s\n", file)
		return nil
	case "check":
		if err := h.Check(ctx); err != nil {
			return err
		}
		fmt.Fprintln(stdout, "database ok")
		return nil
	case "crl":
		crl, err := auth.CRL(ctx)
		if err != nil {
			return err
		}
		if *der {
			_, err = stdout.Write(crl)
			return err
		}
		return pem.Encode(stdout, &pem.Block{Type: "X509 CRL", Bytes: crl})
	}
	return nil
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
