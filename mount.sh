#!/usr/bin/env bash
# mount.sh - build cowfs and mount a store.
#
# Usage: ./mount.sh MOUNTPOINT [STORE]
#        ./mount.sh --install | --uninstall
#   STORE defaults to $HOME/.local/share/cowfs/default; it is created on first mount.
# Installs fuse3 when fusermount3 is missing and we are root with apt-get, builds with
# `cargo build --release`, mounts with `target/release/cowfs mount STORE MOUNTPOINT` and prints how
# to unmount.  Exits non-zero with a one-line message on failure.
# --install puts cowfs in $PREFIX/bin, the mount helper $SBINDIR/mount.fuse.cowfs (for
# `mount -t fuse.cowfs` and fstab), bash/zsh/fish completions and man pages under
# $PREFIX/share, and prints each path; --uninstall removes them.
# Env: PREFIX (default /usr/local), SBINDIR (default /sbin), DESTDIR (staging root, default none).

set -u
set -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd -P)"
BIN="$REPO/target/release/cowfs"
die() { echo "mount.sh: $*" >&2; exit 1; }

case "${1:-}" in -h | --help) sed -n '2,13p' "$0"; exit 0 ;; esac
ACTION=mount
case "${1:-}" in --install) ACTION=install ;; --uninstall) ACTION=uninstall ;; esac
if [ "$ACTION" != mount ]; then
    [ $# -eq 1 ] || die "usage: ./mount.sh --install | --uninstall"
elif [ $# -lt 1 ] || [ $# -gt 2 ]; then die "usage: ./mount.sh MOUNTPOINT [STORE]"; fi
PREFIX="${PREFIX:-/usr/local}"
SBINDIR="${SBINDIR:-/sbin}"
DESTDIR="${DESTDIR:-}"
# installed: every path --install writes (without DESTDIR), one per line.
installed() {
    printf '%s\n' "$PREFIX/bin/cowfs" "$SBINDIR/mount.fuse.cowfs" \
        "$PREFIX/share/bash-completion/completions/cowfs" \
        "$PREFIX/share/zsh/site-functions/_cowfs" \
        "$PREFIX/share/fish/vendor_completions.d/cowfs.fish"
    if [ -d "$DESTDIR$PREFIX/share/man/man1" ]; then
        find "$DESTDIR$PREFIX/share/man/man1" -maxdepth 1 -name 'cowfs*.1' | sed "s|^$DESTDIR||" | sort
    fi
}
if [ "$ACTION" = uninstall ]; then
    installed | while read -r f; do
        if [ -e "$DESTDIR$f" ] || [ -L "$DESTDIR$f" ]; then
            rm -f -- "$DESTDIR$f" && echo "removed $DESTDIR$f"
        fi
    done
    # The directories the install made, if nothing else is in them now.
    for d in man/man1 bash-completion/completions bash-completion zsh/site-functions zsh \
        fish/vendor_completions.d fish; do
        rmdir -- "$DESTDIR$PREFIX/share/$d" 2>/dev/null
    done
    exit 0
fi
if [ "$ACTION" = mount ]; then
    MNT="$(realpath -m -- "$1")" || die "bad mount point '$1'"
    STORE="$(realpath -m -- "${2:-$HOME/.local/share/cowfs/default}")" || die "bad store path '${2:-}'"
fi

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

# ------------------------------------------------------------------ install
if [ "$ACTION" = install ]; then
    put() {  # put SRC DEST MODE: copies SRC to $DESTDIR/DEST and says so
        install -D -m "$3" -- "$1" "$DESTDIR$2" || die "cannot install $DESTDIR$2"
        echo "installed $DESTDIR$2"
    }
    gen="$(mktemp -d)" || die "mktemp failed"
    trap 'rm -rf -- "$gen"' EXIT
    put "$BIN" "$PREFIX/bin/cowfs" 755
    mkdir -p -- "$DESTDIR$SBINDIR" || die "cannot create $DESTDIR$SBINDIR"
    # mount(8) runs /sbin/mount.fuse.cowfs for -t fuse.cowfs; cowfs knows the name.
    ln -sfn -- "$PREFIX/bin/cowfs" "$DESTDIR$SBINDIR/mount.fuse.cowfs" ||
        die "cannot link $DESTDIR$SBINDIR/mount.fuse.cowfs"
    echo "installed $DESTDIR$SBINDIR/mount.fuse.cowfs -> $PREFIX/bin/cowfs (mount -t fuse.cowfs, fstab)"
    for sh in bash zsh fish; do
        "$BIN" completions "$sh" >"$gen/$sh" || die "cowfs completions $sh failed"
    done
    put "$gen/bash" "$PREFIX/share/bash-completion/completions/cowfs" 644
    put "$gen/zsh" "$PREFIX/share/zsh/site-functions/_cowfs" 644
    put "$gen/fish" "$PREFIX/share/fish/vendor_completions.d/cowfs.fish" 644
    "$BIN" man "$gen/man" >/dev/null || die "cowfs man failed"
    for f in "$gen"/man/*.1; do
        put "$f" "$PREFIX/share/man/man1/$(basename "$f")" 644
    done
    case ":$PATH:" in *":$PREFIX/bin:"*) ;; *) echo "note: $PREFIX/bin is not on PATH" ;; esac
    exit 0
fi

# ------------------------------------------------------------------ mount
mkdir -p -- "$MNT" || die "cannot create mount point $MNT"
if awk -v p="$MNT" '{ m=$2; gsub(/\\040/," ",m) } m == p { f=1 } END { exit !f }' /proc/mounts; then
    die "$MNT is already a mount point (unmount it first: $BIN umount $MNT)"
fi
mkdir -p -- "$(dirname "$STORE")" || die "cannot create $(dirname "$STORE")"
"$BIN" mount "$STORE" "$MNT" </dev/null || die "'$BIN mount $STORE $MNT' failed"

echo "cowfs: store $STORE is mounted at $MNT"
echo "unmount with: $BIN umount $MNT   (or: umount $MNT)"
