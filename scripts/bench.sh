#!/usr/bin/env bash
# pgward latency/throughput benchmark against PostgreSQL direct and PgBouncer.
#
#   bash scripts/bench.sh                     # full run (~20 min with defaults)
#   DURATION=2 ROUNDS=1 bash scripts/bench.sh # quick smoke run (~2 min)
#
# What it does, from scratch, and undoes on exit (even on Ctrl-C or error):
#   1. installs what is missing (PostgreSQL, pgbench, PgBouncer) via scripts/lib.sh;
#   2. cargo build --release;
#   3. a throwaway PostgreSQL cluster in a temp dir on a free loopback port
#      (SCRAM over TCP), sql/demo.sql loaded into `dragonfly`, and
#      `pgbench -i -s 10` into `bench` (owned by the non-superuser `bench_app`,
#      which the shipped policy puts in the restricted default class `app`, so
#      pgward runs its full check on every statement);
#   4. two PgBouncers (pool_mode session and transaction, SCRAM auth);
#   5. pgward (release) with the shipped policy.yaml;
#   6. pgbench in interleaved rounds (direct, pgbouncer-session,
#      pgbouncer-transaction, pgward, direct, ...) for each workload at each
#      client count;
#   7./8. per run TPS, latency average, p50/p99 (from pgbench's per-transaction
#      log), and the proxy's CPU time (user / system / audit writer thread)
#      and context switches per transaction; prints a Markdown report (medians over
#      rounds) and writes it to target/bench/latest.md (raw runs: latest.tsv).
#
# Environment (defaults in brackets):
#   ROUNDS        [3]     rounds per workload x clients (each runs every target once)
#   DURATION      [10]    seconds per pgbench run (-T)
#   CLIENTS       [1 16]  client counts (-c); -j is min(clients, JOBS)
#   JOBS          [2]     pgbench threads for multi-client runs
#   WARMUP        [2]     seconds of unrecorded pgbench per target before the rounds (0: none)
#   SCALE         [10]    pgbench -i scale factor
#   WORKLOADS     [all]   subset, space separated: select-simple select-extended
#                         select-prepared worker-read worker-read-options
#   BENCH_SKIP_BUILD [0]  1: use the existing target/release/pgward
#   PGWARD_BIN    [target/release/pgward]
#   PGWARD_POLICY [policy.yaml]
#   UNAUDITED     [1]     1: also run `pgward-unaudited`, the same proxy built with
#                         the benchmark-only feature `unaudited-benchmark` and run
#                         with --unaudited-benchmark (audit events discarded): the
#                         report's "audit on vs off" table compares the two
#   PGWARD_UNAUDITED_BIN [target/bench/unaudited/pgward]
#   BENCH_KEEP    [0]     1: keep the temp dir (logs) instead of deleting it
#   BENCH_HOLD    [0]     1: set everything up, print how to reach each target,
#                         then wait (no runs) until Ctrl-C: for profiling by hand
set -euo pipefail

if [ "${1:-}" = -h ] || [ "${1:-}" = --help ]; then
    sed -n '2,/^set -euo/p' "$0" | sed -e '$d' -e 's/^# \{0,1\}//'
    exit 0
fi
[ "$#" -eq 0 ] || {
    echo "usage: [ROUNDS=N] [DURATION=S] bash scripts/bench.sh   (see --help)" >&2
    exit 2
}

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT=$(repo_root)
BENCH_FILES=$ROOT/scripts/bench
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10}
CLIENTS=${CLIENTS:-1 16}
JOBS=${JOBS:-2}
WARMUP=${WARMUP:-2}
SCALE=${SCALE:-10}
ALL_WORKLOADS="select-simple select-extended select-prepared worker-read worker-read-options"
WORKLOADS=${WORKLOADS:-$ALL_WORKLOADS}
BENCH_SKIP_BUILD=${BENCH_SKIP_BUILD:-0}
BENCH_KEEP=${BENCH_KEEP:-0}
BENCH_HOLD=${BENCH_HOLD:-0}
PGWARD_BIN=${PGWARD_BIN:-$ROOT/target/release/pgward}
PGWARD_POLICY=${PGWARD_POLICY:-$ROOT/policy.yaml}
UNAUDITED=${UNAUDITED:-1}
OUT_DIR=$ROOT/target/bench
PGWARD_UNAUDITED_BIN=${PGWARD_UNAUDITED_BIN:-$OUT_DIR/unaudited/pgward}
TARGETS="direct pgbouncer-session pgbouncer-transaction pgward"
[ "$UNAUDITED" != 1 ] || TARGETS+=" pgward-unaudited"

is_uint() { case "$1" in '' | *[!0-9]*) return 1 ;; *) return 0 ;; esac }
for v in ROUNDS DURATION JOBS WARMUP SCALE; do
    is_uint "${!v}" || die "$v must be a non-negative integer (got '${!v}')"
done
if [ "$ROUNDS" -lt 1 ] || [ "$DURATION" -lt 1 ] || [ "$JOBS" -lt 1 ]; then
    die "ROUNDS, DURATION and JOBS must be at least 1"
fi
for c in $CLIENTS; do
    if ! is_uint "$c" || [ "$c" -lt 1 ]; then die "CLIENTS: bad count '$c'"; fi
done
for w in $WORKLOADS; do
    case " $ALL_WORKLOADS " in *" $w "*) ;; *) die "unknown workload '$w' (known: $ALL_WORKLOADS)" ;; esac
done

# The command line, as it can be pasted to rerun exactly this benchmark.
COMMAND_LINE="ROUNDS=$ROUNDS DURATION=$DURATION CLIENTS='$CLIENTS' JOBS=$JOBS WARMUP=$WARMUP SCALE=$SCALE"
[ "$WORKLOADS" = "$ALL_WORKLOADS" ] || COMMAND_LINE+=" WORKLOADS='$WORKLOADS'"
[ "$UNAUDITED" = 1 ] || COMMAND_LINE+=" UNAUDITED=$UNAUDITED"
COMMAND_LINE+=" bash scripts/bench.sh"

# ---------------------------------------------------------------------------
# Cleanup: everything this script starts is recorded here and stopped on exit.
# ---------------------------------------------------------------------------
WORK=''
PG_DIR=''
BENCH_PID=''
HOLD_PID=''
PGWARD_PIDFILE=''
UNAUDITED_PIDFILE=''
PGB_DIRS=()

# The name the kernel gives a process started from BIN (its file name, cut to
# 15 bytes): pid_alive and stop_pidfile check it before trusting a pid file.
comm_of() {
    local b
    b=$(basename "$1")
    printf '%s' "${b:0:15}"
}

cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    [ -z "$HOLD_PID" ] || kill "$HOLD_PID" 2>/dev/null
    if [ -n "$BENCH_PID" ] && kill -0 "$BENCH_PID" 2>/dev/null; then
        kill -TERM "$BENCH_PID" 2>/dev/null
        wait "$BENCH_PID" 2>/dev/null
    fi
    [ -z "$PGWARD_PIDFILE" ] || stop_pidfile "$PGWARD_PIDFILE" "$(comm_of "$PGWARD_BIN")" 10
    [ -z "$UNAUDITED_PIDFILE" ] || stop_pidfile "$UNAUDITED_PIDFILE" "$(comm_of "$PGWARD_UNAUDITED_BIN")" 10
    local d
    for d in "${PGB_DIRS[@]}"; do
        stop_pidfile "$d/pgbouncer.pid" pgbouncer 10
    done
    [ -z "$PG_DIR" ] || stop_cluster "$PG_DIR"
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if [ "$BENCH_KEEP" = 1 ]; then
            log "kept $WORK (BENCH_KEEP=1)"
        else
            rm -rf "$WORK"
        fi
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# ---------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------
ALLOCATED_PORTS=' '
# Ports are drawn from below the kernel's ephemeral range: a port in it may be
# the local end of someone's outbound connection, which port_in_use (a connect
# test) does not see, and then our server's bind() fails.
read -r EPHEMERAL_LOW _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || EPHEMERAL_LOW=32768
if [ "$EPHEMERAL_LOW" -gt 12000 ]; then
    PORT_LOW=10000 PORT_SPAN=$((EPHEMERAL_LOW - 10000))
else
    PORT_LOW=20000 PORT_SPAN=10000
fi
# Sets VAR to a free loopback TCP port not handed out before by this script.
# (Not $(free_port): the subshell would forget ALLOCATED_PORTS.)
# free_port VAR
free_port() {
    local _fp_port _fp_tries=0
    while [ "$_fp_tries" -lt 500 ]; do
        _fp_tries=$((_fp_tries + 1))
        _fp_port=$((PORT_LOW + (RANDOM * 32768 + RANDOM) % PORT_SPAN))
        case "$ALLOCATED_PORTS" in *" $_fp_port "*) continue ;; esac
        if ! port_in_use "$_fp_port"; then
            ALLOCATED_PORTS+="$_fp_port "
            printf -v "$1" '%s' "$_fp_port"
            return 0
        fi
    done
    die "no free port found"
}

# proxy_sample PID -> "UTIME STIME WRITER SWITCHES": the process's user and
# system CPU (clock ticks, all threads), the CPU of its audit writer thread
# (`pgward-audit`; 0 for other proxies) and its context switches (voluntary +
# involuntary, summed over the threads: /proc/PID/status counts only the
# main thread). "0 0 0 0" if the process is gone.
proxy_sample() {
    local pid=$1 stat utime stime
    stat=$(cat "/proc/$pid/stat" 2>/dev/null) || {
        echo 0 0 0 0
        return 0
    }
    stat=${stat##*) }
    # After "(comm) ": field 3 (state) is $1, so utime (14) is $12, stime (15) $13.
    read -r utime stime < <(awk '{ print $12, $13 }' <<<"$stat")
    local task writer=0 switches=0 t comm
    for task in /proc/"$pid"/task/*; do
        comm=$(cat "$task/comm" 2>/dev/null) || continue
        if [ "$comm" = pgward-audit ] && t=$(cat "$task/stat" 2>/dev/null); then
            t=${t##*) }
            writer=$((writer + $(awk '{ print $12 + $13 }' <<<"$t")))
        fi
        t=$(awk '/^(non)?voluntary_ctxt_switches:/ { n += $2 } END { print n + 0 }' "$task/status" 2>/dev/null) || t=0
        switches=$((switches + t))
    done
    echo "$utime $stime $writer $switches"
}

# A client environment with no stray libpq settings from the caller; plain
# TCP for every target (none of them has TLS here), so no SSLRequest either.
PG_CLIENT_ENV=(env -u PGHOST -u PGHOSTADDR -u PGPORT -u PGUSER -u PGDATABASE -u PGSERVICE
    -u PGSERVICEFILE -u PGPASSFILE -u PGOPTIONS -u PGSSLMODE -u PGCHANNELBINDING
    PGSSLMODE=disable)
pg_client() { "${PG_CLIENT_ENV[@]}" "$@"; }

# p50 and p99 (ms, nearest rank) and the count of the per-transaction
# latencies (3rd field, microseconds) in pgbench log files PREFIX.*
log_percentiles() {
    local prefix=$1 files
    files=$(compgen -G "$prefix.*" || true)
    if [ -z "$files" ]; then
        echo "NA NA 0"
        return 0
    fi
    # shellcheck disable=SC2086 # one name per line, no spaces (our temp dir)
    awk '$3 ~ /^[0-9]+$/ { print $3 }' $files | LC_ALL=C sort -n | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "NA NA 0"; exit }
            i50 = int(NR * 0.50); if (i50 < NR * 0.50) i50++; if (i50 < 1) i50 = 1
            i99 = int(NR * 0.99); if (i99 < NR * 0.99) i99++; if (i99 < 1) i99 = 1
            printf "%.3f %.3f %d\n", v[i50] / 1000, v[i99] / 1000, NR
        }'
}

target_port() {
    case "$1" in
    direct) echo "$PG_PORT" ;;
    pgbouncer-session) echo "$PGB_SESSION_PORT" ;;
    pgbouncer-transaction) echo "$PGB_TX_PORT" ;;
    pgward) echo "$PGWARD_PORT" ;;
    pgward-unaudited) echo "$UNAUDITED_PORT" ;;
    esac
}

# Both pgward targets see the same workloads (the tenant comes from PGOPTIONS).
is_pgward() { case "$1" in pgward | pgward-unaudited) return 0 ;; *) return 1 ;; esac }

# PID of the proxy process of a target (empty for direct).
target_pid() {
    case "$1" in
    pgbouncer-session) cat "$WORK/pgb-session/pgbouncer.pid" ;;
    pgbouncer-transaction) cat "$WORK/pgb-transaction/pgbouncer.pid" ;;
    pgward) cat "$PGWARD_PIDFILE" ;;
    pgward-unaudited) cat "$UNAUDITED_PIDFILE" ;;
    *) echo '' ;;
    esac
}

# Workload definitions: database, user, password, extra env, pgbench args.
workload_db() { case "$1" in select-*) echo bench ;; *) echo dragonfly ;; esac }
workload_user() { case "$1" in select-*) echo bench_app ;; *) echo dragonfly_app ;; esac }
workload_password() { case "$1" in select-*) echo bench ;; *) echo dragonfly ;; esac }
# workload_args WORKLOAD TARGET
# pgward sets the worker's tenant itself (SET LOCAL in every transaction, from
# the startup option) and refuses a client's own SET of it, so through pgward
# worker-read sends the same transaction minus the SET LOCAL: the server runs
# the same four statements on every target.
workload_args() {
    case "$1" in
    select-simple) echo "-S -M simple" ;;
    select-extended) echo "-S -M extended" ;;
    select-prepared) echo "-S -M prepared" ;;
    worker-read)
        if is_pgward "${2:-}"; then
            echo "-M simple -f $BENCH_FILES/worker_read_pgward.sql"
        else
            echo "-M simple -f $BENCH_FILES/worker_read.sql"
        fi
        ;;
    worker-read-options) echo "-M simple -f $BENCH_FILES/worker_read_options.sql" ;;
    esac
}
# workload_pgoptions WORKLOAD TARGET
workload_pgoptions() {
    if [ "$1" = worker-read-options ] || { [ "$1" = worker-read ] && is_pgward "${2:-}"; }; then
        echo "-c app.current_tenant=acme"
    else
        echo ''
    fi
}

# Why a target cannot run a workload (empty: it can).
skip_reason() {
    local w=$1 t=$2
    if [ "$w" = worker-read-options ] && [[ "$t" = pgbouncer-* ]]; then
        echo "PgBouncer does not relay startup options"
        return 0
    fi
    if [ "$w" = select-prepared ] && [ "$t" = pgbouncer-transaction ] && [ "$PGB_PREPARED" != 1 ]; then
        echo "PgBouncer $PGB_VERSION < 1.21: no protocol-level prepared statements in transaction mode"
        return 0
    fi
    echo ''
}

# run_pgbench TAG WORKLOAD TARGET CLIENTS SECONDS [LOGPREFIX]
# Output in $WORK/out/TAG.txt; returns pgbench's exit status.
run_pgbench() {
    local tag=$1 w=$2 t=$3 c=$4 secs=$5 logprefix=${6:-} j opts
    j=$((c < JOBS ? c : JOBS))
    opts=$(workload_pgoptions "$w" "$t")
    local -a args
    read -r -a args <<<"$(workload_args "$w" "$t")"
    args+=(-n -c "$c" -j "$j" -T "$secs")
    [ -z "$logprefix" ] || args+=(--log "--log-prefix=$logprefix")
    local -a envs=(PGPASSWORD="$(workload_password "$w")")
    [ -z "$opts" ] || envs+=(PGOPTIONS="$opts")
    # A simple command in the background: $! is pgbench itself (env execs it),
    # so cleanup can stop it.
    "${PG_CLIENT_ENV[@]}" "${envs[@]}" pgbench -h 127.0.0.1 -p "$(target_port "$t")" \
        -U "$(workload_user "$w")" "${args[@]}" "$(workload_db "$w")" \
        </dev/null >"$WORK/out/$tag.txt" 2>&1 &
    BENCH_PID=$!
    local rc=0
    wait "$BENCH_PID" || rc=$?
    BENCH_PID=''
    return "$rc"
}

# psql through a target as a workload's user (and with its PGOPTIONS); extra
# args follow.
psql_target() {
    local t=$1 w=$2
    shift 2
    pg_client PGPASSWORD="$(workload_password "$w")" PGOPTIONS="$(workload_pgoptions "$w" "$t")" \
        psql -X -q -tA -v ON_ERROR_STOP=1 \
        -h 127.0.0.1 -p "$(target_port "$t")" -U "$(workload_user "$w")" -d "$(workload_db "$w")" "$@"
}

median() { # values on stdin (NA ignored) -> median, or NA
    awk '$1 != "NA"' | LC_ALL=C sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) { print "NA"; exit }
            if (NR % 2) print v[(NR + 1) / 2]; else print (v[NR / 2] + v[NR / 2 + 1]) / 2
        }'
}

# ---------------------------------------------------------------------------
# 1. Packages and build
# ---------------------------------------------------------------------------
ensure_packages
command -v pgbench >/dev/null 2>&1 || {
    log "installing postgresql-contrib (pgbench)"
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -q postgresql-contrib postgresql-client
}
command -v pgbench >/dev/null 2>&1 || die "pgbench not found"
PGBOUNCER=$(command -v pgbouncer 2>/dev/null || echo /usr/sbin/pgbouncer)
[ -x "$PGBOUNCER" ] || die "pgbouncer not found"
PG_BIN=$(find_pg_bin) || die "no PostgreSQL server binaries"
for tool in awk sort getconf seq; do
    command -v "$tool" >/dev/null 2>&1 || die "$tool not found"
done
CLK_TCK=$(getconf CLK_TCK)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)

if [ "$BENCH_SKIP_BUILD" != 1 ]; then
    if [ "$UNAUDITED" = 1 ]; then
        # Built first and copied aside: the normal build below then leaves
        # target/release/pgward as the default (audited) binary.
        log "cargo build --release --features unaudited-benchmark"
        (cd "$ROOT" && cargo build --release --features unaudited-benchmark)
        mkdir -p "$(dirname "$PGWARD_UNAUDITED_BIN")"
        cp "$ROOT/target/release/pgward" "$PGWARD_UNAUDITED_BIN"
    fi
    log "cargo build --release"
    (cd "$ROOT" && cargo build --release)
fi
[ -x "$PGWARD_BIN" ] || die "$PGWARD_BIN does not exist"
if [ "$UNAUDITED" = 1 ]; then
    [ -x "$PGWARD_UNAUDITED_BIN" ] || die "$PGWARD_UNAUDITED_BIN does not exist (build it, or UNAUDITED=0)"
fi
[ -f "$PGWARD_POLICY" ] || die "$PGWARD_POLICY does not exist"

PGB_VERSION=$("$PGBOUNCER" --version 2>/dev/null | awk 'NR == 1 { print $2 }')
PGB_PREPARED=0
case "$PGB_VERSION" in
[0-9]*.[0-9]*)
    pgb_major=${PGB_VERSION%%.*}
    pgb_minor=${PGB_VERSION#*.}
    pgb_minor=${pgb_minor%%.*}
    if [ "$pgb_major" -gt 1 ] || { [ "$pgb_major" -eq 1 ] && [ "$pgb_minor" -ge 21 ]; }; then
        PGB_PREPARED=1
    fi
    ;;
*) warn "cannot tell PgBouncer's version from '$("$PGBOUNCER" --version 2>&1 | head -n 1)'" ;;
esac

# ---------------------------------------------------------------------------
# 2. Temp dir and PostgreSQL
# ---------------------------------------------------------------------------
WORK=$(mktemp -d "${TMPDIR:-/tmp}/pgward-bench.XXXXXX")
chmod 755 "$WORK" # the postgres OS user must reach PG_DIR and the PgBouncer dirs
mkdir -p "$WORK/logs" "$WORK/out"
log "temp dir $WORK"
PG_DIR=$WORK/pg
free_port PG_PORT
start_cluster "$PG_DIR" "$PG_PORT"
# Read-only workloads: WAL flushes do not matter; the rest stays default.
psql_local "$PG_DIR" "$PG_PORT" postgres -c "ALTER SYSTEM SET synchronous_commit = off" \
    -c "ALTER SYSTEM SET log_connections = off" -c "SELECT pg_reload_conf()" >/dev/null

log "loading sql/demo.sql into dragonfly; pgbench -i -s $SCALE into bench"
psql_local "$PG_DIR" "$PG_PORT" postgres -c "CREATE DATABASE dragonfly" \
    -c "CREATE ROLE bench_app LOGIN PASSWORD 'bench'" \
    -c "CREATE DATABASE bench OWNER bench_app"
psql_local "$PG_DIR" "$PG_PORT" dragonfly -f "$ROOT/sql/demo.sql" >/dev/null
pg_client pgbench -i -q -s "$SCALE" -h "$PG_DIR/sock" -p "$PG_PORT" -U bench_app bench \
    >"$WORK/out/pgbench-init.txt" 2>&1 || {
    cat "$WORK/out/pgbench-init.txt" >&2
    die "pgbench -i failed"
}

# ---------------------------------------------------------------------------
# 3. PgBouncer (session and transaction mode)
# ---------------------------------------------------------------------------
# SCRAM secrets for auth_file, straight from the catalog.
USERLIST=$(psql_local "$PG_DIR" "$PG_PORT" postgres -tA -c \
    "SELECT '\"' || rolname || '\" \"' || rolpassword || '\"' FROM pg_authid
      WHERE rolname IN ('bench_app', 'dragonfly_app') ORDER BY 1")
[ "$(printf '%s\n' "$USERLIST" | grep -c SCRAM-SHA-256)" -eq 2 ] ||
    die "expected SCRAM secrets for bench_app and dragonfly_app, got: $USERLIST"

# start_pgbouncer MODE PORT_VAR: on a port of its own (PORT_VAR is set to it);
# a few attempts, in case a port was taken between the check and the bind.
start_pgbouncer() {
    local mode=$1 dir=$WORK/pgb-$1 extra='' attempt port
    mkdir -p "$dir"
    PGB_DIRS+=("$dir")
    [ "$PGB_PREPARED" != 1 ] || extra='max_prepared_statements = 200'
    printf '%s\n' "$USERLIST" >"$dir/userlist.txt"
    for attempt in 1 2 3; do
        free_port port
        sed -e "s|@PG_PORT@|$PG_PORT|g" -e "s|@PORT@|$port|g" -e "s|@DIR@|$dir|g" \
            -e "s|@POOL_MODE@|$mode|g" -e "s|@EXTRA@|$extra|g" \
            "$BENCH_FILES/pgbouncer.ini.in" >"$dir/pgbouncer.ini"
        chown -R postgres:postgres "$dir"
        chmod 600 "$dir/userlist.txt"
        log "starting PgBouncer ($mode) on 127.0.0.1:$port"
        if (cd "$dir" && as_pg "$PGBOUNCER" -d -q "$dir/pgbouncer.ini") &&
            wait_for_port 127.0.0.1 "$port" 15 && [ -s "$dir/pgbouncer.pid" ] &&
            pid_alive "$(cat "$dir/pgbouncer.pid")" pgbouncer; then
            printf -v "$2" '%s' "$port"
            return 0
        fi
        tail -n 5 "$dir/pgbouncer.log" >&2 || true
        stop_pidfile "$dir/pgbouncer.pid" pgbouncer 5
        warn "PgBouncer ($mode) did not start on $port (attempt $attempt)"
    done
    die "PgBouncer ($mode) did not start"
}
start_pgbouncer session PGB_SESSION_PORT
start_pgbouncer transaction PGB_TX_PORT

# ---------------------------------------------------------------------------
# 4. pgward
# ---------------------------------------------------------------------------
audit_args=()
if "$PGWARD_BIN" serve --help 2>&1 | grep -q -- '--audit-file'; then
    audit_args=(--audit-file "$WORK/audit.log")
    AUDIT_NOTE="on (--audit-file, a file in the temp dir)"
else
    AUDIT_NOTE="not yet implemented (pgward serve has no --audit-file)"
fi
# start_pgward NAME BIN PIDFILE PORT_VAR ARGS...: on a port of its own
# (PORT_VAR is set to it), a few attempts.
start_pgward() {
    local name=$1 bin=$2 pidfile=$3 attempt port comm
    local port_var=$4
    comm=$(comm_of "$bin")
    shift 4
    for attempt in 1 2 3; do
        free_port port
        log "starting $name on 127.0.0.1:$port ($*)"
        RUST_LOG=warn "$bin" serve --config "$PGWARD_POLICY" --listen "127.0.0.1:$port" \
            --upstream "127.0.0.1:$PG_PORT" "$@" </dev/null >"$WORK/$name.log" 2>&1 &
        echo $! >"$pidfile"
        if wait_for_port 127.0.0.1 "$port" 15 && pid_alive "$(cat "$pidfile")" "$comm"; then
            printf -v "$port_var" '%s' "$port"
            return 0
        fi
        tail -n 10 "$WORK/$name.log" >&2 || true
        stop_pidfile "$pidfile" "$comm" 5
        warn "$name did not start on $port (attempt $attempt)"
    done
    die "$name did not start"
}
PGWARD_PIDFILE=$WORK/pgward.pid
start_pgward pgward "$PGWARD_BIN" "$PGWARD_PIDFILE" PGWARD_PORT "${audit_args[@]}"
if [ "$UNAUDITED" = 1 ]; then
    UNAUDITED_PIDFILE=$WORK/pgward-unaudited.pid
    start_pgward pgward-unaudited "$PGWARD_UNAUDITED_BIN" "$UNAUDITED_PIDFILE" UNAUDITED_PORT \
        --unaudited-benchmark
fi

# ---------------------------------------------------------------------------
# 5. Sanity checks: every target answers, RLS holds, pgward enforces.
# ---------------------------------------------------------------------------
log "sanity checks"
for t in $TARGETS; do
    n=$(psql_target "$t" select-simple -c "SELECT count(*) FROM pgbench_accounts")
    [ "$n" = $((SCALE * 100000)) ] || die "$t: pgbench_accounts has '$n' rows"
    if is_pgward "$t"; then
        n=$(psql_target "$t" worker-read -c "SELECT count(*) FROM public.judgments")
    else
        n=$(psql_target "$t" worker-read <<'EOF'
BEGIN;
SET LOCAL app.current_tenant = 'acme';
SELECT count(*) FROM public.judgments;
COMMIT;
EOF
        )
    fi
    [ "$n" = 3 ] || die "$t: the worker sees '$n' judgments of tenant acme (expected 3)"
    if [ -z "$(skip_reason worker-read-options "$t")" ]; then
        n=$(psql_target "$t" worker-read-options -c "SELECT count(*) FROM public.judgments")
        [ "$n" = 3 ] || die "$t: with PGOPTIONS the worker sees '$n' judgments (expected 3)"
    fi
done
for t in $TARGETS; do
    is_pgward "$t" || continue
    refusal=$(psql_target "$t" worker-read -c \
        "INSERT INTO public.judgments (tenant_id, case_number, debtor_name, principal_amount)
         VALUES ('acme', 'BENCH-1', 'x', 1)" 2>&1 || true)
    case "$refusal" in
    *pgward:*) ;;
    *) die "$t did not refuse a worker INSERT into public.judgments: $refusal" ;;
    esac
done
ENFORCEMENT_NOTE="on: a worker INSERT into public.judgments is refused by pgward"
if [ "$UNAUDITED" = 1 ]; then
    [ "$(grep -c '"type":"statement"' "$WORK/audit.log" 2>/dev/null || true)" -gt 0 ] ||
        die "pgward wrote no statement records to $WORK/audit.log"
    AUDIT_NOTE+="; pgward-unaudited: the same with --unaudited-benchmark (feature unaudited-benchmark: every audit event discarded)"
fi

if [ "$BENCH_HOLD" = 1 ]; then
    for t in $TARGETS; do
        log "$t: 127.0.0.1:$(target_port "$t") pid $(target_pid "$t")"
    done
    log "select-*: PGPASSWORD=bench pgbench -h 127.0.0.1 -p PORT -U bench_app bench -S -n ..."
    log "holding (BENCH_HOLD=1); Ctrl-C or SIGTERM stops everything"
    # `wait` (not a foreground sleep) so that a signal runs the cleanup at once.
    while :; do
        sleep 3600 &
        HOLD_PID=$!
        wait "$HOLD_PID" || true
    done
fi

# ---------------------------------------------------------------------------
# 6. The runs
# ---------------------------------------------------------------------------
RESULTS=$WORK/results.tsv
printf 'workload\tclients\ttarget\tround\tstatus\ttps\tlat_avg_ms\tp50_ms\tp99_ms\ttransactions\tproxy_cpu_s\tproxy_cpu_s_per_10k\tproxy_user_s_per_10k\tproxy_sys_s_per_10k\twriter_s_per_10k\tswitches_per_tx\n' >"$RESULTS"
FAILURES=$WORK/failures.md
: >"$FAILURES"

n_runs=0
for w in $WORKLOADS; do
    for c in $CLIENTS; do
        for t in $TARGETS; do
            [ -n "$(skip_reason "$w" "$t")" ] || n_runs=$((n_runs + ROUNDS))
        done
    done
done
log "$n_runs runs of ${DURATION}s: at least $((n_runs * DURATION / 60)) min"

if [ "$WARMUP" -gt 0 ]; then
    log "warm-up: ${WARMUP}s per target and database"
    max_c=1
    for c in $CLIENTS; do [ "$c" -le "$max_c" ] || max_c=$c; done
    for t in $TARGETS; do
        for w in select-simple worker-read; do
            run_pgbench "warmup-$t-$w" "$w" "$t" "$max_c" "$WARMUP" ||
                warn "warm-up $w via $t failed: $(tail -n 3 "$WORK/out/warmup-$t-$w.txt")"
        done
    done
fi

run_no=0
for w in $WORKLOADS; do
    for c in $CLIENTS; do
        for r in $(seq 1 "$ROUNDS"); do
            for t in $TARGETS; do
                reason=$(skip_reason "$w" "$t")
                if [ -n "$reason" ]; then
                    printf '%s\t%s\t%s\t%s\tskip\tNA\tNA\tNA\tNA\t0\tNA\tNA\tNA\tNA\tNA\tNA\n' "$w" "$c" "$t" "$r" >>"$RESULTS"
                    continue
                fi
                run_no=$((run_no + 1))
                tag="$w-c$c-$t-r$r"
                prefix=$WORK/logs/$tag
                pid=$(target_pid "$t")
                before='0 0 0 0'
                [ -z "$pid" ] || before=$(proxy_sample "$pid")
                status=ok
                run_pgbench "$tag" "$w" "$t" "$c" "$DURATION" "$prefix" || status=fail
                after='0 0 0 0'
                [ -z "$pid" ] || after=$(proxy_sample "$pid")
                out=$WORK/out/$tag.txt
                tps=$(awk '/^tps = .*without initial connection time/ { print $3 }' "$out")
                lat=$(awk '/^latency average = / { print $4 }' "$out")
                ntx=$(awk -F': ' '/^number of transactions actually processed/ { split($2, a, "/"); print a[1] }' "$out")
                [ -n "$tps" ] && [ -n "$lat" ] && [ -n "$ntx" ] || status=fail
                if [ "$status" = fail ]; then
                    {
                        printf -- '- %s (round %s): pgbench failed:\n\n' "$tag" "$r"
                        grep -v '^progress' "$out" | tail -n 6 | sed 's/^/      /'
                        printf '\n'
                    } >>"$FAILURES"
                    printf '%s\t%s\t%s\t%s\tfail\tNA\tNA\tNA\tNA\t0\tNA\tNA\tNA\tNA\tNA\tNA\n' "$w" "$c" "$t" "$r" >>"$RESULTS"
                    warn "[$run_no/$n_runs] $tag: FAILED ($(grep -v '^progress' "$out" | tail -n 1))"
                    rm -f "$prefix".*
                    continue
                fi
                read -r p50 p99 logged < <(log_percentiles "$prefix")
                rm -f "$prefix".*
                # The proxy's CPU during the run: total seconds, then per 10k
                # transactions in all, user, system and the audit writer's
                # share, and context switches per transaction.
                proxy=$'NA\tNA\tNA\tNA\tNA\tNA'
                if [ -n "$pid" ]; then
                    proxy=$(awk -v before="$before" -v after="$after" -v hz="$CLK_TCK" -v n="$ntx" 'BEGIN {
                        split(before, b, " "); split(after, a, " ")
                        cpu = (a[1] + a[2] - b[1] - b[2]) / hz
                        if (n <= 0) { printf "%.2f\tNA\tNA\tNA\tNA\tNA", cpu; exit }
                        k = 10000 / n / hz
                        printf "%.2f\t%.3f\t%.3f\t%.3f\t%.3f\t%.2f", cpu, (a[1] + a[2] - b[1] - b[2]) * k,
                            (a[1] - b[1]) * k, (a[2] - b[2]) * k, (a[3] - b[3]) * k, (a[4] - b[4]) / n }')
                fi
                printf '%s\t%s\t%s\t%s\tok\t%s\t%s\t%s\t%s\t%s\t%s\n' "$w" "$c" "$t" "$r" \
                    "$tps" "$lat" "$p50" "$p99" "$ntx" "$proxy" >>"$RESULTS"
                log "[$run_no/$n_runs] $tag: tps=$tps avg=${lat}ms p50=${p50}ms p99=${p99}ms logged=$logged${pid:+ proxy_cpu=${proxy%%$'\t'*}s}"
            done
        done
    done
done

# ---------------------------------------------------------------------------
# 7. Report
# ---------------------------------------------------------------------------
# med WORKLOAD CLIENTS TARGET COLUMN -> median over the ok rounds, or NA
med() {
    awk -F'\t' -v w="$1" -v c="$2" -v t="$3" -v col="$4" '
        NR == 1 { for (i = 1; i <= NF; i++) if ($i == col) k = i; next }
        $1 == w && $2 == c && $3 == t && $5 == "ok" { print $k }' "$RESULTS" | median
}
ok_rounds() {
    awk -F'\t' -v w="$1" -v c="$2" -v t="$3" '$1 == w && $2 == c && $3 == t && $5 == "ok" { n++ } END { print n + 0 }' "$RESULTS"
}
fmt() { # NUMBER DECIMALS -> formatted, or n/a
    if [ "$1" = NA ]; then echo n/a; else awk -v x="$1" -v d="$2" 'BEGIN { printf "%.*f", d, x }'; fi
}
ratio() { # A B -> A/B as 0.00x, or n/a
    if [ "$1" = NA ] || [ "$2" = NA ]; then echo n/a; else awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2fx", a / b; else print "n/a" }'; fi
}
added() { # P50 BASE -> +ms, or n/a
    if [ "$1" = NA ] || [ "$2" = NA ]; then echo n/a; else awk -v a="$1" -v b="$2" 'BEGIN { printf "%+.3f", a - b }'; fi
}
us_per_tx() { # SECONDS_PER_10K -> microseconds per transaction, or n/a
    if [ "$1" = NA ]; then echo n/a; else awk -v x="$1" 'BEGIN { printf "%.1f", x * 100 }'; fi
}
cell_reason() { # WORKLOAD TARGET -> n/a text for a target with no result
    local reason
    reason=$(skip_reason "$1" "$2")
    if [ -n "$reason" ]; then echo "n/a (skipped)"; else echo "n/a (failed)"; fi
}

PG_VERSION=$(psql_local "$PG_DIR" "$PG_PORT" postgres -tA -c "SELECT version()")
GIT_REV=$(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(cd "$ROOT" && git status --porcelain 2>/dev/null | head -n 1)" ]; then GIT_REV+=" (with uncommitted changes)"; fi
CPU_MODEL=$(awk -F': ' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)

REPORT=$WORK/report.md
{
    echo "# pgward benchmark"
    echo
    echo "- date: $(date -u '+%Y-%m-%d %H:%M:%S UTC')"
    echo "- command: \`$COMMAND_LINE\`"
    echo "- machine: nproc $(nproc), kernel $(uname -r)${CPU_MODEL:+, $CPU_MODEL}; load average at start $LOAD_START, at end $LOAD_END"
    echo "- PostgreSQL: $PG_VERSION ($PG_BIN); synchronous_commit=off, otherwise defaults; SCRAM over TCP"
    echo "- PgBouncer: $PGB_VERSION (auth_type scram-sha-256, default_pool_size 20, max_client_conn 64)"
    echo "- pgbench: $(pgbench --version | head -n 1); everything on 127.0.0.1, pgbench on the same machine"
    echo "- pgward: $GIT_REV, release build, policy $(basename "$PGWARD_POLICY") (shipped), RUST_LOG=warn; enforcement $ENFORCEMENT_NOTE; audit: $AUDIT_NOTE"
    echo "- runs: $ROUNDS round(s) x ${DURATION}s per workload x clients, targets interleaved ($TARGETS); ${WARMUP}s warm-up per target; -j min(clients, $JOBS); medians over rounds"
    echo "- p50/p99: nearest rank over every transaction of pgbench --log; CPU: utime+stime of the proxy process (/proc/PID/stat) during the run"
    echo
    echo "Workloads (pgbench -n ... ; -c clients, -T ${DURATION}):"
    echo
    echo "- select-simple / select-extended / select-prepared: \`-S -M simple|extended|prepared\` on \`bench\` (scale $SCALE) as \`bench_app\` (policy class \`app\`, restricted)"
    echo "- worker-read: \`-f scripts/bench/worker_read.sql\` on \`dragonfly\` as \`dragonfly_app\` (class \`worker\`): BEGIN; SET LOCAL app.current_tenant; SELECT from public.judgments (RLS); COMMIT"
    echo "- worker-read-options: \`-f scripts/bench/worker_read_options.sql\` with \`PGOPTIONS='-c app.current_tenant=acme'\`: the SELECT alone (direct and pgward only)"
    echo
    echo "## Results (medians)"
    echo
    echo "| workload | clients | target | TPS | latency avg ms | p50 ms | p99 ms | proxy CPU s / 10k tx | ok rounds |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|---:|"
    for w in $WORKLOADS; do
        for c in $CLIENTS; do
            for t in $TARGETS; do
                n=$(ok_rounds "$w" "$c" "$t")
                if [ "$n" -eq 0 ]; then
                    na=$(cell_reason "$w" "$t")
                    echo "| $w | $c | $t | $na | | | | | 0/$ROUNDS |"
                    continue
                fi
                cpu=$(med "$w" "$c" "$t" proxy_cpu_s_per_10k)
                [ "$t" != direct ] || cpu=-
                [ "$cpu" = - ] || cpu=$(fmt "$cpu" 3)
                echo "| $w | $c | $t | $(fmt "$(med "$w" "$c" "$t" tps)" 0) | $(fmt "$(med "$w" "$c" "$t" lat_avg_ms)" 3) | $(fmt "$(med "$w" "$c" "$t" p50_ms)" 3) | $(fmt "$(med "$w" "$c" "$t" p99_ms)" 3) | $cpu | $n/$ROUNDS |"
            done
        done
    done
    echo
    echo "## pgward compared"
    echo
    echo "TPS ratios are pgward's median TPS over the other target's; added p50 is the proxy's median p50 minus direct's (ms)."
    echo
    echo "| workload | clients | pgward TPS / direct | pgward TPS / pgbouncer-session | pgward TPS / pgbouncer-transaction | added p50 pgward | added p50 pgbouncer-session | added p50 pgbouncer-transaction | CPU s/10k pgward | CPU s/10k pgbouncer-session | CPU s/10k pgbouncer-transaction |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for w in $WORKLOADS; do
        for c in $CLIENTS; do
            tps_d=$(med "$w" "$c" direct tps)
            tps_s=$(med "$w" "$c" pgbouncer-session tps)
            tps_x=$(med "$w" "$c" pgbouncer-transaction tps)
            tps_w=$(med "$w" "$c" pgward tps)
            p50_d=$(med "$w" "$c" direct p50_ms)
            p50_s=$(med "$w" "$c" pgbouncer-session p50_ms)
            p50_x=$(med "$w" "$c" pgbouncer-transaction p50_ms)
            p50_w=$(med "$w" "$c" pgward p50_ms)
            echo "| $w | $c | $(ratio "$tps_w" "$tps_d") | $(ratio "$tps_w" "$tps_s") | $(ratio "$tps_w" "$tps_x") | $(added "$p50_w" "$p50_d") | $(added "$p50_s" "$p50_d") | $(added "$p50_x" "$p50_d") | $(fmt "$(med "$w" "$c" pgward proxy_cpu_s_per_10k)" 3) | $(fmt "$(med "$w" "$c" pgbouncer-session proxy_cpu_s_per_10k)" 3) | $(fmt "$(med "$w" "$c" pgbouncer-transaction proxy_cpu_s_per_10k)" 3) |"
        done
    done
    echo
    echo "Latency and proxy CPU as ratios: pgward's median over the other target's (lower is better; CPU only between proxies)."
    echo
    echo "| workload | clients | p50 / direct | p50 / pgbouncer-session | p50 / pgbouncer-transaction | p99 / direct | p99 / pgbouncer-session | p99 / pgbouncer-transaction | CPU / pgbouncer-session | CPU / pgbouncer-transaction |"
    echo "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    for w in $WORKLOADS; do
        for c in $CLIENTS; do
            row="| $w | $c"
            for col in p50_ms p99_ms; do
                for t in direct pgbouncer-session pgbouncer-transaction; do
                    row+=" | $(ratio "$(med "$w" "$c" pgward "$col")" "$(med "$w" "$c" "$t" "$col")")"
                done
            done
            for t in pgbouncer-session pgbouncer-transaction; do
                row+=" | $(ratio "$(med "$w" "$c" pgward proxy_cpu_s_per_10k)" "$(med "$w" "$c" "$t" proxy_cpu_s_per_10k)")"
            done
            echo "$row |"
        done
    done
    if [ "$UNAUDITED" = 1 ]; then
        echo
        echo "## Audit on vs off"
        echo
        echo "pgward (audit file on) against pgward-unaudited (same proxy, every audit event discarded); ratios of medians from the same run."
        echo
        echo "| workload | clients | TPS audit on / off | p50 ms on | p50 ms off | CPU s/10k on | CPU s/10k off |"
        echo "|---|---:|---:|---:|---:|---:|---:|"
        for w in $WORKLOADS; do
            for c in $CLIENTS; do
                echo "| $w | $c | $(ratio "$(med "$w" "$c" pgward tps)" "$(med "$w" "$c" pgward-unaudited tps)") | $(fmt "$(med "$w" "$c" pgward p50_ms)" 3) | $(fmt "$(med "$w" "$c" pgward-unaudited p50_ms)" 3) | $(fmt "$(med "$w" "$c" pgward proxy_cpu_s_per_10k)" 3) | $(fmt "$(med "$w" "$c" pgward-unaudited proxy_cpu_s_per_10k)" 3) |"
            done
        done
    fi
    echo
    echo "## Where the proxy's CPU goes"
    echo
    echo "Per transaction, medians: the proxy process's CPU (utime + stime of all its threads, /proc/PID/stat), split into user and system (kernel) time, the part spent on pgward's audit writer thread, and context switches (voluntary + involuntary, all threads). On shared cores every µs here is taken from pgbench and PostgreSQL."
    echo
    echo "| workload | clients | target | CPU µs/tx | user µs/tx | system µs/tx | audit writer µs/tx | context switches/tx |"
    echo "|---|---:|---|---:|---:|---:|---:|---:|"
    for w in $WORKLOADS; do
        for c in $CLIENTS; do
            for t in $TARGETS; do
                [ "$t" != direct ] || continue
                [ "$(ok_rounds "$w" "$c" "$t")" -gt 0 ] || continue
                writer=-
                ! is_pgward "$t" || writer=$(us_per_tx "$(med "$w" "$c" "$t" writer_s_per_10k)")
                echo "| $w | $c | $t | $(us_per_tx "$(med "$w" "$c" "$t" proxy_cpu_s_per_10k)") | $(us_per_tx "$(med "$w" "$c" "$t" proxy_user_s_per_10k)") | $(us_per_tx "$(med "$w" "$c" "$t" proxy_sys_s_per_10k)") | $writer | $(fmt "$(med "$w" "$c" "$t" switches_per_tx)" 2) |"
            done
        done
    done
    skipped=$(for w in $WORKLOADS; do for t in $TARGETS; do
        r=$(skip_reason "$w" "$t")
        [ -z "$r" ] || echo "- $w via $t: $r"
    done; done | sort -u)
    if [ -n "$skipped" ]; then
        echo
        echo "## Skipped (n/a)"
        echo
        echo "$skipped"
    fi
    if [ -s "$FAILURES" ]; then
        echo
        echo "## Failed runs"
        echo
        cat "$FAILURES"
    fi
} >"$REPORT"

mkdir -p "$OUT_DIR"
cp "$REPORT" "$OUT_DIR/latest.md"
cp "$RESULTS" "$OUT_DIR/latest.tsv"
echo
cat "$REPORT"
echo
log "report written to ${OUT_DIR#"$ROOT"/}/latest.md (every run: latest.tsv)"
