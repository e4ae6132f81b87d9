#!/usr/bin/env bash
# API fuzzing: runs schemathesis (from PyPI, in a virtualenv under target/)
# against the server's own OpenAPI document (GET /v1/openapi.json). Builds
# the release binary, starts `scrip serve --test-clock` on a fresh data
# directory and a free loopback port, creates through the API a customer, a
# credential, a provider, a card, tokens, charges, a refund, a payout and
# webhook endpoints so the fuzzer holds valid secrets and real ids, then
# runs schemathesis once per role (orchestrator, provider, admin: the admin
# last, since it may revoke or roll the others' secrets). Checks: no 5xx
# (not_a_server_error) and every response matches its documented schema
# (response_schema_conformance). Exits non-zero on any failure; always
# stops the server.
#
#   scripts/api-fuzz.sh                            # defaults below
#   MAX_EXAMPLES=50 MAX_TIME=120 scripts/api-fuzz.sh
#   ROLES="admin provider" scripts/api-fuzz.sh
set -euo pipefail
cd "$(dirname "$0")/.."

MAX_EXAMPLES=${MAX_EXAMPLES:-30}         # test cases per operation and phase
MAX_TIME=${MAX_TIME:-75}                 # seconds of fuzzing per role
ROLES=${ROLES:-"orchestrator provider admin"}
SEED=${SEED:-}                           # set for a reproducible run
CHECKS=${CHECKS:-not_a_server_error,response_schema_conformance}
PHASES=${PHASES:-examples,coverage,fuzzing}
SCHEMATHESIS_VERSION=${SCHEMATHESIS_VERSION:-4.32.5}
OUT=target/api-fuzz
VENV=$OUT/venv

command -v curl >/dev/null || { echo "api-fuzz: needs curl" >&2; exit 2; }
command -v python3 >/dev/null || { echo "api-fuzz: needs python3 (with venv)" >&2; exit 2; }

echo "== build (release)"
cargo build --release -q -p scrip

echo "== schemathesis $SCHEMATHESIS_VERSION"
if ! "$VENV/bin/st" --version 2>/dev/null | grep -qF "$SCHEMATHESIS_VERSION"; then
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install -q --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION"
fi
"$VENV/bin/st" --version

DIR=$(mktemp -d)
PID=
cleanup() {
  if [ -n "$PID" ]; then
    kill "$PID" 2>/dev/null || true
    wait "$PID" 2>/dev/null || true
  fi
  rm -rf "$DIR"
}
trap cleanup EXIT

PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
S=http://127.0.0.1:$PORT
export SCRIP_ADMIN_KEY=sk_admin_apifuzz0123456789abcdef0123456789abcdef
mkdir -p "$OUT"
SCRIP_LOG=${SCRIP_LOG:-warn} ./target/release/scrip serve --listen "127.0.0.1:$PORT" \
  --data-dir "$DIR/data" --test-clock >"$OUT/server.log" 2>&1 &
PID=$!
for _ in $(seq 100); do curl -sf "$S/healthz" >/dev/null && break; sleep 0.1; done
curl -sf "$S/healthz" >/dev/null || { echo "api-fuzz: the server did not start" >&2; cat "$OUT/server.log" >&2; exit 1; }

echo "== fixtures"
# call SECRET METHOD PATH [JSON]: prints the response body; fails on non-2xx.
call() {
  curl -sS --fail-with-body -X "$2" "$S$3" -H "Authorization: Bearer $1" \
    -H 'Content-Type: application/json' -d "${4:-{\}}"
}
field() { python3 -c "import json, sys; print(json.load(sys.stdin)$1)"; }
ADMIN=$SCRIP_ADMIN_KEY
CUS=$(call "$ADMIN" POST /v1/customers '{"email":"fuzz@example.com","name":"Fuzz"}' | field "['id']")
CRED=$(call "$ADMIN" POST "/v1/customers/$CUS/credentials" '{"name":"fuzz"}')
OC=$(echo "$CRED" | field "['id']")
ORCH=$(echo "$CRED" | field "['secret']")
PROV_JSON=$(call "$ADMIN" POST /v1/providers '{"name":"fuzz provider"}')
PROV=$(echo "$PROV_JSON" | field "['id']")
PROV_SECRET=$(echo "$PROV_JSON" | field "['secret']")
PM=$(call "$ORCH" POST /v1/payment_methods \
  '{"card":{"number":"4242 4242 4242 4242","exp_month":12,"exp_year":2040,"cvc":"123"}}' | field "['id']")
TOKEN_JSON=$(call "$ORCH" POST /v1/tokens \
  "{\"payment_method\":\"$PM\",\"provider\":\"$PROV\",\"currency\":\"usd\",\"cap\":{\"amount\":100000000,\"period\":\"month\"}}")
PT=$(echo "$TOKEN_JSON" | field "['id']")
TOKEN=$(echo "$TOKEN_JSON" | field "['token']")
SINGLE_JSON=$(call "$ORCH" POST /v1/tokens \
  "{\"payment_method\":\"$PM\",\"provider\":\"$PROV\",\"currency\":\"usd\",\"cap\":{\"amount\":5000,\"period\":\"none\"},\"usage\":\"single_use\"}")
PT2=$(echo "$SINGLE_JSON" | field "['id']")
TOKEN2=$(echo "$SINGLE_JSON" | field "['token']")
CH=$(call "$PROV_SECRET" POST /v1/charges "{\"token\":\"$TOKEN\",\"amount\":5000,\"currency\":\"usd\"}" | field "['id']")
HOLD=$(call "$PROV_SECRET" POST /v1/charges \
  "{\"token\":\"$TOKEN\",\"amount\":2000,\"currency\":\"usd\",\"capture\":false}" | field "['id']")
RE=$(call "$PROV_SECRET" POST /v1/refunds "{\"charge\":\"$CH\",\"amount\":1000}" | field "['id']")
call "$ADMIN" POST /v1/test_helpers/advance_clock '{"seconds":259200}' >/dev/null
PO=$(call "$PROV_SECRET" POST /v1/payouts '{"currency":"usd","amount":100}' | field "['id']")
WE_PROV=$(call "$PROV_SECRET" POST /v1/webhook_endpoints \
  '{"url":"http://127.0.0.1:9/hooks","enabled_events":["*"]}' | field "['id']")
WE_ORCH=$(call "$ORCH" POST /v1/webhook_endpoints \
  '{"url":"http://127.0.0.1:9/hooks","enabled_events":["charge.succeeded"]}' | field "['id']")
EVT=$(call "$ADMIN" GET '/v1/events?limit=1' | field "['data'][0]['id']")
IDS="$CUS $OC $PROV $PM $PT $PT2 $CH $HOLD $RE $PO $WE_PROV $WE_ORCH $EVT"
echo "ids: $IDS"

# Real ids and token values for the fuzzer to draw on (half of the time),
# so that it also reaches the objects behind them, not only 404s.
CONFIG=$DIR/schemathesis.toml
python3 - "$CONFIG" "$TOKEN" "$TOKEN2" $IDS <<'EOF'
import json, sys
path, tokens, ids = sys.argv[1], sys.argv[2:4], sys.argv[4:]
def values(items):
    return "[" + ", ".join(json.dumps(v) for v in items) + "]"
bind = lambda name, p=0.5: '{ dictionary = "%s", probability = %s }' % (name, p)
keys = {
    "path.id": "ids", "query.starting_after": "ids", "query.customer": "ids",
    "query.provider": "ids", "query.payment_token": "ids", "query.charge": "ids",
    "body.customer": "ids", "body.payment_method": "ids", "body.provider": "ids",
    "body.charge": "ids", "body.token": "tokens",
}
with open(path, "w") as f:
    f.write("[dictionaries]\n")
    f.write("ids = { values = %s }\n" % values(ids))
    f.write("tokens = { values = %s }\n\n" % values(tokens))
    f.write("[parameters]\n")
    for key, name in keys.items():
        f.write('"%s" = %s\n' % (key, bind(name)))
EOF

FAILED=0
for role in $ROLES; do
  case $role in
    admin) SECRET=$ADMIN; EXCLUDE=() ;;
    provider)
      # Rolling its own secret would lock the rest of the run out.
      SECRET=$PROV_SECRET; EXCLUDE=(--exclude-path /v1/providers/{id}/roll_secret) ;;
    orchestrator)
      # Revoking its own credential would lock the rest of the run out.
      SECRET=$ORCH; EXCLUDE=(--exclude-path /v1/credentials/{id}/revoke) ;;
    *) echo "api-fuzz: unknown role $role" >&2; exit 2 ;;
  esac
  echo "== schemathesis as $role (at most $MAX_EXAMPLES examples per operation, ${MAX_TIME}s)"
  SEED_ARGS=()
  [ -n "$SEED" ] && SEED_ARGS=(--seed "$SEED")
  set +e
  timeout --kill-after=10 $((MAX_TIME + 120)) \
    "$VENV/bin/st" --config-file "$CONFIG" run "$S/v1/openapi.json" --url "$S" \
      -H "Authorization: Bearer $SECRET" \
      --checks "$CHECKS" \
      --phases "$PHASES" \
      --max-examples "$MAX_EXAMPLES" --max-time "$MAX_TIME" \
      --workers 2 --request-timeout 10 --no-color \
      --generation-database "$OUT/examples-db" \
      --report junit --report-junit-path "$OUT/junit-$role.xml" \
      "${EXCLUDE[@]}" "${SEED_ARGS[@]}" 2>&1 | tee "$OUT/schemathesis-$role.log"
  status=${PIPESTATUS[0]}
  set -e
  if [ "$status" -ne 0 ]; then
    echo "api-fuzz: schemathesis as $role failed (exit $status)" >&2
    FAILED=1
  fi
  curl -sf "$S/healthz" >/dev/null || { echo "api-fuzz: the server stopped answering" >&2; FAILED=1; break; }
done

if grep -qiE 'panicked|store failure|vault failure' "$OUT/server.log"; then
  echo "api-fuzz: the server logged failures:" >&2
  grep -iE 'panicked|store failure|vault failure' "$OUT/server.log" | head -20 >&2
  FAILED=1
fi
if [ "$FAILED" -ne 0 ]; then
  echo "api-fuzz: FAILED (logs in $OUT/)" >&2
  exit 1
fi
echo "api-fuzz: passed (roles: $ROLES)"
