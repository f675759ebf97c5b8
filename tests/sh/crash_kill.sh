#!/usr/bin/env bash
# tests/sh/crash_kill.sh - kill -9 the daemon at random moments under a mixed workload
# (writes, fsync, clones, copies, renames, truncates, unlinks, directories), then for every
# cycle: fsck must find the store clean, and every fsync'd file must come back byte for byte.
#
# Env: COWFS_CRASH_CYCLES (default 100), plus tests/sh/lib.sh's COWFS_BIN etc.

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

CYCLES="${COWFS_CRASH_CYCLES:-100}"
STORE="$TEST_TMP/store"
MNT="$(cowfs_tmpdir mnt-crash)" || die "mktemp failed"
MANIFEST="$TEST_TMP/manifest"
: >"$MANIFEST"
command -v python3 >/dev/null || die "python3 is needed for the workload"

fsck_bad=0
lost_files=0
lost_bytes=0
checked_bytes=0
checked_files=0
cycles_run=0
for c in $(seq 1 "$CYCLES"); do
    if ! kill9_cycle "$STORE" "$MNT" "$c" 1.7 \
        python3 "$(dirname "${BASH_SOURCE[0]}")/crash_workload.py" "$MNT" "$MANIFEST" "$c" "$c" "$COWFS"; then
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
    # This cycle's fsync'd files every time; all of them every 25 cycles and at the end.
    if [ $((c % 25)) -eq 0 ] || [ "$c" -eq "$CYCLES" ]; then
        cp "$MANIFEST" "$TEST_TMP/check"
    else
        grep -E "^d-$c-" "$MANIFEST" >"$TEST_TMP/check"
    fi
    while read -r name size sum; do
        checked_files=$((checked_files + 1))
        checked_bytes=$((checked_bytes + size))
        got="$(sha256sum "$MNT/$name" 2>/dev/null | cut -d' ' -f1)"
        if [ "$got" != "$sum" ]; then
            lost_files=$((lost_files + 1))
            lost_bytes=$((lost_bytes + size))
            note "cycle $c: $name lost or changed (sha256 ${got:-missing})"
        fi
    done <"$TEST_TMP/check"
    cowfs_umount "$MNT" >/dev/null 2>&1 || umount -l "$MNT"
    cycles_run=$c
done

durable="$(wc -l <"$MANIFEST")"
note "cycles: $cycles_run; fsync'd files: $durable; fsync'd bytes checked: $checked_bytes (over all cycles, $checked_files file checks)"
note "fsck errors: $fsck_bad; lost fsync'd files: $lost_files; lost fsync'd bytes: $lost_bytes"
check_eq "kill -9 cycles run" "$CYCLES" "$cycles_run"
check_eq "fsck errors after kill -9" 0 "$fsck_bad"
check_eq "fsync'd bytes lost" 0 "$lost_bytes"
check "the workload made fsync'd files to check" test "$durable" -gt "$CYCLES"
"$COWFS" fsck "$STORE" >"$TEST_TMP/fsck.out" 2>&1
check "final fsck clean" test $? -eq 0
finish
