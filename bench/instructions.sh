#!/usr/bin/env bash
# Instructions the verifier spends per HTTP request, counted by valgrind's callgrind: unlike a
# request rate it holds still on a busy machine, so it can compare two builds change by change.
#   1. the API emulator with KEYS ApiKeys and the release `keysmith verifier` watching it
#      (bench/lib.sh, as bench/load.sh starts them), the verifier under callgrind, audit lines on
#      (`--log-format json`, to a file); a few requests of each kind to warm up;
#   2. 5 s without requests, for what the idle process spends meanwhile;
#   3. for GET /v1/authz and POST /v1/verify in turn (the requests bench/load.sh sends):
#      callgrind's counters zeroed, REQUESTS requests on one keep-alive connection, one at a
#      time, the counters dumped;
# then prints, per endpoint, (instructions in its window - idle instructions for as long) /
# requests answered (the verifier's own keysmith_verify_requests_total). Every thread of the
# process counts (request workers, the log writer); the kernel's work does not.
#
# Usage: bench/instructions.sh [KEYS] [REQUESTS] [OUTDIR]    (defaults: 1000 2000)
#   OUTDIR  keep the callgrind files there (callgrind.idle, .authz, .verify) for
#           `callgrind_annotate --inclusive=yes OUTDIR/callgrind.verify`, and the verifier's log
# Needs: cargo, curl, python3, valgrind (Debian, Ubuntu: apt-get install valgrind).
set -euo pipefail
cd "$(dirname "$0")/.."
source bench/lib.sh

KEYS=${1:-1000}
REQUESTS=${2:-2000}
OUTDIR=${3:-}
API_PORT=18380
METRICS_PORT=19390
for tool in curl python3 valgrind callgrind_control; do
    command -v $tool >/dev/null || {
        echo "bench/instructions.sh: $tool is missing: install it (Debian, Ubuntu: apt-get install ${tool/callgrind_control/valgrind})" >&2
        exit 1
    }
done

build_verifier
bench_workdir
PIN_SERVER=()
start_fixture "$KEYS"
# The verifier under callgrind. Instrumentation starts once it is ready (start-up runs faster
# without it) and only the windows below are counted.
# shellcheck disable=SC2034  # read by start_verifier (bench/lib.sh)
PIN_SERVER=(valgrind --tool=callgrind --instr-atstart=no "--callgrind-out-file=$WORK/callgrind"
    --log-file="$WORK/valgrind.log")
start_verifier $API_PORT $METRICS_PORT
callgrind_control --instr=on "$VERIFIER" >/dev/null 2>&1

# One keep-alive connection, one request in flight (as a gateway's connection carries them),
# the request bytes wrk sends in bench/load.sh; every answer is read whole before the next.
cat >"$WORK/send.py" <<'PY'
import socket, sys
port, count, request = int(sys.argv[1]), int(sys.argv[2]), open(sys.argv[3], "rb").read()
conn = socket.create_connection(("127.0.0.1", port))
conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
buffer = b""
def more():
    global buffer
    data = conn.recv(65536)
    if not data:
        sys.exit(f"the verifier closed the connection; it had answered {answered} requests")
    buffer += data
for answered in range(count):
    conn.sendall(request)
    while b"\r\n\r\n" not in buffer:
        more()
    head, buffer = buffer.split(b"\r\n\r\n", 1)
    if not head.startswith(b"HTTP/1.1 200"):
        sys.exit(f"unexpected answer: {head!r}")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, value = line.split(b":", 1)
        if name.strip().lower() == b"content-length":
            length = int(value)
    while len(buffer) < length:
        more()
    buffer = buffer[length:]
PY
HOST="Host: 127.0.0.1:$API_PORT"
printf 'GET /v1/authz?%s HTTP/1.1\r\n%s\r\nAuthorization: Bearer %s\r\n\r\n' \
    "$AUTHZ_QUERY" "$HOST" "$TOKEN" >"$WORK/authz.http"
BODY=$(verify_body)
printf 'POST /v1/verify HTTP/1.1\r\n%s\r\nContent-Length: %d\r\nContent-Type: application/json\r\n\r\n%s' \
    "$HOST" ${#BODY} "$BODY" >"$WORK/verify.http"
authz() { python3 "$WORK/send.py" $API_PORT "$REQUESTS" "$WORK/authz.http"; }
verify() { python3 "$WORK/send.py" $API_PORT "$REQUESTS" "$WORK/verify.http"; }
AUTHZ_URL="http://127.0.0.1:$API_PORT/v1/authz?$AUTHZ_QUERY"
VERIFY_URL="http://127.0.0.1:$API_PORT/v1/verify"
idle() { sleep "$IDLE_SECONDS"; }

# Warm-up: first-use allocations, lazily built tables, the usage mark of the token.
check_verify $API_PORT
for _ in 1 2 3; do
    curl -fsS -o /dev/null -H "Authorization: Bearer $TOKEN" "$AUTHZ_URL"
    curl -fsS -o /dev/null -X POST -H 'Content-Type: application/json' --data "$(verify_body)" "$VERIFY_URL"
done

answered() { # endpoint: VALID answers so far
    curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" |
        awk -v e="$1" '$1 == "keysmith_verify_requests_total{endpoint=\"" e "\",code=\"VALID\"}" {print $2}'
}
DUMPS=0
# window NAME ACTION: zero the counters, run ACTION, dump; sets INSTRUCTIONS, SECONDS_TAKEN and
# ANSWERED, and keeps the dump as WORK/callgrind.NAME.
window() {
    local before start
    before=$(answered "$1")
    callgrind_control -z "$VERIFIER" >/dev/null 2>&1
    start=$(date +%s%N)
    "$2" >"$WORK/$1.out"
    SECONDS_TAKEN=$(awk -v ns=$(($(date +%s%N) - start)) 'BEGIN {print ns / 1e9}')
    callgrind_control --dump="$1" "$VERIFIER" >/dev/null 2>&1
    DUMPS=$((DUMPS + 1))
    mv "$WORK/callgrind.$DUMPS" "$WORK/callgrind.$1"
    INSTRUCTIONS=$(awk '/^(summary|totals):/ {print $2; exit}' "$WORK/callgrind.$1")
    ANSWERED=$(($(answered "$1") - before))
}

# valgrind's virtual CPU lacks the SHA extensions, so the token's SHA-256 runs in software here
# (sha2's `soft` backend, about 3,400 instructions per 64-byte block) where a CPU with SHA-NI
# takes a few hundred: shown apart, as it is not what production pays.
sha256_instructions() {
    callgrind_annotate "$1" 2>/dev/null | awk '/sha2::sha256/ {gsub(/,/, "", $1); s += $1} END {print s + 0}'
}

IDLE_SECONDS=5
window idle idle
IDLE_PER_SECOND=$(awk -v i="$INSTRUCTIONS" -v s="$SECONDS_TAKEN" 'BEGIN {print i / s}')
echo "verifier: release build, $KEYS ApiKeys, audit lines on (--log-format json), valgrind $(valgrind --version | sed 's/valgrind-//')"
echo "idle:     $(printf %.0f "$IDLE_PER_SECOND") instructions a second, subtracted from each window"
printf '%-8s %9s %14s %13s %22s\n' endpoint requests instructions "per request" "of which SHA-256 (sw)"
for name in authz verify; do
    window $name $name
    [ "$ANSWERED" -gt 0 ] || { echo "bench/instructions.sh: no VALID $name answers; see $WORK/$name.out" >&2; exit 1; }
    printf '%-8s %9s %14s %13.0f %22.0f\n' $name "$ANSWERED" "$INSTRUCTIONS" \
        "$(awk -v i="$INSTRUCTIONS" -v s="$SECONDS_TAKEN" -v r="$ANSWERED" -v idle="$IDLE_PER_SECOND" \
            'BEGIN {print (i - idle * s) / r}')" \
        "$(awk -v i="$(sha256_instructions "$WORK/callgrind.$name")" -v r="$ANSWERED" 'BEGIN {print i / r}')"
done
if [ -n "$OUTDIR" ]; then
    mkdir -p "$OUTDIR"
    cp "$WORK/callgrind.idle" "$WORK/callgrind.authz" "$WORK/callgrind.verify" "$WORK/verifier.log" "$OUTDIR/"
    echo "callgrind files in $OUTDIR (callgrind_annotate --inclusive=yes $OUTDIR/callgrind.verify)"
fi
