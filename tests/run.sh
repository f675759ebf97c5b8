#!/usr/bin/env bash
# tests/run.sh - THE test command of cowfs: everything CI runs.
#
#   1. installs missing prerequisites when root (Debian packages fuse3, attr)
#   2. cargo build --release
#   3. cargo test --release                  (all Rust unit and integration tests)
#   4. every tests/sh/*.sh but lib.sh, suites.sh last (a real FUSE mount each; needs root)
# and prints, as its very last line, "N passed, M failed" where each step/script counts as one.
# Exits non-zero if anything failed.
#
# Env: COWFS_SKIP_SUITES=1  skip tests/sh/suites.sh (pjdfstest + fsx) for a quick local run
#      COWFS_SKIP_CARGO=1   skip steps 2-3 (only for checking the shell harness itself,
#                           e.g. with COWFS_BIN=fake COWFS_ALLOW_NONFUSE=1)
#      COWFS_SCRIPT_TIMEOUT seconds allowed per shell script (default 1200; suites.sh 2400)
#      plus what tests/sh/lib.sh and the scripts read (COWFS_BIN, COWFS_PJDFSTEST_MIN, ...).

set -u
set -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
cd "$REPO" || exit 2
if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    PATH="$HOME/.cargo/bin:$PATH"
fi
export PATH

PASSED=0
FAILED=0
FAILED_NAMES=()
T0=$SECONDS

say() { printf '%s\n' "$*"; }
result() {  # result NAME RC SECONDS
    if [ "$2" -eq 0 ]; then
        PASSED=$((PASSED + 1)); say "PASS $1 ($3 s)"
    else
        FAILED=$((FAILED + 1)); FAILED_NAMES+=("$1"); say "FAIL $1 (exit $2, $3 s)"
    fi
}

# ------------------------------------------------------------------ 1. prerequisites
need=()
command -v fusermount3 >/dev/null 2>&1 || need+=(fuse3)
command -v setfattr >/dev/null 2>&1 || need+=(attr)
if [ "${#need[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        say "== installing ${need[*]}"
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}"; } \
            >/tmp/cowfs-apt.$$.log 2>&1 ||
            { say "warning: apt-get install ${need[*]} failed:"; tail -n 20 /tmp/cowfs-apt.$$.log; }
        rm -f /tmp/cowfs-apt.$$.log
    else
        say "warning: missing ${need[*]} and cannot install (not root or no apt-get)"
    fi
fi
if [ ! -e /dev/fuse ]; then
    modprobe fuse 2>/dev/null || true
    [ -e /dev/fuse ] || say "warning: /dev/fuse does not exist: the mount tests will fail"
fi
[ "$(id -u)" = 0 ] || say "warning: not root: mknod/chown checks are skipped and pjdfstest loses ~142 tests"

# ------------------------------------------------------------------ 2-3. cargo
if [ "${COWFS_SKIP_CARGO:-0}" = 1 ]; then
    say "== skipping cargo build and cargo test (COWFS_SKIP_CARGO=1)"
else
    command -v cargo >/dev/null 2>&1 || { say "cargo not found: install Rust (rustup) first"; say "0 passed, 1 failed"; exit 1; }
    say "== cargo build --release"
    t=$SECONDS
    cargo build --release 2>&1
    rc=$?
    result "cargo build --release" "$rc" $((SECONDS - t))
    if [ "$rc" -ne 0 ]; then
        say "the build failed: nothing else can run"
        say "$PASSED passed, $FAILED failed"
        exit 1
    fi
    say "== cargo test --release --no-fail-fast"
    t=$SECONDS
    cargo test --release --no-fail-fast 2>&1
    result "cargo test --release" $? $((SECONDS - t))
fi

# ------------------------------------------------------------------ 4. shell tests
# leaked_mounts: mounts the shell tests left behind (they all mount under /tmp/cowfs-test.*).
leaked_mounts() { awk '$2 ~ /^\/tmp\/cowfs-test\./ { print $2 }' /proc/mounts; }

run_script() {  # run_script PATH TIMEOUT
    local name=$1 rc t left m
    say "== $name"
    t=$SECONDS
    # Own process group via timeout: on expiry the whole script tree gets SIGTERM, and the
    # script's EXIT trap unmounts and cleans up; -k gives it 60 s to do so.
    timeout -k 60 "$2" bash "$REPO/$name" </dev/null 2>&1 | sed -u 's/^/    /'
    rc=${PIPESTATUS[0]}
    [ "$rc" = 124 ] && say "    $name timed out after $2 s"
    left="$(leaked_mounts)"
    if [ -n "$left" ]; then
        say "    $name left mounts behind: $(echo "$left" | tr '\n' ' ')- detaching them"
        for m in $left; do umount -l "$m" 2>/dev/null; done
        [ "$rc" -eq 0 ] && rc=1
    fi
    result "$name" "$rc" $((SECONDS - t))
}

scripts=()
for f in tests/sh/*.sh; do
    case "$(basename "$f")" in lib.sh | suites.sh) ;; *) scripts+=("$f") ;; esac
done
for f in "${scripts[@]}"; do
    run_script "$f" "${COWFS_SCRIPT_TIMEOUT:-1200}"
done
if [ "${COWFS_SKIP_SUITES:-0}" = 1 ]; then
    say "== skipping tests/sh/suites.sh (COWFS_SKIP_SUITES=1)"
elif [ -f tests/sh/suites.sh ]; then
    run_script tests/sh/suites.sh "${COWFS_SCRIPT_TIMEOUT:-2400}"
fi

# ------------------------------------------------------------------ summary
say ""
say "== summary ($((SECONDS - T0)) s)"
[ "${#FAILED_NAMES[@]}" -gt 0 ] && say "failed: ${FAILED_NAMES[*]}"
say "$PASSED passed, $FAILED failed"
[ "$FAILED" -eq 0 ]
