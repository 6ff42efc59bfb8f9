# shellcheck shell=bash
# Throw-away PostgreSQL cluster for tests and benchmarks.
#
#   source scripts/lib/pg-throwaway.sh
#   pg_throwaway_start      # exports RECIPROCITY_TEST_POSTGRES_URL=postgres://postgres@127.0.0.1:PORT/postgres
#   ...                     # use it
#   pg_throwaway_stop       # optional: also runs automatically on EXIT
#
# The cluster lives in a fresh mktemp directory owned by the `postgres` OS user
# (PostgreSQL refuses to run as root), uses trust authentication, listens on
# 127.0.0.1 only, on a free port, and keeps its unix socket inside that
# directory. pg_throwaway_start installs an EXIT trap that stops the server and
# deletes the directory (INT and TERM are turned into an exit so the trap runs).
# A caller that needs its own EXIT trap must call pg_throwaway_stop from it;
# calling pg_throwaway_stop twice is harmless.
#
# Exported after start: RECIPROCITY_TEST_POSTGRES_URL, PG_THROWAWAY_DIR,
# PG_THROWAWAY_PORT, PG_THROWAWAY_BINDIR, PG_THROWAWAY_SOCKET_DIR.
# Optional input: PG_THROWAWAY_MAX_CONNECTIONS (default 300).

_pg_throwaway_log() { echo "pg-throwaway: $*" >&2; }

_pg_throwaway_bindir() {
    if [[ -n "${PG_THROWAWAY_BINDIR:-}" && -x "${PG_THROWAWAY_BINDIR}/initdb" ]]; then
        echo "$PG_THROWAWAY_BINDIR"; return 0
    fi
    local d
    for d in /usr/lib/postgresql/15/bin $(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -rV); do
        if [[ -x "$d/initdb" && -x "$d/pg_ctl" ]]; then echo "$d"; return 0; fi
    done
    _pg_throwaway_log "no PostgreSQL server binaries under /usr/lib/postgresql/*/bin (install the 'postgresql' package)"
    return 1
}

# Runs a command as the postgres OS user when we are root, else as ourselves.
_pg_throwaway_as_owner() {
    if [[ "$(id -u)" == 0 ]]; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

_pg_throwaway_free_port() {
    python3 - <<'PY'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

pg_throwaway_start() {
    if [[ -n "${PG_THROWAWAY_DIR:-}" && -d "${PG_THROWAWAY_DIR}" ]]; then
        _pg_throwaway_log "already running in $PG_THROWAWAY_DIR"
        return 0
    fi
    local bindir dir port attempt
    bindir=$(_pg_throwaway_bindir) || return 1
    if [[ "$(id -u)" == 0 ]] && ! id postgres >/dev/null 2>&1; then
        _pg_throwaway_log "OS user 'postgres' missing (install the 'postgresql' package)"
        return 1
    fi

    dir=$(mktemp -d "${TMPDIR:-/tmp}/pg-throwaway.XXXXXX")
    chmod 0755 "$dir"
    mkdir -p "$dir/data" "$dir/socket"
    if [[ "$(id -u)" == 0 ]]; then chown -R postgres:postgres "$dir"; fi
    export PG_THROWAWAY_DIR="$dir" PG_THROWAWAY_BINDIR="$bindir" PG_THROWAWAY_SOCKET_DIR="$dir/socket"

    trap 'pg_throwaway_stop' EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM

    if ! _pg_throwaway_as_owner "$bindir/initdb" -D "$dir/data" -U postgres -A trust \
            -E UTF8 --locale=C.UTF-8 --no-sync >"$dir/initdb.log" 2>&1; then
        _pg_throwaway_log "initdb failed:"; cat "$dir/initdb.log" >&2
        return 1
    fi

    # The port is found free and then handed to postgres: retry on the rare race.
    for attempt in 1 2 3 4 5; do
        port=$(_pg_throwaway_free_port)
        cat >"$dir/data/postgresql.auto.conf" <<CONF
listen_addresses = '127.0.0.1'
port = $port
unix_socket_directories = '$dir/socket'
max_connections = ${PG_THROWAWAY_MAX_CONNECTIONS:-300}
logging_collector = off
CONF
        if [[ "$(id -u)" == 0 ]]; then chown postgres:postgres "$dir/data/postgresql.auto.conf"; fi
        if _pg_throwaway_as_owner "$bindir/pg_ctl" -D "$dir/data" -l "$dir/server.log" -w -t 60 start >/dev/null 2>&1; then
            export PG_THROWAWAY_PORT="$port"
            export RECIPROCITY_TEST_POSTGRES_URL="postgres://postgres@127.0.0.1:${port}/postgres"
            _pg_throwaway_log "PostgreSQL $("$bindir/postgres" --version | awk '{print $3}') up on 127.0.0.1:$port (dir $dir)"
            return 0
        fi
        _pg_throwaway_log "start on port $port failed (attempt $attempt)"
        tail -n 20 "$dir/server.log" >&2 2>/dev/null || true
    done
    return 1
}

pg_throwaway_stop() {
    local dir="${PG_THROWAWAY_DIR:-}"
    [[ -n "$dir" ]] || return 0
    if [[ -d "$dir/data" ]]; then
        local bindir="${PG_THROWAWAY_BINDIR:-}"
        [[ -n "$bindir" ]] || bindir=$(_pg_throwaway_bindir 2>/dev/null) || true
        if [[ -f "$dir/data/postmaster.pid" && -n "$bindir" ]]; then
            _pg_throwaway_as_owner "$bindir/pg_ctl" -D "$dir/data" -m fast -w -t 30 stop >/dev/null 2>&1 \
                || _pg_throwaway_as_owner "$bindir/pg_ctl" -D "$dir/data" -m immediate -w -t 10 stop >/dev/null 2>&1 \
                || true
        fi
        # Last resort: the postmaster pid is the first line of postmaster.pid.
        if [[ -f "$dir/data/postmaster.pid" ]]; then
            local pid
            pid=$(head -n 1 "$dir/data/postmaster.pid" 2>/dev/null || true)
            if [[ "$pid" =~ ^[0-9]+$ ]]; then kill -KILL "$pid" 2>/dev/null || true; fi
        fi
    fi
    rm -rf -- "$dir"
    unset PG_THROWAWAY_DIR PG_THROWAWAY_PORT PG_THROWAWAY_SOCKET_DIR RECIPROCITY_TEST_POSTGRES_URL
}
