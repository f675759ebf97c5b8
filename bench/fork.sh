#!/usr/bin/env bash
# bench/fork.sh - the page layer next to Linux fork(), side by side in one run: fork of a
# populated address space (1 GiB and 8 GiB by default) and the copy-on-write fault cost per
# page, with ratios.
#
# Usage: bench/fork.sh
# Environment:
#   COWFS_BIN    cowfs binary (default REPO/target/release/cowfs, built with
#                `cargo build --release` when missing)
#   BENCH_SIZES  sizes to fork (default "1G 8G")
#   BENCH_RUNS   runs per figure, interleaved cowfs/Linux; the median is shown (default 3)
#   BENCH_FORKS  forks timed per run, the median is kept (default 9)
#   BENCH_FAULT_PAGES  pages written after the fork to time faults (default 262144 = 1 GiB;
#                the same count on both sides, capped at the size)
#   BENCH_DISK   1 (default): also run cowfs with its page store on disk (`--store`), the page
#                file the mounted file system uses; 0 skips that row
#   BENCH_DIR    where that on-disk page store goes (default /var/tmp: a real disk)
# The reference is bench/fork_linux.c (built here with cc -O2): a process touches SIZE bytes
# of anonymous memory (4 KiB pages, no THP), forks, and the child writes one byte per page.
# cowfs runs `cowfs pages bench`: an address space on a fresh page store populated with SIZE
# bytes, forked, and the fork written one byte per page. Its page store is in anonymous
# memory (4 KiB pages, like the reference's), and, as a second row, on disk: there every
# copy is a new page of the store file (page cache + file system), which costs more than an
# anonymous page and is not what Linux's figure measures. As root, dirty pages are written
# back and caches dropped before every measurement. A benchmark, not a test: the checks
# print PASS/FAIL and the exit code is 0 unless the set-up fails.

set -u
set -o pipefail
export LC_ALL=C

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
DEFAULT_BIN="$REPO/target/release/cowfs"
COWFS_BIN="${COWFS_BIN:-$DEFAULT_BIN}"
SIZES="${BENCH_SIZES:-1G 8G}"
RUNS="${BENCH_RUNS:-3}"
FORKS="${BENCH_FORKS:-9}"
FAULT_PAGES="${BENCH_FAULT_PAGES:-262144}"
BENCH_DIR="${BENCH_DIR:-/var/tmp}"
DISK="${BENCH_DISK:-1}"

die() { echo "bench: $*" >&2; exit 1; }
note() { echo "bench: $*"; }

case "${1:-}" in -h | --help) sed -n '2,27p' "$0"; exit 0 ;; esac
[ $# -eq 0 ] || die "no arguments expected (settings come from the environment; see --help)"
for v in RUNS FORKS FAULT_PAGES; do
    [[ "${!v}" =~ ^[1-9][0-9]*$ ]] || die "BENCH_$v must be a positive integer, not '${!v}'"
done
to_bytes() { numfmt --from=iec -- "${1%iB}" 2>/dev/null; }

if [ "$COWFS_BIN" = "$DEFAULT_BIN" ] && [ ! -x "$COWFS_BIN" ]; then
    note "building cowfs (cargo build --release)"
    (cd "$REPO" && cargo build --release -q) || die "cargo build --release failed"
fi
[ -x "$COWFS_BIN" ] || die "COWFS_BIN=$COWFS_BIN is not an executable"
command -v cc >/dev/null 2>&1 || die "a C compiler (cc) is needed for the Linux reference"

WORK="$(mktemp -d "$BENCH_DIR/cowfs-forkbench.XXXXXX")" || die "cannot make a directory in $BENCH_DIR"
cleanup() { rm -rf --one-file-system -- "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
cc -O2 -o "$WORK/fork_linux" "$REPO/bench/fork_linux.c" || die "cannot build bench/fork_linux.c"

# json FIELD < line: one number out of a one-line JSON object
json() { sed -n "s/.*\"$1\":\\([0-9.]*\\).*/\\1/p"; }
median() { tr ' ' '\n' | grep . | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a == "" || b == "" || b == 0) print "n/a"; else printf "%.2f", a / b }'; }

# Before each measurement: dirty page cache written back and dropped (as root), so no run
# pays for reclaiming what the one before left (the on-disk store leaves gigabytes).
settle() { sync; [ "$(id -u)" = 0 ] && echo 3 >/proc/sys/vm/drop_caches; return 0; }

declare -A R=()
mem_kib=$(awk '/MemAvailable/ { print $2 }' /proc/meminfo)
for spec in $SIZES; do
    bytes=$(to_bytes "$spec") || die "BENCH_SIZES: cannot read '$spec'"
    pages=$((bytes / 4096))
    fp=$((FAULT_PAGES < pages ? FAULT_PAGES : pages))
    # Linux needs the touched memory plus what the child copies.
    if [ $(((bytes + fp * 4096) / 1024)) -gt $((mem_kib * 9 / 10)) ]; then
        note "$spec: not enough memory for the Linux reference ($((mem_kib / 1024)) MiB available); skipped"
        continue
    fi
    free_kib=$(df -Pk "$WORK" | awk 'NR == 2 { print $4 }')
    if [ $(((bytes + fp * 4096) / 1024 + 1048576)) -gt "$free_kib" ]; then
        note "$spec: not enough space in $BENCH_DIR for cowfs's scratch store; skipped"
        continue
    fi
    for run in $(seq 1 "$RUNS"); do
        settle
        out=$("$WORK/fork_linux" "$bytes" "$FORKS" "$fp") || die "fork_linux $bytes failed"
        R[$spec.linux.fork]+="$(json fork_us <<<"$out") "
        R[$spec.linux.fault]+="$(json fault_us_per_page <<<"$out") "
        settle
        out=$("$COWFS_BIN" pages bench --size "$bytes" --forks "$FORKS" --fault-pages "$fp" \
            --json) || die "cowfs pages bench --size $spec failed"
        R[$spec.cowfs.fork]+="$(json fork_us <<<"$out") "
        R[$spec.cowfs.fault]+="$(json fault_us_per_page <<<"$out") "
        if [ "$DISK" != 0 ]; then
            rm -rf "$WORK/store"
            settle
            out=$("$COWFS_BIN" pages bench --size "$bytes" --forks "$FORKS" --fault-pages "$fp" \
                --json --store "$WORK/store") || die "cowfs pages bench --size $spec --store failed"
            rm -rf "$WORK/store"
            R[$spec.disk.fork]+="$(json fork_us <<<"$out") "
            R[$spec.disk.fault]+="$(json fault_us_per_page <<<"$out") "
        fi
        note "$spec run $run: linux fork $(echo "${R[$spec.linux.fork]}" | awk '{ print $NF }') us," \
            "cowfs fork $(echo "${R[$spec.cowfs.fork]}" | awk '{ print $NF }') us;" \
            "fault linux $(echo "${R[$spec.linux.fault]}" | awk '{ print $NF }')," \
            "cowfs $(echo "${R[$spec.cowfs.fault]}" | awk '{ print $NF }')," \
            "on disk $(echo "${R[$spec.disk.fault]:-n/a}" | awk '{ print $NF }') us/page"
    done
    R[$spec.fp]=$fp
done

echo
printf '%-34s %14s %14s %12s\n' "median of $RUNS runs" "Linux fork()" "cowfs" "Linux/cowfs"
for spec in $SIZES; do
    [ -n "${R[$spec.fp]:-}" ] || continue
    lf=$(median <<<"${R[$spec.linux.fork]}"); cf=$(median <<<"${R[$spec.cowfs.fork]}")
    lu=$(median <<<"${R[$spec.linux.fault]}"); cu=$(median <<<"${R[$spec.cowfs.fault]}")
    R[$spec.lf]=$lf; R[$spec.cf]=$cf; R[$spec.lu]=$lu; R[$spec.cu]=$cu
    printf '%-34s %11.1f us %11.2f us %11sx\n' "fork of $spec populated" "$lf" "$cf" "$(ratio "$lf" "$cf")"
    printf '%-34s %11.2f us %11.2f us %11sx\n' "CoW fault per page ($fp pages)" "$lu" "$cu" "$(ratio "$lu" "$cu")"
    if [ -n "${R[$spec.disk.fault]:-}" ]; then
        df_=$(median <<<"${R[$spec.disk.fork]}"); du_=$(median <<<"${R[$spec.disk.fault]}")
        printf '%-34s %11.1f us %11.2f us %11sx\n' "  store on disk: fork" "$lf" "$df_" "$(ratio "$lf" "$df_")"
        printf '%-34s %11.2f us %11.2f us %11sx\n' "  store on disk: CoW fault" "$lu" "$du_" "$(ratio "$lu" "$du_")"
    fi
done
echo
verdict() { if [ "$1" = 1 ]; then echo PASS; else echo FAIL; fi; }
sizes=($SIZES)
first=${sizes[0]}
last=${sizes[${#sizes[@]} - 1]}
if [ -n "${R[$first.cf]:-}" ]; then
    s=$(ratio "${R[$first.lf]}" "${R[$first.cf]}")
    echo "$(verdict "$(awk -v s="$s" 'BEGIN { print (s >= 30) }')"): fork of $first at least 30x faster than Linux fork() (${s}x)"
    s=$(ratio "${R[$first.lu]}" "${R[$first.cu]}")
    echo "$(verdict "$(awk -v s="$s" 'BEGIN { print (s >= 1) }')"): CoW fault per page no slower than Linux's (${R[$first.cu]} vs ${R[$first.lu]} us: Linux/cowfs ${s}x)"
fi
if [ "$first" != "$last" ] && [ -n "${R[$first.cf]:-}" ] && [ -n "${R[$last.cf]:-}" ]; then
    s=$(ratio "${R[$last.cf]}" "${R[$first.cf]}")
    echo "$(verdict "$(awk -v s="$s" 'BEGIN { print (s <= 1.5) }')"): cowfs fork of $last within 1.5x of $first (${R[$last.cf]} vs ${R[$first.cf]} us: ${s}x)"
fi
exit 0
