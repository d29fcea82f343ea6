#!/usr/bin/env bash
# The test command (README, "Test it"): installs and starts what the tests need, on a
# fresh machine too, then runs every test against it.
#   scripts/test.sh [extra arguments for the test runner of the main group]
#
# Two groups, each against services of its own (scripts/services.sh, fresh data):
#   1. the broker-fault tests (tests/kafka_cluster.rs) on a three-node Apache Kafka
#      cluster, one at a time, since they stop and kill its nodes;
#   2. everything else on PostgreSQL and a single-node Apache Kafka, in parallel.
# The summary of group 2 closes the log; the exit code is non-zero if any test of
# either group failed. IR_TEST_GROUPS=main (or cluster) runs one group only.
set -euo pipefail
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}
groups=${IR_TEST_GROUPS:-cluster main}
services_root="$PWD/target/services"
started=()
stop_services() {
  local dir
  for dir in "${started[@]}"; do IR_SERVICES_DIR="$dir" scripts/services.sh stop || true; done
}
trap stop_services EXIT

# Starts services in their own state directory and exports their environment.
start_services() {
  local dir="$services_root/$1"
  shift
  started+=("$dir")
  local began=$SECONDS
  eval "$(IR_SERVICES_DIR="$dir" scripts/services.sh start "$@")"
  export DATABASE_URL KAFKA_BROKERS IR_SERVICES_DIR
  echo "test: services ($*) up in $((SECONDS - began)) s: DATABASE_URL=$DATABASE_URL KAFKA_BROKERS=$KAFKA_BROKERS"
}

if ! cargo nextest --version >/dev/null 2>&1; then
  # One process per test (the tests start services and processes of their own, and
  # the metrics registry is per process). Built once, then cached in ~/.cargo/bin.
  echo "test: installing cargo-nextest (first time only)"
  cargo install cargo-nextest --locked --quiet || echo "test: cargo-nextest did not install; using cargo test"
fi
nextest() { cargo nextest --version >/dev/null 2>&1; }

began=$SECONDS
cargo build --tests --locked
echo "test: tests built in $((SECONDS - began)) s"

failed=0
for group in $groups; do
  began=$SECONDS
  case "$group" in
    cluster)
      start_services cluster --kafka-nodes 3
      if nextest; then
        cargo nextest run --test kafka_cluster --run-ignored only --test-threads 1 --no-fail-fast || failed=1
      else
        cargo test --test kafka_cluster -- --ignored --test-threads=1 || failed=1
      fi
      IR_SERVICES_DIR="$services_root/cluster" scripts/services.sh stop
      echo "test: group cluster took $((SECONDS - began)) s"
      ;;
    main)
      start_services main
      # The query macros' metadata (.sqlx/) must match the code and the migrations.
      scripts/sqlx-prepare.sh --check || failed=1
      # The sidecar against its own OpenAPI document (bounded: a few minutes).
      SCHEMATHESIS_MAX_EXAMPLES=${SCHEMATHESIS_MAX_EXAMPLES:-30} \
        SCHEMATHESIS_MAX_TIME=${SCHEMATHESIS_MAX_TIME:-120} scripts/schemathesis.sh || failed=1
      if nextest; then
        # nextest does not run doc tests: run them first, so the summary of the
        # suite is the last thing printed.
        cargo test --workspace --doc
        cargo nextest run --workspace --no-fail-fast "$@" || failed=1
      else
        cargo test --workspace --no-fail-fast "$@" || failed=1
      fi
      ;;
    *) echo "test: unknown group $group" >&2; exit 2 ;;
  esac
done
exit "$failed"
