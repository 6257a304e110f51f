// Command coapca is a certificate authority, registration authority and client for constrained
// devices: EST over CoAP/DTLS (RFC 9148), EST-oscore, CMP over CoAP and HTTP (RFC 9482, RFC 9811).
//
// Run `coapca help` for the commands.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"coapca/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	go func() {
		// After the first signal (a graceful stop begins), a second one ends the process at once.
		<-ctx.Done()
		stop()
	}()
	code := cli.Main(ctx, os.Args[1:], os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
