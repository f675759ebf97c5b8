#!/usr/bin/env bash
# bench/snapshot.sh - cowfs snapshots next to btrfs subvolume snapshots, side by side in one
# run, of the same tree: 10,000 files of 4 KiB in 200 directories plus one big file (8 GiB).
#
# Usage (as root):  bench/snapshot.sh
# Environment:
#   COWFS_BIN   cowfs binary (default REPO/target/release/cowfs, built with
#               `cargo build --release` when missing)
#   BENCH_RUNS  snapshots per figure, the median is shown with the spread (default 5)
#   BENCH_BIG   size of the big file: 8G (default), 1G, ...; 0 leaves it out
#   BENCH_DIR   where the btrfs image and the cowfs store go (default /var/tmp)
# Installs btrfs-progs with apt-get when missing. Makes a btrfs filesystem on a loop device
# (sparse image in BENCH_DIR) with the tree in a subvolume, and a fresh cowfs store with the
# same tree; everything is unmounted and removed at exit, also on failure or Ctrl-C. Caches
# are dropped before every timed command, and every time is the wall time of the whole
# command, process start included. Figures:
#   - create a read-only snapshot: `cowfs snapshot create` vs `btrfs subvolume snapshot -r`;
#   - create a writable snapshot: `--writable` vs `btrfs subvolume snapshot`;
#   - delete one: `cowfs snapshot delete --wait` (returns once the space is back) vs
#     `btrfs subvolume delete --commit-after` followed by `btrfs subvolume sync`;
#   - cowfs only: rollback, and the checks of issue 5 on the real mount: a rollback gives
#     back every file byte for byte; deleting a snapshot whose files were overwritten gives
#     store use back to the figure before the snapshot.
# A benchmark, not a test: the checks print PASS/FAIL, the exit code is 0 unless set-up fails.

set -u
set -o pipefail
export LC_ALL=C

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
DEFAULT_BIN="$REPO/target/release/cowfs"
COWFS_BIN="${COWFS_BIN:-$DEFAULT_BIN}"
RUNS="${BENCH_RUNS:-5}"
BIG_SPEC="${BENCH_BIG:-8G}"
BENCH_DIR="${BENCH_DIR:-/var/tmp}"
MIB=$((1 << 20))
GIB=$((1 << 30))
TREE_DIRS=200
TREE_FILES_PER_DIR=50

die() { echo "bench: $*" >&2; exit 1; }
note() { echo "bench: $*"; }

case "${1:-}" in -h | --help) sed -n '2,25p' "$0"; exit 0 ;; esac
[ $# -eq 0 ] || die "no arguments expected (settings come from the environment; see --help)"
[ "$(id -u)" = 0 ] || die "run as root (loop devices, mount, drop_caches)"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer, not '$RUNS'"
BIG=$(numfmt --from=iec -- "${BIG_SPEC%iB}" 2>/dev/null) || die "BENCH_BIG: cannot read '$BIG_SPEC'"
BIG=$((BIG / (64 * MIB) * 64 * MIB))
human() { numfmt --to=iec-i --suffix=B -- "$1"; }

command -v mkfs.btrfs >/dev/null 2>&1 || {
    command -v apt-get >/dev/null 2>&1 || die "btrfs-progs missing and no apt-get"
    note "installing btrfs-progs..."
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq btrfs-progs; } \
        >/dev/null 2>&1 || die "apt-get install btrfs-progs failed"
}
grep -qw btrfs /proc/filesystems || modprobe btrfs 2>/dev/null || die "this kernel has no btrfs"
if [ ! -x "$COWFS_BIN" ]; then
    [ "$COWFS_BIN" = "$DEFAULT_BIN" ] || die "COWFS_BIN=$COWFS_BIN is not an executable"
    note "building cowfs (cargo build --release)..."
    (cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed"
fi

mkdir -p -- "$BENCH_DIR" || die "cannot create BENCH_DIR=$BENCH_DIR"
avail=$(df -B1 --output=avail -- "$BENCH_DIR" | tail -n 1 | tr -d ' ')
need=$((2 * (BIG + 2 * GIB) + GIB))
[ "$avail" -ge "$need" ] || die "$BENCH_DIR has $(human "$avail") free; need $(human "$need") (lower BENCH_BIG)"

WORK="" LOOP="" CMNT="" BMNT=""
# shellcheck disable=SC2317  # called through the EXIT trap
cleanup() {
    local rc=$?
    trap - EXIT INT TERM HUP
    set +e
    cd / || true
    if [ -n "$CMNT" ] && mountpoint -q -- "$CMNT"; then
        "$COWFS_BIN" umount -- "$CMNT" >/dev/null 2>&1 || umount -l -- "$CMNT"
    fi
    if [ -n "$BMNT" ] && mountpoint -q -- "$BMNT"; then
        umount -- "$BMNT" 2>/dev/null || { sleep 1; umount -- "$BMNT"; } || umount -l -- "$BMNT"
    fi
    [ -n "$LOOP" ] && losetup -d "$LOOP"
    [ -n "$WORK" ] && rm -rf --one-file-system -- "$WORK"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

WORK="$(mktemp -d "$BENCH_DIR/cowfs-snapbench.XXXXXX")" || die "cannot make a directory in $BENCH_DIR"
BMNT="$WORK/btrfs"
CMNT="$WORK/cowfs"
mkdir -p -- "$BMNT" "$CMNT"
img_size=$((BIG + 8 * GIB))
truncate -s "$img_size" -- "$WORK/btrfs.img" || die "cannot create the btrfs image"
LOOP="$(losetup -f --show -- "$WORK/btrfs.img")" || die "losetup failed"
mkfs.btrfs -q -f "$LOOP" >/dev/null 2>&1 || die "mkfs.btrfs failed"
mount -- "$LOOP" "$BMNT" || die "mount $LOOP failed"
btrfs subvolume create "$BMNT/vol" >/dev/null || die "btrfs subvolume create failed"
mkdir -p -- "$BMNT/snaps"
"$COWFS_BIN" mount -- "$WORK/store" "$CMNT" >/dev/null || die "cowfs mount failed"
note "btrfs $(human "$img_size") image on $LOOP; cowfs store $WORK/store ($("$COWFS_BIN" --version)); kernel $(uname -r); runs: $RUNS"

# ------------------------------------------------------------------ the tree
head -c $((64 * MIB)) /dev/urandom >"$WORK/chunk" || die "cannot write random data"
make_tree() { # DIR
    local d sub i
    for ((d = 0; d < TREE_DIRS; d++)); do
        sub=$(printf '%s/d%03d' "$1" "$d")
        mkdir -p -- "$sub" || return 1
        dd if="$WORK/chunk" bs=4096 skip=$((d * TREE_FILES_PER_DIR)) count=$TREE_FILES_PER_DIR \
            status=none | split -b 4096 -a 2 -d - "$sub/f" || return 1
    done
    if [ "$BIG" -gt 0 ]; then
        for ((i = 0; i < BIG / (64 * MIB); i++)); do cat -- "$WORK/chunk"; done >"$1/big" || return 1
    fi
    sync -f "$1"
}
for fs in cowfs btrfs; do
    if [ "$fs" = cowfs ]; then dir=$CMNT; else dir=$BMNT/vol; fi
    s=$EPOCHREALTIME
    make_tree "$dir" || die "making the tree on $fs failed"
    note "tree on $fs: $((TREE_DIRS * TREE_FILES_PER_DIR)) x 4 KiB + $(human "$BIG") in $(awk -v a="$s" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f s", b - a }')"
done

# ------------------------------------------------------------------ timing
declare -A S
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
timed() { # KEY CMD...: wall ms of CMD, caches dropped first
    local key=$1 s e
    shift
    drop_caches
    s=$EPOCHREALTIME
    if ! "$@" >/dev/null 2>"$WORK/err"; then
        echo "  ! FAILED: $*: $(head -c 300 "$WORK/err")"
        return 1
    fi
    e=$EPOCHREALTIME
    S[$key]+="$(awk -v u="$((${e/./} - ${s/./}))" 'BEGIN { printf "%.2f", u / 1000 }') "
}
summary() { # KEY -> "median (min-max)"
    tr ' ' '\n' <<<"${S[$1]:-}" | awk 'NF' | sort -g | awk '{ v[NR] = $1 }
        END { if (NR == 0) { print "n/a"; exit }
              m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
              printf "%.1f (%.1f-%.1f)", m, v[1], v[NR] }'
}
median() { summary "$1" | awk '{ print $1 }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "n/a" || b == "n/a" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }

note "timing $RUNS snapshots of each kind..."
for ((r = 1; r <= RUNS; r++)); do
    timed ro.cowfs "$COWFS_BIN" snapshot create "$CMNT" "ro$r"
    timed ro.btrfs btrfs subvolume snapshot -r "$BMNT/vol" "$BMNT/snaps/ro$r"
    timed rw.cowfs "$COWFS_BIN" snapshot create --writable "$CMNT" "rw$r"
    timed rw.btrfs btrfs subvolume snapshot "$BMNT/vol" "$BMNT/snaps/rw$r"
done
for ((r = 1; r <= RUNS; r++)); do
    timed del.cowfs "$COWFS_BIN" snapshot delete --wait "$CMNT" "rw$r"
    timed del.btrfs sh -c "btrfs subvolume delete --commit-after '$BMNT/snaps/rw$r' && btrfs subvolume sync '$BMNT'"
done

# ------------------------------------------------------------------ cowfs checks on the mount
used() { "$COWFS_BIN" stats --json "$CMNT" | sed -n 's/.*"used_pages":\([0-9]*\).*/\1/p'; }
checksums() { (cd "$CMNT" && find . -path ./.snapshots -prune -o -type f -print0 | sort -z | xargs -0 sha256sum); }
sums_before=$(checksums | sha256sum)
"$COWFS_BIN" snapshot create "$CMNT" keep >/dev/null || die "snapshot keep failed"
# modify: overwrite files, delete some, add some; then roll back
for ((d = 0; d < 20; d++)); do head -c 4096 /dev/urandom >"$CMNT/$(printf 'd%03d' "$d")/f00"; done
rm -rf -- "$CMNT/d199"
echo new >"$CMNT/newfile"
[ "$BIG" -gt 0 ] && dd if=/dev/urandom of="$CMNT/big" bs=1M count=256 seek=100 conv=notrunc status=none
timed rollback.cowfs "$COWFS_BIN" snapshot rollback "$CMNT" keep
sums_after=$(checksums | sha256sum)
rollback_ok=0
[ "$sums_before" = "$sums_after" ] && [ ! -e "$CMNT/newfile" ] && rollback_ok=1

# delete after overwrite: store use comes back to the figure before the snapshot
for ((r = 1; r <= RUNS; r++)); do "$COWFS_BIN" snapshot delete --wait "$CMNT" "ro$r" >/dev/null; done
"$COWFS_BIN" snapshot delete --wait "$CMNT" keep >/dev/null
sync -f "$CMNT/big" 2>/dev/null
u0=$(used)
"$COWFS_BIN" snapshot create "$CMNT" over >/dev/null || die "snapshot over failed"
[ "$BIG" -gt 0 ] && dd if=/dev/urandom of="$CMNT/big" bs=1M count=1024 conv=notrunc status=none
for ((d = 0; d < TREE_DIRS; d++)); do head -c 4096 /dev/urandom >"$CMNT/$(printf 'd%03d' "$d")/f01"; done
sync -f "$CMNT/big" 2>/dev/null
u1=$(used)
"$COWFS_BIN" snapshot delete --wait "$CMNT" over >/dev/null || die "snapshot delete over failed"
u2=$(used)
note "store pages used: before the snapshot $u0, after overwriting under it $u1, after deleting it $u2"

# ------------------------------------------------------------------ report
echo
printf '%-44s %-22s %-22s %s\n' "wall time, ms (median, min-max)" cowfs btrfs cowfs/btrfs
row() { printf '%-44s %-22s %-22s %s\n' "$1" "$(summary "$2.cowfs")" "$(summary "$2.btrfs")" "$(ratio "$(median "$2.cowfs")" "$(median "$2.btrfs")")"; }
row "read-only snapshot of the tree" ro
row "writable snapshot of the tree" rw
row "delete a snapshot, space back" del
printf '%-44s %-22s %-22s %s\n' "rollback to a snapshot (cowfs only)" "$(summary rollback.cowfs)" "-" "-"
echo
verdict() { if [ "$1" = 1 ]; then echo PASS; else echo FAIL; fi; }
c=$(median ro.cowfs) b=$(median ro.btrfs)
echo "$(verdict "$(awk -v c="$c" -v b="$b" 'BEGIN { print (c != "n/a" && c <= b) }')"): snapshot create at most btrfs's time ($c vs $b ms)"
echo "$(verdict "$rollback_ok"): snapshot, modify, rollback: every file byte-identical to the snapshot"
echo "$(verdict "$([ "$u2" = "$u0" ] && [ "$u1" -gt "$u0" ] && echo 1)"): delete after overwrite: store use back to the figure before the snapshot ($u0 -> $u1 -> $u2 pages)"
exit 0
