#!/usr/bin/env bash
# Runs every cargo-fuzz target for a bounded time on its kept corpus
# (fuzz/corpus/<target>); new interesting inputs are added to the corpus,
# crashes land in fuzz/artifacts/<target>.
#
#   scripts/fuzz.sh          # 30 s per target
#   scripts/fuzz.sh 300      # 5 minutes per target
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER_TARGET=${1:-30}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
# cargo-fuzz passes -Z flags (sanitizers, coverage); the machine's toolchain
# is stable, so let it accept them.
export RUSTC_BOOTSTRAP=1
for target in card_number charge_body token_body payment_method_body idempotency_key; do
  mkdir -p "fuzz/corpus/$target"
  echo "== fuzzing $target for ${SECONDS_PER_TARGET}s"
  cargo fuzz run "$target" "fuzz/corpus/$target" -- \
    -max_total_time="$SECONDS_PER_TARGET" -rss_limit_mb=2048 -timeout=10
done
