//! The namespace's data steps without a mount: fallocate over reused pages, whole-page
//! writes that go in place or into fresh pages, and the plan/copy/finish split the FUSE
//! adapter uses (a write whose copies fail leaves the file as it was and leaks nothing).

use cowfs::check::check;
use cowfs::ids::Ino;
use cowfs::ns::{Ctx, Fs, SetAttr};
use cowfs::page::MemBackend;
use cowfs::store::Store;

const PS: usize = 4096;

fn fs() -> Fs {
    let s = Store::create(Box::new(MemBackend::new()), Box::new(MemBackend::new())).expect("store");
    Fs::new(s, None).expect("fs")
}

fn file(fs: &mut Fs, name: &str) -> Ino {
    fs.mknod(
        Ctx::ROOT,
        Ino::ROOT,
        name.as_bytes(),
        libc::S_IFREG | 0o644,
        0,
    )
    .expect("create")
    .0
}

fn truncate(fs: &mut Fs, ino: Ino, size: u64) {
    let a = SetAttr {
        size: Some(size),
        ..Default::default()
    };
    fs.setattr(Ctx::ROOT, ino, &a).expect("truncate");
}

#[test]
fn fallocate_zeroes_pages_that_held_other_data() {
    let mut fs = fs();
    // A store of 16 MiB at most: once a's 12 MiB are freed, the allocator must come back
    // to a's old pages for b.
    fs.store().set_max_size(16 << 20).expect("max size");
    let a = file(&mut fs, "a");
    fs.write(a, 0, &vec![0xAB; 12 << 20]).expect("write");
    fs.sync().expect("commit");
    truncate(&mut fs, a, 0);
    // The commit turns a's pages into free pages.
    fs.sync().expect("commit");
    let b = file(&mut fs, "b");
    fs.write(b, 10, b"head").expect("write");
    fs.fallocate(b, 0, 4 << 20, 0).expect("fallocate");
    let got = fs.read(b, 0, 4 << 20).expect("read");
    assert_eq!(got.len(), 4 << 20);
    assert_eq!(&got[10..14], b"head");
    let stray = got
        .iter()
        .enumerate()
        .find(|&(i, &v)| !(10..14).contains(&i) && v != 0);
    assert_eq!(stray, None, "fallocate must hand out zeroed pages");
    let inode = fs.getattr(b).expect("stat");
    assert_eq!(fs.data_pages(b, &inode).expect("blocks"), 1024);
    let r = check(fs.store()).expect("check");
    assert!(r.problems.is_empty(), "{:?}", r.problems);
}

#[test]
fn whole_page_writes_go_in_place_or_into_fresh_pages() {
    let mut fs = fs();
    let a = file(&mut fs, "a");
    let data: Vec<u8> = (0..16 * PS).map(|i| (i % 251) as u8).collect();
    fs.write(a, 0, &data).expect("write");
    fs.sync().expect("commit");
    let before = fs.store_stats().expect("stats");
    // Exclusive pages committed once: a rewrite goes in place, no page allocated.
    fs.write(a, 4 * PS as u64, &vec![1u8; 8 * PS])
        .expect("rewrite");
    let after = fs.store_stats().expect("stats");
    assert_eq!(
        after.used_pages, before.used_pages,
        "in-place rewrite allocates nothing"
    );
    let mut want = data.clone();
    want[4 * PS..12 * PS].fill(1);
    assert_eq!(fs.read(a, 0, want.len() as u32).expect("read"), want);
    let r = check(fs.store()).expect("check");
    assert!(r.problems.is_empty(), "{:?}", r.problems);
}

#[test]
fn a_write_whose_copies_fail_changes_nothing_and_leaks_nothing() {
    let mut fs = fs();
    let a = file(&mut fs, "a");
    fs.write(a, 0, &vec![5u8; 2 * PS]).expect("write");
    fs.sync().expect("commit");
    let used = fs.store_stats().expect("stats").used_pages;
    // A write past the end (fresh pages) whose copies fail.
    fs.begin_op();
    let plan = fs
        .plan_write(a, 2 * PS as u64, &vec![7u8; 4 * PS], Default::default())
        .expect("plan");
    fs.end_op(true);
    fs.begin_op();
    let io = Err(cowfs::Error::Io(std::io::Error::from_raw_os_error(
        libc::EIO,
    )));
    let answer = fs.finish_write(plan, io).expect("finish step");
    fs.end_op(true);
    assert!(answer.is_err(), "the write reports the copy failure");
    assert_eq!(
        fs.getattr(a).expect("stat").size,
        2 * PS as u64,
        "size unchanged"
    );
    assert_eq!(
        fs.read(a, 0, 8 * PS as u32).expect("read"),
        vec![5u8; 2 * PS]
    );
    fs.sync().expect("commit");
    assert_eq!(
        fs.store_stats().expect("stats").used_pages,
        used,
        "fresh pages given back"
    );
    let r = check(fs.store()).expect("check");
    assert!(r.problems.is_empty(), "{:?}", r.problems);
}

#[test]
fn prefetch_finds_every_leaf_and_changes_nothing() {
    let mut fs = fs();
    let a = file(&mut fs, "a");
    // 20 MiB with a hole in the middle: 5,120 pages, of which 1,000 are a hole.
    fs.write(a, 0, &vec![3u8; 20 << 20]).expect("write");
    fs.fallocate(
        a,
        4 << 20,
        1000 * PS as u64,
        libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE,
    )
    .expect("punch");
    fs.sync().expect("commit");
    let map = fs.getattr(a).expect("stat").map;
    let leaves = map
        .leaves(fs.store(), 4096)
        .expect("walk")
        .expect("under the limit");
    let mut pages = 0;
    for &l in &leaves {
        pages += cowfs::object::MapRoot::leaf_pages(fs.store(), l)
            .expect("leaf")
            .len();
    }
    assert_eq!(
        pages,
        5120 - 1000,
        "every data page sits under one of the leaves"
    );
    // 510 entries a leaf: pages 0..5119 need 11 leaves, and none lies wholly in the hole.
    assert_eq!(leaves.len(), 11);
    assert_eq!(
        map.leaves(fs.store(), 1).expect("walk"),
        None,
        "over the limit"
    );
    let used = fs.store_stats().expect("stats").used_pages;
    fs.prefetch(a, true).expect("prefetch");
    fs.prefetch(a, false).expect("prefetch");
    assert_eq!(fs.store_stats().expect("stats").used_pages, used);
    let got = fs.read(a, 0, 20 << 20).expect("read");
    assert_eq!(got[..4 << 20], vec![3u8; 4 << 20][..]);
    assert!(got[4 << 20..(4 << 20) + 1000 * PS].iter().all(|&b| b == 0));
    assert!(got[(4 << 20) + 1000 * PS..].iter().all(|&b| b == 3));
}

#[test]
fn an_empty_write_changes_nothing() {
    let mut fs = fs();
    let a = file(&mut fs, "a");
    fs.write(a, 0, b"abc").expect("write");
    assert_eq!(fs.write(a, 1 << 20, b"").expect("empty write"), 0);
    assert_eq!(fs.getattr(a).expect("stat").size, 3);
    assert_eq!(fs.read(a, 0, 10).expect("read"), b"abc");
}

#[test]
fn an_in_place_write_copied_by_the_adapter_is_synced_by_the_next_commit() {
    let mut fs = fs();
    let a = file(&mut fs, "a");
    fs.write(a, 0, &vec![7u8; 4 * PS]).expect("write");
    fs.sync().expect("commit");
    assert!(!fs.store().has_changes(), "nothing left after the commit");
    // The FUSE adapter's path: plan under the lock, copy the bytes itself through the
    // store file's descriptor, no finish step for an in-place write inside the file.
    let opts = cowfs::ns::WriteOpts {
        kill_suid: false,
        stamp_times: false,
    };
    let plan = fs.plan_write(a, PS as u64, &[9u8; PS], opts).expect("plan");
    assert!(
        !plan.needs_finish(),
        "a rewrite inside the file goes in place"
    );
    // So the plan itself must tell the store that data changed: otherwise an fsync that
    // follows finds nothing to commit and never syncs the store file.
    assert!(
        fs.store().has_changes(),
        "an in-place write must make the next commit sync"
    );
}
