#!/usr/bin/env bash
# tests/sh/dedup.sh - `cowfs dedup` on a real mount: two separately written copies of a
# 256 MiB file become one set of pages (df drops by ~256 MiB), zero pages become holes,
# contents never change, a writer running during the dedup loses nothing, fsck is clean.
#
# Usage: tests/sh/dedup.sh   (env: see tests/sh/lib.sh; COWFS_DEDUP_MIB, default 256)

# shellcheck disable=SC2317  # helpers are called through check
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

MIB="${COWFS_DEDUP_MIB:-256}"
STORE="$TEST_TMP/store"
MNT="$(cowfs_tmpdir mnt)" || die "mktemp failed"
SRC="$(cowfs_tmpdir src)" || die "mktemp failed"
cowfs_mount "$STORE" "$MNT" || die "mount a fresh store at $MNT"
ok "mount a fresh store"

used_kib() { sync "$MNT/a" 2>/dev/null; df -k --output=used "$MNT" | tail -n 1 | tr -d ' '; }
sha() { sha256sum <"$1" | cut -c1-64; }

head -c "$((MIB * 1024 * 1024))" /dev/urandom >"$SRC/data"
want="$(sha "$SRC/data")"
# Written separately (cat, not cp: cp would clone through copy_file_range).
check "write copy a ($MIB MiB)" sh -c "cat '$SRC/data' > '$MNT/a'"
check "write copy b ($MIB MiB)" sh -c "cat '$SRC/data' > '$MNT/b'"
check "write 16 MiB of zeros" dd if=/dev/zero of="$MNT/zeros" bs=1M count=16 status=none
before="$(used_kib)"
out="$("$COWFS" dedup "$MNT" 2>&1)"; rc=$?
note "$out"
check_eq "cowfs dedup exits 0" 0 "$rc"
sleep 0.2
after="$(used_kib)"
note "df used: $before KiB -> $after KiB"
drop=$(( (before - after) / 1024 ))
check "df used drops by about $MIB + 16 MiB (dropped $drop MiB)" test "$drop" -ge $((MIB + 16 - 8))
check_eq "copy a unchanged" "$want" "$(sha "$MNT/a")"
check_eq "copy b unchanged" "$want" "$(sha "$MNT/b")"
check "zeros still read as zeros" cmp -n $((16 << 20)) "$MNT/zeros" /dev/zero
check "zeros is sparse now (st_blocks 0)" test "$(stat -c %b "$MNT/zeros")" -eq 0
check "report says pages were merged" grep -q " $((MIB * 256)) merged" <<<"$out"

# Writing one copy after the merge copies on write: the other keeps its bytes.
printf 'CHANGED' | dd of="$MNT/a" bs=1 seek=12345 conv=notrunc status=none
check_eq "b unchanged after writing a" "$want" "$(sha "$MNT/b")"

# A writer rewrites c's pages with new random data while dedup runs over c and d (same
# original data): whatever the interleaving, c must end as the writer left it, d as it was.
head -c $((32 << 20)) /dev/urandom >"$SRC/cd"
cat "$SRC/cd" >"$MNT/c"; cat "$SRC/cd" >"$MNT/d"
cp "$SRC/cd" "$SRC/c.model"
(
    for k in $(seq 0 200); do
        off=$(( (k * 37 % 8192) * 4096 ))
        head -c 4096 /dev/urandom >"$SRC/blk.$k"
        dd if="$SRC/blk.$k" of="$MNT/c" bs=4096 seek=$((off / 4096)) conv=notrunc status=none
        dd if="$SRC/blk.$k" of="$SRC/c.model" bs=4096 seek=$((off / 4096)) conv=notrunc status=none
    done
) &
writer=$!
for _ in 1 2 3; do "$COWFS" dedup "$MNT" "$MNT/c" "$MNT/d" >/dev/null 2>&1 || echo "dedup failed"; done
wait "$writer"
check_eq "c holds exactly what the writer wrote" "$(sha "$SRC/c.model")" "$(sha "$MNT/c")"
check_eq "d keeps its own bytes" "$(sha "$SRC/cd")" "$(sha "$MNT/d")"

# Bad input: clear errors.
out="$("$COWFS" dedup /tmp 2>&1)"; rc=$?
check "dedup outside a cowfs mount fails (exit $rc): $out" test "$rc" -ne 0
check "cowfs dedup of a missing path fails" sh -c "! '$COWFS' dedup '$MNT' '$MNT/missing' 2>/dev/null"

check "unmount" cowfs_umount "$MNT"
check "fsck clean after dedup" "$COWFS" fsck "$STORE"
finish
