#!/bin/sh
# bench/punch.sh [COWFS] [MIB]: on a fresh mount (default commit interval) writes a file of
# MIB MiB (default 4096), syncs, deletes it, and prints how long `rm` + `cowfs sync` took,
# how long until the page file's blocks on the host (st_blocks) dropped by 98% of the
# file (30 s limit), and how much the host's `df` free space grew by then and 6 s later
# (ext4 shows freed blocks once its journal commits, every 5 s; other users of the disk
# move `df` too, so the page file's own blocks are the exact measure).
set -eu
BIN=$(realpath "${1:-target/release/cowfs}")
MIB=${2:-4096}
T=$(mktemp -d /var/tmp/cowfs-punch.XXXXXX)
cleanup() { "$BIN" umount "$T/mnt" >/dev/null 2>&1 || true; rm -rf "$T"; }
trap cleanup EXIT
"$BIN" mount "$T/st" "$T/mnt" --mkdir >/dev/null
avail() { df --output=avail -B1 "$T" | tail -1; }
held() { echo $(($(stat -c %b "$T/st/pages") * 512)); }
now() { date +%s.%N; }
yes 0123456789abcdef | head -c "$((MIB * 1048576))" > "$T/mnt/big"
"$BIN" sync "$T/mnt"
sync
before=$(avail)
used=$(held)
t0=$(now)
rm "$T/mnt/big"
trm=$(now)
"$BIN" sync "$T/mnt"
t1=$(now)
want=$((used - MIB * 1048576 * 98 / 100))
back=""
while [ "$(echo "$(now) - $t0 < 30" | bc)" = 1 ]; do
    if [ "$(held)" -le "$want" ]; then back=$(now); break; fi
    sleep 0.1
done
df1=$(avail)
sleep 6
df2=$(avail)
printf 'file: %s MiB; the page file held %s MiB on the host, now %s MiB\n' \
    "$MIB" "$((used / 1048576))" "$(($(held) / 1048576))"
printf 'rm + cowfs sync: %.2f s (rm %.2f s)\n' "$(echo "$t1 - $t0" | bc)" "$(echo "$trm - $t0" | bc)"
if [ -n "$back" ]; then
    printf 'page file blocks back: %.2f s after the rm\n' "$(echo "$back - $t0" | bc)"
else
    printf 'page file blocks back: not within 30 s\n'
fi
printf 'host df free space grew by %s MiB then, %s MiB 6 s later\n' \
    "$(((df1 - before) / 1048576))" "$(((df2 - before) / 1048576))"
