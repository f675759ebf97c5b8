#!/usr/bin/env bash
# tests/run.sh - THE test command of cowfs: everything CI runs.
#
#   1. installs missing prerequisites when root (Debian packages fuse3, attr)
#   2. cargo fmt --check, cargo clippy --all-targets -- -D warnings
#   3. cargo build --release
#   4. cargo test --release                  (all Rust unit and integration tests; among
#                                            them tests/fuzz_corpus.rs, the fuzz targets'
#                                            corpus and mutations on stable)
#   5. cargo test (debug build: overflow checks on; tests/deep.rs only in release)
#   6. cargo fuzz: a short run of each fuzz target (fuzz/), when cargo-fuzz is there or
#      can be installed (it needs nightly features: RUSTC_BOOTSTRAP=1)
#   7. every tests/sh/*.sh but lib.sh, suites.sh last (a real FUSE mount each; needs root)
# and prints, as its very last line, "N passed, M failed" where each step/script counts as one.
# Exits non-zero if anything failed.
#
# Env: COWFS_SKIP_SUITES=1  skip tests/sh/suites.sh (pjdfstest + fsx) for a quick local run
#      COWFS_SKIP_CARGO=1   skip steps 2-6 (only for checking the shell harness itself,
#                           e.g. with COWFS_BIN=fake COWFS_ALLOW_NONFUSE=1)
#      COWFS_SKIP_DEBUG=1   skip step 5;  COWFS_SKIP_FUZZ=1  skip step 6
#      COWFS_CHECKS_ONLY=1  run step 2 alone (format and lints) and stop
#      COWFS_FUZZ_SECONDS   seconds per fuzz target in step 6 (default 15)
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

# ------------------------------------------------------------------ 2-6. cargo
step() {  # step NAME COMMAND...: runs a command as one counted step
    local name=$1 t rc
    shift
    say "== $name"
    t=$SECONDS
    "$@" 2>&1
    rc=$?
    result "$name" "$rc" $((SECONDS - t))
    return "$rc"
}

# One short libFuzzer run of each target in fuzz/ on a scratch copy of its corpus (what it
# finds stays out of the checked-in corpus). Not having cargo-fuzz is a note, not a failure:
# tests/fuzz_corpus.rs runs the same targets on stable in step 4.
fuzz_step() {
    local secs=${COWFS_FUZZ_SECONDS:-15} t rc scratch tgt
    if ! cargo fuzz --version >/dev/null 2>&1; then
        say "== installing cargo-fuzz"
        timeout 900 cargo install --locked cargo-fuzz >/tmp/cowfs-fuzz-install.$$.log 2>&1 ||
            { say "note: cargo-fuzz could not be installed; the targets ran as tests/fuzz_corpus.rs"; tail -n 5 /tmp/cowfs-fuzz-install.$$.log; rm -f /tmp/cowfs-fuzz-install.$$.log; return 0; }
        rm -f /tmp/cowfs-fuzz-install.$$.log
    fi
    say "== cargo fuzz build"
    t=$SECONDS
    # No sanitizer (`-s none`): the targets run safe Rust, and ASan would double a build
    # that CI makes from scratch each time.
    if ! RUSTC_BOOTSTRAP=1 timeout 1800 cargo fuzz build -O -s none 2>&1; then
        result "cargo fuzz build" 1 $((SECONDS - t))
        return 1
    fi
    result "cargo fuzz build" 0 $((SECONDS - t))
    scratch=$(mktemp -d /tmp/cowfs-fuzz.XXXXXX)
    for tgt in $(cd fuzz/fuzz_targets && ls ./*.rs | sed 's|^\./||; s|\.rs$||'); do
        mkdir -p "$scratch/$tgt"
        t=$SECONDS
        say "== cargo fuzz run $tgt ($secs s)"
        RUSTC_BOOTSTRAP=1 timeout $((secs + 300)) cargo fuzz run -O -s none "$tgt" "$scratch/$tgt" "fuzz/corpus/$tgt" -- \
            -max_total_time="$secs" -rss_limit_mb=4096 -print_final_stats=1 2>&1 |
            grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|==[0-9]+==|SUMMARY|Test unit written)|panicked' |
            sed 's/^/    /'
        rc=${PIPESTATUS[0]}
        result "cargo fuzz run $tgt" "$rc" $((SECONDS - t))
    done
    rm -rf "$scratch"
}

if [ "${COWFS_SKIP_CARGO:-0}" = 1 ]; then
    say "== skipping cargo build and cargo test (COWFS_SKIP_CARGO=1)"
else
    command -v cargo >/dev/null 2>&1 || { say "cargo not found: install Rust (rustup) first"; say "0 passed, 1 failed"; exit 1; }
    step "cargo fmt --check" cargo fmt --check
    step "cargo clippy --all-targets -- -D warnings" cargo clippy --all-targets -- -D warnings
    if [ "${COWFS_CHECKS_ONLY:-0}" = 1 ]; then
        say "$PASSED passed, $FAILED failed"
        [ "$FAILED" -eq 0 ]
        exit
    fi
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
    if [ "${COWFS_SKIP_DEBUG:-0}" = 1 ]; then
        say "== skipping the debug-build tests (COWFS_SKIP_DEBUG=1)"
    else
        # Overflow checks and debug assertions on: arithmetic on disk values that wraps in
        # release panics here. tests/deep.rs is left out: its 100,000-level walks take
        # 4-5 minutes unoptimised (27 s in release, step 4) and check recursion, not
        # arithmetic.
        debug_tests=()
        for f in tests/*.rs; do
            [ "$(basename "$f" .rs)" = deep ] || debug_tests+=(--test "$(basename "$f" .rs)")
        done
        step "cargo test (debug)" cargo test --no-fail-fast --lib --bins "${debug_tests[@]}"
    fi
    if [ "${COWFS_SKIP_FUZZ:-0}" = 1 ]; then
        say "== skipping cargo fuzz (COWFS_SKIP_FUZZ=1)"
    else
        fuzz_step
    fi
fi

# ------------------------------------------------------------------ 7. shell tests
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
