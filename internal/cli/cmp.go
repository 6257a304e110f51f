package cli

import (
	"context"
	"errors"
	"io"
)

// TODO(issue 4): the CMP front doors and client are being written; this file is replaced.

// registerCMP registers the CMP front doors (RFC 9482 on s.secureMux and s.plainMux, RFC 9811
// on s.httpMux).
func (s *server) registerCMP(ctx context.Context) error { return nil }

func runCMP(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("the CMP client is not available yet")
}
