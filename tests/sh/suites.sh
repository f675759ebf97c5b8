#!/usr/bin/env bash
# tests/sh/suites.sh - run the shared conformance suites on fresh cowfs mounts:
#   1. pjdfstest (POSIX conformance) via ../shared/suites/run_pjdfstest.sh
#   2. fsx (random read/write/truncate/mmap/fallocate/... checked against a model)
#      via FSX_PROFILES=full ../shared/suites/run_fsx.sh MNT 20000 1
#   3. fsx again (seed 2) while `cowfs clone --force` copies its file every 50 ms
# Each suite gets its own fresh store; the daemon must survive it.
#
# Env: COWFS_PJDFSTEST_MIN  pjdfstest passes if at least this many tests pass (default 380)
#      COWFS_FSX_OPS        fsx operations (default 20000)
#      COWFS_SUITES_DIR     where the runner scripts are (default $REPO/../shared/suites)
#      PJDFSTEST_TIMEOUT, FSX_TIMEOUT  passed to the runners (defaults here: 1500 s, 900 s)
#      plus tests/sh/lib.sh's COWFS_BIN etc.  Run as root (pjdfstest switches users).

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

SUITES="${COWFS_SUITES_DIR:-$REPO/../shared/suites}"
PJD_MIN="${COWFS_PJDFSTEST_MIN:-380}"
FSX_OPS="${COWFS_FSX_OPS:-20000}"
export PJDFSTEST_TIMEOUT="${PJDFSTEST_TIMEOUT:-1500}"
export FSX_TIMEOUT="${FSX_TIMEOUT:-900}"

for f in run_pjdfstest.sh run_fsx.sh; do
    [ -f "$SUITES/$f" ] || die "suite runner $SUITES/$f is missing (the shared suites are expected in ../shared/suites beside the repo)"
done
[ "$(id -u)" = 0 ] || note "not root: pjdfstest will skip ~142 tests and likely fall below $PJD_MIN"

# show_pjdfstest_output LOG: the runner's summary section (its ~400 per-test lines stay in the
# runner's own log, whose path is shown).
show_pjdfstest_output() {
    if grep -q '^==== ' "$1"; then
        grep -E '^run_pjdfstest: (log|config|installing)' "$1" | sed 's/^/#   /'
        sed -n '/^==== /,$p' "$1" | sed 's/^/#   /'
    else
        tail -n 40 "$1" | sed 's/^/#   /'
    fi
}

# ------------------------------------------------------------------ pjdfstest
MNT1="$(cowfs_tmpdir mnt-pjdfstest)" || die "mktemp failed"
if cowfs_mount "$TEST_TMP/store-pjdfstest" "$MNT1"; then
    ok "mount a fresh store for pjdfstest"
    note "running pjdfstest on $MNT1 (needs at least $PJD_MIN passed)..."
    log="$TEST_TMP/pjdfstest.out"
    start=$SECONDS
    bash "$SUITES/run_pjdfstest.sh" "$MNT1" </dev/null >"$log" 2>&1
    rc=$?
    show_pjdfstest_output "$log"
    last="$(grep -E '^pjdfstest: [0-9]+ passed, [0-9]+ failed' "$log" | tail -n 1)"
    passed="$(sed -E 's/^pjdfstest: ([0-9]+) passed.*/\1/' <<<"$last")"
    note "pjdfstest: runner exit code $rc after $((SECONDS - start)) s"
    if [ -z "$last" ]; then
        not_ok "pjdfstest: the runner printed no summary line (exit code $rc)"
    else
        check "pjdfstest: ${passed} passed >= $PJD_MIN (${last#pjdfstest: })" test "$passed" -ge "$PJD_MIN"
    fi
    check "daemon alive after pjdfstest (mount answers stat)" cowfs_alive "$MNT1"
    check "unmount after pjdfstest" cowfs_umount "$MNT1"
else
    not_ok "mount a fresh store for pjdfstest"
fi

# ------------------------------------------------------------------ fsx
MNT2="$(cowfs_tmpdir mnt-fsx)" || die "mktemp failed"
if cowfs_mount "$TEST_TMP/store-fsx" "$MNT2"; then
    ok "mount a fresh store for fsx"
    note "running fsx ($FSX_OPS ops, seed 1, profile full) on $MNT2..."
    log="$TEST_TMP/fsx.out"
    start=$SECONDS
    FSX_PROFILES=full bash "$SUITES/run_fsx.sh" "$MNT2" "$FSX_OPS" 1 </dev/null >"$log" 2>&1
    rc=$?
    sed 's/^/#   /' "$log"
    note "fsx: runner exit code $rc after $((SECONDS - start)) s"
    check "fsx: $FSX_OPS ops, profile full, seed 1 (runner exit code $rc)" test "$rc" -eq 0
    check "daemon alive after fsx (mount answers stat)" cowfs_alive "$MNT2"
    check "unmount after fsx" cowfs_umount "$MNT2"
else
    not_ok "mount a fresh store for fsx"
fi

# ------------------------------------------------- fsx while its file is cloned over and over
# Every clone makes the file's pages shared again, so fsx's next writes take the copy-on-write
# path (and truncate, punch hole and mmap writes run against shared maps).
MNT3="$(cowfs_tmpdir mnt-fsx-clone)" || die "mktemp failed"
if cowfs_mount "$TEST_TMP/store-fsx-clone" "$MNT3"; then
    ok "mount a fresh store for fsx with clones"
    clones="$TEST_TMP/clones"
    echo 0 >"$clones"
    (
        n=0
        while sleep 0.05; do
            for f in "$MNT3"/fsx.*/fsx.full.*; do
                [ -f "$f" ] || continue
                "$COWFS" clone --force "$f" "$MNT3/snapshot" >/dev/null 2>&1 && n=$((n + 1)) && echo "$n" >"$clones"
            done
        done
    ) &
    cloner=$!
    log="$TEST_TMP/fsx-clone.out"
    FSX_PROFILES=full bash "$SUITES/run_fsx.sh" "$MNT3" "$FSX_OPS" 2 </dev/null >"$log" 2>&1
    rc=$?
    kill "$cloner" 2>/dev/null
    wait "$cloner" 2>/dev/null
    tail -n 3 "$log" | sed 's/^/#   /'
    note "clones taken of the fsx file during the run: $(cat "$clones")"
    check "fsx with clones: $FSX_OPS ops, profile full, seed 2 (runner exit code $rc)" test "$rc" -eq 0
    check "fsx with clones: at least 20 clones were taken during the run" test "$(cat "$clones")" -ge 20
    check "daemon alive after fsx with clones" cowfs_alive "$MNT3"
    check "unmount after fsx with clones" cowfs_umount "$MNT3"
else
    not_ok "mount a fresh store for fsx with clones"
fi

# ------------------------------------------- fsx while the whole filesystem is snapshotted
# Every snapshot shares the inode table again, so fsx's next change to its file copies the
# table path, the inode page and the file's map path (itable::unshare). Old snapshots are
# deleted as new ones come, so the reclaimer frees tables while fsx runs. Afterwards every
# snapshot left must still read back, and fsck must find every count right.
MNT4="$(cowfs_tmpdir mnt-fsx-snap)" || die "mktemp failed"
if cowfs_mount "$TEST_TMP/store-fsx-snap" "$MNT4"; then
    ok "mount a fresh store for fsx with snapshots"
    snaps="$TEST_TMP/snaps"
    echo 0 >"$snaps"
    (
        n=0
        while sleep 0.05; do
            "$COWFS" snapshot create "$MNT4" "s$n" >/dev/null 2>&1 || continue
            n=$((n + 1)) && echo "$n" >"$snaps"
            [ "$n" -gt 4 ] && "$COWFS" snapshot delete "$MNT4" "s$((n - 5))" >/dev/null 2>&1
        done
    ) &
    snapper=$!
    log="$TEST_TMP/fsx-snap.out"
    FSX_PROFILES=full bash "$SUITES/run_fsx.sh" "$MNT4" "$FSX_OPS" 3 </dev/null >"$log" 2>&1
    rc=$?
    kill "$snapper" 2>/dev/null
    wait "$snapper" 2>/dev/null
    tail -n 3 "$log" | sed 's/^/#   /'
    note "snapshots taken during the run: $(cat "$snaps")"
    check "fsx with snapshots: $FSX_OPS ops, profile full, seed 3 (runner exit code $rc)" test "$rc" -eq 0
    check "fsx with snapshots: at least 20 snapshots were taken during the run" test "$(cat "$snaps")" -ge 20
    check "every snapshot left reads back whole" \
        sh -c "find '$MNT4/.snapshots/' -type f -exec cat {} + >/dev/null"
    check "daemon alive after fsx with snapshots" cowfs_alive "$MNT4"
    check "unmount after fsx with snapshots" cowfs_umount "$MNT4"
    check "fsck clean after fsx with snapshots" "$COWFS" fsck "$TEST_TMP/store-fsx-snap"
else
    not_ok "mount a fresh store for fsx with snapshots"
fi

finish
