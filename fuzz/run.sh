#!/usr/bin/env bash
# Fuzzes the payload decoder and validator (fuzz/src/body.rs) with libFuzzer.
#   fuzz/run.sh            # 30-second run
#   fuzz/run.sh 600        # ten minutes
# Needs cargo-fuzz (`cargo install --locked cargo-fuzz`) and a nightly
# toolchain (`rustup toolchain install nightly`; the sanitizer flags are
# nightly-only). Seeds: fuzz/seeds and the hostile corpus tests/corpus/cases;
# what the fuzzer learns goes to fuzz/corpus/payload (not in git), crashes to
# fuzz/artifacts/payload. Without nightly the same body runs over the seeds in
# `cargo test` (tests/corpus_fuzz.rs).
set -euo pipefail
cd "$(dirname "$0")"
secs="${1:-30}"
mkdir -p corpus/payload
exec cargo +nightly fuzz run payload corpus/payload seeds ../tests/corpus/cases -- \
  -max_total_time="$secs" -max_len=300000 -print_final_stats=1
