//! Dedup at the namespace level: identical pages merge, zero pages become holes, a page
//! that changed after it was hashed is skipped, contents never change, counts stay right.

mod common;

use cowfs::check::check;
use cowfs::ids::Ino;
use cowfs::ns::perm::Cred;
use cowfs::ns::{Ctx, Fs, RunKey};
use cowfs::page::MemBackend;
use cowfs::store::Store;

fn fs() -> Fs {
    let s = Store::create(Box::new(MemBackend::new()), Box::new(MemBackend::new())).expect("store");
    Fs::new(s, None).expect("fs")
}

fn create(fs: &mut Fs, name: &str, data: &[u8]) -> Ino {
    let ino = fs
        .mknod(
            Ctx::ROOT,
            Ino::ROOT,
            name.as_bytes(),
            libc::S_IFREG | 0o644,
            0,
        )
        .expect("create")
        .0;
    fs.write(ino, 0, data).expect("write");
    ino
}

fn content(n: usize, seed: u8) -> Vec<u8> {
    (0..n * 4096)
        .map(|i| seed ^ (i / 4096) as u8 ^ (i % 251) as u8 | 1)
        .collect()
}

fn used(fs: &mut Fs) -> u64 {
    fs.sync().expect("sync");
    let sb = fs.store().superblock().clone();
    fs.store().total_pages() - sb.free_pages
}

fn dedup_file(fs: &mut Fs, run: u64, ino: Ino) -> cowfs::ns::DedupStats {
    let mut sum = cowfs::ns::DedupStats::default();
    let mut from = 0;
    while from != u64::MAX {
        let s = fs.dedup_step(&Cred::root(), run, ino, from).expect("dedup");
        sum.scanned += s.scanned;
        sum.merged += s.merged;
        sum.zeroed += s.zeroed;
        sum.skipped += s.skipped;
        from = s.next;
    }
    sum
}

fn read_all(fs: &mut Fs, ino: Ino) -> Vec<u8> {
    let size = fs.getattr(ino).expect("getattr").size;
    fs.read(ino, 0, size as u32).expect("read")
}

#[test]
fn identical_pages_merge_and_zero_pages_become_holes() {
    let mut fs = fs();
    let data = content(600, 3);
    let a = create(&mut fs, "a", &data);
    let b = create(&mut fs, "b", &data);
    let z = create(&mut fs, "z", &vec![0u8; 100 * 4096]);
    let before = used(&mut fs);
    let s1 = dedup_file(&mut fs, 1, a);
    let s2 = dedup_file(&mut fs, 1, b);
    let s3 = dedup_file(&mut fs, 1, z);
    fs.dedup_finish(RunKey { uid: 0, run: 1 });
    assert_eq!(s1.scanned, 600);
    assert_eq!(s2.merged, 600, "every page of b merges into a's");
    assert_eq!(s3.zeroed, 100, "zero pages become holes");
    let after = used(&mut fs);
    assert!(before - after >= 700, "{before} -> {after} pages");
    assert_eq!(read_all(&mut fs, a), data);
    assert_eq!(read_all(&mut fs, b), data);
    assert_eq!(read_all(&mut fs, z), vec![0u8; 100 * 4096]);
    // The merged pages are shared: writing one file leaves the other alone.
    fs.write(a, 4096 * 7 + 3, b"CHANGED").expect("write");
    assert_eq!(read_all(&mut fs, b), data);
    fs.sync().expect("sync");
    let rep = check(fs.store()).expect("check");
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
}

#[test]
fn a_page_changed_after_hashing_is_skipped_never_merged() {
    let mut fs = fs();
    let data = content(10, 9);
    let a = create(&mut fs, "a", &data);
    let b = create(&mut fs, "b", &data);
    dedup_file(&mut fs, 5, a); // a's pages are the candidates now
    // a's page 4 changes (in place: a holds it alone) after it was hashed.
    fs.write(a, 4 * 4096, &[0x55u8; 4096]).expect("write");
    let s = dedup_file(&mut fs, 5, b);
    assert_eq!(s.merged, 9);
    assert_eq!(s.skipped, 1, "the changed page is skipped");
    assert_eq!(read_all(&mut fs, b), data, "b keeps its own bytes");
    let mut want_a = data.clone();
    want_a[4 * 4096..5 * 4096].fill(0x55);
    assert_eq!(read_all(&mut fs, a), want_a);
    // A candidate whose file is gone is skipped too.
    let c = create(&mut fs, "c", &content(3, 1));
    dedup_file(&mut fs, 6, c);
    fs.unlink(Ino::ROOT, b"c").expect("unlink");
    fs.forget(c, 1).expect("forget"); // the kernel lets go: c's inode and pages are freed
    let d = create(&mut fs, "d", &content(3, 1));
    let s = dedup_file(&mut fs, 6, d);
    assert_eq!((s.merged, s.skipped), (0, 3));
    assert_eq!(read_all(&mut fs, d), content(3, 1));
    fs.sync().expect("sync");
    let rep = check(fs.store()).expect("check");
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
}

fn user(uid: u32) -> Cred {
    Cred {
        uid,
        gid: uid,
        groups: Vec::new(),
    }
}

fn dedup_as(fs: &mut Fs, cred: &Cred, run: u64, ino: Ino) -> cowfs::Result<u64> {
    let mut merged = 0;
    let mut from = 0;
    while from != u64::MAX {
        let s = fs.dedup_step(cred, run, ino, from)?;
        merged += s.merged;
        from = s.next;
    }
    Ok(merged)
}

#[test]
fn runs_of_two_users_neither_reset_nor_join_each_other() {
    let mut fs = fs();
    let data = content(8, 4);
    let a = create(&mut fs, "a", &data);
    let b = create(&mut fs, "b", &data);
    let c = create(&mut fs, "c", &data);
    let other = content(8, 77);
    let d = create(&mut fs, "d", &other);
    let (u1, u2) = (user(1000), user(1001));
    assert_eq!(dedup_as(&mut fs, &u1, 7, a).expect("u1 a"), 0);
    // Another user's run, under another id and under the same id: its index is its own.
    assert_eq!(dedup_as(&mut fs, &u2, 9, d).expect("u2 d"), 0);
    assert_eq!(
        dedup_as(&mut fs, &u2, 7, c).expect("u2 c"),
        0,
        "user 2's run 7 is not user 1's"
    );
    fs.dedup_finish(RunKey { uid: 1001, run: 7 });
    fs.dedup_finish(RunKey { uid: 1001, run: 9 });
    // User 1's run still holds a's pages: b merges into them.
    assert_eq!(dedup_as(&mut fs, &u1, 7, b).expect("u1 b"), 8);
    fs.dedup_finish(RunKey { uid: 1000, run: 7 });
    assert_eq!(fs.dedup_runs(), 0);
    assert_eq!(read_all(&mut fs, b), data);
    assert_eq!(read_all(&mut fs, c), data);
}

#[test]
fn dedup_compares_only_files_the_caller_may_read() {
    let mut fs = fs();
    let data = content(4, 8);
    let a = create(&mut fs, "a", &data);
    let b = create(&mut fs, "b", &data);
    let u = user(1000);
    assert_eq!(dedup_as(&mut fs, &u, 1, a).expect("a"), 0);
    // a becomes unreadable to the user after it was hashed: b is not compared with it.
    let a_mode = cowfs::ns::SetAttr {
        mode: Some(0o600),
        ..Default::default()
    };
    fs.setattr(Ctx::ROOT, a, &a_mode).expect("chmod");
    assert_eq!(dedup_as(&mut fs, &u, 1, b).expect("b"), 0);
    // A file the user may not read at all is refused (EACCES).
    let err = fs.dedup_step(&u, 1, a, 0).expect_err("unreadable");
    assert_eq!(err.errno(), libc::EACCES);
}

#[test]
fn dedup_runs_are_bounded() {
    let mut fs = fs();
    let f = create(&mut fs, "f", &content(1, 2));
    // A user's fifth run ends its oldest; other users' runs stay.
    for run in 1..=5 {
        dedup_as(&mut fs, &user(1000), run, f).expect("run");
    }
    dedup_as(&mut fs, &user(1001), 1, f).expect("run");
    assert_eq!(
        fs.dedup_runs(),
        5,
        "four of user 1000's, one of user 1001's"
    );
    // Sixteen runs at once at most: the next one, with none idle, is refused.
    for uid in 2000..2011 {
        dedup_as(&mut fs, &user(uid), 1, f).expect("run");
    }
    assert_eq!(fs.dedup_runs(), 16);
    let err = dedup_as(&mut fs, &user(3000), 1, f).expect_err("too many runs");
    assert_eq!(err.errno(), libc::EBUSY);
    fs.dedup_finish(RunKey { uid: 2000, run: 1 });
    dedup_as(&mut fs, &user(3000), 1, f).expect("room again");
}

fn exclusive_bytes(m: &common::Mount, name: &str) -> u64 {
    let out = common::cowfs(&["du", "--json", m.s(&m.path(name))]);
    assert!(
        out.status.success(),
        "du: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    let at = text.find("\"exclusive\":").expect("exclusive field") + 12;
    text[at..]
        .chars()
        .take_while(char::is_ascii_digit)
        .collect::<String>()
        .parse()
        .expect("number")
}

fn dedup_ioctl(f: &std::fs::File, op: u32, run: u64) -> i32 {
    use cowfs::fuse::dedup_abi::{IOC_DEDUP, encode_req};
    use std::os::unix::io::AsRawFd;
    let mut b = encode_req(op, run, 0);
    // SAFETY: the buffer is the 64 bytes the command number says.
    let r = unsafe { libc::ioctl(f.as_raw_fd(), IOC_DEDUP as _, b.as_mut_ptr()) };
    if r < 0 {
        std::io::Error::last_os_error().raw_os_error().unwrap_or(0)
    } else {
        0
    }
}

#[test]
fn mount_dedup_needs_a_handle_open_for_writing() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    use cowfs::fuse::dedup_abi::OP_STEP;
    // With atime updates the kernel opens files through us, so handles exist.
    let m = common::Mount::with_opts(&["--atime", "relatime"]);
    let a = m.path("a");
    std::fs::write(&a, content(4, 1)).expect("write");
    let ro = std::fs::File::open(&a).expect("open");
    assert_eq!(
        dedup_ioctl(&ro, OP_STEP, 5),
        libc::EBADF,
        "read-only handle"
    );
    let rw = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open(&a)
        .expect("open rw");
    assert_eq!(dedup_ioctl(&rw, OP_STEP, 5), 0, "handle open for writing");
}

#[test]
fn mount_dedup_by_a_user_who_may_not_write_b_leaves_b_alone() {
    if !common::is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    const NOBODY: u32 = 65534;
    let m = common::Mount::new();
    // The user must reach the mount point through the temporary directory.
    std::fs::set_permissions(m.tmp.path(), std::fs::Permissions::from_mode(0o755))
        .expect("chmod tmp");
    let data = content(8, 6);
    let (a, b) = (m.path("a"), m.path("b"));
    std::fs::write(&a, &data).expect("write a");
    std::fs::write(&b, &data).expect("write b");
    std::os::unix::fs::chown(&a, Some(NOBODY), Some(NOBODY)).expect("chown a");
    std::fs::set_permissions(&b, std::fs::Permissions::from_mode(0o644)).expect("chmod b");
    for p in [&a, &b] {
        std::fs::File::open(p)
            .expect("open")
            .sync_all()
            .expect("fsync");
    }
    assert_eq!(exclusive_bytes(&m, "b"), data.len() as u64);
    let out = std::process::Command::new(common::BIN)
        .args(["dedup", m.s(&m.mnt), m.s(&a), m.s(&b)])
        .uid(NOBODY)
        .gid(NOBODY)
        .output()
        .expect("run dedup");
    assert!(
        out.status.success(),
        "dedup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        exclusive_bytes(&m, "b"),
        data.len() as u64,
        "b, which the user may read but not write, still holds its own pages"
    );
    assert_eq!(std::fs::read(&b).expect("read b"), data);
    // Root may write b: the same dedup merges it.
    let out = common::cowfs(&["dedup", m.s(&m.mnt), m.s(&a), m.s(&b)]);
    assert!(
        out.status.success(),
        "dedup: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(exclusive_bytes(&m, "b"), 0, "root's dedup shares b's pages");
    assert_eq!(std::fs::read(&b).expect("read b"), data);
}
