#!/usr/bin/env bash
# bench/trees.sh - real trees, side by side: the Linux 6.1 source tree (Debian's
# linux-source-6.1), its core (fs kernel include net mm lib arch/x86) and 100,000 files of
# 100 bytes, on ext4 (a directory in BENCH_DIR), libfuse's passthrough_ll over ext4, btrfs on
# a loop file and cowfs; extract, find, du, grep, tar read, rm, small-file create and space,
# grep inside a fresh clone; touch latency during `cowfs du` / `clone -r`; host space back
# after deleting a 4 GiB file.
#
# Usage (as root):  bench/trees.sh
# Environment:
#   COWFS_BIN     cowfs binary (default REPO/target/release/cowfs; never built by this script)
#   BENCH_DIR     the disk: every directory, the btrfs image and the cowfs store (default /var/tmp)
#   BENCH_CACHE   where the unpacked tars are kept between runs (default BENCH_DIR/cowfs-bench)
#   BENCH_RUNS    rounds, interleaved; medians with the spread min-max (default 2)
#   BENCH_FS      filesystems, any of "ext4 pt btrfs cowfs" (default all four; passthrough_ll
#                 runs only on the core tree and the 15,000-file set: it keeps one fd per inode)
#   BENCH_ONLY    sets, any of "full core small touch space" (default all)
#   BENCH_PROFILE 1: count FUSE round trips per opcode (perf, fuse:fuse_request_send) on the
#                 core tree and 15,000 small files, on passthrough_ll and cowfs; no timings
#   BENCH_LOG     if set, the cowfs daemon log is copied there at the end
# Installs linux-source-6.1, btrfs-progs, fuse3, libfuse3-dev, gcc, pkg-config, python3 (and
# linux-perf for BENCH_PROFILE) with apt-get when missing. Unmounts everything, detaches the
# loop device, stops the daemons and removes its work directory at exit, also on failure or
# Ctrl-C. A benchmark, not a test: the checks print PASS/FAIL, the exit code is 0 (non-zero
# only if the set-up fails).

set -u
set -o pipefail
export LC_ALL=C

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
COWFS_BIN="${COWFS_BIN:-$REPO/target/release/cowfs}"
BENCH_DIR="${BENCH_DIR:-/var/tmp}"
RUNS="${BENCH_RUNS:-2}"
FS_LIST="${BENCH_FS:-ext4 pt btrfs cowfs}"
ONLY="${BENCH_ONLY:-full core small touch space}"
PROFILE="${BENCH_PROFILE:-0}"

KIB=1024
MIB=$((1024 * KIB))
GIB=$((1024 * MIB))
ALL_FS="ext4 pt btrfs cowfs"
ALL_SETS="full core small touch space"
SMALL_N=100000   # small files ...
SMALL_DIRS=100   # ... in this many directories
SMALL_SIZE=100   # ... of this many bytes
SMALL_PT_N=15000 # the set passthrough_ll can hold
NOT_THERE=zzqqxx_not_there
TOUCH_EVERY=0.02 # seconds between touches in the latency job
BIG_FILE=$((4 * GIB))

die() { echo "bench: $*" >&2; exit 1; }
note() { echo "bench: $*"; }

case "${1:-}" in -h | --help) sed -n '2,26p' "$0"; exit 0 ;; esac
[ $# -eq 0 ] || die "no arguments expected (settings come from the environment; see --help)"
[ "$(id -u)" = 0 ] || die "run as root (mounts, loop device, drop_caches)"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer, not '$RUNS'"
for f in $FS_LIST; do [[ " $ALL_FS " == *" $f "* ]] || die "BENCH_FS: unknown '$f' (any of: $ALL_FS)"; done
for j in $ONLY; do [[ " $ALL_SETS " == *" $j "* ]] || die "BENCH_ONLY: unknown '$j' (any of: $ALL_SETS)"; done
[ -n "${FS_LIST// /}" ] || die "BENCH_FS is empty"
[ -n "${ONLY// /}" ] || die "BENCH_ONLY is empty"
[[ "$PROFILE" =~ ^[01]$ ]] || die "BENCH_PROFILE must be 0 or 1"
FSES=()
for f in $ALL_FS; do [[ " $FS_LIST " == *" $f "* ]] && FSES+=("$f"); done # fixed order
want() { [[ " $ONLY " == *" $1 "* ]]; }
has_fs() { [[ " ${FSES[*]} " == *" $1 "* ]]; }
human() { numfmt --to=iec-i --suffix=B -- "$1"; }

# ------------------------------------------------------------------ prerequisites
SRC_TXZ=/usr/src/linux-source-6.1.tar.xz
PT_SRC_DIR=/usr/share/doc/libfuse3-dev/examples
missing=()
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
command -v xz >/dev/null 2>&1 || missing+=(xz-utils)
has_fs btrfs && ! command -v mkfs.btrfs >/dev/null 2>&1 && missing+=(btrfs-progs)
[ "$PROFILE" = 1 ] && ! command -v perf >/dev/null 2>&1 && missing+=(linux-perf)
if has_fs pt; then
    { [ -f "$PT_SRC_DIR/passthrough_ll.c" ] && pkg-config --exists fuse3 2>/dev/null; } ||
        missing+=(libfuse3-dev)
fi
[ -f "$SRC_TXZ" ] || missing+=(linux-source-6.1)
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install them"
    note "installing ${missing[*]}..."
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
        >/dev/null 2>&1 || die "apt-get install ${missing[*]} failed"
fi
[ -f "$SRC_TXZ" ] || die "no $SRC_TXZ (package linux-source-6.1)"
if has_fs pt && { [ ! -f "$PT_SRC_DIR/passthrough_ll.c" ] || [ ! -f "$PT_SRC_DIR/passthrough_helpers.h" ]; }; then
    die "no $PT_SRC_DIR/passthrough_ll.c (libfuse3-dev examples)"
fi
if has_fs btrfs; then
    grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null ||
        die "this kernel has no btrfs (not in /proc/filesystems)"
fi
if has_fs cowfs; then
    if [ "$COWFS_BIN" = "$REPO/target/release/cowfs" ]; then # a build may be replacing it
        for ((i = 0; i < 30; i++)); do [ -x "$COWFS_BIN" ] && break; sleep 1; done
    fi
    [ -x "$COWFS_BIN" ] || die "no cowfs binary at $COWFS_BIN: run \`cargo build --release\` (or set COWFS_BIN)"
fi
if [ "$PROFILE" = 1 ]; then
    [[ "$(perf list 2>/dev/null)" == *fuse:fuse_request_send* ]] ||
        die "perf does not list the tracepoint fuse:fuse_request_send (tracefs mounted? kernel built with it?)"
fi

# ------------------------------------------------------------------ space
mkdir -p -- "$BENCH_DIR" || die "cannot create BENCH_DIR=$BENCH_DIR"
BENCH_DIR="$(cd "$BENCH_DIR" && pwd -P)"
CACHE="${BENCH_CACHE:-$BENCH_DIR/cowfs-bench}"
BASE_FS=$(findmnt -n -o FSTYPE -T "$BENCH_DIR" 2>/dev/null || stat -f -c %T -- "$BENCH_DIR")
[ "$BASE_FS" = ext4 ] || note "NOTE: $BENCH_DIR is on $BASE_FS, not ext4: the 'ext4' column is $BASE_FS"
avail() { df -B1 --output=avail -- "$1" | tail -n 1 | tr -d ' '; }
# the cached tars (2.8 GiB) if not there yet, one tree per filesystem at a time (1.3 GiB,
# cowfs more: a page per file and its map root), the 4 GiB file, slack
need=$((6 * GIB + ${#FSES[@]} * 3 * GIB))
[ -f "$CACHE/linux-6.1.tar" ] || need=$((need + 3 * GIB))
[ "$(avail "$BENCH_DIR")" -ge "$need" ] || die "$BENCH_DIR has $(human "$(avail "$BENCH_DIR")") free; need $(human "$need")"

# ------------------------------------------------------------------ the trees (cached)
FULL_TAR="$CACHE/linux-6.1.tar"
CORE_TAR="$CACHE/linux-6.1-core.tar"
CORE_DIRS=(fs kernel include net mm lib arch/x86)
TOP=linux-source-6.1 # the tar's top directory
mkdir -p -- "$CACHE" || die "cannot create $CACHE"
if [ ! -f "$FULL_TAR" ]; then
    note "unpacking $SRC_TXZ to $FULL_TAR (once; kept for later runs)..."
    xz -dc -- "$SRC_TXZ" >"$FULL_TAR.tmp" && mv -- "$FULL_TAR.tmp" "$FULL_TAR" ||
        { rm -f -- "$FULL_TAR.tmp"; die "cannot unpack $SRC_TXZ"; }
fi
if [ ! -f "$CORE_TAR" ]; then
    note "making the core tar $CORE_TAR (once)..."
    tmp="$CACHE/core.tmp"
    rm -rf -- "$tmp" && mkdir -p -- "$tmp" &&
        tar -xf "$FULL_TAR" -C "$tmp" "${CORE_DIRS[@]/#/$TOP/}" &&
        tar -cf "$CORE_TAR.tmp" -C "$tmp" "$TOP" && mv -- "$CORE_TAR.tmp" "$CORE_TAR" ||
        { rm -rf -- "$tmp" "$CORE_TAR.tmp"; die "cannot make $CORE_TAR"; }
    rm -rf -- "$tmp"
fi
# entries per tree (files, directories, symlinks), for per-file figures
count_entries() { tar -tf "$1" | wc -l; }
count_files() { tar -tvf "$1" | grep -c '^-'; }

# ------------------------------------------------------------------ set-up and clean-up
WORK=""
CBIN=""      # private copy of the cowfs binary (a rebuild cannot change it under us)
CMNT=""      # cowfs mount point
STORE=""     # cowfs store
COWFS_PID="" # cowfs daemon
PMNT=""      # passthrough_ll mount point
PT_PID=""    # passthrough_ll (runs with -f in the background)
BMNT=""      # btrfs mount point
LOOP=""      # its loop device
BG_PID=""    # a background job of ours (touch latency)

pid_alive() { [ -n "$1" ] && kill -0 "$1" 2>/dev/null; }
# shellcheck disable=SC2317  # called from cleanup
wait_gone() { # PID SECONDS: wait for a daemon we started to exit; TERM, then KILL it
    local pid=$1 i
    pid_alive "$pid" || return 0
    for ((i = 0; i < $2 * 10; i++)); do pid_alive "$pid" || return 0; sleep 0.1; done
    echo "bench: daemon pid $pid still running: sending TERM" >&2
    kill -TERM "$pid" 2>/dev/null
    for ((i = 0; i < 50; i++)); do pid_alive "$pid" || return 0; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null
    sleep 0.5
}
# shellcheck disable=SC2317  # called from cleanup
mounted_below() { # DIR: is anything mounted at or under DIR?
    awk -v d="$1" '$2 == d || index($2, d "/") == 1 { found = 1 } END { exit !found }' /proc/mounts
}

# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    exec 1>&7 2>&8 # a trap runs with the redirections of the command it interrupted
    cd / || true
    [ "$rc" -ne 0 ] && [ -n "$WORK" ] && echo "bench: stopped (exit $rc); unmounting and removing $WORK" >&2
    if pid_alive "$BG_PID"; then kill -TERM "$BG_PID" 2>/dev/null; wait "$BG_PID" 2>/dev/null; fi
    if [ -n "$CMNT" ] && mountpoint -q -- "$CMNT"; then
        "$CBIN" umount -- "$CMNT" >/dev/null 2>&1 ||
            "$CBIN" umount --lazy -- "$CMNT" >/dev/null 2>&1 ||
            umount -l -- "$CMNT"
    fi
    if [ -n "$PMNT" ] && mountpoint -q -- "$PMNT"; then
        fusermount3 -u -- "$PMNT" 2>/dev/null || umount -- "$PMNT" 2>/dev/null ||
            { sleep 1; umount -- "$PMNT"; } 2>/dev/null || umount -l -- "$PMNT"
    fi
    if [ -n "$BMNT" ] && mountpoint -q -- "$BMNT"; then
        umount -- "$BMNT" 2>/dev/null || { sleep 1; umount -- "$BMNT"; } || umount -l -- "$BMNT"
    fi
    [ -n "$LOOP" ] && losetup -d "$LOOP"
    wait_gone "$COWFS_PID" 60
    wait_gone "$PT_PID" 10
    if [ -n "$STORE" ] && [ -f "$STORE/daemon.log" ]; then
        if [ -n "${BENCH_LOG:-}" ]; then
            cp -- "$STORE/daemon.log" "$BENCH_LOG" && note "daemon log copied to $BENCH_LOG"
        fi
        if [ "$rc" -ne 0 ]; then
            echo "--- last lines of the cowfs daemon log ---"
            tail -n 20 -- "$STORE/daemon.log"
        fi
    fi
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        if mounted_below "$WORK"; then
            echo "bench: something is still mounted under $WORK: NOT removing it" >&2
            grep -F -- "$WORK" /proc/mounts >&2
        else
            rm -rf --one-file-system -- "$WORK"
        fi
    fi
    exit "$rc"
}
exec 7>&1 8>&2 # the script's own stdout and stderr, for cleanup
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

WORK="$(mktemp -d "$BENCH_DIR/cowfs-trees.XXXXXX")" || die "cannot make a work directory in $BENCH_DIR"
ERRLOG="$WORK/errors"
mkdir -p -- "$WORK/bin" || die "cannot create $WORK/bin"

# mkfiles DIR NDIRS N SIZE: N files of SIZE bytes (distinct contents) in NDIRS new directories
# DIR/d000...; C, so that the tool is not what is timed.
cat >"$WORK/bin/mkfiles.c" <<'EOF'
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

int main(int argc, char **argv) {
    if (argc != 5) { fprintf(stderr, "usage: mkfiles DIR NDIRS N SIZE\n"); return 2; }
    long ndirs = atol(argv[2]), n = atol(argv[3]), size = atol(argv[4]);
    if (ndirs <= 0 || n < 0 || size < 0 || size > 65536) { fprintf(stderr, "mkfiles: bad arguments\n"); return 2; }
    char *buf = malloc(size + 32), path[4096];
    if (!buf) return 1;
    if (mkdir(argv[1], 0755) != 0) { perror(argv[1]); return 1; }
    for (long d = 0; d < ndirs; d++) {
        snprintf(path, sizeof path, "%s/d%03ld", argv[1], d);
        if (mkdir(path, 0755) != 0) { perror(path); return 1; }
    }
    for (long i = 0; i < n; i++) {
        snprintf(path, sizeof path, "%s/d%03ld/f%07ld", argv[1], i % ndirs, i);
        for (long k = 0; k < size; k++) buf[k] = 'a' + (char)((i * 7 + k) % 26);
        if (size > 0) buf[size - 1] = '\n';
        int fd = open(path, O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
        if (fd < 0) { perror(path); return 1; }
        if (write(fd, buf, size) != size) { perror(path); return 1; }
        if (close(fd) != 0) { perror(path); return 1; }
    }
    return 0;
}
EOF
gcc -O2 -Wall -o "$WORK/bin/mkfiles" "$WORK/bin/mkfiles.c" 2>"$ERRLOG" ||
    die "compiling the small-file helper failed: $(head -c 500 "$ERRLOG")"

# touchlat DIR CMD...: runs CMD; meanwhile, every TOUCH_EVERY s, a `touch` of a new file in
# DIR (open O_CREAT, futimens, close), each timed; prints "max_ms median_ms touches cmd_s".
cat >"$WORK/bin/touchlat.py" <<'EOF'
import os, subprocess, sys, time
every, d, cmd = float(sys.argv[1]), sys.argv[2], sys.argv[3:]
lat, names = [], []
t0 = time.monotonic()
p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL)
i = 0
while p.poll() is None:
    name = os.path.join(d, "touch.%06d" % i)
    s = time.monotonic()
    fd = os.open(name, os.O_CREAT | os.O_WRONLY | os.O_CLOEXEC, 0o644)
    os.utime(fd)
    os.close(fd)
    lat.append((time.monotonic() - s) * 1000)
    names.append(name)
    i += 1
    time.sleep(every)
cmd_s = time.monotonic() - t0
for n in names:
    os.unlink(n)
if p.returncode != 0:
    sys.exit("%s exited with %d" % (cmd[0], p.returncode))
lat.sort()
med = lat[len(lat) // 2] if lat else 0
print("%.1f %.1f %d %.2f" % (lat[-1] if lat else 0, med, len(lat), cmd_s))
EOF

declare -A DIR_OF # fs -> directory the jobs run in
declare -A NAME_OF=([ext4]="$BASE_FS" [pt]=passthrough_ll [btrfs]=btrfs [cowfs]=cowfs)
if has_fs ext4; then
    DIR_OF[ext4]="$WORK/ext4"
    mkdir -p -- "${DIR_OF[ext4]}" || die "cannot create ${DIR_OF[ext4]}"
fi
if has_fs pt; then
    cp -- "$PT_SRC_DIR/passthrough_ll.c" "$PT_SRC_DIR/passthrough_helpers.h" "$WORK/bin/" ||
        die "cannot copy passthrough_ll.c"
    # shellcheck disable=SC2046  # pkg-config prints several words
    gcc -O2 -D_FILE_OFFSET_BITS=64 -DHAVE_FALLOCATE -DHAVE_COPY_FILE_RANGE \
        -o "$WORK/bin/passthrough_ll" "$WORK/bin/passthrough_ll.c" $(pkg-config --cflags --libs fuse3) \
        2>"$ERRLOG" || die "compiling passthrough_ll failed: $(head -c 500 "$ERRLOG")"
    PMNT="$WORK/pt"
    PT_SRC="$WORK/pt-src"
    mkdir -p -- "$PT_SRC" "$PMNT" || die "cannot create $PMNT"
    "$WORK/bin/passthrough_ll" -f -o "source=$PT_SRC,writeback,cache=always" "$PMNT" >"$WORK/pt.log" 2>&1 &
    PT_PID=$!
    for ((i = 0; i < 100; i++)); do
        mountpoint -q -- "$PMNT" && break
        pid_alive "$PT_PID" || break
        sleep 0.1
    done
    mountpoint -q -- "$PMNT" || die "passthrough_ll did not mount $PMNT: $(head -c 500 "$WORK/pt.log")"
    DIR_OF[pt]="$PMNT"
fi
if has_fs btrfs; then
    IMG="$WORK/btrfs.img"
    BMNT="$WORK/btrfs"
    mkdir -p -- "$BMNT" || die "cannot create $BMNT"
    truncate -s $((24 * GIB)) -- "$IMG" || die "cannot create $IMG"
    LOOP="$(losetup -f --show -- "$IMG")" || die "losetup failed"
    mkfs.btrfs -q -f "$LOOP" >/dev/null 2>&1 || die "mkfs.btrfs $LOOP failed"
    mount -- "$LOOP" "$BMNT" || die "mount $LOOP failed"
    DIR_OF[btrfs]="$BMNT"
fi
if has_fs cowfs; then
    CBIN="$WORK/bin/cowfs"
    cp -- "$COWFS_BIN" "$CBIN" || die "cannot copy $COWFS_BIN (being rebuilt? try again)"
    "$CBIN" --version >/dev/null 2>&1 || die "$COWFS_BIN does not run (being rebuilt? try again)"
    CMNT="$WORK/cowfs"
    STORE="$WORK/store"
    mkdir -p -- "$CMNT" || die "cannot create $CMNT"
    out=$("$CBIN" mount --private -- "$STORE" "$CMNT" 2>&1) || die "cowfs mount failed: $out"
    COWFS_PID=$(sed -n 's/.*daemon pid \([0-9][0-9]*\).*/\1/p' <<<"$out" | head -n 1)
    if [ -z "$COWFS_PID" ]; then # find it by its executable (our private copy)
        for p in /proc/[0-9]*; do
            [ "$(readlink "$p/exe" 2>/dev/null)" = "$CBIN" ] && COWFS_PID=${p#/proc/}
        done
    fi
    mountpoint -q -- "$CMNT" || die "cowfs did not mount $CMNT: $out"
    DIR_OF[cowfs]="$CMNT"
fi

commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?")
note "kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, load $(cut -d' ' -f1-3 /proc/loadavg)"
note "disk: $BENCH_DIR ($BASE_FS on $(findmnt -n -o SOURCE -T "$BENCH_DIR" 2>/dev/null || echo ?)), work dir $WORK"
has_fs cowfs && note "cowfs: $("$CBIN" --version) from $COWFS_BIN (repo at $commit), mount --private, daemon pid ${COWFS_PID:-?}"
has_fs pt && note "passthrough_ll: libfuse $(pkg-config --modversion fuse3), -o writeback,cache=always"
has_fs btrfs && note "btrfs: 24 GiB sparse image on $LOOP ($(btrfs --version 2>/dev/null | head -n 1))"
note "filesystems: ${FSES[*]}; sets: $ONLY; rounds: $RUNS"

# ------------------------------------------------------------------ measuring
declare -A S # SET.JOB.FS -> "sample sample ..." (seconds, or KiB for space)

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
# fs_sync FS: everything written on FS made durable: syncfs of the mount; for passthrough_ll
# also of the ext4 under it; for cowfs `cowfs sync` (syncfs does not reach a FUSE daemon).
fs_sync() {
    sync -f -- "${DIR_OF[$1]}" || return 1
    case $1 in
    pt) sync -f -- "$PT_SRC" ;;
    cowfs) "$CBIN" sync -- "$CMNT" >/dev/null ;;
    esac
}
# used_kib FS: used space of the filesystem holding FS's directory (statfs of the mount:
# f_blocks - f_bfree), KiB. For ext4 and passthrough_ll that is the shared host disk.
used_kib() {
    stat -f -c '%b %f %S' -- "${DIR_OF[$1]}" | awk '{ printf "%d\n", ($1 - $2) * $3 / 1024 }'
}

# timed KEY CMD...: wall time of CMD in seconds, added to S[KEY].
timed() {
    local key=$1 s e
    shift
    s=$EPOCHREALTIME
    if ! "$@" >/dev/null 2>"$ERRLOG"; then
        echo "  ! FAILED: $key: $*: $(head -c 300 "$ERRLOG")"
        return 1
    fi
    e=$EPOCHREALTIME
    S[$key]+="$(awk -v u="$((${e/./} - ${s/./}))" 'BEGIN { printf "%.3f", u / 1e6 }') "
}

# the commands timed (called through timed)
# shellcheck disable=SC2317
extract() { tar -xf "$1" -C "$2" && fs_sync "$3"; }
# shellcheck disable=SC2317
grep_none() { # grep exits 1 when nothing matched, which is what we expect
    local rc=0
    grep -r -- "$NOT_THERE" "$1" || rc=$?
    [ "$rc" -eq 1 ]
}
# shellcheck disable=SC2317
tar_read() { tar -cf - -C "$1" . | wc -c; } # not -f /dev/null: GNU tar would not read the files
# shellcheck disable=SC2317
rm_sync() { rm -rf --one-file-system -- "$1" && fs_sync "$2"; }
# shellcheck disable=SC2317
mkfiles_sync() { "$WORK/bin/mkfiles" "$1" "$SMALL_DIRS" "$2" "$SMALL_SIZE" && fs_sync "$3"; }
# shellcheck disable=SC2317
clone_tree() { # FS SRC DST
    if [ "$1" = cowfs ]; then "$CBIN" clone -r -- "$2" "$3"; else cp -a --reflink=always -- "$2" "$3"; fi
}

# tree_round SET TAR FS R: every tree job once on FS.
tree_round() {
    local set=$1 tar=$2 fs=$3 r=$4 d k
    d="${DIR_OF[$fs]}/$set.$r"
    k="$set"
    rm -rf --one-file-system -- "$d" && mkdir -- "$d" || { echo "  ! cannot make $d"; return 1; }
    drop_caches
    timed "$k.extract.$fs" extract "$tar" "$d" "$fs" || return 1
    drop_caches
    timed "$k.findc.$fs" find "$d"
    timed "$k.findw.$fs" find "$d" # warm: right after the same command
    drop_caches
    timed "$k.duc.$fs" du -s "$d"
    timed "$k.duw.$fs" du -s "$d"
    drop_caches
    timed "$k.grepc.$fs" grep_none "$d"
    timed "$k.grepw.$fs" grep_none "$d"
    drop_caches
    timed "$k.tarc.$fs" tar_read "$d"
    if [ "$fs" = cowfs ] || [ "$fs" = btrfs ]; then
        local c="${DIR_OF[$fs]}/$set.$r.clone"
        drop_caches
        if timed "$k.clone.$fs" clone_tree "$fs" "$d/$TOP" "$c"; then
            grep_none "$c" # the warm-up
            timed "$k.clgrep.$fs" grep_none "$c"
        fi
        rm -rf --one-file-system -- "$c"
        fs_sync "$fs"
    fi
    drop_caches
    timed "$k.rm.$fs" rm_sync "$d" "$fs"
    sleep 1
}

# small_round SET N FS R: N small files created (+ sync), their space, rm (+ sync).
small_round() {
    local set=$1 n=$2 fs=$3 r=$4 d before after
    d="${DIR_OF[$fs]}/$set.$r"
    rm -rf --one-file-system -- "$d"
    fs_sync "$fs"
    sleep 1
    before=$(used_kib "$fs")
    timed "$set.create.$fs" mkfiles_sync "$d" "$n" "$fs" || return 1
    sleep 1
    fs_sync "$fs"
    after=$(used_kib "$fs")
    S[$set.du.$fs]+="$(du -sk -- "$d" | cut -f1) "
    S[$set.df.$fs]+="$((after - before)) "
    drop_caches
    timed "$set.rm.$fs" rm_sync "$d" "$fs"
    sleep 1
}

T0=$EPOCHREALTIME
elapsed() { awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f s", b - a }'; }

# ------------------------------------------------------------------ profile (BENCH_PROFILE=1)
# fuse_count FS LABEL CMD...: runs CMD under `perf record -e fuse:fuse_request_send -a`, keeps
# the requests sent to FS's connection (its st_dev minor), adds "LABEL OPCODE COUNT" lines to
# $WORK/profile.
fuse_count() {
    local fs=$1 label=$2 conn
    shift 2
    conn=$(mountpoint -d -- "${DIR_OF[$fs]}" | cut -d: -f2)
    # system-wide in the background (CMD may be a shell function), stopped with SIGINT
    perf record -q -e fuse:fuse_request_send -a -o "$WORK/perf.data" >/dev/null 2>"$WORK/perf.log" &
    BG_PID=$!
    sleep 2 # perf is recording once it has opened its events
    if ! pid_alive "$BG_PID"; then
        echo "  ! FAILED: perf record for $label on $fs: $(head -c 300 "$WORK/perf.log")"
        return 1
    fi
    "$@" >/dev/null 2>"$ERRLOG" || echo "  ! FAILED: $label on $fs: $*: $(head -c 300 "$ERRLOG")"
    kill -INT "$BG_PID"
    wait "$BG_PID"
    BG_PID=""
    perf script -i "$WORK/perf.data" -F trace 2>/dev/null | awk -v c="$conn" -v l="$fs $label" '
        { for (i = 1; i < NF; i++) if ($i == "connection") conn = $(i + 1); else if ($i == "opcode") op = $(i + 2) }
        conn == c { gsub(/[()]/, "", op); sub(/^FUSE_/, "", op); n[op]++ }
        END { for (o in n) print l, o, n[o] }' >>"$WORK/profile"
    rm -f -- "$WORK/perf.data"
}

profile() {
    local fs d ncore nfiles
    ncore=$(count_entries "$CORE_TAR")
    nfiles=$(count_files "$CORE_TAR")
    : >"$WORK/profile"
    for fs in pt cowfs; do
        has_fs "$fs" || continue
        d="${DIR_OF[$fs]}/prof"
        rm -rf --one-file-system -- "$d" && mkdir -- "$d" || die "cannot make $d"
        note "profile: $fs, core tree ($ncore entries, $nfiles files)..."
        drop_caches
        fuse_count "$fs" extract extract "$CORE_TAR" "$d" "$fs"
        find "$d" >/dev/null
        fuse_count "$fs" find-warm find "$d"
        du -s "$d" >/dev/null
        fuse_count "$fs" du-warm du -s "$d"
        grep_none "$d"
        fuse_count "$fs" grep-warm grep_none "$d"
        drop_caches
        fuse_count "$fs" grep-cold grep_none "$d"
        fuse_count "$fs" rm rm_sync "$d" "$fs"
        note "profile: $fs, $SMALL_PT_N small files..."
        fuse_count "$fs" small-create mkfiles_sync "$d.small" "$SMALL_PT_N" "$fs"
        rm -rf --one-file-system -- "$d.small"
    done
    echo
    echo "### FUSE requests (fuse:fuse_request_send), core tree: $ncore entries ($nfiles files); small: $SMALL_PT_N files"
    python3 - "$WORK/profile" "$ncore" "$SMALL_PT_N" <<'EOF'
import collections, sys
path, ncore, nsmall = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
jobs = ["extract", "find-warm", "du-warm", "grep-warm", "grep-cold", "rm", "small-create"]
count = collections.defaultdict(int)
fses, ops = [], set()
for line in open(path):
    fs, job, op, n = line.split()
    count[fs, job, op] += int(n)
    ops.add(op)
    if fs not in fses:
        fses.append(fs)
for fs in fses:
    print("\n%s: requests per job and opcode (total, then per entry)\n" % fs)
    print("| opcode | " + " | ".join(jobs) + " |")
    print("|---" * (len(jobs) + 1) + "|")
    for op in sorted(ops, key=lambda o: -sum(count[fs, j, o] for j in jobs)):
        if any(count[fs, j, op] for j in jobs):
            print("| %s | %s |" % (op, " | ".join(str(count[fs, j, op]) for j in jobs)))
    tot = [sum(count[fs, j, o] for o in ops) for j in jobs]
    print("| **total** | %s |" % " | ".join(str(t) for t in tot))
    per = ["%.2f" % (t / (nsmall if j == "small-create" else ncore)) for j, t in zip(jobs, tot)]
    print("| **per entry** | %s |" % " | ".join(per))
EOF
}

if [ "$PROFILE" = 1 ]; then
    profile
    note "profile done in $(elapsed)"
    exit 0
fi

# ------------------------------------------------------------------ the rounds
for ((r = 1; r <= RUNS; r++)); do
    if want core; then
        for fs in "${FSES[@]}"; do
            note "round $r: core tree on $fs ($(elapsed))"
            tree_round core "$CORE_TAR" "$fs" "$r"
        done
    fi
    if want full; then
        for fs in "${FSES[@]}"; do
            [ "$fs" = pt ] && continue # one fd per inode: the full tree exceeds its 20,000
            note "round $r: full tree on $fs ($(elapsed))"
            tree_round full "$FULL_TAR" "$fs" "$r"
        done
    fi
    if want small; then
        for fs in "${FSES[@]}"; do
            note "round $r: $SMALL_PT_N and $SMALL_N small files on $fs ($(elapsed))"
            small_round small15 "$SMALL_PT_N" "$fs" "$r"
            [ "$fs" = pt ] && continue
            small_round small "$SMALL_N" "$fs" "$r"
        done
    fi
done

# ------------------------------------------------------------------ touch latency (cowfs)
TOUCH_DU="" TOUCH_CLONE=""
if want touch && has_fs cowfs; then
    note "touch latency: $SMALL_N small files on cowfs, a touch every ${TOUCH_EVERY}s during cowfs du / clone -r ($(elapsed))"
    d="$CMNT/touch"
    mkdir -p -- "$d.t" && mkfiles_sync "$d" "$SMALL_N" cowfs ||
        echo "  ! FAILED: making $SMALL_N files for the touch job"
    if [ -d "$d/d000" ]; then
        drop_caches
        TOUCH_DU=$(python3 "$WORK/bin/touchlat.py" "$TOUCH_EVERY" "$d.t" "$CBIN" du -- "$d" 2>"$ERRLOG") ||
            { echo "  ! FAILED: touch during cowfs du: $(head -c 300 "$ERRLOG")"; TOUCH_DU=""; }
        drop_caches
        TOUCH_CLONE=$(python3 "$WORK/bin/touchlat.py" "$TOUCH_EVERY" "$d.t" "$CBIN" clone -r -- "$d" "$d.clone" 2>"$ERRLOG") ||
            { echo "  ! FAILED: touch during cowfs clone -r: $(head -c 300 "$ERRLOG")"; TOUCH_CLONE=""; }
    fi
    rm -rf --one-file-system -- "$d" "$d.clone" "$d.t"
    fs_sync cowfs
fi

# ------------------------------------------------------------------ host space back (cowfs)
SPACE_BACK="" SPACE_SECS=""
if want space && has_fs cowfs; then
    note "host space back: a $(human "$BIG_FILE") file on cowfs, synced, deleted ($(elapsed))"
    head -c $((64 * MIB)) /dev/urandom >"$WORK/chunk" || die "cannot write $WORK/chunk"
    f="$CMNT/big"
    for ((i = 0; i < BIG_FILE / (64 * MIB); i++)); do cat -- "$WORK/chunk"; done >"$f" &&
        fs_sync cowfs || echo "  ! FAILED: writing $f"
    rm -f -- "$WORK/chunk"
    sync
    sleep 2
    free0=$(avail "$BENCH_DIR")
    rm -f -- "$f"
    s=$EPOCHREALTIME
    SPACE_BACK="not within 60 s"
    SPACE_SECS=""
    for ((i = 0; i < 60; i++)); do
        sleep 1
        grown=$(($(avail "$BENCH_DIR") - free0))
        if [ "$grown" -ge $((BIG_FILE * 95 / 100)) ]; then
            SPACE_SECS=$(awk -v a="$s" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.0f", b - a }')
            SPACE_BACK="$SPACE_SECS s"
            break
        fi
    done
    note "  host free space grew by $(human "$((grown > 0 ? grown : 0))") (last poll): $SPACE_BACK"
    fs_sync cowfs
fi
note "all rounds done in $(elapsed)"

# ------------------------------------------------------------------ table
summary() { # KEY -> "median min max" (or empty)
    tr ' ' '\n' <<<"${S[$1]:-}" | awk 'NF' | sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) exit
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            print m, v[1], v[NR]
        }'
}
median() { summary "$1" | awk '{ print $1 }'; }
cell() { # KEY -> "median (min-max)" or "-"
    local s
    s=$(summary "$1")
    if [ -z "$s" ]; then echo "-"; return; fi
    awk -v s="$s" 'BEGIN {
        split(s, a, " ")
        f = a[1] < 1 ? "%.3f" : (a[1] < 10 ? "%.2f" : "%.1f")
        if (a[2] == a[3]) printf f, a[1]; else printf f " (" f "-" f ")", a[1], a[2], a[3] }'
}
ratio() { # A B -> A/B
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "-"; else printf "%.2f", a / b }'
}
row() { # LABEL KEY (without .FS)
    local line="| $1 |" fs
    for fs in "${FSES[@]}"; do line+=" $(cell "$2.$fs") |"; done
    for fs in ext4 pt btrfs; do
        has_fs "$fs" && line+=" $(ratio "$(median "$2.cowfs")" "$(median "$2.$fs")") |"
    done
    echo "$line"
}

TREE_JOBS=(extract "extract + sync" findc "find, cold" findw "find, warm" duc "du -s, cold"
    duw "du -s, warm" grepc "grep -r, cold" grepw "grep -r, warm" tarc "tar -c read, cold"
    clone "clone -r / cp -a --reflink" clgrep "grep -r, warm, in the fresh clone" rm "rm -rf + sync")
echo
echo "### seconds, median of $RUNS rounds (min-max); lower is better; ratios cowfs/x: < 1 means cowfs is faster"
echo
hdr="| job |" sep="|---|"
for fs in "${FSES[@]}"; do hdr+=" ${NAME_OF[$fs]} |"; sep+="---|"; done
for fs in ext4 pt btrfs; do has_fs "$fs" && { hdr+=" cowfs/$fs |"; sep+="---|"; }; done
echo "$hdr"
echo "$sep"
for set in core full; do
    want "$set" || continue
    if [ "$set" = core ]; then what="core tree ($(count_entries "$CORE_TAR") entries)"; else what="full tree ($(count_entries "$FULL_TAR") entries)"; fi
    for ((j = 0; j < ${#TREE_JOBS[@]}; j += 2)); do
        row "$what: ${TREE_JOBS[j + 1]}" "$set.${TREE_JOBS[j]}"
    done
done
if want small; then
    row "$SMALL_PT_N x ${SMALL_SIZE} B: create + sync" small15.create
    row "$SMALL_PT_N x ${SMALL_SIZE} B: rm -rf + sync" small15.rm
    row "$SMALL_N x ${SMALL_SIZE} B: create + sync" small.create
    row "$SMALL_N x ${SMALL_SIZE} B: rm -rf + sync" small.rm
    echo
    echo "### space of $SMALL_N files of $SMALL_SIZE bytes in $SMALL_DIRS directories, MiB (median of $RUNS)"
    echo "(statfs used before/after of the mount: for cowfs the store, for ext4 the shared host disk,"
    echo "which other writers move too)"
    echo
    echo "| measure | $(for fs in "${FSES[@]}"; do [ "$fs" = pt ] || printf '%s | ' "${NAME_OF[$fs]}"; done)"
    echo "|---|$(for fs in "${FSES[@]}"; do [ "$fs" = pt ] || printf -- '---|'; done)"
    for m in du df; do
        [ "$m" = du ] && line="| du -sk |" || line="| statfs used, after - before |"
        for fs in "${FSES[@]}"; do
            [ "$fs" = pt ] && continue
            line+=" $(awk -v k="$(median "small.$m.$fs")" 'BEGIN { if (k == "") print "-"; else printf "%.0f", k / 1024 }') |"
        done
        echo "$line"
    done
fi
if [ -n "$TOUCH_DU$TOUCH_CLONE" ]; then
    echo
    echo "### touch latency on cowfs, $SMALL_N files: longest / median touch (ms), touches, command seconds"
    echo
    echo "| during | longest ms | median ms | touches | command s |"
    echo "|---|---|---|---|---|"
    [ -n "$TOUCH_DU" ] && awk '{ print "| cowfs du | " $1 " | " $2 " | " $3 " | " $4 " |" }' <<<"$TOUCH_DU"
    [ -n "$TOUCH_CLONE" ] && awk '{ print "| cowfs clone -r | " $1 " | " $2 " | " $3 " | " $4 " |" }' <<<"$TOUCH_CLONE"
fi
[ -n "$SPACE_BACK" ] && { echo; echo "host space back after deleting $(human "$BIG_FILE") on cowfs: $SPACE_BACK"; }

# ------------------------------------------------------------------ checks
echo
verdict() { if [ "$1" = 1 ]; then echo PASS; elif [ "$1" = 0 ]; then echo FAIL; else echo SKIP; fi; }
le() { # A B FACTOR -> 1 if A <= FACTOR*B, 0 if not, "-" if a figure is missing
    awk -v a="$1" -v b="$2" -v f="$3" 'BEGIN { if (a == "" || b == "") print "-"; else print (a <= f * b) ? 1 : 0 }'
}
check() { # A B FACTOR TEXT
    echo "$(verdict "$(le "$1" "$2" "$3")"): $4 ($(ratio "$1" "$2")x)"
}
if want core; then
    for ((j = 0; j < ${#TREE_JOBS[@]}; j += 2)); do
        k="core.${TREE_JOBS[j]}"
        [ -n "${S[$k.pt]:-}" ] || continue
        check "$(median "$k.cowfs")" "$(median "$k.pt")" 1 "core tree, ${TREE_JOBS[j + 1]}: cowfs <= passthrough_ll"
    done
fi
if want full; then
    for j in findw:find grepw:grep duw:du; do
        check "$(median "full.${j%:*}.cowfs")" "$(median "full.${j%:*}.ext4")" 1.5 \
            "full tree, warm ${j#*:}: cowfs within 1.5x ext4"
    done
fi
if want small; then
    check "$(median small.df.cowfs)" "$(median small.du.ext4)" 1 \
        "$SMALL_N x $SMALL_SIZE B: cowfs space (statfs delta) <= ext4 du -sk"
    check "$(median small15.create.cowfs)" "$(median small15.create.pt)" 1 \
        "$SMALL_PT_N x $SMALL_SIZE B: cowfs create + sync <= passthrough_ll"
fi
if want touch; then
    for t in "cowfs du:$TOUCH_DU" "cowfs clone -r:$TOUCH_CLONE"; do
        v=${t#*:}
        echo "$(verdict "$(le "${v%% *}" 100 1)"): longest touch during ${t%%:*} <= 100 ms (${v%% *} ms)"
    done
fi
if want space; then
    ok=$(awk -v b="$SPACE_BACK" -v s="$SPACE_SECS" 'BEGIN { if (b == "") print "-"; else print (s != "" && s <= 30) ? 1 : 0 }')
    echo "$(verdict "$ok"): host free space back (>= 95% of $(human "$BIG_FILE")) within 30 s of the delete ($SPACE_BACK)"
fi
if has_fs btrfs; then
    n=0 bad=""
    for k in "${!S[@]}"; do
        [[ "$k" == *.btrfs ]] || continue
        k=${k%.btrfs}
        [[ "$k" == *.du || "$k" == *.df ]] && continue
        [ -n "${S[$k.cowfs]:-}" ] || continue
        n=$((n + 1))
        [ "$(le "$(median "$k.cowfs")" "$(median "$k.btrfs")" 2)" = 1 ] || bad+=" $k"
    done
    echo "AIM: within 2x of btrfs: $((n - $(wc -w <<<"$bad"))) of $n lines"
    for k in $(tr ' ' '\n' <<<"$bad" | sort); do
        echo "  not: $k ($(ratio "$(median "$k.cowfs")" "$(median "$k.btrfs")")x)"
    done
fi

if has_fs cowfs && grep -qE 'WARN|ERROR' -- "$STORE/daemon.log"; then
    echo
    note "warnings and errors in the cowfs daemon log ($(grep -cE 'WARN|ERROR' -- "$STORE/daemon.log")), the last 20:"
    grep -E 'WARN|ERROR' -- "$STORE/daemon.log" | tail -n 20
fi
exit 0
