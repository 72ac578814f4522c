#!/usr/bin/env bash
# pgward demo: a local PostgreSQL with the Dragonfly demo schema, and pgward
# in front of it.
#
#   scripts/demo.sh          start (or restart) everything, print how to connect
#   scripts/demo.sh stop     stop pgward and PostgreSQL (data is kept)
#   scripts/demo.sh status   what is running
#   scripts/demo.sh clean    stop, then delete the demo's data and logs
#
# Environment (defaults in brackets):
#   DEMO_DIR          [./.demo]           cluster, logs and pid files
#   DEMO_PG_PORT      [5433]              PostgreSQL, on 127.0.0.1
#   DEMO_LISTEN       [127.0.0.1:6432]    pgward's address
#   DEMO_ADMIN_LISTEN [127.0.0.1:9187]    pgward's /metrics, /healthz, /readyz
#   DEMO_DB           [dragonfly]         database loaded with sql/demo.sql
#   PGWARD_POLICY     [./policy.yaml]     pgward's policy file
#   DEMO_GRANT_DRIFT  [0]                 1: also load sql/test_grants.sql, so
#                                         PostgreSQL itself would accept the
#                                         worker's writes and only pgward stops them
#   DEMO_SKIP_BUILD   [0]                 1: use the existing binary, no cargo build
#   PGWARD_BIN        [./target/release/pgward]
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ROOT=$(repo_root)
DEMO_DIR=${DEMO_DIR:-$ROOT/.demo}
DEMO_PG_PORT=${DEMO_PG_PORT:-5433}
DEMO_LISTEN=${DEMO_LISTEN:-127.0.0.1:6432}
DEMO_DB=${DEMO_DB:-dragonfly}
PGWARD_POLICY=${PGWARD_POLICY:-$ROOT/policy.yaml}
DEMO_GRANT_DRIFT=${DEMO_GRANT_DRIFT:-0}
DEMO_SKIP_BUILD=${DEMO_SKIP_BUILD:-0}

PGWARD_BIN=${PGWARD_BIN:-$ROOT/target/release/pgward}
PGWARD_PID=$DEMO_DIR/pgward.pid
PGWARD_LOG=$DEMO_DIR/pgward.log
# Where the cluster lives is recorded, because it may not be under DEMO_DIR.
PG_DIR_FILE=$DEMO_DIR/pg-dir

listen_host=${DEMO_LISTEN%:*}
listen_port=${DEMO_LISTEN##*:}

case "$DEMO_DB" in *[!a-z0-9_]* | '') die "DEMO_DB must be [a-z0-9_]+" ;; esac

# The cluster directory: DEMO_DIR/pg, unless the postgres OS user (which the
# server runs as when we are root) cannot reach it, e.g. under /root; then a
# directory under /var/tmp.
pg_dir() {
    if [ -f "$PG_DIR_FILE" ]; then
        cat "$PG_DIR_FILE"
        return 0
    fi
    local dir=$DEMO_DIR/pg
    mkdir -p "$dir"
    if is_root; then
        chown postgres:postgres "$dir"
        if ! as_pg test -w "$dir"; then
            rmdir "$dir" 2>/dev/null || true
            dir=/var/tmp/pgward-demo-$(printf '%s' "$DEMO_DIR" | sha256sum | cut -c1-12)/pg
            mkdir -p "$dir"
            chown postgres:postgres "$dir" "$(dirname "$dir")"
            warn "the postgres user cannot reach $DEMO_DIR; the cluster lives in $dir"
        fi
    fi
    printf '%s\n' "$dir" >"$PG_DIR_FILE"
    printf '%s\n' "$dir"
}

start() {
    ensure_packages
    mkdir -p "$DEMO_DIR"
    # Keep the demo's files out of git without touching the repo's .gitignore.
    [ -f "$DEMO_DIR/.gitignore" ] || printf '*\n' >"$DEMO_DIR/.gitignore"

    local pgdir
    pgdir=$(pg_dir)
    start_cluster "$pgdir" "$DEMO_PG_PORT"

    if [ -z "$(psql_local "$pgdir" "$DEMO_PG_PORT" postgres -tA \
        -c "SELECT 1 FROM pg_database WHERE datname = '$DEMO_DB'")" ]; then
        log "creating database $DEMO_DB"
        psql_local "$pgdir" "$DEMO_PG_PORT" postgres -c "CREATE DATABASE $DEMO_DB"
    fi
    log "loading sql/demo.sql into $DEMO_DB"
    psql_local "$pgdir" "$DEMO_PG_PORT" "$DEMO_DB" -f "$ROOT/sql/demo.sql"
    if [ "$DEMO_GRANT_DRIFT" = 1 ]; then
        log "loading sql/test_grants.sql: PostgreSQL now accepts the worker's writes"
        psql_local "$pgdir" "$DEMO_PG_PORT" "$DEMO_DB" -f "$ROOT/sql/test_grants.sql"
    fi

    if [ "$DEMO_SKIP_BUILD" != 1 ]; then
        log "cargo build --release"
        (cd "$ROOT" && cargo build --release --bin pgward)
    fi
    [ -x "$PGWARD_BIN" ] || die "$PGWARD_BIN does not exist (build it, or unset DEMO_SKIP_BUILD)"

    local policy=$PGWARD_POLICY
    if [ ! -f "$policy" ]; then
        policy=$DEMO_DIR/policy.yaml
        warn "$PGWARD_POLICY not found; using a minimal $policy"
        printf 'server: {}\n' >"$policy"
    fi

    stop_pidfile "$PGWARD_PID" pgward
    if port_in_use "$listen_port"; then
        die "$DEMO_LISTEN is already in use (another pgward or pgbouncer?); set DEMO_LISTEN"
    fi
    log "starting pgward on $DEMO_LISTEN (log: $PGWARD_LOG)"
    # setsid: its own session, so neither Ctrl-C in this terminal nor closing
    # it stops the proxy; `scripts/demo.sh stop` does.
    # Development certificates for trying TLS and client certificates
    # (certs/README.md); private keys are generated here, never committed.
    if [ ! -f "$ROOT/certs/ca.crt" ]; then
        "$PGWARD_BIN" certs init --dir "$ROOT/certs" >/dev/null
    fi
    RUST_LOG=${RUST_LOG:-info} setsid "$PGWARD_BIN" serve \
        --config "$policy" \
        --listen "$DEMO_LISTEN" \
        --upstream "127.0.0.1:$DEMO_PG_PORT" \
        --audit-file "$DEMO_DIR/audit.jsonl" \
        --admin-listen "${DEMO_ADMIN_LISTEN:-127.0.0.1:9187}" \
        </dev/null >"$PGWARD_LOG" 2>&1 &
    echo $! >"$PGWARD_PID"
    if ! wait_for_port "$listen_host" "$listen_port" 15; then
        tail -n 40 "$PGWARD_LOG" >&2 || true
        stop_pidfile "$PGWARD_PID" pgward 2
        die "pgward did not start listening on $DEMO_LISTEN"
    fi

    local url="postgres://dragonfly_app:dragonfly@$DEMO_LISTEN/$DEMO_DB?options=-c%20app.current_tenant%3Dacme"
    local globex="postgres://dragonfly_app:dragonfly@$DEMO_LISTEN/$DEMO_DB?options=-c%20app.current_tenant%3Dglobex"
    local direct="postgres://postgres:postgres@127.0.0.1:$DEMO_PG_PORT/$DEMO_DB"
    # Two tenants through the same pgward, each seeing only its own rows.
    local t
    for t in acme globex; do
        log "tenant $t sees: $(PGPASSWORD=dragonfly psql -X -At \
            -d "host=$listen_host port=$listen_port user=dragonfly_app dbname=$DEMO_DB options='-c app.current_tenant=$t'" \
            -c 'SELECT string_agg(case_number, $$, $$ ORDER BY case_number) FROM public.judgments' 2>&1 | tr '\n' ' ')"
    done
    cat <<EOF

pgward is running on $DEMO_LISTEN, in front of PostgreSQL on 127.0.0.1:$DEMO_PG_PORT.

The worker's connection string (tenant acme, set through the startup options):

  export DATABASE_URL='$url'

A read (allowed; row-level security shows acme's judgments only):

  psql "\$DATABASE_URL" -c "SELECT case_number, debtor_name, principal_amount FROM public.judgments"

A write through the sanctioned RPC (allowed):

  psql "\$DATABASE_URL" -c "SELECT ops.queue_job('ingest_csv', '{\"file\": \"demo.csv\"}'::jsonb)"

A direct write to a protected table (refused by pgward):

  psql "\$DATABASE_URL" -c "INSERT INTO ops.job_queue (job_type) VALUES ('direct_write')"

The other tenant (same worker, tenant globex):

  psql '$globex' -c "SELECT case_number FROM public.judgments"

Trying to switch tenant from SQL (refused):

  psql "\$DATABASE_URL" -c "SET app.current_tenant = 'globex'"

Without pgward, straight to PostgreSQL as the superuser: $direct
pgward's log: $PGWARD_LOG
Audit stream: $DEMO_DIR/audit.jsonl  (verify: $PGWARD_BIN audit verify $DEMO_DIR/audit.jsonl)
Metrics: curl http://${DEMO_ADMIN_LISTEN:-127.0.0.1:9187}/metrics   (also /healthz, /readyz)
Stop everything: scripts/demo.sh stop
EOF
}

stop() {
    stop_pidfile "$PGWARD_PID" pgward
    if [ -f "$PG_DIR_FILE" ]; then
        stop_cluster "$(cat "$PG_DIR_FILE")"
    fi
}

status() {
    local pid=''
    [ -f "$PGWARD_PID" ] && pid=$(cat "$PGWARD_PID")
    if [ -n "$pid" ] && pid_alive "$pid" pgward; then
        echo "pgward: running (pid $pid) on $DEMO_LISTEN"
    else
        echo "pgward: not running"
    fi
    if [ -f "$PG_DIR_FILE" ] && [ -f "$(cat "$PG_DIR_FILE")/data/postmaster.pid" ]; then
        echo "postgresql: running in $(cat "$PG_DIR_FILE")/data on 127.0.0.1:$DEMO_PG_PORT"
    else
        echo "postgresql: not running"
    fi
}

clean() {
    stop
    if [ -f "$PG_DIR_FILE" ]; then
        local pgdir
        pgdir=$(cat "$PG_DIR_FILE")
        case "$pgdir" in
        /var/tmp/pgward-demo-*/pg) rm -rf "$(dirname "$pgdir")" ;;
        *) rm -rf "$pgdir" ;;
        esac
    fi
    rm -rf "$DEMO_DIR"
    log "removed the demo's data"
}

case "${1:-start}" in
start) start ;;
stop) stop ;;
status) status ;;
clean) clean ;;
*) die "usage: $0 [start|stop|status|clean]" ;;
esac
