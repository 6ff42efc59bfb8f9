# shellcheck shell=bash
# Throw-away Postfix instance for the end-to-end mail tests (tests/mail).
#
#   source scripts/lib/postfix-throwaway.sh
#   postfix_throwaway_start    # exports RECIPROCITY_TEST_SMTP_URL=smtp://127.0.0.1:PORT?tls=starttls,
#                              # RECIPROCITY_TEST_SMTP_CA_FILE and RECIPROCITY_TEST_MAILDIR
#   ...                        # use it
#   postfix_throwaway_stop     # optional: also runs automatically on EXIT
#
# Needs root and the Debian package `postfix` (it may be installed with "No
# configuration"; a configured and running system Postfix is left alone) plus
# `openssl`. The instance is a second Postfix with its own config, queue and
# data directories (`postfix -c DIR`), all inside one fresh mktemp directory:
#
#   DIR/conf/        main.cf, master.cf, lookup tables
#   DIR/tls/         a throw-away CA (ca.pem, exported) and the server certificate
#                    (SAN DNS:localhost, IP:127.0.0.1), made with openssl
#   DIR/queue/       queue_directory;  DIR/data/  data_directory
#   DIR/mail/catchall/Maildir/   the one Maildir every message ends in (exported)
#   DIR/maillog      Postfix's log (maillog_file; no syslog needed)
#
# What it does: smtpd listens on 127.0.0.1 at a free port (never 25), offers
# STARTTLS and requires it before MAIL FROM (smtpd_tls_security_level =
# encrypt), writes the TLS details into its Received header, accepts any
# recipient in any domain from 127.0.0.0/8 only, and delivers every message
# with the virtual(8) agent into the one Maildir. Nothing is relayed outward
# (default/relay transports are `error:`), no DNS is used, headers of the SMTP
# client are never rewritten (like a remote MX: DKIM signatures stay intact),
# SMTPUTF8 is on, messages may be up to 20 MB, and a line ending in bare <LF>
# is rejected (smtpd_forbid_bare_newline = reject), so a client that does not
# send CRLF fails. Postfix stores the messages with LF line endings.
#
# pg_throwaway_start installs an EXIT trap (and turns INT/TERM into an exit);
# postfix_throwaway_start chains onto whatever EXIT trap is already set, so
# start pg-throwaway first (a later `trap ... EXIT` replaces the chain; such a
# caller must call postfix_throwaway_stop itself). Calling
# postfix_throwaway_stop twice is harmless. Instances left behind by a shell
# that was killed (no trap ran) are stopped and removed on the next start.
#
# Exported after start: RECIPROCITY_TEST_SMTP_URL, RECIPROCITY_TEST_SMTP_CA_FILE,
# RECIPROCITY_TEST_MAILDIR, POSTFIX_THROWAWAY_DIR, POSTFIX_THROWAWAY_PORT.
# Optional input: POSTFIX_THROWAWAY_MESSAGE_SIZE_LIMIT (bytes, default 20971520),
# RECIPROCITY_TEST_LOG_DIR (the maillog is copied there as postfix-maillog.log on stop).

_postfix_throwaway_log() { echo "postfix-throwaway: $*" >&2; }

_postfix_throwaway_bin() {
    local p
    for p in "$(command -v postfix 2>/dev/null)" /usr/sbin/postfix; do
        if [[ -n "$p" && -x "$p" ]]; then echo "$p"; return 0; fi
    done
    _postfix_throwaway_log "no postfix binary (install the Debian package 'postfix')"
    return 1
}

_postfix_throwaway_free_port() {
    python3 - <<'PY'
import socket
s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
s.bind(("127.0.0.1", 0))
print(s.getsockname()[1])
s.close()
PY
}

# Waits until the SMTP greeting "220 " arrives on 127.0.0.1:$1 (at most $2 seconds, default 20).
_postfix_throwaway_wait_banner() {
    python3 - "$1" "${2:-20}" <<'PY'
import socket, sys, time
port = int(sys.argv[1])
deadline = time.monotonic() + float(sys.argv[2])
last = "no answer"
while time.monotonic() < deadline:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=2) as s:
            s.settimeout(5)
            data = s.recv(512)
            if data.startswith(b"220 ") or data.startswith(b"220-"):
                s.sendall(b"QUIT\r\n")
                sys.exit(0)
            last = repr(data[:100])
    except OSError as e:
        last = str(e)
    time.sleep(0.1)
print(f"no SMTP greeting on 127.0.0.1:{port}: {last}", file=sys.stderr)
sys.exit(1)
PY
}

# Stops the instance in directory $1 (best effort) and removes the directory.
_postfix_throwaway_remove() {
    local dir=$1 bin pid
    [[ -n "$dir" && -d "$dir" ]] || return 0
    bin=$(_postfix_throwaway_bin 2>/dev/null) || bin=""
    if [[ -f "$dir/conf/main.cf" && -n "$bin" && -f "$dir/queue/pid/master.pid" ]]; then
        "$bin" -c "$dir/conf" stop >/dev/null 2>&1 || "$bin" -c "$dir/conf" abort >/dev/null 2>&1 || true
    fi
    # Last resort: the master pid is in queue/pid/master.pid; its children exit with it.
    if [[ -f "$dir/queue/pid/master.pid" ]]; then
        pid=$(tr -d ' \n' <"$dir/queue/pid/master.pid" 2>/dev/null || true)
        if [[ "$pid" =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null \
            && grep -qa "master" "/proc/$pid/cmdline" 2>/dev/null; then
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -rf -- "$dir"
}

# Instances whose starting shell is gone (killed, so its EXIT trap never ran).
_postfix_throwaway_reap_stale() {
    local d owner
    for d in "${TMPDIR:-/tmp}"/postfix-throwaway.*; do
        [[ -d "$d" && -f "$d/owner.pid" ]] || continue
        [[ "$d" == "${POSTFIX_THROWAWAY_DIR:-}" ]] && continue
        owner=$(cat "$d/owner.pid" 2>/dev/null || true)
        if [[ "$owner" =~ ^[0-9]+$ ]] && kill -0 "$owner" 2>/dev/null; then continue; fi
        _postfix_throwaway_log "removing stale instance $d (its shell $owner is gone)"
        _postfix_throwaway_remove "$d"
    done
}

_postfix_throwaway_make_tls() {
    local tls=$1
    mkdir -p "$tls" || return 1
    cat >"$tls/server.ext" <<'EXT'
basicConstraints = critical, CA:FALSE
keyUsage = critical, digitalSignature, keyEncipherment
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid, issuer
EXT
    {
        openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 30 \
            -keyout "$tls/ca.key" -out "$tls/ca.pem" \
            -subj "/O=Reciprocity tests/CN=Reciprocity throw-away test CA" \
            -addext "basicConstraints = critical, CA:TRUE" \
            -addext "keyUsage = critical, keyCertSign, cRLSign" \
            -addext "subjectKeyIdentifier = hash" &&
            openssl req -newkey rsa:2048 -nodes -sha256 \
                -keyout "$tls/server.key" -out "$tls/server.csr" \
                -subj "/O=Reciprocity tests/CN=localhost" &&
            openssl x509 -req -sha256 -days 30 -in "$tls/server.csr" \
                -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -set_serial "0x$(openssl rand -hex 16)" \
                -extfile "$tls/server.ext" -out "$tls/server.pem" &&
            openssl verify -CAfile "$tls/ca.pem" "$tls/server.pem"
    } >"$tls/openssl.log" 2>&1 || {
        _postfix_throwaway_log "openssl failed:"; cat "$tls/openssl.log" >&2
        return 1
    }
    chmod 0600 "$tls/ca.key" "$tls/server.key"
    chmod 0644 "$tls/ca.pem" "$tls/server.pem"
}

# main.cf (without the port: that lives in master.cf).
_postfix_throwaway_write_main_cf() {
    local dir=$1 uid=$2 gid=$3
    cat >"$dir/conf/main.cf" <<CONF
# Throw-away Postfix for tests (scripts/lib/postfix-throwaway.sh). Removed on exit.
compatibility_level = 3.6
config_directory = $dir/conf
queue_directory = $dir/queue
data_directory = $dir/data
syslog_name = postfix-throwaway
maillog_file = $dir/maillog
maillog_file_prefixes = $dir
import_environment = MAIL_CONFIG MAIL_DEBUG MAIL_LOGTAG TZ LANG=C
biff = no
readme_directory = no
inet_interfaces = 127.0.0.1
inet_protocols = ipv4
myhostname = mx.reciprocity-tests.invalid
mydomain = reciprocity-tests.invalid
myorigin = \$myhostname
mydestination =
mynetworks_style = host
mynetworks = 127.0.0.0/8
relay_domains =
alias_maps =
alias_database =
local_recipient_maps =
append_dot_mydomain = no
smtputf8_enable = yes
message_size_limit = ${POSTFIX_THROWAWAY_MESSAGE_SIZE_LIMIT:-20971520}

# Never rewrite the headers of an SMTP client, never add missing ones (like an MX
# receiving from the Internet): what the product sent is what lands in the Maildir.
local_header_rewrite_clients =
remote_header_rewrite_domain =
always_add_missing_headers = no

# No DNS, no mail leaves this machine.
smtp_dns_support_level = disabled
lmtp_dns_support_level = disabled
# 127.0.0.1 is "localhost" from /etc/hosts: no DNS query.
smtpd_peername_lookup = yes
default_transport = error:throw-away test Postfix does not relay
relay_transport = error:throw-away test Postfix does not relay
soft_bounce = no

# Loopback clients only; every recipient of every domain goes to one Maildir.
smtpd_client_restrictions = permit_mynetworks, reject
smtpd_relay_restrictions = permit_mynetworks, reject
smtpd_recipient_restrictions = permit_mynetworks, reject
virtual_mailbox_domains = regexp:$dir/conf/virtual_domains
virtual_mailbox_maps = regexp:$dir/conf/virtual_mailbox
virtual_mailbox_base = $dir/mail
virtual_uid_maps = static:$uid
virtual_gid_maps = static:$gid
virtual_minimum_uid = 1
virtual_mailbox_limit = 0
virtual_destination_recipient_limit = 1

# Strict SMTP input: bare <LF> is an error, also from loopback.
smtpd_forbid_bare_newline = reject
smtpd_forbid_bare_newline_exclusions =
smtpd_delay_reject = yes
smtpd_error_sleep_time = 0
smtpd_soft_error_limit = 100
smtpd_hard_error_limit = 100
smtpd_client_connection_rate_limit = 0
smtpd_client_message_rate_limit = 0

# STARTTLS, required before MAIL FROM.
smtpd_tls_security_level = encrypt
smtpd_tls_chain_files = $dir/tls/server.key, $dir/tls/server.pem
smtpd_tls_received_header = yes
smtpd_tls_loglevel = 1
smtpd_tls_session_cache_database =
smtpd_tls_mandatory_protocols = >=TLSv1.2
smtpd_tls_protocols = >=TLSv1.2
tls_random_source = dev:/dev/urandom

# Quick delivery and no delays in tests.
queue_run_delay = 5s
minimal_backoff_time = 5s
maximal_backoff_time = 10s
bounce_queue_lifetime = 1h
maximal_queue_lifetime = 1h
in_flow_delay = 0
CONF
}

_postfix_throwaway_write_master_cf() {
    local dir=$1 port=$2
    # No chroot anywhere (a chroot would need a copy of /etc files in the queue directory).
    cat >"$dir/conf/master.cf" <<CONF
# service type  private unpriv  chroot  wakeup  maxproc command + args
127.0.0.1:$port inet n  -       n       -       -       smtpd
pickup    unix  n       -       n       60      1       pickup
cleanup   unix  n       -       n       -       0       cleanup
qmgr      unix  n       -       n       300     1       qmgr
tlsmgr    unix  -       -       n       1000?   1       tlsmgr
rewrite   unix  -       -       n       -       -       trivial-rewrite
bounce    unix  -       -       n       -       0       bounce
defer     unix  -       -       n       -       0       bounce
trace     unix  -       -       n       -       0       bounce
verify    unix  -       -       n       -       1       verify
flush     unix  n       -       n       1000?   0       flush
proxymap  unix  -       -       n       -       -       proxymap
proxywrite unix -       -       n       -       1       proxymap
smtp      unix  -       -       n       -       -       smtp
relay     unix  -       -       n       -       -       smtp
showq     unix  n       -       n       -       -       showq
error     unix  -       -       n       -       -       error
retry     unix  -       -       n       -       -       error
discard   unix  -       -       n       -       -       discard
local     unix  -       n       n       -       -       local
virtual   unix  -       n       n       -       -       virtual
lmtp      unix  -       -       n       -       -       lmtp
anvil     unix  -       -       n       -       1       anvil
scache    unix  -       -       n       -       1       scache
postlog   unix-dgram n  -       n       -       1       postlogd
CONF
}

# Appends "postfix_throwaway_stop" to the current EXIT trap (once).
_postfix_throwaway_chain_trap() {
    local current="" spec
    local -a words=()
    spec=$(trap -p EXIT)
    if [[ -n "$spec" ]]; then
        # `trap -p` prints: trap -- 'COMMAND' EXIT, quoted for re-use by the shell.
        eval "words=($spec)"
        current=${words[2]:-}
    fi
    # (SC2064: the old command is meant to be expanded now, into the new trap)
    # shellcheck disable=SC2064
    case "$current" in
        *postfix_throwaway_stop*) ;;
        "") trap 'postfix_throwaway_stop' EXIT ;;
        *) trap "postfix_throwaway_stop; $current" EXIT ;;
    esac
    # Turn INT and TERM into an exit so that the EXIT trap runs (as pg-throwaway does).
    [[ -n "$(trap -p INT)" ]] || trap 'exit 130' INT
    [[ -n "$(trap -p TERM)" ]] || trap 'exit 143' TERM
}

postfix_throwaway_start() {
    if [[ -n "${POSTFIX_THROWAWAY_DIR:-}" && -d "${POSTFIX_THROWAWAY_DIR}/conf" \
        && -n "${POSTFIX_THROWAWAY_PORT:-}" ]]; then
        if _postfix_throwaway_wait_banner "$POSTFIX_THROWAWAY_PORT" 3 2>/dev/null; then
            _postfix_throwaway_log "already running on 127.0.0.1:$POSTFIX_THROWAWAY_PORT (dir $POSTFIX_THROWAWAY_DIR)"
            return 0
        fi
        _postfix_throwaway_log "instance in $POSTFIX_THROWAWAY_DIR does not answer: starting a new one"
        postfix_throwaway_stop
    fi
    if [[ "$(id -u)" != 0 ]]; then
        _postfix_throwaway_log "must run as root (Postfix's master runs as root)"
        return 1
    fi
    local bin uid gid dir port attempt
    bin=$(_postfix_throwaway_bin) || return 1
    command -v openssl >/dev/null 2>&1 || { _postfix_throwaway_log "openssl missing (install 'openssl')"; return 1; }
    if ! id postfix >/dev/null 2>&1 || ! getent group postdrop >/dev/null 2>&1; then
        _postfix_throwaway_log "OS user 'postfix' or group 'postdrop' missing (install the 'postfix' package)"
        return 1
    fi
    # The Maildir belongs to "nobody" (virtual(8) refuses root); the tests run as root and read it.
    uid=$(id -u nobody 2>/dev/null) || uid=65534
    gid=$(id -g nobody 2>/dev/null) || gid=65534

    _postfix_throwaway_reap_stale

    dir=$(mktemp -d "${TMPDIR:-/tmp}/postfix-throwaway.XXXXXX") || return 1
    chmod 0755 "$dir"
    echo "$$" >"$dir/owner.pid"
    export POSTFIX_THROWAWAY_DIR="$dir"
    _postfix_throwaway_chain_trap

    mkdir -p "$dir/conf" "$dir/queue" "$dir/data" "$dir/mail/catchall/Maildir/"{new,cur,tmp} || return 1
    chown -R "$uid:$gid" "$dir/mail"
    chmod -R 0755 "$dir/mail"
    chown postfix:postfix "$dir/data"
    printf '/./ OK\n' >"$dir/conf/virtual_domains"
    printf '/./ catchall/Maildir/\n' >"$dir/conf/virtual_mailbox"
    _postfix_throwaway_make_tls "$dir/tls" || return 1
    _postfix_throwaway_write_main_cf "$dir" "$uid" "$gid"
    : >"$dir/maillog"

    # The port is found free and then handed to Postfix: retry on the rare race.
    for attempt in 1 2 3 4 5; do
        port=$(_postfix_throwaway_free_port) || return 1
        _postfix_throwaway_write_master_cf "$dir" "$port"
        # (`postfix start` runs `postfix check` first; master -w waits until it listens)
        if "$bin" -c "$dir/conf" start >"$dir/start.log" 2>&1 \
            && _postfix_throwaway_wait_banner "$port" 2>>"$dir/start.log"; then
            export POSTFIX_THROWAWAY_PORT="$port"
            export RECIPROCITY_TEST_SMTP_URL="smtp://127.0.0.1:${port}?tls=starttls"
            export RECIPROCITY_TEST_SMTP_CA_FILE="$dir/tls/ca.pem"
            export RECIPROCITY_TEST_MAILDIR="$dir/mail/catchall/Maildir"
            _postfix_throwaway_log "Postfix $(postconf -c "$dir/conf" -h mail_version 2>/dev/null)" \
                "up on 127.0.0.1:$port with STARTTLS (dir $dir)"
            return 0
        fi
        _postfix_throwaway_log "start on port $port failed (attempt $attempt):"
        cat "$dir/start.log" >&2
        tail -n 20 "$dir/maillog" >&2 2>/dev/null || true
        "$bin" -c "$dir/conf" abort >/dev/null 2>&1 || true
    done
    return 1
}

postfix_throwaway_stop() {
    local dir="${POSTFIX_THROWAWAY_DIR:-}"
    [[ -n "$dir" ]] || return 0
    if [[ -n "${RECIPROCITY_TEST_LOG_DIR:-}" && -s "$dir/maillog" ]]; then
        if mkdir -p "$RECIPROCITY_TEST_LOG_DIR" 2>/dev/null; then
            cp -f "$dir/maillog" "$RECIPROCITY_TEST_LOG_DIR/postfix-maillog.log" 2>/dev/null || true
        fi
    fi
    _postfix_throwaway_remove "$dir"
    unset POSTFIX_THROWAWAY_DIR POSTFIX_THROWAWAY_PORT
    unset RECIPROCITY_TEST_SMTP_URL RECIPROCITY_TEST_SMTP_CA_FILE RECIPROCITY_TEST_MAILDIR
}
