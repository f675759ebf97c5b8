#!/usr/bin/env bash
# Small files: N files of SIZE bytes in 100 directories, created on a fresh cowfs mount
# and on the host (ext4 under /var/tmp): create time (including a sync) and space.
# cowfs space: statfs of the mount (f_blocks - f_bfree, in 4 KiB pages) after minus
# before, and `cowfs stats`; host space: `du -sk` of the same files.
#
#   bench/smallfiles.sh [COWFS_BINARY] [N] [SIZE]
#
# COWFS_BINARY defaults to target/release/cowfs (build it first); N to 100000; SIZE to 100.
# `--format-version 1` can be passed through COWFS_MKFS_ARGS to measure a format-1 store.
set -euo pipefail
bin=${1:-target/release/cowfs}
n=${2:-100000}
size=${3:-100}
bin=$(realpath "$bin")
work=$(mktemp -d /var/tmp/cowfs-smallfiles.XXXXXX)
store=$work/store
mnt=$work/mnt
host=$work/host
mkdir -p "$mnt" "$host"
cleanup() {
    "$bin" umount "$mnt" 2>/dev/null || true
    rm -rf "$work"
}
trap cleanup EXIT

create() { # DIR: N files of SIZE bytes in 100 directories, then sync; prints seconds
    python3 - "$1" "$n" "$size" <<'EOF'
import os, sys, time
root, n, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
data = b"x" * size
t = time.monotonic()
for d in range(100):
    os.mkdir(os.path.join(root, f"d{d:02}"))
for i in range(n):
    with open(os.path.join(root, f"d{i % 100:02}", f"f{i:07}"), "wb") as f:
        f.write(data)
os.sync()
print(f"{time.monotonic() - t:.1f}")
EOF
}

used_kib() { # MOUNTPOINT: f_blocks - f_bfree, in KiB
    stat -f -c '%b %f %S' "$1" | awk '{ print ($1 - $2) * $3 / 1024 }'
}

# shellcheck disable=SC2086
"$bin" mkfs ${COWFS_MKFS_ARGS:-} "$store" >/dev/null
"$bin" mount "$store" "$mnt"
before=$(used_kib "$mnt")
secs=$(create "$mnt")
"$bin" sync "$mnt"
after=$(used_kib "$mnt")
echo "cowfs ($bin): $n files of $size bytes: create+sync ${secs} s, statfs used +$(( (${after%.*} - ${before%.*}) / 1024 )) MiB"
"$bin" stats "$mnt"
"$bin" umount "$mnt"
hsecs=$(create "$host")
echo "host ($(stat -f -c %T /var/tmp)): create+sync ${hsecs} s, du -sk $(du -sk "$host" | cut -f1) KiB"
