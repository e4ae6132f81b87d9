#!/usr/bin/env bash
# PostgreSQL figures, side by side in one run (BENCHMARKS.md):
#   1. pgbench of the minimal equivalent of a charge (scripts/pgbench-charge.sql:
#      one conditional UPDATE plus the inserts) with CLIENTS connections;
#   2. `scrip bench` spread on an in-process server storing in the same
#      PostgreSQL (a fresh schema, dropped afterwards), CONNECTIONS connections.
#
#   scripts/bench-postgres.sh                      # postgres://postgres@127.0.0.1:5432/test, 10 s each
#   DURATION=30 CLIENTS=16 scripts/bench-postgres.sh
set -euo pipefail
cd "$(dirname "$0")/.."
URL=${SCRIP_BENCH_DATABASE_URL:-postgres://postgres@127.0.0.1:5432/test}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-64}
CONNECTIONS=${CONNECTIONS:-64}
command -v pgbench >/dev/null || { echo "needs pgbench (Debian package postgresql-client)" >&2; exit 2; }
PSQL=(env PGOPTIONS=-c\ client_min_messages=warning psql -X -q "$URL" -v ON_ERROR_STOP=1)
cargo build --release -q -p scrip

echo "== pgbench: the minimal charge transaction, $CLIENTS clients, ${DURATION}s"
"${PSQL[@]}" <<'SQL'
DROP SCHEMA IF EXISTS scrip_pgbench CASCADE;
CREATE SCHEMA scrip_pgbench;
CREATE TABLE scrip_pgbench.tokens (id BIGINT PRIMARY KEY, cap BIGINT NOT NULL, spent BIGINT NOT NULL);
CREATE TABLE scrip_pgbench.charges (id BIGSERIAL PRIMARY KEY, token BIGINT NOT NULL, amount BIGINT NOT NULL);
CREATE TABLE scrip_pgbench.entries (id BIGSERIAL PRIMARY KEY, account TEXT NOT NULL, amount BIGINT NOT NULL);
INSERT INTO scrip_pgbench.tokens SELECT g, 1000000000000, 0 FROM generate_series(1, 1000) g;
SQL
pgbench -n -M prepared -c "$CLIENTS" -j 2 -T "$DURATION" -f scripts/pgbench-charge.sql "$URL" |
  grep -E '^(number of transactions actually processed|latency average|tps)'
"${PSQL[@]}" -c 'DROP SCHEMA scrip_pgbench CASCADE'

echo "== scrip bench spread on PostgreSQL, $CONNECTIONS connections, ${DURATION}s"
./target/release/scrip bench --scenario spread --database-url "$URL" \
  --connections "$CONNECTIONS" --duration "${DURATION}s" --quiet
