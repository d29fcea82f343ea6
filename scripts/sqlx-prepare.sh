#!/usr/bin/env bash
# Regenerates `.sqlx/`, the query metadata the `sqlx::query!` macros compile against
# (see .cargo/config.toml): applies the migrations to a scratch database, then
# compiles the crate once against it, with SQLX_OFFLINE_DIR where the macros write.
#   scripts/sqlx-prepare.sh           rewrite .sqlx/
#   scripts/sqlx-prepare.sh --check   fail (exit 1) when .sqlx/ differs from the code
# Needs a PostgreSQL server (DATABASE_URL's, default the local development server;
# `scripts/services.sh postgres` starts one).
set -euo pipefail
cd "$(dirname "$0")/.."

check=false
[[ ${1:-} == --check ]] && check=true
server=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/postgres}
server=${server%/*}
scratch="ir_sqlx_prepare_$$"
psql -q "$server/postgres" -c "CREATE DATABASE $scratch"
out=$(mktemp -d)
trap 'rm -rf "$out"; psql -q "$server/postgres" -c "DROP DATABASE IF EXISTS $scratch" || true' EXIT
for migration in migrations/*.sql; do
  psql -q -v ON_ERROR_STOP=1 "$server/$scratch" -f "$migration" >/dev/null
done

# Touching the crate root makes cargo check the library again, so every query macro
# runs against the scratch database and writes its file (the dependencies are reused).
# The root's time is put back afterwards, so the next build does not recompile.
stamp=$(mktemp)
touch -r src/lib.rs "$stamp"
touch src/lib.rs
status=0
SQLX_OFFLINE=false SQLX_OFFLINE_DIR="$out" DATABASE_URL="$server/$scratch" \
  cargo check --quiet --locked --lib || status=$?
touch -r "$stamp" src/lib.rs
rm -f "$stamp"
[[ $status == 0 ]] || exit "$status"

if $check; then
  if ! diff -r "$out" .sqlx >/dev/null; then
    echo "sqlx-prepare: .sqlx/ is stale; run scripts/sqlx-prepare.sh and commit it:" >&2
    diff -rq "$out" .sqlx >&2 || true
    exit 1
  fi
  echo "sqlx-prepare: .sqlx/ is up to date ($(ls .sqlx | wc -l) queries)"
else
  rm -rf .sqlx
  cp -r "$out" .sqlx
  echo "sqlx-prepare: wrote $(ls .sqlx | wc -l) queries to .sqlx/"
fi
