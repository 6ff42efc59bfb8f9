#!/usr/bin/env bash
# The tracked referral redirect (issue 6's speed goals), release build, 127.0.0.1.
#
#   bash scripts/bench-referrals.sh                 # build release, SQLite, 10 s per wrk run, 64 connections
#   ENGINE=postgres POSTGRES_URL=postgres://... NO_BUILD=1 bash scripts/bench-referrals.sh
#   ROUNDS=5 bash scripts/bench-referrals.sh         # five interleaved rounds instead of two
#
# In one run, against one server and one nginx:
#   bare     GET /_/redirect          the bare 302 route of the same binary (the reference)
#   referral GET /r/{code}            the tracked redirect: code lookup (cached), click appended for the group
#                                     commit (written once a second), 302 to the shop with ?ref=CODE
#   nginx    GET /                    nginx `return 302` (static, own temp config)
#   distinct GET /r/{code}            as `referral`, but every request with its own User-Agent, so no two clicks
#                                     share a device hash (the flush hashes each click)
# Afterwards the clicks in the database are counted against the requests wrk made (none may be lost).
# Results go to bench/results/referrals-<UTC timestamp>.txt; the table is printed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
# On a shared host one 10 s run of the same route varies by 15% or more; the ratios of several interleaved rounds,
# and their median, say more than one round's.
ROUNDS=${ROUNDS:-2}
# The runs of each round, in order (a subset, e.g. ROUTES="bare referral", for quick comparisons; the ratios need bare).
ROUTES=${ROUTES:-bare referral nginx distinct}
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || { echo "ROUNDS must be a whole number >= 1: $ROUNDS" >&2; exit 1; }
ENGINE=${ENGINE:-sqlite}
# shellcheck source=scripts/lib/bench-tools.sh
source scripts/lib/bench-tools.sh
# shellcheck disable=SC2046
bench_install $(bench_missing wrk nginx curl)
NGINX_BIN=$(command -v nginx 2>/dev/null || echo /usr/sbin/nginx)
# shellcheck source=scripts/lib/release-build.sh
source scripts/lib/release-build.sh
if [[ -z "${NO_BUILD:-}" ]]; then release_build --product reciprocity >&2; fi
BIN=${RECIPROCITY_BIN:-$(release_bin_path)/reciprocity}
release_bin_check "$BIN"
WORK=$(mktemp -d)
SERVER_PID=
NGINX_PID=
cleanup() {
    [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null
    [[ -n "$NGINX_PID" ]] && kill "$NGINX_PID" 2>/dev/null
    wait 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p bench/results "$WORK/nginx/logs" "$WORK/nginx/tmp"
OUT="bench/results/referrals-$(date -u +%Y%m%dT%H%M%SZ).txt"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
PORT=$(free_port)
NGINX_PORT=$(free_port)
export RECIPROCITY_DATA_DIR="$WORK/data" RECIPROCITY_PORT=$PORT RECIPROCITY_LOG_LEVEL=warning
export RECIPROCITY_BASE_URL="http://127.0.0.1:$PORT"
if [[ "$ENGINE" == postgres ]]; then export RECIPROCITY_DATABASE_URL=${POSTGRES_URL:?set POSTGRES_URL}; fi
"$BIN" serve >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
KEY=$("$BIN" apikey create --workspace shop --name bench | grep -o 'rcp_[A-Za-z0-9_]*' | head -1)
api() { curl -fs -H "Authorization: Bearer $KEY" -H 'content-type: application/json' "$@"; }
api -X PUT "http://127.0.0.1:$PORT/api/v1/referrals/programme" \
    -d '{"active":true,"target_url":"https://shop.example/kaffee?utm_source=referral"}' >/dev/null
api -X PUT "http://127.0.0.1:$PORT/api/v1/orders/BENCH-1" -d '{"customer":{"email":"anna@example.com",
    "first_name":"Anna"},"currency":"EUR","items":[{"sku":"K1","name":"Kaffee","quantity":1,"unit_price":"12.90"}],
    "totals":{"total":"12.90"},"status":"delivered"}' >/dev/null
CODE=$(api -X POST "http://127.0.0.1:$PORT/api/v1/referrals/advocates" \
    -d '{"email":"anna@example.com","consent_text":"Ja, ich möchte am Empfehlungsprogramm teilnehmen."}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["code"])')
cat >"$WORK/nginx/nginx.conf" <<CONF
daemon off;
master_process on;
worker_processes auto;
pid $WORK/nginx/nginx.pid;
error_log $WORK/nginx/logs/error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    keepalive_requests 1000000;
    client_body_temp_path $WORK/nginx/tmp/body;
    proxy_temp_path $WORK/nginx/tmp/proxy;
    fastcgi_temp_path $WORK/nginx/tmp/fastcgi;
    uwsgi_temp_path $WORK/nginx/tmp/uwsgi;
    scgi_temp_path $WORK/nginx/tmp/scgi;
    server { listen 127.0.0.1:$NGINX_PORT; location / { return 302 https://shop.example/kaffee?ref=$CODE; } }
}
CONF
"$NGINX_BIN" -p "$WORK/nginx" -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/logs/error.log" &
NGINX_PID=$!
for _ in $(seq 1 50); do curl -s -o /dev/null "http://127.0.0.1:$NGINX_PORT/" && break; sleep 0.2; done
{
    echo "# bench-referrals $(date -u +%FT%TZ) git $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (dirty)')"
    echo "# $(nproc) cores; wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s; engine $ENGINE; code $CODE"
} >"$OUT"
declare -A RPS P99
SENT=0 # requests wrk completed against /r/{code}, warm-ups included
cat >"$WORK/distinct.lua" <<'LUA'
local n = 0
local id = 0
function setup(thread) id = id + 1; thread:set("tid", id) end
request = function()
  n = n + 1
  return wrk.format("GET", nil, {["User-Agent"] = "Mozilla/5.0 (bench " .. tid .. "-" .. n .. ")"})
end
LUA
# Each run starts on a quiet server: the clicks an earlier run left in memory are written first (otherwise the next
# run, whatever its route, pays for the last run's flush).
drained() {
    for _ in $(seq 1 300); do
        curl -fs "http://127.0.0.1:$PORT/metrics" | grep -Eq '^reciprocity_referral_clicks_waiting 0(\.0)?$' && return
        sleep 0.1
    done
    echo "note: clicks still waiting after 30 s" >>"$OUT"
}
run() { # name url [wrk args]
    local name=$1 url=$2 warm
    shift 2
    drained
    warm=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$@" "$url" 2>/dev/null || true)
    [[ "$name" == referral* || "$name" == distinct* ]] && SENT=$((SENT + $(awk '/requests in/ {print $1}' <<<"$warm")))
    local res
    res=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url")
    printf '\n## %s\n%s\n' "$name" "$res" >>"$OUT"
    RPS[$name]=$(awk '/Requests\/sec/ {print $2}' <<<"$res")
    P99[$name]=$(awk '$1 == "99%" {print $2}' <<<"$res")
    [[ "$name" == referral* || "$name" == distinct* ]] && SENT=$((SENT + $(awk '/requests in/ {print $1}' <<<"$res")))
    local non
    non=$(awk '/Non-2xx/ {print $5}' <<<"$res")
    [[ -z "$non" ]] || echo "note: $name answered $non non-2xx (302 counts as non-2xx in wrk)" >>"$OUT"
}
# Interleaved, so drift (thermal, other load) hits every route alike.
for round in $(seq 1 "$ROUNDS"); do
    for name in $ROUTES; do
        case $name in
        bare) run "bare$round" "http://127.0.0.1:$PORT/_/redirect" ;;
        referral) run "referral$round" "http://127.0.0.1:$PORT/r/$CODE" ;;
        nginx) run "nginx$round" "http://127.0.0.1:$NGINX_PORT/" ;;
        distinct) run "distinct$round" "http://127.0.0.1:$PORT/r/$CODE" -s "$WORK/distinct.lua" ;;
        *) echo "unknown route in ROUTES: $name" >&2; exit 1 ;;
        esac
    done
done
sleep 2
RSS=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
if [[ "$ENGINE" == sqlite ]]; then
    CLICKS=$(python3 -c "import sqlite3; print(sqlite3.connect('$WORK/data/reciprocity.sqlite').execute('select count(*) from referral_clicks').fetchone()[0])")
else
    CLICKS=$(psql "$RECIPROCITY_DATABASE_URL" -Atc 'select count(*) from referral_clicks')
fi
{
    echo
    printf '%-10s %12s %10s %9s %9s\n' run req/s p99 "vs bare" "vs nginx"
    for round in $(seq 1 "$ROUNDS"); do
        for name in $ROUTES; do
            n="$name$round"
            printf '%-10s %12s %10s %8.2fx %8.2fx\n' "$n" "${RPS[$n]}" "${P99[$n]}" \
                "$(python3 -c "print(${RPS[$n]} / ${RPS[bare$round]})")" \
                "$(python3 -c "print(${RPS[$n]} / ${RPS[nginx$round]:-0})" 2>/dev/null || echo 0)"
        done
    done
    for name in referral distinct; do
        [[ " $ROUTES " == *" $name "* ]] || continue
        ratios=()
        for round in $(seq 1 "$ROUNDS"); do ratios+=("${RPS[$name$round]}/${RPS[bare$round]}"); done
        python3 -c "import statistics, sys; r = [float(a) / float(b) for a, b in (x.split('/') for x in sys.argv[2:])]
print(f'{sys.argv[1]:<10} vs bare, median of {len(r)} rounds: {statistics.median(r):.2f}x (min {min(r):.2f}, max {max(r):.2f})')" \
            "$name" "${ratios[@]}"
    done
    echo "clicks written: $CLICKS; requests to /r/{code} that wrk completed: $SENT"
    echo "server RSS after the runs: $((RSS / 1024)) MiB"
} | tee -a "$OUT"
echo "results: $OUT"
