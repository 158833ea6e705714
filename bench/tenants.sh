#!/usr/bin/env bash
# Noisy-neighbour benchmark (issue 27, finding N3): how much one tenant's most expensive
# verifications slow another tenant's /v1/authz. On one machine:
#   1. the API emulator with KEYS ordinary ApiKeys plus tenant-0/worst, whose grants are the most
#      expensive validation admits (benches/shared/worst_case.rs, as in
#      `cargo bench --bench grants -- "worst case"`), or with KEYSMITH_TEST_CLUSTER=real a real
#      control plane (examples/load_fixture.rs);
#   2. the release `keysmith verifier` watching it;
#   3. tenant A: one wrk connection asking GET /v1/authz in a closed loop (p50 and p95 from wrk's
#      latency histogram), first alone, then while LOOPS more connections send, closed-loop too:
#        ordinary    another ordinary key's /v1/verify (the control: any CPU-bound load of the
#                    same rate costs A the same, on a machine with few cores),
#        worst       the worst key's most expensive admitted /v1/verify: a 128-byte action
#                    every deny pattern scans to its end before `allow *` (VALID),
#        oversized   the issue's original request, a 15,000-byte action (now FORBIDDEN before
#                    any grant is read),
#      then alone again (drift);
# and prints A's p50 and p95 in each, their ratio to A alone, the noise's request rate and its
# mean decision time (the verifier's histogram: index lookup and grants, without HTTP).
#
# Usage: bench/tenants.sh [--pinned] [DURATION] [LOOPS]   (defaults: 10s, 6; DURATION in seconds)
#   --pinned  the verifier on the first half of the CPUs, both wrk processes on the other half
#             (2 CPUs: the verifier on CPU 0, wrk on CPU 1), so A's latency is the verifier's
#             queue and not wrk's own wait for a CPU.
# Needs: cargo, and wrk and curl (Debian packages; installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

PIN_SERVER=()
PIN_CLIENT=()
LAYOUT="unpinned"
if [ "${1:-}" = --pinned ]; then
    split_cpus wrk || { echo "run bench/tenants.sh without --pinned" >&2; exit 2; }
    LAYOUT="verifier pinned to CPUs $SERVER_CPUS, wrk to CPUs $CLIENT_CPUS"
    shift
fi
DURATION=${1:-10s}
LOOPS=${2:-6}
[[ $DURATION =~ ^[1-9][0-9]*s$ ]] ||
    { echo "bench/tenants.sh: DURATION is whole seconds such as 10s, not '$DURATION'" >&2; exit 2; }
[[ $LOOPS =~ ^[1-9][0-9]*$ ]] ||
    { echo "bench/tenants.sh: LOOPS is a whole number, at least 1, not '$LOOPS'" >&2; exit 2; }
[ $# -le 2 ] || { echo "bench/tenants.sh: at most DURATION and LOOPS, not '$*'" >&2; exit 2; }
KEYS=1000
API_PORT=18090
METRICS_PORT=19091

if ! command -v wrk >/dev/null || ! command -v curl >/dev/null; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk curl >/dev/null
fi

[ "${KEYSMITH_TEST_CLUSTER:-}" != real ] || testenv/install kube etcd >/dev/null
LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
build_verifier
bench_workdir
start_fixture "$KEYS" worst
start_verifier $API_PORT $METRICS_PORT
OTHER=$(cat "$WORK/other-token")
WORST=$(cat "$WORK/worst-token")

# wrk scripts: A's percentiles (µs) written when its run ends; the noise's POST bodies.
cat >"$WORK/tenant-a.lua" <<'LUA'
done = function(summary, latency, requests)
    local errors = summary.errors.connect + summary.errors.read + summary.errors.write
        + summary.errors.status + summary.errors.timeout
    io.write(string.format("RESULT %.1f %.1f %d %d\n", latency:percentile(50),
        latency:percentile(95), summary.requests, errors))
end
LUA
noise_script() { # name token action
    cat >"$WORK/$1.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"token":"$2","action":"$3","resource":"content:pages:home"}'
LUA
}
A128=$(printf 'a%.0s' $(seq 128))
A15K=$(printf 'a%.0s' $(seq 15000))
noise_script ordinary "$OTHER" content.read
noise_script worst "$WORST" "$A128"
noise_script oversized "$WORST" "$A15K"

# Each request answers as described, or the benchmark stops.
expect() { # name code
    local answer
    answer=$(curl -sS -X POST -H 'Content-Type: application/json' \
        --data "$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$WORK/$1.lua")" "http://127.0.0.1:$API_PORT/v1/verify")
    echo "$answer" | grep -q "\"code\":\"$2\"" || { echo "$0: $1: unexpected answer: $answer" >&2; exit 1; }
}
expect ordinary VALID
expect worst VALID
expect oversized FORBIDDEN
AUTHZ_URL="http://127.0.0.1:$API_PORT/v1/authz?$AUTHZ_QUERY"
curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" "$AUTHZ_URL"

tenant_a() { # name: A's closed loop for DURATION; RESULT line in WORK/name.a
    "${PIN_CLIENT[@]}" wrk -t1 -c1 -d"$DURATION" -s "$WORK/tenant-a.lua" -H "Authorization: Bearer $TOKEN" \
        "$AUTHZ_URL" >"$WORK/$1.a"
}
with_noise() { # name: LOOPS connections of WORK/name.lua, running from before A starts to after
    local noise
    decisions >"$WORK/$1.decisions"
    "${PIN_CLIENT[@]}" wrk -t1 -c"$LOOPS" -d"$((${DURATION%s} + 2))s" -s "$WORK/$1.lua" \
        "http://127.0.0.1:$API_PORT/v1/verify" >"$WORK/$1.noise" &
    noise=$!
    # The noise is running once the verifier has answered some of it.
    local before
    before=$(verifications)
    until [ "$(verifications)" -gt "$((before + 10))" ]; do sleep 0.05; done
    tenant_a "$1"
    wait "$noise"
    decisions >>"$WORK/$1.decisions"
}
# The sum (seconds) and count of the verifier's decision times on /v1/verify: the noise's.
decisions() {
    curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" | awk '
        /^keysmith_verify_duration_seconds_sum\{endpoint="verify"\}/ {s = $2}
        /^keysmith_verify_duration_seconds_count\{endpoint="verify"\}/ {n = $2}
        END {print s, n}'
}
# Mean decision time of the noise in µs, from the two snapshots.
decision_us() {
    [ -f "$WORK/$1.decisions" ] || { echo -; return; }
    awk 'NR == 1 {s = $1; n = $2} NR == 2 {printf "%.1f", ($1 - s) * 1e6 / ($2 - n)}' "$WORK/$1.decisions"
}
verifications() {
    curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" |
        awk '/^keysmith_verify_duration_seconds_count/ {n += $2} END {printf "%d", n}'
}
field() { awk -v f="$2" '$1 == "RESULT" {print $f}' "$WORK/$1.a"; }
noise_rps() { [ -f "$WORK/$1.noise" ] && awk '/^Requests\/sec:/ {printf "%.0f", $2}' "$WORK/$1.noise" || echo -; }

tenant_a alone
with_noise ordinary
with_noise worst
with_noise oversized
tenant_a alone-again

echo
echo "machine: $(nproc) CPUs, $(uname -r); load average before the run: $LOAD_BEFORE, after: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "tenant A: wrk -t1 -c1 -d$DURATION GET /v1/authz; noise: wrk -t1 -c$LOOPS POST /v1/verify; $KEYS keys; all on loopback, $LAYOUT"
printf '%-14s %10s %10s %14s %14s %12s %15s %8s\n' scenario "A p50" "A p95" "p50 vs alone" "p95 vs alone" "noise req/s" "noise decision" "A errors"
for name in alone ordinary worst oversized alone-again; do
    printf '%-14s %7s µs %7s µs %13sx %13sx %12s %12s µs %8s\n' "$name" "$(field $name 2)" "$(field $name 3)" \
        "$(awk -v a="$(field $name 2)" -v b="$(field alone 2)" 'BEGIN {printf "%.2f", a / b}')" \
        "$(awk -v a="$(field $name 3)" -v b="$(field alone 3)" 'BEGIN {printf "%.2f", a / b}')" \
        "$(noise_rps $name)" "$(decision_us $name)" "$(field $name 5)"
done
ERRORS=$(grep -h 'Non-2xx\|Socket errors' "$WORK"/*.noise "$WORK"/*.a || true)
[ -z "$ERRORS" ] || echo "wrk reported: $ERRORS"
