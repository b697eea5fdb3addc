#!/usr/bin/env bash
# Side-by-side SMTP throughput of Tern (tern-mta + tern-mda on PostgreSQL) and Postfix 3.7 on
# one machine, in one run, under the same load (issue 3, "Performance").
#
# Scenarios, each measured from the first connection until the mail has really arrived:
#   (a) local: accept ternbench@bench.test over SMTP into a durable queue and deliver it into the
#       mailbox. Tern: rows in `messages` (PostgreSQL); Postfix: files in ~ternbench/Maildir.
#   (b) relay: accept x@sink.test (a relay domain) and deliver it onward to Postfix's smtp-sink;
#       done when smtp-sink has counted every message.
# Load tools, each against each server: Postfix's `smtp-source` (no PIPELINING, one message per
# connection) and Tern's `tern bench smtp` (PIPELINING, one message per connection, latency
# percentiles from MAIL FROM to the final 250 after DATA).
#
# Every run starts from an empty state: Tern gets a freshly created database and freshly started
# agents, Postfix an empty queue and Maildir. Runs alternate which server goes first. Both servers,
# PostgreSQL and the load generator share this machine's CPUs: the numbers compare the two
# systems under identical conditions, they are not either system's ceiling.
#
# What it deliberately does not do: touch port 25, /etc/postfix or /var/spool/postfix (Postfix
# runs from a private config and queue directory under $RUN), listen on anything but 127.0.0.1,
# tune either server beyond its defaults (except Tern's queue poll interval, see below), or
# build Tern (build first: `cargo build --release --bins`).
#
# Usage (as root, with PostgreSQL on 127.0.0.1:5432 and the postfix package installed):
#   bash deploy/bench/smtp-vs-postfix.sh
# Knobs (environment): N messages per run (5000), CONC concurrent sessions (10), SIZE bytes per
# message (2048), REPS repetitions (2), SCENARIOS ("a b"), TOOLS ("smtp-source tern"),
# SERVERS ("tern postfix"),
# TERN_BIN_DIR (target/release), RUN (/tmp/tern-bench), PG_URL (postgres://postgres@127.0.0.1:5432),
# PG_PARAMS (sslmode=disable: the agents' connection parameters; empty for sqlx's defaults).
# Output: $RUN/results.tsv (one line per run) and a Markdown summary (medians) on stdout and in
# $RUN/summary.md.

set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$HERE/../.." && pwd)"

N="${N:-5000}"
CONC="${CONC:-10}"
SIZE="${SIZE:-2048}"
REPS="${REPS:-2}"
SCENARIOS="${SCENARIOS:-a b}"
TOOLS="${TOOLS:-smtp-source tern}"
SERVERS="${SERVERS:-tern postfix}"
BIN="${TERN_BIN_DIR:-$REPO/target/release}"
RUN="${RUN:-/tmp/tern-bench}"
PG_URL="${PG_URL:-postgres://postgres@127.0.0.1:5432}"
PG_PARAMS="${PG_PARAMS-sslmode=disable}"
DB="tern_bench"
TOKEN="bench-admin-token"

# Loopback ports only, and below Linux's ephemeral range (32768-60999): tens of thousands of
# short client connections per run would otherwise sooner or later hold one of these ports as a
# local port and make the next agent's bind() fail.
TERN_SMTP_PORT="${TERN_SMTP_PORT:-20025}"
PF_PORT="${PF_PORT:-20026}"
SINK_PORT="${SINK_PORT:-20027}"
TERN_MTA_GRPC="${TERN_MTA_GRPC:-20052}"
TERN_MDA_GRPC="${TERN_MDA_GRPC:-20053}"

# Upper bounds for every wait, in seconds: a run that exceeds them is recorded as incomplete.
LOAD_TIMEOUT="${LOAD_TIMEOUT:-600}"
DRAIN_TIMEOUT="${DRAIN_TIMEOUT:-600}"

LOCAL_RCPT="ternbench@bench.test"
RELAY_RCPT="x@sink.test"
PF_CONF="$RUN/pf-conf"
PF_QUEUE="$RUN/pf-queue"
PF_DATA="$RUN/pf-data"
PF_HOME="$RUN/home/ternbench"
RESULTS="$RUN/results.tsv"

PIDS_TERN=()
SINK_PID=""
TOP_PID=""
CREATED_USER=0

log() { printf '%s %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
now() { date +%s.%N; }

# Waits until something accepts TCP connections on 127.0.0.1:$1, for at most $2 seconds.
wait_port() {
    local port="$1" limit="$2" i
    for ((i = 0; i < limit * 10; i++)); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then return 0; fi
        sleep 0.1
    done
    log "nothing listens on 127.0.0.1:$port after ${limit}s"
    return 1
}

psql_admin() { PGOPTIONS="-c client_min_messages=warning" psql "$PG_URL/postgres" -v ON_ERROR_STOP=1 -Atq "$@"; }
psql_bench() { psql "$PG_URL/$DB" -Atq "$@"; }

preflight() {
    [[ $EUID -eq 0 ]] || { log "run as root (Postfix needs it)"; exit 1; }
    local need=""
    [[ " $SERVERS " == *" tern "* ]] && need="tern tern-mta tern-mda"
    [[ " $TOOLS " == *" tern "* ]] && need="$need tern"
    for b in $need; do
        [[ -x "$BIN/$b" ]] || { log "$BIN/$b missing: cargo build --release --bins"; exit 1; }
    done
    for b in postfix smtp-source smtp-sink psql top; do
        command -v "$b" >/dev/null || { log "$b not found (apt-get install postfix postgresql-client procps)"; exit 1; }
    done
    for p in "$TERN_SMTP_PORT" "$PF_PORT" "$SINK_PORT" "$TERN_MTA_GRPC" "$TERN_MDA_GRPC"; do
        if (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
            log "127.0.0.1:$p is already in use"; exit 1
        fi
    done
    mkdir -p "$RUN"
    chmod 755 "$RUN"
}

# ---------------------------------------------------------------- smtp-sink (scenario b)

start_sink() {
    stop_sink
    : >"$RUN/sink.out"
    # -c prints "sess=.. quit=.. mesg=N" after every message; the backlog is generous so that
    # neither server sees refused connections from the sink itself.
    smtp-sink -c -u nobody "127.0.0.1:$SINK_PORT" 1024 >"$RUN/sink.out" 2>"$RUN/sink.err" &
    SINK_PID=$!
    wait_port "$SINK_PORT" 10
}

stop_sink() {
    if [[ -n "$SINK_PID" ]]; then
        kill "$SINK_PID" 2>/dev/null || true
        wait "$SINK_PID" 2>/dev/null || true
        SINK_PID=""
    fi
}

sink_count() {
    local n
    n="$(tr '\r' '\n' <"$RUN/sink.out" | grep -o 'mesg=[0-9]*' | tail -n 1 | cut -d= -f2 || true)"
    echo "${n:-0}"
}

# ---------------------------------------------------------------- Tern

tern_start() {
    tern_stop
    psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)"
    psql_admin -c "CREATE DATABASE $DB"
    # The database is on loopback, so the agents connect without TLS (PG_PARAMS): sqlx, like
    # libpq, would otherwise negotiate TLS with a server that has ssl=on (Debian's default) and
    # encrypt traffic that never leaves the machine, as Postfix's queue files are not.
    local db="$PG_URL/$DB${PG_PARAMS:+?$PG_PARAMS}"
    # The MDA first: it runs the migrations and serves Admin, which creates the domain/account.
    env TERN_DATABASE_URL="$db" TERN_ADMIN_TOKEN="$TOKEN" \
        TERN_GRPC_LISTEN="127.0.0.1:$TERN_MDA_GRPC" \
        "$BIN/tern-mda" >>"$RUN/tern-mda.log" 2>&1 &
    PIDS_TERN+=($!)
    wait_port "$TERN_MDA_GRPC" 30
    # Queue poll interval 50 ms instead of 500 ms: with the default an idle runner may sleep half
    # a second before it notices new mail, which only adds a constant to the drain time.
    env TERN_DATABASE_URL="$db" TERN_HOSTNAME="mx.bench.test" TERN_ADMIN_TOKEN="$TOKEN" \
        TERN_SMTP_LISTEN="127.0.0.1:$TERN_SMTP_PORT" TERN_GRPC_LISTEN="127.0.0.1:$TERN_MTA_GRPC" \
        TERN_MDA_URL="http://127.0.0.1:$TERN_MDA_GRPC" TERN_QUEUE__POLL_INTERVAL_MS=50 \
        TERN_RELAY_DOMAINS='["sink.test"]' \
        TERN_OUTBOUND__SMARTHOST="{ host = \"127.0.0.1\", port = $SINK_PORT, tls = \"disabled\" }" \
        "$BIN/tern-mta" >>"$RUN/tern-mta.log" 2>&1 &
    PIDS_TERN+=($!)
    wait_port "$TERN_SMTP_PORT" 30
    local admin=(env TERN_ADMIN_URL="http://127.0.0.1:$TERN_MDA_GRPC" TERN_QUEUE_URL="http://127.0.0.1:$TERN_MTA_GRPC" TERN_ADMIN_TOKEN="$TOKEN" "$BIN/tern")
    timeout 30 "${admin[@]}" domain add bench.test >/dev/null
    timeout 30 "${admin[@]}" account add "$LOCAL_RCPT" --password benchpass123 >/dev/null
}

tern_stop() {
    local p
    for p in "${PIDS_TERN[@]}"; do kill "$p" 2>/dev/null || true; done
    for p in "${PIDS_TERN[@]}"; do
        # Bounded: an agent that ignores SIGTERM for 10 s is killed.
        timeout 10 tail --pid="$p" -f /dev/null 2>/dev/null || kill -9 "$p" 2>/dev/null || true
        wait "$p" 2>/dev/null || true
    done
    PIDS_TERN=()
}

tern_delivered() {
    case "$1" in
        a) psql_bench -c "SELECT count(*) FROM messages" 2>/dev/null || echo 0 ;;
        b) sink_count ;;
    esac
}

# ---------------------------------------------------------------- Postfix

pf_start() {
    pf_stop
    rm -rf "$PF_CONF" "$PF_QUEUE" "$PF_DATA" "$PF_HOME"
    mkdir -p "$PF_CONF" "$PF_QUEUE" "$PF_DATA" "$PF_HOME"
    chown postfix "$PF_DATA"
    chown ternbench "$PF_HOME"
    sed -e "s|@QUEUE@|$PF_QUEUE|; s|@DATA@|$PF_DATA|; s|@SINKPORT@|$SINK_PORT|; s|@RUN@|$RUN|g" \
        "$HERE/postfix-main.cf.in" >"$PF_CONF/main.cf"
    sed -e "s|@PORT@|$PF_PORT|" "$HERE/postfix-master.cf.in" >"$PF_CONF/master.cf"
    # `postfix check` creates the queue subdirectories with the right owners.
    postfix -c "$PF_CONF" check
    postfix -c "$PF_CONF" start 2>/dev/null
    wait_port "$PF_PORT" 30
}

pf_stop() {
    if [[ -f "$PF_CONF/main.cf" ]] && postfix -c "$PF_CONF" status >/dev/null 2>&1; then
        postfix -c "$PF_CONF" stop >/dev/null 2>&1 || true
        local i
        for ((i = 0; i < 100; i++)); do
            postfix -c "$PF_CONF" status >/dev/null 2>&1 || return 0
            sleep 0.1
        done
        postfix -c "$PF_CONF" abort >/dev/null 2>&1 || true
    fi
}

pf_delivered() {
    case "$1" in
        a) find "$PF_HOME/Maildir/new" "$PF_HOME/Maildir/cur" -type f 2>/dev/null | wc -l || true ;;
        b) sink_count ;;
    esac
}

# ---------------------------------------------------------------- one measurement

# Average %CPU per command over the run, from `top` samples every 0.5 s (the first frame, which
# top computes since each process started, is dropped). Short-lived Postfix processes are
# caught as long as they live across a sample.
cpu_summary() {
    awk '
        /^top - / { frame++; next }
        frame > 1 && $1 ~ /^[0-9]+$/ && NF >= 12 {
            cmd = $12; for (i = 13; i <= NF; i++) cmd = cmd " " $i
            cpu[cmd] += $9
        }
        END {
            n = frame - 1; if (n < 1) n = 1
            for (c in cpu) if (cpu[c] / n >= 1) printf "%s=%.0f%%\n", c, cpu[c] / n
        }' "$1" | sort -t= -k2 -rn | head -n 8 | paste -sd' '
}

# measure SCENARIO SERVER TOOL REP: one run from an empty server; appends a line to $RESULTS.
measure() {
    local scenario="$1" server="$2" tool="$3" rep="$4" port rcpt out
    out="$RUN/out-$scenario-$server-$tool-$rep.txt"
    [[ "$scenario" == a ]] && rcpt="$LOCAL_RCPT" || rcpt="$RELAY_RCPT"
    [[ "$scenario" == b ]] && start_sink
    if [[ "$server" == tern ]]; then tern_start; port="$TERN_SMTP_PORT"; else pf_start; port="$PF_PORT"; fi
    sync
    sleep 1
    local load1
    load1="$(cut -d' ' -f1 /proc/loadavg)"

    top -b -d 0.5 -w 512 -n $(((LOAD_TIMEOUT + DRAIN_TIMEOUT) * 2)) >"$RUN/top.txt" 2>/dev/null &
    TOP_PID=$!
    local t0 t1 t2 rc=0
    t0="$(now)"
    if [[ "$tool" == smtp-source ]]; then
        timeout "$LOAD_TIMEOUT" smtp-source -s "$CONC" -m "$N" -l "$SIZE" \
            -f bench@load.test -t "$rcpt" "127.0.0.1:$port" >"$out" 2>&1 || rc=$?
    else
        timeout "$LOAD_TIMEOUT" "$BIN/tern" bench smtp --target "127.0.0.1:$port" \
            --connections "$CONC" --messages "$N" --size "$SIZE" --to "$rcpt" \
            --max-seconds "$LOAD_TIMEOUT" >"$out" 2>&1 || rc=$?
    fi
    t1="$(now)"
    # Drain: poll every 0.2 s until every message has arrived, within DRAIN_TIMEOUT.
    local got=0 deadline
    deadline="$(echo "$t1 + $DRAIN_TIMEOUT" | bc)"
    while :; do
        if [[ "$server" == tern ]]; then got="$(tern_delivered "$scenario")"; else got="$(pf_delivered "$scenario")"; fi
        [[ "$got" -ge "$N" ]] && break
        (($(echo "$(now) > $deadline" | bc))) && break
        sleep 0.2
    done
    t2="$(now)"
    kill "$TOP_PID" 2>/dev/null || true
    wait "$TOP_PID" 2>/dev/null || true
    TOP_PID=""
    local cpu
    cpu="$(cpu_summary "$RUN/top.txt")"

    local acc_s e2e_s acc_rate e2e_rate p50=- p90=- p99=- own=- failed=-
    acc_s="$(echo "$t1 - $t0" | bc -l)"
    e2e_s="$(echo "$t2 - $t0" | bc -l)"
    acc_rate="$(printf '%.0f' "$(echo "$N / $acc_s" | bc -l)")"
    e2e_rate="$(printf '%.0f' "$(echo "$got / $e2e_s" | bc -l)")"
    if [[ "$tool" == tern ]]; then
        own="$(awk '/^rate/ {print $2}' "$out")"
        failed="$(awk '/^failed/ {print $2}' "$out")"
        read -r p50 p90 p99 < <(awk '/^latency/ {print $3, $6, $9}' "$out")
    fi
    printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' \
        "$scenario" "$server" "$tool" "$rep" "$rc" "$got" \
        "$(printf '%.2f' "$acc_s")" "$acc_rate" "$(printf '%.2f' "$e2e_s")" "$e2e_rate" \
        "$own" "$p50" "$p90" "$p99" "$load1" "$cpu" >>"$RESULTS"
    log "$scenario $server $tool #$rep: rc=$rc arrived=$got/$N accept=${acc_rate}/s end-to-end=${e2e_rate}/s p50/p90/p99=$p50/$p90/$p99 ms"
    log "   cpu: $cpu"

    if [[ "$server" == tern ]]; then tern_stop; else pf_stop; fi
    [[ "$scenario" == b ]] && stop_sink
    return 0
}

# ---------------------------------------------------------------- summary

summarize() {
    python3 - "$RESULTS" "$N" "$CONC" "$SIZE" <<'EOF' | tee "$RUN/summary.md"
import statistics, sys
from collections import defaultdict
path, n, conc, size = sys.argv[1:]
rows = [l.rstrip("\n").split("\t") for l in open(path) if l.strip() and not l.startswith("scenario")]
groups = defaultdict(list)
for r in rows:
    groups[(r[0], r[1], r[2])].append(r)
def med(vals):
    vals = [float(v) for v in vals if v not in ("-", "")]
    return statistics.median(vals) if vals else float("nan")
name = {"a": "(a) local delivery", "b": "(b) relay to smtp-sink"}
print(f"{n} messages of {size} bytes per run, {conc} concurrent sessions, one message per connection; "
      f"median of {max(len(g) for g in groups.values())} runs.\n")
print("| scenario | server | load tool | accepted msg/s | delivered msg/s (end to end) | tool-reported msg/s | p50 ms | p90 ms | p99 ms | runs complete |")
print("|---|---|---|---:|---:|---:|---:|---:|---:|---|")
for key in sorted(groups):
    g = groups[key]
    complete = sum(1 for r in g if int(r[5]) >= int(n))
    fmt = lambda v, d=0: "-" if v != v else f"{v:.{d}f}"
    print(f"| {name[key[0]]} | {key[1]} | {key[2]} | {fmt(med(r[7] for r in g))} | {fmt(med(r[9] for r in g))} | "
          f"{fmt(med(r[10] for r in g))} | {fmt(med(r[11] for r in g), 2)} | {fmt(med(r[12] for r in g), 2)} | "
          f"{fmt(med(r[13] for r in g), 2)} | {complete}/{len(g)} |")
EOF
}

# ---------------------------------------------------------------- main

cleanup() {
    set +e
    [[ -n "$TOP_PID" ]] && kill "$TOP_PID" 2>/dev/null
    tern_stop
    pf_stop
    stop_sink
    psql_admin -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" 2>/dev/null
    rm -rf "$PF_QUEUE" "$PF_DATA" "$RUN/home"
    if [[ "$CREATED_USER" == 1 ]]; then userdel ternbench 2>/dev/null; fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

preflight
if ! id ternbench >/dev/null 2>&1; then
    useradd -M -d "$PF_HOME" -s /usr/sbin/nologin ternbench
    CREATED_USER=1
else
    # An earlier run may have left the user with another $RUN as its home.
    usermod -d "$PF_HOME" ternbench >/dev/null 2>&1 || true
fi
printf 'scenario\tserver\ttool\trep\trc\tarrived\taccept_s\taccept_per_s\te2e_s\te2e_per_s\ttool_per_s\tp50_ms\tp90_ms\tp99_ms\tload1\tcpu\n' >"$RESULTS"
log "N=$N CONC=$CONC SIZE=$SIZE REPS=$REPS on $(nproc) CPUs; results in $RESULTS"

for ((rep = 1; rep <= REPS; rep++)); do
    for scenario in $SCENARIOS; do
        t=0
        for tool in $TOOLS; do
            # Alternate which server goes first, by repetition and by tool.
            if (((rep + t) % 2)); then order="tern postfix"; else order="postfix tern"; fi
            for server in $order; do
                [[ " $SERVERS " == *" $server "* ]] && measure "$scenario" "$server" "$tool" "$rep"
            done
            t=$((t + 1))
        done
    done
done

summarize
