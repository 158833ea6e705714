#!/usr/bin/env bash
# Slow clients against the verifier, reproducible on one machine:
#   1. the API emulator with 100 ApiKeys (examples/load_fixture.rs),
#   2. `keysmith verifier` watching it (extra verifier flags are passed through),
#   3. CONNECTIONS slow clients, as MODE says, while one well-behaved client asks /v1/verify
#      once a second:
#      MODE=head (default) each sends a request head that never ends (a 1 KiB header line every
#        200 ms);
#      MODE=reader each has a 1 KiB receive buffer, pipelines `GET /nope` requests (up to 32 KiB
#        every 200 ms, as much as the verifier takes in) and never reads the answers;
#      MODE=idle each connects and sends nothing;
# then prints the verifier's resident memory before and at its peak, how many slow connections
# were still open each second and when the last one was shed, and whether the well-behaved
# client was answered throughout.
#
# Usage: bench/slowloris.sh [CONNECTIONS] [SECONDS] [-- VERIFIER FLAGS...]   (defaults: 300 30)
#   PROFILE=debug to use a debug build (default release); KEYSMITH=path to run another binary
#   (e.g. one built from an older commit, for a before/after comparison).
#   The slow clients connect from 127.0.0.1 and the well-behaved one from 127.0.0.2.
# Needs: cargo, curl, python3.
set -euo pipefail
cd "$(dirname "$0")/.."

CONNECTIONS=${1:-300}
SECONDS_RUN=${2:-30}
shift $(($# < 2 ? $# : 2))
[ "${1:-}" = -- ] && shift
PROFILE=${PROFILE:-release}
MODE=${MODE:-head}
case "$MODE" in head | reader | idle) ;; *) echo "MODE is head, reader or idle" >&2; exit 2 ;; esac
API_PORT=18180
METRICS_PORT=19190

if [ "$PROFILE" = release ]; then
    cargo build --release --locked --bin keysmith --example load_fixture
else
    cargo build --locked --bin keysmith --example load_fixture
fi
TARGET=${CARGO_TARGET_DIR:-target}/$PROFILE
KEYSMITH=${KEYSMITH:-$TARGET/keysmith}

WORK=$(mktemp -d)
PIDS=()
cleanup() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    rm -rf "$WORK"
}
trap cleanup EXIT

mkfifo "$WORK/fixture.in"
"$TARGET/examples/load_fixture" "$WORK" 100 <"$WORK/fixture.in" >"$WORK/fixture.out" 2>&1 &
PIDS+=($!)
exec 3>"$WORK/fixture.in"
until grep -q '^ready' "$WORK/fixture.out"; do
    if ! kill -0 "${PIDS[0]}" 2>/dev/null; then cat "$WORK/fixture.out"; exit 1; fi
    sleep 0.2
done
TOKEN=$(cat "$WORK/token")

KUBECONFIG="$WORK/kubeconfig" "$KEYSMITH" verifier \
    --listen 127.0.0.1:$API_PORT --metrics-listen 127.0.0.1:$METRICS_PORT \
    --log-format json --accept-namespaces '*' "$@" 2>"$WORK/verifier.log" >/dev/null &
VERIFIER=$!
PIDS+=("$VERIFIER")
until curl -fsS -o /dev/null "http://127.0.0.1:$METRICS_PORT/readyz" 2>/dev/null; do
    if ! kill -0 "$VERIFIER" 2>/dev/null; then cat "$WORK/verifier.log"; exit 1; fi
    sleep 0.05
done
echo "verifier ready: RSS $(awk '/VmRSS/ {print $2}' "/proc/$VERIFIER/status") kB"

python3 - "$API_PORT" "$CONNECTIONS" "$SECONDS_RUN" "$VERIFIER" "$TOKEN" "$MODE" <<'PY'
import http.client, json, socket, sys, time

port, n, seconds, pid, token, mode = (int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3]),
                                      sys.argv[4], sys.argv[5], sys.argv[6])

def rss_kb():
    with open(f"/proc/{pid}/status") as status:
        return next(int(l.split()[1]) for l in status if l.startswith("VmRSS"))

def verify():
    # From another loopback address than the slow clients: a client of its own.
    try:
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=2,
                                                source_address=("127.0.0.2", 0))
        connection.request("POST", "/v1/verify", body=json.dumps({"token": token}),
                           headers={"Content-Type": "application/json"})
        code = json.load(connection.getresponse())["code"]
        connection.close()
        return code
    except Exception as err:
        return f"failed ({type(err).__name__})"

slow = []
for _ in range(n):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if mode == "reader":
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)
    s.connect(("127.0.0.1", port))
    s.setblocking(False)
    try:
        if mode == "head":
            s.send(b"POST /v1/verify HTTP/1.1\r\nHost: x\r\n")
    except OSError:
        pass
    slow.append(s)
start = time.monotonic()
open_ = set(range(n))
if mode == "head":
    line = b"X-Padding: " + b"p" * 1010 + b"\r\n"
elif mode == "reader":
    line = b"GET /nope HTTP/1.1\r\nHost: x\r\n\r\n" * 1024
else:
    line = b""
peak, last_shed, answers, next_report = rss_kb(), None, [], 0.0
while time.monotonic() - start < seconds:
    for i in list(open_):
        try:
            # A reader's answers are never read, so only a failing send shows it was closed.
            if mode != "reader" and slow[i].recv(4096, socket.MSG_PEEK) == b"":
                raise ConnectionResetError
        except BlockingIOError:
            pass
        except OSError:
            open_.discard(i)
            last_shed = time.monotonic() - start
            continue
        try:
            if line:
                slow[i].send(line)
        except BlockingIOError:
            pass
        except OSError:
            open_.discard(i)
            last_shed = time.monotonic() - start
    peak = max(peak, rss_kb())
    elapsed = time.monotonic() - start
    if elapsed >= next_report:
        code = verify()
        answers.append(code)
        print(f"t={elapsed:5.1f}s slow connections open {len(open_):4d}  RSS {rss_kb():7d} kB  /v1/verify: {code}")
        next_report += 1.0
    time.sleep(0.2)
print(f"peak RSS {peak} kB; after {seconds:.0f} s: {len(open_)} of {n} slow connections open, RSS {rss_kb()} kB")
print("all slow connections shed" + (f" after {last_shed:.1f} s" if last_shed is not None else "")
      if not open_ else "slow connections still open")
print(f"well-behaved client: {sum(a == 'VALID' for a in answers)} of {len(answers)} answered VALID")
PY
curl -fsS "http://127.0.0.1:$METRICS_PORT/metrics" | grep -E '^keysmith_verifier_connections' || true
