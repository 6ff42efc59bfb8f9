#!/usr/bin/env bash
# Review widget throughput (issue 4's speed goal) and review scheduling linearity, release build, 127.0.0.1.
#
#   bash scripts/bench-reviews.sh               # build release, 10k reviews, 10 s per wrk run
#   REVIEWS=10000 DURATION=10 CONNECTIONS=64 ORDERS=100000 NO_BUILD=1 bash scripts/bench-reviews.sh
#
# 1. Starts `reciprocity serve` on a fresh SQLite database, sets a disclosure text (widgets are not live
#    without one) and imports REVIEWS reviews of one product with `reciprocity reviews import`.
# 2. wrk --latency, in the same run: GET /_/redirect (the bare 302 route of the foundation benchmarks, the
#    reference), the product widget HTML and its JSON (cached, with ETags).
# 3. `reciprocity reviews bench-schedule` on a second fresh database: ORDERS delivered orders, then the
#    scheduling step per slice of 10k (a flat rate is linear). Set ORDERS=0 to skip.
# Results go to bench/results/reviews-<UTC timestamp>.txt; the table is printed at the end.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REVIEWS=${REVIEWS:-10000}
DURATION=${DURATION:-10}
CONNECTIONS=${CONNECTIONS:-64}
THREADS=${THREADS:-2}
ORDERS=${ORDERS:-100000}
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
OUT="bench/results/reviews-$(date -u +%Y%m%dT%H%M%SZ).txt"
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export RECIPROCITY_DATA_DIR="$WORK/data" RECIPROCITY_PORT=$PORT RECIPROCITY_LOG_LEVEL=warning
export RECIPROCITY_BASE_URL="http://127.0.0.1:$PORT"
"$BIN" serve >"$WORK/serve.log" 2>&1 &
SERVER_PID=$!
for _ in $(seq 1 100); do curl -fs "http://127.0.0.1:$PORT/healthz" >/dev/null && break; sleep 0.2; done
KEY=$("$BIN" apikey create --workspace shop --name bench | grep -o 'rcp_[A-Za-z0-9_]*' | head -1)
curl -fs -X PUT -H "Authorization: Bearer $KEY" -H 'content-type: application/json' \
    "http://127.0.0.1:$PORT/api/v1/reviews/settings" \
    -d '{"disclosure_text":"Verifizierte Käufe nur über Bestelllinks."}' >/dev/null
python3 - "$WORK/reviews.csv" "$REVIEWS" <<'PY'
import sys, random
random.seed(7)
with open(sys.argv[1], "w") as f:
    f.write("sku,product_name,rating,title,body,author,date\n")
    for i in range(int(sys.argv[2])):
        r = random.choice([5, 5, 5, 4, 4, 3, 2, 1])
        f.write(f'K1,Kaffee Hausmischung,{r},Bewertung {i},"Text {i}: kräftig, mild, gerne wieder.",Kunde {i % 997},2026-{1 + i % 10:02d}-{1 + i % 28:02d}\n')
PY
"$BIN" reviews import --workspace shop --source Bench "$WORK/reviews.csv" >&2
{
    echo "# bench-reviews $(date -u +%FT%TZ) git $(git rev-parse --short HEAD)$(git diff --quiet HEAD || echo ' (dirty)')"
    echo "# $(nproc) cores; wrk -t$THREADS -c$CONNECTIONS -d${DURATION}s; $REVIEWS reviews of one product (SQLite)"
} >"$OUT"
declare -A RPS P99
for route in /_/redirect /widgets/shop/products/K1 /widgets/shop/products/K1/json; do
    url="http://127.0.0.1:$PORT$route"
    curl -fs -o /dev/null "$url"
    wrk -t"$THREADS" -c"$CONNECTIONS" -d2s "$url" >/dev/null 2>&1 || true
    res=$(wrk -t"$THREADS" -c"$CONNECTIONS" -d"${DURATION}s" --latency "$url")
    printf '\n## %s\n%s\n' "$route" "$res" >>"$OUT"
    RPS[$route]=$(awk '/Requests\/sec/ {print $2}' <<<"$res")
    P99[$route]=$(awk '$1 == "99%" {print $2}' <<<"$res")
    non=$(awk '/Non-2xx/ {print $5}' <<<"$res")
    [[ -z "$non" ]] || echo "WARNING: $route had $non non-2xx/3xx responses" | tee -a "$OUT" >&2
done
RSS=$(awk '/VmRSS/ {print $2}' "/proc/$SERVER_PID/status")
kill "$SERVER_PID"; wait "$SERVER_PID" 2>/dev/null || true; SERVER_PID=
base=${RPS[/_/redirect]}
{
    echo
    printf '%-34s %12s %10s %8s\n' route req/s p99 ratio
    for route in /_/redirect /widgets/shop/products/K1 /widgets/shop/products/K1/json; do
        printf '%-34s %12s %10s %7.2fx\n' "$route" "${RPS[$route]}" "${P99[$route]}" \
            "$(python3 -c "print(${RPS[$route]} / $base)")"
    done
    echo "server RSS after the runs: $((RSS / 1024)) MiB"
} | tee -a "$OUT"
if ((ORDERS > 0)); then
    export RECIPROCITY_DATA_DIR="$WORK/sched"
    "$BIN" migrate >/dev/null
    "$BIN" workspace create --slug shop --name Bench --sender-email bench@shop.example >/dev/null 2>&1 || true
    echo | tee -a "$OUT"
    "$BIN" reviews bench-schedule --workspace shop --orders "$ORDERS" | tee -a "$OUT"
fi
echo "results: $OUT"
