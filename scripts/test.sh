#!/usr/bin/env bash
# The test command: starts PostgreSQL (if down) and a local Kafka-compatible broker
# (tansu, installed on first use), then runs every test against them.
#   scripts/test.sh [extra arguments for the test runner]
set -euo pipefail
cd "$(dirname "$0")/.."

# A broker of its own for this run: fresh data, a free port, stopped on exit, so a
# broker left over from development (or broken by an earlier run) is never reused.
TANSU_DIR="$(mktemp -d "${TMPDIR:-/tmp}/identity-reconciler-tansu.XXXXXX")"
TANSU_PORT="$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
export TANSU_DIR TANSU_PORT
trap 'scripts/services.sh stop; rm -rf "$TANSU_DIR"' EXIT
eval "$(scripts/services.sh start)"
export DATABASE_URL KAFKA_BROKERS
echo "test: DATABASE_URL=$DATABASE_URL KAFKA_BROKERS=$KAFKA_BROKERS"

if cargo nextest --version >/dev/null 2>&1; then
  # nextest does not run doc tests: run them first, so the summary of the whole suite
  # is the last thing printed.
  cargo test --workspace --doc
  # One process per test: the tests start services and processes of their own.
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi
