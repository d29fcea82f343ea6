#!/usr/bin/env bash
# The benchmark command (docs/performance.md, "Running the benchmark"):
#   scripts/bench.sh
# Starts PostgreSQL if it is down and a single-node Apache Kafka of its own
# (scripts/services.sh, fresh data, free ports, stopped at exit), builds the release
# binary, runs `cargo bench --bench pipeline` (benches/pipeline/) and prints its table;
# the JSON report goes to target/bench/report.json, the service logs to
# target/bench/logs. Settings are BENCH_* environment variables (docs/performance.md). Smoke mode,
# for CI:
#   BENCH_EVENTS=3000 BENCH_HTTP_SECONDS=2 BENCH_GROWTH_CONTACTS=20000 scripts/bench.sh
# Exits non-zero when a correctness check fails; never because of a timing.
# BENCH_PROFILE=dev builds the unoptimised binaries instead of release ones: CI's smoke
# run uses it to share one build with the tests; its figures mean nothing.
#
# With KAFKA_BROKERS set, that broker is used instead, and DATABASE_URL likewise. A
# broker of its own means the measurement neither shares a broker with tests running
# meanwhile nor depends on how much data an older broker has accumulated.
set -euo pipefail
cd "$(dirname "$0")/.."

given_database_url=${DATABASE_URL:-}
if [ -z "${KAFKA_BROKERS:-}" ]; then
  export IR_SERVICES_DIR="$PWD/target/services/bench"
  trap 'scripts/services.sh stop' EXIT
  eval "$(scripts/services.sh start)"
fi
# A DATABASE_URL given by the caller wins over the local server's.
DATABASE_URL=${given_database_url:-${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}
export DATABASE_URL KAFKA_BROKERS
echo "bench: DATABASE_URL=$DATABASE_URL KAFKA_BROKERS=$KAFKA_BROKERS" >&2

# The worker and the sidecar are measured as the release binary, in child processes.
profile=${BENCH_PROFILE:-release}
cargo build --profile "$profile" --bin identity-reconciler
cargo bench --profile "$profile" --bench pipeline
