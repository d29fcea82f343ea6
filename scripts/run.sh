#!/usr/bin/env bash
# The quick start (README): makes sure a local PostgreSQL runs (installing it from
# Debian's packages on a machine that has none, see scripts/services.sh), then runs
# the main job with the embedded in-memory Kafka cluster unless KAFKA_BROKERS is set:
#   scripts/run.sh [more arguments for `run`]
# On a machine that already has PostgreSQL, `cargo run --release -- run` is the same.
set -euo pipefail
cd "$(dirname "$0")/.."
IR_SERVICES_DIR="$PWD/target/services/run" scripts/services.sh postgres
exec cargo run --release -- run "$@"
