#!/usr/bin/env bash
# The project's full check, as CI runs it (.ci/run): installs what is
# missing, then formatting, lints, and the whole test suite. Every step runs
# even when an earlier one failed, so one run reports everything; the exit
# status is non-zero if any step failed.
#
# Runs fine as root: the test rig starts PostgreSQL as the `postgres` OS user.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
cd "$(repo_root)"

ensure_packages

# The toolchain is on the machine; its fmt and clippy components may not be.
if ! cargo fmt --version >/dev/null 2>&1; then
    rustup component add rustfmt || warn "could not add rustfmt"
fi
if ! cargo clippy --version >/dev/null 2>&1; then
    rustup component add clippy || warn "could not add clippy"
fi

export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
export CARGO_TERM_COLOR=${CARGO_TERM_COLOR:-never}

failed=()
step() {
    local name=$1
    shift
    log "$name: $*"
    local start=$SECONDS
    if "$@"; then
        log "$name: ok ($((SECONDS - start))s)"
    else
        warn "$name: FAILED ($((SECONDS - start))s)"
        failed+=("$name")
    fi
}

step fmt cargo fmt --all -- --check
step clippy cargo clippy --all-targets -- -D warnings
# The benchmark-only build (scripts/bench.sh's unaudited target) must keep compiling.
step clippy-bench-build cargo clippy --all-targets --features unaudited-benchmark -- -D warnings
step test cargo test --all-targets --no-fail-fast

if [ "${#failed[@]}" -gt 0 ]; then
    die "failed: ${failed[*]}"
fi
log "all checks passed"
