//! Behaviours a conformance run found wrong, each checked on a real mount: chown and the
//! set-user-ID bits, statfs against what an allocation can use, SEEK_DATA/SEEK_HOLE while
//! the kernel holds dirty pages, and atime under relatime.

mod common;

use common::{Mount, errno_of, is_root};
use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

fn cpath(p: &Path) -> CString {
    CString::new(p.as_os_str().as_bytes()).expect("path")
}

fn mode(p: &Path) -> u32 {
    fs::metadata(p).expect("stat").mode() & 0o7777
}

fn chown(p: &Path, uid: u32, gid: u32) {
    // SAFETY: a valid C string; chown has no other memory effects.
    assert_eq!(
        unsafe { libc::chown(cpath(p).as_ptr(), uid, gid) },
        0,
        "chown"
    );
}

#[test]
fn chown_by_root_without_owner_change_clears_suid() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let m = Mount::new();
    let f = m.path("f");
    fs::write(&f, b"x").expect("write");
    for (set, want) in [(0o4755, 0o755), (0o6775, 0o775), (0o2745, 0o2745)] {
        fs::set_permissions(&f, fs::Permissions::from_mode(set)).expect("chmod");
        assert_eq!(mode(&f), set);
        let md = fs::metadata(&f).expect("stat");
        chown(&f, md.uid(), md.gid());
        assert_eq!(
            mode(&f),
            want,
            "after chown to the same owner, from {set:o}"
        );
    }
    // A directory keeps its bits.
    let d = m.path("d");
    fs::create_dir(&d).expect("mkdir");
    fs::set_permissions(&d, fs::Permissions::from_mode(0o2775)).expect("chmod");
    chown(&d, 0, 0);
    assert_eq!(mode(&d), 0o2775, "a directory keeps set-group-ID");
}

fn statvfs(p: &Path) -> libc::statvfs {
    // SAFETY: zeroed is a valid statvfs; statvfs fills it from a valid C string.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    assert_eq!(unsafe { libc::statvfs(cpath(p).as_ptr(), &mut st) }, 0);
    st
}

fn fallocate(f: &File, len: u64) -> std::io::Result<()> {
    // SAFETY: a plain syscall on an open descriptor.
    let r = unsafe { libc::fallocate(f.as_raw_fd(), 0, 0, len as libc::off_t) };
    if r == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// What statfs calls available really is: fallocate of `f_bavail` blocks succeeds, the
/// reserve for unlink stays out of it (`f_bfree` counts it), and after the allocation
/// the store still deletes.
fn statfs_avail_is_allocatable(size: &str) {
    let m = Mount::with_opts(&["--max-size", size]);
    let st = statvfs(&m.mnt);
    let bs = st.f_frsize;
    assert!(
        st.f_bfree > st.f_bavail,
        "the reserve is free but not available"
    );
    let avail = st.f_bavail * bs;
    assert!(
        avail > st.f_blocks * bs / 100 * 95,
        "{size}: most of the store is available ({avail} of {})",
        st.f_blocks * bs
    );
    let f = File::create(m.path("big")).expect("create");
    let want = avail - 512 * 1024;
    fallocate(&f, want).unwrap_or_else(|e| panic!("{size}: fallocate of f_bavail - 512 KiB: {e}"));
    let g = File::create(m.path("rest")).expect("create");
    let left = statvfs(&m.mnt).f_bavail * bs;
    assert!(left <= 512 * 1024, "{size}: {left} bytes still available");
    if left > 0 {
        fallocate(&g, left).unwrap_or_else(|e| panic!("{size}: fallocate of the rest: {e}"));
    }
    assert_eq!(
        errno_of(fallocate(&g, left + (1 << 20))),
        libc::ENOSPC,
        "{size}: past what statfs said"
    );
    drop((f, g));
    fs::remove_file(m.path("big")).expect("unlink on a full store");
    fs::remove_file(m.path("rest")).expect("unlink on a full store");
}

#[test]
fn statfs_available_space_can_be_allocated() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    statfs_avail_is_allocatable("64M");
    statfs_avail_is_allocatable("1G");
}

#[test]
#[ignore = "writes 10 GiB; run with --ignored"]
fn statfs_available_space_can_be_allocated_10g() {
    statfs_avail_is_allocatable("10G");
}

/// (atime, mtime) in nanoseconds.
fn times(p: &Path) -> (i128, i128) {
    let md = fs::metadata(p).expect("stat");
    let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
    (
        ns(md.atime(), md.atime_nsec()),
        ns(md.mtime(), md.mtime_nsec()),
    )
}

fn read_once(p: &Path) {
    assert_eq!(fs::read(p).expect("read"), b"hello");
}

/// Now, by the clock file times come from: the kernel's coarse clock (one tick behind
/// the precise one at most), on cowfs as on ext4.
fn now_ns() -> i128 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid timespec for the call to fill.
    assert_eq!(
        unsafe { libc::clock_gettime(libc::CLOCK_REALTIME_COARSE, &mut ts) },
        0
    );
    i128::from(ts.tv_sec) * 1_000_000_000 + i128::from(ts.tv_nsec)
}

fn tick() {
    std::thread::sleep(std::time::Duration::from_millis(1100));
}

#[test]
fn relatime_first_read_after_a_write_updates_atime_from_the_page_cache() {
    let m = Mount::with_opts(&["--atime", "relatime"]);
    let f = m.path("f");
    fs::write(&f, b"hello").expect("write");
    tick();
    // The pages are in the kernel's cache (kept across opens): the read never reaches us.
    let before = now_ns();
    read_once(&f);
    let (a1, mt) = times(&f);
    assert!(a1 > mt, "atime after mtime ({a1} <= {mt})");
    assert!(
        a1 >= before,
        "the first read after the write updates atime ({a1} < {before})"
    );
    tick();
    read_once(&f);
    assert_eq!(times(&f).0, a1, "relatime: a second read leaves atime");
}

#[test]
fn strictatime_updates_every_read_and_noatime_none() {
    let m = Mount::with_opts(&["--atime", "strictatime"]);
    let f = m.path("f");
    fs::write(&f, b"hello").expect("write");
    read_once(&f);
    tick();
    let before = now_ns();
    read_once(&f);
    assert!(times(&f).0 >= before, "strictatime: every read");
    drop(m);
    let m = Mount::with_opts(&["-o", "noatime"]);
    let f = m.path("f");
    fs::write(&f, b"hello").expect("write");
    let a0 = times(&f).0;
    tick();
    read_once(&f);
    assert_eq!(times(&f).0, a0, "noatime: never");
}

/// Creates (or empties) `p`, open for reading and writing.
fn create_rw(p: &Path) -> File {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(true)
        .open(p)
        .expect("create")
}

fn seek(f: &File, off: u64, whence: i32) -> Result<u64, i32> {
    // SAFETY: a plain syscall on an open descriptor.
    let r = unsafe { libc::lseek(f.as_raw_fd(), off as libc::off_t, whence) };
    if r < 0 {
        Err(std::io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(r as u64)
    }
}

const MIB: u64 = 1 << 20;

/// Data at 0..4 KiB and 1 MiB..1 MiB+4 KiB, a hole between: checks what SEEK_DATA and
/// SEEK_HOLE answer (the hole exactly; unless `exact`, no hole but the end of file would
/// do too) and that no data is ever called a hole.
fn check_seeks(f: &File, exact: bool) {
    let size = MIB + 4096;
    assert_eq!(seek(f, 0, libc::SEEK_DATA), Ok(0), "data at 0");
    let h = seek(f, 0, libc::SEEK_HOLE).expect("SEEK_HOLE at 0");
    assert!(h == 4096 || (!exact && h == size), "first hole at {h}");
    let d = seek(f, 4096, libc::SEEK_DATA).expect("SEEK_DATA after the first page");
    assert!(
        d <= MIB && (d == MIB || !exact),
        "data at 1 MiB found at {d}"
    );
    assert_eq!(seek(f, MIB + 10, libc::SEEK_DATA), Ok(MIB + 10));
    assert_eq!(
        seek(f, MIB, libc::SEEK_HOLE),
        Ok(size),
        "no hole inside the data"
    );
    assert_eq!(
        seek(f, size, libc::SEEK_DATA),
        Err(libc::ENXIO),
        "past the end"
    );
}

#[test]
fn seek_data_and_hole_never_miss_dirty_pages() {
    let m = Mount::new();
    let p = m.path("f");
    let f = create_rw(&p);
    // Written, and still open: the pages are dirty in the kernel, unseen by the daemon.
    f.write_at(&[1u8; 4096], 0).expect("pwrite");
    f.write_at(&[2u8; 4096], MIB).expect("pwrite");
    check_seeks(&f, true);
    let md = f.metadata().expect("fstat");
    assert_eq!(md.len(), MIB + 4096);
    assert!(
        md.blocks() * 512 >= 8192,
        "st_blocks counts the dirty pages"
    );
    // Part written back, part dirty.
    f.sync_all().expect("fsync");
    f.write_at(&[3u8; 4096], MIB).expect("pwrite");
    f.write_at(&[4u8; 100], MIB + 4096 - 100).expect("pwrite");
    check_seeks(&f, true);
    drop(f);
    // No writer: the answers come from the map, holes and all.
    let r = File::open(&p).expect("open");
    check_seeks(&r, true);
}

#[test]
fn seek_data_sees_pages_dirtied_through_a_shared_mapping() {
    let m = Mount::new();
    let p = m.path("mapped");
    let f = create_rw(&p);
    f.set_len(MIB + 4096).expect("ftruncate");
    let len = (MIB + 4096) as usize;
    // SAFETY: a fresh shared mapping of the whole file, written inside its bounds and
    // unmapped below; nothing else aliases it.
    let map = unsafe {
        libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ | libc::PROT_WRITE,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        )
    };
    assert_ne!(map, libc::MAP_FAILED, "mmap");
    // SAFETY: inside the mapping.
    unsafe { std::ptr::write_bytes((map as *mut u8).add(MIB as usize), 7, 4096) };
    // The descriptor goes; the mapping keeps the file open for writing.
    drop(f);
    let r = File::open(&p).expect("open");
    assert_eq!(
        seek(&r, 0, libc::SEEK_DATA),
        Ok(MIB),
        "the mapped page's data"
    );
    assert_eq!(seek(&r, MIB, libc::SEEK_HOLE), Ok(MIB + 4096));
    // SAFETY: the mapping made above.
    assert_eq!(unsafe { libc::munmap(map, len) }, 0);
}

#[test]
fn seek_with_one_worker_is_exact_while_a_writer_holds_dirty_pages() {
    // One worker: the write-back the daemon asks of the kernel before answering runs on a
    // thread of its own, so the one worker is free to take the WRITEs it causes.
    for opts in [
        &["--threads", "1"][..],
        &["--threads", "1", "--atime", "relatime"],
    ] {
        let m = Mount::with_opts(opts);
        let p = m.path("f");
        let f = create_rw(&p);
        f.set_len(MIB + 4096).expect("ftruncate");
        f.write_at(&[5u8; 4096], MIB).expect("pwrite");
        assert_eq!(seek(&f, 0, libc::SEEK_DATA), Ok(MIB), "{opts:?}");
        assert_eq!(seek(&f, 0, libc::SEEK_HOLE), Ok(0), "{opts:?}");
        assert_eq!(seek(&f, MIB, libc::SEEK_HOLE), Ok(MIB + 4096), "{opts:?}");
        drop(f);
        let r = File::open(&p).expect("open");
        assert_eq!(seek(&r, 0, libc::SEEK_DATA), Ok(MIB), "exact once closed");
    }
}

#[test]
fn mount_refuses_an_unknown_option() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let (store, mnt) = (tmp.path().join("store"), tmp.path().join("mnt"));
    fs::create_dir(&mnt).expect("mkdir");
    let s = |p: &Path| p.to_str().expect("utf-8").to_string();
    let out = common::cowfs(&["mount", "-o", "noatime,bogus", &s(&store), &s(&mnt)]);
    assert_eq!(out.status.code(), Some(2), "a usage error");
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown option 'bogus'"));
}
