#!/usr/bin/env bash
# IMAP side by side: Tern's MAA (tern-maa on PostgreSQL) and Dovecot (Maildir), on one
# machine, in one run, under the same load (issue 6, "Performance").
#
# For each server, `tern bench imap` fills one mailbox with N generated messages (varied sizes,
# about 68 MB for 10,000) over APPEND and times, on one IMAPS connection, SELECT,
# FETCH 1:* (FLAGS), FETCH 1:* (FLAGS ENVELOPE), FETCH 1:* BODY.PEEK[] and UID SEARCH FROM
# (median of RUNS runs; APPEND's rate is the median over RUNS fill chunks), then APPEND once more
# with Python's imaplib, the client of the issue's reference figures. Then
# `tern bench imap-idle` holds IDLE_N sessions (IMAPS, LOGIN, SELECT of a 100-message INBOX,
# IDLE) and reads the server's memory from /proc: tern-maa is one process; Dovecot is the master
# and all its children, summed (RSS counts shared pages once per process, PSS shares them out).
#
# Both servers get the same self-signed certificate, listen on 127.0.0.1 only and are otherwise
# left at their defaults, except connection limits raised for the IDLE run (Tern's
# [limits] max_connections*, Dovecot's process and client limits, every process's open files).
# Tern stores mail in PostgreSQL with fsync on; Dovecot in Maildir (fsync_mode = optimized,
# its default). The load generator, PostgreSQL and the servers share this machine's CPUs.
#
# It deliberately does not touch /etc/dovecot or the system Dovecot service (a private config
# and base_dir under $RUN), listen beyond loopback, or build Tern (build first:
# `cargo build --release -p tern -p tern-maa`).
#
# Usage (as root, PostgreSQL on 127.0.0.1:5432; dovecot-imapd is installed when missing):
#   bash deploy/bench/imap-vs-dovecot.sh
# Knobs (environment): N (10000), RUNS (5), IDLE_N (10000), IDLE_N_DOVECOT (1000: Dovecot runs
# one imap process per session, about 1-2 MB each, and one TLS proxy slot in imap-login),
# SERVERS ("tern dovecot"), TERN_BIN_DIR (target/release), RUN (/tmp/tern-imap-bench),
# PG_URL (postgres://postgres@127.0.0.1:5432), BENCH_DB (tern_imap_bench), the ports below
# (TERN_IMAPS, DOVECOT_IMAPS, ...). IDLE_N=0 and IDLE_N_DOVECOT=0 skip the IDLE runs; a second
# run beside this one needs its own RUN, BENCH_DB and ports. PG_PARAMS (sslmode=disable: the
# agents' connection parameters; empty for sqlx's defaults, which use TLS when the server
# offers it, as Debian's does, even on loopback).
# Output: each server's report in $RUN/<server>-*.txt and a Markdown table on stdout and in
# $RUN/summary.md.

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

N="${N:-10000}"
RUNS="${RUNS:-5}"
IDLE_N="${IDLE_N:-10000}"
IDLE_N_DOVECOT="${IDLE_N_DOVECOT:-1000}"
SERVERS="${SERVERS:-tern dovecot}"
BIN="${TERN_BIN_DIR:-$REPO/target/release}"
RUN="${RUN:-/tmp/tern-imap-bench}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
PG_PARAMS="${PG_PARAMS-sslmode=disable}"
DB="${BENCH_DB:-tern_imap_bench}"
PASS="benchpass123"
USER_BENCH="bench@bench.test"
USER_IDLE="idle@bench.test"

# Loopback ports below Linux's ephemeral range, so that the IDLE run's 10,000 client sockets
# never hold one of them.
TERN_IMAPS="${TERN_IMAPS:-20993}"
DOVECOT_IMAPS="${DOVECOT_IMAPS:-20994}"
TERN_MAA_GRPC="${TERN_MAA_GRPC:-20054}"
TERN_IMAP="${TERN_IMAP:-20143}"
TERN_POP3="${TERN_POP3:-20110}"
TERN_POP3S="${TERN_POP3S:-20995}"

PIDS=()
DOVECOT_CONF="$RUN/dovecot/dovecot.conf"

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

wait_port() { # port seconds
    local port=$1 limit=$2 i
    for ((i = 0; i < limit * 10; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "nothing listens on 127.0.0.1:$port after ${limit}s"
    return 1
}

psql_admin() { PGOPTIONS="-c client_min_messages=warning" psql "$PG_URL/postgres" -v ON_ERROR_STOP=1 -Atq "$@"; }

stop_pids() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        timeout 15 tail --pid="$p" -f /dev/null 2>/dev/null || kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    PIDS=()
}

dovecot_stop() {
    if [[ -f "$DOVECOT_CONF" ]] && [[ -f "$RUN/dovecot/run/master.pid" ]]; then
        dovecot -c "$DOVECOT_CONF" stop 2>/dev/null || true
        timeout 15 tail --pid="$(cat "$RUN/dovecot/run/master.pid" 2>/dev/null || echo 1)" -f /dev/null 2>/dev/null || true
    fi
}

cleanup() {
    stop_pids
    dovecot_stop
    psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" 2>/dev/null || true
}
trap cleanup EXIT

preflight() {
    [[ $EUID -eq 0 ]] || { log "run as root (Dovecot's master needs it)"; exit 1; }
    for b in tern tern-maa; do
        [[ -x "$BIN/$b" ]] || { log "$BIN/$b missing: cargo build --release -p tern -p tern-maa"; exit 1; }
    done
    if ! command -v dovecot >/dev/null || [[ ! -e /usr/lib/dovecot/imap ]]; then
        log "installing dovecot-imapd"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dovecot-imapd >/dev/null
    fi
    for b in psql openssl; do
        command -v "$b" >/dev/null || { log "$b not found (apt-get install postgresql-client openssl)"; exit 1; }
    done
    for p in "$TERN_IMAPS" "$DOVECOT_IMAPS" "$TERN_MAA_GRPC" "$TERN_IMAP" "$TERN_POP3" "$TERN_POP3S"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            log "127.0.0.1:$p is already in use"; exit 1
        fi
    done
    # Every session is a socket on both sides; the children inherit the limit.
    ulimit -n "$(ulimit -Hn)"
    if (($(ulimit -n) < IDLE_N + 1000)); then
        log "ulimit -n is $(ulimit -n): too low for IDLE_N=$IDLE_N (raise the hard limit)"; exit 1
    fi
    rm -rf "$RUN"
    mkdir -p "$RUN"
    chmod 755 "$RUN"
    # One certificate for both servers: P-256, for 127.0.0.1 and localhost, not a CA (webpki
    # refuses a CA certificate as the server's own).
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=localhost" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
        -addext "basicConstraints=critical,CA:FALSE" -addext "extendedKeyUsage=serverAuth" \
        -keyout "$RUN/key.pem" -out "$RUN/cert.pem" 2>/dev/null
    chmod 644 "$RUN/cert.pem"
}

bench() { # label port
    "$BIN/tern" bench imap --target "127.0.0.1:$2" --ca "$RUN/cert.pem" \
        --user "$USER_BENCH" --password "$PASS" --messages "$N" --runs "$RUNS" \
        | tee "$RUN/$1-imap.txt" >&2
    py_append "$1" "$2" | tee -a "$RUN/$1-imap.txt" >&2
}

# APPEND as the issue's reference figures were taken: Python's imaplib on one connection
# (no LITERAL+, each literal and its CRLF in two writes, Nagle on), PY_APPEND_N messages of
# 2-4 kB into a mailbox of their own, which is then deleted.
py_append() { # label port
    python3 - "$2" "$RUN/cert.pem" "$USER_BENCH" "$PASS" "${PY_APPEND_N:-500}" <<'PY'
import imaplib, ssl, sys, time
port, ca, user, password, n = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
ctx = ssl.create_default_context(cafile=ca)
c = imaplib.IMAP4_SSL("127.0.0.1", int(port), ssl_context=ctx)
c.login(user, password)
c.create("PyAppend")
start = time.perf_counter()
for i in range(n):
    body = ("line %d of a message appended by imaplib\r\n" % i) * (50 + i % 50)
    msg = ("From: Py <py@bench.test>\r\nTo: bench@bench.test\r\nSubject: py %d\r\n\r\n" % i + body).encode()
    typ, _ = c.append("PyAppend", None, None, msg)
    assert typ == "OK", typ
rate = n / (time.perf_counter() - start)
c.delete("PyAppend")
c.logout()
print("%-28s %10.1f msg/s  (%d messages, one imaplib connection)" % ("APPEND (imaplib)", rate, n))
PY
}

idle_bench() { # label port pid sessions
    (($4 > 0)) || return 0
    "$BIN/tern" bench imap --target "127.0.0.1:$2" --ca "$RUN/cert.pem" \
        --user "$USER_IDLE" --password "$PASS" --messages 100 --fill-only >/dev/null
    "$BIN/tern" bench imap-idle --target "127.0.0.1:$2" --ca "$RUN/cert.pem" \
        --user "$USER_IDLE" --password "$PASS" --connections "$4" --pid "$3" \
        | tee "$RUN/$1-idle.txt" >&2
}

# ---------------------------------------------------------------- Tern

run_tern() {
    psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
    psql_admin -c "CREATE DATABASE $DB"
    local db="$PG_URL/$DB"
    # `tern up` on the bench database runs the migrations and serves Admin for the domain and
    # the accounts; then it stops, and tern-maa alone serves IMAP.
    "$BIN/tern" up --data "$RUN/up" --database-url "$db" --ephemeral-ports >>"$RUN/tern-up.log" 2>&1 &
    local up=$!
    PIDS+=($up)
    local i
    for ((i = 0; i < 300; i++)); do [[ -f "$RUN/up/state.json" ]] && break; sleep 0.1; done
    timeout 30 "$BIN/tern" --data "$RUN/up" domain add bench.test >/dev/null
    timeout 30 "$BIN/tern" --data "$RUN/up" account add "$USER_BENCH" --password "$PASS" >/dev/null
    timeout 30 "$BIN/tern" --data "$RUN/up" account add "$USER_IDLE" --password "$PASS" >/dev/null
    stop_pids
    env TERN_DATABASE_URL="$db${PG_PARAMS:+?$PG_PARAMS}" TERN_HOSTNAME=localhost \
        TERN_IMAP_LISTEN="127.0.0.1:$TERN_IMAP" TERN_IMAPS_LISTEN="127.0.0.1:$TERN_IMAPS" \
        TERN_POP3_LISTEN="127.0.0.1:$TERN_POP3" TERN_POP3S_LISTEN="127.0.0.1:$TERN_POP3S" \
        TERN_GRPC_LISTEN="127.0.0.1:$TERN_MAA_GRPC" \
        TERN_TLS__CERT="$RUN/cert.pem" TERN_TLS__KEY="$RUN/key.pem" \
        TERN_LIMITS__MAX_CONNECTIONS=$((IDLE_N + 100)) TERN_LIMITS__MAX_CONNECTIONS_PER_IP=$((IDLE_N + 100)) \
        "$BIN/tern-maa" >>"$RUN/tern-maa.log" 2>&1 &
    local maa=$!
    PIDS+=($maa)
    wait_port "$TERN_IMAPS" 30
    log "tern: filling and measuring ($N messages, $RUNS runs)"
    bench tern "$TERN_IMAPS"
    log "tern: $IDLE_N sessions in IDLE"
    idle_bench tern "$TERN_IMAPS" "$maa" "$IDLE_N"
    stop_pids
    psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
}

# ---------------------------------------------------------------- Dovecot

run_dovecot() {
    local d="$RUN/dovecot"
    mkdir -p "$d/run" "$d/state" "$d/home"
    chown nobody:nogroup "$d/home"
    printf '%s:{PLAIN}%s\n%s:{PLAIN}%s\n' "$USER_BENCH" "$PASS" "$USER_IDLE" "$PASS" >"$d/users"
    chown root:dovecot "$d/users"
    chmod 640 "$d/users"
    cat >"$DOVECOT_CONF" <<EOF
base_dir = $d/run
state_dir = $d/state
log_path = $d/dovecot.log
protocols = imap
listen = 127.0.0.1
ssl = required
ssl_cert = <$RUN/cert.pem
ssl_key = <$RUN/key.pem
auth_mechanisms = plain login
passdb {
  driver = passwd-file
  args = scheme=PLAIN username_format=%u $d/users
}
userdb {
  driver = static
  args = uid=nobody gid=nogroup home=$d/home/%u
}
mail_location = maildir:~/Maildir
default_vsz_limit = 1G
service imap-login {
  inet_listener imap {
    port = 0
  }
  inet_listener imaps {
    address = 127.0.0.1
    port = $DOVECOT_IMAPS
  }
  # High-performance mode: a few login processes, each proxying many TLS sessions.
  service_count = 0
  process_min_avail = 2
  client_limit = $((IDLE_N_DOVECOT + 100))
}
service imap {
  process_limit = $((IDLE_N_DOVECOT + 100))
}
service anvil {
  client_limit = $((2 * IDLE_N_DOVECOT + 200))
}
service auth {
  client_limit = $((2 * IDLE_N_DOVECOT + 200))
}
mail_max_userip_connections = $((IDLE_N_DOVECOT + 100))
EOF
    dovecot -c "$DOVECOT_CONF"
    wait_port "$DOVECOT_IMAPS" 30
    local master
    master="$(cat "$d/run/master.pid")"
    log "dovecot: filling and measuring ($N messages, $RUNS runs)"
    bench dovecot "$DOVECOT_IMAPS"
    log "dovecot: $IDLE_N_DOVECOT sessions in IDLE"
    idle_bench dovecot "$DOVECOT_IMAPS" "$master" "$IDLE_N_DOVECOT"
    dovecot_stop
}

# ---------------------------------------------------------------- summary

# The value column of one measure in a report ("SELECT   12.3 ms (...)" -> "12.3").
value() { # file name
    awk -F '  +' -v name="$2" '$1 == name { split($2, v, " "); print v[1]; exit }' "$1" 2>/dev/null
}

summary() {
    local names=("APPEND" "APPEND (imaplib)" "SELECT" "FETCH 1:* (FLAGS)" "FETCH 1:* (FLAGS ENVELOPE)" "FETCH 1:* BODY.PEEK[]" "UID SEARCH FROM")
    {
        echo "| measure | unit | Tern (tern-maa, PostgreSQL) | Dovecot $(dovecot --version | cut -d' ' -f1) (Maildir) |"
        echo "|---|---|---:|---:|"
        local n unit
        for n in "${names[@]}"; do
            unit="ms (median)"
            [[ $n == APPEND ]] && unit="msg/s (median)"
            [[ $n == "APPEND (imaplib)" ]] && unit="msg/s"
            echo "| $n | $unit | $(value "$RUN/tern-imap.txt" "$n") | $(value "$RUN/dovecot-imap.txt" "$n") |"
        done
        local s
        for s in tern dovecot; do
            [[ -f "$RUN/$s-idle.txt" ]] || continue
            echo
            echo "IDLE, $s:"
            echo
            sed 's/^/    /' "$RUN/$s-idle.txt"
        done
        echo
        echo "Mailbox: $(head -1 "$RUN/tern-imap.txt" 2>/dev/null | sed 's/^mailbox *//')"
    } | tee "$RUN/summary.md"
}

preflight
for s in $SERVERS; do
    case "$s" in
        tern) run_tern ;;
        dovecot) run_dovecot ;;
        *) log "unknown server $s"; exit 1 ;;
    esac
done
summary
