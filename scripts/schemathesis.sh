#!/usr/bin/env bash
# Fuzzes the HTTP sidecar against its own OpenAPI document with schemathesis, all
# checks, twice: without tokens, and with an API token and an admin token (passed to
# schemathesis with -H). Exits non-zero on any finding.
#
#   DATABASE_URL=postgres://postgres@127.0.0.1:5432/postgres scripts/schemathesis.sh
#
# DATABASE_URL names a PostgreSQL server; each run gets a scratch database of its own
# on it, dropped afterwards. schemathesis comes from PyPI into a virtualenv under
# target/ (kept between runs). Bounds: SCHEMATHESIS_MAX_EXAMPLES (default 40) test
# cases per operation and phase, SCHEMATHESIS_MAX_TIME (default 300) seconds per run.
set -euo pipefail
cd "$(dirname "$0")/.."

: "${DATABASE_URL:?set DATABASE_URL, e.g. postgres://postgres@127.0.0.1:5432/postgres}"
MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-40}
MAX_TIME=${SCHEMATHESIS_MAX_TIME:-300}
SCHEMATHESIS_VERSION=${SCHEMATHESIS_VERSION:-4.32.5}
VENV=target/schemathesis-venv

if [ "$("$VENV/bin/st" --version 2>/dev/null || true)" != "st, version $SCHEMATHESIS_VERSION" ]; then
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet "schemathesis==$SCHEMATHESIS_VERSION"
fi
cargo build --quiet --bin identity-reconciler
BIN=target/debug/identity-reconciler

# URL of database $1 on the server of DATABASE_URL.
database_url() {
    python3 -c 'import sys, urllib.parse as u; p = u.urlsplit(sys.argv[1]); print(u.urlunsplit(p._replace(path="/" + sys.argv[2])))' "$DATABASE_URL" "$1"
}
free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

SERVER_PID=
cleanup() {
    if [ -n "$SERVER_PID" ]; then kill "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; fi
    SERVER_PID=
}
trap cleanup EXIT

# run NAME API_TOKEN ADMIN_TOKEN
run() {
    local name=$1 api=$2 admin=$3
    local db="ir_schemathesis_$$_$name" port log headers=()
    port=$(free_port)
    log=target/schemathesis-$name.log
    DATABASE_URL=$(database_url "$db") HTTP_ADDR=127.0.0.1:$port \
        IR__HTTP__AUTH_TOKEN=$api IR__HTTP__ADMIN_TOKEN=$admin RUST_LOG=warn \
        "$BIN" http >"$log" 2>&1 &
    SERVER_PID=$!
    local base=http://127.0.0.1:$port
    for _ in $(seq 1 120); do
        if curl -fsS "$base/healthz" >/dev/null 2>&1; then break; fi
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then cat "$log"; echo "the sidecar did not start" >&2; return 1; fi
        sleep 0.5
    done
    # One token per run: with both configured, the admin token opens the admin routes
    # and the API token the others; schemathesis sends one Authorization header, so
    # the API routes are fuzzed with the API token and the admin routes separately.
    local status=0
    echo "== schemathesis: $name"
    if [ -n "$api" ]; then
        "$VENV/bin/st" --config-file scripts/schemathesis.toml run "$base/openapi.json" --checks all --max-examples "$MAX_EXAMPLES" \
            --max-time "$MAX_TIME" --workers 1 --seed 14 --exclude-tag admin \
            -H "Authorization: Bearer $api" || status=$?
        "$VENV/bin/st" --config-file scripts/schemathesis.toml run "$base/openapi.json" --checks all --max-examples "$MAX_EXAMPLES" \
            --max-time "$MAX_TIME" --workers 1 --seed 14 --include-tag admin \
            -H "Authorization: Bearer $admin" || status=$?
    else
        # Without an admin token the admin routes are off (403 admin_disabled, by
        # contract, whatever the request): nothing to fuzz there.
        "$VENV/bin/st" --config-file scripts/schemathesis.toml run "$base/openapi.json" --checks all --max-examples "$MAX_EXAMPLES" \
            --max-time "$MAX_TIME" --workers 1 --seed 14 --exclude-tag admin || status=$?
    fi
    cleanup
    psql "$DATABASE_URL" -qc "DROP DATABASE IF EXISTS \"$db\" WITH (FORCE)" >/dev/null || true
    return "$status"
}

failed=0
run open "" "" || failed=1
run tokens "st-api-token" "st-admin-token" || failed=1
exit "$failed"
