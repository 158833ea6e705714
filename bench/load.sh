#!/usr/bin/env bash
# Load benchmark of the verifier (targets in docs/BENCHMARKS.md), reproducible on one machine:
#   1. the API emulator with 10,000 ApiKeys (examples/load_fixture.rs), or with
#      KEYSMITH_TEST_CLUSTER=real a real kube-apiserver, etcd and kube-controller-manager built
#      by testenv/install (creating the keys there takes minutes at 100,000),
#   2. `keysmith verifier` watching it as its ServiceAccount (time to /readyz = list + index
#      of every key; resident memory once ready),
#   3. nginx answering `return 200` on another loopback port, in the same run,
#   4. wrk, 50 connections, against POST /v1/verify, GET /v1/authz and nginx;
# then prints both request rates, their ratio and the verifier's p99.
#
# Usage: bench/load.sh [--pinned] [--runs N] [KEYS] [DURATION]
#                                       (defaults: 1 run, 10000 keys, 10s; DURATION in seconds)
#   --pinned  servers (verifier, nginx) on the first half of the CPUs with one worker per CPU,
#             wrk on the other half with one thread per CPU (2 CPUs: servers on CPU 0, wrk on
#             CPU 1). Unpinned, wrk and the server take turns on the same CPUs, and the p99 wrk
#             reports is mostly its own time off the CPU (nginx's `return 200` shows it too);
#             pinned, the p99 is the server's.
#   --runs N  the three wrk runs N times on the same servers, then the median ratio of each
#             endpoint against its target (/v1/authz 0.95 of nginx's rate, /v1/verify 0.90).
# Needs: cargo, and wrk + nginx (Debian packages; installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

PIN_SERVER=()
PIN_CLIENT=()
THREADS=2
NGINX_WORKERS=auto
RUNS=1
while [ $# -gt 0 ]; do
    case $1 in
        --pinned)
            split_cpus wrk || { echo "run bench/load.sh without --pinned" >&2; exit 2; }
            THREADS=$CLIENT_CPU_COUNT
            # The verifier runs one worker per CPU it may use; nginx gets as many.
            NGINX_WORKERS=$SERVER_CPU_COUNT
            shift ;;
        --runs)
            [[ ${2:-} =~ ^[1-9][0-9]*$ ]] || { echo "bench/load.sh: --runs needs a whole number, at least 1" >&2; exit 2; }
            RUNS=$2
            shift 2 ;;
        *) break ;;
    esac
done
KEYS=${1:-10000}
DURATION=${2:-10s}
CONNECTIONS=50
API_PORT=18080
METRICS_PORT=19090
NGINX_PORT=18081

if ! command -v wrk >/dev/null || ! find_nginx; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx curl >/dev/null
    find_nginx
fi

[ "${KEYSMITH_TEST_CLUSTER:-}" != real ] || testenv/install kube etcd >/dev/null
build_verifier
bench_workdir
# 1. The emulator with KEYS ApiKeys.
start_fixture "$KEYS"
# 2. The verifier.
start_verifier $API_PORT $METRICS_PORT
# 3. nginx: `return 200`, no access log.
start_nginx $NGINX_PORT "$NGINX_WORKERS"

# 4. wrk. The same POST (a verification asking for an action on a resource) goes to both.
cat >"$WORK/verify.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '$(verify_body)'
LUA
check_verify $API_PORT

# CPU time (user + system, in clock ticks) used so far by processes and their child processes.
cpu_ticks() {
    local total=0 pid
    for pid in "$@" $(pgrep -P "$(echo "$@" | tr ' ' ,)" || true); do
        total=$((total + $(awk '{print $14 + $15}' "/proc/$pid/stat")))
    done
    echo $total
}
run() { # name server-pid url [wrk args...]
    local name=$1 server=$2 url=$3
    shift 3
    local before
    before=$(cpu_ticks "$server")
    "${PIN_CLIENT[@]}" wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency "$@" "$url" >"$WORK/$name.wrk"
    echo $(($(cpu_ticks "$server") - before)) >"$WORK/$name.ticks"
}
rps() { awk '/^Requests\/sec:/ {print $2}' "$WORK/$1.wrk"; }
p99_us() {
    awk '$1 == "99%" { v=$2; if (v ~ /us$/) {sub(/us/,"",v); print v}
        else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s/,"",v); print v*1000000} }' "$WORK/$1.wrk"
}

echo
LAYOUT="servers and wrk share the CPUs"
[ ${#PIN_SERVER[@]} = 0 ] || LAYOUT="servers pinned to CPUs $SERVER_CPUS, wrk to CPUs $CLIENT_CPUS"
echo "machine: $(nproc) CPUs, $(uname -r); wrk -t$THREADS -c$CONNECTIONS -d$DURATION on loopback; $LAYOUT"
echo "index:   $INDEXED tokens from $KEYS ApiKeys; start to /readyz ${READY_MS} ms (process start, list, index), verifier CPU ${READY_CPU} s"
echo "memory:  verifier RSS ${RSS_KB} KiB once ready = $((RSS_KB * 1024 / KEYS)) bytes per token (whole process)"
# Server CPU per request: wrk shares the CPUs, so this is the cost the rate ratio comes from.
cpu_us() {
    awk -v t="$(cat "$WORK/$1.ticks")" -v hz="$(getconf CLK_TCK)" -v r="$(rps "$1")" \
        -v d="${DURATION%s}" 'BEGIN {printf "%.1f", t / hz * 1e6 / (r * d)}'
}
ratio() { awk -v a="$(rps "$1")" -v b="$(rps "$2")" 'BEGIN {printf "%.2f", a/b}'; }
for ((i = 1; i <= RUNS; i++)); do
    run "verify$i" "$VERIFIER" "http://127.0.0.1:$API_PORT/v1/verify" -s "$WORK/verify.lua"
    run "authz$i" "$VERIFIER" "http://127.0.0.1:$API_PORT/v1/authz?$AUTHZ_QUERY" -H "Authorization: Bearer $TOKEN"
    run "nginx$i" "$NGINX_PID" "http://127.0.0.1:$NGINX_PORT/" -s "$WORK/verify.lua"
    [ "$RUNS" = 1 ] || echo "run $i of $RUNS"
    printf '%-10s %12s %9s %12s %14s\n' endpoint "requests/s" "vs nginx" "p99" "CPU/request"
    for name in verify authz nginx; do
        printf '%-10s %12s %9s %9s µs %11s µs\n' "$name" "$(rps "$name$i")" "$(ratio "$name$i" "nginx$i")" \
            "$(p99_us "$name$i")" "$(cpu_us "$name$i")"
    done
done
if [ "$RUNS" -gt 1 ]; then
    # The median of the runs' ratios (the middle one, or the mean of the middle two).
    median() {
        for ((i = 1; i <= RUNS; i++)); do ratio "$1$i" "nginx$i"; echo; done | sort -n |
            awk '{v[NR] = $1} END {printf "%.2f", NR % 2 ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2}'
    }
    verdict() { awk -v m="$1" -v t="$2" 'BEGIN {print (m >= t ? "met" : "MISSED")}'; }
    for target in "authz 0.95" "verify 0.90"; do
        read -r name want <<<"$target"
        m=$(median "$name")
        echo "median of $RUNS runs: /v1/$name at $m of nginx's rate (target $want): $(verdict "$m" "$want")"
    done
fi
ERRORS=$(grep -h 'Non-2xx\|Socket errors' "$WORK"/*.wrk || true)
[ -z "$ERRORS" ] || echo "wrk reported: $ERRORS"
# The verifier's own view: time to decide (index lookup, grants, restrictions), from its
# histogram, over the /v1/verify and /v1/authz runs; the rest of wrk's latency is HTTP, the kernel
# and waiting for a CPU.
# The histogram has a series per endpoint: each bucket is summed over them, in bucket order.
DECISION_P99=$(curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" | awk 'BEGIN { n = 0 }
    /^keysmith_verify_duration_seconds_bucket/ { match($1, /le="[^"]*"/); b = substr($1, RSTART + 4, RLENGTH - 5)
        if (!(b in count)) le[n++] = b; count[b] += $2 }
    END { for (i = 0; i < n; i++) if (count[le[i]] >= 0.99 * count[le[n - 1]]) {
        if (le[i] == "+Inf") print "over 1 s"; else printf "at most %g µs", le[i] * 1e6; exit } }')
echo "decision time p99 (verifier histogram): $DECISION_P99"
echo "audit lines written: $(grep -c keysmith::audit "$WORK/verifier.log")"
