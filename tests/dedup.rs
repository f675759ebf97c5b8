//! Dedup at the namespace level: identical pages merge, zero pages become holes, a page
//! that changed after it was hashed is skipped, contents never change, counts stay right.

use cowfs::check::check;
use cowfs::ids::Ino;
use cowfs::ns::{Ctx, Fs};
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
        let s = fs.dedup_step(run, ino, from).expect("dedup");
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
    fs.dedup_finish();
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
