#!/usr/bin/env bash
# bench/datapath.sh - the data path, side by side: ext4 directly, libfuse's passthrough_ll over
# ext4, and cowfs with its store on ext4 (same disk); fio sequential and 4 KiB random I/O,
# metadata (create, stat, unlink), cp and writes over the copy.
#
# Usage (as root):  bench/datapath.sh
# Environment:
#   COWFS_BIN        cowfs binary (default REPO/target/release/cowfs; never built by this script)
#   COWFS_MOUNT_ARGS extra arguments to `cowfs mount`, e.g. "--threads 2". Default: the same
#                    access set-up as passthrough_ll's: "--private" (root only, no kernel
#                    permission checks, as passthrough_ll runs by default), or none (shared,
#                    checked by the kernel) when BENCH_PT_OPTS has allow_other
#   BENCH_DIR        the disk: every directory and the cowfs store go there (default /var/tmp)
#   BENCH_RUNS       runs per figure; the median is shown with the spread min-max (default 3)
#   BENCH_FS         filesystems, any of "ext4 pt cowfs" (default all three)
#   BENCH_PT_OPTS    more passthrough_ll -o options, e.g. default_permissions,allow_other
#                    (the kernel then checks permissions for it as it does for cowfs)
#   BENCH_ONLY       jobs, any of "seqw seqr rrwarm rrcold rw1 rw2 meta clone" (default all)
#   BENCH_SIZE       sequential file (default 2G)       BENCH_RAND_SIZE  random file (default 1G)
#   BENCH_RAND_IO    bytes written per random-write job (default 256M)
#   BENCH_SECS       seconds per random-read job (default 10)
#   BENCH_FILES      empty files for the metadata jobs (default 10000)
#   BENCH_LOG        if set, the cowfs daemon log is copied there at the end
# Installs fio, fuse3, libfuse3-dev, gcc, pkg-config, python3 with apt-get when missing. Builds
# passthrough_ll and a small metadata helper with gcc in a work directory in BENCH_DIR, mounts
# everything there, and unmounts and removes it all at exit, also on failure or Ctrl-C. Runs
# are interleaved (run 1 on each filesystem, then run 2, ...). A benchmark, not a test: the
# checks print PASS/FAIL, the exit code is 0 (non-zero only if the set-up fails).

set -u
set -o pipefail
export LC_ALL=C

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd -P)"
COWFS_BIN="${COWFS_BIN:-$REPO/target/release/cowfs}"
BENCH_DIR="${BENCH_DIR:-/var/tmp}"
RUNS="${BENCH_RUNS:-3}"
FS_LIST="${BENCH_FS:-ext4 pt cowfs}"
PT_OPTS="${BENCH_PT_OPTS:-}"
ONLY="${BENCH_ONLY:-seqw seqr rrwarm rrcold rw1 rw2 meta clone}"
SIZE_SPEC="${BENCH_SIZE:-2G}"
RAND_SPEC="${BENCH_RAND_SIZE:-1G}"
RAND_IO_SPEC="${BENCH_RAND_IO:-256M}"
SECS="${BENCH_SECS:-10}"
NFILES="${BENCH_FILES:-10000}"
if [ -z "${COWFS_MOUNT_ARGS+set}" ]; then
    case ",$PT_OPTS," in
    *,allow_other,*) COWFS_MOUNT_ARGS="" ;;
    *) COWFS_MOUNT_ARGS="--private" ;;
    esac
fi
read -r -a MOUNT_ARGS <<<"$COWFS_MOUNT_ARGS"

KIB=1024
MIB=$((1024 * KIB))
GIB=$((1024 * MIB))
ALL_FS="ext4 pt cowfs"
ALL_JOBS="seqw seqr rrwarm rrcold rw1 rw2 meta clone"

die() { echo "bench: $*" >&2; exit 1; }
note() { echo "bench: $*"; }

case "${1:-}" in -h | --help) sed -n '2,25p' "$0"; exit 0 ;; esac
[ $# -eq 0 ] || die "no arguments expected (settings come from the environment; see --help)"
[ "$(id -u)" = 0 ] || die "run as root (mounts, drop_caches)"
[[ "$RUNS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_RUNS must be a positive integer, not '$RUNS'"
[[ "$SECS" =~ ^[1-9][0-9]*$ ]] || die "BENCH_SECS must be a positive integer, not '$SECS'"
[[ "$NFILES" =~ ^[1-9][0-9]*$ ]] || die "BENCH_FILES must be a positive integer, not '$NFILES'"
for f in $FS_LIST; do [[ " $ALL_FS " == *" $f "* ]] || die "BENCH_FS: unknown '$f' (any of: $ALL_FS)"; done
for j in $ONLY; do [[ " $ALL_JOBS " == *" $j "* ]] || die "BENCH_ONLY: unknown '$j' (any of: $ALL_JOBS)"; done
[ -n "${FS_LIST// /}" ] || die "BENCH_FS is empty"
[ -n "${ONLY// /}" ] || die "BENCH_ONLY is empty"
FSES=()
for f in $ALL_FS; do [[ " $FS_LIST " == *" $f "* ]] && FSES+=("$f"); done # fixed order
want() { [[ " $ONLY " == *" $1 "* ]]; }
has_fs() { [[ " ${FSES[*]} " == *" $1 "* ]]; }

# ------------------------------------------------------------------ sizes
to_bytes() { # 2G, 2GiB, 512M -> bytes (IEC)
    local s="${1%iB}"
    s="${s%B}"
    numfmt --from=iec -- "$s" 2>/dev/null
}
human() { numfmt --to=iec-i --suffix=B -- "$1"; }

SIZE=$(to_bytes "$SIZE_SPEC") || die "BENCH_SIZE: cannot read size '$SIZE_SPEC'"
RAND=$(to_bytes "$RAND_SPEC") || die "BENCH_RAND_SIZE: cannot read size '$RAND_SPEC'"
RAND_IO=$(to_bytes "$RAND_IO_SPEC") || die "BENCH_RAND_IO: cannot read size '$RAND_IO_SPEC'"
SIZE=$((SIZE / MIB * MIB))             # whole 1 MiB blocks
RAND=$((RAND / (2 * MIB) * (2 * MIB))) # two halves of whole MiB (the 2-job write)
RAND_IO=$((RAND_IO / (8 * KIB) * (8 * KIB)))
[ "$SIZE" -gt 0 ] || die "BENCH_SIZE must be at least 1M"
[ "$RAND" -gt 0 ] || die "BENCH_RAND_SIZE must be at least 2M"
[ "$RAND_IO" -gt 0 ] || die "BENCH_RAND_IO must be at least 8K"

# ------------------------------------------------------------------ prerequisites
missing=()
command -v fio >/dev/null 2>&1 || missing+=(fio)
command -v gcc >/dev/null 2>&1 || missing+=(gcc)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v python3 >/dev/null 2>&1 || missing+=(python3)
command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
PT_SRC_DIR=/usr/share/doc/libfuse3-dev/examples
if has_fs pt; then
    { [ -f "$PT_SRC_DIR/passthrough_ll.c" ] && pkg-config --exists fuse3 2>/dev/null; } ||
        missing+=(libfuse3-dev)
fi
if [ ${#missing[@]} -gt 0 ]; then
    command -v apt-get >/dev/null 2>&1 || die "missing ${missing[*]} and no apt-get: install them"
    note "installing ${missing[*]}..."
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}"; } \
        >/dev/null 2>&1 || die "apt-get install ${missing[*]} failed"
fi
if has_fs pt; then
    if [ ! -f "$PT_SRC_DIR/passthrough_ll.c" ] || [ ! -f "$PT_SRC_DIR/passthrough_helpers.h" ]; then
        die "no $PT_SRC_DIR/passthrough_ll.c (libfuse3-dev examples)"
    fi
fi
if has_fs cowfs; then
    # a build may be replacing the default binary right now: give it a little time
    if [ "$COWFS_BIN" = "$REPO/target/release/cowfs" ]; then
        for ((i = 0; i < 30; i++)); do [ -x "$COWFS_BIN" ] && break; sleep 1; done
    fi
    [ -x "$COWFS_BIN" ] || die "no cowfs binary at $COWFS_BIN: run \`cargo build --release\` (or set COWFS_BIN)"
fi

# ------------------------------------------------------------------ space
mkdir -p -- "$BENCH_DIR" || die "cannot create BENCH_DIR=$BENCH_DIR"
BENCH_DIR="$(cd "$BENCH_DIR" && pwd -P)"
[[ "$BENCH_DIR" =~ ^[A-Za-z0-9_./+-]+$ ]] ||
    die "BENCH_DIR=$BENCH_DIR: use a path without blanks, ':' or other special characters (fio)"
BASE_FS=$(findmnt -n -o FSTYPE -T "$BENCH_DIR" 2>/dev/null || stat -f -c %T -- "$BENCH_DIR")
[ "$BASE_FS" = ext4 ] || note "NOTE: $BENCH_DIR is on $BASE_FS, not ext4: the 'ext4' column is $BASE_FS"
avail=$(df -B1 --output=avail -- "$BENCH_DIR" | tail -n 1 | tr -d ' ')
# Per filesystem: the sequential file, the random file and its copy, metadata; cowfs copies on
# write (old pages are freed at its commits): count it twice. Plus 1 GiB of slack.
need=$(((${#FSES[@]} + 1) * (SIZE + 2 * RAND + 64 * MIB) + GIB))
[ "$avail" -ge "$need" ] || die "$BENCH_DIR has $(human "$avail") free; need $(human "$need")"

# ------------------------------------------------------------------ set-up and clean-up
WORK=""
CBIN=""      # private copy of the cowfs binary (a rebuild cannot change it under us)
CMNT=""      # cowfs mount point
STORE=""     # cowfs store
COWFS_PID="" # cowfs daemon
PMNT=""      # passthrough_ll mount point
PT_PID=""    # passthrough_ll (runs with -f in the background)

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
    cd / || true
    [ "$rc" -ne 0 ] && [ -n "$WORK" ] && echo "bench: stopped (exit $rc); unmounting and removing $WORK" >&2
    if [ -n "$CMNT" ] && mountpoint -q -- "$CMNT"; then
        "$CBIN" umount -- "$CMNT" >/dev/null 2>&1 ||
            "$CBIN" umount --lazy -- "$CMNT" >/dev/null 2>&1 ||
            umount -l -- "$CMNT"
    fi
    if [ -n "$PMNT" ] && mountpoint -q -- "$PMNT"; then
        fusermount3 -u -- "$PMNT" 2>/dev/null || umount -- "$PMNT" 2>/dev/null ||
            { sleep 1; umount -- "$PMNT"; } 2>/dev/null || umount -l -- "$PMNT"
    fi
    wait_gone "$COWFS_PID" 30
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
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

WORK="$(mktemp -d "$BENCH_DIR/cowfs-datapath.XXXXXX")" || die "cannot make a work directory in $BENCH_DIR"
ERRLOG="$WORK/errors"
FIO_OUT="$WORK/fio.json"
mkdir -p -- "$WORK/bin" || die "cannot create $WORK/bin"

# metadata helper: DIR N create|stat|unlink -> microseconds per operation, or
# DIR N statwarm DIR2... -> one line per directory: every directory is statted once untimed,
# then 9 rounds each time one pass in every directory in turn (every other round in reverse
# order); the median pass of each. One
# warm pass takes only ~15 ms, and the machine drifts by 15% over seconds: passes taken turn
# about, in one process, compare like with like.
cat >"$WORK/bin/meta.c" <<'EOF'
#define _GNU_SOURCE
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define ROUNDS 9
#define MAXDIRS 8

static double now(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return t.tv_sec + t.tv_nsec / 1e9;
}

static char (*names)[16];

/* one pass of MODE over the N names in dfd: microseconds per operation, or -1 */
static double pass(int dfd, long n, const char *mode) {
    struct stat st;
    double t0 = now();
    for (long i = 0; i < n; i++) {
        int rc;
        if (strcmp(mode, "create") == 0) {
            int fd = openat(dfd, names[i], O_CREAT | O_EXCL | O_WRONLY | O_CLOEXEC, 0644);
            rc = fd < 0 ? -1 : close(fd);
        } else if (strcmp(mode, "stat") == 0 || strcmp(mode, "statwarm") == 0) {
            rc = fstatat(dfd, names[i], &st, 0);
        } else if (strcmp(mode, "unlink") == 0) {
            rc = unlinkat(dfd, names[i], 0);
        } else {
            fprintf(stderr, "meta: unknown mode %s\n", mode);
            return -1;
        }
        if (rc != 0) { fprintf(stderr, "meta: %s %s: ", mode, names[i]); perror(""); return -1; }
    }
    return (now() - t0) * 1e6 / n;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    if (argc < 4) {
        fprintf(stderr, "usage: meta DIR N create|stat|unlink, or meta DIR N statwarm [DIR...]\n");
        return 2;
    }
    long n = atol(argv[2]);
    const char *mode = argv[3];
    int warm = strcmp(mode, "statwarm") == 0;
    int ndirs = warm ? 1 + (argc - 4) : 1;
    if (n <= 0 || ndirs > MAXDIRS || (!warm && argc != 4)) { fprintf(stderr, "meta: bad arguments\n"); return 2; }
    int dfd[MAXDIRS];
    for (int d = 0; d < ndirs; d++) {
        const char *path = d == 0 ? argv[1] : argv[3 + d];
        dfd[d] = open(path, O_RDONLY | O_DIRECTORY);
        if (dfd[d] < 0) { perror(path); return 1; }
    }
    names = malloc(n * sizeof *names);
    if (!names) return 1;
    for (long i = 0; i < n; i++) snprintf(names[i], sizeof names[i], "f%07ld", i % 10000000);
    if (!warm) {
        double us = pass(dfd[0], n, mode);
        if (us < 0) return 1;
        printf("%.3f\n", us);
        return 0;
    }
    double us[MAXDIRS][ROUNDS];
    for (int d = 0; d < ndirs; d++)
        if (pass(dfd[d], n, mode) < 0) return 1;
    for (int r = 0; r < ROUNDS; r++) /* odd rounds in reverse order: no one always goes first */
        for (int k = 0; k < ndirs; k++) {
            int d = r % 2 ? ndirs - 1 - k : k;
            if ((us[d][r] = pass(dfd[d], n, mode)) < 0) return 1;
        }
    for (int d = 0; d < ndirs; d++) {
        qsort(us[d], ROUNDS, sizeof us[d][0], cmp);
        printf("%.3f\n", us[d][ROUNDS / 2]);
    }
    return 0;
}
EOF
gcc -O2 -Wall -o "$WORK/bin/meta" "$WORK/bin/meta.c" 2>"$ERRLOG" ||
    die "compiling the metadata helper failed: $(head -c 500 "$ERRLOG")"

if has_fs pt; then
    cp -- "$PT_SRC_DIR/passthrough_ll.c" "$PT_SRC_DIR/passthrough_helpers.h" "$WORK/bin/" ||
        die "cannot copy passthrough_ll.c"
    # shellcheck disable=SC2046  # pkg-config prints several words
    gcc -O2 -D_FILE_OFFSET_BITS=64 -DHAVE_FALLOCATE -DHAVE_COPY_FILE_RANGE \
        -o "$WORK/bin/passthrough_ll" "$WORK/bin/passthrough_ll.c" $(pkg-config --cflags --libs fuse3) \
        2>"$ERRLOG" || die "compiling passthrough_ll failed: $(head -c 500 "$ERRLOG")"
fi

declare -A DIR_OF # fs -> directory the jobs run in
declare -A NAME_OF=([ext4]="$BASE_FS" [pt]=passthrough_ll [cowfs]=cowfs)
if has_fs ext4; then
    DIR_OF[ext4]="$WORK/ext4"
    mkdir -p -- "${DIR_OF[ext4]}" || die "cannot create ${DIR_OF[ext4]}"
fi
if has_fs pt; then
    PMNT="$WORK/pt"
    mkdir -p -- "$WORK/pt-src" "$PMNT" || die "cannot create $PMNT"
    "$WORK/bin/passthrough_ll" -f -o "source=$WORK/pt-src,writeback,cache=always${PT_OPTS:+,$PT_OPTS}" "$PMNT" \
        >"$WORK/pt.log" 2>&1 &
    PT_PID=$!
    for ((i = 0; i < 100; i++)); do
        mountpoint -q -- "$PMNT" && break
        pid_alive "$PT_PID" || break
        sleep 0.1
    done
    mountpoint -q -- "$PMNT" || die "passthrough_ll did not mount $PMNT: $(head -c 500 "$WORK/pt.log")"
    DIR_OF[pt]="$PMNT"
fi
if has_fs cowfs; then
    CBIN="$WORK/bin/cowfs"
    cp -- "$COWFS_BIN" "$CBIN" || die "cannot copy $COWFS_BIN (being rebuilt? try again)"
    "$CBIN" --version >/dev/null 2>&1 || die "$COWFS_BIN does not run (being rebuilt? try again)"
    CMNT="$WORK/cowfs"
    STORE="$WORK/store"
    mkdir -p -- "$CMNT" || die "cannot create $CMNT"
    out=$("$CBIN" mount "${MOUNT_ARGS[@]}" -- "$STORE" "$CMNT" 2>&1) || die "cowfs mount failed: $out"
    COWFS_PID=$(sed -n 's/.*daemon pid \([0-9][0-9]*\).*/\1/p' <<<"$out" | head -n 1)
    if [ -z "$COWFS_PID" ]; then # find it by its executable (our private copy)
        for p in /proc/[0-9]*; do
            [ "$(readlink "$p/exe" 2>/dev/null)" = "$CBIN" ] && COWFS_PID=${p#/proc/}
        done
    fi
    mountpoint -q -- "$CMNT" || die "cowfs did not mount $CMNT: $out"
    DIR_OF[cowfs]="$CMNT"
fi

# ------------------------------------------------------------------ settings
commit=$(git -C "$REPO" rev-parse --short HEAD 2>/dev/null || echo "?")
if [ -n "$(git -C "$REPO" status --porcelain -- src Cargo.toml Cargo.lock 2>/dev/null)" ]; then
    commit+=" + uncommitted changes in src/"
fi
note "kernel $(uname -r), $(nproc) CPUs, $(awk '/MemTotal/ { printf "%.1f GiB", $2 / 1048576 }' /proc/meminfo) RAM, $(fio --version)"
note "disk: $BENCH_DIR ($BASE_FS on $(findmnt -n -o SOURCE -T "$BENCH_DIR" 2>/dev/null || echo ?)), work dir $WORK"
if has_fs cowfs; then
    note "cowfs: commit $commit, $("$CBIN" --version), binary $(date -r "$COWFS_BIN" '+%F %T'), daemon pid ${COWFS_PID:-?}"
    note "cowfs: mount ${MOUNT_ARGS[*]:-(default options)}, store $STORE at $CMNT"
fi
has_fs pt && note "passthrough_ll: libfuse $(pkg-config --modversion fuse3), -o writeback,cache=always${PT_OPTS:+,$PT_OPTS}, source $WORK/pt-src at $PMNT"
note "filesystems: ${FSES[*]}; jobs: $ONLY; runs: $RUNS"
note "sizes: sequential $(human "$SIZE"), random file $(human "$RAND"), random writes $(human "$RAND_IO") per job, random reads ${SECS} s, metadata $NFILES files"

# ------------------------------------------------------------------ measuring
declare -A S # JOB.FS -> "sample sample ..."

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
settle() { sync; sleep 1; } # after deletes: let freed space settle (cowfs commits)

# fio_parse bw|iops FILE: MiB/s or IOPS over all jobs in fio's JSON: bytes (or I/Os) summed
# over the jobs, divided by the longest job_runtime. fio counts the end_fsync in job_runtime.
fio_parse() {
    python3 - "$1" "$2" <<'EOF'
import json, sys
what, path = sys.argv[1], sys.argv[2]
text = open(path, errors="replace").read()
start = text.find("{")
if start < 0:
    sys.exit("no JSON in fio output")
data, _ = json.JSONDecoder().raw_decode(text[start:])
jobs = data.get("jobs") or []
if not jobs:
    sys.exit("no jobs in fio output")
total_bytes = total_ios = 0
runtime_ms = 0
for j in jobs:
    if j.get("error"):
        sys.exit("fio job %s: error %s" % (j.get("jobname"), j.get("error")))
    for d in ("read", "write"):
        total_bytes += j.get(d, {}).get("io_bytes", 0)
        total_ios += j.get(d, {}).get("total_ios", 0)
    rt = j.get("job_runtime") or max(j.get("read", {}).get("runtime", 0), j.get("write", {}).get("runtime", 0))
    runtime_ms = max(runtime_ms, rt)
if runtime_ms <= 0 or total_ios <= 0:
    sys.exit("fio did no I/O")
if what == "bw":
    print("%.1f" % (total_bytes / 1048576 / (runtime_ms / 1000)))
else:
    print("%.1f" % (total_ios / (runtime_ms / 1000)))
EOF
}

# fio_job KEY bw|iops FIO-ARGS...: runs fio, adds the figure to S[KEY].
fio_job() {
    local key=$1 what=$2 v
    shift 2
    if ! fio --output-format=json --fallocate=none --invalidate=0 "$@" >"$FIO_OUT" 2>"$ERRLOG"; then
        echo "  ! FAILED: $key: fio $*: $(head -c 300 "$ERRLOG")"
        return 1
    fi
    if ! v=$(fio_parse "$what" "$FIO_OUT" 2>"$ERRLOG"); then
        echo "  ! FAILED: $key: cannot read fio's output: $(head -c 300 "$ERRLOG")"
        return 1
    fi
    S[$key]+="$v "
}

# layout FILE BYTES: write FILE with fio (1 MiB blocks of fio's pseudo-random data), fsync.
layout() {
    fio --name=layout --filename="$1" --rw=write --bs=1M --size="$2" --ioengine=psync \
        --end_fsync=1 --fallocate=none --output-format=terse >/dev/null 2>"$ERRLOG" || {
        echo "  ! FAILED: laying out $1: $(head -c 300 "$ERRLOG")"
        return 1
    }
}

# meta_job KEY DIR MODE: the metadata helper; adds us/op to S[KEY].
meta_job() {
    local v
    if ! v=$("$WORK/bin/meta" "$2" "$NFILES" "$3" 2>"$ERRLOG"); then
        echo "  ! FAILED: $1: $(head -c 300 "$ERRLOG")"
        return 1
    fi
    S[$1]+="$v "
}

# timed_ms KEY CMD...: wall time of CMD in ms, added to S[KEY].
timed_ms() {
    local key=$1 s e
    shift
    s=$EPOCHREALTIME
    if ! "$@" >/dev/null 2>"$ERRLOG"; then
        echo "  ! FAILED: $key: $*: $(head -c 300 "$ERRLOG")"
        return 1
    fi
    e=$EPOCHREALTIME
    S[$key]+="$(awk -v u="$((${e/./} - ${s/./}))" 'BEGIN { printf "%.2f", u / 1000 }') "
}
# shellcheck disable=SC2317  # called through timed_ms
cp_sync() { cp -- "$1" "$2" && sync -- "$2"; } # cp, then fsync of the copy

RANDW=(--rw=randwrite --bs=4k --ioengine=psync --end_fsync=1)
RANDR=(--rw=randread --bs=4k --ioengine=psync --time_based --runtime="$SECS")
declare -A RAND_READY # fs -> 1 once its random file is laid out

# run_fs FS RUN: every selected job once on FS.
run_fs() {
    local fs=$1 d=${DIR_OF[$1]} s e
    if want seqw || want seqr; then
        rm -f -- "$d/seq"
        if want seqw; then
            drop_caches
            fio_job "seqw.$fs" bw --name=seqw --filename="$d/seq" --rw=write --bs=1M --size="$SIZE" \
                --ioengine=psync --end_fsync=1
        fi
        if want seqr; then
            if [ ! -f "$d/seq" ] || [ "$(stat -c %s -- "$d/seq")" -ne "$SIZE" ]; then
                layout "$d/seq" "$SIZE"
            fi
            drop_caches
            fio_job "seqr.$fs" bw --name=seqr --filename="$d/seq" --rw=read --bs=1M --size="$SIZE" \
                --ioengine=psync
        fi
        rm -f -- "$d/seq"
        settle
    fi
    if want rrwarm || want rrcold || want rw1 || want rw2 || want clone; then
        if [ -z "${RAND_READY[$fs]:-}" ]; then
            s=$EPOCHREALTIME
            layout "$d/rand" "$RAND" || return 1
            e=$EPOCHREALTIME
            RAND_READY[$fs]=1
            note "  $fs: laid out the $(human "$RAND") random file in $(awk -v a="$s" -v b="$e" \
                'BEGIN { printf "%.1f s", b - a }') (incl. fsync)"
        fi
    fi
    if want rrwarm; then
        cat -- "$d/rand" >/dev/null
        fio_job "rrwarm.$fs" iops --name=rrwarm --filename="$d/rand" --size="$RAND" "${RANDR[@]}"
    fi
    if want rrcold; then
        drop_caches
        fio_job "rrcold.$fs" iops --name=rrcold --filename="$d/rand" --size="$RAND" "${RANDR[@]}"
    fi
    if want rw1; then
        drop_caches
        fio_job "rw1.$fs" iops --name=rw1 --filename="$d/rand" --size="$RAND" --io_size="$RAND_IO" \
            "${RANDW[@]}"
    fi
    if want rw2; then # two jobs, one file, each over its own half
        drop_caches
        fio_job "rw2.$fs" iops --name=rw2 --filename="$d/rand" --numjobs=2 --size=$((RAND / 2)) \
            --offset_increment=$((RAND / 2)) --io_size=$((RAND_IO / 2)) "${RANDW[@]}"
    fi
    if want clone; then
        rm -f -- "$d/rand.copy"
        drop_caches
        timed_ms "cp.$fs" cp_sync "$d/rand" "$d/rand.copy" &&
            fio_job "cprw.$fs" iops --name=cprw --filename="$d/rand.copy" --size="$RAND" \
                --io_size="$RAND_IO" "${RANDW[@]}"
        rm -f -- "$d/rand.copy"
        settle
    fi
    if want meta; then
        local m="$d/meta"
        rm -rf --one-file-system -- "$m"
        mkdir -- "$m" && sync
        meta_job "create.$fs" "$m" create &&
            { drop_caches; meta_job "statcold.$fs" "$m" stat; } &&
            meta_job "unlink.$fs" "$m" unlink
        rm -rf --one-file-system -- "$m"
        settle
    fi
}

# stat_warm: the warm-stat job, on every filesystem at once: NFILES files in a fresh
# directory on each, then passes taken in turn (the helper's statwarm); adds to S[statwarm.*].
stat_warm() {
    local fs dirs=() out i=0
    for fs in "${FSES[@]}"; do
        rm -rf --one-file-system -- "${DIR_OF[$fs]}/statw"
        if ! { mkdir -- "${DIR_OF[$fs]}/statw" &&
            "$WORK/bin/meta" "${DIR_OF[$fs]}/statw" "$NFILES" create >/dev/null 2>"$ERRLOG"; }; then
            echo "  ! FAILED: statwarm: creating files on $fs: $(head -c 300 "$ERRLOG")"
            return 1
        fi
        dirs+=("${DIR_OF[$fs]}/statw")
    done
    if ! out=$("$WORK/bin/meta" "${dirs[0]}" "$NFILES" statwarm "${dirs[@]:1}" 2>"$ERRLOG"); then
        echo "  ! FAILED: statwarm: $(head -c 300 "$ERRLOG")"
    else
        while read -r v; do
            S[statwarm.${FSES[$i]}]+="$v "
            i=$((i + 1))
        done <<<"$out"
    fi
    for fs in "${FSES[@]}"; do rm -rf --one-file-system -- "${DIR_OF[$fs]}/statw"; done
    settle
}

T0=$EPOCHREALTIME
for ((r = 1; r <= RUNS; r++)); do
    for fs in "${FSES[@]}"; do
        s=$EPOCHREALTIME
        run_fs "$fs" "$r"
        e=$EPOCHREALTIME
        note "run $r/$RUNS on $fs: $(awk -v a="$s" -v b="$e" 'BEGIN { printf "%.0f s", b - a }')"
        mountpoint -q -- "${DIR_OF[$fs]}" || [ "$fs" = ext4 ] ||
            die "$fs is no longer mounted at ${DIR_OF[$fs]} (daemon died?)"
    done
    if want meta; then stat_warm; fi
done
T1=$EPOCHREALTIME

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
fmt_cell() { # KEY FORMAT -> "median (min-max)"
    local s
    has_fs "${1##*.}" || { echo "-"; return; }
    s=$(summary "$1")
    if [ -z "$s" ]; then echo "n/a"; return; fi
    awk -v s="$s" -v f="$2" 'BEGIN {
        split(s, a, " ")
        if (a[2] == a[3]) printf f, a[1]
        else printf f " (" f "-" f ")", a[1], a[2], a[3] }'
}
# speedup A B higher|lower -> how many times faster A is than B ("-" when missing)
speedup() {
    awk -v a="$1" -v b="$2" -v dir="$3" 'BEGIN {
        if (a == "" || b == "" || a == 0 || b == 0) { print "-"; exit }
        printf "%.2f", (dir == "higher") ? a / b : b / a }'
}
declare -A RATIO # JOB -> cowfs vs pt
row() { # LABEL JOB FORMAT higher|lower
    local c p e
    c=$(median "$2.cowfs")
    p=$(median "$2.pt")
    e=$(median "$2.ext4")
    RATIO[$2]=$(speedup "$c" "$p" "$4")
    printf '%-31s %-24s %-24s %-24s %-9s %-10s %s\n' "$1" "$(fmt_cell "$2.ext4" "$3")" \
        "$(fmt_cell "$2.pt" "$3")" "$(fmt_cell "$2.cowfs" "$3")" "${RATIO[$2]}" \
        "$(speedup "$c" "$e" "$4")" "$(speedup "$p" "$e" "$4")"
}

echo
echo "=== data path: medians of $RUNS interleaved runs (min-max); $(awk -v a="$T0" -v b="$T1" 'BEGIN { printf "%.0f s", b - a }') of jobs ==="
echo "MiB/s and IOPS: higher is better; us/op and ms: lower is better. Ratios say how many times"
echo "faster the first is than the second (a/b for MiB/s and IOPS, b/a for times): >1 means cowfs"
echo "(or passthrough_ll in pt/ext4) is faster."
printf '%-31s %-24s %-24s %-24s %-9s %-10s %s\n' job "${NAME_OF[ext4]}" passthrough_ll cowfs \
    cowfs/pt cowfs/ext4 pt/ext4
want seqw && row "seq write 1M (MiB/s)" seqw "%.0f" higher
want seqr && row "seq read 1M cold (MiB/s)" seqr "%.0f" higher
want rrwarm && row "rand read 4K warm (IOPS)" rrwarm "%.0f" higher
want rrcold && row "rand read 4K cold (IOPS)" rrcold "%.0f" higher
want rw1 && row "rand write 4K 1 job (IOPS)" rw1 "%.0f" higher
want rw2 && row "rand write 4K 2 jobs (IOPS)" rw2 "%.0f" higher
if want meta; then
    row "create (us/op)" create "%.2f" lower
    row "stat warm (us/op)" statwarm "%.2f" lower
    row "stat cold (us/op)" statcold "%.2f" lower
    row "unlink (us/op)" unlink "%.2f" lower
fi
if want clone; then
    row "cp $(human "$RAND") + fsync (ms)" cp "%.1f" lower
    row "rand write 4K over copy (IOPS)" cprw "%.0f" higher
    if want rw1; then
        cells=()
        for fs in ext4 pt cowfs; do
            if has_fs "$fs"; then cells+=("$(speedup "$(median "cprw.$fs")" "$(median "rw1.$fs")" higher)")
            else cells+=("-"); fi
        done
        printf '%-31s %-24s %-24s %-24s\n' "  copy / original (rw1)" "${cells[@]}"
    fi
fi
echo
echo "seq: fio psync 1 MiB blocks over $(human "$SIZE"); the write includes its end_fsync (fio counts"
echo "it in job_runtime: MiB/s = bytes / job_runtime). rand: fio psync 4 KiB over a $(human "$RAND") file;"
echo "reads ${SECS} s time-based (warm: file read once first; cold: caches dropped); writes"
echo "$(human "$RAND_IO") per job with end_fsync, IOPS = I/Os / job_runtime (fsync included); 2 jobs: one"
echo "file, each job over its own half ($(human "$((RAND_IO / 2))") each), IOPS = all I/Os / longest job."
echo "metadata: $NFILES empty files in one directory (openat+close; fstatat cold, after drop_caches;"
echo "unlinkat). stat warm: $NFILES files on every filesystem, 9 passes each taken in turn, the median"
echo "pass. cp: cold, includes fsync of the copy (cowfs: copy_file_range clone)."
echo "cowfs mounted ${MOUNT_ARGS[*]:-(default options)}; passthrough_ll -o writeback,cache=always${PT_OPTS:+,$PT_OPTS}."

# ------------------------------------------------------------------ checks
echo
check() { # JOB LABEL MIN JOB-KEY (of BENCH_ONLY)
    local r=${RATIO[$1]:-}
    if ! want "$4" || ! has_fs cowfs || ! has_fs pt || [ -z "$r" ] || [ "$r" = "-" ]; then
        echo "SKIP: $2 >= $3x passthrough_ll (not measured)"
        return
    fi
    if awk -v r="$r" -v m="$3" 'BEGIN { exit !(r >= m) }'; then
        echo "PASS: $2 >= $3x passthrough_ll (${r}x)"
    else
        echo "FAIL: $2 >= $3x passthrough_ll (${r}x)"
    fi
}
check seqw "cowfs seq write" 1.0 seqw
check seqr "cowfs seq read (cold)" 1.0 seqr
check rw1 "cowfs 4K rand write (1 job)" 1.0 rw1
check rrwarm "cowfs warm 4K rand read" 0.95 rrwarm
check create "cowfs create" 1.0 meta
check statwarm "cowfs warm stat" 1.0 meta
check unlink "cowfs unlink" 1.0 meta

if [ -n "$STORE" ] && grep -qE 'WARN|ERROR' -- "$STORE/daemon.log" 2>/dev/null; then
    echo
    note "$(grep -cE 'WARN|ERROR' -- "$STORE/daemon.log") warnings and errors in the cowfs daemon log (last 20):"
    grep -E 'WARN|ERROR' -- "$STORE/daemon.log" | tail -n 20
fi
exit 0
