#!/usr/bin/env bash
# Load benchmark of the verifier (targets in docs/BENCHMARKS.md), reproducible on one machine:
#   1. the API emulator with 10,000 ApiKeys (examples/load_fixture.rs),
#   2. `keysmith verifier` watching it as its ServiceAccount (time to /readyz = list + index
#      of every key; resident memory once ready),
#   3. nginx answering `return 200` on another loopback port, in the same run,
#   4. wrk, 50 connections, against POST /v1/verify, GET /v1/authz and nginx;
# then prints both request rates, their ratio and the verifier's p99.
#
# Usage: bench/load.sh [--pinned] [KEYS] [DURATION]    (defaults: 10000 10s; DURATION in seconds)
#   --pinned  servers (verifier, nginx) on the first half of the CPUs with one worker per CPU,
#             wrk on the other half with one thread per CPU (2 CPUs: servers on CPU 0, wrk on
#             CPU 1). Unpinned, wrk and the server take turns on the same CPUs, and the p99 wrk
#             reports is mostly its own time off the CPU (nginx's `return 200` shows it too);
#             pinned, the p99 is the server's.
# Needs: cargo, and wrk + nginx (Debian packages; installed with apt-get when missing).
set -euo pipefail
cd "$(dirname "$0")/.."

PIN_SERVER=()
PIN_CLIENT=()
THREADS=2
NGINX_WORKERS=auto
if [ "${1:-}" = --pinned ]; then
    shift
    # The CPUs this script may use (it may itself run under taskset), split in two halves.
    CPUS=()
    IFS=, read -ra ranges <<<"$(awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status)"
    for range in "${ranges[@]}"; do
        for ((cpu = ${range%-*}; cpu <= ${range#*-}; cpu++)); do CPUS+=("$cpu"); done
    done
    if [ ${#CPUS[@]} -lt 2 ]; then
        echo "bench/load.sh --pinned needs 2 CPUs (one for the servers, one for wrk); run it without --pinned" >&2
        exit 2
    fi
    HALF=$((${#CPUS[@]} / 2))
    SERVER_CPUS=$(IFS=,; echo "${CPUS[*]:0:HALF}")
    CLIENT_CPUS=$(IFS=,; echo "${CPUS[*]:HALF}")
    PIN_SERVER=(taskset -c "$SERVER_CPUS")
    PIN_CLIENT=(taskset -c "$CLIENT_CPUS")
    THREADS=$((${#CPUS[@]} - HALF))
    # The verifier runs one worker per CPU it may use; nginx gets as many.
    NGINX_WORKERS=$HALF
fi
KEYS=${1:-10000}
DURATION=${2:-10s}
CONNECTIONS=50
API_PORT=18080
METRICS_PORT=19090
NGINX_PORT=18081

missing=0
command -v wrk >/dev/null || missing=1
command -v nginx >/dev/null || [ -x /usr/sbin/nginx ] || missing=1
if [ "$missing" = 1 ]; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq wrk nginx curl >/dev/null
fi
NGINX=$(command -v nginx || echo /usr/sbin/nginx)

cargo build --release --locked --bin keysmith --example load_fixture
TARGET=${CARGO_TARGET_DIR:-target}/release

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

# 1. The emulator with KEYS ApiKeys; it serves until its stdin closes.
mkfifo "$WORK/fixture.in"
"$TARGET/examples/load_fixture" "$WORK" "$KEYS" <"$WORK/fixture.in" >"$WORK/fixture.out" 2>&1 &
PIDS+=($!)
exec 3>"$WORK/fixture.in"
until grep -q '^ready' "$WORK/fixture.out"; do
    if ! kill -0 "${PIDS[0]}" 2>/dev/null; then cat "$WORK/fixture.out"; exit 1; fi
    sleep 0.2
done
TOKEN=$(cat "$WORK/token")

# 2. The verifier.
START=$(date +%s%N)
KUBECONFIG="$WORK/kubeconfig" "${PIN_SERVER[@]}" "$TARGET/keysmith" verifier \
    --listen 127.0.0.1:$API_PORT --metrics-listen 127.0.0.1:$METRICS_PORT \
    --log-format json 2>"$WORK/verifier.log" &
VERIFIER=$!
PIDS+=($VERIFIER)
until curl -fsS -o /dev/null "http://127.0.0.1:$METRICS_PORT/readyz" 2>/dev/null; do
    if ! kill -0 "$VERIFIER" 2>/dev/null; then cat "$WORK/verifier.log"; exit 1; fi
    sleep 0.01
done
READY_MS=$((($(date +%s%N) - START) / 1000000))
RSS_KB=$(awk '/VmRSS/ {print $2}' "/proc/$VERIFIER/status")
INDEXED=$(curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" | awk '/^keysmith_index_tokens / {print $2}')

# 3. nginx: `return 200`, no access log.
mkdir -p "$WORK/nginx"
cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes $NGINX_WORKERS;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $WORK/nginx;
    proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx;
    uwsgi_temp_path $WORK/nginx;
    scgi_temp_path $WORK/nginx;
    server { listen 127.0.0.1:$NGINX_PORT; location / { return 200; } }
}
CONF
"${PIN_SERVER[@]}" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
NGINX_PID=$!
PIDS+=($NGINX_PID)
until curl -fsS -o /dev/null "http://127.0.0.1:$NGINX_PORT/" 2>/dev/null; do sleep 0.05; done

# 4. wrk. The same POST (a verification asking for an action on a resource) goes to both.
cat >"$WORK/verify.lua" <<LUA
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.body = '{"token":"$TOKEN","action":"content.read","resource":"content:pages:home"}'
LUA
answer=$(curl -fsS -X POST -H 'Content-Type: application/json' --data "$(sed -n "s/^wrk.body = '\(.*\)'$/\1/p" "$WORK/verify.lua")" "http://127.0.0.1:$API_PORT/v1/verify")
echo "$answer" | grep -q '"code":"VALID"' || { echo "unexpected answer: $answer"; exit 1; }

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
    "${PIN_CLIENT[@]}" wrk -t$THREADS -c$CONNECTIONS -d"$DURATION" --latency "$@" "$url" >"$WORK/$name.wrk"
    echo $(($(cpu_ticks "$server") - before)) >"$WORK/$name.ticks"
}
rps() { awk '/^Requests\/sec:/ {print $2}' "$WORK/$1.wrk"; }
p99_us() {
    awk '$1 == "99%" { v=$2; if (v ~ /us$/) {sub(/us/,"",v); print v}
        else if (v ~ /ms$/) {sub(/ms/,"",v); print v*1000} else if (v ~ /s$/) {sub(/s/,"",v); print v*1000000} }' "$WORK/$1.wrk"
}

run verify "$VERIFIER" "http://127.0.0.1:$API_PORT/v1/verify" -s "$WORK/verify.lua"
run authz "$VERIFIER" "http://127.0.0.1:$API_PORT/v1/authz?action=content.read&resource=content:pages:home" -H "Authorization: Bearer $TOKEN"
run nginx "$NGINX_PID" "http://127.0.0.1:$NGINX_PORT/" -s "$WORK/verify.lua"

NGINX_RPS=$(rps nginx)
echo
LAYOUT="servers and wrk share the CPUs"
[ ${#PIN_SERVER[@]} = 0 ] || LAYOUT="servers pinned to CPUs $SERVER_CPUS, wrk to CPUs $CLIENT_CPUS"
echo "machine: $(nproc) CPUs, $(uname -r); wrk -t$THREADS -c$CONNECTIONS -d$DURATION on loopback; $LAYOUT"
echo "index:   $INDEXED tokens from $KEYS ApiKeys; start to /readyz ${READY_MS} ms (process start, list, index)"
echo "memory:  verifier RSS ${RSS_KB} KiB once ready = $((RSS_KB * 1024 / KEYS)) bytes per token (whole process)"
# Server CPU per request: wrk shares the CPUs, so this is the cost the rate ratio comes from.
cpu_us() {
    awk -v t="$(cat "$WORK/$1.ticks")" -v hz="$(getconf CLK_TCK)" -v r="$(rps "$1")" \
        -v d="${DURATION%s}" 'BEGIN {printf "%.1f", t / hz * 1e6 / (r * d)}'
}
printf '%-10s %12s %9s %12s %14s\n' endpoint "requests/s" "vs nginx" "p99" "CPU/request"
for name in verify authz nginx; do
    r=$(rps $name)
    printf '%-10s %12s %9s %9s µs %11s µs\n' "$name" "$r" \
        "$(awk -v a="$r" -v b="$NGINX_RPS" 'BEGIN {printf "%.2f", a/b}')" "$(p99_us $name)" "$(cpu_us $name)"
done
ERRORS=$(grep -h 'Non-2xx\|Socket errors' "$WORK"/*.wrk || true)
[ -z "$ERRORS" ] || echo "wrk reported: $ERRORS"
# The verifier's own view: time to decide (index lookup, grants, restrictions), from its
# histogram, over the /v1/verify and /v1/authz runs; the rest of wrk's latency is HTTP, the kernel
# and waiting for a CPU.
DECISION_P99=$(curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" | awk 'BEGIN { n = 0 }
    /^keysmith_verify_duration_seconds_bucket/ { split($1, a, "\""); le[n] = a[2]; count[n] = $2; n++ }
    END { for (i = 0; i < n; i++) if (count[i] >= 0.99 * count[n - 1]) {
        if (le[i] == "+Inf") print "over 1 s"; else printf "at most %g µs", le[i] * 1e6; exit } }')
echo "decision time p99 (verifier histogram): $DECISION_P99"
echo "audit lines written: $(grep -c keysmith::audit "$WORK/verifier.log")"
