#!/usr/bin/env bash
# tests/sh/bigdata.sh - large files on a fresh cowfs store:
#   1. 1 GiB of random data survives unmount + remount in a new daemon (sha256); prints how long
#      the unmount and the remount took (printed only, never asserted)
#   2. a 4 GiB file (the 1 GiB random file four times) is written and read back with the right
#      sha256 while the daemon's RSS stays below 200 MiB; deleting it gives the space back in df
#   3. kill -9 of the idle daemon after an fsync'd 10 MiB write, umount -l, remount: the file
#      is intact (the kill released the store lock; the journal is replayed)
#
# Usage: tests/sh/bigdata.sh        (as root; needs ~7 GiB free in /tmp, else it skips)
# Prints one "ok - ..." / "not ok - ..." line per check and "N passed, M failed" last.

# shellcheck disable=SC2317  # helpers are called through check and traps
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MiB=$((1024 * 1024))
GiB=$((1024 * MiB))
RSS_LIMIT_KIB=$((200 * 1024))
# The 1 GiB source file + the store's peak (1 GiB + 4 GiB of data) + 1 GiB of slack.
NEED_BYTES=$((7 * GiB))

STORE="$TEST_TMP/store"          # does not exist yet: `cowfs mount` creates a fresh store
MNT="$(cowfs_tmpdir mnt)" || die "mktemp failed"
SRC="$(cowfs_tmpdir src)" || die "mktemp failed"     # the random data, outside the mount
RAND="$SRC/random-1g.bin"
SAMPLER_PID=""

# ------------------------------------------------------------------ cleanup
# _bd_cleanup: stop the RSS sampler and remove the 1 GiB source file (lib.sh's cleanup removes
# TEST_TMP too, but not if a mount is left under it or with COWFS_KEEP_TMP=1).  Keeps $?.
_bd_cleanup() {
    local rc=$?
    stop_sampler
    rm -f -- "$RAND"
    return "$rc"
}
trap '_bd_cleanup; _on_exit' EXIT
bd_finish() { _bd_cleanup; finish; }
bd_die() { not_ok "$*"; bd_finish; }

# ------------------------------------------------------------------ helpers
sha() { sha256sum <"$1" | cut -c1-64; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
not_mounted() { ! is_mounted "$1"; }
# the_daemon MNT: prints the one daemon pid serving MNT; fails if there is not exactly one.
the_daemon() {
    local pids n
    pids="$(daemon_pids "$1")"
    n="$(printf '%s' "$pids" | grep -c .)"
    [ "$n" -eq 1 ] || { echo "expected one daemon for $1, found $n: $(echo "$pids" | tr '\n' ' ')" >&2; return 1; }
    printf '%s\n' "$pids"
}
# df_used MNT: bytes used according to df.
df_used() { df -B1 --output=used "$1" | tail -n 1 | tr -d ' '; }
rss_kib() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status" 2>/dev/null; }

# start_sampler PID FILE: every second, writes the largest VmRSS (KiB) of PID seen so far to FILE.
start_sampler() {
    local pid=$1 out=$2
    (
        max=0
        while [ -d "/proc/$pid" ]; do
            r="$(rss_kib "$pid")"
            if [ -n "$r" ] && [ "$r" -gt "$max" ]; then max=$r; echo "$max" >"$out"; fi
            sleep 1
        done
    ) </dev/null >/dev/null 2>&1 &
    SAMPLER_PID=$!
}
stop_sampler() {
    [ -n "$SAMPLER_PID" ] || return 0
    kill "$SAMPLER_PID" 2>/dev/null
    wait "$SAMPLER_PID" 2>/dev/null
    SAMPLER_PID=""
    return 0
}

# space_freed MNT BEFORE MIN: df's used dropped by at least MIN bytes from BEFORE within 10 s
# (frees become reusable at the next commit: every 5 s, or on sync).
space_freed() {
    local mnt=$1 before=$2 min=$3 used i
    sync -f "$mnt" 2>/dev/null; sync "$mnt" 2>/dev/null
    for i in $(seq 1 20); do
        used="$(df_used "$mnt")"
        [ $((before - used)) -ge "$min" ] && { echo "freed $((before - used)) bytes after ~$(((i - 1) / 2)) s"; return 0; }
        sleep 0.5
    done
    echo "df used: before delete $before, 10 s after $used (freed $((before - used)), want >= $min)"
    return 1
}
# enotconn MNT: stat of the dead mount fails with "Transport endpoint is not connected".
enotconn() {
    local out
    out="$(timeout -k 2 10 stat "$1" 2>&1)" && { echo "stat $1 succeeded: $out"; return 1; }
    grep -q 'Transport endpoint is not connected' <<<"$out" || { echo "$out"; return 1; }
}

# ------------------------------------------------------------------ free space
avail="$(df -B1 --output=avail "$TEST_TMP" | tail -n 1 | tr -d ' ')"
note "binary: $COWFS"
note "store:  $STORE"
note "mount:  $MNT"
note "free in $TEST_TMP: $((avail / MiB)) MiB (need $((NEED_BYTES / MiB)) MiB)"
if [ "${avail:-0}" -lt "$NEED_BYTES" ]; then
    skip "big data tests" "only $((avail / MiB)) MiB free in $TEST_TMP, need $((NEED_BYTES / MiB)) MiB"
    bd_finish
fi

# ------------------------------------------------------------------ 1. 1 GiB across a remount
head -c 1G /dev/urandom >"$RAND" || bd_die "generate 1 GiB of random data in $RAND"
sum1g="$(sha "$RAND")"
cowfs_mount "$STORE" "$MNT" || bd_die "mount a fresh store at $MNT"
ok "mount a fresh store"
pid1="$(the_daemon "$MNT")" || bd_die "find the daemon serving $MNT"

t=$(now_ms)
check "1 GiB: cp 1 GiB of random data into the mount" cp "$RAND" "$MNT/random-1g.bin"
note "cp of 1 GiB took $(($(now_ms) - t)) ms"
check_eq "1 GiB: size" "$GiB" "$(stat -c %s "$MNT/random-1g.bin")"
check_eq "1 GiB: sha256 in the mount" "$sum1g" "$(sha "$MNT/random-1g.bin")"

t=$(now_ms)
check "1 GiB: cowfs_umount" cowfs_umount "$MNT"
note "unmount took $(($(now_ms) - t)) ms"
check "1 GiB: not mounted after umount" not_mounted "$MNT"
t=$(now_ms)
cowfs_mount "$STORE" "$MNT" || { show_daemon_log "$MNT" | sed 's/^/# /'; bd_die "remount the same store at $MNT"; }
note "remount took $(($(now_ms) - t)) ms"
ok "1 GiB: remount the same store"
pid2="$(the_daemon "$MNT")" || bd_die "find the daemon serving $MNT after the remount"
check "1 GiB: the remount runs a new daemon (pid $pid1 -> $pid2)" test "$pid1" != "$pid2"
check_eq "1 GiB: sha256 after the remount" "$sum1g" "$(sha "$MNT/random-1g.bin")"

# ------------------------------------------------------------------ 2. 4 GiB and the daemon's RSS
sum4g="$(cat "$RAND" "$RAND" "$RAND" "$RAND" | sha256sum | cut -c1-64)"
RSS_MAX="$SRC/rss-max"
echo 0 >"$RSS_MAX"
note "daemon pid $pid2: RSS before the 4 GiB write $(rss_kib "$pid2") KiB"
start_sampler "$pid2" "$RSS_MAX"

t=$(now_ms)
# shellcheck disable=SC2016
check "4 GiB: write the random GiB four times into one file" \
    bash -c 'cat "$1" "$1" "$1" "$1" >"$2"' _ "$RAND" "$MNT/big-4g.bin"
note "write of 4 GiB took $(($(now_ms) - t)) ms"
check_eq "4 GiB: size" "$((4 * GiB))" "$(stat -c %s "$MNT/big-4g.bin")"
t=$(now_ms)
check_eq "4 GiB: sha256 read back" "$sum4g" "$(sha "$MNT/big-4g.bin")"
note "read of 4 GiB took $(($(now_ms) - t)) ms"
r="$(rss_kib "$pid2")"
[ -n "$r" ] && [ "$r" -gt "$(cat "$RSS_MAX")" ] && echo "$r" >"$RSS_MAX"
stop_sampler
max_rss="$(cat "$RSS_MAX")"
note "daemon max RSS during the 4 GiB write + read: $max_rss KiB ($((max_rss / 1024)) MiB)"
check "4 GiB: daemon max RSS $((max_rss / 1024)) MiB < $((RSS_LIMIT_KIB / 1024)) MiB" \
    test "$max_rss" -gt 0 -a "$max_rss" -lt "$RSS_LIMIT_KIB"
check "4 GiB: daemon alive" cowfs_alive "$MNT"

used_before="$(df_used "$MNT")"
note "df used with the 4 GiB file: $used_before bytes"
check "4 GiB: rm the file" rm "$MNT/big-4g.bin"
check "4 GiB: df used drops by >= 3.5 GiB within 10 s of the delete" \
    space_freed "$MNT" "$used_before" $((7 * GiB / 2))
note "df used after the delete: $(df_used "$MNT") bytes"

# ------------------------------------------------------------------ 3. kill -9 after fsync
head -c $((10 * MiB)) /dev/urandom >"$SRC/small.bin"
sum10m="$(sha "$SRC/small.bin")"
check "kill -9: write 10 MiB with dd conv=fsync" \
    dd if="$SRC/small.bin" of="$MNT/small.bin" bs=1M conv=fsync status=none
pid3="$(the_daemon "$MNT")" || bd_die "find the daemon serving $MNT before the kill"
check "kill -9: kill -9 the idle daemon (pid $pid3)" kill -9 "$pid3"
for _ in $(seq 1 100); do [ -d "/proc/$pid3" ] || break; sleep 0.1; done
check "kill -9: the daemon is gone" test ! -d "/proc/$pid3"
check "kill -9: the dead mount says 'Transport endpoint is not connected'" enotconn "$MNT"
check "kill -9: umount -l the dead mount" umount -l "$MNT"
check "kill -9: not mounted after umount -l" not_mounted "$MNT"
if cowfs_mount "$STORE" "$MNT"; then
    ok "kill -9: remount the store (the lock was released)"
    check_eq "kill -9: sha256 of the fsync'd file after the remount" "$sum10m" "$(sha "$MNT/small.bin")"
    check_eq "kill -9: the 1 GiB file is intact too" "$sum1g" "$(sha "$MNT/random-1g.bin")"
    check "kill -9: the deleted 4 GiB file stays deleted" test ! -e "$MNT/big-4g.bin"
    check "daemon alive at the end" cowfs_alive "$MNT"
    check "final cowfs_umount" cowfs_umount "$MNT"
else
    not_ok "kill -9: remount the store (the lock was released)" "$(show_daemon_log "$MNT")"
fi

bd_finish
