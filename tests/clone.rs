//! `cowfs clone`, copy_file_range and `cowfs du` on a real mount: sharing, independence of
//! the copies (through mmap too), tree clones, and every error case with its errno.

mod common;

use common::{BIN, Mount, cowfs, is_root, statvfs_used};
use std::fs::{self, OpenOptions};
use std::os::unix::fs::{FileExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::process::{Command, Output};

fn data(len: usize, seed: u32) -> Vec<u8> {
    (0..len as u32)
        .map(|i| (i.wrapping_mul(2654435761).wrapping_add(seed) >> 11) as u8)
        .collect()
}

fn clone(args: &[&Path]) -> Output {
    let a: Vec<&str> = args.iter().map(|p| p.to_str().expect("utf-8")).collect();
    let mut all = vec!["clone"];
    all.extend(a);
    cowfs(&all)
}

fn err_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

fn du_json(paths: &[&Path]) -> String {
    let mut args = vec!["du", "--json"];
    args.extend(paths.iter().map(|p| p.to_str().expect("utf-8")));
    let out = cowfs(&args);
    assert!(out.status.success(), "du: {}", err_of(&out));
    String::from_utf8_lossy(&out.stdout).to_string()
}

fn field(json: &str, path: &Path, key: &str) -> u64 {
    let at = json
        .find(&format!("{:?}", path.display().to_string()))
        .expect("path in du output");
    let rest = &json[at..];
    let k = rest.find(&format!("\"{key}\":")).expect("key") + key.len() + 3;
    rest[k..]
        .split(|c: char| !c.is_ascii_digit())
        .next()
        .and_then(|n| n.parse().ok())
        .expect("number")
}

#[test]
fn clone_shares_then_copies_diverge_and_du_tells() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let (a, b) = (m.path("a"), m.path("b"));
    let d = data(64 << 20, 1);
    fs::write(&a, &d).expect("write");
    let used0 = statvfs_used(&m.mnt);
    let out = clone(&[&a, &b]);
    assert!(out.status.success(), "{}", err_of(&out));
    assert!(
        statvfs_used(&m.mnt) - used0 < 1 << 20,
        "a clone allocates nearly nothing"
    );
    assert!(fs::read(&b).expect("read") == d);
    // Rewrite 8 MiB of the clone: 8 MiB exclusive to it, 56 MiB still shared.
    let f = OpenOptions::new().write(true).open(&b).expect("open");
    f.write_all_at(&data(8 << 20, 2), 16 << 20).expect("write");
    f.sync_all().expect("fsync");
    assert!(fs::read(&a).expect("read") == d, "the source is unchanged");
    let j = du_json(&[&b]);
    assert_eq!(field(&j, &b, "exclusive"), 8 << 20);
    assert_eq!(field(&j, &b, "shared"), 56 << 20);
    assert_eq!(field(&j, &b, "total"), 64 << 20);
    // A write to the source never shows in the clone either.
    fs::OpenOptions::new()
        .write(true)
        .open(&a)
        .expect("open")
        .write_all_at(b"SRC", 0)
        .expect("w");
    assert_eq!(&fs::read(&b).expect("read")[..3], &d[..3]);
}

#[test]
fn clone_sees_mmap_writes_and_clones_stay_apart_through_mmap() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let (a, b) = (m.path("a"), m.path("b"));
    fs::write(&a, vec![0u8; 1 << 20]).expect("write");
    let f = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&a)
        .expect("open");
    let mut map = unsafe { memmap2::MmapMut::map_mut(&f).expect("mmap") };
    map[4096..4100].copy_from_slice(b"MMAP");
    // No msync: `cowfs clone` must flush the source's dirty pages itself.
    let out = clone(&[&a, &b]);
    assert!(out.status.success(), "{}", err_of(&out));
    let got = fs::read(&b).expect("read");
    assert_eq!(
        &got[4096..4100],
        b"MMAP",
        "the clone sees a write made through mmap"
    );
    let g = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&b)
        .expect("open");
    let mut mb = unsafe { memmap2::MmapMut::map_mut(&g).expect("mmap") };
    mb[8192..8197].copy_from_slice(b"CLONE");
    mb.flush().expect("msync");
    map[12288..12291].copy_from_slice(b"SRC");
    map.flush().expect("msync");
    drop((map, mb));
    let (sa, sb) = (fs::read(&a).expect("read"), fs::read(&b).expect("read"));
    assert_eq!(
        &sa[8192..8197],
        &[0u8; 5],
        "the clone's mmap write stays out of the source"
    );
    assert_eq!(
        &sb[12288..12291],
        &[0u8; 3],
        "the source's mmap write stays out of the clone"
    );
}

#[test]
fn tree_clone_keeps_structure_links_xattrs_and_refuses_itself() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let t = m.path("t");
    fs::create_dir_all(t.join("sub/deeper")).expect("mkdir");
    fs::write(t.join("x"), b"hello").expect("write");
    fs::write(t.join("sub/deeper/big"), data(3 << 20, 3)).expect("write");
    fs::hard_link(t.join("x"), t.join("sub/y")).expect("link");
    std::os::unix::fs::symlink("../x", t.join("sub/z")).expect("symlink");
    fs::set_permissions(t.join("x"), fs::Permissions::from_mode(0o640)).expect("chmod");
    let ok = Command::new("setfattr")
        .args(["-n", "user.k", "-v", "val"])
        .arg(t.join("x"))
        .status();
    let xattrs = ok.map(|s| s.success()).unwrap_or(false);
    let t2 = m.path("t2");
    let out = cowfs(&[
        "clone",
        "-r",
        t.to_str().expect("p"),
        t2.to_str().expect("p"),
    ]);
    assert!(out.status.success(), "{}", err_of(&out));
    assert_eq!(fs::read(t2.join("x")).expect("read"), b"hello");
    assert!(fs::read(t2.join("sub/deeper/big")).expect("read") == data(3 << 20, 3));
    let (x, y) = (
        fs::metadata(t2.join("x")).expect("stat"),
        fs::metadata(t2.join("sub/y")).expect("stat"),
    );
    assert_eq!(x.ino(), y.ino(), "hard links within the tree stay linked");
    assert_eq!(x.nlink(), 2);
    assert_ne!(x.ino(), fs::metadata(t.join("x")).expect("stat").ino());
    assert_eq!(x.mode() & 0o7777, 0o640);
    assert_eq!(x.mtime(), fs::metadata(t.join("x")).expect("stat").mtime());
    assert_eq!(
        fs::read_link(t2.join("sub/z")).expect("readlink"),
        Path::new("../x")
    );
    assert_eq!(fs::metadata(t2.join("sub")).expect("stat").nlink(), 3);
    if xattrs {
        let out = Command::new("getfattr")
            .args(["--only-values", "-n", "user.k"])
            .arg(t2.join("x"))
            .output()
            .expect("getfattr");
        assert_eq!(out.stdout, b"val");
    }
    // Writing the clone leaves the source tree alone.
    fs::write(t2.join("x"), b"changed").expect("write");
    assert_eq!(fs::read(t.join("sub/y")).expect("read"), b"hello");
    // A destination inside the source is refused, and nothing is created.
    let inside = t.join("sub/copy");
    let out = cowfs(&[
        "clone",
        "-r",
        t.to_str().expect("p"),
        inside.to_str().expect("p"),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err_of(&out).contains("Invalid argument"),
        "{}",
        err_of(&out)
    );
    assert!(!inside.exists());
    // A directory without -r.
    let out = clone(&[&t, &m.path("t3")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(err_of(&out).contains("is a directory"), "{}", err_of(&out));
}

#[test]
fn clone_errors() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let (a, b) = (m.path("a"), m.path("b"));
    fs::write(&a, data(3 * 4096 + 100, 4)).expect("write");
    fs::write(&b, b"old").expect("write");
    // EEXIST without --force, replaced with it.
    let out = clone(&[&a, &b]);
    assert_eq!(out.status.code(), Some(1));
    assert!(err_of(&out).contains("File exists"), "{}", err_of(&out));
    assert_eq!(fs::read(&b).expect("read"), b"old");
    let out = cowfs(&[
        "clone",
        "--force",
        a.to_str().expect("p"),
        b.to_str().expect("p"),
    ]);
    assert!(out.status.success(), "{}", err_of(&out));
    assert!(fs::read(&b).expect("read") == fs::read(&a).expect("read"));
    // EXDEV: the destination on another filesystem.
    let other = m.tmp.path().join("elsewhere");
    let out = clone(&[&a, &other]);
    assert_eq!(out.status.code(), Some(1));
    assert!(err_of(&out).contains("cross-device"), "{}", err_of(&out));
    assert!(!other.exists());
    // Ranges: aligned works (the source's partial last page included), unaligned and
    // overlapping give EINVAL.
    let c = m.path("c");
    let range = |so: &str, d: &str, len: &str, src: &Path, dst: &Path| {
        cowfs(&[
            "clone",
            "--range",
            so,
            d,
            len,
            src.to_str().expect("p"),
            dst.to_str().expect("p"),
        ])
    };
    let out = range("4096", "8192", "0", &a, &c);
    assert!(out.status.success(), "{}", err_of(&out));
    let (sa, sc) = (fs::read(&a).expect("read"), fs::read(&c).expect("read"));
    assert_eq!(sc.len(), 8192 + sa.len() - 4096);
    assert!(sc[8192..] == sa[4096..]);
    for (so, d, len) in [
        ("100", "0", "4096"),
        ("0", "100", "4096"),
        ("0", "0", "100"),
    ] {
        let out = range(so, d, len, &a, &m.path("d"));
        assert_eq!(out.status.code(), Some(1), "range {so} {d} {len}");
        assert!(
            err_of(&out).contains("Invalid argument"),
            "{}",
            err_of(&out)
        );
    }
    let out = range("0", "4096", "8192", &a, &a);
    assert!(
        err_of(&out).contains("Invalid argument"),
        "overlap: {}",
        err_of(&out)
    );
    // EISDIR: a range into a directory cannot even be opened for writing.
    let out = range("0", "0", "4096", &a, &m.mnt);
    assert!(err_of(&out).contains("Is a directory"), "{}", err_of(&out));
    // A missing source.
    let out = clone(&[&m.path("missing"), &m.path("e")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(err_of(&out).contains("No such file"), "{}", err_of(&out));
}

#[test]
fn unprivileged_user_cannot_clone_what_it_cannot_read() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    fs::set_permissions(&m.mnt, fs::Permissions::from_mode(0o777)).expect("chmod");
    let secret = m.path("secret");
    fs::write(&secret, b"top secret").expect("write");
    fs::set_permissions(&secret, fs::Permissions::from_mode(0o600)).expect("chmod");
    let public = m.path("public");
    fs::write(&public, b"hello").expect("write");
    let as_nobody = |src: &Path, dst: &Path| {
        Command::new("setpriv")
            .args([
                "--reuid=65534",
                "--regid=65534",
                "--clear-groups",
                BIN,
                "clone",
            ])
            .arg(src)
            .arg(dst)
            .output()
            .expect("setpriv")
    };
    let stolen = m.path("stolen");
    let out = as_nobody(&secret, &stolen);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        err_of(&out).contains("Permission denied"),
        "{}",
        err_of(&out)
    );
    assert!(!stolen.exists(), "nothing is created");
    // What it may read, it may clone; the clone belongs to it.
    let mine = m.path("mine");
    let out = as_nobody(&public, &mine);
    assert!(out.status.success(), "{}", err_of(&out));
    assert_eq!(fs::metadata(&mine).expect("stat").uid(), 65534);
    assert_eq!(fs::read(&mine).expect("read"), b"hello");
}

#[test]
fn plain_cp_of_a_large_file_is_a_clone() {
    if !is_root() {
        return;
    }
    let m = Mount::new();
    let a = m.path("a");
    let f = OpenOptions::new()
        .create(true)
        .truncate(true)
        .write(true)
        .open(&a)
        .expect("open");
    let chunk = data(1 << 20, 5);
    for i in 0..96u64 {
        f.write_all_at(&chunk, i << 20).expect("write");
    }
    f.sync_all().expect("fsync");
    let used0 = statvfs_used(&m.mnt);
    let st = Command::new("cp")
        .arg(&a)
        .arg(m.path("b"))
        .status()
        .expect("cp");
    assert!(st.success());
    Command::new("sync")
        .arg(m.path("b"))
        .status()
        .expect("sync");
    let grew = statvfs_used(&m.mnt) - used0;
    assert!(grew < 1 << 20, "cp of 96 MiB allocated {grew} bytes");
    let j = du_json(&[&m.path("b")]);
    assert_eq!(field(&j, &m.path("b"), "shared"), 96 << 20);
}

#[test]
fn copy_file_range_past_4_gib_shares_everything_and_seeks_agree() {
    if !is_root() {
        return;
    }
    use std::os::unix::io::AsRawFd;
    let m = Mount::new();
    let src = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(m.path("big"))
        .expect("open");
    let size: u64 = 5 << 30;
    src.set_len(size).expect("truncate");
    let chunk = data(1 << 20, 6);
    for off in [0u64, 3 << 30, (9 << 29) + 4096] {
        src.write_all_at(&chunk, off).expect("write");
    }
    src.sync_all().expect("fsync");
    let dst = OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(m.path("copy"))
        .expect("open");
    let used0 = statvfs_used(&m.mnt);
    let mut left = size as usize;
    let mut calls = 0;
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
        calls += 1;
    }
    assert!(calls >= 2, "the kernel caps one call near 4 GiB");
    dst.sync_all().expect("fsync");
    assert_eq!(dst.metadata().expect("stat").len(), size);
    let grew = statvfs_used(&m.mnt) - used0;
    assert!(grew < 1 << 20, "a 5 GiB copy allocated {grew} bytes");
    let mut back = vec![0u8; 1 << 20];
    dst.read_exact_at(&mut back, (9 << 29) + 4096)
        .expect("read");
    assert!(back == chunk);
    // SEEK_DATA / SEEK_HOLE on the copy agree with the source (the ZFS 2.2 cp bug).
    for start in [0i64, 1 << 20, 2 << 30, (3 << 30) + 5, (9 << 29) + 4096] {
        for whence in [libc::SEEK_DATA, libc::SEEK_HOLE] {
            let a = unsafe { libc::lseek(src.as_raw_fd(), start, whence) };
            let b = unsafe { libc::lseek(dst.as_raw_fd(), start, whence) };
            assert_eq!(a, b, "lseek({start}, {whence})");
        }
    }
    assert_eq!(
        unsafe { libc::lseek(dst.as_raw_fd(), 1 << 20, libc::SEEK_DATA) },
        3 << 30
    );
}
