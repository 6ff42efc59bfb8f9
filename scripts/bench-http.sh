#!/usr/bin/env bash
# HTTP throughput and latency of the release server, with wrk, on 127.0.0.1 only.
#
#   bash scripts/bench-http.sh                      # both engines, sqlite then postgres
#   bash scripts/bench-http.sh --engine postgres    # one engine (sqlite|postgres|both)
#   bash scripts/bench-http.sh --no-build           # use the existing .build/release/reciprocity
#   bash scripts/bench-http.sh --nginx-only         # only the nginx reference (checks wrk + nginx)
#
# Options:
#   --engine E          sqlite | postgres | both (default both)
#   --duration S        seconds per measured wrk run (default 10)
#   --warmup S          seconds of unmeasured load before each measured run (default 2; 0 = none)
#   --connections N     wrk connections (default 64)
#   --threads N         wrk threads (default 2)
#   --no-build          skip the release build (scripts/lib/release-build.sh)
#   --no-nginx          skip the nginx reference
#   --nginx-only        only the nginx reference (no build, no server)
#   --unique-customers  every PUT by a new customer (default: all by a@example.com)
#   --linked-orders     every order sends the buyer's IP and user agent, so each one gets a referral
#                       attribution job (decision 0022; default: orders name no link and get none)
#
# What it does, per engine: starts `reciprocity serve` (release build, or
# $RECIPROCITY_BIN) on a free port with RECIPROCITY_LOG_LEVEL=warning and a fresh
# database (SQLite file in a temp dir; a throw-away PostgreSQL from
# scripts/lib/pg-throwaway.sh), creates a workspace and a write key with the
# CLI, reads the idle RSS, then runs wrk --latency against
#   GET /_/redirect              bare 302 route, no DB work (the reference)
#   PUT /api/v1/orders/{id}      scripts/wrk/put-orders.lua, a new id per request
# and reads the RSS again, and the jobs' states (the order fan-out the worker had
# not yet done). nginx (`return 302`, temp config, foreground, own free port) is
# measured once as a second reference.
#
# Prints a table (req/s, p50, p99, non-2xx/3xx, ratio to the engine's bare
# route and to nginx) and the RSS figures. On the script's own throw-away PostgreSQL it also counts the
# COMMITs that took 20 ms or more during the PUT load (PostgreSQL's log_min_duration_statement): waits for the
# disk's flush, which decide a run's p99 on a VM whose fsync stalls now and then. The raw output of every run and the
# table go to bench/results/http-<UTC timestamp>.txt.
#
# RECIPROCITY_SERVE_WRAPPER="CMD ARGS" starts `serve` as `CMD ARGS BIN serve` (scripts/release/symbol-order.sh
# records the functions the server calls this way); the figures of such a run say nothing about speed.
#
# Everything is bounded: each wrk run by `timeout`, every wait by a deadline.
# wrk and the server share the 2 cores, so compare ratios more than absolutes.
# Installs wrk, nginx and curl with apt-get when missing (run as root).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT=$(pwd)
# shellcheck source=scripts/lib/release-build.sh
source "$REPO_ROOT/scripts/lib/release-build.sh"

ENGINE_ARG=both
DURATION=10
WARMUP=2
CONNECTIONS=64
THREADS=2
BUILD=1
NGINX=1
NGINX_ONLY=0
UNIQUE_CUSTOMERS=0
LINKED_ORDERS=0
SERVE_WRAPPER=${RECIPROCITY_SERVE_WRAPPER:-}

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "bench-http: $*" >&2; exit 1; }
log() { echo "bench-http: $*" >&2; }

while (($#)); do
    case "$1" in
        --engine) ENGINE_ARG=${2:?--engine needs a value}; shift 2 ;;
        --engine=*) ENGINE_ARG=${1#*=}; shift ;;
        --duration) DURATION=${2:?}; shift 2 ;;
        --warmup) WARMUP=${2:?}; shift 2 ;;
        --connections) CONNECTIONS=${2:?}; shift 2 ;;
        --threads) THREADS=${2:?}; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        --no-nginx) NGINX=0; shift ;;
        --nginx-only) NGINX_ONLY=1; NGINX=1; BUILD=0; shift ;;
        --unique-customers) UNIQUE_CUSTOMERS=1; shift ;;
        --linked-orders) LINKED_ORDERS=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage >&2; die "unknown argument: $1" ;;
    esac
done
for n in "$DURATION" "$WARMUP" "$CONNECTIONS" "$THREADS"; do
    [[ "$n" =~ ^[0-9]+$ ]] || die "not a number: $n"
done
((DURATION > 0 && DURATION <= 300)) || die "--duration must be 1..300"
((WARMUP <= 60)) || die "--warmup must be 0..60"
((CONNECTIONS >= THREADS && THREADS > 0)) || die "need --connections >= --threads > 0"

case "$ENGINE_ARG" in
    sqlite) ENGINES=(sqlite) ;;
    postgres) ENGINES=(postgres) ;;
    both) ENGINES=(sqlite postgres) ;;
    *) die "--engine must be sqlite, postgres or both" ;;
esac
((NGINX_ONLY)) && ENGINES=()

if ! command -v swift >/dev/null 2>&1 && [[ -x /opt/swift/usr/bin/swift ]]; then
    export PATH="$PATH:/opt/swift/usr/bin"
fi

# ---------------------------------------------------------------- tools

install_missing() {
    local need=(wrk curl)
    ((NGINX)) && need+=(nginx)
    # shellcheck disable=SC2046
    bench_install $(bench_missing "${need[@]}") || die "could not install what the benchmark needs"
}
# shellcheck source=scripts/lib/bench-tools.sh
source scripts/lib/bench-tools.sh
install_missing
NGINX_BIN=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)

# ---------------------------------------------------------------- state and cleanup

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-http.XXXXXX")
SERVER_PID=""
NGINX_PID=""
PG_DB=""

stop_pid() { # pid [seconds]: TERM, then KILL after the grace period
    local pid=$1 grace=${2:-10} i
    [[ -n "$pid" ]] || return 0
    kill -0 "$pid" 2>/dev/null || { wait "$pid" 2>/dev/null || true; return 0; }
    kill -TERM "$pid" 2>/dev/null || true
    for ((i = 0; i < grace * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    if kill -0 "$pid" 2>/dev/null; then
        log "pid $pid still alive ${grace}s after SIGTERM: SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
    fi
    wait "$pid" 2>/dev/null || true
}

cleanup() {
    local rc=$?
    trap - EXIT
    stop_pid "$SERVER_PID" 15
    stop_pid "$NGINX_PID" 5
    if [[ -n "$PG_DB" && -n "${RECIPROCITY_TEST_POSTGRES_URL:-}" ]]; then
        psql "$RECIPROCITY_TEST_POSTGRES_URL" -X -q -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" \
            </dev/null >/dev/null 2>&1 || true
    fi
    if declare -F pg_throwaway_stop >/dev/null; then pg_throwaway_stop || true; fi
    rm -rf -- "$WORK"
    exit "$rc"
}
install_traps() {
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}
install_traps

free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# ---------------------------------------------------------------- results

mkdir -p bench/results
[[ -f bench/results/.gitignore ]] || printf '*\n!.gitignore\n' >bench/results/.gitignore
TS=$(date -u +%Y%m%dT%H%M%SZ)
RAW="$REPO_ROOT/bench/results/http-$TS.txt"
ROWS="$WORK/rows.tsv"   # label \t route \t file-of-wrk-output
RSS_ROWS="$WORK/rss.tsv" # engine \t idle kB \t after kB
JOB_ROWS="$WORK/jobs.tsv" # engine \t job states right after the PUT load
COMMIT_ROWS="$WORK/commits.tsv" # engine \t COMMITs >= 20 ms during the PUT load \t the longest, ms
: >"$COMMIT_ROWS"
: >"$ROWS"
: >"$RSS_ROWS"
: >"$JOB_ROWS"
raw() { printf '%s\n' "$*" >>"$RAW"; }

{
    echo "# bench-http $TS"
    echo "# git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (dirty)')"
    echo "# host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
    echo "# wrk: -t$THREADS -c$CONNECTIONS -d${DURATION}s --latency, warmup ${WARMUP}s; engines: ${ENGINES[*]:-none}; nginx: $NGINX"
    echo "# $(wrk -v 2>&1 | head -n 1)"
} >"$RAW"

# run_wrk LABEL ROUTE URL [wrk args...]: warm-up, then the measured run; output kept.
run_wrk() {
    local label=$1 route=$2 url=$3
    shift 3
    local out
    out="$WORK/wrk-$(wc -l <"$ROWS").txt"
    if ((WARMUP > 0)); then
        log "$label $route: ${WARMUP}s warm-up"
        RCP_RUN_ID="${RUN_PREFIX:-x}-warm" timeout --kill-after=5 $((WARMUP + 30)) \
            wrk -t"$THREADS" -c"$CONNECTIONS" -d"${WARMUP}s" --timeout 10s "$@" "$url" >/dev/null 2>&1 ||
            log "warm-up exited non-zero (ignored)"
    fi
    log "$label $route: ${DURATION}s"
    local rc=0
    RCP_RUN_ID="${RUN_PREFIX:-x}-run" timeout --kill-after=5 $((DURATION + 30)) \
        wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --timeout 10s --latency "$@" "$url" >"$out" 2>&1 || rc=$?
    {
        echo
        echo "## $label $route  ($url)"
        cat "$out"
    } >>"$RAW"
    ((rc == 0)) || { cat "$out" >&2; die "wrk exited $rc for $label $route"; }
    printf '%s\t%s\t%s\n' "$label" "$route" "$out" >>"$ROWS"
}

# ---------------------------------------------------------------- nginx reference

bench_nginx() {
    local dir="$WORK/nginx" port
    mkdir -p "$dir/logs" "$dir/tmp"
    port=$(free_port)
    cat >"$dir/nginx.conf" <<CONF
daemon off;
master_process on;
worker_processes auto;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    server {
        listen 127.0.0.1:$port;
        location / { return 302 /; }
    }
}
CONF
    log "nginx on 127.0.0.1:$port"
    "$NGINX_BIN" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" >"$dir/logs/stdout.log" 2>&1 &
    NGINX_PID=$!
    local deadline=$((SECONDS + 15)) code=""
    while ((SECONDS < deadline)); do
        kill -0 "$NGINX_PID" 2>/dev/null || { cat "$dir/logs/"*.log >&2; die "nginx exited on start"; }
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "http://127.0.0.1:$port/_/redirect" || true)
        [[ "$code" == 302 ]] && break
        sleep 0.1
    done
    [[ "$code" == 302 ]] || { cat "$dir/logs/"*.log >&2; die "nginx did not answer 302 within 15 s"; }
    RUN_PREFIX="nginx-$TS" run_wrk nginx "GET /_/redirect (nginx return 302)" "http://127.0.0.1:$port/_/redirect"
    stop_pid "$NGINX_PID" 5
    NGINX_PID=""
}

# ---------------------------------------------------------------- the server

BIN=""
if ((${#ENGINES[@]})); then
    if ((BUILD)); then
        log "swift build ${RELEASE_BUILD_FLAGS[*]}"
        if ! release_build --product reciprocity 2>&1 | tail -n 20; then
            die "swift build ${RELEASE_BUILD_FLAGS[*]} failed"
        fi
        BIN="$(release_bin_path)/reciprocity"
    fi
    BIN=${RECIPROCITY_BIN:-${BIN:-$REPO_ROOT/.build/release/reciprocity}}
    [[ -x "$BIN" ]] || die "no server binary at $BIN (drop --no-build, or set RECIPROCITY_BIN)"
    release_bin_check "$BIN"
    log "server binary: $BIN"
    raw "# server binary: $BIN"
    [[ -z "$SERVE_WRAPPER" ]] || raw "# serve wrapped by: $SERVE_WRAPPER (not a speed measurement)"
fi

rss_kb() { awk '/^VmRSS:/ {print $2}' "/proc/$1/status" 2>/dev/null || echo "?"; }

# server_env ENGINE DB_URL PORT DIR: the environment of `serve` and the CLI
server_env() {
    SENV=(
        "RECIPROCITY_DATABASE_URL=$2"
        "RECIPROCITY_HOST=127.0.0.1"
        "RECIPROCITY_PORT=$3"
        "RECIPROCITY_BASE_URL=http://127.0.0.1:$3"
        "RECIPROCITY_DATA_DIR=$4/data"
        "RECIPROCITY_LOG_LEVEL=warning"
    )
}

server_tail() {
    local dir=$1
    echo "--- server stdout (tail)" >&2; tail -n 40 "$dir/server.stdout.log" >&2 2>/dev/null || true
    echo "--- server stderr (tail)" >&2; tail -n 40 "$dir/server.stderr.log" >&2 2>/dev/null || true
}

bench_engine() {
    local engine=$1
    local dir="$WORK/$engine" port db_url
    mkdir -p "$dir/data"
    if [[ "$engine" == sqlite ]]; then
        db_url="sqlite://$dir/db.sqlite"
    else
        if [[ -z "${RECIPROCITY_TEST_POSTGRES_URL:-}" ]]; then
            # shellcheck source=scripts/lib/pg-throwaway.sh
            source "$REPO_ROOT/scripts/lib/pg-throwaway.sh"
            pg_throwaway_start || die "could not start a throw-away PostgreSQL"
            install_traps # pg_throwaway_start replaced our EXIT trap; cleanup() calls pg_throwaway_stop
        fi
        PG_DB="rcp_bench_$(date +%s)_$$"
        psql "$RECIPROCITY_TEST_POSTGRES_URL" -X -q -v ON_ERROR_STOP=1 -c "CREATE DATABASE \"$PG_DB\"" </dev/null ||
            die "CREATE DATABASE failed"
        db_url="${RECIPROCITY_TEST_POSTGRES_URL%/*}/$PG_DB"
    fi
    port=$(free_port)
    server_env "$engine" "$db_url" "$port" "$dir"
    local base="http://127.0.0.1:$port"

    log "[$engine] reciprocity serve on $base ($db_url)"
    # shellcheck disable=SC2086 # the wrapper is a command line of words
    (cd "$dir" && exec env "${SENV[@]}" $SERVE_WRAPPER "$BIN" serve </dev/null >"$dir/server.stdout.log" 2>"$dir/server.stderr.log") &
    SERVER_PID=$!
    local deadline=$((SECONDS + 90)) code=""
    while ((SECONDS < deadline)); do
        kill -0 "$SERVER_PID" 2>/dev/null || { server_tail "$dir"; die "[$engine] server exited on start"; }
        code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 2 "$base/healthz" || true)
        [[ "$code" == 200 ]] && break
        sleep 0.1
    done
    [[ "$code" == 200 ]] || { server_tail "$dir"; die "[$engine] /healthz not 200 within 90 s (last: $code)"; }

    local out key
    env "${SENV[@]}" "$BIN" workspace create --slug bench --name "Shop" --sender-email shop@example.com \
        </dev/null >"$dir/cli-workspace.log" 2>&1 || { cat "$dir/cli-workspace.log" >&2; die "[$engine] workspace create failed"; }
    out=$(env "${SENV[@]}" "$BIN" apikey create --workspace bench --name load --scope write </dev/null 2>"$dir/cli-apikey.err") ||
        { echo "$out" >&2; cat "$dir/cli-apikey.err" >&2; die "[$engine] apikey create failed"; }
    key=$(grep -m 1 -oE '^rcp_[^[:space:]]+' <<<"$out" || true)
    [[ -n "$key" ]] || { echo "$out" >&2; die "[$engine] no rcp_ key in the output of apikey create"; }

    # Sanity: the routes answer as the benchmark expects, so wrk measures the real thing, not errors.
    code=$(curl -s -o /dev/null -w '%{http_code}' --max-time 10 "$base/_/redirect" || true)
    [[ "$code" == 302 ]] || die "[$engine] GET /_/redirect answered $code, expected 302"
    local body='{"customer":{"email":"a@example.com","first_name":"Anna","last_name":"Muster","locale":"de"},"currency":"EUR","items":[{"sku":"SKU-1","name":"Tee","quantity":2,"unit_price":"9.90"}],"totals":{"total":"19.80"},"status":"placed"}'
    code=$(curl -s -o "$dir/probe.json" -w '%{http_code}' --max-time 30 -X PUT \
        -H "Authorization: Bearer $key" -H 'Content-Type: application/json' --data "$body" \
        "$base/api/v1/orders/bench-probe-$TS" || true)
    [[ "$code" == 201 ]] || { cat "$dir/probe.json" >&2; echo >&2; die "[$engine] probe PUT answered $code, expected 201"; }

    # Idle RSS: after start-up and the CLI calls, before any load (settled for a second).
    sleep 1
    local rss_idle rss_after
    rss_idle=$(rss_kb "$SERVER_PID")
    raw ""
    raw "## [$engine] idle VmRSS before load: ${rss_idle} kB"

    RUN_PREFIX="$engine-redirect-$TS" run_wrk "$engine" "GET /_/redirect" "$base/_/redirect"
    # On our own throw-away cluster, PostgreSQL logs every statement that takes 20 ms or more, so the table can
    # say how often a COMMIT waited that long for the disk's flush during the PUT load: a few such waits in a run
    # decide its p99 (docs/decisions/0023-postgres-column-arrays.md).
    local pg_log="" pg_log_from=0
    if [[ "$engine" == postgres && -n "${PG_THROWAWAY_DIR:-}" && -f "$PG_THROWAWAY_DIR/server.log" ]]; then
        pg_log="$PG_THROWAWAY_DIR/server.log"
        psql "$RECIPROCITY_TEST_POSTGRES_URL" -X -q -c "ALTER SYSTEM SET log_min_duration_statement = 20" \
            -c "SELECT pg_reload_conf()" </dev/null >/dev/null 2>&1 || pg_log=""
        [[ -z "$pg_log" ]] || pg_log_from=$(wc -l <"$pg_log")
    fi
    RCP_API_KEY="$key" RCP_UNIQUE_CUSTOMERS="$UNIQUE_CUSTOMERS" RCP_LINKED_ORDERS="$LINKED_ORDERS" RUN_PREFIX="$engine-put-$TS" \
        run_wrk "$engine" "PUT /api/v1/orders/{id}" "$base/api/v1/orders" -s "$REPO_ROOT/scripts/wrk/put-orders.lua"
    if [[ -n "$pg_log" ]]; then
        local commits
        commits=$(tail -n +"$((pg_log_from + 1))" "$pg_log" |
            { grep -E 'duration: [0-9.]+ ms +(execute [^:]*|statement): COMMIT' || true; } |
            sed -E 's/.*duration: ([0-9.]+) ms.*/\1/' | sort -n | awk '{n++; v=$1} END {printf "%d\t%s", n, (n ? v : "-")}')
        printf '%s\t%s\n' "$engine" "$commits" >>"$COMMIT_ROWS"
        raw "## [$engine] COMMITs of 20 ms or more during the PUT load (count, longest ms): $commits"
    fi

    kill -0 "$SERVER_PID" 2>/dev/null || { server_tail "$dir"; die "[$engine] server died under load"; }
    rss_after=$(rss_kb "$SERVER_PID")
    raw ""
    raw "## [$engine] VmRSS after load: ${rss_after} kB"
    printf '%s\t%s\t%s\n' "$engine" "$rss_idle" "$rss_after" >>"$RSS_ROWS"
    # Every order fans out jobs (referrals.attribute): what the worker had not yet done when the load ended.
    local jobs sql="SELECT state || ' ' || COUNT(*) FROM jobs GROUP BY state ORDER BY state"
    if [[ "$engine" == sqlite ]]; then
        jobs=$(python3 -c 'import sqlite3, sys; print(", ".join(r[0] for r in sqlite3.connect(sys.argv[1]).execute(sys.argv[2])))' \
            "$dir/db.sqlite" "$sql" 2>&1) || jobs="(not read: $jobs)"
    else
        jobs=$(psql "$db_url" -X -q -At -c "$sql" </dev/null 2>&1 | paste -sd, | sed 's/,/, /g') || jobs="(not read)"
    fi
    raw "## [$engine] jobs right after the PUT load: $jobs"
    printf '%s\t%s\n' "$engine" "$jobs" >>"$JOB_ROWS"
    if [[ -s "$dir/server.stderr.log" ]]; then
        raw "## [$engine] server stderr (last 20 lines)"
        tail -n 20 "$dir/server.stderr.log" >>"$RAW"
    fi

    stop_pid "$SERVER_PID" 15
    SERVER_PID=""
    if [[ -n "$PG_DB" ]]; then
        psql "$RECIPROCITY_TEST_POSTGRES_URL" -X -q -c "DROP DATABASE IF EXISTS \"$PG_DB\" WITH (FORCE)" </dev/null >/dev/null 2>&1 || true
        PG_DB=""
    fi
}

# ---------------------------------------------------------------- run

((NGINX)) && bench_nginx
for engine in "${ENGINES[@]}"; do
    bench_engine "$engine"
done

# ---------------------------------------------------------------- table

report() {
    python3 - "$ROWS" "$RSS_ROWS" "$JOB_ROWS" "$COMMIT_ROWS" <<'PY'
import re, sys

UNIT_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0, "h": 3600000.0}

def ms(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m|h)", text)
    return float(m.group(1)) * UNIT_MS[m.group(2)] if m else None

def parse(path):
    text = open(path, encoding="utf-8", errors="replace").read()
    r = {"rps": None, "p50": None, "p99": None, "non2xx": 0, "sockerr": 0, "requests": None, "extra": []}
    m = re.search(r"^Requests/sec:\s+([\d.]+)", text, re.M)
    r["rps"] = float(m.group(1)) if m else None
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(rf"^\s+{pct}(?:\.000)?%\s+(\S+)", text, re.M)
        r[key] = ms(m.group(1)) if m else None
    m = re.search(r"^\s+(\d+) requests in", text, re.M)
    r["requests"] = int(m.group(1)) if m else None
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    r["non2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    r["sockerr"] = sum(map(int, m.groups())) if m else 0
    r["extra"] = re.findall(r"^put-orders: .*$", text, re.M)
    return r

rows = []
for line in open(sys.argv[1], encoding="utf-8"):
    label, route, path = line.rstrip("\n").split("\t")
    rows.append((label, route, parse(path)))

nginx = next((r["rps"] for label, _, r in rows if label == "nginx"), None)
bare = {label: r["rps"] for label, route, r in rows if route == "GET /_/redirect"}

def fmt_ms(v):
    return "-" if v is None else (f"{v:.2f} ms" if v < 100 else f"{v:.0f} ms")

def ratio(a, b):
    return "-" if not a or not b else f"{a / b:.2f}"

head = ("engine", "route", "req/s", "p50", "p99", "errors", "vs bare", "vs nginx")
table = [head]
for label, route, r in rows:
    errors = r["non2xx"] + r["sockerr"]
    table.append((
        label, route,
        "-" if r["rps"] is None else f"{r['rps']:,.0f}",
        fmt_ms(r["p50"]), fmt_ms(r["p99"]),
        str(errors) if r["requests"] is None else f"{errors}/{r['requests']}",
        ratio(r["rps"], bare.get(label)) if label != "nginx" else "-",
        ratio(r["rps"], nginx),
    ))
widths = [max(len(row[i]) for row in table) for i in range(len(head))]
right = {2, 3, 4, 5, 6, 7}
for n, row in enumerate(table):
    print("  ".join(c.rjust(w) if i in right else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))))
    if n == 0:
        print("  ".join("-" * w for w in widths))
print()
print("errors = non-2xx/3xx responses + socket errors, of all requests; vs bare = req/s / the engine's GET /_/redirect;")
print("vs nginx = req/s / nginx return 302")
for label, route, r in rows:
    for line in r["extra"]:
        print(f"{label} {route}: {line}")

rss = [l.rstrip("\n").split("\t") for l in open(sys.argv[2], encoding="utf-8") if l.strip()]
if rss:
    print()
    print("server VmRSS     idle (before load)    after load")
    for engine, idle, after in rss:
        def mib(v):
            return f"{int(v) / 1024:.1f} MiB" if v.isdigit() else v
        print(f"  {engine:<12} {mib(idle):>18}    {mib(after):>10}")
jobs = [l.rstrip("\n").split("\t", 1) for l in open(sys.argv[3], encoding="utf-8") if l.strip()]
if jobs:
    print()
    print("jobs right after the PUT load (the order fan-out; queued = not yet done)")
    for engine, states in jobs:
        print(f"  {engine:<12} {states}")
commits = [l.rstrip("\n").split("\t") for l in open(sys.argv[4], encoding="utf-8") if l.strip()]
for engine, count, longest in commits:
    print()
    print(f"{engine}: COMMITs that took 20 ms or more during the PUT load (waits for the disk's flush): {count}"
          + (f", the longest {float(longest):.0f} ms" if longest != "-" else ""))
PY
}

TABLE=$(report) || die "could not parse the wrk output (raw: $RAW)"
{
    echo
    echo "## summary"
    echo "$TABLE"
} >>"$RAW"
echo
echo "$TABLE"
echo
echo "raw output: $RAW"
