#!/usr/bin/env bash
# Scale benchmark of the controller and the verifier, one command:
#   bench/scale.sh [--cluster emulator|real] [--keys N] [--schedule CRON] [--revocations M]
#                  [--distinct-grants] [--verifier-only] [--server-profile DIR]
# Builds the release `keysmith` binary and examples/scale.rs, then runs the benchmark: the API
# emulator in the benchmark process (or, with --cluster real, a real kube-apiserver, etcd and
# kube-controller-manager built by testenv/install), `keysmith controller` and `keysmith
# verifier` as child processes, N ApiKeys (10,000 by default; with --distinct-grants each has
# grants of its own, so no two keys share a grant set; with --verifier-only no controller runs:
# the keys are applied with a token minted into their status and only the verifier is measured).
# With --server-profile DIR (and --cluster real) it saves kube-apiserver's CPU profiles of the
# mint and of the plain client's creates there. See docs/BENCHMARKS.md for what it prints.
set -euo pipefail
cd "$(dirname "$0")/.."
if [[ " $* " == *" --cluster real "* ]]; then
  testenv/install kube etcd >/dev/null
fi
if [[ " $* " == *" --server-profile "* ]]; then
  export KEYSMITH_TESTENV_PROFILING=1
fi
cargo build --release --locked --bin keysmith --example scale
TARGET=${CARGO_TARGET_DIR:-target}/release
exec "$TARGET/examples/scale" --keysmith "$TARGET/keysmith" "$@"
