#!/usr/bin/env bash
# Coverage-guided fuzzing of the WAL parsers (cargo-fuzz / libFuzzer, nightly Rust).
#   wal/fuzz/run.sh                 every target for 60 s
#   wal/fuzz/run.sh 600 wal_codec   one target for 10 minutes
# Starts from the committed corpus (wal/tests/fuzz_corpus/<target>, copied, so libFuzzer's
# additions stay out of the repository) and writes crashes to wal/fuzz/artifacts/<target>/.
# A crash found here belongs in the corpus as regress-<what> once fixed, so the CI
# mutation fuzzer (wal/tests/fuzz.rs) keeps checking it.
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-60}"; shift || true
targets=("$@"); [ ${#targets[@]} -gt 0 ] || targets=(wal_names wal_history wal_sentinel wal_codec wal_page)
rustup toolchain list | grep -q nightly || rustup toolchain install nightly --profile minimal
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/walstore/target-fuzz}"
for t in "${targets[@]}"; do
  work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
  cp -r "../tests/fuzz_corpus/$t/." "$work/"
  echo "==> $t for ${secs}s"
  cargo +nightly fuzz run "$t" "$work" -- -max_total_time="$secs" -rss_limit_mb=2048 -max_len=8192
done
