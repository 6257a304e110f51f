package cli

import (
	"context"
	"errors"
	"io"
)

// TODO(lead): replaced by serve.go, est.go, ca.go, bench.go in this session.
func runBench(context.Context, []string, io.Writer, io.Writer) error { return errors.New("not wired") }
