//! No recursion whose depth a user controls: every walk over a directory tree (du, stats,
//! clone -r, fsck and repair, snapshot delete and reclaim, rename's ancestor check, freeing
//! the tree) works on a 100,000-level directory chain. Each test runs on a thread with a
//! small stack, so a walk that still recurses once per level overflows it and fails the test
//! instead of passing on the main thread's large stack.

use cowfs::check::{check, fsck};
use cowfs::ids::Ino;
use cowfs::ns::perm::Cred;
use cowfs::ns::{CloneOpts, Ctx, Fs, dir, itable};
use cowfs::object::MapRoot;
use cowfs::page::MemBackend;
use cowfs::store::Store;
use std::sync::Mutex;

/// Levels of the chain below its top directory.
const LEVELS: usize = 100_000;
/// The stack of the thread running each test: far below one frame per level.
const STACK: usize = 256 << 10;
/// Pages of the file at the bottom of the chain.
const FILE_PAGES: u64 = 3;
const PS: u64 = 4096;

/// One deep tree in memory at a time (each takes about 1 GiB): the tests take turns.
static TURN: Mutex<()> = Mutex::new(());

/// Runs `f` on a thread with a `STACK`-byte stack; a panic there fails the test.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    let _turn = TURN.lock().unwrap_or_else(|e| e.into_inner());
    let t = std::thread::Builder::new()
        .stack_size(STACK)
        .spawn(f)
        .expect("spawn");
    if let Err(e) = t.join() {
        std::panic::resume_unwind(e);
    }
}

fn fs() -> Fs {
    let s = Store::create(Box::new(MemBackend::new()), Box::new(MemBackend::new())).expect("store");
    Fs::new(s, None).expect("fs")
}

fn mkdir(fs: &mut Fs, parent: Ino, name: &[u8]) -> Ino {
    fs.mknod(Ctx::ROOT, parent, name, libc::S_IFDIR | 0o755, 0)
        .expect("mkdir")
        .0
}

/// The deep tree: `/top/d/d/.../d` with `LEVELS` directories `d` below `top`, and a file
/// `f` of `FILE_PAGES` distinct pages in the bottom one.
struct Deep {
    top: Ino,
    bottom: Ino,
    file: Ino,
}

fn deep(fs: &mut Fs) -> Deep {
    let top = mkdir(fs, Ino::ROOT, b"top");
    let mut cur = top;
    for n in 0..LEVELS {
        cur = mkdir(fs, cur, b"d");
        if n % 10_000 == 0 {
            fs.sync().expect("sync");
        }
    }
    let (file, _) = fs
        .mknod(Ctx::ROOT, cur, b"f", libc::S_IFREG | 0o644, 0)
        .expect("create");
    let data: Vec<u8> = (0..FILE_PAGES * PS).map(|i| (i / PS) as u8 + 1).collect();
    fs.write(file, 0, &data).expect("write");
    fs.sync().expect("sync");
    Deep {
        top,
        bottom: cur,
        file,
    }
}

/// Follows `d` from `from` down `LEVELS` levels (a loop, as a test must not recurse either).
fn descend(fs: &mut Fs, from: Ino) -> Ino {
    let mut cur = from;
    for _ in 0..LEVELS {
        cur = fs.lookup(cur, b"d").expect("lookup d").0;
    }
    cur
}

fn used(fs: &mut Fs) -> u64 {
    fs.sync().expect("sync");
    let sb = fs.store().superblock().clone();
    fs.store().total_pages() - sb.free_pages
}

fn clean(fs: &mut Fs) {
    fs.sync().expect("sync");
    let rep = check(fs.store()).expect("check");
    assert!(rep.problems.is_empty(), "fsck: {:?}", rep.problems);
}

#[test]
fn du_and_stats_of_a_deep_tree() {
    on_small_stack(|| {
        let mut fs = fs();
        let d = deep(&mut fs);
        let want = FILE_PAGES * PS;
        for ino in [d.top, Ino::ROOT, d.bottom] {
            let sp = fs.space(ino).expect("space");
            assert_eq!(sp.files, 1, "{ino:?}");
            assert_eq!(sp.logical, want);
            assert_eq!(sp.allocated, want);
            assert_eq!(sp.exclusive, want);
            assert_eq!(sp.shared, 0);
        }
        let st = fs.store_stats().expect("stats");
        assert_eq!(st.logical_bytes, want);
        assert_eq!(st.physical_bytes, want);
        assert_eq!(st.saved_bytes, 0);
    });
}

#[test]
fn clone_of_a_deep_tree() {
    on_small_stack(|| {
        let mut fs = fs();
        let d = deep(&mut fs);
        fs.begin_op();
        let r = fs.clone_path(
            &Cred::root(),
            b"top",
            d.top,
            Ino::ROOT,
            b"copy",
            CloneOpts {
                recursive: true,
                ..Default::default()
            },
        );
        fs.end_op(r.is_ok());
        r.expect("clone -r");
        let copy = fs.lookup(Ino::ROOT, b"copy").expect("copy").0;
        let bottom = descend(&mut fs, copy);
        assert_ne!(bottom, d.bottom);
        let f = fs.lookup(bottom, b"f").expect("file in the copy").0;
        assert_ne!(f, d.file);
        assert_eq!(
            fs.read(f, 0, (FILE_PAGES * PS) as u32).expect("read"),
            fs.read(d.file, 0, (FILE_PAGES * PS) as u32).expect("read")
        );
        let sp = fs.space(copy).expect("space");
        assert_eq!((sp.files, sp.exclusive), (1, 0));
        assert_eq!(sp.shared, FILE_PAGES * PS);
        clean(&mut fs);
    });
}

#[test]
fn fsck_checks_and_repairs_a_store_holding_a_deep_tree() {
    on_small_stack(|| {
        let mut fs = fs();
        let d = deep(&mut fs);
        clean(&mut fs);
        // Damage: the root loses its entry for the top (the whole tree is lost), and the
        // bottom directory's link count is wrong.
        let s = fs.store();
        let mut root = itable::get(s, Ino::ROOT).expect("root");
        dir::remove(s, &mut root, b"top").expect("remove");
        root.nlink -= 1;
        itable::put(s, Ino::ROOT, &root).expect("put");
        let mut i = itable::get(s, d.bottom).expect("bottom");
        i.nlink = 7;
        itable::put(s, d.bottom, &i).expect("put");
        s.commit().expect("commit");
        // Only the top is lost: everything below is reached through it.
        let mut rep = check(s).expect("check");
        let mut want = vec![
            format!("inode {} is not linked anywhere", d.top.0),
            format!("inode {}: nlink 7 but 2 links", d.bottom.0),
        ];
        rep.problems.sort();
        want.sort();
        assert_eq!(rep.problems, want);
        let rep = fsck(s, true, &mut |_, _, _| {}).expect("repair");
        assert!(rep.problems.is_empty(), "{:?}", rep.problems);
        assert_eq!(rep.exit_code(), 1, "{:?}", rep.repaired);
        // The top is in /lost+found as #INO, alone, with the tree below it.
        let lf = fs.lookup(Ino::ROOT, b"lost+found").expect("lost+found");
        assert_eq!(lf.1.entries, 1);
        let name = format!("#{}", d.top.0);
        let top = fs.lookup(lf.0, name.as_bytes()).expect("#top").0;
        assert_eq!(top, d.top);
        assert_eq!(fs.getattr(top).expect("top").parent, lf.0.0);
        assert_eq!(descend(&mut fs, top), d.bottom);
        assert_eq!(fs.getattr(d.bottom).expect("bottom").nlink, 2);
        assert_eq!(fs.lookup(d.bottom, b"f").expect("f").0, d.file);
    });
}

#[test]
fn snapshot_of_a_deep_tree_is_created_deleted_and_reclaimed() {
    on_small_stack(|| {
        let mut fs = fs();
        let d = deep(&mut fs);
        let before = used(&mut fs);
        fs.snapshot_create(b"s", false).expect("snapshot");
        // Changes at the bottom and on the way down make the two tables differ there.
        fs.write(d.file, 0, &[0xee; 4096]).expect("write");
        mkdir(&mut fs, d.bottom, b"new");
        fs.rmdir(d.bottom, b"new").expect("rmdir");
        clean(&mut fs);
        assert!(fs.snapshot_list().expect("list")[0].exclusive_bytes > 0);
        fs.snapshot_delete(b"s").expect("delete");
        let mut steps = 0;
        while fs.reclaim_step(4096).expect("reclaim") {
            steps += 1;
            assert!(steps < 100_000, "reclaim does not end");
        }
        assert_eq!(fs.reclaim_pending(), 0);
        clean(&mut fs);
        assert_eq!(used(&mut fs), before);
    });
}

#[test]
fn rename_checks_ancestry_through_a_deep_tree() {
    on_small_stack(|| {
        let mut fs = fs();
        let d = deep(&mut fs);
        // The top into the bottom: a directory below itself.
        let r = fs.rename(Ino::ROOT, b"top", d.bottom, b"loop", 0);
        assert_eq!(r.map_err(|e| e.errno()), Err(libc::EINVAL));
        // A directory from elsewhere into the bottom, 100,001 levels down: legal.
        let other = mkdir(&mut fs, Ino::ROOT, b"other");
        mkdir(&mut fs, other, b"inner");
        fs.rename(Ino::ROOT, b"other", d.bottom, b"other", 0)
            .expect("rename into the bottom");
        assert_eq!(fs.lookup(d.bottom, b"other").expect("moved").0, other);
        assert_eq!(fs.getattr(other).expect("attr").parent, d.bottom.0);
        // And back out, then across: from the bottom up to the root's level again.
        let inner = fs.lookup(other, b"inner").expect("inner").0;
        fs.rename(other, b"inner", Ino::ROOT, b"inner", 0)
            .expect("rename out of the bottom");
        assert_eq!(fs.getattr(inner).expect("attr").parent, Ino::ROOT.0);
        // Exchanging the bottom's directory with the top is refused as well.
        let r = fs.rename(d.bottom, b"other", Ino::ROOT, b"top", libc::RENAME_EXCHANGE);
        assert_eq!(r.map_err(|e| e.errno()), Err(libc::EINVAL));
        clean(&mut fs);
    });
}

/// Pages a map holds (its nodes and payloads).
fn map_pages(fs: &mut Fs, m: &MapRoot) -> u64 {
    let mut n = 0;
    m.walk(fs.store(), &mut |_, _| n += 1).expect("walk");
    n
}

#[test]
fn freeing_a_deep_tree_gives_every_page_back() {
    on_small_stack(|| {
        let mut fs = fs();
        let d = deep(&mut fs);
        assert!(check(fs.store()).expect("check").pages_used > 2 * LEVELS as u64);
        fs.unlink(d.bottom, b"f").expect("unlink");
        // The kernel's reference from the create goes too: only then is the file freed.
        fs.forget(d.file, 1).expect("forget");
        let mut cur = d.bottom;
        for n in 0..LEVELS {
            let up = fs.lookup(cur, b"..").expect("parent").0;
            fs.rmdir(up, b"d").expect("rmdir");
            cur = up;
            if n % 10_000 == 0 {
                fs.sync().expect("sync");
            }
        }
        assert_eq!(cur, d.top);
        fs.rmdir(Ino::ROOT, b"top").expect("rmdir top");
        clean(&mut fs);
        // Only the root and the orphan directory are left, and nothing holds a page but
        // them and the inode table (whose emptied nodes stay until it shrinks).
        let rep = check(fs.store()).expect("check");
        assert_eq!(rep.inodes, 2);
        let t = itable::table_root(fs.store());
        let table = map_pages(&mut fs, &t);
        let mut dirs = 0;
        for ino in [Ino::ROOT, Ino::ORPHANS] {
            let m = itable::get(fs.store(), ino).expect("dir").map;
            dirs += map_pages(&mut fs, &m);
        }
        assert!(table < 100, "{table} table pages");
        assert_eq!(rep.pages_used, table + dirs);
    });
}

#[test]
fn walks_end_on_a_damaged_store_with_directory_cycles() {
    on_small_stack(|| {
        let mut fs = fs();
        let a = mkdir(&mut fs, Ino::ROOT, b"a");
        let b = mkdir(&mut fs, a, b"b");
        mkdir(&mut fs, Ino::ROOT, b"x");
        let (f, _) = fs
            .mknod(Ctx::ROOT, b, b"f", libc::S_IFREG | 0o644, 0)
            .expect("create");
        fs.write(f, 0, &[1; 4096]).expect("write");
        // Damage: b lists its own parent a, and a's parent pointer names b.
        let s = fs.store();
        let mut bi = itable::get(s, b).expect("b");
        dir::insert(s, &mut bi, b"loop", a, (libc::S_IFDIR >> 12) as u8).expect("insert");
        itable::put(s, b, &bi).expect("put");
        let mut ai = itable::get(s, a).expect("a");
        ai.parent = b.0;
        itable::put(s, a, &ai).expect("put");
        // du counts every inode once and ends.
        let sp = fs.space(a).expect("space");
        assert_eq!((sp.files, sp.exclusive), (1, 4096));
        // A clone would never end: it stops with EIO.
        fs.begin_op();
        let r = fs.clone_path(
            &Cred::root(),
            b"a",
            a,
            Ino::ROOT,
            b"copy",
            CloneOpts {
                recursive: true,
                ..Default::default()
            },
        );
        fs.end_op(r.is_ok());
        assert_eq!(r.map(|_| ()).map_err(|e| e.errno()), Err(libc::EIO));
        assert!(fs.lookup(Ino::ROOT, b"copy").is_err());
        // The ancestor check goes round b, a, b, ...: it finds the cycle and says EIO.
        let r = fs.rename(Ino::ROOT, b"x", b, b"x", 0);
        assert_eq!(r.map_err(|e| e.errno()), Err(libc::EIO));
        // Cut off from the root, a and b are lost directories listing each other: no top
        // to put in /lost+found, so fsck picks the smallest, says so, and ends.
        let s = fs.store();
        let mut root = itable::get(s, Ino::ROOT).expect("root");
        dir::remove(s, &mut root, b"a").expect("remove");
        root.nlink -= 1;
        itable::put(s, Ino::ROOT, &root).expect("put");
        s.commit().expect("commit");
        let rep = check(s).expect("check");
        let lost = format!("inode {} is not linked anywhere", a.0);
        assert!(rep.problems.contains(&lost), "{:?}", rep.problems);
        assert!(
            !rep.problems
                .iter()
                .any(|p| p.contains(&format!("inode {} is not", b.0)))
        );
        let rep = fsck(s, true, &mut |_, _, _| {}).expect("repair");
        assert!(rep.repaired.contains(&lost), "{:?}", rep.repaired);
    });
}
