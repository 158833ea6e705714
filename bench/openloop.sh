#!/usr/bin/env bash
# Latency of the verifier at fixed request rates (open loop), against nginx in the same run:
#   1. the API emulator with KEYS ApiKeys and `keysmith verifier` watching it (release build),
#      nginx answering `return 200` with one worker per server CPU (bench/lib.sh, shared with
#      bench/load.sh);
#   2. servers on the first half of the CPUs this script may use, vegeta on the other half;
#   3. RUNS times, at each rate, vegeta sends requests at that constant rate to nginx, GET
#      /v1/authz and POST /v1/verify in turn, for DURATION each: it sends on schedule whether or
#      not earlier answers came back, so a slow server shows as latency instead of a lower rate
#      (a closed loop such as wrk waits, and hides it);
# then prints one table: the rate vegeta achieved, errors, p50 / p99 / p99.9 / max, and each
# p99 against nginx's at the same rate and run, and checks the target: at every rate, in every
# run, vegeta kept the rate on its CPUs without errors, and the verifier's p99 is within 1.2x
# nginx's and under 1 ms where nginx's is. It exits 0 either way; nothing here is asserted by a
# test. With --control it also measures how far nginx's p99 moves against itself; with --trace,
# what the tail is made of (below the table).
#
# Usage: bench/openloop.sh [--rates R1,R2,...] [--runs N] [--duration D] [--keys N] [--control]
#                          [--trace]
#   --rates     requests per second, comma-separated (default 1000,2000,5000,10000)
#   --runs      times every rate is measured, one run after another (default 3)
#   --duration  per endpoint, rate and run, as vegeta reads it: 500ms, 30s, 2m (default 10s)
#   --keys      ApiKeys the verifier indexes (default 10000)
#   --control   after the verifier's endpoints, send to nginx again ("nginx again"): its p99 against
#               nginx's first one in the same run is how much the ratio moves with no change of
#               server (the target's verdict leaves it out)
#   --trace     record the scheduler during every attack (perf, as root) and split each request's
#               latency into: before the server thread is woken, its wake-up delay, its time
#               awake, and after it sleeps again (the client's side); plus the server's context
#               switches per request, by thread. Meant for low rates: at 10,000 req/s a 10 s
#               attack writes a few hundred MB of events, deleted once read
# Needs: cargo, curl, python3, taskset, nginx (`apt-get install nginx`), 2 CPUs, and vegeta,
# which `testenv/install vegeta` builds from its pinned Go module (Go 1.26 or newer, once);
# --trace also perf (`apt-get install linux-perf`).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

usage() { sed -n '/^# Usage:/,/^set /s/^# \{0,1\}//p' bench/openloop.sh; }
# die CODE MESSAGE: 2 for a wrong argument, 1 for a missing tool.
die() { echo "bench/openloop.sh: $2" >&2; exit "$1"; }

RATES=1000,2000,5000,10000
RUNS=3
DURATION=10s
KEYS=10000
TRACE=
NAMES=(nginx authz verify)
while [ $# -gt 0 ]; do
    case $1 in
        --control) NAMES=(nginx authz verify nginx-again); shift; continue ;;
        --trace) TRACE=1; shift; continue ;;
        --rates) RATES=${2:-} ;;
        --runs) RUNS=${2:-} ;;
        --duration) DURATION=${2:-} ;;
        --keys) KEYS=${2:-} ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die 2 "unknown argument '$1'" ;;
    esac
    shift 2 || die 2 "$1 needs a value"
done
[[ $RATES =~ ^[1-9][0-9]*(,[1-9][0-9]*)*$ ]] ||
    die 2 "--rates '$RATES': give requests per second as whole numbers, comma-separated (e.g. 5000,20000)"
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || die 2 "--runs '$RUNS': give a whole number of runs, at least 1"
[[ $DURATION =~ ^[1-9][0-9]*(ms|s|m)$ ]] || die 2 "--duration '$DURATION': give a duration like 500ms, 30s or 2m"
[[ $KEYS =~ ^[1-9][0-9]*$ ]] || die 2 "--keys '$KEYS': give a whole number of ApiKeys, at least 1"

API_PORT=18280
METRICS_PORT=19290
NGINX_PORT=18281

VEGETA=$(testenv/install vegeta)/vegeta ||
    die 1 "vegeta is missing and could not be built (above): install Go 1.26 or newer, then run testenv/install vegeta"
find_nginx || die 1 "nginx is missing: install it with 'apt-get install nginx' (Debian, Ubuntu) or your system's package manager"
for tool in curl python3 taskset; do
    command -v $tool >/dev/null || die 1 "$tool is missing: install it (Debian, Ubuntu: apt-get install ${tool/taskset/util-linux})"
done
[ -z "$TRACE" ] || command -v perf >/dev/null ||
    die 1 "--trace needs perf: install it (Debian: apt-get install linux-perf) and run as root"
split_cpus vegeta || exit 2

build_verifier
bench_workdir
start_fixture "$KEYS"
start_verifier $API_PORT $METRICS_PORT
start_nginx $NGINX_PORT "$SERVER_CPU_COUNT"
check_verify $API_PORT

# vegeta's targets: nginx gets the same POST as /v1/verify (`return 200` ignores it).
verify_body >"$WORK/verify.json"
printf 'POST http://127.0.0.1:%s/\nContent-Type: application/json\n@%s\n' \
    $NGINX_PORT "$WORK/verify.json" >"$WORK/nginx.targets"
printf 'GET http://127.0.0.1:%s/v1/authz?%s\nAuthorization: Bearer %s\n' \
    $API_PORT "$AUTHZ_QUERY" "$TOKEN" >"$WORK/authz.targets"
printf 'POST http://127.0.0.1:%s/v1/verify\nContent-Type: application/json\n@%s\n' \
    $API_PORT "$WORK/verify.json" >"$WORK/verify.targets"

# attack RATE NAME: one constant-rate run, kept as vegeta's JSON report (rate achieved, status
# codes, errors) and every request's latency in ns (the third CSV column): vegeta's report
# estimates quantiles (a t-digest) and has no p99.9, so the table takes them from all latencies.
# vegeta opens at most MAX_CONNECTIONS connections, under the verifier's cap of 256 from one
# address (all of vegeta's come from 127.0.0.1): past it a request waits for a connection inside
# vegeta, and that wait counts in its latency. Unbounded, a stall of vegeta's own CPU made it open
# connections until both servers refused them, and every later request of the run failed
# (measured: 5,000 req/s, vegeta at 100% of its CPU, the server idle with 1,024 connections open);
# at 500, once a stall had opened more than 256, the verifier closed idle ones to make room for
# newer ones (its per-address cap, which nginx does not have), and vegeta counted each request it
# had just sent on one as an error (2026-12-07: thousands a run from 2,000 req/s up).
MAX_CONNECTIONS=250
attack() { # RATE NAME RUN
    local out=$WORK/$2.$1.$3 perf
    echo "bench/openloop.sh: run $3 of $RUNS, $2 at $1 req/s for $DURATION ($(date +%T))" >&2
    [ -z "$TRACE" ] || trace_start "$2" "$out"
    "${PIN_CLIENT[@]}" "$VEGETA" attack -targets="$WORK/${2%-again}.targets" -rate="$1/1s" \
        -duration="$DURATION" -timeout=5s -max-body=0 -max-connections=$MAX_CONNECTIONS \
        -name="$2" >"$out.bin"
    "${PIN_CLIENT[@]}" "$VEGETA" report -type=json "$out.bin" >"$out.json"
    "${PIN_CLIENT[@]}" "$VEGETA" encode -to=csv "$out.bin" | cut -d, -f1,3 >"$out.csv"
    cut -d, -f2 "$out.csv" >"$out.ns"
    rm "$out.bin"
    [ -z "$TRACE" ] || trace_end "$2" "$out"
}

# --trace: the threads of the server of an endpoint, those that answer requests (nginx's
# workers, the verifier's keysmith-api-N), and every thread's context switches so far.
server_tasks() { # NAME: /proc/PID/task/TID of every thread serving NAME
    local pid
    if [[ $1 == nginx* ]]; then
        for pid in $(pgrep -P "$NGINX_PID"); do echo /proc/"$pid"/task/*; done
    else
        echo /proc/"$VERIFIER"/task/*
    fi
}
serving_tids() {
    if [[ $1 == nginx* ]]; then pgrep -P "$NGINX_PID"; else grep -l '^keysmith-api' /proc/"$VERIFIER"/task/*/comm | cut -d/ -f5; fi
}
switches() {
    local task
    for task in $(server_tasks "$1"); do
        awk -v comm="$(cat "$task/comm")" '/^(non)?voluntary_ctxt/ {n += $2} END {print comm, n}' "$task/status"
    done
}
trace_start() { # NAME OUT: perf records scheduler events on every CPU, in the monotonic clock
    switches "$1" >"$2.switches0"
    perf record -q -k mono -e sched:sched_switch -e sched:sched_waking -a -o "$2.perf" &
    perf=$!
    sleep 0.5 # perf attaches to every CPU
    # vegeta stamps requests with the wall clock: the difference to the monotonic one.
    python3 -c 'import time; print(time.clock_gettime_ns(time.CLOCK_REALTIME) - time.clock_gettime_ns(time.CLOCK_MONOTONIC))' >"$2.offset"
}
trace_end() { # NAME OUT: the tail's parts, in OUT.trace
    kill -INT "$perf"
    wait "$perf" || true
    switches "$1" >"$2.switches1"
    local tids
    mapfile -t tids < <(serving_tids "$1")
    perf script -i "$2.perf" -F cpu,time,event,trace --ns 2>/dev/null |
        python3 bench/openloop_trace.py "$2" "${tids[@]}" >"$2.trace"
    rm "$2.perf"
}
# Run after run, so that a slow spell of the machine lands in one run of every rate rather than
# in every run of one rate.
IFS=, read -ra rates <<<"$RATES"
for ((run = 1; run <= RUNS; run++)); do
    for rate in "${rates[@]}"; do
        for name in "${NAMES[@]}"; do attack "$rate" "$name" $run; done
    done
done

echo
echo "machine: $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(uname -r); $(date -u '+%F %H:%M UTC'); load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "layout:  nginx and the verifier on CPUs $SERVER_CPUS (one worker per CPU each), vegeta on CPUs $CLIENT_CPUS; loopback, keep-alive"
echo "index:   $INDEXED tokens from $KEYS ApiKeys; verifier /readyz ${READY_MS} ms after start (${READY_CPU} CPU s), RSS ${RSS_KB} KiB"
# Connections the verifier closed at its caps: vegeta counts a request sent on one as an error.
curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" | awk '
    /^keysmith_verifier_connections_(evicted|rejected)_total / {sub(/^keysmith_verifier_connections_/, "", $1); sub(/_total$/, "", $1); c = c " " $1 " " $2}
    END {print "caps:    verifier connections" c}'
python3 - "$WORK" "$RATES" "$RUNS" "$DURATION" "${NAMES[@]}" <<'PY'
import json, math, sys

work, rates, runs, duration = sys.argv[1], [int(r) for r in sys.argv[2].split(",")], int(sys.argv[3]), sys.argv[4]
names = sys.argv[5:]
endpoint = {"nginx": "nginx", "authz": "/v1/authz", "verify": "/v1/verify", "nginx-again": "nginx again"}

rows = {}
for run in range(1, runs + 1):
    for rate in rates:
        for name in names:
            r = json.load(open(f"{work}/{name}.{rate}.{run}.json"))
            ms = sorted(int(line) / 1e6 for line in open(f"{work}/{name}.{rate}.{run}.ns"))
            # The nearest-rank quantile: the smallest latency at least q of the requests did not exceed.
            q = lambda q: ms[max(math.ceil(q * len(ms)), 1) - 1]
            rows[run, rate, name] = {
                "achieved": r["rate"],
                "requests": r["requests"],
                "errors": r["requests"] - r["status_codes"].get("200", 0),
                "messages": r.get("errors") or [],
                "p50": q(0.5), "p99": q(0.99), "p999": q(0.999), "max": ms[-1],
            }

print(f"\nopen loop, {duration} per endpoint, rate and run; latencies in ms; errors = answers other than 200")
head = ("run", "rate/s", "endpoint", "sent/s", "requests", "errors", "p50", "p99", "p99.9", "max", "p99/nginx")
fmt = "{:>3} {:>7} {:<11} {:>7} {:>9} {:>7} {:>7} {:>7} {:>7} {:>8} {:>10}"
print(fmt.format(*head))
for rate in rates:
    for run in range(1, runs + 1):
        base = rows[run, rate, "nginx"]["p99"]
        for name in names:
            x = rows[run, rate, name]
            ratio = "-" if name == "nginx" else f"{x['p99'] / base:.2f}"
            print(fmt.format(run, rate, endpoint[name], f"{x['achieved']:.0f}", x["requests"],
                             x["errors"], f"{x['p50']:.3f}", f"{x['p99']:.3f}", f"{x['p999']:.3f}",
                             f"{x['max']:.2f}", ratio))

# The target, per rate: in every run vegeta kept the rate (sent at least 99% of it: otherwise
# its CPUs, not the server, set the latencies, and the row is no fixed-rate measurement) without
# errors, and each verifier endpoint's p99 is at most 1.2x nginx's p99 of the same run, and under
# 1 ms whenever nginx's is.
print(f"\ntarget: at every rate, in all {runs} runs, the verifier's p99 within 1.2x nginx's and under 1 ms where nginx's is")
met_all = True
for rate in rates:
    failures = []
    for run in range(1, runs + 1):
        base = rows[run, rate, "nginx"]["p99"]
        for name in ("nginx", "authz", "verify"):
            x = rows[run, rate, name]
            if x["achieved"] < 0.99 * rate:
                failures.append(f"run {run}: vegeta sent {endpoint[name]} {x['achieved']:.0f} req/s, not sustained")
            if x["errors"]:
                failures.append(f"run {run}: {endpoint[name]} {x['errors']} errors: " + "; ".join(x["messages"][:3]))
            if name == "nginx":
                continue
            if x["p99"] > 1.2 * base:
                failures.append(f"run {run}: {endpoint[name]} p99 {x['p99']:.3f} ms > 1.2 x nginx's {base:.3f} ms")
            if base < 1 and x["p99"] >= 1:
                failures.append(f"run {run}: {endpoint[name]} p99 {x['p99']:.3f} ms, not under 1 ms as nginx's {base:.3f} ms")
    worst = max(rows[run, rate, n]["p99"] / rows[run, rate, "nginx"]["p99"]
                for run in range(1, runs + 1) for n in ("authz", "verify"))
    verdict = "met" if not failures else "MISSED"
    print(f"  {rate:>6} req/s: {verdict} (largest p99/nginx {worst:.2f}x)")
    for failure in failures:
        print(f"           {failure}")
    met_all &= not failures
print(f"target at every rate: {'met' if met_all else 'MISSED'}")
if "nginx-again" in names:
    print("\ncontrol: nginx again against nginx in the same run, p99 ratio (the same server: any move is the machine)")
    for rate in rates:
        ratios = [rows[run, rate, "nginx-again"]["p99"] / rows[run, rate, "nginx"]["p99"] for run in range(1, runs + 1)]
        print(f"  {rate:>6} req/s: " + ", ".join(f"{r:.2f}" for r in ratios))
PY
if [ -n "$TRACE" ]; then
    echo
    echo "--trace: where each request's time went, in us (bench/openloop_trace.py says how it is split)"
    for rate in "${rates[@]}"; do
        for ((run = 1; run <= RUNS; run++)); do
            for name in "${NAMES[@]}"; do
                echo "run $run, $rate req/s, $name:"
                cat "$WORK/$name.$rate.$run.trace"
            done
        done
    done
fi
