//! Crash consistency: run a workload on crash backends that record every durable image,
//! then "crash" after every single sync (of the page file or of the journal) and check
//! that the store opens, that every reference count and link count is right, and that the
//! namespace is exactly what it was at the commit the store came back at.

use cowfs::check::check;
use cowfs::ids::Ino;
use cowfs::ns::{Ctx, Fs, SetAttr};
use cowfs::page::{CrashBackend, SyncLog};
use cowfs::store::Store;
use std::collections::BTreeMap;

type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

fn names(fs: &mut Fs) -> Vec<(Vec<u8>, Ino)> {
    let mut out = Vec::new();
    fs.readdir(Ino::ROOT, 0, &mut |ino, _, _, name| {
        if name != b"." && name != b".." {
            out.push((name.to_vec(), ino));
        }
        false
    })
    .expect("readdir");
    out
}

fn tree(fs: &mut Fs) -> Tree {
    let mut t = Tree::new();
    for (name, ino) in names(fs) {
        let size = fs.getattr(ino).expect("getattr").size;
        let data = fs.read(ino, 0, size as u32).expect("read");
        t.insert(name, data);
    }
    let snaps: Vec<Vec<u8>> = fs.snapshot_names().into_iter().map(|(_, n)| n).collect();
    t.insert(b"#snapshots".to_vec(), snaps.join(&b',')); // not a file: the snapshot list
    t
}

fn lookup(fs: &mut Fs, name: &str) -> Ino {
    fs.lookup(Ino::ROOT, name.as_bytes()).expect("lookup").0
}

fn create(fs: &mut Fs, name: &str) -> Ino {
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

/// The workload; calls `commit` after each fsync so the test can record the namespace.
fn workload(fs: &mut Fs, commit: &mut dyn FnMut(&mut Fs)) {
    let a = create(fs, "a");
    fs.write(a, 0, &vec![1u8; 300_000]).expect("write");
    commit(fs);
    let b = create(fs, "b");
    fs.copy_range(a, 0, b, 0, 300_000).expect("copy");
    fs.write(b, 4096, &vec![2u8; 10_000]).expect("write");
    commit(fs);
    // Unshare page 5 from b's side, then overwrite a's (now exclusive) page 5: the last
    // commit still has it shared, so a's write must not land in that page.
    fs.write(b, 5 * 4096, &[5u8; 4096]).expect("write");
    fs.write(a, 5 * 4096, &[4u8; 4096]).expect("write");
    fs.rename(Ino::ROOT, b"b", Ino::ROOT, b"c", 0)
        .expect("rename");
    let size = SetAttr {
        size: Some(5000),
        ..Default::default()
    };
    fs.setattr(Ctx::ROOT, a, &size).expect("truncate");
    commit(fs);
    let c = lookup(fs, "c");
    let fh = fs.open(c, libc::O_RDONLY).expect("open");
    fs.unlink(Ino::ROOT, b"c").expect("unlink");
    let d = create(fs, "d");
    fs.write(d, 1 << 20, b"tail").expect("write");
    commit(fs);
    fs.release(fh).expect("release");
    fs.link(d, Ino::ROOT, b"e").expect("link");
    for i in 0..200 {
        create(fs, &format!("many-{i}"));
    }
    commit(fs);
    for i in 0..200 {
        fs.unlink(Ino::ROOT, format!("many-{i}").as_bytes())
            .expect("unlink");
    }
    fs.write(a, 0, &vec![3u8; 9000]).expect("write");
    commit(fs);
    // Snapshot, change, roll back, delete: every cut must come back at one of these
    // states with the snapshot list, the files and every count consistent.
    fs.snapshot_create(b"s1", false).expect("snapshot");
    commit(fs);
    fs.write(a, 0, &vec![7u8; 20_000]).expect("write");
    fs.unlink(Ino::ROOT, b"e").expect("unlink");
    create(fs, "after-snapshot");
    commit(fs);
    fs.snapshot_rollback(b"s1").expect("rollback");
    commit(fs);
    fs.snapshot_delete(b"s1").expect("delete");
    commit(fs);
    while fs.reclaim_step(40).expect("reclaim") {
        commit(fs);
    }
    commit(fs);
}

fn same_names_and_sizes(got: &Tree, want: &Tree, k: usize, seq: u64) {
    let g: Vec<_> = got.iter().map(|(n, d)| (n, d.len())).collect();
    let w: Vec<_> = want.iter().map(|(n, d)| (n, d.len())).collect();
    assert_eq!(g, w, "cut {k}: names and sizes differ from commit {seq}");
}

#[test]
fn crash_after_every_sync_point() {
    let log = SyncLog::default();
    let dev = CrashBackend::logged(Vec::new(), log.clone(), 0);
    let jnl = CrashBackend::logged(Vec::new(), log.clone(), 1);
    let store = Store::create(Box::new(dev), Box::new(jnl)).expect("create");
    let mut fs = Fs::new(store, None).expect("fs");
    let mut at_seq: BTreeMap<u64, Tree> = BTreeMap::new();
    fs.sync().expect("sync");
    at_seq.insert(fs.store().superblock().seq, tree(&mut fs));
    workload(&mut fs, &mut |fs| {
        fs.sync().expect("sync");
        let seq = fs.store().superblock().seq;
        let t = tree(fs);
        at_seq.insert(seq, t);
    });
    let points = log.lock().map(|l| l.len()).unwrap_or(0);
    assert!(points >= 14, "the workload made {points} sync points");
    let mut seen = std::collections::BTreeSet::new();
    for k in 1..=points {
        let dev = CrashBackend::new(CrashBackend::image_at(&log, k, 0));
        let jnl = CrashBackend::new(CrashBackend::image_at(&log, k, 1));
        let store = match Store::open(Box::new(dev), Box::new(jnl)) {
            Ok(s) => s,
            // Before the first commit finished there is no store yet: that is allowed.
            Err(e) if k <= 3 => {
                println!("cut {k}: no store yet ({e})");
                continue;
            }
            Err(e) => panic!("cut {k}: store does not open: {e}"),
        };
        let seq = store.superblock().seq;
        let mut fs = Fs::new(store, None).expect("fs");
        let rep = check(fs.store()).expect("check");
        assert!(
            rep.problems.is_empty(),
            "cut {k} (seq {seq}): {:?}",
            rep.problems
        );
        if let Some(want) = at_seq.get(&seq) {
            let got = tree(&mut fs);
            same_names_and_sizes(&got, want, k, seq);
            // Pages overwritten in place after the commit may already hold the newer bytes
            // (like ext4's data=ordered): every page must match this commit or a later one.
            for (name, data) in &got {
                for (i, page) in data.chunks(4096).enumerate() {
                    // A later truncate may have zeroed the page's tail in place.
                    let ok = at_seq.range(seq..).any(|(_, t)| {
                        t.get(name).is_some_and(|d| {
                            let later = d.chunks(4096).nth(i).unwrap_or(&[]);
                            let n = later.len().min(page.len());
                            page[..n] == later[..n] && page[n..].iter().all(|b| *b == 0)
                        })
                    });
                    assert!(
                        ok,
                        "cut {k} (seq {seq}): {name:?} page {i} matches no later state"
                    );
                }
            }
            seen.insert(seq);
        }
    }
    assert!(seen.len() >= 6, "cuts landed on commits {seen:?}");
}

/// A clone shares its source's map root; unlinking the clone and then overwriting the
/// source in the same transaction must not change, in place, the data page the committed
/// clone still reads (a crash before the next commit brings the clone back). Cut after
/// every sync of that transaction: the clone reads its old bytes, or is gone.
#[test]
fn unlinked_clone_keeps_its_bytes_until_the_unlink_commits() {
    for len in [4usize, 4096, 3 << 20] {
        let log = SyncLog::default();
        let dev = CrashBackend::logged(Vec::new(), log.clone(), 0);
        let jnl = CrashBackend::logged(Vec::new(), log.clone(), 1);
        let store = Store::create(Box::new(dev), Box::new(jnl)).expect("create");
        let mut fs = Fs::new(store, None).expect("fs");
        let a = create(&mut fs, "a");
        let old = vec![b'o'; len];
        fs.write(a, 0, &old).expect("write");
        fs.begin_op();
        let r = fs.clone_path(
            &cowfs::ns::perm::Cred::root(),
            b"a",
            a,
            Ino::ROOT,
            b"b",
            cowfs::ns::CloneOpts::default(),
        );
        fs.end_op(r.is_ok());
        r.expect("clone");
        fs.sync().expect("sync");
        let from = log.lock().map(|l| l.len()).unwrap_or(0);
        fs.unlink(Ino::ROOT, b"b").expect("unlink");
        fs.write(a, 0, &vec![b'N'; len]).expect("overwrite");
        fs.sync().expect("sync");
        let to = log.lock().map(|l| l.len()).unwrap_or(0);
        assert!(to > from, "the second commit synced");
        for k in from..=to {
            let dev = CrashBackend::new(CrashBackend::image_at(&log, k, 0));
            let jnl = CrashBackend::new(CrashBackend::image_at(&log, k, 1));
            let store = Store::open(Box::new(dev), Box::new(jnl)).expect("open");
            let mut fs = Fs::new(store, None).expect("fs");
            let rep = check(fs.store()).expect("check");
            assert!(
                rep.problems.is_empty(),
                "len {len} cut {k}: {:?}",
                rep.problems
            );
            if let Ok((b, _)) = fs.lookup(Ino::ROOT, b"b") {
                let got = fs.read(b, 0, len as u32).expect("read b");
                assert!(
                    got == old,
                    "len {len} cut {k}: the clone came back with new bytes"
                );
            }
        }
    }
}
