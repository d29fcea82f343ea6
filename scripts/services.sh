#!/usr/bin/env bash
# Local services for tests, the benchmark and development: PostgreSQL from Debian's
# packages and Apache Kafka (KRaft, broker + controller in each process) from Maven
# Central. Installs what is missing, on every fresh machine.
#
#   scripts/services.sh start [--kafka-nodes N]   start PostgreSQL (if down) and a fresh
#                                                 Kafka of N nodes (default 1); prints the
#                                                 `export …` lines to eval
#   scripts/services.sh stop                      stop exactly what `start` started
#   scripts/services.sh env                       print the `export …` lines again
#   scripts/services.sh postgres                  only make sure PostgreSQL runs (and
#                                                 leave it running)
#   scripts/services.sh node stop|kill|start ID…  stop (SIGTERM), kill -9 or restart
#                                                 Kafka nodes (for the fault tests)
#
# State (pids, configuration, data, logs) lives in $IR_SERVICES_DIR (default
# target/services); each `start` begins with an empty one, so no data survives from an
# earlier run. Broker logs: $IR_SERVICES_DIR/kafka-ID.log. Several `start`s with
# different IR_SERVICES_DIR run side by side (every port is chosen free).
# IR_KAFKA_AUTO_CREATE_TOPICS=false at `start`: the brokers create no topic that a
# client merely names (Kafka's default, and this script's, is true).
#
# PostgreSQL: a server already answering on PG_PORT (default 5432) is used as it is.
# Otherwise Debian's cluster is installed (apt-get install postgresql) and started, and
# its pg_hba.conf lets role postgres in over loopback without a password, so that the
# default DATABASE_URL works: a development server, not a production one.
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
DIR=${IR_SERVICES_DIR:-$here/../target/services}
PG_PORT=${PG_PORT:-5432}
PG_URL=${PG_URL:-postgres://postgres@127.0.0.1:$PG_PORT/postgres}
POM="$here/kafka/pom.xml"
KAFKA_VERSION=$(sed -n 's:.*<kafka.version>\(.*\)</kafka.version>.*:\1:p' "$POM")
KAFKA_LIBS=${KAFKA_LIBS:-${XDG_CACHE_HOME:-$HOME/.cache}/identity-reconciler/kafka-$KAFKA_VERSION}

log() { echo "services: $*" >&2; }
die() { log "$*"; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

apt_install() {
  log "installing $* from Debian's packages"
  if [ ! -f "$DIR/../.apt-updated" ]; then
    as_root apt-get update -qq >&2
    mkdir -p "$DIR/.." && touch "$DIR/../.apt-updated"
  fi
  as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$@" >&2
}

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

pg_ready() { pg_isready -q -h 127.0.0.1 -p "$PG_PORT" 2>/dev/null; }
pg_usable() { psql "$PG_URL" -Atqc 'select 1' >/dev/null 2>&1; }

ensure_postgres() {
  pg_usable && return 0
  if ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then apt_install postgresql; fi
  local version conf
  version=$(ls /usr/lib/postgresql | sort -V | tail -n1)
  [ -d "/etc/postgresql/$version/main" ] || as_root pg_createcluster "$version" main >&2
  conf=/etc/postgresql/$version/main
  if ! grep -q identity-reconciler "$conf/pg_hba.conf"; then
    log "letting role postgres in over loopback without a password ($conf/pg_hba.conf)"
    as_root sed -i "1i # identity-reconciler (scripts/services.sh): a development server; role postgres\n# may connect over loopback without a password.\nhost    all    postgres    127.0.0.1/32    trust\nhost    all    postgres    ::1/128         trust" "$conf/pg_hba.conf"
  fi
  if [ ! -f "$conf/conf.d/identity-reconciler.conf" ]; then
    # Tests run in parallel, each with pools of its own.
    printf '# identity-reconciler (scripts/services.sh): parallel tests open many pools\nmax_connections = 400\n' |
      as_root tee "$conf/conf.d/identity-reconciler.conf" >/dev/null
  fi
  if as_root pg_ctlcluster "$version" main status >/dev/null 2>&1; then
    log "restarting PostgreSQL $version with the settings above"
    as_root pg_ctlcluster "$version" main restart >&2
  else
    log "starting PostgreSQL $version"
    as_root pg_ctlcluster "$version" main start >&2
    echo "$version" >"$DIR/postgres.started"
  fi
  for _ in $(seq 1 100); do pg_usable && return 0; sleep 0.2; done
  die "PostgreSQL does not let $PG_URL in"
}

ensure_java() {
  local candidate
  for candidate in "${JAVA_HOME:-}" /usr/lib/jvm/temurin-*-jdk-amd64 /usr/lib/jvm/java-*-openjdk-amd64 /usr; do
    [ -x "$candidate/bin/java" ] || continue
    # Kafka 4 needs Java 17 or newer.
    if [ "$("$candidate/bin/java" -XshowSettings:properties -version 2>&1 |
      sed -n 's/^ *java.specification.version = //p' | cut -d. -f1)" -ge 17 ]; then
      JAVA="$candidate/bin/java"; return 0
    fi
  done
  apt_install openjdk-17-jre-headless
  JAVA=/usr/bin/java
}

ensure_kafka_jars() {
  [ -f "$KAFKA_LIBS/.complete" ] && return 0
  command -v mvn >/dev/null || apt_install maven
  log "resolving Apache Kafka $KAFKA_VERSION from Maven Central into $KAFKA_LIBS (first time only)"
  rm -rf "$KAFKA_LIBS"
  mvn -q -B -f "$POM" dependency:copy-dependencies -DincludeScope=runtime \
    -DoutputDirectory="$KAFKA_LIBS" >&2
  touch "$KAFKA_LIBS/.complete"
}

# The configuration of node $1 of a cluster of $2 nodes, ports from $DIR/ports.
node_config() {
  local id=$1 nodes=$2 voters="" replicas isr i
  for i in $(seq 1 "$nodes"); do
    voters+="${voters:+,}$i@127.0.0.1:$(port_of controller "$i")"
  done
  replicas=$((nodes < 3 ? nodes : 3))
  isr=$((replicas > 1 ? 2 : 1))
  cat <<EOF
process.roles=broker,controller
node.id=$id
controller.quorum.voters=$voters
listeners=PLAINTEXT://127.0.0.1:$(port_of broker "$id"),CONTROLLER://127.0.0.1:$(port_of controller "$id")
advertised.listeners=PLAINTEXT://127.0.0.1:$(port_of broker "$id")
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs=$DIR/kafka-$id
num.partitions=3
default.replication.factor=$replicas
min.insync.replicas=$isr
offsets.topic.replication.factor=$replicas
transaction.state.log.replication.factor=$replicas
transaction.state.log.min.isr=$isr
# A group forms at once instead of waiting 3 s for more members.
group.initial.rebalance.delay.ms=0
# The cleaner looks for compactable logs every second (15 s by default), so the
# compaction test does not wait long.
log.cleaner.backoff.ms=1000
# Kafka's default unless IR_KAFKA_AUTO_CREATE_TOPICS=false: the compose replay test
# runs a broker that, like compose's, creates no topic by itself.
auto.create.topics.enable=${IR_KAFKA_AUTO_CREATE_TOPICS:-true}
EOF
}

port_of() { sed -n "s/^$1-$2=//p" "$DIR/ports"; }

start_node() {
  local id=$1
  log "starting Kafka node $id on 127.0.0.1:$(port_of broker "$id") (log: $DIR/kafka-$id.log)"
  # The node outlives this script; `stop` ends it. Its output goes to its log, so that
  # `$(services.sh start)` does not wait for it.
  KAFKA_HEAP=${KAFKA_HEAP:-$((1024 / $(cat "$DIR/nodes")))m}
  # Garbage collector pauses go to a log of their own: a pause stops the node.
  nohup "$(cat "$DIR/java")" -Xms"$KAFKA_HEAP" -Xmx"$KAFKA_HEAP" -XX:+UseG1GC -Djava.awt.headless=true \
    -Xlog:gc:file="$DIR/kafka-$id-gc.log":time,uptime:filecount=2,filesize=10m \
    -cp "$KAFKA_LIBS/*" kafka.Kafka "$DIR/kafka-$id.properties" \
    >>"$DIR/kafka-$id.log" 2>&1 </dev/null &
  echo $! >"$DIR/kafka-$id.pid"
}

wait_node() {
  local id=$1 since=$2
  # A node restarted after kill -9 first recovers every log it holds: allow 3 minutes.
  for _ in $(seq 1 1800); do
    # awk reads the log itself: `tail | grep -q` under pipefail fails with SIGPIPE once
    # more than a pipe's worth of log follows the line, and would never see it.
    if awk -v since="$since" 'NR >= since && /Kafka Server started/ { found = 1; exit }
      END { exit !found }' "$DIR/kafka-$id.log"; then return 0; fi
    kill -0 "$(cat "$DIR/kafka-$id.pid")" 2>/dev/null || node_failed "$id" "$since" "exited"
    sleep 0.1
  done
  node_failed "$id" "$since" "did not start within 180 s"
}

# Dies with what node $1's log says from line $2 on: its last errors and last lines.
node_failed() {
  local file=$DIR/kafka-$1.log
  log "Kafka node $1 $3; from $file:"
  {
    tail -n +"$2" "$file" | grep -E '\] (ERROR|FATAL) |^Caused by' | tail -n 6 || true
    echo ...
    tail -n 10 "$file"
  } | cut -c1-300 >&2
  exit 1
}

log_lines() { if [ -f "$1" ]; then wc -l <"$1"; else echo 0; fi; }

start_kafka() {
  local nodes=$1 id cluster
  ensure_java
  ensure_kafka_jars
  echo "$JAVA" >"$DIR/java"
  echo "$nodes" >"$DIR/nodes"
  : >"$DIR/ports"
  for id in $(seq 1 "$nodes"); do
    echo "broker-$id=$(free_port)" >>"$DIR/ports"
    echo "controller-$id=$(free_port)" >>"$DIR/ports"
  done
  cluster=$("$JAVA" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool random-uuid 2>/dev/null | tail -n1)
  for id in $(seq 1 "$nodes"); do
    node_config "$id" "$nodes" >"$DIR/kafka-$id.properties"
    "$JAVA" -cp "$KAFKA_LIBS/*" kafka.tools.StorageTool format -t "$cluster" \
      -c "$DIR/kafka-$id.properties" >"$DIR/kafka-$id.log" 2>&1 ||
      die "cannot format the storage of Kafka node $id; see $DIR/kafka-$id.log"
  done
  for id in $(seq 1 "$nodes"); do start_node "$id"; done
  for id in $(seq 1 "$nodes"); do wait_node "$id" 1; done
}

stop_pid_file() {
  local file=$1 signal=${2:-TERM} pid
  [ -f "$file" ] || return 0
  pid=$(cat "$file")
  if kill -0 "$pid" 2>/dev/null; then
    kill -"$signal" "$pid" 2>/dev/null || true
    for _ in $(seq 1 300); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
  fi
  rm -f "$file"
}

stop_all() {
  local file
  for file in "$DIR"/kafka-*.pid; do [ -e "$file" ] && stop_pid_file "$file"; done
  if [ -f "$DIR/postgres.started" ]; then
    log "stopping PostgreSQL (this script started it)"
    as_root pg_ctlcluster "$(cat "$DIR/postgres.started")" main stop >&2 || true
    rm -f "$DIR/postgres.started"
  fi
}

brokers() {
  local id list=""
  for id in $(seq 1 "$(cat "$DIR/nodes")"); do list+="${list:+,}127.0.0.1:$(port_of broker "$id")"; done
  echo "$list"
}

print_env() {
  echo "export DATABASE_URL=$PG_URL"
  echo "export KAFKA_BROKERS=$(brokers)"
  # Where the tests find the broker logs (printed on failure) and this script's state.
  echo "export IR_SERVICES_DIR=$(cd "$DIR" && pwd)"
}

command=${1:-start}
shift || true
case "$command" in
  start)
    nodes=1
    while [ $# -gt 0 ]; do
      case "$1" in
        --kafka-nodes) nodes=$2; shift 2 ;;
        *) die "unknown option $1" ;;
      esac
    done
    [ "$nodes" -ge 1 ] || die "--kafka-nodes must be at least 1"
    # Fresh state: end what an earlier start in this directory left running.
    if [ -d "$DIR" ]; then stop_all; rm -rf "$DIR"; fi
    mkdir -p "$DIR"
    ensure_postgres
    start_kafka "$nodes"
    print_env
    ;;
  postgres)
    # PostgreSQL only (the quick start's embedded broker needs no Kafka). It is left
    # running: the user's development database.
    mkdir -p "$DIR"
    ensure_postgres
    rm -f "$DIR/postgres.started"
    echo "export DATABASE_URL=$PG_URL"
    ;;
  stop) if [ -d "$DIR" ]; then stop_all; fi ;;
  env) print_env ;;
  node)
    action=${1:?node stop|kill|start ID...}; shift
    [ $# -gt 0 ] || die "usage: $0 node stop|kill|start ID..."
    case "$action" in
      stop) for id in "$@"; do stop_pid_file "$DIR/kafka-$id.pid" TERM; done ;;
      kill) for id in "$@"; do stop_pid_file "$DIR/kafka-$id.pid" KILL; done ;;
      start)
        # All first, then wait for each: a node finishes starting only once a
        # majority of the controllers is up.
        declare -A since
        for id in "$@"; do
          since[$id]=$(($(log_lines "$DIR/kafka-$id.log") + 1))
          start_node "$id"
        done
        for id in "$@"; do wait_node "$id" "${since[$id]}"; done
        ;;
      *) die "usage: $0 node stop|kill|start ID..." ;;
    esac
    ;;
  *) die "usage: $0 start [--kafka-nodes N] | stop | env | postgres | node stop|kill|start ID..." ;;
esac
