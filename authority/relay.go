package authority

import (
	"context"

	"coapca/errs"
)

// AuthorizeRelay decides whether a registration authority in front of another CA (coapca's
// CMP registrar in RA mode, RFC 9483 §5) may forward a request of req under label with its own
// protection. RFC 9483 §5.2.3.1: before an RA replaces the protection of a request it MUST
// validate the original protection and check that the requester is authorized; the upstream CA
// then sees only the RA, so this is the one place where the device is judged.
//
// The matrix of docs/security.md: the requester must authenticate (errs.Unauthorized
// otherwise) and must have standing under the label: a requester rule of the label's profile
// that admits it (any kind: idevid, ldevid, mac, preshared, ra, user), or a certificate this
// CA issued under that label (errs.Forbidden otherwise). An unknown label is errs.NotFound.
// What the upstream CA then issues, renews or revokes is the upstream's decision.
func (a *Authority) AuthorizeRelay(ctx context.Context, req Requester, label string) error {
	p, ok := a.profiles[label]
	if !ok {
		return errs.New(errs.NotFound, "unknown label %q", label)
	}
	who, err := a.authenticateRequester(ctx, req)
	if err != nil {
		return err
	}
	if who.ours != nil && who.ours.Label == label {
		return nil
	}
	if a.match(p, req.Transport, who) != nil {
		return nil
	}
	a.log.Info("relay refused", "label", label, "requester", who.describe(), "transport", req.Transport, "addr", req.Addr)
	return errs.New(errs.Forbidden, "%s may not send CMP requests under label %q", who.describe(), label)
}
