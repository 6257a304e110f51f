package cli

import (
	"context"
	"errors"
	"io"
)

// TODO(issue 4): the CMP front doors and client are being written; this file is replaced.

func runCMP(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return errors.New("the CMP client is not available yet")
}
