#!/usr/bin/env bash
# mount.sh - build cowfs and mount a store.
#
# Usage: ./mount.sh MOUNTPOINT [STORE]
#   STORE defaults to $HOME/.local/share/cowfs/default; it is created on first mount.
# Installs fuse3 when fusermount3 is missing and we are root with apt-get, builds with
# `cargo build --release`, mounts with `target/release/cowfs mount STORE MOUNTPOINT` and prints how
# to unmount.  Exits non-zero with a one-line message on failure.

set -u
set -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
BIN="$REPO/target/release/cowfs"
die() { echo "mount.sh: $*" >&2; exit 1; }

case "${1:-}" in -h | --help) sed -n '2,8p' "$0"; exit 0 ;; esac
if [ $# -lt 1 ] || [ $# -gt 2 ]; then die "usage: ./mount.sh MOUNTPOINT [STORE]"; fi
MNT="$(realpath -m -- "$1")" || die "bad mount point '$1'"
STORE="$(realpath -m -- "${2:-$HOME/.local/share/cowfs/default}")" || die "bad store path '${2:-}'"

# ------------------------------------------------------------------ prerequisites
if ! command -v fusermount3 >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
        echo "mount.sh: installing fuse3..." >&2
        { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq fuse3; } >/dev/null 2>&1 ||
            die "apt-get install fuse3 failed"
    elif [ "$(id -u)" != 0 ]; then
        die "fusermount3 not found: install the fuse3 package (e.g. sudo apt-get install fuse3)"
    fi   # root without apt-get: mount(2) is called directly, fusermount3 is not needed
fi
if ! command -v cargo >/dev/null 2>&1; then
    [ -x "$HOME/.cargo/bin/cargo" ] || die "cargo not found: install Rust (https://rustup.rs) and retry"
    PATH="$HOME/.cargo/bin:$PATH"
fi

# ------------------------------------------------------------------ build
(cd "$REPO" && cargo build --release --quiet) || die "cargo build --release failed (see the errors above)"
[ -x "$BIN" ] || die "build produced no binary at $BIN"

# ------------------------------------------------------------------ mount
mkdir -p -- "$MNT" || die "cannot create mount point $MNT"
if awk -v p="$MNT" '{ m=$2; gsub(/\\040/," ",m) } m == p { f=1 } END { exit !f }' /proc/mounts; then
    die "$MNT is already a mount point (unmount it first: $BIN umount $MNT)"
fi
mkdir -p -- "$(dirname "$STORE")" || die "cannot create $(dirname "$STORE")"
"$BIN" mount "$STORE" "$MNT" </dev/null || die "'$BIN mount $STORE $MNT' failed"

echo "cowfs: store $STORE is mounted at $MNT"
echo "unmount with: $BIN umount $MNT   (or: umount $MNT)"
