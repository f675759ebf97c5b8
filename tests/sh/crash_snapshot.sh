#!/usr/bin/env bash
# tests/sh/crash_snapshot.sh - kill -9 the daemon while snapshots are created, deleted (and
# reclaimed in the background) and rolled back, under writes. Every cycle: fsck must find the
# store clean, and after a remount every snapshot and the live tree must hold what the steps
# that returned promise (tests/sh/crash_snapshot.py says exactly what, and checks it).
#
# Env: COWFS_SNAP_CRASH_CYCLES (default 40), plus tests/sh/lib.sh's COWFS_BIN etc.

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CYCLES="${COWFS_SNAP_CRASH_CYCLES:-40}"
STORE="$TEST_TMP/store"
MNT="$(cowfs_tmpdir mnt-snapcrash)" || die "mktemp failed"
_MOUNTED+=("$(_canon "$MNT")")   # the EXIT trap unmounts it and kills a leftover daemon
STATE="$TEST_TMP/state"
PY="$(dirname "${BASH_SOURCE[0]}")/crash_snapshot.py"
: >"$STATE"
command -v python3 >/dev/null || die "python3 is needed for the workload"

fsck_bad=0
check_bad=0
cycles_run=0
for c in $(seq 1 "$CYCLES"); do
    if ! kill9_cycle "$STORE" "$MNT" "$c" 2.2 python3 "$PY" run "$MNT" "$STATE" "$c" "$COWFS"; then
        not_ok "cycle $c: mount"
        break
    fi
    if ! "$COWFS" fsck "$STORE" >"$TEST_TMP/fsck.out" 2>&1; then
        fsck_bad=$((fsck_bad + 1))
        note "cycle $c: fsck says:"
        sed 's/^/#   /' "$TEST_TMP/fsck.out" | head -n 20
    fi
    if ! "$COWFS" mount "$STORE" "$MNT" >>"$TEST_TMP/mount.log" 2>&1; then
        not_ok "cycle $c: remount after kill -9"
        break
    fi
    if ! python3 "$PY" check "$MNT" "$STATE" "$COWFS" >"$TEST_TMP/check.out" 2>&1; then
        check_bad=$((check_bad + 1))
        note "cycle $c: after kill -9 and remount:"
        sed 's/^/#   /' "$TEST_TMP/check.out" | head -n 20
    fi
    [ "$c" = 1 ] || [ $((c % 10)) = 0 ] && note "cycle $c: $(tail -n 1 "$TEST_TMP/check.out")"
    cowfs_umount "$MNT" >/dev/null 2>&1 || umount -l "$MNT"
    cycles_run=$c
done

count() { grep -c "^$1 " "$STATE"; }
note "steps that returned: $(count S) creates, $(count D) deletes, $(count R) rollbacks;" \
    "cut short by kill -9: $(($(count S+) - $(count S))) creates, $(($(count D+) - $(count D))) deletes," \
    "$(($(count R+) - $(count R))) rollbacks; durable files: $(count F)"
check_eq "kill -9 cycles run" "$CYCLES" "$cycles_run"
check_eq "fsck errors after kill -9 during snapshot steps" 0 "$fsck_bad"
check_eq "cycles where a snapshot or the live tree lost what was promised" 0 "$check_bad"
check "snapshots were created, deleted and rolled back" \
    test "$(count S)" -gt "$CYCLES" -a "$(count D)" -gt 5 -a "$(count R)" -gt 5
"$COWFS" fsck "$STORE" >"$TEST_TMP/fsck.out" 2>&1
check "final fsck clean" test $? -eq 0
finish
