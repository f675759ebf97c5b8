//! Integration tests on a real mount: the CLI's errors and exit codes, POSIX behaviour the
//! kernel passes through to us, page sharing by copy_file_range, persistence across
//! remounts and across kill -9. Every mount is undone by `Mount`'s Drop, even on failure.

mod common;

use common::{Mount, cowfs, errno_of, is_root, statvfs_used};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::FileExt;
use std::os::unix::io::AsRawFd;
use std::path::Path;

#[test]
fn cli_errors_are_one_line_with_exit_codes() {
    let out = cowfs(&["mount"]);
    assert_eq!(out.status.code(), Some(2), "usage error exits 2");
    let tmp = tempfile::tempdir().expect("tempdir");
    let junk = tmp.path().join("junk");
    fs::create_dir(&junk).expect("mkdir");
    fs::write(junk.join("file"), b"precious").expect("write");
    let mnt = tmp.path().join("mnt");
    fs::create_dir(&mnt).expect("mkdir");
    let out = cowfs(&["mount", junk.to_str().expect("p"), mnt.to_str().expect("p")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(err.lines().count(), 1, "one line: {err}");
    assert!(err.contains("not a cowfs store"), "{err}");
    assert_eq!(fs::read(junk.join("file")).expect("kept"), b"precious");
    let out = cowfs(&["umount", mnt.to_str().expect("p")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not a cowfs mount"));
    let store = tmp.path().join("store");
    assert!(
        cowfs(&["mkfs", store.to_str().expect("p")])
            .status
            .success()
    );
    let out = cowfs(&["mkfs", store.to_str().expect("p")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already a cowfs store"));
    for sub in ["mkfs", "mount", "umount"] {
        assert!(cowfs(&[sub, "--help"]).status.success());
    }
}

#[test]
fn posix_errors_and_unlinked_open_file() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let long = "x".repeat(256);
    assert_eq!(errno_of(File::create(m.path(&long))), libc::ENAMETOOLONG);
    fs::create_dir(m.path("d")).expect("mkdir");
    fs::write(m.path("d/f"), b"x").expect("write");
    assert_eq!(errno_of(fs::remove_dir(m.path("d"))), libc::ENOTEMPTY);
    assert_eq!(errno_of(fs::remove_file(m.path("d"))), libc::EISDIR);
    // RENAME_NOREPLACE onto an existing name.
    fs::write(m.path("a"), b"a").expect("write");
    let (a, f) = (
        CString::new(m.path("a").as_os_str().as_bytes()).expect("c"),
        CString::new(m.path("d/f").as_os_str().as_bytes()).expect("c"),
    );
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::RENAME_NOREPLACE,
        )
    };
    assert_eq!(rc, -1);
    assert_eq!(
        std::io::Error::last_os_error().raw_os_error(),
        Some(libc::EEXIST)
    );
    let rc = unsafe {
        libc::renameat2(
            libc::AT_FDCWD,
            a.as_ptr(),
            libc::AT_FDCWD,
            f.as_ptr(),
            libc::RENAME_EXCHANGE,
        )
    };
    assert_eq!(rc, 0);
    assert_eq!(fs::read(m.path("a")).expect("read"), b"x");
    assert_eq!(fs::read(m.path("d/f")).expect("read"), b"a");
    // An unlinked file lives while it is open.
    let mut fh = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(m.path("gone"))
        .expect("open");
    fh.write_all(&vec![7u8; 100_000]).expect("write");
    fs::remove_file(m.path("gone")).expect("unlink");
    assert!(!m.path("gone").exists());
    let mut back = Vec::new();
    fh.seek(SeekFrom::Start(0)).expect("seek");
    fh.read_to_end(&mut back).expect("read");
    assert_eq!(back, vec![7u8; 100_000]);
    drop(fh);
}

#[test]
fn holes_blocks_seek_and_copy_file_range_shares_pages() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(m.path("sparse"))
        .expect("open");
    f.set_len(100 << 20).expect("truncate");
    f.write_all_at(&vec![1u8; 1 << 20], 50 << 20)
        .expect("write");
    f.sync_all().expect("fsync");
    // While a writer holds it, st_blocks counts every page up to the end (the kernel may
    // keep dirty pages the daemon has not seen): closed, the file shows its holes exactly.
    drop(f);
    let f = File::open(m.path("sparse")).expect("open");
    let blocks = std::os::unix::fs::MetadataExt::blocks(&f.metadata().expect("stat"));
    assert_eq!(
        blocks,
        (1 << 20) / 512,
        "st_blocks counts only the written MiB"
    );
    let fd = f.as_raw_fd();
    assert_eq!(unsafe { libc::lseek(fd, 0, libc::SEEK_DATA) }, 50 << 20);
    assert_eq!(
        unsafe { libc::lseek(fd, 50 << 20, libc::SEEK_HOLE) },
        51 << 20
    );
    // A page-aligned copy_file_range shares pages: 64 MiB copied, almost nothing allocated.
    let src = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(m.path("src"))
        .expect("open");
    let data: Vec<u8> = (0..64u32 << 20).map(|i| (i % 251) as u8).collect();
    src.write_all_at(&data, 0).expect("write");
    src.sync_all().expect("fsync");
    let dst = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(m.path("dst"))
        .expect("open");
    let used0 = statvfs_used(&m.mnt);
    let mut left = data.len();
    while left > 0 {
        let n = unsafe {
            libc::copy_file_range(
                src.as_raw_fd(),
                std::ptr::null_mut(),
                dst.as_raw_fd(),
                std::ptr::null_mut(),
                left,
                0,
            )
        };
        assert!(
            n > 0,
            "copy_file_range: {}",
            std::io::Error::last_os_error()
        );
        left -= n as usize;
    }
    dst.sync_all().expect("fsync");
    let grew = statvfs_used(&m.mnt).saturating_sub(used0);
    assert!(grew < 1 << 20, "a 64 MiB copy allocated {grew} bytes");
    let mut back = vec![0u8; data.len()];
    dst.read_exact_at(&mut back, 0).expect("read");
    assert!(back == data);
    // Writing the copy leaves the source alone.
    dst.write_all_at(b"changed", 4096).expect("write");
    let mut b = [0u8; 7];
    src.read_exact_at(&mut b, 4096).expect("read");
    assert_eq!(&b[..], &data[4096..4103]);
}

#[test]
fn data_survives_remount_and_kill_9() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let data: Vec<u8> = (0..10u32 << 20)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    fs::write(m.path("keep"), &data).expect("write");
    fs::create_dir_all(m.path("a/b/c")).expect("mkdir");
    std::os::unix::fs::symlink("../keep", m.path("a/link")).expect("symlink");
    m.umount();
    m.mount();
    assert!(fs::read(m.path("keep")).expect("read") == data);
    assert_eq!(
        fs::read_link(m.path("a/link")).expect("readlink"),
        Path::new("../keep")
    );
    // fsync'd data survives kill -9.
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(m.path("synced"))
        .expect("open");
    f.write_all_at(&data[..1 << 20], 0).expect("write");
    f.sync_all().expect("fsync");
    drop(f);
    m.kill9();
    m.mount();
    assert!(fs::read(m.path("synced")).expect("read") == data[..1 << 20]);
    assert!(fs::read(m.path("keep")).expect("read") == data);
}
