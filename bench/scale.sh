#!/usr/bin/env bash
# Scale benchmark of the controller and the verifier (SPEC section 10), one command:
#   bench/scale.sh [--keys N] [--schedule CRON] [--revocations M]
# Builds the release `keysmith` binary and examples/scale.rs, then runs the benchmark: the API
# emulator in the benchmark process, `keysmith controller` and `keysmith verifier` as child
# processes, N ApiKeys (10,000 by default). See docs/BENCHMARKS.md for what it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked --bin keysmith --example scale
TARGET=${CARGO_TARGET_DIR:-target}/release
exec "$TARGET/examples/scale" --keysmith "$TARGET/keysmith" "$@"
