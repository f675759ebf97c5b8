//! Space freed inside the store goes back to the host: the blocks the host's file system
//! holds for `STORE/pages` (its `st_blocks`) drop once a commit has freed pages, for a
//! deleted file, a deleted snapshot, and after a crash right after the commit.

mod common;

use common::{Mount, cowfs, is_root};
use std::fs::{self, OpenOptions};
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::time::{Duration, Instant};

const MIB: u64 = 1 << 20;

/// Bytes the host's file system holds for the page file.
fn host_bytes(store: &Path) -> u64 {
    fs::metadata(store.join("pages"))
        .expect("stat pages")
        .blocks()
        * 512
}

/// Writes `mib` MiB of a pattern that depends on `seed` and the offset, and fsyncs.
fn write_file(p: &Path, mib: u64, seed: u8) {
    let mut f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(p)
        .expect("create");
    for i in 0..mib {
        let chunk: Vec<u8> = (0..MIB).map(|k| (k as u8) ^ (i as u8) ^ seed).collect();
        f.write_all(&chunk).expect("write");
    }
    f.sync_all().expect("fsync");
}

fn check_file(p: &Path, mib: u64, seed: u8) {
    let b = fs::read(p).expect("read");
    assert_eq!(b.len() as u64, mib * MIB);
    for (i, chunk) in b.chunks(MIB as usize).enumerate() {
        for (k, v) in chunk.iter().enumerate() {
            assert_eq!(*v, (k as u8) ^ (i as u8) ^ seed, "byte {k} of MiB {i}");
        }
    }
}

fn sync(m: &Mount) {
    let out = cowfs(&["sync", m.s(&m.mnt)]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits up to `secs` for the page file to hold at most `limit` bytes on the host; the
/// time it took, or the bytes it still held.
fn wait_below(store: &Path, limit: u64, secs: u64) -> Result<Duration, u64> {
    let t = Instant::now();
    loop {
        let now = host_bytes(store);
        if now <= limit {
            return Ok(t.elapsed());
        }
        if t.elapsed() > Duration::from_secs(secs) {
            return Err(now);
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn a_deleted_file_gives_its_space_back_to_the_host() {
    if !is_root() {
        return;
    }
    let m = Mount::with_opts(&["--commit-interval", "1"]);
    write_file(&m.path("keep"), 4, 7);
    write_file(&m.path("big"), 256, 1);
    sync(&m);
    let before = host_bytes(&m.store);
    assert!(before >= 260 * MIB, "the data is on the host: {before}");
    fs::remove_file(m.path("big")).expect("rm");
    let limit = before - 250 * MIB;
    match wait_below(&m.store, limit, 20) {
        Ok(t) => eprintln!("256 MiB back on the host {t:?} after the rm"),
        Err(now) => panic!("the host still holds {now} bytes (before {before})"),
    }
    check_file(&m.path("keep"), 4, 7);
    // The space is reused: writing the file again takes about as much from the host.
    write_file(&m.path("big"), 64, 2);
    sync(&m);
    check_file(&m.path("big"), 64, 2);
    m.umount_and_fsck_clean();
}

#[test]
fn a_deleted_snapshot_gives_its_space_back_to_the_host() {
    if !is_root() {
        return;
    }
    let m = Mount::with_opts(&["--commit-interval", "1"]);
    write_file(&m.path("big"), 128, 3);
    write_file(&m.path("keep"), 2, 9);
    let out = cowfs(&["snapshot", "create", m.s(&m.mnt), "s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fs::remove_file(m.path("big")).expect("rm");
    sync(&m);
    let before = host_bytes(&m.store);
    // The snapshot still holds the file: nothing of it may go.
    std::thread::sleep(Duration::from_secs(2));
    let held = host_bytes(&m.store);
    assert!(
        held + 8 * MIB >= before,
        "a snapshot's pages were given away: {before} -> {held}"
    );
    check_file(&m.path(".snapshots/s/big"), 128, 3);
    let out = cowfs(&["snapshot", "delete", "--wait", m.s(&m.mnt), "s"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    match wait_below(&m.store, held - 120 * MIB, 20) {
        Ok(t) => eprintln!("128 MiB back on the host {t:?} after the snapshot delete"),
        Err(now) => panic!("the host still holds {now} bytes (before {held})"),
    }
    check_file(&m.path("keep"), 2, 9);
    m.umount_and_fsck_clean();
}

#[test]
fn a_crash_right_after_the_commit_still_gives_the_space_back() {
    if !is_root() {
        return;
    }
    let m = Mount::with_opts(&["--commit-interval", "1"]);
    write_file(&m.path("keep"), 8, 5);
    write_file(&m.path("big"), 128, 4);
    sync(&m);
    let before = host_bytes(&m.store);
    fs::remove_file(m.path("big")).expect("rm");
    sync(&m);
    // Killed at once: the punch may or may not have run; a journal record or the orphan
    // list makes the next mount finish it.
    m.kill9();
    m.mount();
    match wait_below(&m.store, before - 120 * MIB, 20) {
        Ok(t) => eprintln!("128 MiB back on the host {t:?} after the remount"),
        Err(now) => panic!("the host still holds {now} bytes (before {before})"),
    }
    check_file(&m.path("keep"), 8, 5);
    assert!(!m.path("big").exists());
    m.umount_and_fsck_clean();
    // Once more after the clean unmount: the store mounts and reads back.
    m.mount();
    check_file(&m.path("keep"), 8, 5);
    m.umount_and_fsck_clean();
}
