#!/usr/bin/env bash
# tests/sh/deep.sh - a directory 30,000 levels deep on a real mount (issue 14: a deep tree
# plus `cowfs du` overflowed a worker's stack and left a dead mount). `cowfs du` of the tree
# and of the mount, `cowfs stats`, `cowfs clone -r`, `cowfs snapshot create` (and delete
# --wait: the reclaimer frees it), `cowfs dedup` and `rm -rf` each succeed, the daemon
# answers after each, and fsck is clean after the unmount.
#
# Usage: tests/sh/deep.sh   (env: see tests/sh/lib.sh; COWFS_DEEP_LEVELS, default 30000)

# shellcheck source-path=SCRIPTDIR source=lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

LEVELS="${COWFS_DEEP_LEVELS:-30000}"
STORE="$TEST_TMP/store"
MNT="$(cowfs_tmpdir mnt)" || die "mktemp failed"
cowfs_mount "$STORE" "$MNT" || die "mount a fresh store at $MNT"
ok "mount a fresh store"
START=$SECONDS

# The tree is built and read a level at a time with mkdir/chdir: its paths are far past
# PATH_MAX, and no tool here may need one. At the bottom: f and g (the same 64 KiB, so
# dedup has 16 pages to merge). Prints the sha256 of f.
build() {
    python3 - "$1" "$2" <<'EOF'
import hashlib, os, sys
os.chdir(sys.argv[1])
os.mkdir("top"); os.chdir("top")
for _ in range(int(sys.argv[2])):
    os.mkdir("d"); os.chdir("d")
data = os.urandom(64 * 1024)
for name in ("f", "g"):
    with open(name, "wb") as f:
        f.write(data)
print(hashlib.sha256(data).hexdigest())
EOF
}

# bottom_sha DIR LEVELS NAME: the sha256 of NAME at the bottom of DIR's chain of "d".
bottom_sha() {
    python3 - "$1" "$2" "$3" <<'EOF'
import hashlib, os, sys
os.chdir(sys.argv[1])
for _ in range(int(sys.argv[2])):
    os.chdir("d")
with open(sys.argv[3], "rb") as f:
    print(hashlib.sha256(f.read()).hexdigest())
EOF
}

# step DESC CMD...: CMD must exit 0 with at most one line on stderr (a failure must be
# exit 1 with a one-line message, never a crash), and the daemon must answer afterwards.
step() {
    local desc=$1 out err rc t0=$SECONDS
    shift
    out="$("$@" 2>"$TEST_TMP/step.err")"; rc=$?
    err="$(cat "$TEST_TMP/step.err")"
    note "$desc: exit $rc in $((SECONDS - t0)) s${err:+: $err}"
    check_eq "$desc exits 0" 0 "$rc"
    check "$desc: at most one line on stderr" test "$(printf '%s' "$err" | grep -c '')" -le 1
    check "daemon alive after $desc" cowfs_alive "$MNT"
    STEP_OUT=$out
}

t0=$SECONDS
want="$(build "$MNT" "$LEVELS")"
check "build a $LEVELS-level tree with mkdir/chdir ($((SECONDS - t0)) s)" test -n "$want"

step "cowfs du of the tree" "$COWFS" du --json "$MNT/top"
check "du counts the tree's 2 files" grep -q '"files":2,' <<<"$STEP_OUT"
check "du counts 128 KiB" grep -q '"total":131072,' <<<"$STEP_OUT"
step "cowfs du of the mount" "$COWFS" du --json "$MNT"
check "du of the mount counts 2 files" grep -q '"files":2,' <<<"$STEP_OUT"
step "cowfs stats" "$COWFS" stats --json "$MNT"
check "stats: 128 KiB of file data" grep -q '"logical_bytes":131072,' <<<"$STEP_OUT"

step "cowfs clone -r of the tree" "$COWFS" clone -r "$MNT/top" "$MNT/copy"
check_eq "the clone's bottom file has the bytes" "$want" "$(bottom_sha "$MNT/copy" "$LEVELS" f)"

step "cowfs snapshot create" "$COWFS" snapshot create "$MNT" s1
check_eq "the snapshot's bottom file has the bytes" "$want" \
    "$(bottom_sha "$MNT/.snapshots/s1/top" "$LEVELS" g)"

step "cowfs dedup of the mount" "$COWFS" dedup "$MNT"
check "dedup went through both trees (4 files)" grep -q '^cowfs dedup: 4 files' <<<"$STEP_OUT"
check "dedup merged pages" grep -Eq ' [1-9][0-9]* merged' <<<"$STEP_OUT"
check_eq "f keeps its bytes after dedup" "$want" "$(bottom_sha "$MNT/top" "$LEVELS" f)"

# A bind mount of the file system inside itself makes a cycle: dedup skips it and says so.
mkdir -p "$MNT/ring/in" && head -c 8192 /dev/urandom >"$MNT/ring/file"
if mount --bind "$MNT/ring" "$MNT/ring/in"; then
    step "cowfs dedup through a bind-mount cycle" "$COWFS" dedup "$MNT" "$MNT/ring"
    check "dedup saw the ring's file once" grep -q '^cowfs dedup: 1 files' <<<"$STEP_OUT"
    check "dedup said it skipped the cycle" grep -q 'ring/in: a cycle' "$TEST_TMP/step.err"
    check "unmount the bind mount" umount "$MNT/ring/in"
else
    skip "dedup through a bind-mount cycle" "mount --bind failed"
fi

step "rm -rf of the tree and its clone" rm -rf "$MNT/top" "$MNT/copy" "$MNT/ring"
check "the trees are gone" test ! -e "$MNT/top" -a ! -e "$MNT/copy"
step "cowfs snapshot delete --wait" "$COWFS" snapshot delete --wait "$MNT" s1

check "unmount" cowfs_umount "$MNT"
step_fsck() { "$COWFS" fsck "$STORE"; }
check "fsck clean after all of it" step_fsck
note "all steps at $LEVELS levels: $((SECONDS - START)) s"
finish
