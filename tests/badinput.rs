//! Bad input: each case gets a clear one-line message and a non-zero exit, and loses
//! nothing. (A directory that is not a store: tests/mount.rs; damaged metadata:
//! tests/fsck.rs.)

mod common;

use common::{Mount, cowfs, is_root};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::Output;

fn one_line_error(o: &Output, code: i32, needle: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert_eq!(o.status.code(), Some(code), "{err}");
    let lines: Vec<&str> = err.lines().filter(|l| l.starts_with("cowfs")).collect();
    assert_eq!(lines.len(), 1, "one line: {err}");
    assert!(lines[0].contains(needle), "{needle:?} in {err}");
}

fn mkfs(dir: &Path) -> std::path::PathBuf {
    let store = dir.join("store");
    let o = cowfs(&["mkfs", store.to_str().expect("p")]);
    assert!(o.status.success());
    store
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8")
}

#[test]
fn truncated_store_file() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = mkfs(tmp.path());
    let pages = store.join("pages");
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(&pages)
        .expect("open");
    f.set_len(100_000).expect("truncate");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    one_line_error(&cowfs(&["mount", s(&store), s(&mnt)]), 1, "truncated");
    one_line_error(&cowfs(&["fsck", s(&store)]), 8, "truncated");
    assert_eq!(
        std::fs::metadata(&pages).expect("stat").len(),
        100_000,
        "nothing was changed"
    );
    f.set_len(100).expect("truncate");
    one_line_error(&cowfs(&["fsck", s(&store)]), 8, "truncated (no superblock)");
}

#[test]
fn store_from_a_newer_version() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = mkfs(tmp.path());
    let f = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(store.join("pages"))
        .expect("open");
    let mut page = vec![0u8; 4096];
    f.read_exact_at(&mut page, 0).expect("read");
    page[16..20].copy_from_slice(&99u32.to_le_bytes());
    cowfs::store::layout::seal(cowfs::ids::PageNo(0), &mut page);
    f.write_all_at(&page, 0).expect("write");
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    one_line_error(
        &cowfs(&["mount", s(&store), s(&mnt)]),
        1,
        "newer than this cowfs",
    );
    one_line_error(&cowfs(&["fsck", s(&store)]), 8, "newer than this cowfs");
}

#[test]
fn store_already_mounted_is_locked() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let other = m.tmp.path().join("mnt2");
    std::fs::create_dir(&other).expect("mkdir");
    one_line_error(
        &cowfs(&["mount", s(&m.store), s(&other)]),
        1,
        "in use by another cowfs process",
    );
    one_line_error(
        &cowfs(&["fsck", s(&m.store)]),
        8,
        "in use by another cowfs process",
    );
    one_line_error(
        &cowfs(&["mount", s(&m.store), s(&m.mnt)]),
        1,
        "already a mount point",
    );
    std::fs::write(m.path("still-works"), b"yes").expect("the first mount still serves");
}

#[test]
fn bad_sizes_and_mount_points() {
    let tmp = tempfile::tempdir().expect("tmp");
    let o = cowfs(&["mkfs", "--max-size", "lots", s(&tmp.path().join("x"))]);
    assert_eq!(o.status.code(), Some(2), "a bad value is a usage error");
    let file = tmp.path().join("file");
    std::fs::write(&file, b"x").expect("write");
    one_line_error(
        &cowfs(&["mount", s(&tmp.path().join("st")), s(&file)]),
        1,
        "not a directory",
    );
    one_line_error(
        &cowfs(&["mount", s(&tmp.path().join("st")), "/nonexistent/mnt"]),
        1,
        "mount point",
    );
}

#[test]
fn full_store_gives_enospc_and_deleting_still_works() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let store = tmp.path().join("store");
    assert!(
        cowfs(&["mkfs", "--max-size", "40M", s(&store)])
            .status
            .success()
    );
    let m = Mount::at(tmp, store);
    let chunk = vec![0x33u8; 1 << 20];
    let mut written = 0;
    let err = loop {
        match std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.path("fill"))
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(&chunk)?;
                f.sync_all()
            }) {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 100, "the 40 MiB limit holds");
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(written >= 20, "most of the 40 MiB is usable: {written} MiB");
    std::fs::write(m.path("small"), b"x").ok();
    std::fs::remove_file(m.path("fill")).expect("unlink on a full store");
    let _ = std::fs::remove_file(m.path("small"));
    std::thread::sleep(std::time::Duration::from_millis(100));
    std::process::Command::new("sync")
        .arg(m.mnt.join("."))
        .status()
        .expect("sync");
    // After the next commit the space is back.
    let mut ok = false;
    for _ in 0..100 {
        if std::fs::write(m.path("again"), &chunk).is_ok() {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ok, "space came back after the delete");
    m.umount();
    let o = cowfs(&["fsck", s(&m.store)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}

#[test]
fn full_host_disk_gives_enospc_and_deleting_still_works() {
    if !is_root() {
        return;
    }
    let tmp = tempfile::tempdir().expect("tmp");
    let host = tmp.path().join("host");
    std::fs::create_dir(&host).expect("mkdir");
    let st = std::process::Command::new("mount")
        .args(["-t", "tmpfs", "-o", "size=48m", "tmpfs"])
        .arg(&host)
        .status()
        .expect("mount tmpfs");
    assert!(st.success());
    struct Unmount(std::path::PathBuf);
    impl Drop for Unmount {
        fn drop(&mut self) {
            let _ = std::process::Command::new("umount")
                .arg("-l")
                .arg(&self.0)
                .output();
        }
    }
    let _host_guard = Unmount(host.clone());
    let m = Mount::at(tmp, host.join("store"));
    let chunk = vec![0x44u8; 1 << 20];
    let mut written = 0;
    let err = loop {
        let r = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(m.path("fill"))
            .and_then(|mut f| {
                use std::io::Write;
                f.write_all(&chunk)?;
                f.sync_all()
            });
        match r {
            Ok(()) => written += 1,
            Err(e) => break e,
        }
        assert!(written < 100, "a 48 MiB disk cannot take {written} MiB");
    };
    assert_eq!(err.raw_os_error(), Some(libc::ENOSPC), "{err}");
    assert!(
        written >= 30,
        "most of the 48 MiB disk is usable: {written} MiB"
    );
    std::fs::remove_file(m.path("fill")).expect("unlink on a full disk");
    std::process::Command::new("sync")
        .arg(m.mnt.join("."))
        .status()
        .expect("sync");
    let mut ok = false;
    for _ in 0..100 {
        if std::fs::write(m.path("again"), &chunk).is_ok() {
            ok = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(ok, "space came back after the delete");
    m.umount();
    let o = cowfs(&["fsck", s(&m.store)]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stdout)
    );
}
