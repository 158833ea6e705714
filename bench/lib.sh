# shellcheck shell=bash disable=SC2034  # sourced: the variables set here are read by the caller
# Start-up shared by the verifier's HTTP benchmarks (bench/load.sh, bench/openloop.sh); sourced
# from the repository root, never run. Each function sets the variables its comment names.

# split_cpus NAME: the CPUs this script may use (it may itself run under taskset), split in two
# halves, servers on the first, the load generator NAME on the second (2 CPUs: servers on CPU 0,
# NAME on CPU 1). Sets SERVER_CPUS, CLIENT_CPUS (lists for taskset -c), SERVER_CPU_COUNT,
# CLIENT_CPU_COUNT, PIN_SERVER and PIN_CLIENT (command prefixes). Fails on fewer than 2 CPUs.
split_cpus() {
    local cpus=() ranges range cpu
    IFS=, read -ra ranges <<<"$(awk '/^Cpus_allowed_list/ {print $2}' /proc/self/status)"
    for range in "${ranges[@]}"; do
        for ((cpu = ${range%-*}; cpu <= ${range#*-}; cpu++)); do cpus+=("$cpu"); done
    done
    if [ ${#cpus[@]} -lt 2 ]; then
        echo "$0: pinning needs 2 CPUs (one for the servers, one for $1); this process may use ${#cpus[@]}" >&2
        return 2
    fi
    SERVER_CPU_COUNT=$((${#cpus[@]} / 2))
    CLIENT_CPU_COUNT=$((${#cpus[@]} - SERVER_CPU_COUNT))
    SERVER_CPUS=$(IFS=,; echo "${cpus[*]:0:SERVER_CPU_COUNT}")
    CLIENT_CPUS=$(IFS=,; echo "${cpus[*]:SERVER_CPU_COUNT}")
    PIN_SERVER=(taskset -c "$SERVER_CPUS")
    PIN_CLIENT=(taskset -c "$CLIENT_CPUS")
}

# find_nginx: sets NGINX to the nginx binary (Debian installs it in /usr/sbin, often not on a
# user's PATH); fails when there is none.
find_nginx() {
    NGINX=$(command -v nginx || true)
    [ -n "$NGINX" ] || { [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx; }
    [ -n "$NGINX" ]
}

# build_verifier: the release `keysmith` binary and the fixture; sets TARGET.
build_verifier() {
    cargo build --release --locked --bin keysmith --example load_fixture
    TARGET=${CARGO_TARGET_DIR:-target}/release
}

# bench_workdir: a temporary folder WORK, removed on exit with every process listed in PIDS and
# the fixture, which is stopped by closing its stdin so that a real control plane stops with it.
bench_workdir() {
    WORK=$(mktemp -d)
    PIDS=()
    trap bench_cleanup EXIT
}
bench_cleanup() {
    exec 3>&-
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    # A fixture still creating its keys only reads its stdin at the end: give it 5 s.
    for _ in $(seq 50); do kill -0 "${FIXTURE:-}" 2>/dev/null || break; sleep 0.1; done
    kill "${FIXTURE:-}" 2>/dev/null || true
    wait 2>/dev/null || true
    rm -rf "$WORK"
}

# start_fixture KEYS [worst]: an API server with KEYS ApiKeys (examples/load_fixture.rs: the emulator,
# or with KEYSMITH_TEST_CLUSTER=real a real control plane built by `testenv/install`), on the
# server CPUs when pinned; it serves until its stdin (fd 3 here) closes. Sets TOKEN (one valid
# token) and FIXTURE (its pid) and writes WORK/kubeconfig (the verifier's ServiceAccount); with
# `worst`, also WORK/other-token and WORK/worst-token (see the fixture).
start_fixture() {
    mkfifo "$WORK/fixture.in"
    "${PIN_SERVER[@]}" "$TARGET/examples/load_fixture" "$WORK" "$@" \
        <"$WORK/fixture.in" >"$WORK/fixture.out" 2>&1 &
    FIXTURE=$!
    exec 3>"$WORK/fixture.in"
    until grep -q '^ready' "$WORK/fixture.out"; do
        if ! kill -0 "$FIXTURE" 2>/dev/null; then cat "$WORK/fixture.out" >&2; return 1; fi
        sleep 0.2
    done
    TOKEN=$(cat "$WORK/token")
}

# start_verifier API_PORT METRICS_PORT: `keysmith verifier` watching the fixture, accepting keys
# of every namespace on /v1/verify and /v1/authz, its log in WORK/verifier.log; waits for
# /readyz. Sets VERIFIER (its pid), READY_MS (process start to /readyz), READY_CPU (its CPU
# seconds by then: what listing and indexing cost it, apart from the API server's share),
# RSS_KB (once ready) and INDEXED (tokens in its index).
start_verifier() {
    local start
    start=$(date +%s%N)
    KUBECONFIG="$WORK/kubeconfig" "${PIN_SERVER[@]}" "$TARGET/keysmith" verifier \
        --listen "127.0.0.1:$1" --metrics-listen "127.0.0.1:$2" --accept-namespaces '*' \
        --log-format json 2>"$WORK/verifier.log" &
    VERIFIER=$!
    PIDS+=("$VERIFIER")
    wait_answering "http://127.0.0.1:$2/readyz" "$VERIFIER" "$WORK/verifier.log" || return 1
    READY_MS=$((($(date +%s%N) - start) / 1000000))
    READY_CPU=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.2f", ($14 + $15) / hz}' "/proc/$VERIFIER/stat")
    RSS_KB=$(awk '/VmRSS/ {print $2}' "/proc/$VERIFIER/status")
    INDEXED=$(curl -fsS "http://127.0.0.1:$2/metrics" | awk '/^keysmith_index_tokens / {print $2}')
}

# start_nginx PORT WORKERS: nginx answering `return 200` to everything, no access log, WORKERS
# worker processes (a number or auto), on the server CPUs when pinned; like the verifier it keeps
# a keep-alive connection open however many requests it carried (nginx closes one after 1,000 by
# default, and a client that sent a request on it as it closed counts an error). Sets NGINX_PID.
start_nginx() {
    mkdir -p "$WORK/nginx"
    cat >"$WORK/nginx/nginx.conf" <<CONF
worker_processes $2;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/error.log;
events { worker_connections 1024; }
http {
    access_log off;
    keepalive_requests 4294967295;
    client_body_temp_path $WORK/nginx;
    proxy_temp_path $WORK/nginx;
    fastcgi_temp_path $WORK/nginx;
    uwsgi_temp_path $WORK/nginx;
    scgi_temp_path $WORK/nginx;
    server { listen 127.0.0.1:$1; location / { return 200; } }
}
CONF
    "${PIN_SERVER[@]}" "$NGINX" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -g 'daemon off;' &
    NGINX_PID=$!
    PIDS+=("$NGINX_PID")
    wait_answering "http://127.0.0.1:$1/" "$NGINX_PID" "$WORK/nginx/error.log"
}

# wait_answering URL PID LOG: until URL answers 2xx; if PID exits first, print LOG and fail.
wait_answering() {
    until curl -fsS -o /dev/null "$1" 2>/dev/null; do
        if ! kill -0 "$2" 2>/dev/null; then cat "$3" >&2; return 1; fi
        sleep 0.01
    done
}

# The request both benchmarks send to /v1/verify (and to nginx): a verification asking for an
# action on a resource. Needs TOKEN.
verify_body() {
    echo "{\"token\":\"$TOKEN\",\"action\":\"content.read\",\"resource\":\"content:pages:home\"}"
}
AUTHZ_QUERY='action=content.read&resource=content:pages:home'

# check_verify API_PORT: the verifier answers VALID to verify_body, or the benchmark stops.
check_verify() {
    local answer
    answer=$(curl -fsS -X POST -H 'Content-Type: application/json' --data "$(verify_body)" \
        "http://127.0.0.1:$1/v1/verify")
    echo "$answer" | grep -q '"code":"VALID"' || { echo "$0: unexpected answer: $answer" >&2; return 1; }
}
