#!/usr/bin/env bash
# Refusal corpus (issue #3): how much legitimate SQL from a real corpus,
# PostgreSQL 15's regression SQL (src/test/regress/sql/*.sql), pgward refuses
# as unparseable or opaque, per statement kind.
#
# Gets the Debian source package of postgresql-15 (once: it is cached in
# $PGWARD_CORPUS_OUT/src), extracts only the regression SQL, and runs
# examples/refusal_corpus.rs on it. The Markdown report goes to stdout and to
# $PGWARD_CORPUS_OUT/report.md, one JSON line per statement to
# $PGWARD_CORPUS_OUT/statements.jsonl.
#
# Environment:
#   PGWARD_CORPUS_OUT      output and cache directory (default target/corpus)
#   PGWARD_CORPUS_SQL_DIR  use this directory of .sql files instead (no download)
#
# Needs apt (Debian 12): when no deb-src entry is configured, one is added in
# /etc/apt/sources.list.d/pgward-deb-src.sources.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(repo_root)"

PKG=postgresql-15
OUT=${PGWARD_CORPUS_OUT:-target/corpus}
SRC_CACHE=$OUT/src
DEB_SRC_FILE=/etc/apt/sources.list.d/pgward-deb-src.sources
mkdir -p "$OUT" "$SRC_CACHE"
OUT=$(cd "$OUT" && pwd)
SRC_CACHE=$OUT/src

# The newest cached upstream tarball of $PKG, if any.
cached_orig() {
    local f
    f=$(compgen -G "$SRC_CACHE/${PKG}_*.orig.tar.*" | sort -V | tail -n 1) || true
    [ -n "$f" ] && printf '%s\n' "$f"
}

# True when apt has some deb-src entry (one-line or deb822 format).
have_deb_src() {
    grep -qsE '^[[:space:]]*deb-src[[:space:]]' /etc/apt/sources.list /etc/apt/sources.list.d/*.list ||
        grep -qsE '^[[:space:]]*Types:.*\bdeb-src\b' /etc/apt/sources.list.d/*.sources
}

add_deb_src() {
    log "adding a deb-src entry: $DEB_SRC_FILE"
    as_root tee "$DEB_SRC_FILE" >/dev/null <<'EOF'
# Added by pgward scripts/corpus.sh: source packages, for the regression SQL corpus.
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
}

download_source() {
    command -v apt-get >/dev/null 2>&1 || die "no apt-get: put a $PKG source package in $SRC_CACHE or set PGWARD_CORPUS_SQL_DIR"
    have_deb_src || add_deb_src
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q >&2
    log "downloading the $PKG source package into $SRC_CACHE"
    # _apt cannot always write here; apt then downloads as the current user
    # (with a warning), which is fine.
    (cd "$SRC_CACHE" && apt-get source --download-only "$PKG") >&2
}

# Installs a missing decompressor for tar.
ensure_decompressor() {
    local tool
    case "$1" in
    *.bz2) tool=bzip2 ;;
    *.xz) tool=xz-utils ;;
    *.gz) tool=gzip ;;
    *) return 0 ;;
    esac
    local bin=${tool%-utils}
    command -v "$bin" >/dev/null 2>&1 && return 0
    log "installing $tool (to unpack $(basename "$1"))"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get install -y -q "$tool" >&2
}

# Extracts src/test/regress/sql of TARBALL (once); prints the directory.
extract_regress_sql() {
    local orig=$1 version dest
    version=$(basename "$orig")
    version=${version#"${PKG}"_}
    version=${version%%.orig.tar.*}
    dest=$OUT/regress-sql-$version
    if [ ! -f "$dest/.complete" ]; then
        ensure_decompressor "$orig"
        log "extracting src/test/regress/sql from $(basename "$orig")"
        rm -rf "$dest"
        mkdir -p "$dest"
        tar -xf "$orig" -C "$dest" --strip-components=5 --wildcards '*/src/test/regress/sql/*'
        [ -n "$(compgen -G "$dest/*.sql")" ] || die "no .sql files extracted from $orig"
        touch "$dest/.complete"
    fi
    printf '%s\n' "$dest"
}

# The build needs a C compiler and libclang (pg_query's build script).
if ! command -v cc >/dev/null 2>&1 || ! have_libclang; then
    log "installing build dependencies: libclang-dev build-essential"
    export DEBIAN_FRONTEND=noninteractive
    as_root apt-get update -q >&2
    as_root apt-get install -y -q libclang-dev build-essential >&2
fi

if [ -n "${PGWARD_CORPUS_SQL_DIR:-}" ]; then
    sql_dir=$PGWARD_CORPUS_SQL_DIR
else
    orig=$(cached_orig) || {
        download_source
        orig=$(cached_orig) || die "apt-get source left no ${PKG}_*.orig.tar.* in $SRC_CACHE"
    }
    sql_dir=$(extract_regress_sql "$orig")
fi
[ -d "$sql_dir" ] || die "no such directory: $sql_dir"

log "running examples/refusal_corpus on $sql_dir"
start=$SECONDS
cargo run --release --quiet --example refusal_corpus -- "$sql_dir" --out "$OUT"
log "done in $((SECONDS - start)) s (including the build); report: $OUT/report.md"
