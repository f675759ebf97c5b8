#!/usr/bin/env bash
# tests/sh/system_mount.sh - cowfs where the system expects a filesystem (issue 17):
# `./mount.sh --install`, `mount -t fuse.cowfs` with -o options, an fstab line through
# `mount -T FILE`, the mount table and `df -T`, `umount` leaving no daemon and the store free
# for the next mount at once, `cowfs sync` surviving kill -9, --version, completions, a
# missing mount point.
#
# Needs root (mount(8) runs /sbin/mount.fuse.cowfs). The install goes into a prefix under
# TEST_TMP; only the helper link /sbin/mount.fuse.cowfs is put in the system, and whatever
# was there before is put back at exit. /etc/fstab is never touched (mount -T reads a
# private file) and is checked to be unchanged.

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

[ "$(id -u)" = 0 ] || { skip "system mounts" "needs root"; finish; }
command -v mount >/dev/null || die "mount(8) is missing"

HELPER=/sbin/mount.fuse.cowfs
PREFIX_DIR="$TEST_TMP/prefix"
SAVED_HELPER="$TEST_TMP/saved-helper"
FSTAB_SUM="$(sha256sum /etc/fstab 2>/dev/null || echo none)"

# Put back whatever /sbin/mount.fuse.cowfs was before this test; runs before lib.sh's cleanup
# (on every exit, pass or fail).
restore_helper() {
    if [ -e "$SAVED_HELPER" ] || [ -L "$SAVED_HELPER" ]; then
        mv -f -- "$SAVED_HELPER" "$HELPER"
    elif [ -L "$HELPER" ] && [ "$(readlink "$HELPER")" = "$PREFIX_DIR/bin/cowfs" ]; then
        rm -f -- "$HELPER"
    fi
}
eval "$(declare -f _cleanup | sed '1s/_cleanup/_lib_cleanup/')"
_cleanup() { restore_helper; _lib_cleanup; }

# mounted_type MNT / mounted_source MNT: the fstype and the source of MNT in /proc/mounts.
mounted_type() { _fstype "$1"; }
mounted_source() { awk -v p="$1" '$2 == p { s=$1 } END { print s }' /proc/mounts; }
# serving_pid MNT: the daemon serving MNT.
serving_pid() { daemon_pids "$1" | head -n 1; }

# ------------------------------------------------------------------ install
STAGE="$TEST_TMP/stage"
out="$(DESTDIR="$STAGE" "$REPO/mount.sh" --install 2>&1)"
rc=$?
staged=1
for f in usr/local/bin/cowfs usr/local/share/bash-completion/completions/cowfs \
    usr/local/share/zsh/site-functions/_cowfs usr/local/share/fish/vendor_completions.d/cowfs.fish \
    usr/local/share/man/man1/cowfs.1 usr/local/share/man/man1/cowfs-mount.1; do
    [ -s "$STAGE/$f" ] || { staged=0; note "missing in the staged install: $f"; }
done
[ "$(readlink "$STAGE/sbin/mount.fuse.cowfs")" = /usr/local/bin/cowfs ] || staged=0
if [ "$rc" = 0 ] && [ "$staged" = 1 ] && grep -q "installed $STAGE/usr/local/bin/cowfs" <<<"$out"; then
    ok "mount.sh --install (DESTDIR) puts binary, helper, completions and man pages in place and says where"
else
    not_ok "mount.sh --install (DESTDIR)" "exit $rc" "$out"
fi

out="$(DESTDIR="$STAGE" "$REPO/mount.sh" --uninstall 2>&1)"
check_eq "mount.sh --uninstall (DESTDIR) removes every file it installed ($(wc -l <<<"$out") lines)" \
    "" "$(find "$STAGE" ! -type d)"

if [ -e "$HELPER" ] || [ -L "$HELPER" ]; then mv -- "$HELPER" "$SAVED_HELPER"; fi
out="$(PREFIX="$PREFIX_DIR" SBINDIR=/sbin "$REPO/mount.sh" --install 2>&1)"
if [ $? = 0 ] && [ -x "$PREFIX_DIR/bin/cowfs" ] && [ -L "$HELPER" ]; then
    ok "mount.sh --install with the helper in /sbin"
else
    not_ok "mount.sh --install with the helper in /sbin" "$out"
    finish
fi
COWFS="$PREFIX_DIR/bin/cowfs"   # the installed binary from here on (cleanup uses it too)

# ------------------------------------------------------------------ mount -t
STORE="$TEST_TMP/store"
MNT="$(cowfs_tmpdir mnt)"
_MOUNTED+=("$MNT")
_STORE_OF[$MNT]=$STORE
out="$(mount -t fuse.cowfs "$STORE" "$MNT" -o allow_other,threads=2,commit_interval=3600 2>&1)"
check_eq "mount -t fuse.cowfs STORE MNT -o allow_other,threads=2,commit_interval=3600 (${out:-no output})" \
    fuse.cowfs "$(mounted_type "$MNT")"
check_eq "/proc/mounts: the store is the source" "$STORE" "$(mounted_source "$MNT")"
check_eq "df -T says fuse.cowfs" fuse.cowfs "$(df --output=fstype "$MNT" 2>/dev/null | tail -n 1 | tr -d ' ')"
check "findmnt -t fuse.cowfs finds it" findmnt -t fuse.cowfs "$MNT"
pid="$(serving_pid "$MNT")"
check_eq "the daemon runs with threads=2" yes \
    "$(tr '\0' ' ' <"/proc/${pid:-0}/cmdline" | grep -q -- "--threads 2 " && echo yes)"

# ------------------------------------------------------------------ cowfs sync, kill -9
head -c 3000000 /dev/urandom >"$TEST_TMP/data"
cp "$TEST_TMP/data" "$MNT/synced"
mkdir "$MNT/dir" && echo small >"$MNT/dir/small"
check "cowfs sync MNT" "$COWFS" sync "$MNT"
echo "after the sync" >"$MNT/unsynced"
pid="$(serving_pid "$MNT")"
kill -9 "$pid"
while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
umount -l "$MNT"
out="$(mount -t fuse.cowfs "$STORE" "$MNT" 2>&1)" || not_ok "remount after kill -9" "$out"
check "kill -9 after cowfs sync: the file is there byte for byte" cmp "$TEST_TMP/data" "$MNT/synced"
check_eq "kill -9 after cowfs sync: a new directory's file too" small "$(cat "$MNT/dir/small" 2>&1)"
# Control: what was written after the sync waited for a commit (interval 3600 s) and is gone,
# so the sync, not a background commit, is what kept the rest.
if [ -e "$MNT/unsynced" ]; then note "control: the file written after the sync survived too"
else note "control: the file written after the sync is gone, as expected"; fi

# ------------------------------------------------------------------ umount, at once mount again
echo "before umount" >"$MNT/kept"
pid="$(serving_pid "$MNT")"
check "umount MNT" umount "$MNT"
out="$(mount -t fuse.cowfs "$STORE" "$MNT" 2>&1)"
check_eq "mount -t right after umount returns: the store is free (${out:-no output})" \
    fuse.cowfs "$(mounted_type "$MNT")"
check_eq "the data written before umount is there" "before umount" "$(cat "$MNT/kept" 2>&1)"
# gone_within PID SECONDS: 0 once PID has exited (a zombie counts as exited).
gone_within() {
    local i
    for i in $(seq 1 $(($2 * 10))); do
        [ -e "/proc/$1" ] || return 0
        grep -q ') Z ' "/proc/$1/stat" 2>/dev/null && return 0
        sleep 0.1
    done
    return 1
}
check "the old daemon has exited (within 10 s)" gone_within "${pid:-0}" 10
pid="$(serving_pid "$MNT")"
check "umount MNT again" umount "$MNT"
gone=0
gone_within "${pid:-0}" 10 && gone=1
check_eq "umount leaves no daemon (within 10 s)" "1 " "$gone $(daemon_pids "$MNT" | tr '\n' ' ')"

# ------------------------------------------------------------------ fstab
FSTAB="$TEST_TMP/fstab"
MNT2="$(cowfs_tmpdir mnt-fstab)"
_MOUNTED+=("$MNT2")
_STORE_OF[$MNT2]=$STORE
printf '# private fstab of this test\n%s %s fuse.cowfs defaults,allow_other,nofail,_netdev,x-systemd.requires=network-online.target,commit_interval=5 0 0\n' \
    "$STORE" "$MNT2" >"$FSTAB"
out="$(mount -T "$FSTAB" "$MNT2" 2>&1)"
check_eq "mount -T FSTAB MNT mounts by the fstab line (${out:-no output})" fuse.cowfs "$(mounted_type "$MNT2")"
check "the fstab mount shows the data written before" cmp "$TEST_TMP/data" "$MNT2/synced"
check "umount of the fstab mount" umount "$MNT2"
_wait_daemon_gone "$MNT2" 10

# ------------------------------------------------------------------ options
out="$(mount -t fuse.cowfs "$STORE" "$MNT" -o defaults,bogus_opt 2>&1)"
rc=$?
if [ "$rc" != 0 ] && grep -q "bogus_opt" <<<"$out" && ! is_mounted "$MNT"; then
    ok "an unknown -o option fails and is named ($out)"
else
    not_ok "an unknown -o option fails and is named" "exit $rc" "$out"
fi
out="$(mount -t fuse.cowfs "$STORE" "$MNT" -o ro,private 2>&1)"
check_eq "mount -o ro,private (${out:-no output})" fuse.cowfs "$(mounted_type "$MNT")"
check "the ro mount is read-only in the mount table" \
    bash -c "findmnt -n -o OPTIONS '$MNT' | grep -qE '(^|,)ro(,|$)'"
out="$(touch "$MNT/new" 2>&1)"
if grep -q "Read-only file system" <<<"$out"; then ok "a write on the ro mount answers EROFS"
else not_ok "a write on the ro mount answers EROFS" "$out"; fi
out="$("$COWFS" snapshot create "$MNT" s1 2>&1)"
if [ $? != 0 ] && grep -qi "read-only" <<<"$out"; then ok "a snapshot of the ro mount is refused (EROFS)"
else not_ok "a snapshot of the ro mount is refused (EROFS)" "$out"; fi
check_eq "the ro mount reads the data" "before umount" "$(cat "$MNT/kept" 2>&1)"
check "umount of the ro mount" umount "$MNT"
_wait_daemon_gone "$MNT" 10

# ------------------------------------------------------------------ the command line
out="$("$COWFS" --version)"
if [[ "$out" =~ ^cowfs\ [0-9]+\.[0-9]+\.[0-9]+ ]]; then ok "cowfs --version: $out"
else not_ok "cowfs --version" "$out"; fi
# shellcheck disable=SC2016
out="$(bash -c 'source <("$1" completions bash) && complete -p cowfs >/dev/null &&
    COMP_WORDS=(cowfs sn); COMP_CWORD=1; COMP_LINE="cowfs sn"; COMP_POINT=8; _cowfs cowfs sn cowfs &&
    printf "%s\n" "${COMPREPLY[@]}"' _ "$COWFS" 2>&1)"
check_eq "cowfs completions bash: completes 'cowfs sn' to snapshot" snapshot "$out"
for sh in zsh fish; do
    check "cowfs completions $sh prints a script" bash -c "'$COWFS' completions $sh | grep -q snapshot"
done
out="$("$COWFS" mount "$STORE" "$TEST_TMP/no/such/dir" 2>&1)"
rc=$?
check_eq "cowfs mount on a missing mount point: exit 1 and says so ($out)" \
    "1 yes" "$rc $(grep -q "mount point $TEST_TMP/no/such/dir does not exist" <<<"$out" && echo yes)"
MNT3="$TEST_TMP/made/by/mkdir"
_MOUNTED+=("$MNT3")
out="$("$COWFS" mount --mkdir "$STORE" "$MNT3" 2>&1)"
check_eq "cowfs mount --mkdir creates the mount point (${out})" fuse.cowfs "$(mounted_type "$MNT3")"
check "cowfs umount" "$COWFS" umount "$MNT3"

check_eq "/etc/fstab is unchanged" "$FSTAB_SUM" "$(sha256sum /etc/fstab 2>/dev/null || echo none)"
finish
