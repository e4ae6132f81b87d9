#!/usr/bin/env bash
# Measures durable charges per second through the HTTP API with wrk
# (Debian package `wrk`) as an outside load generator: starts a release
# server on a fresh data directory, provisions a provider, a card and TOKENS
# tokens through the API, then runs wrk with CONNECTIONS keep-alive
# connections for DURATION. Every 2xx is durable (answered after the WAL is
# fsynced past it).
#
#   scripts/bench-wrk.sh                 # 1000 tokens, 64 connections, 15 s
#   TOKENS=1 scripts/bench-wrk.sh        # one hot token
set -euo pipefail
cd "$(dirname "$0")/.."
TOKENS=${TOKENS:-1000}
CONNECTIONS=${CONNECTIONS:-64}
DURATION=${DURATION:-15s}
PORT=${PORT:-4791}
command -v wrk >/dev/null || { echo "needs wrk (apt-get install wrk)"; exit 1; }
cargo build --release -q -p scrip
DIR=$(mktemp -d)
trap 'kill $PID 2>/dev/null || true; wait $PID 2>/dev/null || true; rm -rf "$DIR"' EXIT
export SCRIP_ADMIN_KEY=sk_admin_bench0123456789abcdef0123456789abcdef
SCRIP_LOG=warn ./target/release/scrip serve --listen 127.0.0.1:$PORT --data-dir "$DIR/data" --rate-limit-per-second 0 >/dev/null &
PID=$!
S=http://127.0.0.1:$PORT
for _ in $(seq 50); do curl -sf $S/healthz >/dev/null && break; sleep 0.1; done
json() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
A="Authorization: Bearer $SCRIP_ADMIN_KEY"
CUS=$(curl -sf $S/v1/customers -H "$A" -d '{}' | json id)
ORCH=$(curl -sf $S/v1/customers/$CUS/credentials -H "$A" -d '{}' | json secret)
PROV=$(curl -sf $S/v1/providers -H "$A" -d '{"name":"bench"}')
PROV_ID=$(echo "$PROV" | json id); export PROVIDER_SECRET=$(echo "$PROV" | json secret)
PM=$(curl -sf $S/v1/payment_methods -H "Authorization: Bearer $ORCH" \
  -d '{"card":{"number":"4242424242424242","exp_month":12,"exp_year":2040,"cvc":"123"}}' | json id)
export TOKENS_FILE="$DIR/tokens"
for _ in $(seq "$TOKENS"); do
  curl -sf $S/v1/tokens -H "Authorization: Bearer $ORCH" \
    -d "{\"payment_method\":\"$PM\",\"provider\":\"$PROV_ID\",\"currency\":\"usd\",\"cap\":{\"amount\":1000000000000,\"period\":\"none\"}}" | json token
done > "$TOKENS_FILE"
echo "tokens: $TOKENS, connections: $CONNECTIONS, duration: $DURATION"
wrk -t2 -c"$CONNECTIONS" -d"$DURATION" --latency -s scripts/wrk-charges.lua $S
curl -sf $S/metrics | grep -E '^scrip_store_(write_(groups|operations)|log_syncs)_total'
