#!/usr/bin/env bash
# bench/clone.sh - cowfs vs btrfs, side by side: clone and copy times, tree clones, and
# fio random writes over fresh clones versus never-cloned files.
#
# Usage (as root):  bench/clone.sh
# Environment:
#   COWFS_BIN   cowfs binary (default REPO/target/release/cowfs, built with
#               `cargo build --release` when missing)
#   BENCH_RUNS  runs per figure, the median is shown with the spread min-max (default 3)
#   BENCH_BIG   size of the big file: 8G (default), 4G, 512M, ...; 0 skips it
#   BENCH_DIR   where the btrfs image and the cowfs store go (default /var/tmp)
#   BENCH_LOG   if set, the cowfs daemon log is copied there at the end
# Installs btrfs-progs and fio with apt-get when missing. Makes a btrfs filesystem on a loop
# device (sparse image in BENCH_DIR) and a fresh cowfs store next to it; everything is
# unmounted and removed at exit, also on failure or Ctrl-C. Caches are dropped before every
# timed command. A benchmark, not a test: the checks print PASS/FAIL, the exit code is 0.

set -u
set -o pipefail
export LC_ALL=C

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
DEFAULT_BIN="$REPO/target/release/cowfs"
COWFS_BIN="${COWFS_BIN:-$DEFAULT_BIN}"
RUNS="${BENCH_RUNS:-3}"
BIG_SPEC="${BENCH_BIG:-8G}"
BENCH_DIR="${BENCH_DIR:-/var/tmp}"

KIB=1024
MIB=$((1024 * KIB))
GIB=$((1024 * MIB))
CHUNK_SIZE=$((64 * MIB))
TREE_DIRS=200
TREE_FILES_PER_DIR=50 # 200 x 50 = 10,000 files of 4 KiB

die() { echo "bench: $*" >&2; exit 1; }
note() { echo "bench: $*"; }

case "${1:-}" in -h | --help) sed -n '2,16p' "$0"; exit 0 ;; esac
[ $# -eq 0 ] || die "no arguments expected (settings come from the environment; see --help)"
[ "$(id -u)" = 0 ] || die "run as root (loop devices, mount, drop_caches)"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer, not '$RUNS'"

# ------------------------------------------------------------------ sizes
to_bytes() { # 8G, 8GiB, 512M, 0 -> bytes (IEC)
    local s="${1%iB}"
    s="${s%B}"
    numfmt --from=iec -- "$s" 2>/dev/null
}
human() { numfmt --to=iec-i --suffix=B -- "$1"; }

BIG=$(to_bytes "$BIG_SPEC") || die "BENCH_BIG: cannot read size '$BIG_SPEC'"
BIG=$((BIG / CHUNK_SIZE * CHUNK_SIZE)) # whole chunks
[ "$BIG" -eq 0 ] && [ "$BIG_SPEC" != 0 ] && note "BENCH_BIG=$BIG_SPEC is under 64 MiB: big case skipped"

# ------------------------------------------------------------------ prerequisites
missing=()
command -v mkfs.btrfs >/dev/null 2>&1 || missing+=(btrfs-progs)
command -v fio >/dev/null 2>&1 || missing+=(fio)
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install them"
    note "installing ${missing[*]}..."
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
        >/dev/null 2>&1 || die "apt-get install ${missing[*]} failed"
fi
grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null ||
    die "this kernel has no btrfs (not in /proc/filesystems)"

if [ ! -x "$COWFS_BIN" ]; then
    [ "$COWFS_BIN" = "$DEFAULT_BIN" ] || die "COWFS_BIN=$COWFS_BIN is not an executable"
    if ! command -v cargo >/dev/null 2>&1; then
        [ -x "$HOME/.cargo/bin/cargo" ] || die "cargo not found: install Rust or set COWFS_BIN"
        PATH="$HOME/.cargo/bin:$PATH"
    fi
    note "building cowfs (cargo build --release)..."
    (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
    [ -x "$COWFS_BIN" ] || die "build produced no binary at $COWFS_BIN"
fi

# ------------------------------------------------------------------ space
mkdir -p -- "$BENCH_DIR" || die "cannot create BENCH_DIR=$BENCH_DIR"
BENCH_DIR="$(cd "$BENCH_DIR" && pwd -P)"
avail=$(df -B1 --output=avail -- "$BENCH_DIR" | tail -n 1 | tr -d ' ')
# Per filesystem: 64 MiB + 1 GiB + BIG + the tree + 2 GiB for fio files + slack; twice, plus 1 GiB.
need_small=$((2 * 4 * GIB + GIB))
if [ "$avail" -lt "$need_small" ]; then
    die "$BENCH_DIR has $(human "$avail") free; need at least $(human "$need_small")"
fi
if [ "$BIG" -gt 0 ] && [ "$avail" -lt $((need_small + 2 * BIG)) ]; then
    fit=$(((avail - need_small) / 2 / GIB * GIB))
    if [ "$fit" -ge $((2 * GIB)) ]; then
        note "NOTE: only $(human "$avail") free in $BENCH_DIR: big file shrunk from $(human "$BIG") to $(human "$fit")"
        BIG=$fit
    else
        note "NOTE: only $(human "$avail") free in $BENCH_DIR: big-file case SKIPPED"
        BIG=0
    fi
fi
IMG_SIZE=$((2 * BIG + 8 * GIB))
[ "$IMG_SIZE" -lt $((12 * GIB)) ] && IMG_SIZE=$((12 * GIB))

# ------------------------------------------------------------------ set-up and clean-up
WORK=""
LOOP=""
CMNT=""
BMNT=""
STORE=""

# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    cd / || true
    [ "$rc" -ne 0 ] && echo "bench: stopped (exit $rc); unmounting and removing $WORK" >&2
    if [ -n "$CMNT" ] && mountpoint -q -- "$CMNT"; then
        "$COWFS_BIN" umount -- "$CMNT" >/dev/null 2>&1 ||
            "$COWFS_BIN" umount --lazy -- "$CMNT" >/dev/null 2>&1 ||
            umount -l -- "$CMNT"
    fi
    if [ -n "$BMNT" ] && mountpoint -q -- "$BMNT"; then
        umount -- "$BMNT" 2>/dev/null || { sleep 1; umount -- "$BMNT"; } || umount -l -- "$BMNT"
    fi
    [ -n "$LOOP" ] && losetup -d "$LOOP"
    if [ -n "$STORE" ] && [ -f "$STORE/daemon.log" ]; then
        if [ -n "${BENCH_LOG:-}" ]; then
            cp -- "$STORE/daemon.log" "$BENCH_LOG" && note "daemon log copied to $BENCH_LOG"
        fi
        if [ "$rc" -ne 0 ]; then
            echo "--- last lines of the cowfs daemon log ---"
            tail -n 20 -- "$STORE/daemon.log"
        fi
    fi
    [ -n "$WORK" ] && rm -rf -- "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

WORK="$(mktemp -d "$BENCH_DIR/cowfs-bench.XXXXXX")" || die "cannot make a work directory in $BENCH_DIR"
IMG="$WORK/btrfs.img"
BMNT="$WORK/btrfs"
CMNT="$WORK/cowfs"
STORE="$WORK/store"
CHUNK="$WORK/chunk"
ERRLOG="$WORK/errors"
mkdir -p -- "$BMNT" "$CMNT"

truncate -s "$IMG_SIZE" -- "$IMG" || die "cannot create $IMG"
LOOP="$(losetup -f --show -- "$IMG")" || die "losetup failed"
mkfs.btrfs -q -f "$LOOP" >/dev/null 2>&1 || die "mkfs.btrfs $LOOP failed"
mount -- "$LOOP" "$BMNT" || die "mount $LOOP failed"
"$COWFS_BIN" mount -- "$STORE" "$CMNT" >/dev/null || die "cowfs mount failed"

note "btrfs: $(human "$IMG_SIZE") sparse image on $LOOP at $BMNT ($(btrfs --version 2>/dev/null | head -n 1))"
note "cowfs: store $STORE at $CMNT ($("$COWFS_BIN" --version))"
note "kernel $(uname -r), $(cp --version | head -n 1), $(fio --version), runs per figure: $RUNS"

# ------------------------------------------------------------------ measuring
declare -A S # key -> "sample sample ..."

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

# timed KEY CMD...: drops caches, runs CMD, adds its wall time in ms to S[KEY].
timed() {
    local key=$1 s e rc
    shift
    drop_caches
    s=$EPOCHREALTIME
    "$@" >/dev/null 2>"$ERRLOG"
    rc=$?
    e=$EPOCHREALTIME
    if [ "$rc" -ne 0 ]; then
        echo "  ! FAILED (exit $rc): $*: $(head -c 300 "$ERRLOG")"
        return 1
    fi
    local us=$((${e/./} - ${s/./}))
    S[$key]+="$(awk -v u="$us" 'BEGIN { printf "%.2f", u / 1000 }') "
}

# fio_run KEY FILE: 4 KiB random writes over all of FILE (1 GiB); adds write IOPS to S[KEY].
fio_run() {
    local key=$1 file=$2 out iops
    drop_caches
    out="$(fio --name=randwrite --filename="$file" --rw=randwrite --bs=4k --size=1G \
        --ioengine=psync --end_fsync=1 --direct=0 --fallocate=none --numjobs=1 \
        --output-format=terse --terse-version=3 2>"$ERRLOG")" || {
        echo "  ! FAILED: fio on $file: $(head -c 300 "$ERRLOG")"
        return 1
    }
    iops=$(cut -d';' -f49 <<<"$out") # terse v3: 47 write KiB, 48 KiB/s, 49 IOPS, 50 ms
    S[$key]+="$iops "
}

# summary KEY -> "median min max" (or empty)
summary() {
    tr ' ' '\n' <<<"${S[$1]:-}" | awk 'NF' | sort -g | awk '
        { v[NR] = $1 }
        END {
            if (NR == 0) exit
            m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
            print m, v[1], v[NR]
        }'
}
median() { summary "$1" | awk '{ print $1 }'; }
show() { echo "  $1: ${S[$1]:-none}"; }

# write_file PATH BYTES: whole chunks of $CHUNK, then fsync.
write_file() {
    local i n=$(($2 / CHUNK_SIZE))
    for ((i = 0; i < n; i++)); do cat -- "$CHUNK"; done >"$1" && sync -- "$1"
}

used_bytes() { df -B1 --output=used -- "$1" | tail -n 1 | tr -d ' '; }

# ------------------------------------------------------------------ 1. data
note "generating 64 MiB of random data..."
head -c "$CHUNK_SIZE" /dev/urandom >"$CHUNK" || die "cannot write $CHUNK"

SIZES=("$CHUNK_SIZE" "$GIB")
[ "$BIG" -gt 0 ] && SIZES+=("$BIG")
label() { numfmt --to=iec-i -- "$1"; } # 64Mi, 1.0Gi, 8.0Gi
name_of() { echo "f$(label "$1")"; }

for size in "${SIZES[@]}"; do
    for fs in cowfs btrfs; do
        if [ "$fs" = cowfs ]; then dir=$CMNT; else dir=$BMNT; fi
        s=$EPOCHREALTIME
        write_file "$dir/$(name_of "$size")" "$size" || die "writing $(human "$size") to $fs failed"
        e=$EPOCHREALTIME
        note "wrote $(human "$size") to $fs in $(awk -v a="$s" -v b="$e" -v n="$size" \
            'BEGIN { printf "%.1f s (%.0f MiB/s)", b - a, n / 1048576 / (b - a) }') incl. fsync"
    done
done

# ------------------------------------------------------------------ 2. file clones and copies
note "spawn floor..."
for ((r = 1; r <= RUNS; r++)); do
    timed floor.cowfs "$COWFS_BIN" --version
    timed floor.btrfs cp --version
done
show floor.cowfs
show floor.btrfs

CP1G_NEW=""
for size in "${SIZES[@]}"; do
    f=$(name_of "$size")
    note "clone and cp of $(human "$size")..."
    for ((r = 1; r <= RUNS; r++)); do
        timed "clone.$size.cowfs" "$COWFS_BIN" clone "$CMNT/$f" "$CMNT/$f.clone$r"
        timed "clone.$size.btrfs" cp --reflink=always "$BMNT/$f" "$BMNT/$f.clone$r"
        before=$(used_bytes "$CMNT")
        timed "cp.$size.cowfs" cp "$CMNT/$f" "$CMNT/$f.cp$r"
        sync -- "$CMNT/$f.cp$r"
        after=$(used_bytes "$CMNT")
        if [ "$size" -eq "$GIB" ]; then
            CP1G_NEW+="$((after - before)) "
        fi
        timed "cp.$size.btrfs" cp "$BMNT/$f" "$BMNT/$f.cp$r"
    done
    for k in clone cp; do show "$k.$size.cowfs"; show "$k.$size.btrfs"; done
    [ "$size" -eq "$GIB" ] && echo "  new bytes used on cowfs per 1 GiB plain cp: $CP1G_NEW"
    # a clone must read back identical (spot check of the last clone and copy)
    cmp -s -- "$CMNT/$f" "$CMNT/$f.clone$RUNS" || echo "  ! cowfs clone of $f differs from its source"
    cmp -s -- "$CMNT/$f" "$CMNT/$f.cp$RUNS" || echo "  ! cowfs cp of $f differs from its source"
done
rm -f -- "$CMNT"/f*.clone* "$CMNT"/f*.cp* "$BMNT"/f*.clone* "$BMNT"/f*.cp*

# ------------------------------------------------------------------ 3. tree clone
make_tree() { # DIR: 10,000 files of 4 KiB in 200 directories
    local d sub
    for ((d = 0; d < TREE_DIRS; d++)); do
        sub=$(printf '%s/d%03d' "$1" "$d")
        mkdir -p -- "$sub" || return 1
        dd if="$CHUNK" bs=4096 skip=$((d * TREE_FILES_PER_DIR)) count=$TREE_FILES_PER_DIR \
            status=none | split -b 4096 -a 2 -d - "$sub/f" || return 1
    done
}
TREE_BIG=${SIZES[-1]}
note "tree: $((TREE_DIRS * TREE_FILES_PER_DIR)) files of 4 KiB in $TREE_DIRS directories + one $(human "$TREE_BIG") file..."
make_tree "$CMNT/tree" || die "making the tree on cowfs failed"
make_tree "$BMNT/tree" || die "making the tree on btrfs failed"
if [ "$BIG" -gt 0 ]; then # move the big file in: not shared with anything
    mv -- "$CMNT/$(name_of "$BIG")" "$CMNT/tree/big" && mv -- "$BMNT/$(name_of "$BIG")" "$BMNT/tree/big"
else # the 1 GiB file is still needed below: clone it in
    "$COWFS_BIN" clone "$CMNT/$(name_of "$GIB")" "$CMNT/tree/big" >/dev/null &&
        cp --reflink=always "$BMNT/$(name_of "$GIB")" "$BMNT/tree/big"
fi || die "placing the big file in the tree failed"
sync -- "$CMNT/tree/big"
for ((r = 1; r <= RUNS; r++)); do
    timed tree.cowfs "$COWFS_BIN" clone -r "$CMNT/tree" "$CMNT/tree.clone$r"
    timed tree.btrfs cp -a --reflink=always "$BMNT/tree" "$BMNT/tree.clone$r"
done
show tree.cowfs
show tree.btrfs
n=$(find "$CMNT/tree.clone$RUNS" -type f | wc -l)
[ "$n" -eq $((TREE_DIRS * TREE_FILES_PER_DIR + 1)) ] || echo "  ! cowfs tree clone has $n files"
cmp -s -- "$CMNT/tree/d123/f07" "$CMNT/tree.clone$RUNS/d123/f07" || echo "  ! cowfs tree clone differs"
rm -rf -- "$CMNT"/tree.clone* "$BMNT"/tree.clone*

# ------------------------------------------------------------------ 4. fio over clones
F1G="$(name_of "$GIB")"
note "fio: 4 KiB random writes over all of a 1 GiB file (fresh clone / never cloned)..."
for ((r = 1; r <= RUNS; r++)); do
    for fs in cowfs btrfs; do
        if [ "$fs" = cowfs ]; then
            dir=$CMNT
            "$COWFS_BIN" clone "$dir/$F1G" "$dir/fio.clone$r" >/dev/null
        else
            dir=$BMNT
            cp --reflink=always "$dir/$F1G" "$dir/fio.clone$r"
        fi || { echo "  ! cloning for fio failed on $fs"; continue; }
        sync -- "$dir/fio.clone$r"
        fio_run "fio.clone.$fs" "$dir/fio.clone$r"
        write_file "$dir/fio.fresh$r" "$GIB" || echo "  ! writing a fresh 1 GiB file on $fs failed"
        fio_run "fio.fresh.$fs" "$dir/fio.fresh$r"
        rm -f -- "$dir/fio.fresh$r"
        if [ "$fs" = btrfs ] || [ "$r" -lt "$RUNS" ]; then # keep the last cowfs one for du
            rm -f -- "$dir/fio.clone$r"
        fi
    done
done
for k in fio.clone.cowfs fio.fresh.cowfs fio.clone.btrfs fio.fresh.btrfs; do show "$k"; done

# ------------------------------------------------------------------ 5. space
echo
note "cowfs du -h of a 1 GiB clone after fio wrote all of it, and of its source:"
"$COWFS_BIN" du -h "$CMNT/fio.clone$RUNS" "$CMNT/$F1G"
echo
note "cowfs stats $CMNT:"
"$COWFS_BIN" stats "$CMNT"

# ------------------------------------------------------------------ 6. table
fmt_cell() { # KEY UNIT -> "median (min-max)"
    local s
    s=$(summary "$1")
    if [ -z "$s" ]; then echo "n/a"; return; fi
    awk -v s="$s" -v u="$2" 'BEGIN {
        split(s, a, " ")
        f = (u == "ms") ? "%.1f" : "%.0f"
        printf f " (" f "-" f ")", a[1], a[2], a[3] }'
}
ratio() { # A B -> A/B
    awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f", a / b }'
}
row() { # LABEL KEY-PREFIX UNIT
    printf '%-46s %-22s %-22s %s\n' "$1" "$(fmt_cell "$2.cowfs" "$3")" "$(fmt_cell "$2.btrfs" "$3")" \
        "$(ratio "$(median "$2.cowfs")" "$(median "$2.btrfs")")"
}

echo
echo "=== cowfs vs btrfs: medians of $RUNS runs (min-max), caches dropped before each ==="
printf '%-46s %-22s %-22s %s\n' "wall time, ms (lower is better)" "cowfs" "btrfs" "cowfs/btrfs"
row "spawn floor (cowfs --version | cp --version)" floor ms
for size in "${SIZES[@]}"; do
    row "clone $(human "$size") (cowfs clone | cp --reflink)" "clone.$size" ms
done
for size in "${SIZES[@]}"; do
    row "plain cp $(human "$size")" "cp.$size" ms
done
row "tree 10k x 4KiB + $(human "$TREE_BIG") (clone -r | cp -a)" tree ms
echo
printf '%-46s %-22s %-22s %s\n' "fio 4k randwrite 1 GiB, IOPS (higher better)" "cowfs" "btrfs" "cowfs/btrfs"
row "over a fresh clone" fio.clone iops
row "over a never-cloned file" fio.fresh iops
fc_c=$(ratio "$(median fio.clone.cowfs)" "$(median fio.fresh.cowfs)")
fc_b=$(ratio "$(median fio.clone.btrfs)" "$(median fio.fresh.btrfs)")
printf '%-46s %-22s %-22s %s\n' "ratio clone / never-cloned" "$fc_c" "$fc_b" "-"

# ------------------------------------------------------------------ checks
echo
verdict() { if [ "$1" = 1 ]; then echo PASS; else echo FAIL; fi; }
if [ "$BIG" -gt 0 ]; then
    c64=$(median "clone.$CHUNK_SIZE.cowfs")
    cbig=$(median "clone.$BIG.cowfs")
    ok=$(awk -v a="$cbig" -v b="$c64" 'BEGIN { print (a != "" && b != "" && a <= 1.5 * b) ? 1 : 0 }')
    echo "$(verdict "$ok"): cowfs clone of $(human "$BIG") within 1.5x of 64 MiB ($cbig ms vs $c64 ms, $(ratio "$cbig" "$c64")x)"
else
    echo "SKIP: cowfs clone of the big file within 1.5x of 64 MiB (BENCH_BIG=0 or no space)"
fi
maxnew=$(tr ' ' '\n' <<<"$CP1G_NEW" | awk 'NF { if (m == "" || $1 > m) m = $1 } END { print m }')
ok=$(awk -v m="$maxnew" 'BEGIN { print (m != "" && m < 1048576) ? 1 : 0 }')
echo "$(verdict "$ok"): plain cp of 1 GiB on cowfs allocates < 1 MiB (df used grew by at most ${maxnew:-?} bytes)"
ok=$(awk -v r="$fc_c" 'BEGIN { print (r != "n/a" && r >= 0.9) ? 1 : 0 }')
echo "$(verdict "$ok"): cowfs fio over a fresh clone >= 0.9x a never-cloned file (${fc_c}x; btrfs ${fc_b}x)"

if grep -qE 'WARN|ERROR' -- "$STORE/daemon.log"; then
    echo
    note "warnings and errors in the cowfs daemon log:"
    grep -E 'WARN|ERROR' -- "$STORE/daemon.log" | tail -n 20
fi
exit 0
