//! `cowfs fsck` on damaged stores: wrong counts, a torn directory block, a torn map node,
//! random bytes over many metadata pages. fsck must report, repair what it can, exit as
//! e2fsck does, and never panic.

use cowfs::ids::Ino;
use cowfs::ns::{Ctx, Fs};
use cowfs::store::{Kind, open_dir};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::process::{Command, Output};

const BIN: &str = env!("CARGO_BIN_EXE_cowfs");

fn fsck(store: &Path, repair: bool) -> Output {
    let mut c = Command::new(BIN);
    c.arg("fsck").arg(store);
    if repair {
        c.arg("--repair");
    }
    c.output().expect("run fsck")
}

fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// A store with a directory of 300 files (several directory blocks), a 3 MiB file (map
/// nodes), hard links and a symlink.
fn build(store: &Path) {
    let d = open_dir(store, true).expect("mkfs");
    let (s, _, _lock) = d.into_parts();
    let mut fs = Fs::new(s, None).expect("fs");
    let (dir, _) = fs
        .mknod(Ctx::ROOT, Ino::ROOT, b"dir", libc::S_IFDIR | 0o755, 0)
        .expect("mkdir");
    for i in 0..300 {
        let name = format!("file-{i:03}-{}", "n".repeat(40));
        let (f, _) = fs
            .mknod(Ctx::ROOT, dir, name.as_bytes(), libc::S_IFREG | 0o644, 0)
            .expect("create");
        fs.write(f, 0, name.as_bytes()).expect("write");
    }
    let (big, _) = fs
        .mknod(Ctx::ROOT, Ino::ROOT, b"big", libc::S_IFREG | 0o644, 0)
        .expect("create");
    fs.write(big, 0, &vec![7u8; 3 << 20]).expect("write");
    fs.link(big, Ino::ROOT, b"big-link").expect("link");
    fs.symlink(Ctx::ROOT, Ino::ROOT, b"sym", b"big")
        .expect("symlink");
    fs.close().expect("close");
}

/// Page numbers of metadata pages of `kind` in the page file.
fn pages_of(store: &Path, kind: Kind) -> Vec<u64> {
    let bytes = std::fs::read(store.join("pages")).expect("read pages");
    bytes
        .chunks(4096)
        .enumerate()
        .filter(|(_, p)| u32::from_le_bytes([p[0], p[1], p[2], p[3]]) == kind as u32)
        .map(|(i, _)| i as u64)
        .collect()
}

fn scribble(store: &Path, page: u64, seed: u64) {
    let f = std::fs::OpenOptions::new()
        .write(true)
        .open(store.join("pages"))
        .expect("open");
    let junk: Vec<u8> = (0..512u64)
        .map(|i| (i.wrapping_mul(seed | 1).wrapping_add(seed) >> 3) as u8)
        .collect();
    f.write_all_at(&junk, page * 4096 + 100).expect("write");
}

#[test]
fn clean_store_is_clean() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = tmp.path().join("s");
    build(&store);
    let o = fsck(&store, false);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
    assert!(text(&o).contains("clean"));
}

#[test]
fn wrong_counts_are_found_and_repaired() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = tmp.path().join("s");
    build(&store);
    // Bump one reference count by hand: a header page is metadata, so reseal it.
    let d = open_dir(&store, false).expect("open");
    let (mut s, _, lock) = d.into_parts();
    let victim = cowfs::ids::PageNo(pages_of_kind_in(&mut s, Kind::MapNode));
    s.incref(victim).expect("incref");
    s.close().expect("close");
    drop((s, lock));
    let o = fsck(&store, false);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("page {}: count 2 but 1 references", victim.0)),
        "{}",
        text(&o)
    );
    let o = fsck(&store, true);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = fsck(&store, false);
    assert_eq!(o.status.code(), Some(0), "{}", text(&o));
}

fn pages_of_kind_in(s: &mut cowfs::store::Store, kind: Kind) -> u64 {
    (2..s.total_pages())
        .find(|p| s.with_meta(cowfs::ids::PageNo(*p), kind, |_| ()).is_ok())
        .expect("a page of that kind")
}

#[test]
fn torn_directory_block_goes_to_lost_and_found() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = tmp.path().join("s");
    build(&store);
    let blocks = pages_of(&store, Kind::DirBlock);
    assert!(blocks.len() >= 3, "the big directory has several blocks");
    scribble(&store, blocks[1], 7);
    let o = fsck(&store, false);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(
        text(&o).contains(&format!("corrupt page {}", blocks[1])),
        "{}",
        text(&o)
    );
    let o = fsck(&store, true);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    let o = fsck(&store, false);
    assert_eq!(o.status.code(), Some(0), "after repair: {}", text(&o));
    // The files of the lost block are in /lost+found; the others are still in dir.
    let d = open_dir(&store, false).expect("open");
    let (s, _, _lock) = d.into_parts();
    let mut fs = Fs::new(s, None).expect("fs");
    let (lf, lfi) = fs.lookup(Ino::ROOT, b"lost+found").expect("lost+found");
    let (_, di) = fs.lookup(Ino::ROOT, b"dir").expect("dir");
    assert_eq!(lfi.entries + di.entries, 300, "every file is somewhere");
    assert!(lfi.entries > 0);
    let mut first = None;
    fs.readdir(lf, 0, &mut |ino, _, _, name| {
        if name.starts_with(b"#") {
            first = Some(ino);
        }
        first.is_some()
    })
    .expect("readdir");
    let data = fs.read(first.expect("an entry"), 0, 100).expect("read");
    assert!(data.starts_with(b"file-"));
}

#[test]
fn torn_map_node_becomes_a_hole() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = tmp.path().join("s");
    build(&store);
    let d = open_dir(&store, false).expect("open");
    let (s, _, lock) = d.into_parts();
    let mut fs = Fs::new(s, None).expect("fs");
    let (_, big) = fs.lookup(Ino::ROOT, b"big").expect("big");
    assert_eq!(big.map.depth, 2);
    let leaf = cowfs::ids::PageNo(
        fs.store()
            .with_meta(big.map.node, Kind::MapNode, |b| {
                cowfs::object::node::entry(b, 1)
            })
            .expect("root"),
    );
    fs.close().expect("close");
    drop((fs, lock));
    scribble(&store, leaf.0, 9);
    let o = fsck(&store, true);
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert_eq!(fsck(&store, false).status.code(), Some(0));
    let d = open_dir(&store, false).expect("open");
    let (s, _, _lock) = d.into_parts();
    let mut fs = Fs::new(s, None).expect("fs");
    let (ino, i) = fs.lookup(Ino::ROOT, b"big").expect("big");
    assert_eq!(i.size, 3 << 20, "the size is kept");
    assert_eq!(fs.read(ino, 0, 10).expect("read"), vec![7u8; 10]);
    let hole = fs.read(ino, 510 * 4096, 10).expect("read");
    assert_eq!(hole, vec![0u8; 10], "the lost leaf's pages read as a hole");
}

#[test]
fn random_bytes_over_metadata_never_panic() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = tmp.path().join("s");
    build(&store);
    let mut victims = pages_of(&store, Kind::DirBlock);
    // Not the inode table's root (page 2 of a new store): that one is checked below.
    victims.extend(
        pages_of(&store, Kind::MapNode)
            .into_iter()
            .filter(|p| *p != 2)
            .take(3),
    );
    victims.extend(pages_of(&store, Kind::Inodes).into_iter().skip(1).take(2));
    for (k, p) in victims.iter().enumerate() {
        scribble(&store, *p, k as u64 + 11);
    }
    let o = fsck(&store, false);
    assert_eq!(o.status.code(), Some(4), "{}", text(&o));
    assert!(!text(&o).contains("panicked"));
    let o = fsck(&store, true);
    assert!(matches!(o.status.code(), Some(1) | Some(4)), "{}", text(&o));
    assert!(!text(&o).contains("panicked"));
    let o = fsck(&store, false);
    assert_eq!(
        o.status.code(),
        Some(0),
        "repair leaves a consistent store: {}",
        text(&o)
    );
}

#[test]
fn a_torn_inode_table_root_is_reported_not_repaired() {
    let tmp = tempfile::tempdir().expect("tmp");
    let store = tmp.path().join("s");
    build(&store);
    assert!(
        pages_of(&store, Kind::MapNode).contains(&2),
        "page 2 holds the inode table's root"
    );
    scribble(&store, 2, 5);
    for repair in [false, true] {
        let o = fsck(&store, repair);
        assert_eq!(o.status.code(), Some(4), "{}", text(&o));
        assert!(text(&o).contains("corrupt page 2"), "{}", text(&o));
    }
    // Mounting it fails with a clear error instead of serving garbage.
    let mnt = tmp.path().join("mnt");
    std::fs::create_dir(&mnt).expect("mkdir");
    let o = Command::new(BIN)
        .arg("mount")
        .arg(&store)
        .arg(&mnt)
        .output()
        .expect("mount");
    assert_eq!(o.status.code(), Some(1), "{}", text(&o));
    assert!(text(&o).contains("corrupt page 2"), "{}", text(&o));
}
