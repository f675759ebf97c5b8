use super::*;
use crate::page::{CrashBackend, MemBackend};
use layout::{GROUP_PAGES, RC_PENDING, RC_RESERVED};

fn mem_store() -> Store {
    Store::create(Box::new(MemBackend::new()), Box::new(MemBackend::new())).expect("create")
}

#[test]
fn alloc_refcount_free_and_reuse_after_commit() {
    let mut s = mem_store();
    let free0 = s.superblock().free_pages;
    let a = s.alloc().expect("alloc");
    assert!(a.0 > 1, "page 0 and the group header are never handed out");
    assert_eq!(s.refcount(a).expect("rc"), 1);
    s.incref(a).expect("incref");
    assert_eq!(s.refcount(a).expect("rc"), 2);
    assert!(!s.decref(a).expect("decref"));
    assert!(s.decref(a).expect("decref"), "last reference frees");
    // Pending: not reusable before the commit.
    let b = s.alloc().expect("alloc");
    assert_ne!(a, b);
    s.commit().expect("commit");
    assert_eq!(s.superblock().free_pages, free0 - 1);
    assert_eq!(s.refcount(a).expect("rc"), 0);
    assert!(
        s.decref(a).is_err(),
        "dropping a free page is corruption, not a panic"
    );
}

#[test]
fn zero_page_is_never_counted() {
    let mut s = mem_store();
    s.incref(PageNo::ZERO).expect("incref zero");
    assert!(!s.decref(PageNo::ZERO).expect("decref zero"));
    assert_eq!(s.refcount(PageNo::ZERO).expect("rc"), 0);
    let mut buf = [1u8; 16];
    s.read_data(PageNo::ZERO, 0, &mut buf).expect("read");
    assert_eq!(buf, [0u8; 16]);
    assert!(s.write_data(PageNo::ZERO, 0, &[1]).is_err());
}

#[test]
fn write_cow_in_place_vs_copy() {
    let mut s = mem_store();
    let p = s.write_cow(PageNo::ZERO, 10, b"hello").expect("new");
    let q = s.write_cow(p, 0, b"J").expect("in place");
    assert_eq!(p, q, "exclusive page is written in place");
    s.incref(p).expect("share");
    let r = s.write_cow(p, 0, b"M").expect("copy");
    assert_ne!(r, p, "shared page is copied");
    let mut a = [0u8; 15];
    s.read_data(p, 0, &mut a).expect("read");
    assert_eq!(&a[10..15], b"hello");
    assert_eq!(a[0], b'J');
    s.read_data(r, 0, &mut a).expect("read");
    assert_eq!(a[0], b'M');
    assert_eq!(&a[10..15], b"hello");
    assert_eq!(s.refcount(p).expect("rc"), 1);
    assert_eq!(s.counters().cow_copies, 1);
}

#[test]
fn grows_past_one_group() {
    let mut s = mem_store();
    let mut pages = Vec::new();
    for _ in 0..3000 {
        pages.push(s.alloc().expect("alloc"));
    }
    assert!(s.superblock().groups >= 3);
    pages.sort();
    pages.dedup();
    assert_eq!(pages.len(), 3000);
    assert!(
        pages
            .iter()
            .all(|p| p.0 % layout::GROUP_PAGES != 1 && p.0 != 0)
    );
}

#[test]
fn reopen_after_commit_and_crash_drops_uncommitted() {
    let dev = CrashBackend::new(Vec::new());
    let jnl = CrashBackend::new(Vec::new());
    let (dimg, jimg) = (dev.image(), jnl.image());
    let mut s = Store::create(Box::new(dev), Box::new(jnl)).expect("create");
    s.set_root(0, 42);
    let p = s.alloc().expect("alloc");
    s.write_data(p, 0, b"durable").expect("write");
    s.commit().expect("commit");
    s.set_root(0, 43);
    let _lost = s.alloc().expect("alloc");
    // Crash: only what the syncs made durable survives.
    let mut s2 = Store::open(
        Box::new(MemBackend::from_bytes(dimg.durable())),
        Box::new(MemBackend::from_bytes(jimg.durable())),
    )
    .expect("reopen");
    assert_eq!(s2.root(0), 42);
    assert_eq!(s2.refcount(p).expect("rc"), 1);
    let mut b = [0u8; 7];
    s2.read_data(p, 0, &mut b).expect("read");
    assert_eq!(&b, b"durable");
}

#[test]
fn corrupt_metadata_is_reported_not_served() {
    let dev = CrashBackend::new(Vec::new());
    let dimg = dev.image();
    let mut s = Store::create(Box::new(dev), Box::new(MemBackend::new())).expect("create");
    let m = s.alloc_meta(Kind::Blob).expect("meta");
    s.close().expect("close");
    let mut bytes = dimg.durable();
    bytes[(m.0 * PS) as usize + 100] ^= 0xff;
    let mut s2 = Store::open(
        Box::new(MemBackend::from_bytes(bytes)),
        Box::new(MemBackend::new()),
    )
    .expect("open");
    let e = s2.with_meta(m, Kind::Blob, |_| ()).expect_err("corrupt");
    assert_eq!(e.errno(), libc::EIO);
    assert!(e.to_string().contains(&format!("page {}", m.0)));
}

#[test]
fn truncated_and_foreign_stores_are_refused() {
    let e = Store::open(Box::new(MemBackend::new()), Box::new(MemBackend::new()))
        .err()
        .expect("empty");
    assert!(e.to_string().contains("truncated"), "{e}");
    let e = Store::open(
        Box::new(MemBackend::from_bytes(vec![7u8; 8192])),
        Box::new(MemBackend::new()),
    )
    .err()
    .expect("foreign");
    assert!(e.to_string().contains("not a cowfs store"), "{e}");
}

#[test]
fn max_pages_gives_enospc() {
    let mut s = mem_store();
    s.set_max_pages(layout::GROUP_PAGES);
    let mut n = 0;
    let err = loop {
        match s.alloc() {
            Ok(_) => n += 1,
            Err(e) => break e,
        }
    };
    assert_eq!(err.errno(), libc::ENOSPC);
    assert_eq!(n, layout::GROUP_PAGES - 2);
}

#[test]
fn rollback_undoes_a_failed_operation() {
    let mut s = mem_store();
    s.set_max_pages(layout::GROUP_PAGES * 2);
    let keep = s.alloc_meta(Kind::Blob).expect("meta");
    s.commit().expect("commit");
    let before = s.superblock().clone();
    s.begin_op();
    s.meta_mut(keep, Kind::Blob).expect("mut")[100] = 9;
    let mut got = Vec::new();
    let err = loop {
        match s.alloc_meta(Kind::Blob) {
            Ok(p) => got.push(p),
            Err(e) => break e,
        }
    };
    assert_eq!(err.errno(), libc::ENOSPC);
    assert!(s.decref(keep).expect("decref"));
    s.rollback_op();
    assert_eq!(s.superblock(), &before, "allocator state is back");
    assert_eq!(s.refcount(keep).expect("rc"), 1);
    assert_eq!(s.with_meta(keep, Kind::Blob, |b| b[100]).expect("read"), 0);
    assert_eq!(s.refcount(got[0]).expect("rc"), 0);
    s.commit().expect("commit");
    assert_eq!(s.superblock().free_pages, before.free_pages);
}

#[test]
fn a_failed_commit_refuses_further_changes() {
    struct FailSync(MemBackend);
    impl crate::page::Backend for FailSync {
        fn len(&self) -> u64 {
            self.0.len()
        }
        fn set_len(&mut self, len: u64) -> Result<()> {
            self.0.set_len(len)
        }
        fn read(&self, off: u64, buf: &mut [u8]) -> Result<()> {
            self.0.read(off, buf)
        }
        fn write(&mut self, off: u64, buf: &[u8]) -> Result<()> {
            self.0.write(off, buf)
        }
        fn sync(&mut self) -> Result<()> {
            Err(Error::Io(std::io::Error::from_raw_os_error(libc::EIO)))
        }
    }
    let mut s = mem_store();
    s.close().expect("close");
    let mut s = Store::assemble(
        Box::new(FailSync(MemBackend::from_bytes(vec![0; 0]))),
        Journal::new(Box::new(MemBackend::new())),
        Superblock::new(),
    );
    s.grow(1).expect("grow");
    assert!(s.commit().is_err());
    assert!(matches!(s.alloc(), Err(Error::Failed)));
    assert!(matches!(s.commit(), Err(Error::Failed)));
}

/// A closed store of `groups` groups, as bytes.
fn closed_store(groups: u64) -> Vec<u8> {
    let dev = CrashBackend::new(Vec::new());
    let img = dev.image();
    let mut s = Store::create(Box::new(dev), Box::new(MemBackend::new())).expect("create");
    if groups > 1 {
        s.grow(groups - 1).expect("grow");
    }
    s.close().expect("close");
    img.durable()
}

/// Opens `bytes` and returns the outcome with the page file's length after it.
fn open_len(bytes: Vec<u8>, journal: Vec<u8>) -> (Result<Store>, u64) {
    let img = CrashBackend::new(bytes);
    let r = Store::open(Box::new(img), Box::new(MemBackend::from_bytes(journal)));
    let len = r.as_ref().map_or(0, |s| s.total_pages() * PS);
    (r, len)
}

fn set_groups(bytes: &mut [u8], groups: u64) {
    layout::put64(bytes, 32, groups);
    layout::seal(PageNo(0), &mut bytes[..PAGE_SIZE]);
}

#[test]
fn a_group_count_that_wraps_is_corrupt_and_the_file_is_kept() {
    // Issue 14: groups * 1020 * 4096 wrapped to a small length and open cut the file.
    let mut bytes = closed_store(2);
    let len = bytes.len();
    let wraps = u64::MAX / (GROUP_PAGES * PS) + 2;
    assert!(
        wraps.wrapping_mul(GROUP_PAGES * PS) < len as u64,
        "the product wraps"
    );
    set_groups(&mut bytes, wraps);
    let dev = MemBackend::from_bytes(bytes);
    let e = Store::open(Box::new(dev), Box::new(MemBackend::new()))
        .err()
        .expect("refused");
    assert!(matches!(e, Error::Corrupt { page: 0, .. }), "{e}");
    // Zero groups would make the allocator divide by zero.
    let mut bytes = closed_store(1);
    set_groups(&mut bytes, 0);
    assert!(matches!(
        open_len(bytes, Vec::new()).0,
        Err(Error::Corrupt { page: 0, .. })
    ));
}

#[test]
fn a_smaller_group_count_than_the_file_holds_is_refused_not_cut() {
    let mut bytes = closed_store(3);
    let len = bytes.len() as u64;
    layout::put64(&mut bytes, 40, 100); // a free count one group can hold
    set_groups(&mut bytes, 1);
    let (r, _) = open_len(bytes.clone(), Vec::new());
    let e = r.err().expect("refused");
    assert!(e.to_string().contains("valid header for group 1"), "{e}");
    // Growth after the last commit (headers never written home) is still cut.
    let mut grown = closed_store(1);
    grown.resize(grown.len() + 2 * (GROUP_PAGES * PS) as usize, 0);
    let (r, after) = open_len(grown, Vec::new());
    assert!(r.is_ok());
    assert_eq!(after, GROUP_PAGES * PS);
    assert!(len > after);
}

#[test]
fn group_headers_are_checked_after_their_checksum() {
    let bytes = closed_store(1);
    let h = layout::group_header(0);
    let at = (h.0 * PS) as usize;
    let cases: [(usize, u32); 4] = [
        (8, 5),                                     // free count not the zero counts
        (layout::rc_offset(PageNo(0)), 0),          // page 0 not reserved
        (layout::rc_offset(PageNo(7)), RC_PENDING), // a pending count on disk
        (layout::rc_offset(PageNo(9)), RC_RESERVED),
    ];
    for (off, v) in cases {
        let mut b = bytes.clone();
        layout::put32(&mut b[at..at + PAGE_SIZE], off, v);
        layout::seal(h, &mut b[at..at + PAGE_SIZE]);
        let mut s = open_len(b, Vec::new()).0.expect("open");
        let e = s.alloc().expect_err("corrupt header");
        assert!(matches!(e, Error::Corrupt { page: 1, .. }), "{off}: {e}");
    }
}

#[test]
fn a_journal_record_that_fails_its_checks_is_not_replayed() {
    let bytes = closed_store(1);
    let mut sb_img = Box::new([0u8; PAGE_SIZE]);
    sb_img.copy_from_slice(&bytes[..PAGE_SIZE]);
    let seq = layout::get64(&sb_img[..], 24);
    // The CRC holds, but the superblock image is of another commit.
    let mut pages = crate::ids::PageMap::default();
    pages.insert(PageNo(0), sb_img.clone());
    let e = open_len(bytes.clone(), journal_of(seq + 5, &pages))
        .0
        .err()
        .expect("refused");
    assert!(e.to_string().contains("another commit"), "{e}");
    // An image for a page far past the store's end (its offset would wrap in release).
    let mut far = Box::new([0u8; PAGE_SIZE]);
    layout::init_meta(&mut far[..], Kind::Blob);
    layout::seal(PageNo(1 << 60), &mut far[..]);
    pages.insert(PageNo(1 << 60), far);
    let e = open_len(bytes.clone(), journal_of(seq, &pages))
        .0
        .err()
        .expect("refused");
    assert!(e.to_string().contains("past the end"), "{e}");
    // The same record without the stray page replays.
    pages.remove(&PageNo(1 << 60));
    assert!(open_len(bytes, journal_of(seq, &pages)).0.is_ok());
}

fn journal_of(seq: u64, pages: &crate::ids::PageMap<Box<PageBuf>>) -> Vec<u8> {
    let dev = CrashBackend::new(Vec::new());
    let img = dev.image();
    Journal::new(Box::new(dev))
        .write(seq, pages)
        .expect("write");
    img.durable()
}

#[test]
fn a_failed_home_write_keeps_the_committed_state_in_memory() {
    use crate::page::{FaultBackend, Faults};
    let faults = Faults::new();
    let dev = FaultBackend::new(Box::new(MemBackend::new()), faults.clone());
    let mut s = Store::create(Box::new(dev), Box::new(MemBackend::new())).expect("create");
    let p = s.alloc_meta(Kind::Blob).expect("meta");
    s.commit().expect("commit");
    s.meta_mut(p, Kind::Blob).expect("mut")[100] = 7;
    // The page device sees the commit's sync (1), then the home writes (2, ...).
    faults.fail_io(2);
    assert_eq!(s.commit().map_err(|e| e.errno()), Err(libc::EIO));
    assert!(faults.fired() && s.failed());
    assert_eq!(
        s.with_meta(p, Kind::Blob, |b| b[100]).expect("read"),
        7,
        "the journaled content, not the stale home page"
    );
    assert!(matches!(s.alloc(), Err(Error::Failed)));
}

#[test]
fn rollback_restores_the_counters() {
    let mut s = mem_store();
    let before = s.counters().clone();
    s.begin_op();
    s.alloc_meta(Kind::Blob).expect("meta");
    assert_eq!(s.counters().allocs, before.allocs + 1);
    s.rollback_op();
    assert_eq!(s.counters().allocs, before.allocs);
}
