# shellcheck shell=bash
# Shared shell functions for scripts/*.sh. Source it; do not run it.
#
# The machines this project runs on (developers' and CI's) are fresh Debian
# 12 boxes where we are root, and where PostgreSQL may not be installed yet:
# every script installs what it needs itself, through apt-get, only when it
# is missing (a no-op on a machine that already has it).

# Packages the build and the tests need:
#   postgresql, postgresql-contrib  server binaries (initdb, pg_ctl, postgres)
#                                   and clients (psql, pgbench) for the tests
#   libclang-dev                    bindgen, used by the pg_query crate's build
#   pgbouncer                       a reference pooler for comparison tests
#   build-essential                 the C compiler that builds libpg_query
PGWARD_APT_PACKAGES=(postgresql postgresql-contrib libclang-dev pgbouncer build-essential)

log() { printf '==> %s\n' "$*" >&2; }
warn() { printf 'warning: %s\n' "$*" >&2; }
die() {
    printf 'error: %s\n' "$*" >&2
    exit 1
}

is_root() { [ "$(id -u)" -eq 0 ]; }

# Repository root: the parent of this file's directory.
repo_root() { (cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd); }

# Runs a command as root: directly when we are root, else through sudo.
as_root() {
    if is_root; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        sudo "$@"
    else
        die "need root to run: $* (no sudo either)"
    fi
}

# Runs a command as the PostgreSQL server user. initdb, pg_ctl and postgres
# refuse to run as root, so as root we switch to the `postgres` OS user
# (created by the postgresql package); as anyone else we stay ourselves.
as_pg() {
    if is_root; then
        runuser -u postgres -- "$@"
    else
        "$@"
    fi
}

# Prints the directory of the PostgreSQL server binaries: $PGWARD_PG_BIN, or
# the newest /usr/lib/postgresql/N/bin (Debian keeps them off PATH), or the
# directory of an initdb found on PATH. Fails when there is none.
find_pg_bin() {
    if [ -n "${PGWARD_PG_BIN:-}" ]; then
        if [ ! -x "$PGWARD_PG_BIN/initdb" ] || [ ! -x "$PGWARD_PG_BIN/pg_ctl" ]; then
            die "PGWARD_PG_BIN=$PGWARD_PG_BIN has no initdb/pg_ctl"
        fi
        printf '%s\n' "$PGWARD_PG_BIN"
        return 0
    fi
    local dir best='' best_version=-1 version
    for dir in /usr/lib/postgresql/*/bin; do
        if [ ! -x "$dir/initdb" ] || [ ! -x "$dir/pg_ctl" ] || [ ! -x "$dir/postgres" ]; then
            continue
        fi
        version=$(basename "$(dirname "$dir")")
        case "$version" in '' | *[!0-9]*) continue ;; esac
        if [ "$version" -gt "$best_version" ]; then
            best=$dir
            best_version=$version
        fi
    done
    if [ -z "$best" ] && command -v initdb >/dev/null 2>&1; then
        best=$(dirname "$(readlink -f "$(command -v initdb)")")
        [ -x "$best/pg_ctl" ] || best=''
    fi
    [ -n "$best" ] || return 1
    printf '%s\n' "$best"
}

have_libclang() {
    [ -n "${LIBCLANG_PATH:-}" ] && return 0
    compgen -G '/usr/lib/llvm-*/lib/libclang*.so*' >/dev/null ||
        compgen -G '/usr/lib/*-linux-gnu/libclang*.so*' >/dev/null
}

have_pgbouncer() {
    command -v pgbouncer >/dev/null 2>&1 || [ -x /usr/sbin/pgbouncer ]
}

# Installs whatever of PGWARD_APT_PACKAGES is missing. Checks the things
# themselves (binaries, libraries) rather than dpkg, so a machine that has
# them some other way is left alone.
ensure_packages() {
    local missing=()
    find_pg_bin >/dev/null 2>&1 || missing+=(postgresql postgresql-contrib)
    command -v psql >/dev/null 2>&1 || missing+=(postgresql-client)
    id postgres >/dev/null 2>&1 || missing+=(postgresql)
    have_libclang || missing+=(libclang-dev)
    have_pgbouncer || missing+=(pgbouncer)
    command -v cc >/dev/null 2>&1 || missing+=(build-essential)
    if [ "${#missing[@]}" -eq 0 ]; then
        return 0
    fi
    log "installing missing packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q
    # The whole list, not just what is missing: it is cheap when present and
    # keeps postgresql and postgresql-contrib of one version.
    as_root apt-get install -y -q "${PGWARD_APT_PACKAGES[@]}"
    find_pg_bin >/dev/null || die "PostgreSQL server binaries still not found after install"
    id postgres >/dev/null 2>&1 || die "the postgres OS user still does not exist after install"
}

# Stdin to FILE, written (or appended to) as the PostgreSQL server user, so
# files in the data directory keep the owner the server insists on.
# shellcheck disable=SC2016 # $1 is expanded by the inner sh
write_as_pg() { as_pg sh -c 'cat > "$1"' sh "$1"; }
# shellcheck disable=SC2016
append_as_pg() { as_pg sh -c 'cat >> "$1"' sh "$1"; }

# Waits until something accepts TCP connections on HOST:PORT.
# wait_for_port HOST PORT [TIMEOUT_SECONDS]
wait_for_port() {
    local host=$1 port=$2 timeout=${3:-30} deadline
    deadline=$((SECONDS + timeout))
    while [ "$SECONDS" -lt "$deadline" ]; do
        if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.2
    done
    return 1
}

# True when something listens on 127.0.0.1:PORT.
port_in_use() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Creates (first time only) and starts a PostgreSQL cluster in DIR, listening
# on 127.0.0.1:PORT and on a Unix socket in DIR. Layout: DIR/data, DIR/sock,
# DIR/postgres.log. Local (socket) connections are trusted; TCP needs a
# SCRAM password, and the superuser `postgres` has password `postgres`.
# DIR must be reachable by the postgres OS user when we are root.
# start_cluster DIR PORT
start_cluster() {
    local dir=$1 port=$2 bin
    bin=$(find_pg_bin) || die "no PostgreSQL server binaries (run ensure_packages)"
    mkdir -p "$dir/sock"
    if is_root; then
        chown postgres:postgres "$dir" "$dir/sock"
        as_pg test -w "$dir" ||
            die "the postgres OS user cannot write $dir (is a parent directory private?)"
    fi
    if [ ! -f "$dir/data/PG_VERSION" ]; then
        log "initdb $dir/data"
        (cd "$dir" && as_pg "$bin/initdb" -D "$dir/data" -U postgres -A trust \
            -E UTF8 --no-locale >/dev/null)
        # Per-user lines would go first: pg_hba.conf is first match wins.
        write_as_pg "$dir/data/pg_hba.conf" <<'EOF'
# written by scripts/lib.sh (start_cluster)
local all all trust
host all all 127.0.0.1/32 scram-sha-256
EOF
    fi
    # Rewritten at each start so PORT and DIR may change between runs; the
    # last setting of a name in postgresql.conf wins.
    write_as_pg "$dir/data/pgward-cluster.conf" <<EOF
port = $port
listen_addresses = '127.0.0.1'
unix_socket_directories = '$dir/sock'
max_connections = 200
shared_buffers = 64MB
log_connections = on
log_line_prefix = '%m [%p] %q%u@%d '
EOF
    if ! grep -q "^include_if_exists = 'pgward-cluster.conf'" "$dir/data/postgresql.conf"; then
        printf '%s\n' "include_if_exists = 'pgward-cluster.conf'" |
            append_as_pg "$dir/data/postgresql.conf"
    fi
    if (cd "$dir" && as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1); then
        log "PostgreSQL in $dir/data is already running"
    else
        if port_in_use "$port"; then
            die "port $port is already in use; pick another (environment)"
        fi
        log "starting PostgreSQL on 127.0.0.1:$port"
        (cd "$dir" && as_pg "$bin/pg_ctl" -D "$dir/data" -l "$dir/postgres.log" -w -t 60 start >/dev/null) || {
            tail -n 40 "$dir/postgres.log" >&2 || true
            die "PostgreSQL did not start"
        }
    fi
    # Idempotent: the superuser's TCP password.
    psql_local "$dir" "$port" postgres -c "ALTER ROLE postgres PASSWORD 'postgres'" >/dev/null
}

# Stops the cluster in DIR if it runs (fast mode: sessions are ended).
# stop_cluster DIR
stop_cluster() {
    local dir=$1 bin
    [ -f "$dir/data/PG_VERSION" ] || return 0
    bin=$(find_pg_bin) || return 0
    if (cd "$dir" && as_pg "$bin/pg_ctl" -D "$dir/data" status >/dev/null 2>&1); then
        log "stopping PostgreSQL in $dir/data"
        (cd "$dir" && as_pg "$bin/pg_ctl" -D "$dir/data" -m fast -w stop >/dev/null)
    fi
}

# psql over the cluster's Unix socket (trusted), with ON_ERROR_STOP.
# psql_local DIR PORT DB [psql args...]
psql_local() {
    local dir=$1 port=$2 db=$3
    shift 3
    env -u PGHOST -u PGPORT -u PGUSER -u PGDATABASE -u PGPASSWORD -u PGSERVICE -u PGOPTIONS \
        psql -X -v ON_ERROR_STOP=1 -q -h "$dir/sock" -p "$port" -U postgres -d "$db" "$@"
}

# True when PID is a live (not zombie) process whose name is NAME. The name
# check matters because PIDs get reused.
# pid_alive PID NAME
pid_alive() {
    local stat state
    stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
    state=${stat##*) }
    state=${state%% *}
    [ "$state" != Z ] || return 1
    [ "$(cat "/proc/$1/comm" 2>/dev/null)" = "$2" ]
}

# Stops a process recorded in PIDFILE: SIGTERM, then SIGKILL after TIMEOUT
# seconds; only if the PID still runs NAME.
# stop_pidfile PIDFILE NAME [TIMEOUT]
stop_pidfile() {
    local pidfile=$1 name=$2 timeout=${3:-10} pid deadline
    [ -f "$pidfile" ] || return 0
    pid=$(cat "$pidfile")
    if [ -n "$pid" ] && pid_alive "$pid" "$name"; then
        log "stopping $name (pid $pid)"
        kill -TERM "$pid" 2>/dev/null || true
        deadline=$((SECONDS + timeout))
        while pid_alive "$pid" "$name" && [ "$SECONDS" -lt "$deadline" ]; do sleep 0.2; done
        if pid_alive "$pid" "$name"; then
            warn "$name did not stop within ${timeout}s; killing it"
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    rm -f "$pidfile"
}
