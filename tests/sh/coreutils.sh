#!/usr/bin/env bash
# tests/sh/coreutils.sh - exercise a fresh cowfs mount with coreutils, tar, diff, find, attr.
#
# Usage: tests/sh/coreutils.sh        (as root for mknod/chown; env: see tests/sh/lib.sh)
# Prints one "ok - ..." / "not ok - ..." line per check and "N passed, M failed" last.

# shellcheck disable=SC2012,SC2317  # ls itself is under test; helpers are called through check
# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

STORE="$TEST_TMP/store"          # does not exist yet: `cowfs mount` creates a fresh store
MNT="$(cowfs_tmpdir mnt)" || die "mktemp failed"
SRC="$(cowfs_tmpdir src)" || die "mktemp failed"     # trees made outside the mount
OUT="$(cowfs_tmpdir out)" || die "mktemp failed"     # copies taken back out of the mount
REF="$(cowfs_tmpdir ref)" || die "mktemp failed"     # reference files for dd/truncate
ROOT=0; [ "$(id -u)" = 0 ] && ROOT=1
MiB=$((1024 * 1024))

note "binary: $COWFS"
note "store:  $STORE"
note "mount:  $MNT"
cowfs_mount "$STORE" "$MNT" || die "mount a fresh store at $MNT"
ok "mount a fresh store"

# ------------------------------------------------------------------ helpers
sha() { sha256sum <"$1" | cut -c1-64; }
same_sha() {
    local a b; a="$(sha "$1")" && b="$(sha "$2")" || return 1
    [ "$a" = "$b" ] || { echo "sha256 $1: $a"; echo "sha256 $2: $b"; return 1; }
}
# is_zero FILE OFFSET LEN: LEN bytes from OFFSET are all zero (and exist).
is_zero() {
    [ "$(stat -c %s "$1")" -ge $(($2 + $3)) ] || { echo "$1 is shorter than $(($2 + $3))"; return 1; }
    cmp -n "$3" -i "$2:0" "$1" /dev/zero
}
# listing DIR: type, size (not for dirs), mode, owner and link target of everything under DIR.
listing() {
    (cd "$1" && find . \( -type d -printf '%p %y %m %U:%G\n' \) -o -printf '%p %y %s %m %U:%G %l\n' |
        LC_ALL=C sort)
}
# mtimes DIR: nanosecond mtimes of files and directories under DIR (not symlinks).
mtimes() { (cd "$1" && find . ! -type l -printf '%p %T@\n' | LC_ALL=C sort); }
fails() { ! "$@"; }
# xattr_listed FILE GETFATTR-ARGS... -- LINE: getfattr's output for FILE contains LINE.
xattr_listed() {
    local f=$1 out; shift
    local args=()
    while [ "$1" != -- ]; do args+=("$1"); shift; done
    out="$(getfattr --absolute-names "${args[@]}" "$f")" || return 1
    grep -qxF -- "$2" <<<"$out" || { echo "'$2' not in:"; echo "$out"; return 1; }
}
not_mounted() { ! is_mounted "$1"; }
same_listing() { diff <(listing "$1") <(listing "$2"); }
same_mtimes() { diff <(mtimes "$1") <(mtimes "$2"); }
tree_diff() { diff -r --no-dereference "$1" "$2"; }

# make_tree DIR: ~200 files of varied sizes (0 B .. 3 MiB) in nested dirs, symlinks, a hard link.
make_tree() {
    local root=$1 i dir size
    local sizes=(0 1 100 511 512 4095 4096 4097 8191 65536 131072 131073 300001)
    mkdir -p "$root/empty-dir"
    for i in $(seq 0 199); do
        dir="$root/d$((i % 7))"
        [ $((i % 3)) -eq 0 ] && dir="$dir/sub$((i % 5))"
        [ $((i % 11)) -eq 0 ] && dir="$dir/deep/er/still"
        mkdir -p "$dir"
        size=${sizes[$((i % ${#sizes[@]}))]}
        head -c "$size" /dev/urandom >"$dir/f$i"
    done
    head -c $((MiB + 12345)) /dev/urandom >"$root/big1"
    head -c $((3 * MiB + 7)) /dev/urandom >"$root/d1/big2"
    printf 'spaces\n' >"$root/with space.txt"
    printf 'utf8\n' >"$root/ünïcødé.txt"
    printf 'private\n' >"$root/d0/private" && chmod 600 "$root/d0/private"
    printf '#!/bin/sh\n' >"$root/d1/exec" && chmod 755 "$root/d1/exec"
    chmod 700 "$root/d2"
    printf 'linked\n' >"$root/d3/linked"
    ln -s d3/linked "$root/link-to-file"
    ln -s ../d1 "$root/d0/link-to-dir"
    ln -s does/not/exist "$root/dangling"
    ln "$root/d3/linked" "$root/d3/hardlink"
}

# ------------------------------------------------------------------ cp
head -c $((5 * MiB + 4321)) /dev/urandom >"$SRC/random.bin"
check "cp: copy 5 MiB of random data into the mount" cp "$SRC/random.bin" "$MNT/random.bin"
check "cp: sha256 of the copy matches" same_sha "$SRC/random.bin" "$MNT/random.bin"
check "cp: copy it back out" cp "$MNT/random.bin" "$OUT/random.bin"
check "cp: sha256 of the copy back out matches" same_sha "$SRC/random.bin" "$OUT/random.bin"
check_eq "stat: size of the copy" "$((5 * MiB + 4321))" "$(stat -c %s "$MNT/random.bin")"

printf 'hello\n' >"$MNT/text"
printf 'world\n' >>"$MNT/text"
check_eq "shell redirect: write then append" "$(printf 'hello\nworld')" "$(cat "$MNT/text")"

# ------------------------------------------------------------------ cp -a of a tree
make_tree "$SRC/tree"
check "cp -a: copy a ~200-file tree into the mount" cp -a "$SRC/tree" "$MNT/cpa"
check "cp -a: diff -r source vs copy" tree_diff "$SRC/tree" "$MNT/cpa"
check "cp -a: types, sizes, modes, owners, link targets preserved" same_listing "$SRC/tree" "$MNT/cpa"
check "cp -a: mtimes preserved (ns)" same_mtimes "$SRC/tree" "$MNT/cpa"
check_eq "cp -a: hard link inside the tree preserved" \
    "$(stat -c '%i %h' "$MNT/cpa/d3/linked")" "$(stat -c '%i %h' "$MNT/cpa/d3/hardlink")"
check_eq "find: number of files in the copy" \
    "$(find "$SRC/tree" -type f | wc -l)" "$(find "$MNT/cpa" -type f | wc -l)"
check_eq "find: number of directories in the copy" \
    "$(find "$SRC/tree" -type d | wc -l)" "$(find "$MNT/cpa" -type d | wc -l)"
check_eq "find: number of symlinks in the copy" "3" "$(find "$MNT/cpa" -type l | wc -l)"

# ------------------------------------------------------------------ diff -r of a plain cp -r
check "cp -r: copy the tree again" cp -r "$SRC/tree" "$MNT/cpr"
check "diff -r: source tree vs its copy in the mount" tree_diff "$SRC/tree" "$MNT/cpr"
check "diff -r: copy in the mount vs source tree" tree_diff "$MNT/cpr" "$SRC/tree"

# ------------------------------------------------------------------ tar round trip
# tar_copy FROM TO: tar up FROM and extract it into TO (created).
tar_copy() { mkdir -p "$2" && tar -C "$1" -cf - . | tar -C "$2" -xpf -; }
check "tar: extract the tree from outside into the mount" tar_copy "$SRC/tree" "$MNT/tar"
check "tar: diff -r source vs mount" tree_diff "$SRC/tree" "$MNT/tar"
check "tar: diff -r mount vs source" tree_diff "$MNT/tar" "$SRC/tree"
check "tar: extract from the mount back out" tar_copy "$MNT/tar" "$OUT/tar"
check "tar: diff -r source vs round trip" tree_diff "$SRC/tree" "$OUT/tar"
check "tar: diff -r round trip vs source" tree_diff "$OUT/tar" "$SRC/tree"
check "tar: modes, owners, link targets survive the round trip" same_listing "$SRC/tree" "$OUT/tar"

# ------------------------------------------------------------------ mv
mkdir -p "$MNT/mv/a" "$MNT/mv/b"
printf 'one\n' >"$MNT/mv/a/one"
ino=$(stat -c %i "$MNT/mv/a/one")
check "mv: rename within a directory" mv "$MNT/mv/a/one" "$MNT/mv/a/uno"
check "mv: old name is gone" test ! -e "$MNT/mv/a/one"
check_eq "mv: new name has the content" "one" "$(cat "$MNT/mv/a/uno")"
check_eq "mv: inode number kept" "$ino" "$(stat -c %i "$MNT/mv/a/uno")"
check "mv: move across directories" mv "$MNT/mv/a/uno" "$MNT/mv/b/uno"
check_eq "mv: moved file readable in the new dir" "one" "$(cat "$MNT/mv/b/uno")"
check_eq "mv: source dir is empty" "" "$(ls -A "$MNT/mv/a")"
printf 'old\n' >"$MNT/mv/b/target"
printf 'new\n' >"$MNT/mv/a/src"
check "mv: overwrite an existing file" mv -f "$MNT/mv/a/src" "$MNT/mv/b/target"
check_eq "mv: overwritten file has the new content" "new" "$(cat "$MNT/mv/b/target")"
check "mv: overwriting source is gone" test ! -e "$MNT/mv/a/src"
check_eq "mv: target dir lists exactly the two files" "target uno" "$(ls "$MNT/mv/b" | tr '\n' ' ' | sed 's/ $//')"
mkdir -p "$MNT/mv/a/dir/inner" && printf 'deep\n' >"$MNT/mv/a/dir/inner/f"
check "mv: move a directory across directories" mv "$MNT/mv/a/dir" "$MNT/mv/b/dir"
check_eq "mv: moved directory's contents" "deep" "$(cat "$MNT/mv/b/dir/inner/f")"
check "mv: moved directory's .. points to the new parent" \
    test "$(stat -c %i "$MNT/mv/b/dir/..")" = "$(stat -c %i "$MNT/mv/b")"

# ------------------------------------------------------------------ ln (hard)
printf 'shared\n' >"$MNT/hard1"
check "ln: make a hard link" ln "$MNT/hard1" "$MNT/hard2"
check_eq "ln: same inode number" "$(stat -c %i "$MNT/hard1")" "$(stat -c %i "$MNT/hard2")"
check_eq "ln: link count 2 (stat -c %h)" "2" "$(stat -c %h "$MNT/hard1")"
printf 'more\n' >>"$MNT/hard2"
check_eq "ln: a write through one name shows through the other" "$(printf 'shared\nmore')" "$(cat "$MNT/hard1")"
mkdir -p "$MNT/hlinkdir" && ln "$MNT/hard1" "$MNT/hlinkdir/hard3"
check_eq "ln: link count 3 after a link in another dir" "3" "$(stat -c %h "$MNT/hard2")"
rm -f "$MNT/hard1"
check_eq "ln: link count 2 after removing one name" "2" "$(stat -c %h "$MNT/hard2")"
check_eq "ln: content still there" "$(printf 'shared\nmore')" "$(cat "$MNT/hlinkdir/hard3")"
ln "$MNT/hard2" "$MNT/hard1"   # keep a 2-link file for the persistence checks
rm -f "$MNT/hlinkdir/hard3"

# ------------------------------------------------------------------ ln -s
check "ln -s: make a symlink" ln -s "hard1" "$MNT/sym"
check_eq "ln -s: readlink" "hard1" "$(readlink "$MNT/sym")"
check_eq "ln -s: stat -c %F" "symbolic link" "$(stat -c %F "$MNT/sym")"
check_eq "ln -s: read through the symlink" "$(cat "$MNT/hard1")" "$(cat "$MNT/sym")"
long_target="$(printf 'x%.0s' $(seq 1 1000))/$(printf 'y%.0s' $(seq 1 1000))"
check "ln -s: 2001-byte target" ln -s "$long_target" "$MNT/longsym"
check_eq "ln -s: readlink of the long target" "$long_target" "$(readlink "$MNT/longsym")"
check "ln -s: symlink to a directory" ln -s cpa/d1 "$MNT/symdir"
check_eq "ln -s: list through a directory symlink" "$(ls "$MNT/cpa/d1")" "$(ls "$MNT/symdir/")"

# ------------------------------------------------------------------ dd
# The same operations on a reference file outside the mount and on one inside; they must agree.
head -c 20000 /dev/urandom >"$REF/dd"
cp "$REF/dd" "$MNT/dd"
head -c 5000 /dev/urandom >"$REF/chunk"
head -c $((2 * MiB + 3)) /dev/urandom >"$REF/chunk2"
for f in "$REF/dd" "$MNT/dd"; do
    printf 'XYZ' | dd of="$f" bs=1 seek=100 conv=notrunc status=none
    dd if="$REF/chunk" of="$f" bs=1000 seek=7 conv=notrunc status=none         # unaligned, inside
    dd if="$REF/chunk" of="$f" bs=4096 seek=4 conv=notrunc status=none         # page aligned, across EOF
    dd if="$REF/chunk2" of="$f" bs=4096 seek=300 conv=notrunc status=none      # far beyond EOF: a hole
done
check_eq "dd: conv=notrunc writes at offsets keep the size" "$(stat -c %s "$REF/dd")" "$(stat -c %s "$MNT/dd")"
check "dd: content equals the reference (cmp)" cmp "$REF/dd" "$MNT/dd"
check_eq "dd: read back 3 bytes at offset 100" "XYZ" "$(dd if="$MNT/dd" bs=1 skip=100 count=3 status=none)"
check "dd: the hole before the far write reads as zeros" is_zero "$MNT/dd" $((4 * 4096 + 5000)) $((300 * 4096 - 4 * 4096 - 5000))
check "dd: read back the far write" cmp <(dd if="$MNT/dd" bs=4096 skip=300 status=none) "$REF/chunk2"
check "dd: read with odd block size equals the reference" \
    cmp <(dd if="$MNT/dd" bs=7777 status=none) "$REF/dd"

# ------------------------------------------------------------------ truncate
head -c 20000 /dev/urandom >"$REF/tr"
cp "$REF/tr" "$MNT/tr"
check "truncate: shrink to 5000" truncate -s 5000 "$MNT/tr"
check_eq "truncate: size after shrink" "5000" "$(stat -c %s "$MNT/tr")"
check "truncate: the kept 5000 bytes are unchanged" cmp -n 5000 "$REF/tr" "$MNT/tr"
check "truncate: grow to 70000" truncate -s 70000 "$MNT/tr"
check_eq "truncate: size after grow" "70000" "$(stat -c %s "$MNT/tr")"
check "truncate: grown part reads as zeros (no stale data past the old end)" is_zero "$MNT/tr" 5000 65000
check "truncate: first 5000 bytes still unchanged" cmp -n 5000 "$REF/tr" "$MNT/tr"
check "truncate: to 0" truncate -s 0 "$MNT/tr"
check_eq "truncate: size 0" "0" "$(stat -c %s "$MNT/tr")"
check "truncate: grow an empty file to 3 MiB" truncate -s 3M "$MNT/tr"
check "truncate: 3 MiB of zeros" is_zero "$MNT/tr" 0 $((3 * MiB))

# ------------------------------------------------------------------ stat, chmod, chown, touch
printf 'meta\n' >"$MNT/meta"
check_eq "stat: size" "5" "$(stat -c %s "$MNT/meta")"
check_eq "stat: regular file type" "regular file" "$(stat -c %F "$MNT/meta")"
check "chmod 640" chmod 640 "$MNT/meta"
check_eq "stat: mode after chmod 640" "640 -rw-r-----" "$(stat -c '%a %A' "$MNT/meta")"
check "chmod 1777 on a directory" chmod 1777 "$MNT/mv"
check_eq "stat: directory mode after chmod 1777" "1777 drwxrwxrwt" "$(stat -c '%a %A' "$MNT/mv")"
check "touch -d: set mtime" touch -d '2001-02-03 04:05:06 UTC' "$MNT/meta"
check_eq "stat: mtime after touch -d" "$(date -d '2001-02-03 04:05:06 UTC' +%s)" "$(stat -c %Y "$MNT/meta")"
if [ "$ROOT" = 1 ]; then
    check "chown nobody" chown nobody "$MNT/meta"
    check_eq "stat: owner after chown nobody" "nobody" "$(stat -c %U "$MNT/meta")"
    nogroup="$(id -gn nobody)"
    check "chown nobody:$nogroup" chown "nobody:$nogroup" "$MNT/meta"
    check_eq "stat: group after chgrp" "$nogroup" "$(stat -c %G "$MNT/meta")"
    check_eq "stat: mode unchanged by chown of a non-executable" "640" "$(stat -c %a "$MNT/meta")"
else
    skip "chown nobody" "not root"
fi
rm -f "$MNT/new-by-root"; : >"$MNT/new-by-root"
check_eq "stat: a new file belongs to the caller" "$(id -u):$(id -g)" "$(stat -c %u:%g "$MNT/new-by-root")"

# ------------------------------------------------------------------ mkfifo / mknod
check "mkfifo" mkfifo "$MNT/fifo"
check_eq "stat -c %F of a fifo" "fifo" "$(stat -c %F "$MNT/fifo")"
# shellcheck disable=SC2016
check_eq "fifo: data passes through" "through the pipe" \
    "$(timeout 10 bash -c 'printf "through the pipe" >"$1" & cat "$1"; wait' _ "$MNT/fifo")"
if [ "$ROOT" = 1 ]; then
    check "mknod c 1 3" mknod "$MNT/chardev" c 1 3
    check_eq "stat -c %F of a char device" "character special file" "$(stat -c %F "$MNT/chardev")"
    check_eq "stat: device numbers (hex major minor)" "1 3" "$(stat -c '%t %T' "$MNT/chardev")"
    check "mknod b 7 0" mknod "$MNT/blockdev" b 7 0
    check_eq "stat -c %F of a block device" "block special file" "$(stat -c %F "$MNT/blockdev")"
else
    skip "mknod of device nodes" "not root"
fi

# ------------------------------------------------------------------ xattrs
if command -v setfattr >/dev/null && command -v getfattr >/dev/null; then
    printf 'x\n' >"$MNT/xattr"
    check "setfattr -n user.color" setfattr -n user.color -v blue "$MNT/xattr"
    check_eq "getfattr --only-values" "blue" "$(getfattr --absolute-names --only-values -n user.color "$MNT/xattr" 2>&1)"
    check "setfattr: binary value" setfattr -n user.bin -v 0x00ff10 "$MNT/xattr"
    check "getfattr -e hex: binary value" xattr_listed "$MNT/xattr" -e hex -n user.bin -- "user.bin=0x00ff10"
    check "getfattr -d lists user.color" xattr_listed "$MNT/xattr" -d -- 'user.color="blue"'
    check "getfattr -d lists user.bin" xattr_listed "$MNT/xattr" -d -- 'user.bin=0sAP8Q'
    check "setfattr: replace a value" setfattr -n user.color -v green "$MNT/xattr"
    check_eq "getfattr: replaced value" "green" "$(getfattr --absolute-names --only-values -n user.color "$MNT/xattr" 2>&1)"
    check "setfattr -x removes it" setfattr -x user.color "$MNT/xattr"
    check "getfattr of a removed name fails" fails getfattr --absolute-names -n user.color "$MNT/xattr"
    check "setfattr on a directory" setfattr -n user.dir -v yes "$MNT/mv"
    check_eq "getfattr on a directory" "yes" "$(getfattr --absolute-names --only-values -n user.dir "$MNT/mv" 2>&1)"
    HAVE_XATTR=1
else
    skip "xattrs with setfattr/getfattr" "attr package not installed"
    HAVE_XATTR=0
fi

# ------------------------------------------------------------------ sparse file
check "truncate -s 100M" truncate -s 100M "$MNT/sparse"
check "dd 1 MiB into the middle (conv=notrunc)" \
    dd if="$SRC/random.bin" of="$MNT/sparse" bs=1M count=1 seek=50 conv=notrunc status=none
sync "$MNT/sparse"
check_eq "sparse: size is still 100 MiB" "$((100 * MiB))" "$(stat -c %s "$MNT/sparse")"
alloc=$(($(stat -c %b "$MNT/sparse") * 512))
check "sparse: allocated bytes (stat %b * 512 = $alloc) between 1 MiB and 1.2 MiB" \
    test "$alloc" -ge "$MiB" -a "$alloc" -le $((MiB * 12 / 10))
check "sparse: the written MiB reads back" cmp -n "$MiB" -i "$((50 * MiB)):0" "$MNT/sparse" "$SRC/random.bin"
check "sparse: the holes read as zeros" is_zero "$MNT/sparse" 0 $((50 * MiB))
check "sparse: the tail hole reads as zeros" is_zero "$MNT/sparse" $((51 * MiB)) $((49 * MiB))

# ------------------------------------------------------------------ rm -rf of 1000 files
mkdir -p "$MNT/many/sub"
touch "$MNT/many/f"{1..900}
for i in $(seq 1 100); do printf '%s\n' "$i" >"$MNT/many/sub/g$i"; done
check_eq "1000 files created (find -type f | wc -l)" "1000" "$(find "$MNT/many" -type f | wc -l)"
check_eq "ls -A lists 901 entries" "901" "$(ls -A "$MNT/many" | wc -l)"
check "rm -rf of the 1000-file directory" rm -rf "$MNT/many"
check "rm -rf: the directory is gone" test ! -e "$MNT/many"
check "rm -rf: no entry left in the parent" fails grep -qx many <(ls -A "$MNT")

# ------------------------------------------------------------------ persistence across remount
check "dd 64 MiB from /dev/urandom" \
    dd if=/dev/urandom of="$MNT/big64" bs=1M count=64 iflag=fullblock status=none
sum64="$(sha "$MNT/big64")"
sum_rand="$(sha "$SRC/random.bin")"
ino_hard="$(stat -c %i "$MNT/hard1")"

# ------------------------------------------------------------------ df (with 64 MiB in the store)
read -r df_size df_used df_avail df_target < <(df -B1 --output=size,used,avail,target "$MNT" | tail -n 1)
note "df: size=$df_size used=$df_used avail=$df_avail target=$df_target"
check_eq "df: reports the mount point" "$MNT" "$df_target"
check "df: size > 0" test "${df_size:-0}" -gt 0
check "df: used <= size" test "${df_used:-0}" -le "${df_size:-0}"
check "df: avail <= size" test "${df_avail:-0}" -le "${df_size:-0}"
check "df: used >= 64 MiB while a 64 MiB file exists" test "${df_used:-0}" -ge $((64 * MiB))

check "cowfs_umount" cowfs_umount "$MNT"
check "not mounted after umount" not_mounted "$MNT"
cowfs_mount "$STORE" "$MNT" || die "remount the same store at $MNT"
ok "remount the same store"
check_eq "persistence: sha256 of the 64 MiB file" "$sum64" "$(sha "$MNT/big64")"
check_eq "persistence: sha256 of the 5 MiB file" "$sum_rand" "$(sha "$MNT/random.bin")"
check "persistence: diff -r of the tar tree" tree_diff "$SRC/tree" "$MNT/tar"
check "persistence: modes, owners, link targets of the tree" same_listing "$SRC/tree" "$MNT/tar"
check "persistence: mtimes of the cp -a tree" same_mtimes "$SRC/tree" "$MNT/cpa"
check "persistence: dd file" cmp "$REF/dd" "$MNT/dd"
check_eq "persistence: hard link inode and count" "$ino_hard 2" "$(stat -c '%i %h' "$MNT/hard2")"
check_eq "persistence: symlink" "hard1" "$(readlink "$MNT/sym")"
check_eq "persistence: mode" "640" "$(stat -c %a "$MNT/meta")"
check_eq "persistence: mtime" "$(date -d '2001-02-03 04:05:06 UTC' +%s)" "$(stat -c %Y "$MNT/meta")"
[ "$ROOT" = 1 ] && check_eq "persistence: owner" "nobody" "$(stat -c %U "$MNT/meta")"
check_eq "persistence: fifo type" "fifo" "$(stat -c %F "$MNT/fifo")"
[ "$ROOT" = 1 ] && check_eq "persistence: char device" "character special file 1 3" \
    "$(stat -c '%F %t %T' "$MNT/chardev")"
[ "$HAVE_XATTR" = 1 ] && check_eq "persistence: xattr" "0x00ff10" \
    "$(getfattr --absolute-names -e hex --only-values -n user.bin "$MNT/xattr" 2>&1 | od -An -tx1 | tr -d ' \n' | sed 's/^/0x/')"
check_eq "persistence: sparse file size" "$((100 * MiB))" "$(stat -c %s "$MNT/sparse")"
check "persistence: sparse file data" cmp -n "$MiB" -i "$((50 * MiB)):0" "$MNT/sparse" "$SRC/random.bin"
check "persistence: removed directory stays removed" test ! -e "$MNT/many"
check "daemon alive at the end" cowfs_alive "$MNT"
check "final cowfs_umount" cowfs_umount "$MNT"

finish
