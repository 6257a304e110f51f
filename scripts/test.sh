#!/usr/bin/env bash
# Runs every test of coapca: static checks, unit and loopback integration tests, interop tests
# against real peers (libcoap's coap-client, openssl, curl, strongSwan pki, globalsign/est, Bouncy
# Castle), and a short smoke run of every fuzz target.
# Installs the test peers it needs (Debian packages) when they are missing.
#
#   ./scripts/test.sh            everything (what CI runs)
#   FUZZTIME=30s ./scripts/test.sh   longer fuzz smoke runs
set -euo pipefail
cd "$(dirname "$0")/.."

FUZZTIME=${FUZZTIME:-4s}
step() { printf '\n==> %s\n' "$*"; }

# --- test peers -------------------------------------------------------------------------------
need=()
command -v coap-client-openssl >/dev/null || need+=(libcoap3-bin)
command -v openssl >/dev/null || need+=(openssl)
command -v curl >/dev/null || need+=(curl)
command -v gcc >/dev/null || need+=(gcc)
[ -f /usr/include/openssl/ssl.h ] || need+=(libssl-dev)
[ -f /usr/include/gnutls/gnutls.h ] || need+=(libgnutls28-dev)
command -v unshare >/dev/null || need+=(util-linux)
command -v ip >/dev/null || need+=(iproute2)
# EST over HTTPS peers (internal/cli/est_https_interop_test.go): strongSwan's pki --est needs the
# curl fetcher of the extra plugins; Bouncy Castle's EST client runs on Debian's OpenJDK.
command -v pki >/dev/null || need+=(strongswan-pki)
[ -f /usr/lib/ipsec/plugins/libstrongswan-curl.so ] || need+=(libstrongswan-extra-plugins)
command -v javac >/dev/null || need+=(default-jdk-headless)
# PostgreSQL for store/postgres and the several-instances test (a throwaway cluster below).
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
# PKCS#11 CA keys (kms/pkcs11, -tags pkcs11) are tested against SoftHSM2.
[ -f /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null || need+=(softhsm2)
for j in bcprov bcpkix bcutil bctls; do
	[ -f /usr/share/java/$j.jar ] || need+=(lib$j-java)
done
# ACE access tokens (ace/interop_test.go): cose-js from npm, an independent COSE implementation.
command -v node >/dev/null || need+=(nodejs)
command -v npm >/dev/null || need+=(npm)
if [ ${#need[@]} -gt 0 ]; then
	step "installing test peers: ${need[*]}"
	SUDO=""
	[ "$(id -u)" -eq 0 ] || SUDO="sudo"
	$SUDO apt-get update -qq
	DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${need[@]}" >/dev/null
fi

# Everything started or created below is removed at exit.
cleanup_files=()
pg_dir=""
cleanup() {
	if [ -n "$pg_dir" ]; then
		$pg_as "$pg_bin/pg_ctl" -D "$pg_dir/data" -m fast -w stop >/dev/null 2>&1 || true
		rm -rf "$pg_dir"
	fi
	[ ${#cleanup_files[@]} -eq 0 ] || rm -f "${cleanup_files[@]}"
}
trap cleanup EXIT

# --- a throwaway PostgreSQL cluster -------------------------------------------------------------
# The PostgreSQL tests (store/postgres, internal/server) read its DSN from COAPCA_TEST_POSTGRES;
# they fail under CI=true without one. initdb refuses root, so as root the cluster runs as the
# unprivileged postgres user. It listens only on a Unix socket in its own temp directory: no
# port to collide with another run.
if [ -z "${COAPCA_TEST_POSTGRES:-}" ]; then
	step "starting a throwaway PostgreSQL cluster"
	pg_bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
	pg_as=""
	pg_dir=$(mktemp -d)
	if [ "$(id -u)" -eq 0 ]; then
		pg_as="runuser -u postgres --"
		chown postgres "$pg_dir"
	fi
	chmod 0755 "$pg_dir"
	if ! test -c /dev/null; then
		echo "/dev/null is not the null device (a test replaced it?); as root: rm -f /dev/null && mknod -m 666 /dev/null c 1 3"
		exit 1
	fi
	$pg_as "$pg_bin/initdb" -D "$pg_dir/data" -A trust -U coapca >"$pg_dir/initdb.log" 2>&1 ||
		{ cat "$pg_dir/initdb.log"; exit 1; }
	$pg_as "$pg_bin/pg_ctl" -D "$pg_dir/data" -l "$pg_dir/log" -w \
		-o "-k $pg_dir -c listen_addresses='' -c max_connections=300 -c fsync=off" start >/dev/null ||
		{ cat "$pg_dir/log"; exit 1; }
	export COAPCA_TEST_POSTGRES="postgres://coapca@/postgres?host=$pg_dir&port=5432"
	echo "COAPCA_TEST_POSTGRES=$COAPCA_TEST_POSTGRES"
fi

export COAPCA_COSEJS_DIR=${COAPCA_COSEJS_DIR:-/var/cache/coapca/cose-js}
if [ ! -f "$COAPCA_COSEJS_DIR/node_modules/cose-js/package.json" ]; then
	step "installing cose-js (npm) into $COAPCA_COSEJS_DIR"
	mkdir -p "$COAPCA_COSEJS_DIR"
	npm install --prefix "$COAPCA_COSEJS_DIR" --no-audit --no-fund --silent cose-js@0.9.0
fi

# --- static checks ----------------------------------------------------------------------------
step "gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
	echo "gofmt would change:"; echo "$unformatted"; exit 1
fi
step "go vet"
go vet ./...
go vet -tags pkcs11 ./kms/... ./internal/...
step "staticcheck"
# A tool dependency in go.mod (go get -tool): built from the module cache at the pinned
# version; under set -e a finding, or a tool that cannot be built, fails the run.
go tool staticcheck ./...
go tool staticcheck -tags pkcs11 ./kms/...

# --- both builds --------------------------------------------------------------------------------
step "builds: default (pure Go, CGO_ENABLED=0) and -tags pkcs11 (cgo, PKCS#11 CA keys)"
CGO_ENABLED=0 go build -o /dev/null ./cmd/coapca
CGO_ENABLED=1 go build -tags pkcs11 -o /dev/null ./cmd/coapca

# --- tests ------------------------------------------------------------------------------------
step "go test (unit, loopback integration, interop with libcoap and openssl)"
gotest_log=$(mktemp)
cleanup_files+=("$gotest_log")
# A test that fails by chance is fixed, never retried: one failure fails the run.
if ! go test -count=1 -timeout 20m ./... 2>&1 | tee "$gotest_log"; then
	echo "go test failed"
	exit 1
fi
passed=$(grep -c '^ok ' "$gotest_log" || true)
failed=0 # any failure has ended the script above

step "go test -tags pkcs11 (CA keys in a SoftHSM2 token; the tests that differ in that build)"
go test -count=1 -timeout 10m -tags pkcs11 ./kms/... ./internal/datadir/ ./internal/config/
go test -count=1 -timeout 10m -tags pkcs11 -run 'TestHSM|TestInit|TestServeValidates' ./internal/cli/

step "go test -race -short (the same tests under the race detector; -short skips the slow loss test)"
race_log=$(mktemp)
cleanup_files+=("$race_log")
if ! go test -race -short -count=1 -timeout 20m ./... >"$race_log" 2>&1; then
	cat "$race_log"
	echo "the race-detector pass failed"
	exit 1
fi
echo "race detector: $(grep -c '^ok ' "$race_log") packages clean"

# --- fuzz smoke -------------------------------------------------------------------------------
step "fuzz smoke: every fuzz target for $FUZZTIME"
fuzzed=0
fuzz_log=$(mktemp)
cleanup_files+=("$fuzz_log")
for pkg in $(go list ./...); do
	dir=$(go list -f '{{.Dir}}' "$pkg")
	grep -lq '^func Fuzz' "$dir"/*_test.go 2>/dev/null || continue
	for target in $(grep -ho '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | sed 's/^func //' | sort -u); do
		echo "fuzz $pkg $target"
		fuzzed=$((fuzzed + 1))
		corpus="$dir/testdata/fuzz/$target"
		before=$(ls "$corpus" 2>/dev/null | wc -l || true)
		if ! go test -run '^$' -fuzz "^${target}\$" -fuzztime "$FUZZTIME" "$pkg" >"$fuzz_log" 2>&1; then
			after=$(ls "$corpus" 2>/dev/null | wc -l || true)
			# Go 1.26's fuzz coordinator can report its own -fuzztime deadline as a failure
			# (golang/go#75804, fixed in Go 1.27): that has no crasher. A real failure writes one.
			if [ "$after" = "$before" ] && grep -q 'context deadline exceeded' "$fuzz_log"; then
				echo "  (go fuzz coordinator deadline race, golang/go#75804: no failing input; not a failure)"
				continue
			fi
			cat "$fuzz_log"
			exit 1
		fi
	done
done

step "all tests passed ($fuzzed fuzz targets smoke-tested)"
echo "packages: $passed passed, $failed failed"
