#!/usr/bin/env bash
# Local deliveries per second into the mailbox store on PostgreSQL (issue 5, "Performance"):
#   grpc: SMTP into tern-mta (port 25 role) → queue → runner → gRPC DeliverBatch → tern-mda;
#         the figure is end to end, from the first connection until every message is in
#         `messages` (so it includes accepting into the queue).
#   lmtp: LMTP straight into tern-mda (RFC 2033), from the first connection until every message
#         is in `messages` (LMTP answers after the commit, so this is the load tool's time).
# Each with Sieve off and with a typical script on (fileinto on a header test, a flag on a
# sender test, a vacation rule that does not match; the message ends in INBOX, but every message
# runs the script). The load tool is Postfix's smtp-source (`-L` speaks LMTP): 10 sessions, one
# message per session, 2 KB messages.
#
# Every run starts from a fresh database and freshly started agents. Loopback only.
# Usage (PostgreSQL on 127.0.0.1:5432, `apt-get install postfix` for smtp-source, release
# binaries built with `cargo build --release --bins`):
#   bash deploy/bench/delivery.sh
# Knobs: N (5000), CONC (10), SIZE (2048), REPS (2), PATHS ("grpc lmtp"), SIEVE ("off on"),
# TERN_BIN_DIR (target/release), RUN (/tmp/tern-delivery-bench), PG_URL.

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"
N="${N:-5000}"
CONC="${CONC:-10}"
SIZE="${SIZE:-2048}"
REPS="${REPS:-2}"
PATHS="${PATHS:-grpc lmtp}"
SIEVE="${SIEVE:-off on}"
BIN="${TERN_BIN_DIR:-$REPO/target/release}"
RUN="${RUN:-/tmp/tern-delivery-bench}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
DB="tern_delivery_bench"
TOKEN="bench-admin-token"
SMTP_PORT="${SMTP_PORT:-20035}"
LMTP_PORT="${LMTP_PORT:-20036}"
MTA_GRPC="${MTA_GRPC:-20062}"
MDA_GRPC="${MDA_GRPC:-20063}"
TIMEOUT="${TIMEOUT:-600}"
RCPT="ternbench@bench.test"
PIDS=()

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }
psql_admin() { PGOPTIONS="-c client_min_messages=warning" psql "$PG_URL/postgres" -v ON_ERROR_STOP=1 -Atq "$@"; }
count() { psql "$PG_URL/$DB" -Atq -c "SELECT count(*) FROM messages" 2>/dev/null || echo 0; }

wait_port() {
    local port="$1" i
    for ((i = 0; i < 300; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "nothing listens on 127.0.0.1:$port"
    return 1
}

stop() {
    local p
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS[@]}"; do
        timeout 10 tail --pid="$p" -f /dev/null 2>/dev/null || kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    PIDS=()
}
trap stop EXIT

start() {
    local sieve="$1"
    stop
    psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
    psql_admin -c "CREATE DATABASE $DB"
    local db="$PG_URL/$DB"
    env TERN_DATABASE_URL="$db" TERN_ADMIN_TOKEN="$TOKEN" TERN_HOSTNAME="mx.bench.test" \
        TERN_GRPC_LISTEN="127.0.0.1:$MDA_GRPC" TERN_LMTP_LISTEN="127.0.0.1:$LMTP_PORT" \
        "$BIN/tern-mda" >>"$RUN/tern-mda.log" 2>&1 &
    PIDS+=($!)
    wait_port "$MDA_GRPC"
    env TERN_DATABASE_URL="$db" TERN_HOSTNAME="mx.bench.test" TERN_ADMIN_TOKEN="$TOKEN" \
        TERN_SMTP_LISTEN="127.0.0.1:$SMTP_PORT" TERN_GRPC_LISTEN="127.0.0.1:$MTA_GRPC" \
        TERN_MDA_URL="http://127.0.0.1:$MDA_GRPC" TERN_QUEUE__POLL_INTERVAL_MS=50 \
        "$BIN/tern-mta" >>"$RUN/tern-mta.log" 2>&1 &
    PIDS+=($!)
    wait_port "$SMTP_PORT"
    wait_port "$LMTP_PORT"
    local admin=(env TERN_ADMIN_URL="http://127.0.0.1:$MDA_GRPC" TERN_QUEUE_URL="http://127.0.0.1:$MTA_GRPC" TERN_ADMIN_TOKEN="$TOKEN" "$BIN/tern")
    timeout 30 "${admin[@]}" domain add bench.test >/dev/null
    timeout 30 "${admin[@]}" account add "$RCPT" --password benchpass123 >/dev/null
    if [[ "$sieve" == on ]]; then
        cat >"$RUN/typical.sieve" <<'EOF'
require ["fileinto", "imap4flags", "envelope", "vacation", "mailbox"];
if header :contains "subject" ["invoice", "receipt"] {
    fileinto :create "Invoices";
    stop;
}
if address :is "from" "boss@bench.test" {
    addflag "\\Flagged";
}
if header :contains "list-id" "announce" {
    fileinto :create "Lists";
    stop;
}
if envelope :is "from" "away-test@bench.test" {
    vacation :days 7 "I am away.";
}
keep;
EOF
        timeout 30 "${admin[@]}" sieve put "$RCPT" typical "$RUN/typical.sieve" --activate >/dev/null
    fi
}

mkdir -p "$RUN"
: >"$RUN/results.tsv"
log "N=$N CONC=$CONC SIZE=$SIZE REPS=$REPS on $(nproc) CPUs; results in $RUN/results.tsv"
for rep in $(seq 1 "$REPS"); do
    for sieve in $SIEVE; do
        for path in $PATHS; do
            start "$sieve"
            flags=()
            port="$SMTP_PORT"
            if [[ "$path" == lmtp ]]; then flags=(-L); port="$LMTP_PORT"; fi
            t0="$(now)"
            rc=0
            timeout "$TIMEOUT" smtp-source "${flags[@]}" -s "$CONC" -m "$N" -l "$SIZE" \
                -f bench@load.test -t "$RCPT" "127.0.0.1:$port" >"$RUN/load.out" 2>&1 || rc=$?
            deadline="$(echo "$(now) + $TIMEOUT" | bc)"
            got=0
            while :; do
                got="$(count)"
                [[ "$got" -ge "$N" ]] && break
                (($(echo "$(now) > $deadline" | bc))) && break
                sleep 0.1
            done
            t1="$(now)"
            rate="$(echo "scale=0; $got / ($t1 - $t0)" | bc)"
            log "$path sieve=$sieve #$rep: rc=$rc delivered=$got/$N rate=${rate}/s"
            printf '%s\t%s\t%s\t%s\t%s\n' "$path" "$sieve" "$rep" "$got" "$rate" >>"$RUN/results.tsv"
        done
    done
done
stop
echo "| path | Sieve | delivered msg/s (median of $REPS) |"
echo "|---|---|---:|"
for sieve in $SIEVE; do
    for path in $PATHS; do
        med="$(awk -F'\t' -v p="$path" -v s="$sieve" '$1==p && $2==s {print $5}' "$RUN/results.tsv" | sort -n |
            awk '{a[NR]=$1} END {if (NR%2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2)}')"
        echo "| $path | $sieve | $med |"
    done
done
