package cmpserver

import (
	"coapca/cmp"
	"coapca/errs"
)

// failInfoByKind is the CMP binding's one table from the typed errors of coapca/errs to
// PKIFailureInfo (RFC 9810 §5.2.3, RFC 9483 §3.6.4), for errors that do not name their bits
// explicitly (cmp.WithFailInfo). It is indexed by kind; TestFailInfoTableComplete fails when errs
// gains a kind that is missing here (errs.TableComplete).
var failInfoByKind = [errs.NumKinds]cmp.FailureInfo{
	errs.Internal:          cmp.FailSystemFailure,
	errs.BadRequest:        cmp.FailBadRequest,
	errs.Unauthorized:      cmp.FailSignerNotTrusted,
	errs.Forbidden:         cmp.FailNotAuthorized,
	errs.NotFound:          cmp.FailBadCertTemplate, // unknown profile/label or certificate
	errs.NotAcceptable:     cmp.FailBadRequest,
	errs.UnsupportedFormat: cmp.FailBadDataFormat,
	errs.TooLarge:          cmp.FailBadRequest,
	errs.Pending:           0, // not a failure: status waiting
	errs.Unavailable:       cmp.FailSystemUnavail,
	errs.Conflict:          cmp.FailCertRevoked, // e.g. revoking an already revoked certificate
	errs.BadGateway:        cmp.FailSystemUnavail,
	errs.GatewayTimeout:    cmp.FailSystemUnavail,
}

// failInfoOf returns the failure bits for err: explicit ones, else the kind's.
func failInfoOf(err error) cmp.FailureInfo {
	if f := cmp.FailInfoOf(err); f != 0 {
		return f
	}
	if k := errs.KindOf(err); k.Valid() && failInfoByKind[k] != 0 {
		return failInfoByKind[k]
	}
	return cmp.FailSystemFailure
}

// statusText is the statusString the peer gets for err: the client-visible message, except
// that an internal error reaches the peer only as its kind (the detail goes to the log).
func statusText(err error) string {
	if k := errs.KindOf(err); k == errs.Internal {
		return k.String()
	}
	return errs.Message(err)
}

// statusFromError turns an error into a PKIStatusInfo: waiting for errs.Pending, else
// rejection with the failure bits of failInfoOf.
func statusFromError(err error) cmp.StatusInfo {
	if errs.KindOf(err) == errs.Pending {
		return cmp.StatusInfo{Status: cmp.StatusWaiting, StatusString: []string{statusText(err)}}
	}
	return cmp.StatusInfo{Status: cmp.StatusRejection, StatusString: []string{statusText(err)}, FailInfo: failInfoOf(err)}
}

// errorBody returns an error [23] body for err (RFC 9810 §5.3.21).
func errorBody(err error) *cmp.ErrorContent {
	st := statusFromError(err)
	if st.Status == cmp.StatusWaiting {
		st = cmp.StatusInfo{Status: cmp.StatusRejection, StatusString: st.StatusString, FailInfo: cmp.FailSystemUnavail}
	}
	return &cmp.ErrorContent{Status: st}
}
