# shellcheck shell=bash
# tests/sh/lib.sh - sourced by every shell test of cowfs (tests/sh/*.sh).
#
# Provides
#   REPO, COWFS         repo root; the binary (env COWFS_BIN, default $REPO/target/release/cowfs)
#   TEST_TMP            this script's private temp root (/tmp/cowfs-test.XXXXXX, mode 0755)
#   cowfs_tmpdir NAME   makes a fresh directory under TEST_TMP and prints its path
#   cowfs_mount STORE MNT   `$COWFS mount STORE MNT`, then checks MNT is a fuse mount in /proc/mounts
#   cowfs_umount MNT    `$COWFS umount MNT` (fallback: umount, umount -l); waits for the daemon to exit
#   cowfs_alive MNT     the mount is still there and answers stat within 10 s
#   kill9_cycle STORE MNT SEED SPAN CMD...  mount, run CMD, kill -9 both at a random moment
#   check DESC CMD...   runs CMD; prints "ok - DESC" or "not ok - DESC" (with CMD's output) and counts
#   check_eq DESC EXPECTED ACTUAL
#   ok DESC / not_ok DESC [DETAIL...] / skip DESC REASON / note TEXT
#   finish              cleans up, prints "N passed, M failed" as the last line, exits 1 if any failed
# An EXIT trap unmounts whatever this script mounted (even on failure), kills a leftover daemon
# (`pgrep -f "cowfs mount .*MNT"`) and removes TEST_TMP.  A script that exits without `finish`
# counts one extra failure.
#
# Env: COWFS_BIN (binary), COWFS_ALLOW_NONFUSE=1 (accept a non-fuse fstype: only for testing this
# harness with a fake binary that bind-mounts), COWFS_KEEP_TMP=1 (keep TEST_TMP for inspection).

set -u
set -o pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)"
COWFS="${COWFS_BIN:-$REPO/target/release/cowfs}"
TEST_NAME="$(basename "${BASH_SOURCE[1]:-$0}" .sh)"

_PASS=0
_FAIL=0
_FINISHED=0
_MOUNTED=()        # mount points this script mounted (canonical paths)
declare -A _STORE_OF=()   # mount point -> store

# ------------------------------------------------------------------ reporting
note() { printf '# %s\n' "$*"; }
ok() { _PASS=$((_PASS + 1)); printf 'ok - %s\n' "$1"; }
not_ok() {
    local desc=$1; shift
    _FAIL=$((_FAIL + 1))
    printf 'not ok - %s\n' "$desc"
    local line
    for line in "$@"; do
        [ -n "$line" ] && printf '%s\n' "$line" | head -n 30 | sed 's/^/#   /'
    done
    return 0
}
skip() { _PASS=$((_PASS + 1)); printf 'ok - %s # SKIP %s\n' "$1" "$2"; }

# check DESC CMD [ARGS...]: CMD runs in a subshell; its output is shown only if it fails.
check() {
    local desc=$1; shift
    local out rc
    out="$("$@" 2>&1)"; rc=$?
    if [ "$rc" -eq 0 ]; then ok "$desc"; else not_ok "$desc" "command: $* (exit $rc)" "$out"; fi
    return "$rc"
}
check_eq() {
    if [ "$2" = "$3" ]; then ok "$1"; return 0; fi
    not_ok "$1" "expected: '$2'" "got:      '$3'"
    return 1
}

# ------------------------------------------------------------------ temp dirs
TEST_TMP="$(mktemp -d /tmp/cowfs-test.XXXXXX)" || { echo "lib.sh: mktemp failed" >&2; exit 2; }
chmod 0755 "$TEST_TMP"   # pjdfstest's unprivileged users must be able to reach mount points in it
cowfs_tmpdir() {
    local d
    d="$(mktemp -d "$TEST_TMP/${1:-dir}.XXXXXX")" || return 1
    chmod 0755 "$d"
    printf '%s\n' "$d"
}

# ------------------------------------------------------------------ mounts
# _fstype PATH: prints the fstype of the mount whose mount point is exactly PATH (topmost one).
_fstype() {
    awk -v p="$1" '{ m=$2; gsub(/\\040/," ",m); gsub(/\\011/,"\t",m); gsub(/\\012/,"\n",m);
                     gsub(/\\134/,"\\",m); if (m == p) t=$3 }
                   END { if (t == "") exit 1; print t }' /proc/mounts
}
is_mounted() { _fstype "$(_canon "$1")" >/dev/null; }
_canon() { realpath -m -- "$1"; }
_mount_log() { printf '%s/%s.mount.log\n' "$TEST_TMP" "$(basename "$1")"; }
_ere_escape() { printf '%s' "$1" | sed 's/[][\.*^$+?(){}|]/\\&/g'; }
# Daemon pids serving MNT (matches "cowfs mount ... MNT" on the command line).
daemon_pids() { pgrep -f "cowfs mount .*$(_ere_escape "$1")( |\$)" || true; }

cowfs_mount() {
    local store=$1 mnt rc t i log
    mnt="$(_canon "$2")"
    if [ ! -x "$COWFS" ]; then
        echo "cowfs_mount: binary $COWFS not found or not executable (build with cargo build --release)" >&2
        return 1
    fi
    if is_mounted "$mnt"; then echo "cowfs_mount: $mnt is already a mount point" >&2; return 1; fi
    _MOUNTED+=("$mnt")              # register first: the trap cleans up even a half-done mount
    _STORE_OF[$mnt]=$store
    # The daemon's output goes to a log file, never to a pipe of ours (a daemon holding the write
    # end of `$(...)` or of run.sh's pipe would block the reader until it exits).
    log="$(_mount_log "$mnt")"
    timeout -k 10 60 "$COWFS" mount "$store" "$mnt" </dev/null >"$log" 2>&1; rc=$?
    sed 's/^/cowfs mount: /' "$log" >&2
    if [ "$rc" -ne 0 ]; then
        echo "cowfs_mount: '$COWFS mount $store $mnt' failed (exit $rc)" >&2
        return 1
    fi
    # `cowfs mount` returns once the mount is up; allow a short grace period but say so.
    for i in $(seq 1 50); do
        t="$(_fstype "$mnt")" && break
        sleep 0.1
    done
    if [ -z "${t:-}" ]; then echo "cowfs_mount: $mnt does not appear in /proc/mounts" >&2; return 1; fi
    [ "$i" -gt 1 ] && echo "cowfs_mount: warning: mount appeared only ~$(((i - 1) / 10)).$(((i - 1) % 10))s after 'cowfs mount' returned" >&2
    case "$t" in
    fuse | fuse.* | fuseblk) ;;
    *)  if [ "${COWFS_ALLOW_NONFUSE:-0}" = 1 ]; then
            echo "cowfs_mount: note: $mnt has fstype '$t', not fuse (accepted: COWFS_ALLOW_NONFUSE=1)" >&2
        else
            echo "cowfs_mount: $mnt has fstype '$t', expected fuse*" >&2
            return 1
        fi;;
    esac
    return 0
}

# _wait_daemon_gone MNT SECONDS: 0 once no daemon for MNT runs any more.
_wait_daemon_gone() {
    local i
    for i in $(seq 1 $(($2 * 10))); do
        [ -z "$(daemon_pids "$1")" ] && return 0
        sleep 0.1
    done
    [ -z "$(daemon_pids "$1")" ]
}

cowfs_umount() {
    local mnt rc=0
    mnt="$(_canon "$1")"
    if is_mounted "$mnt"; then
        if ! timeout -k 5 60 "$COWFS" umount "$mnt"; then
            echo "cowfs_umount: '$COWFS umount $mnt' failed; trying umount" >&2
            rc=1
            timeout -k 5 30 umount "$mnt" 2>/dev/null || umount -l "$mnt" || true
        fi
    fi
    if is_mounted "$mnt"; then echo "cowfs_umount: $mnt is still mounted" >&2; return 1; fi
    # The daemon flushes the store after the unmount: wait for it before anyone reopens the store.
    if ! _wait_daemon_gone "$mnt" 30; then
        echo "cowfs_umount: daemon for $mnt still running 30 s after the unmount: $(daemon_pids "$mnt" | tr '\n' ' ')" >&2
        return 1
    fi
    return "$rc"
}

# show_daemon_log MNT: the end of what the daemon serving MNT printed (its mount output and the
# default daemon log STORE/daemon.log, if there is one).
show_daemon_log() {
    local mnt f
    mnt="$(_canon "$1")"
    for f in "$(_mount_log "$mnt")" "${_STORE_OF[$mnt]:-/nonexistent}/daemon.log"; do
        [ -s "$f" ] && tail -n 20 "$f" | sed "s|^|$(basename "$f"): |"
    done
    return 0
}

# cowfs_alive MNT: the mount is in /proc/mounts and answers stat (the daemon did not die or hang).
# On failure it shows the end of the daemon's log (what it printed since the mount).
cowfs_alive() {
    local mnt why=""
    mnt="$(_canon "$1")"
    if ! is_mounted "$mnt"; then why="$mnt is no longer mounted"
    elif ! timeout -k 2 10 stat "$mnt" >/dev/null; then why="stat $mnt failed or hung (daemon dead?)"
    elif ! timeout -k 2 10 ls "$mnt" >/dev/null; then why="ls $mnt failed or hung (daemon dead?)"
    fi
    [ -z "$why" ] && return 0
    echo "$why" >&2
    show_daemon_log "$mnt" >&2
    return 1
}

# kill9_cycle STORE MNT SEED SPAN CMD...: mounts STORE at MNT (commits every second), runs
# CMD in the background, and after 0.3 + rand(SEED) * SPAN seconds kills the daemon and CMD
# with SIGKILL, waits for the daemon to be gone and detaches the dead mount. Fails (without
# running CMD) if the mount fails. Mount output goes to $TEST_TMP/mount.log, CMD's to
# $TEST_TMP/workload.log.
kill9_cycle() {
    local store=$1 mnt=$2 seed=$3 span=$4 pid wl
    shift 4
    "$COWFS" mount --commit-interval 1 "$store" "$mnt" >>"$TEST_TMP/mount.log" 2>&1 || return 1
    pid="$(daemon_pids "$mnt" | head -n 1)"
    "$@" >>"$TEST_TMP/workload.log" 2>&1 &
    wl=$!
    sleep "$(awk -v s="$seed" -v n="$span" 'BEGIN { srand(s); printf "%.2f", 0.3 + rand() * n }')"
    kill -9 "$pid" 2>/dev/null
    kill -9 "$wl" 2>/dev/null
    wait "$wl" 2>/dev/null
    while kill -0 "$pid" 2>/dev/null; do sleep 0.02; done
    umount -l "$mnt" 2>/dev/null
    return 0
}

# ------------------------------------------------------------------ cleanup guard
_cleanup() {
    local mnt pids i problems=0
    trap - INT TERM HUP
    cd / || true
    for ((i = ${#_MOUNTED[@]} - 1; i >= 0; i--)); do
        mnt=${_MOUNTED[$i]}
        if is_mounted "$mnt"; then
            echo "cleanup: unmounting $mnt" >&2
            timeout -k 5 20 "$COWFS" umount "$mnt" >/dev/null 2>&1 ||
                timeout -k 5 10 umount "$mnt" 2>/dev/null || umount -l "$mnt" 2>/dev/null || true
            # repeat: the same point may have been stacked
            while is_mounted "$mnt" && umount -l "$mnt" 2>/dev/null; do :; done
        fi
        if is_mounted "$mnt"; then
            echo "cleanup: could not unmount $mnt" >&2
            problems=$((problems + 1))
        fi
        if ! _wait_daemon_gone "$mnt" 10; then
            pids="$(daemon_pids "$mnt")"
            echo "cleanup: killing leftover daemon(s) for $mnt: $(echo "$pids" | tr '\n' ' ')" >&2
            # shellcheck disable=SC2086
            kill -TERM $pids 2>/dev/null
            if ! _wait_daemon_gone "$mnt" 5; then
                # shellcheck disable=SC2046
                kill -KILL $(daemon_pids "$mnt") 2>/dev/null
                _wait_daemon_gone "$mnt" 5 || problems=$((problems + 1))
            fi
        fi
    done
    _MOUNTED=()
    if [ -d "$TEST_TMP" ]; then
        # Never rm -rf through a live mount: lazily detach anything still mounted under TEST_TMP.
        local left
        left="$(awk -v p="$TEST_TMP/" 'index($2, p) == 1 { print $2 }' /proc/mounts)"
        for mnt in $left; do umount -l "$mnt" 2>/dev/null; done
        if [ -n "$(awk -v p="$TEST_TMP/" 'index($2, p) == 1' /proc/mounts)" ]; then
            echo "cleanup: mounts remain under $TEST_TMP; not removing it" >&2
            problems=$((problems + 1))
        elif [ "${COWFS_KEEP_TMP:-0}" = 1 ]; then
            echo "cleanup: keeping $TEST_TMP (COWFS_KEEP_TMP=1)" >&2
        else
            rm -rf --one-file-system -- "$TEST_TMP"
        fi
    fi
    return "$problems"
}

_summary() {
    printf '%d passed, %d failed\n' "$_PASS" "$_FAIL"
}

finish() {
    _FINISHED=1
    trap - EXIT
    if ! _cleanup; then not_ok "cleanup: everything unmounted, daemons gone, temp dirs removed"; fi
    _summary
    [ "$_FAIL" -eq 0 ] && exit 0
    exit 1
}

_on_exit() {
    local rc=$?
    trap - EXIT
    [ "$_FINISHED" = 1 ] && exit "$rc"
    if ! _cleanup; then not_ok "cleanup: everything unmounted, daemons gone, temp dirs removed"; fi
    not_ok "$TEST_NAME exited early (status $rc) before finishing its checks"
    _summary
    exit 1
}
trap _on_exit EXIT
trap 'echo "# interrupted" >&2; exit 130' INT
trap 'echo "# terminated" >&2; exit 143' TERM HUP

# die MSG: a fatal setup error: report it, clean up, print the summary and exit 1.
die() { not_ok "$*"; finish; }
