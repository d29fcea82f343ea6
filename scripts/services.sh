#!/usr/bin/env bash
# Local services for tests and development: PostgreSQL (must be installed) and a
# Kafka-compatible broker (tansu 0.6.0, installed from crates.io on first use and
# cached in ~/.cargo/bin).
#
#   scripts/services.sh start    start what is not running; prints the env to export
#   scripts/services.sh stop     stop the broker this script started
#   scripts/services.sh env      print DATABASE_URL and KAFKA_BROKERS
#
# Settings: TANSU_PORT (default 19092), TANSU_DIR (default ~/.cache/identity-reconciler),
# PG_URL (default postgres://postgres@127.0.0.1:5432/postgres).
set -euo pipefail

TANSU_VERSION=0.6.0
TANSU_PORT=${TANSU_PORT:-19092}
TANSU_DIR=${TANSU_DIR:-$HOME/.cache/identity-reconciler}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:5432/postgres}
export PATH="$HOME/.cargo/bin:$PATH"

log() { echo "services: $*" >&2; }

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

wait_for_port() {
  local port=$1 what=$2
  for _ in $(seq 1 150); do
    port_open "$port" && return 0
    sleep 0.2
  done
  log "$what did not open port $port"; return 1
}

ensure_postgres() {
  if pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then return 0; fi
  if command -v pg_ctlcluster >/dev/null && [ -d /etc/postgresql ]; then
    log "starting PostgreSQL"
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n1)" main start
  fi
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && return 0; sleep 0.2; done
  log "PostgreSQL is not reachable on 127.0.0.1:5432"; return 1
}

ensure_tansu() {
  if command -v tansu >/dev/null && tansu --version 2>/dev/null | grep -q "$TANSU_VERSION"; then return 0; fi
  log "installing tansu $TANSU_VERSION (first time only; takes several minutes)"
  cargo install "tansu@$TANSU_VERSION" --locked --features dynostore,libsql >&2
}

start_tansu() {
  if port_open "$TANSU_PORT"; then return 0; fi
  ensure_tansu
  mkdir -p "$TANSU_DIR"
  log "starting tansu on 127.0.0.1:$TANSU_PORT (data: $TANSU_DIR/tansu.db)"
  # The broker outlives this script (stop it with `stop`). The sqlite path is relative
  # to the working directory. The whole subshell's output goes to the log, so that
  # `$(services.sh start)` does not wait for the broker.
  (
    cd "$TANSU_DIR" || exit 1
    exec tansu broker \
      --listener-url "tcp://127.0.0.1:$TANSU_PORT" \
      --advertised-listener-url "tcp://127.0.0.1:$TANSU_PORT" \
      --storage-engine "sqlite://tansu.db"
  ) >"$TANSU_DIR/tansu.log" 2>&1 </dev/null &
  echo $! >"$TANSU_DIR/tansu.pid"
  wait_for_port "$TANSU_PORT" tansu
}

print_env() {
  echo "export DATABASE_URL=$PG_URL"
  echo "export KAFKA_BROKERS=127.0.0.1:$TANSU_PORT"
}

case "${1:-start}" in
  start) ensure_postgres; start_tansu; print_env ;;
  stop)
    if [ -f "$TANSU_DIR/tansu.pid" ]; then kill "$(cat "$TANSU_DIR/tansu.pid")" 2>/dev/null || true; rm -f "$TANSU_DIR/tansu.pid"; fi ;;
  env) print_env ;;
  *) echo "usage: $0 start|stop|env" >&2; exit 2 ;;
esac
