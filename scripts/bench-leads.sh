#!/usr/bin/env bash
# Lead magnet throughput (issue 5's speed goals), release build, SQLite, 127.0.0.1.
#
#   bash scripts/bench-leads.sh                  # build release, 10 s per wrk run, 64 connections
#   DURATION=10 CONNECTIONS=64 NO_BUILD=1 bash scripts/bench-leads.sh
#
# 1. Starts `reciprocity serve` on a fresh SQLite database (synchronous=FULL, the default) with the per-IP
#    public-form burst raised (RECIPROCITY_PUBLIC_FORM_BURST) so that one load generator is not rate-limited; the
#    other abuse checks stay on: signed form token, minimum fill time (1 s), honeypot, disposable-domain list,
#    per-address limit, input validation.
# 2. wrk --latency, in the same run: GET /_/redirect (the bare 302 route, the reference), the cached landing page
#    (a fresh form token per response), and POST signups with a distinct address each (each one writes the
#    contact, the pending consent, the signup and the confirmation mail in one transaction).
# Results go to bench/results/leads-<UTC timestamp>.txt; the table is printed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
# shellcheck source=scripts/lib/bench-tools.sh
source scripts/lib/bench-tools.sh
# shellcheck disable=SC2046
bench_install $(bench_missing wrk curl)
# shellcheck source=scripts/lib/release-build.sh
source scripts/lib/release-build.sh
if [[ -z "${NO_BUILD:-}" ]]; then release_build --product reciprocity >&2; fi
BIN=${RECIPROCITY_BIN:-$(release_bin_path)/reciprocity}
release_bin_check "$BIN"
WORK=$(mktemp -d)
SERVER_PID=
cleanup() { [[ -n "$SERVER_PID" ]] && kill "$SERVER_PID" 2>/dev/null; wait 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
mkdir -p bench/results
OUT="bench/results/leads-$(date -u +%Y%m%dT%H%M%SZ).txt"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export RECIPROCITY_DATA_DIR="$WORK/data" RECIPROCITY_PORT=$PORT RECIPROCITY_LOG_LEVEL=warning
export RECIPROCITY_BASE_URL="http://127.0.0.1:$PORT" RECIPROCITY_PUBLIC_FORM_BURST=100000000
"$BIN" serve >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
KEY=$("$BIN" apikey create --workspace shop --name bench | grep -o 'rcp_[A-Za-z0-9_]*' | head -1)
curl -fs -X POST -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
    "http://127.0.0.1:$PORT/api/v1/lead-magnets" -d '{"slug":"bench","name":"Bench","headline":"Der Kaffee-Ratgeber",
    "body":"Zwölf Seiten für Einsteiger.\n\nMit Brühtabelle.","gift_kind":"link","gift_title":"Webinar",
    "gift_url":"https://shop.example/webinar","consent_text":"Ja, ich möchte den Newsletter erhalten. Abmeldung jederzeit.",
    "min_fill_seconds":1}' >/dev/null
LANDING="http://127.0.0.1:$PORT/lm/shop/bench"
TOKEN=$(curl -fs "$LANDING" | grep -o 'name="form_token" value="[^"]*"' | sed 's/.*value="//;s/"$//')
sleep 1.2
cat >"$WORK/signup.lua" <<LUA
local counter = 0
local id = 0
function setup(thread) id = id + 1; thread:set("tid", id) end
function init(args) counter = 0 end
request = function()
  counter = counter + 1
  local body = "email=b" .. tid .. "x" .. counter .. "%40example.org&first_name=Bench&website=&form_token=$TOKEN"
  return wrk.format("POST", nil, {["Content-Type"] = "application/x-www-form-urlencoded"}, body)
end
LUA
{
    echo "# bench-leads $(date -u +%FT%TZ) git $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (dirty)')"
    echo "# $(nproc) cores; wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s; SQLite synchronous=FULL"
} >"$OUT"
declare -A RPS P99
run() { # name url [wrk args]
    local name=$1 url=$2; shift 2
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$@" "$url" >/dev/null 2>&1 || true
    local res
    res=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url")
    printf '\n## %s\n%s\n' "$name" "$res" >>"$OUT"
    RPS[$name]=$(awk '/Requests\/sec/ {print $2}' <<<"$res")
    P99[$name]=$(awk '$1 == "99%" {print $2}' <<<"$res")
    local non
    non=$(awk '/Non-2xx/ {print $5}' <<<"$res")
    [[ -z "$non" ]] || echo "WARNING: $name had $non non-2xx/3xx responses" | tee -a "$OUT" >&2
}
run bare "http://127.0.0.1:$PORT/_/redirect"
run landing "$LANDING"
run signup "$LANDING" -s "$WORK/signup.lua"
RSS=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
# Counted after the server stopped: requests still in flight when wrk ends commit during the shutdown.
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
count() { python3 -c "import sqlite3; print(sqlite3.connect('$WORK/data/reciprocity.sqlite').execute(\"$1\").fetchone()[0])"; }
SIGNUPS=$(count "select sum(signups) from lead_stats")
MAILS=$(count "select count(*) from outbox where kind='doi_confirmation'")
base=${RPS[bare]}
{
    echo
    printf '%-10s %12s %10s %8s\n' run req/s p99 ratio
    for name in bare landing signup; do
        printf '%-10s %12s %10s %7.2fx\n' "$name" "${RPS[$name]}" "${P99[$name]}" \
            "$(python3 -c "print(${RPS[$name]} / $base)")"
    done
    echo "signups counted: $SIGNUPS; confirmation mails in the outbox: $MAILS"
    echo "server RSS after the runs: $((RSS / 1024)) MiB"
} | tee -a "$OUT"
echo "results: $OUT"
