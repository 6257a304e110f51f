package cli

import (
	"context"
	"fmt"
	"io"

	"coapca/internal/server"
)

const asDescription = `Run an ACE authorization server (RFC 9200) for the OSCORE profile (RFC 9203).

Clients registered in the YAML file of --config (docs/ace.md) ask for access tokens at /token
over OSCORE, each with its own OSCORE context; the AS checks the audience and scope they may ask
for and answers with a CWT protected with the audience's key (COSE_Encrypt0, COSE_Mac0 or
COSE_Sign1) and the OSCORE input material. A 'coapca serve' with an ace section holding the same
key accepts the tokens at /authz-info, and 'coapca est --ace' runs the whole flow.`

func runAS(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("as", "coapca as --config FILE [flags]", asDescription, stderr)
	cfgPath := fs.String("config", "", "YAML file of the authorization server (docs/ace.md; required)")
	listen := fs.String("listen", "", "coap:// listen address of /token (overrides the file's listen)")
	logLevel := fs.String("log-level", "info", "debug, info, warn or error")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return usagef("unexpected argument %q", fs.Arg(0))
	}
	if *cfgPath == "" {
		return usagef("--config is required")
	}
	cfg, err := server.LoadASConfig(*cfgPath)
	if err != nil {
		return err
	}
	if *listen != "" {
		cfg.Listen = *listen
	}
	log, err := newLogger(stderr, *logLevel)
	if err != nil {
		return err
	}
	as, err := server.StartAS(ctx, cfg, log)
	if err != nil {
		return err
	}
	defer as.Close()
	fmt.Fprintf(stdout, "coapca as: token endpoint coap://%s/token\n", as.Addr())
	<-ctx.Done()
	return nil
}
