//! Snapshots at the namespace level: point-in-time content, read-only and writable views,
//! rollback, and space coming back exactly once a deleted snapshot has been freed.

use cowfs::Error;
use cowfs::check::check;
use cowfs::ids::Ino;
use cowfs::ns::{Ctx, Fs};
use cowfs::page::MemBackend;
use cowfs::store::Store;

fn fs() -> Fs {
    let s = Store::create(Box::new(MemBackend::new()), Box::new(MemBackend::new())).expect("store");
    Fs::new(s, None).expect("fs")
}

fn create(fs: &mut Fs, parent: Ino, name: &str) -> Ino {
    fs.mknod(Ctx::ROOT, parent, name.as_bytes(), libc::S_IFREG | 0o644, 0)
        .expect("create")
        .0
}

fn used(fs: &mut Fs) -> u64 {
    fs.sync().expect("sync");
    let sb = fs.store().superblock().clone();
    fs.store().total_pages() - sb.free_pages
}

fn read_all(fs: &mut Fs, ino: Ino) -> Vec<u8> {
    let size = fs.getattr(ino).expect("getattr").size;
    fs.read(ino, 0, size as u32).expect("read")
}

fn clean(fs: &mut Fs) {
    fs.sync().expect("sync");
    let rep = check(fs.store()).expect("check");
    assert!(rep.problems.is_empty(), "fsck: {:?}", rep.problems);
}

#[test]
fn delete_after_overwrite_gives_back_exactly_what_was_used() {
    let mut fs = fs();
    let mut files = Vec::new();
    for i in 0..40 {
        let f = create(&mut fs, Ino::ROOT, &format!("f{i}"));
        fs.write(f, 0, &vec![i as u8 + 1; 70_000]).expect("write");
        files.push(f);
    }
    let before = used(&mut fs);
    fs.snapshot_create(b"s", false).expect("snapshot");
    for (i, f) in files.iter().enumerate() {
        fs.write(*f, 0, &vec![i as u8 + 100; 70_000])
            .expect("overwrite");
    }
    let with_snapshot = used(&mut fs);
    assert!(
        with_snapshot >= before + 40 * 17,
        "overwriting under a snapshot copies: {before} -> {with_snapshot} pages"
    );
    let info = fs.snapshot_list().expect("list");
    assert_eq!(info.len(), 1);
    assert!(info[0].exclusive_bytes >= 40 * 17 * 4096, "{info:?}");
    clean(&mut fs);
    fs.snapshot_delete(b"s").expect("delete");
    assert!(fs.snapshot_names().is_empty());
    let mut steps = 0;
    while fs.reclaim_step(100).expect("reclaim") {
        steps += 1;
        fs.sync().expect("sync");
    }
    assert!(steps > 5, "freeing goes in bounded steps ({steps})");
    assert_eq!(
        used(&mut fs),
        before,
        "store use returns to the figure before the snapshot"
    );
    clean(&mut fs);
}

#[test]
fn snapshot_keeps_its_point_in_time_and_refuses_writes() {
    let mut fs = fs();
    let d = fs
        .mknod(Ctx::ROOT, Ino::ROOT, b"d", libc::S_IFDIR | 0o755, 0)
        .expect("mkdir")
        .0;
    let f = create(&mut fs, d, "f");
    fs.write(f, 0, b"before").expect("write");
    let id = fs.snapshot_create(b"s", false).expect("snapshot");
    fs.write(f, 0, b"AFTER!").expect("write");
    fs.unlink(d, b"f").expect("unlink");
    create(&mut fs, Ino::ROOT, "new");
    fs.enter(id).expect("enter");
    let (sd, _) = fs.lookup(Ino::ROOT, b"d").expect("d in snapshot");
    let (sf, _) = fs.lookup(sd, b"f").expect("f in snapshot");
    assert_eq!(read_all(&mut fs, sf), b"before");
    assert!(matches!(fs.lookup(Ino::ROOT, b"new"), Err(Error::NotFound)));
    assert!(matches!(fs.write(sf, 0, b"x"), Err(Error::ReadOnly)));
    assert!(matches!(fs.unlink(sd, b"f"), Err(Error::ReadOnly)));
    assert!(matches!(fs.open(sf, libc::O_WRONLY), Err(Error::ReadOnly)));
    assert_eq!(read_all(&mut fs, sf), b"before");
    fs.leave();
    clean(&mut fs);
    assert!(matches!(
        fs.snapshot_create(b"s", false),
        Err(Error::SnapshotExists(_))
    ));
    assert!(matches!(
        fs.snapshot_delete(b"nope"),
        Err(Error::NoSnapshot(_))
    ));
    assert!(fs.snapshot_create(b"a/b", false).is_err());
}

#[test]
fn writable_snapshot_and_live_are_independent_and_rollback_restores() {
    let mut fs = fs();
    let f = create(&mut fs, Ino::ROOT, "f");
    fs.write(f, 0, &vec![1u8; 50_000]).expect("write");
    let w = fs.snapshot_create(b"w", true).expect("snapshot");
    fs.enter(w).expect("enter");
    fs.write(f, 4096, &vec![2u8; 4096])
        .expect("write in branch");
    let g = create(&mut fs, Ino::ROOT, "g");
    fs.write(g, 0, b"branch only").expect("write");
    fs.leave();
    fs.write(f, 8192, &vec![3u8; 4096]).expect("write in live");
    let live = read_all(&mut fs, f);
    assert_eq!(&live[4096..8192], &[1u8; 4096][..]);
    assert_eq!(&live[8192..12288], &[3u8; 4096][..]);
    assert!(matches!(fs.lookup(Ino::ROOT, b"g"), Err(Error::NotFound)));
    fs.enter(w).expect("enter");
    let branch = read_all(&mut fs, f);
    assert_eq!(&branch[4096..8192], &[2u8; 4096][..]);
    assert_eq!(&branch[8192..12288], &[1u8; 4096][..]);
    fs.leave();
    clean(&mut fs);
    fs.snapshot_rollback(b"w").expect("rollback");
    assert_eq!(read_all(&mut fs, f), branch, "rollback restores the branch");
    let (g2, _) = fs.lookup(Ino::ROOT, b"g").expect("g after rollback");
    assert_eq!(read_all(&mut fs, g2), b"branch only");
    while fs.reclaim_step(64).expect("reclaim") {}
    clean(&mut fs);
}
