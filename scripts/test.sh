#!/usr/bin/env bash
# The test command: starts PostgreSQL (if down) and a local Kafka-compatible broker
# (tansu, installed on first use), then runs every test against them.
#   scripts/test.sh [extra arguments for the test runner]
set -euo pipefail
cd "$(dirname "$0")/.."

eval "$(scripts/services.sh start)"
export DATABASE_URL KAFKA_BROKERS
echo "test: DATABASE_URL=$DATABASE_URL KAFKA_BROKERS=$KAFKA_BROKERS"

if cargo nextest --version >/dev/null 2>&1; then
  # One process per test: the tests start services and processes of their own.
  cargo nextest run --workspace --no-fail-fast "$@"
  # nextest does not run doc tests.
  cargo test --workspace --doc
else
  cargo test --workspace --no-fail-fast "$@"
fi
