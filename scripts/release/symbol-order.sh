#!/usr/bin/env bash
# Records the functions the release server calls at start-up and on its first requests, in the order of the first
# call, into scripts/release/symbol-order.txt. Package.swift hands that file to the linker (--symbol-ordering-file),
# which places those functions next to each other at the start of .text, so that the few MiB a running server needs
# are not spread over all 33 MiB of code, each page mapped with its 64 KiB neighbours (decision 0015).
#
#   bash scripts/release/symbol-order.sh              # release build, record on SQLite and PostgreSQL, write the file
#   bash scripts/release/symbol-order.sh --no-build   # record with the existing release binary
#
# How: scripts/release/first-calls.c runs `reciprocity serve` under ptrace with a breakpoint on every function, in
# scripts/bench-http.sh's scenario (start-up, a probe order, one second of each load; the CLI calls that set up the
# workspace and key are separate processes and not traced) on each engine. The list is SQLite's, then what
# PostgreSQL adds. Names that later disappear are ignored by the
# linker and new functions are left where they are, so a stale list costs memory, not correctness; re-run this after
# larger changes and compare the idle RSS that bench-http.sh prints. The linker reads the list at the next link:
# `release_build` relinks when this script has removed the old binary.
#
# Needs a C compiler, readelf, and what scripts/bench-http.sh needs (wrk, curl, PostgreSQL for the throw-away server).
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/../.."
REPO_ROOT=$(pwd)
# shellcheck source=scripts/lib/release-build.sh
source "$REPO_ROOT/scripts/lib/release-build.sh"

BUILD=1
case "${1:-}" in
--no-build) BUILD=0 ;;
"") ;;
*) echo "usage: $0 [--no-build]" >&2; exit 2 ;;
esac

OUT="$REPO_ROOT/scripts/release/symbol-order.txt"
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT

((BUILD)) && release_build --product reciprocity
BIN="$(release_bin_path)/reciprocity"
[[ -x "$BIN" ]] || { echo "symbol-order: no release binary at $BIN" >&2; exit 1; }

cc -O2 -o "$WORK/first-calls" scripts/release/first-calls.c
# Every defined function (readelf prints sizes above 99,999 in hex, so the size is not tested).
readelf -sW "$BIN" | awk '$4 == "FUNC" && $3 != "0" && $7 != "UND" { print $2, $8 }' >"$WORK/functions.txt"

for engine in sqlite postgres; do
    RECIPROCITY_SERVE_WRAPPER="$WORK/first-calls $WORK/functions.txt $WORK/$engine.txt --" \
        bash scripts/bench-http.sh --no-build --no-nginx --engine "$engine" --duration 1 --warmup 0 >"$WORK/$engine.log" 2>&1 ||
        { tail -n 30 "$WORK/$engine.log" >&2; echo "symbol-order: the $engine run failed" >&2; exit 1; }
    called=$(wc -l <"$WORK/$engine.txt")
    echo "symbol-order: $engine: $called functions called" >&2
    # A server that ran untraced (ptrace refused) or died at once leaves a short list: keep the committed one.
    ((called >= 1000)) || { echo "symbol-order: only $called functions recorded on $engine; nothing written" >&2; exit 1; }
done

awk '!seen[$0]++' "$WORK/sqlite.txt" "$WORK/postgres.txt" >"$OUT"
echo "symbol-order: wrote $(wc -l <"$OUT") functions to ${OUT#"$REPO_ROOT"/}" >&2
# The next release build must link again to read the new list.
rm -f "$BIN"
