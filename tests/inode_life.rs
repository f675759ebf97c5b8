//! The kernel's inode contract on a real mount: an inode lives until the kernel has
//! forgotten it, no handle is open and no name links it. Every test here failed before
//! lookups were counted (the daemon freed an inode the kernel still held).

mod common;

use common::{Mount, cowfs, is_root, statvfs_used};
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;
use std::process::Command;

fn drop_caches() {
    // Makes the kernel evict unused inodes, so it sends FORGET for them.
    let _ = fs::write("/proc/sys/vm/drop_caches", "2");
}

/// Writes `n` small files under `dir` in 30 subdirectories.
fn write_tree(dir: &Path, n: usize) {
    for d in 0..30 {
        fs::create_dir_all(dir.join(format!("d{d}"))).expect("mkdir");
    }
    for i in 0..n {
        let p = dir.join(format!("d{}/f{i}", i % 30));
        fs::write(&p, format!("file {i}\n").repeat(1 + i % 7)).expect("write");
    }
}

/// Reads every file under `dir` back.
fn read_tree(dir: &Path, n: usize) {
    for i in 0..n {
        let p = dir.join(format!("d{}/f{i}", i % 30));
        let b = fs::read(&p).expect("read");
        assert_eq!(b, format!("file {i}\n").repeat(1 + i % 7).into_bytes());
    }
}

fn sync_f(p: &Path) -> std::process::Output {
    Command::new("sync")
        .arg("-f")
        .arg(p)
        .output()
        .expect("run sync")
}

fn sync_all() {
    let _ = Command::new("sync").status();
}

#[test]
fn syncfs_after_rm_of_read_files_never_fails() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let tree = m.path("tree");
    for round in 0..12 {
        write_tree(&tree, 3000);
        sync_all();
        read_tree(&tree, 3000);
        fs::remove_dir_all(&tree).expect("rm -rf");
        sync_all();
        let out = sync_f(&m.mnt);
        assert!(
            out.status.success(),
            "round {round}: sync -f: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn rollback_after_rm_of_read_files_succeeds_every_time() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let tree = m.path("tree");
    fs::write(m.path("keep"), b"v1").expect("write");
    let mnt = m.s(&m.mnt);
    let out = cowfs(&["snapshot", "create", mnt, "base"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for round in 0..6 {
        write_tree(&tree, 3000);
        sync_all();
        read_tree(&tree, 3000);
        fs::write(m.path("keep"), format!("v{}", round + 2)).expect("write");
        fs::remove_dir_all(&tree).expect("rm -rf");
        sync_all();
        let out = cowfs(&["snapshot", "rollback", mnt, "base"]);
        assert!(
            out.status.success(),
            "round {round}: rollback: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(fs::read(m.path("keep")).expect("read"), b"v1");
    }
}

#[test]
fn an_unlinked_open_file_keeps_working_and_its_pages_come_back() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let p = m.path("f");
    let used0 = statvfs_used(&m.mnt);
    let mut f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .expect("create");
    f.write_all(&vec![7u8; 8 << 20]).expect("write");
    f.sync_all().expect("fsync");
    fs::remove_file(&p).expect("unlink");
    drop_caches();
    assert!(fs::metadata(&p).is_err(), "the name is gone");

    // Every request on the descriptor works as on ext4.
    f.write_all_at(b"tail", 8 << 20).expect("pwrite");
    f.sync_all().expect("fsync after unlink");
    let st = f.metadata().expect("fstat");
    assert_eq!(st.len(), (8 << 20) + 4);
    assert_eq!(st.nlink(), 0);
    f.set_permissions(fs::Permissions::from_mode(0o600))
        .expect("fchmod");
    assert_eq!(f.metadata().expect("fstat").mode() & 0o7777, 0o600);
    let t = std::time::UNIX_EPOCH + std::time::Duration::from_secs(1_000_000_000);
    f.set_times(fs::FileTimes::new().set_modified(t).set_accessed(t))
        .expect("futimens");
    assert_eq!(f.metadata().expect("fstat").mtime(), 1_000_000_000);
    let fd = f.as_raw_fd();
    let name = c"user.k";
    // SAFETY: valid fd, name and buffers of the given lengths.
    let r = unsafe { libc::fsetxattr(fd, name.as_ptr(), b"val".as_ptr().cast(), 3, 0) };
    assert_eq!(r, 0, "fsetxattr: {}", std::io::Error::last_os_error());
    let mut buf = [0u8; 16];
    // SAFETY: as above.
    let n = unsafe { libc::fgetxattr(fd, name.as_ptr(), buf.as_mut_ptr().cast(), buf.len()) };
    assert_eq!(n, 3, "fgetxattr: {}", std::io::Error::last_os_error());
    assert_eq!(&buf[..3], b"val");
    let mut back = vec![0u8; 4];
    f.read_exact_at(&mut back, 8 << 20).expect("pread");
    assert_eq!(&back, b"tail");
    f.read_exact_at(&mut back, 4096).expect("pread");
    assert_eq!(back, vec![7u8; 4]);
    f.sync_all().expect("fsync");
    let held = statvfs_used(&m.mnt);
    assert!(held >= used0 + (8 << 20), "the pages are still held");

    drop(f);
    drop_caches();
    let mut freed = false;
    for _ in 0..100 {
        sync_all();
        if statvfs_used(&m.mnt) < used0 + (1 << 20) {
            freed = true;
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    assert!(
        freed,
        "after close the pages come back: used {} before, {} now",
        used0,
        statvfs_used(&m.mnt)
    );
}

fn getdents_of(fd: i32) -> (i64, i32) {
    let mut buf = [0u8; 4096];
    // SAFETY: valid fd and buffer.
    let n = unsafe { libc::syscall(libc::SYS_getdents64, fd, buf.as_mut_ptr(), buf.len()) };
    (
        n,
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0),
    )
}

/// What the same steps give on the host's own filesystem (ext4 here), for comparison.
fn reference_dead_dir_getdents() -> (i64, i32) {
    let tmp = tempfile::tempdir().expect("tempdir");
    let d = tmp.path().join("d");
    fs::create_dir(&d).expect("mkdir");
    let f = File::open(&d).expect("open dir");
    fs::remove_dir(&d).expect("rmdir");
    getdents_of(f.as_raw_fd())
}

fn check_dead_dir(f: &File, what: &str) {
    let st = f
        .metadata()
        .unwrap_or_else(|e| panic!("{what}: fstat: {e}"));
    assert!(st.is_dir(), "{what}");
    assert_eq!(st.nlink(), 0, "{what}: st_nlink");
    // Through the C library a removed directory lists as empty (glibc reads the
    // kernel's ENOENT for a dead directory as the end); raw getdents64 answers as ext4.
    let listed = fs::read_dir(format!("/proc/self/fd/{}", f.as_raw_fd()));
    if let Ok(it) = listed {
        assert_eq!(it.count(), 0, "{what}: listing");
    }
    let (n, e) = getdents_of(f.as_raw_fd());
    let (rn, re) = reference_dead_dir_getdents();
    assert_eq!(
        (n, if n < 0 { e } else { 0 }),
        (rn, if rn < 0 { re } else { 0 }),
        "{what}: getdents64 as on the host filesystem"
    );
}

#[test]
fn an_open_directory_survives_rmdir_and_rename_over_it() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let d = m.path("d");
    fs::create_dir(&d).expect("mkdir");
    let f = File::open(&d).expect("open dir");
    fs::remove_dir(&d).expect("rmdir");
    drop_caches();
    check_dead_dir(&f, "after rmdir");
    // Nothing can be created in it (ENOENT, as Linux answers).
    let r = fs::create_dir(format!("/proc/self/fd/{}/x", f.as_raw_fd()));
    assert!(r.is_err(), "mkdir in a removed directory");
    drop(f);

    fs::create_dir(&d).expect("mkdir");
    fs::create_dir(m.path("other")).expect("mkdir");
    let f = File::open(&d).expect("open dir");
    fs::rename(m.path("other"), &d).expect("rename over an empty dir");
    drop_caches();
    check_dead_dir(&f, "after rename over it");
    drop(f);
    drop_caches();
    assert!(fs::metadata(&d).expect("stat").is_dir());

    // Nothing is left behind: the store checks clean.
    m.umount_and_fsck_clean();
}

#[test]
fn a_file_held_by_the_kernel_outlives_its_last_name() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let p = m.path("f");
    fs::write(&p, b"hello").expect("write");
    // Another name on the same inode, looked up (the kernel holds it), then removed
    // through the other name: a stat through the held path must still work.
    let q = m.path("g");
    fs::hard_link(&p, &q).expect("link");
    let before = fs::metadata(&q).expect("stat");
    fs::remove_file(&p).expect("unlink");
    let after = fs::metadata(&q).expect("stat after unlink of the other name");
    assert_eq!(after.ino(), before.ino());
    assert_eq!(after.nlink(), 1);
    fs::remove_file(&q).expect("unlink");
    drop_caches();
    sync_all();
    m.umount_and_fsck_clean();
    m.mount();
}

#[test]
fn orphans_left_by_a_crash_are_freed_at_the_next_mount() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let out = cowfs(&["snapshot", "create", m.s(&m.mnt), "br", "--writable"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let used0 = statvfs_used(&m.mnt);
    let p = m.path("big");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&p)
        .expect("create");
    f.write_all_at(&vec![3u8; 16 << 20], 0).expect("write");
    // The same inside a branch (a writable snapshot), which has its own orphans.
    let bp = m.path(".snapshots/br/big");
    let bf = OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(&bp)
        .expect("create in the branch");
    bf.write_all_at(&vec![4u8; 16 << 20], 0).expect("write");
    fs::remove_file(&bp).expect("unlink in the branch");
    bf.sync_all().expect("fsync");
    fs::create_dir(m.path("d")).expect("mkdir");
    let d = File::open(m.path("d")).expect("open dir");
    fs::remove_file(&p).expect("unlink");
    fs::remove_dir(m.path("d")).expect("rmdir");
    // fsync: the orphans are committed, then the daemon dies with them held.
    f.sync_all().expect("fsync");
    m.kill9();
    drop(f);
    drop(bf);
    drop(d);
    m.mount();
    let used = statvfs_used(&m.mnt);
    assert!(
        used < used0 + (1 << 20),
        "the crash's orphans were freed at mount: used {used0} before, {used} now"
    );
    m.umount_and_fsck_clean();
    m.mount();
}
