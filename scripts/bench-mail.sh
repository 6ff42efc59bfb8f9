#!/usr/bin/env bash
# Mail throughput of `reciprocity mail bench` into postfix's smtp-sink, with smtp-source as the
# reference, on 127.0.0.1 only.
#
#   bash scripts/bench-mail.sh                      # 20000 mails of 2048 bytes over 8 connections
#   MEMORY=1 bash scripts/bench-mail.sh             # 100000 mails: the memory flatness check
#   REFERENCE_ONLY=1 bash scripts/bench-mail.sh     # only smtp-source -> smtp-sink (checks postfix's tools)
#   BUILD=1 bash scripts/bench-mail.sh              # the release build first if $BIN is missing
#
# Environment (defaults in brackets):
#   N               mails per measured run [20000; 100000 with MEMORY=1]
#   SIZE            smtp-source's payload bytes (-l); our mails are padded to the size of smtp-source's
#                   whole message on the wire, captured before the runs [2048]
#   CONNECTIONS     parallel SMTP sessions, ours and smtp-source's [8]
#   BIN             the binary [.build/release/reciprocity]
#   BUILD           1 = the release build (scripts/lib/release-build.sh) when $BIN is missing [0]
#   MEMORY          1 = N defaults to 100000 [0]
#   REFERENCE_ONLY  1 = skip our side [0]
#   SOURCE_REUSE    1 = smtp-source -d: each session sends all its mails over one connection, as
#                   our pool does; 0 = a new connection for every mail (smtp-source's default) [1]
#   WARMUP          mails sent by smtp-source before its measured run, unmeasured [1000]
#   RSS_INTERVAL    seconds between VmRSS samples of our process [0.5]
#   TIMEOUT         seconds our run may take before it is killed [60 + N/100]
#   DKIM            DKIM algorithm of the signing key: rsa-sha256 or ed25519-sha256 [rsa-sha256]
#   GOAL_RATE       absolute goal, mails/s [1000]
#   GOAL_RATIO      goal for ours / smtp-source [0.8]
#   STRICT          1 = exit 3 when a goal is missed [0]
#   ROUNDS          runs of the whole benchmark, smtp-source then ours each time; with more than one, every
#                   round's line and the median of the rounds' ratios are printed, and the goals are checked on
#                   the medians (on a shared host one round's ratio varies by 0.15 or more) [1]
#
# What it does: starts smtp-sink (throws mail away, announces PIPELINING; its -c counters tell
# how many messages it really received) on a free port, one fresh sink per run. Reference:
#   smtp-source -c [-d] -l SIZE -m N -s CONNECTIONS -f from@example.test -t to@example.test
# timed with date +%s.%N, giving mails/s (smtp-source does not pipeline). Ours: a temp data dir and
# SQLite database, `workspace create --slug bench` and `dkim generate --domain example.test
# --selector bench`, then
#   $BIN mail bench --workspace bench --count N --concurrency CONNECTIONS --size BYTES
#        --to to@example.test --smtp-url "smtp://127.0.0.1:PORT?tls=none"
# which renders a template, DKIM-signs and sends through the pool of CONNECTIONS sessions (three senders per
# session, so a busy session chains the next commands behind a message: decision 0021) and prints one JSON line
#   {"sent":N,"failed":F,"seconds":S,"rate":R,"rss_kb_start":A,"rss_kb_peak":B,"rss_kb_end":C}
# While it runs, VmRSS is read from /proc/PID/status every RSS_INTERVAL seconds, independently of
# the program's own figures.
#
# Prints both rates, ours / smtp-source, the goal check (>= GOAL_RATE mails/s and >= GOAL_RATIO x
# smtp-source) and the RSS samples (min / max / last). The raw output goes to
# bench/results/mail-<UTC timestamp>.txt. Everything is bounded by timeouts and deadlines.
# The sender, the sink and the reference share the 2 cores, so compare ratios more than absolutes.
# Installs postfix (for smtp-sink and smtp-source, without configuring or starting it) with apt-get
# when missing (run as root).
set -euo pipefail

CALLER_PWD=$(pwd)
cd "$(dirname "${BASH_SOURCE[0]}")/.."
REPO_ROOT=$(pwd)
# shellcheck source=scripts/lib/release-build.sh
source "$REPO_ROOT/scripts/lib/release-build.sh"

usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//'; }
die() { echo "bench-mail: $*" >&2; exit 1; }
log() { echo "bench-mail: $*" >&2; }

case "${1:-}" in
    -h | --help) usage; exit 0 ;;
    "") ;;
    *) usage >&2; die "no arguments are taken (use the environment variables above): $1" ;;
esac

MEMORY=${MEMORY:-0}
[[ "$MEMORY" =~ ^[01]$ ]] || die "MEMORY must be 0 or 1: $MEMORY"
if [[ "$MEMORY" == 1 ]]; then N=${N:-100000}; else N=${N:-20000}; fi
[[ "$N" =~ ^[0-9]+$ ]] || die "N is not a whole number: $N"
SIZE=${SIZE:-2048}
CONNECTIONS=${CONNECTIONS:-8}
BUILD=${BUILD:-0}
REFERENCE_ONLY=${REFERENCE_ONLY:-0}
SOURCE_REUSE=${SOURCE_REUSE:-1}
WARMUP=${WARMUP:-1000}
RSS_INTERVAL=${RSS_INTERVAL:-0.5}
TIMEOUT=${TIMEOUT:-$((60 + N / 100))}
GOAL_RATE=${GOAL_RATE:-1000}
GOAL_RATIO=${GOAL_RATIO:-0.8}
STRICT=${STRICT:-0}
BIN=${BIN:-$REPO_ROOT/.build/release/reciprocity}
[[ "$BIN" == /* ]] || BIN="$CALLER_PWD/$BIN" # relative to where the script was started

for v in N SIZE CONNECTIONS BUILD MEMORY REFERENCE_ONLY SOURCE_REUSE WARMUP TIMEOUT STRICT; do
    [[ "${!v}" =~ ^[0-9]+$ ]] || die "$v is not a whole number: ${!v}"
done
for v in RSS_INTERVAL GOAL_RATE GOAL_RATIO; do
    [[ "${!v}" =~ ^[0-9]+(\.[0-9]+)?$ ]] || die "$v is not a number: ${!v}"
done
((N > 0 && N <= 10000000)) || die "N must be 1..10000000"
((SIZE > 0 && SIZE <= 50000000)) || die "SIZE must be 1..50000000"
((CONNECTIONS > 0 && CONNECTIONS <= 900)) || die "CONNECTIONS must be 1..900 (smtp-sink takes at most 1000 at once here)"
((TIMEOUT > 0)) || die "TIMEOUT must be > 0"
ROUNDS=${ROUNDS:-1}
[[ "$ROUNDS" =~ ^[1-9][0-9]*$ ]] || die "ROUNDS must be a whole number >= 1: $ROUNDS"

# More than one round: this script once per round, then the medians.
if ((ROUNDS > 1)); then
    lines=()
    for ((round = 1; round <= ROUNDS; round++)); do
        log "round $round of $ROUNDS"
        out=$(BIN="$BIN" ROUNDS=1 STRICT=0 bash "$REPO_ROOT/scripts/bench-mail.sh") || die "round $round failed"
        ref=$(awk '/^smtp-source/ {gsub(",", "", $3); print $3}' <<<"$out")
        ours=$(awk '/^reciprocity mail bench/ {gsub(",", "", $4); print $4}' <<<"$out")
        raw_file=$(awk '/^raw output:/ {print $3}' <<<"$out")
        [[ -n "$ref" && -n "$ours" ]] || { echo "$out" >&2; die "round $round printed no rates"; }
        lines+=("$round $ref $ours $raw_file")
    done
    rc=0
    GOAL_RATE="$GOAL_RATE" GOAL_RATIO="$GOAL_RATIO" python3 - "${lines[@]}" <<'PY' || rc=$?
import os, statistics, sys
rows = [line.split() for line in sys.argv[1:]]
print(f"{'round':>5}  {'smtp-source':>12}  {'ours':>8}  {'ours / smtp-source':>18}  raw output")
ratios, rates = [], []
for n, ref, ours, raw in rows:
    ratio = float(ours) / float(ref)
    ratios.append(ratio)
    rates.append(float(ours))
    print(f"{n:>5}  {float(ref):>12,.0f}  {float(ours):>8,.0f}  {ratio:>18.2f}  {raw}")
median_ratio, median_rate = statistics.median(ratios), statistics.median(rates)
print()
print(f"median of {len(rows)} rounds: ours / smtp-source {median_ratio:.2f} (min {min(ratios):.2f}, max {max(ratios):.2f});"
      f" ours {median_rate:,.0f} mails/s")
goal_rate, goal_ratio = float(os.environ["GOAL_RATE"]), float(os.environ["GOAL_RATIO"])
print(f"goal: >= {goal_rate:,.0f} mails/s (median)        {'PASS' if median_rate >= goal_rate else 'FAIL'}")
print(f"goal: >= {goal_ratio:.2f} x smtp-source (median)  {'PASS' if median_ratio >= goal_ratio else 'FAIL'}")
sys.exit(0 if median_rate >= goal_rate and median_ratio >= goal_ratio else 3)
PY
    ((rc == 0 || rc == 3)) || die "could not make the summary of the rounds"
    ((rc == 3 && STRICT)) && exit 3
    exit 0
fi

if ! command -v swift >/dev/null 2>&1 && [[ -x /opt/swift/usr/bin/swift ]]; then
    export PATH="$PATH:/opt/swift/usr/bin"
fi

# ---------------------------------------------------------------- tools

# find_postfix_tool NAME: its path, from PATH, /usr/sbin or /usr/lib/postfix/sbin; empty when none.
find_postfix_tool() {
    local name=$1 dir
    if command -v "$name" >/dev/null 2>&1; then command -v "$name"; return 0; fi
    for dir in /usr/sbin /usr/lib/postfix/sbin /usr/libexec/postfix /usr/local/sbin; do
        [[ -x "$dir/$name" ]] && { echo "$dir/$name"; return 0; }
    done
    return 0
}

install_missing() {
    local need=()
    [[ -n "$(find_postfix_tool smtp-sink)" && -n "$(find_postfix_tool smtp-source)" ]] || need+=(postfix)
    command -v python3 >/dev/null 2>&1 || need+=(python3)
    bench_install "${need[@]}" || die "could not install ${need[*]}"
}
# shellcheck source=scripts/lib/bench-tools.sh
source scripts/lib/bench-tools.sh
install_missing
SINK_BIN=$(find_postfix_tool smtp-sink)
SOURCE_BIN=$(find_postfix_tool smtp-source)
[[ -n "$SINK_BIN" && -n "$SOURCE_BIN" ]] || die "postfix is installed but smtp-sink / smtp-source were not found"

# smtp-sink must drop root privileges (-u) when started as root.
SINK_USER_ARGS=()
if [[ "$(id -u)" == 0 ]]; then
    if id nobody >/dev/null 2>&1; then SINK_USER_ARGS=(-u nobody); else SINK_USER_ARGS=(-u root); fi
fi

# ---------------------------------------------------------------- state and cleanup

WORK=$(mktemp -d "${TMPDIR:-/tmp}/bench-mail.XXXXXX")
SINK_PID=""
OURS_PID=""

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

# shellcheck disable=SC2317 # reached through the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT
    stop_pid "$OURS_PID" 10
    stop_pid "$SINK_PID" 5
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

now() { date +%s.%N; }

# ---------------------------------------------------------------- results

mkdir -p bench/results
[[ -f bench/results/.gitignore ]] || printf '*\n!.gitignore\n' >bench/results/.gitignore
TS=$(date -u +%Y%m%dT%H%M%SZ)
RAW="$REPO_ROOT/bench/results/mail-$TS.txt"
RESULTS="$WORK/results.env" # key=value lines for the summary
: >"$RESULTS"
raw() { printf '%s\n' "$*" >>"$RAW"; }
result() { printf '%s=%s\n' "$1" "$2" >>"$RESULTS"; }

{
    echo "# bench-mail $TS"
    echo "# git $(git rev-parse --short HEAD 2>/dev/null || echo '?')$(git diff --quiet HEAD 2>/dev/null || echo ' (dirty)')"
    echo "# host: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB", $2/1048576}' /proc/meminfo), $(uname -r)"
    echo "# N=$N SIZE=$SIZE CONNECTIONS=$CONNECTIONS SOURCE_REUSE=$SOURCE_REUSE WARMUP=$WARMUP MEMORY=$MEMORY"
    echo "# sink: $SINK_BIN; source: $SOURCE_BIN; postfix $(dpkg-query -W -f='${Version}' postfix 2>/dev/null || echo '?')"
} >"$RAW"

# ---------------------------------------------------------------- smtp-sink

# start_sink NAME: a fresh smtp-sink on a free port; sets SINK_PORT and SINK_OUT.
start_sink() {
    local name=$1
    SINK_PORT=$(free_port)
    SINK_OUT="$WORK/sink-$name.out"
    # -c: running counters (sess= quit= mesg=) on stdout; -m: connections handled at once; 1000: backlog.
    "$SINK_BIN" -c "${SINK_USER_ARGS[@]}" -m 1000 "127.0.0.1:$SINK_PORT" 1000 \
        </dev/null >"$SINK_OUT" 2>"$WORK/sink-$name.err" &
    SINK_PID=$!
    local deadline=$((SECONDS + 10))
    while ((SECONDS < deadline)); do
        kill -0 "$SINK_PID" 2>/dev/null || { cat "$WORK/sink-$name.err" >&2; die "smtp-sink exited on start"; }
        # A bare connect (and close) is enough to know it listens; it costs the sink one empty session.
        if (exec 3<>"/dev/tcp/127.0.0.1/$SINK_PORT") 2>/dev/null; then
            log "smtp-sink on 127.0.0.1:$SINK_PORT ($name)"
            return 0
        fi
        sleep 0.1
    done
    die "smtp-sink did not listen on 127.0.0.1:$SINK_PORT within 10 s"
}

# stop_sink: stops it; sets SINK_RECEIVED to how many messages it received (its last "mesg=" counter).
stop_sink() {
    sleep 0.2 # the counters are written when a session ends
    stop_pid "$SINK_PID" 5
    SINK_PID=""
    SINK_RECEIVED=$(tr '\r' '\n' <"$SINK_OUT" | grep -oE 'mesg=[0-9]+' | tail -n 1 | cut -d= -f2 || true)
}

# ---------------------------------------------------------------- reference: smtp-source

bench_reference() {
    local args=(-c -l "$SIZE" -s "$CONNECTIONS" -f from@example.test -t to@example.test)
    ((SOURCE_REUSE)) && args=(-d "${args[@]}")
    start_sink reference
    if ((WARMUP > 0)); then
        log "smtp-source warm-up: $WARMUP mails"
        timeout --kill-after=5 120 "$SOURCE_BIN" "${args[@]}" -m "$WARMUP" "127.0.0.1:$SINK_PORT" \
            </dev/null >/dev/null 2>"$WORK/source-warmup.err" ||
            { cat "$WORK/source-warmup.err" >&2; die "smtp-source warm-up failed"; }
    fi
    log "smtp-source: $N mails of $SIZE bytes over $CONNECTIONS sessions$( ((SOURCE_REUSE)) && echo ', connections reused (-d)')"
    local t0 t1 rc=0
    t0=$(now)
    timeout --kill-after=5 "$TIMEOUT" "$SOURCE_BIN" "${args[@]}" -m "$N" "127.0.0.1:$SINK_PORT" \
        </dev/null >"$WORK/source.out" 2>"$WORK/source.err" || rc=$?
    t1=$(now)
    stop_sink
    local received=$SINK_RECEIVED
    {
        echo
        echo "## reference: $SOURCE_BIN ${args[*]} -m $N 127.0.0.1:PORT"
        echo "exit $rc; $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f s", b - a}')"
        echo "smtp-sink counted messages (incl. warm-up): ${received:-?}"
        [[ -s "$WORK/source.err" ]] && { echo "stderr:"; tail -n 20 "$WORK/source.err"; }
    } >>"$RAW"
    ((rc == 0)) || { tail -n 20 "$WORK/source.err" >&2; die "smtp-source exited $rc (timeout is ${TIMEOUT}s)"; }
    result ref_seconds "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.6f", b - a}')"
    result ref_sink_received "${received:-}"
}

# reference_bytes: the size of one message smtp-source sends with -l SIZE, as it goes over the wire (its own headers
# and the payload, CRLF line ends, without the final dot), captured by a one-message SMTP listener in Python. Our
# mails are padded to this size, so that both sides send the same bytes (SIZE alone is smtp-source's payload, not
# its message).
reference_bytes() {
    timeout --kill-after=5 60 python3 - "$SOURCE_BIN" "$SIZE" <<'PY'
import socket, subprocess, sys, threading
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1)
srv.settimeout(30)
size = []
def serve():
    conn, _ = srv.accept()
    conn.settimeout(30)
    f = conn.makefile("rb")
    conn.sendall(b"220 capture ESMTP\r\n")
    while line := f.readline():
        verb = line[:4].upper()
        if verb in (b"EHLO", b"HELO"):
            conn.sendall(b"250 capture\r\n")
        elif verb == b"DATA":
            conn.sendall(b"354 go on\r\n")
            n = 0
            while (data := f.readline()) not in (b".\r\n", b""):
                n += len(data) - (1 if data.startswith(b"..") else 0)  # undo dot-stuffing
            size.append(n)
            conn.sendall(b"250 ok\r\n")
        elif verb == b"QUIT":
            conn.sendall(b"221 bye\r\n")
            break
        else:
            conn.sendall(b"250 ok\r\n")
    conn.close()
t = threading.Thread(target=serve)
t.start()
subprocess.run([sys.argv[1], "-l", sys.argv[2], "-m", "1", "-s", "1", "-f", "from@example.test", "-t", "to@example.test",
                f"127.0.0.1:{srv.getsockname()[1]}"], check=True, timeout=30, stdout=subprocess.DEVNULL)
t.join(30)
print(size[0])
PY
}

# ---------------------------------------------------------------- ours: reciprocity mail bench

# check_ours: the binary exists (built when BUILD=1) and has the subcommands; before any run.
check_ours() {
    if [[ ! -x "$BIN" ]]; then
        if ((BUILD)); then
            log "swift build ${RELEASE_BUILD_FLAGS[*]}"
            release_build --product reciprocity 2>&1 | tail -n 20
            ((PIPESTATUS[0] == 0)) || die "swift build ${RELEASE_BUILD_FLAGS[*]} failed"
        fi
        [[ -x "$BIN" ]] || die "no binary at $BIN: build it (BUILD=1, or bash -c 'source $REPO_ROOT/scripts/lib/release-build.sh; release_build'), set BIN=..., or run with REFERENCE_ONLY=1"
    fi
    release_bin_check "$BIN"
    log "binary: $BIN"

    # Does this binary have the subcommands at all? They are new, and an older build answers any
    # --help with its top-level help (exit 0), so look for the options in the help text.
    local sub
    for sub in "mail bench:--smtp-url" "dkim generate:--selector"; do
        # shellcheck disable=SC2086 # the subcommand words split on purpose
        "$BIN" ${sub%%:*} --help </dev/null >"$WORK/help.out" 2>&1 || true
        if ! grep -q -- "${sub#*:}" "$WORK/help.out"; then
            sed -n '1,12p' "$WORK/help.out" >&2
            die "$BIN has no \`${sub%%:*}\` subcommand yet (its --help, above, does not mention ${sub#*:}): rebuild from a tree that has it (BUILD=1 builds only when the binary is missing), set BIN=..., or run with REFERENCE_ONLY=1"
        fi
    done
}

bench_ours() {
    raw ""
    raw "## ours: $BIN"
    local dir="$WORK/ours"
    mkdir -p "$dir/data"
    local ENVV=(
        "RECIPROCITY_DATA_DIR=$dir/data"
        "RECIPROCITY_DATABASE_URL=sqlite://$dir/bench.sqlite"
        "RECIPROCITY_LOG_LEVEL=warning"
    )
    # Every command runs in the temp dir, so nothing it might write lands in the work tree.
    (cd "$dir" && exec env "${ENVV[@]}" "$BIN" workspace create --slug bench --name Bench --sender-email bench@example.test \
        </dev/null >"$dir/cli-workspace.log" 2>&1) ||
        { cat "$dir/cli-workspace.log" >&2; die "\`workspace create\` failed (output above)"; }
    (cd "$dir" && exec env "${ENVV[@]}" "$BIN" dkim generate --workspace bench --domain example.test --selector bench --algorithm "${DKIM:-rsa-sha256}" \
        </dev/null >"$dir/cli-dkim.log" 2>&1) ||
        { cat "$dir/cli-dkim.log" >&2; die "\`dkim generate\` failed (output above)"; }

    start_sink ours
    local cmd=("$BIN" mail bench --workspace bench --count "$N" --concurrency "$CONNECTIONS" --size "$REF_BYTES"
        --to to@example.test --smtp-url "smtp://127.0.0.1:$SINK_PORT?tls=none")
    raw "# ${cmd[*]}"
    log "mail bench: $N mails of $REF_BYTES bytes (smtp-source's message) over $CONNECTIONS connections (VmRSS every ${RSS_INTERVAL}s)"

    local samples="$dir/rss.tsv" t0 t1 rc=0 status killed=0
    : >"$samples"
    t0=$(now)
    # The subshell execs env, which execs the binary: $! is the binary's own pid, the one whose
    # /proc/PID/status we read.
    (cd "$dir" && exec env "${ENVV[@]}" "${cmd[@]}" </dev/null >"$dir/stdout.log" 2>"$dir/stderr.log") &
    OURS_PID=$!
    local deadline
    deadline=$(awk -v a="$t0" -v t="$TIMEOUT" 'BEGIN {printf "%.0f", a + t}')
    # The first sample after one interval: at once it would be the not yet loaded process.
    while sleep "$RSS_INTERVAL" && kill -0 "$OURS_PID" 2>/dev/null; do
        status=$(awk '/^VmRSS:/ {print $2}' "/proc/$OURS_PID/status" 2>/dev/null || true)
        [[ -n "$status" ]] && printf '%s\t%s\n' "$(now)" "$status" >>"$samples"
        if (($(date +%s) > deadline)); then
            log "mail bench still running after ${TIMEOUT}s: stopping it"
            killed=1
            stop_pid "$OURS_PID" 10
            break
        fi
    done
    wait "$OURS_PID" 2>/dev/null || rc=$?
    OURS_PID=""
    t1=$(now)
    stop_sink
    local received=$SINK_RECEIVED
    {
        echo "exit $rc; wall $(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.3f s", b - a}'); $(wc -l <"$samples") VmRSS samples"
        echo "smtp-sink counted messages: ${received:-?}"
        echo "stdout:"
        tail -n 20 "$dir/stdout.log"
        echo "stderr (last 40 lines):"
        tail -n 40 "$dir/stderr.log"
        echo "VmRSS samples (unix time, kB):"
        cat "$samples"
    } >>"$RAW"
    ((killed)) && die "mail bench did not finish within ${TIMEOUT}s (TIMEOUT=...); stderr tail in $RAW"
    local json
    json=$(grep -E '^\{.*"sent"' "$dir/stdout.log" | tail -n 1 || true)
    if [[ -z "$json" ]]; then
        echo "--- mail bench stdout (tail)" >&2; tail -n 20 "$dir/stdout.log" >&2
        echo "--- mail bench stderr (tail)" >&2; tail -n 40 "$dir/stderr.log" >&2
        die "\`mail bench\` exited $rc and printed no JSON line with \"sent\" on stdout (output above)"
    fi
    ((rc == 0)) || log "\`mail bench\` exited $rc, but printed its JSON line: summarising it (stderr tail in $RAW)"
    result ours_json "$json"
    result ours_wall "$(awk -v a="$t0" -v b="$t1" 'BEGIN {printf "%.6f", b - a}')"
    result ours_sink_received "${received:-}"
    result ours_samples "$samples"
}

# ---------------------------------------------------------------- run

((REFERENCE_ONLY)) || check_ours
REF_BYTES=$(reference_bytes) && [[ "$REF_BYTES" =~ ^[0-9]+$ ]] || die "could not capture smtp-source's message size"
log "smtp-source -l $SIZE sends messages of $REF_BYTES bytes"
result ref_bytes "$REF_BYTES"
raw "# smtp-source -l $SIZE: messages of $REF_BYTES bytes on the wire"
bench_reference
((REFERENCE_ONLY)) || bench_ours

# ---------------------------------------------------------------- summary

report() {
    N="$N" SIZE="$SIZE" CONNECTIONS="$CONNECTIONS" SOURCE_REUSE="$SOURCE_REUSE" GOAL_RATE="$GOAL_RATE" \
        GOAL_RATIO="$GOAL_RATIO" WARMUP="$WARMUP" python3 - "$RESULTS" <<'PY'
import json, os, sys

r = {}
for line in open(sys.argv[1], encoding="utf-8"):
    key, _, value = line.rstrip("\n").partition("=")
    r[key] = value

n = int(os.environ["N"])
goal_rate = float(os.environ["GOAL_RATE"])
goal_ratio = float(os.environ["GOAL_RATIO"])
reuse = os.environ["SOURCE_REUSE"] == "1"

def mib(kb):
    return "-" if kb is None else f"{kb / 1024:.1f} MiB"

ref_seconds = float(r["ref_seconds"])
ref_rate = n / ref_seconds
print(f"{n} mails, smtp-source -l {os.environ['SIZE']}, {os.environ['CONNECTIONS']} connections")
print()
rows = [("sender", "mails/s", "seconds", "sent", "failed", "sink got")]
ref_sink = r.get("ref_sink_received") or "?"
if ref_sink.isdigit():
    ref_sink = str(int(ref_sink) - int(os.environ["WARMUP"]))  # the warm-up went to the same sink
rows.append((
    "smtp-source" + (" -d" if reuse else " (new conn./mail)"),
    f"{ref_rate:,.0f}", f"{ref_seconds:.2f}", str(n), "0", ref_sink,
))

status = 0
goals = []
ours = None
if "ours_json" in r:
    ours = json.loads(r["ours_json"])
    rate = float(ours.get("rate") or 0)
    wall = float(r["ours_wall"])
    rows.append((
        "reciprocity mail bench",
        f"{rate:,.0f}", f"{float(ours.get('seconds') or 0):.2f}",
        str(ours.get("sent")), str(ours.get("failed")), r.get("ours_sink_received") or "?",
    ))
widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
for k, row in enumerate(rows):
    print("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))))
    if k == 0:
        print("  ".join("-" * w for w in widths))

if ours is not None:
    ratio = rate / ref_rate if ref_rate else 0.0
    print()
    print(f"message bytes: smtp-source {r.get('ref_bytes', '?')}, ours {ours.get('bytes_avg', '?')} on average")
    print(f"ours / smtp-source: {ratio:.2f}   (ours by wall clock, start-up and set-up included: {n / wall:,.0f} mails/s)")
    ok_rate = rate >= goal_rate
    ok_ratio = ratio >= goal_ratio
    ok_sent = ours.get("sent") == n and not ours.get("failed")
    print()
    checks = [
        (f"goal: >= {goal_rate:,.0f} mails/s", ok_rate, f"{rate:,.0f}"),
        (f"goal: >= {goal_ratio:.2f} x smtp-source", ok_ratio, f"{ratio:.2f}"),
        (f"all {n} sent, none failed", ok_sent, f"sent {ours.get('sent')}, failed {ours.get('failed')}"),
    ]
    width = max(len(c[0]) for c in checks)
    for label, ok, value in checks:
        print(f"{label.ljust(width)}  {'PASS' if ok else 'FAIL'}  ({value})")
    if not (ok_rate and ok_ratio and ok_sent):
        status = 3

    samples = []
    for line in open(r["ours_samples"], encoding="utf-8"):
        t, kb = line.split("\t")
        samples.append((float(t), int(kb)))
    print()
    print("VmRSS of mail bench      start        peak         end")
    print(f"  its own report     {mib(ours.get('rss_kb_start')):>10}  {mib(ours.get('rss_kb_peak')):>10}  {mib(ours.get('rss_kb_end')):>10}")
    if samples:
        kbs = [kb for _, kb in samples]
        print(f"  /proc samples      {mib(kbs[0]):>10}  {mib(max(kbs)):>10}  {mib(kbs[-1]):>10}"
              f"   (min {mib(min(kbs))}, {len(kbs)} samples over {samples[-1][0] - samples[0][0]:.1f} s)")
        if len(kbs) >= 8:
            # Flatness: the last quarter against the second quarter (after start-up).
            q = len(kbs) // 4
            second, last = kbs[q:2 * q], kbs[-q:]
            a, b = max(second), max(last)
            print(f"  growth, peak of the 2nd quarter -> peak of the last quarter: {mib(a)} -> {mib(b)}"
                  f" ({(b - a) / a * 100 if a else 0:+.1f}%)")
    else:
        print("  /proc samples: none (the run ended before the first sample)")

sys.exit(status)
PY
}

SUMMARY_RC=0
SUMMARY=$(report) || SUMMARY_RC=$?
((SUMMARY_RC == 0 || SUMMARY_RC == 3)) || { echo "$SUMMARY" >&2; die "could not make the summary (raw: $RAW)"; }
{
    echo
    echo "## summary"
    echo "$SUMMARY"
} >>"$RAW"
echo
echo "$SUMMARY"
echo
echo "raw output: $RAW"
if ((SUMMARY_RC == 3 && STRICT)); then
    exit 3
fi
exit 0
