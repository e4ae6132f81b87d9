#!/usr/bin/env bash
# The scale figures of BENCHMARKS.md: one `scrip serve` on a fresh data
# directory, driven over HTTP by `scrip bench --url`:
#   1. spread over TOKENS tokens (issued through the API first; 1,000,000 by
#      default), the server's RSS after it (its invariant checks included);
#   2. spread over 1,000 fresh tokens in the same store, which now holds
#      TOKENS + 1,000 tokens, and the RSS after it;
#   3. each orchestrator credential revoked, timed with curl, with the
#      number of tokens under it.
#
#   scripts/bench-scale.sh                     # 1,000,000 tokens, 10 s runs
#   TOKENS=1000 scripts/bench-scale.sh         # the same at 1,000 tokens
#
# Needs python3 (to read `scrip bench --json`), curl and sqlite3 (Debian
# package `sqlite3`, to count the tokens in the store).
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS=${TOKENS:-1000000}
DURATION=${DURATION:-10s}
PORT=${PORT:-4798}
BIN=./target/release/scrip
cargo build --release -q -p scrip
DIR=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
export SCRIP_ADMIN_KEY=sk_admin_bench0123456789abcdef0123456789abcdef
SCRIP_LOG=warn $BIN serve --listen 127.0.0.1:$PORT --data-dir "$DIR/data" --rate-limit-per-second 0 >/dev/null 2>&1 &
PID=$!
S=http://127.0.0.1:$PORT
A="Authorization: Bearer $SCRIP_ADMIN_KEY"
for _ in $(seq 50); do curl -sf $S/healthz >/dev/null && break; sleep 0.1; done

rss() {
  awk '/^VmRSS/ {rss=$2} /^RssAnon/ {anon=$2} END {printf "  server RSS %.0f MB (anonymous %.0f MB)\n", rss/1024, anon/1024}' /proc/$PID/status
}
spread() {
  $BIN bench --url $S --scenario spread --tokens "$1" --duration "$DURATION" --json \
    > "$DIR/run.json" 2> "$DIR/run.err" || { tail -20 "$DIR/run.err"; echo "FATAL: the bench failed" >&2; exit 1; }
  grep -o "issued [0-9]* token(s) in [0-9.]* s" "$DIR/run.err" | sed 's/^/  /' || true
  python3 - "$DIR/run.json" "$1" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
c = d["operations"]["charge"]
l = c["latency_ms"]
print(f"  spread over {int(sys.argv[2]):,} tokens: {c['ok_per_s']:,.0f} charges/s, p50 {l['p50']:.2f} ms, "
      f"p90 {l['p90']:.2f} ms, p99 {l['p99']:.2f} ms, max {l['max']:.1f} ms, checks {'passed' if d['passed'] else 'FAILED'}")
PY
}

echo "== spread over $TOKENS tokens"
spread "$TOKENS"
rss
echo "== spread over 1,000 more tokens, in the same store"
spread 1000
rss
echo "== the store holds $(sqlite3 "$DIR/data/scrip.db" 'select count(*) from tokens') tokens"
echo "== revoking each orchestrator credential"
ids() { python3 -c "import json,sys; [print(o['id']) for o in json.load(sys.stdin)['data']]"; }
for customer in $(curl -sf "$S/v1/customers?limit=100" -H "$A" | ids); do
  for credential in $(curl -sf "$S/v1/customers/$customer/credentials?limit=100" -H "$A" | ids); do
    under=$(sqlite3 "$DIR/data/scrip.db" "select count(*) from tokens where credential_id = '$credential'")
    curl -sf -o /dev/null -X POST "$S/v1/credentials/$credential/revoke" -H "$A" \
      -w "  $credential ($under tokens under it): HTTP %{http_code} in %{time_total} s\n"
  done
done
