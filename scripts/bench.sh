#!/usr/bin/env bash
# The benchmark command (README, "Performance"):
#   scripts/bench.sh
# Starts PostgreSQL if it is down and a private broker, builds the release binary,
# runs `cargo bench --bench pipeline` (benches/pipeline/) and prints its table; the
# JSON report goes to target/bench/report.json, the service logs to target/bench/logs.
# Settings are BENCH_* environment variables (README). Smoke mode, for CI:
#   BENCH_EVENTS=3000 BENCH_HTTP_SECONDS=2 BENCH_GROWTH_CONTACTS=20000 scripts/bench.sh
# Exits non-zero when a correctness check fails; never because of a timing.
#
# With KAFKA_BROKERS set, that broker is used. Otherwise a tansu of its own, on a free
# port with an empty data directory (target/bench/tansu), stopped at exit: the
# measurement neither shares a broker with tests running meanwhile nor depends on how
# much data an older broker has accumulated.
set -euo pipefail
cd "$(dirname "$0")/.."

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

stop_broker() {
  scripts/services.sh stop
  # tansu takes a moment to shut down; let it finish before we exit.
  for _ in $(seq 1 50); do
    port_open "$TANSU_PORT" || return 0
    sleep 0.2
  done
  echo "bench: the broker on port $TANSU_PORT did not stop" >&2
}

given_database_url=${DATABASE_URL:-}
if [ -z "${KAFKA_BROKERS:-}" ]; then
  export TANSU_PORT=${BENCH_TANSU_PORT:-19093}
  while port_open "$TANSU_PORT"; do TANSU_PORT=$((TANSU_PORT + 1)); done
  export TANSU_DIR="$PWD/target/bench/tansu"
  rm -rf "$TANSU_DIR"
  trap stop_broker EXIT
  eval "$(scripts/services.sh start)"
fi
# A DATABASE_URL given by the caller wins over the local server's.
DATABASE_URL=${given_database_url:-${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}}
export DATABASE_URL KAFKA_BROKERS
echo "bench: DATABASE_URL=$DATABASE_URL KAFKA_BROKERS=$KAFKA_BROKERS" >&2

# The worker and the sidecar are measured as the release binary, in child processes.
cargo build --release --bin identity-reconciler
cargo bench --bench pipeline
