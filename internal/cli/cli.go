// Package cli implements the coapca command line: one file per subcommand, with its flags, its
// dispatch and its printing. `serve` and `ca` run the house that internal/server wires together
// (front doors → services → authority → store); the client commands sit on the client library;
// `bench` runs internal/bench.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"coapca/internal/config"
)

// Version is the program version, printed by `coapca version`.
const Version = "0.1.0-dev"

const usage = `coapca — certificate authority, registration authority and client for constrained devices

Usage:
  coapca serve [flags]              run the server (EST-coaps on :5684, EST-oscore and CMP on :5683)
  coapca init [flags]               write a production configuration and create its CA (key custody)
  coapca est COMMAND [flags]        EST client: cacerts | enroll | reenroll | csrattrs | serverkeygen
  coapca cmp COMMAND [flags]        CMP client: ir | cr | p10cr | kur | rr | genm
  coapca ca COMMAND [flags]         manage the CA: list | show | revoke | approve | reject | pending | crl
  coapca bench COMMAND [flags]      measurements next to floors of the same run: est | cmp | coap | registrar | sessions | soak | compare
  coapca as --config FILE           run an ACE authorization server (RFC 9200, RFC 9203)
  coapca version                    print the version

Run 'coapca COMMAND -h' for the flags of a command.
First steps: 'coapca serve' creates ./coapca-data with a dev CA and a demo device and prints how
to enroll it.
`

// Main runs the command line args and returns the process exit code.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	var err error
	switch args[0] {
	case "serve":
		err = runServe(ctx, args[1:], stdout, stderr)
	case "init":
		err = runInit(ctx, args[1:], stdout, stderr)
	case "est":
		err = runEST(ctx, args[1:], stdout, stderr)
	case "ca":
		err = runCA(ctx, args[1:], stdout, stderr)
	case "cmp":
		err = runCMP(ctx, args[1:], stdout, stderr)
	case "bench":
		err = runBench(ctx, args[1:], stdout, stderr)
	case "as":
		err = runAS(ctx, args[1:], stdout, stderr)
	case "version", "--version", "-version":
		fmt.Fprintln(stdout, "coapca", Version)
	case "help", "-h", "--help":
		fmt.Fprint(stdout, usage)
	default:
		fmt.Fprintf(stderr, "coapca: unknown command %q\n\n%s", args[0], usage)
		return 2
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		var ue usageError
		if errors.As(err, &ue) {
			fmt.Fprintf(stderr, "coapca %s: %v\n", args[0], err)
			return 2
		}
		fmt.Fprintf(stderr, "coapca %s: %v\n", args[0], err)
		return 1
	}
	return 0
}

// usageError marks an error in the command line itself (exit code 2).
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// newFlagSet returns a FlagSet that prints its usage (with a one-paragraph description) to w.
func newFlagSet(name, synopsis, description string, w io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(w)
	fs.Usage = func() {
		fmt.Fprintf(w, "Usage: %s\n\n%s\n\nFlags:\n", synopsis, strings.TrimSpace(description))
		fs.PrintDefaults()
	}
	return fs
}

// stringList is a repeatable string flag.
type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

// newLogger returns a text logger at the given level.
func newLogger(w io.Writer, level string) (*slog.Logger, error) {
	return newLoggerFormat(w, level, "text")
}

// newLoggerFormat returns the process logger: text or json at the given level.
func newLoggerFormat(w io.Writer, level, format string) (*slog.Logger, error) {
	var l slog.Level
	if err := l.UnmarshalText([]byte(level)); err != nil {
		return nil, usagef("bad log level %q (debug, info, warn, error)", level)
	}
	opts := &slog.HandlerOptions{Level: l}
	switch format {
	case "", "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	}
	return nil, usagef("bad log format %q (text, json)", format)
}

// loadConfig reads --config (or the defaults) and applies --data when given.
func loadConfig(path, data string) (config.Config, error) {
	cfg := config.Default()
	if path != "" {
		var err error
		if cfg, err = config.Load(path); err != nil {
			return cfg, err
		}
	}
	if data != "" {
		cfg.Data = data
	}
	return cfg, nil
}

// storeFlagHelp documents --store of serve and ca.
const storeFlagHelp = "database: \"sqlite\" (DATA/coapca.db) or a PostgreSQL URL postgres://USER@HOST:PORT/DB?sslmode=… (overrides the config's store)"

// applyStoreFlag applies --store over the configuration's store section.
func applyStoreFlag(cfg *config.Config, v string) error {
	switch {
	case v == "":
	case v == config.DriverSQLite:
		cfg.Store = config.Store{Driver: config.DriverSQLite}
	case strings.HasPrefix(v, "postgres://") || strings.HasPrefix(v, "postgresql://"):
		cfg.Store = config.Store{Driver: config.DriverPostgres, DSN: v}
	default:
		return usagef("--store takes \"sqlite\" or a postgres:// URL, not %q", v)
	}
	return nil
}

// subcommand picks the command of `coapca GROUP COMMAND …`: help (or nothing) prints usage;
// an unknown command is a usage error. It returns "" when the caller should return err as is.
func subcommand(group string, args []string, usage string, stdout io.Writer, valid ...string) (string, error) {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, usage)
		if len(args) == 0 {
			return "", usagef("a command is required")
		}
		return "", nil
	}
	if !slices.Contains(valid, args[0]) {
		return "", usagef("unknown %s command %q (see 'coapca %s help')", group, args[0], group)
	}
	return args[0], nil
}

// parseInterspersed parses flags that may come before or after positional arguments
// ("ca approve ID --data DIR") and returns the positional ones.
func parseInterspersed(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}
