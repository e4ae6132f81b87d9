#!/usr/bin/env bash
# One benchmark sitting, as BENCHMARKS.md reports it: the machine's physical
# limits, then every `scrip bench` scenario ROUNDS times, the scenarios taken
# in turn round by round (so a drift of the machine's speed spreads over all
# of them), and a Markdown table of every run and its median. A run whose
# invariant checks fail stops the sitting (`scrip bench` exits non-zero).
#
#   scripts/bench-sitting.sh                     # 5 rounds of 10 s runs
#   ROUNDS=3 DURATION=8s scripts/bench-sitting.sh
#   SCENARIOS="spread hot" scripts/bench-sitting.sh
#
# Needs python3 (to read `scrip bench --json`), and wrk (Debian package
# `wrk`) for the trivial HTTP endpoint's figure; without wrk that line is
# left out. Raw JSON of every run is kept in target/sitting/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
SCENARIOS=${SCENARIOS:-spread hot mixed revoke-storm issue introspect}
OUT=target/sitting
cargo build --release -q -p scrip -p scrip-server --bin scrip --example physical_limits
rm -rf "$OUT" && mkdir -p "$OUT"
BIN=./target/release/scrip
LIMITS=./target/release/examples/physical_limits

echo "== $(date -u +%FT%TZ), $(nproc) CPUs: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //')"
echo "== physical limits"
for round in $(seq 3); do
  $LIMITS fsync | tee -a "$OUT/limits.txt"
  $LIMITS sqlite | tee -a "$OUT/limits.txt"
  if command -v wrk >/dev/null; then
    $LIMITS http >/dev/null &
    http_pid=$!
    for _ in $(seq 50); do curl -sf http://127.0.0.1:4799/ >/dev/null && break; sleep 0.1; done
    wrk -t2 -c64 -d5s --latency http://127.0.0.1:4799/ |
      awk '/Requests\/sec/ {rps=$2} / 99% / {p99=$2} END {printf "trivial axum endpoint, wrk -t2 -c64: %d requests/s (p99 %s)\n", rps, p99}' |
      tee -a "$OUT/limits.txt"
    kill "$http_pid"; wait "$http_pid" 2>/dev/null || true
  fi
done

echo "== scrip bench, $ROUNDS rounds of $DURATION, 64 connections"
for round in $(seq "$ROUNDS"); do
  for scenario in $SCENARIOS; do
    $BIN bench --scenario "$scenario" --duration "$DURATION" --json > "$OUT/$scenario-$round.json" 2>/dev/null ||
      { echo "FATAL: scrip bench --scenario $scenario failed its checks (round $round):" >&2
        python3 -c 'import json,sys; [print(" ", c["result"], c["name"], c["detail"]) for c in json.load(open(sys.argv[1]))["checks"]]' \
          "$OUT/$scenario-$round.json" >&2 || true
        exit 1; }
    python3 - "$OUT/$scenario-$round.json" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
print(f"  {d['scenario']:<13} {d['requests_per_s']:>9,.0f} requests/s  p50 {d['latency_ms']['p50']:.2f} ms  "
      f"p99 {d['latency_ms']['p99']:.2f} ms  errors {sum(e['count'] for e in d['errors'])}  "
      f"{d['store']['operations_per_group'] if d.get('store') else 0:.1f} ops/group  checks {'passed' if d['passed'] else 'FAILED'}")
PY
  done
done

echo "== summary (Markdown)"
python3 - "$OUT" $SCENARIOS <<'PY'
import json, statistics, sys, glob, re
out, scenarios = sys.argv[1], sys.argv[2:]
limits = open(f"{out}/limits.txt").read()
def runs(pattern):
    return [float(x.replace(",", "")) for x in re.findall(pattern, limits)]
print("| physical limit | runs | median |\n|---|---|---|")
for name, pattern in [
    ("fdatasync of a small append, per second", r"fsync: ([\d.]+)/s"),
    ("minimal SQLite redemption, 1 per transaction, per second", r"1 per transaction: ([\d.]+)/s"),
    ("the same, 100 per transaction, per second", r"100 per transaction: ([\d.]+)/s"),
    ("trivial axum endpoint with wrk, requests/s", r"wrk -t2 -c64: ([\d.]+) requests/s"),
]:
    r = runs(pattern)
    if r:
        print(f"| {name} | {' / '.join(f'{x:,.0f}' for x in r)} | **{statistics.median(r):,.0f}** |")
print()
print("| scenario | what is counted | runs | median | p99 ms (median) | errors |\n|---|---|---|---|---|---|")
for s in scenarios:
    ds = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{s}-*.json"))]
    if not ds:
        continue
    if s == "spread":
        what, rate = "charges/s", [d["operations"]["charge"]["ok_per_s"] for d in ds]
    elif s == "issue":
        what, rate = "tokens issued/s", [d["operations"]["issue_token"]["ok_per_s"] for d in ds]
    else:
        what, rate = "requests/s", [d["requests_per_s"] for d in ds]
    p99 = statistics.median(d["latency_ms"]["p99"] for d in ds)
    errors = sum(e["count"] for d in ds for e in d["errors"])
    print(f"| `{s}` | {what} | {' / '.join(f'{x:,.0f}' for x in rate)} | **{statistics.median(rate):,.0f}** | {p99:.2f} | {errors} |")
PY
