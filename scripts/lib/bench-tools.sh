# shellcheck shell=bash
# Installs the Debian packages a benchmark needs when they are missing (as root), the one way every bench script
# does it: apt-get update first (a fresh machine has no package lists), and no package starts its own daemon.
#   source scripts/lib/bench-tools.sh
#   bench_install wrk curl nginx            # packages to install; the caller decides which are missing
# postfix is preseeded as "No configuration" (the benchmarks use only smtp-sink and smtp-source).

bench_install() {
    (($#)) || return 0
    if [[ "$(id -u)" != 0 ]]; then
        echo "missing $*: install them (apt-get install $*) or run as root" >&2
        return 1
    fi
    echo "apt-get install $*" >&2
    if [[ " $* " == *" postfix "* ]]; then
        printf '%s\n' \
            "postfix postfix/main_mailer_type select No configuration" \
            "postfix postfix/mailname string localhost" | debconf-set-selections || return 1
    fi
    local policy=/usr/sbin/policy-rc.d made_policy=0 rc=0
    if [[ ! -e "$policy" ]]; then
        printf '#!/bin/sh\nexit 101\n' >"$policy" && chmod 0755 "$policy" && made_policy=1
    fi
    {
        DEBIAN_FRONTEND=noninteractive apt-get update -qq </dev/null &&
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                -o DPkg::Lock::Timeout=300 "$@" </dev/null >/dev/null
    } || rc=$?
    ((made_policy)) && rm -f "$policy"
    ((rc == 0)) || echo "apt-get install $* failed" >&2
    return "$rc"
}

# bench_missing CMD...: the commands of CMD... found neither on PATH nor in /usr/sbin.
bench_missing() {
    local c
    for c in "$@"; do command -v "$c" >/dev/null 2>&1 || [[ -x "/usr/sbin/$c" ]] || echo "$c"; done
}
