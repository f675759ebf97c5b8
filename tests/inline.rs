//! Small files kept inline (format version 2): a file of up to 416 bytes lives in its
//! 576-byte inode record, 7 to a page, with no data page and no map node. Space, the
//! inline/page boundary, clones and snapshots (which copy the record, bytes and all), and
//! format-1 stores, which never inline and keep working as before.

mod common;

use common::{Mount, cowfs, is_root, statvfs_used};
use cowfs::check::check;
use cowfs::ids::Ino;
use cowfs::ns::perm::Cred;
use cowfs::ns::{CloneOpts, Ctx, Fs, SetAttr};
use cowfs::page::MemBackend;
use cowfs::store::Store;
use std::os::unix::fs::MetadataExt;

/// Bytes a format-2 record holds inline.
const CAP: usize = 416;

fn fs_of_version(v: u32) -> Fs {
    let mut s =
        Store::create(Box::new(MemBackend::new()), Box::new(MemBackend::new())).expect("store");
    s.set_format_version(v).expect("version");
    Fs::new(s, None).expect("fs")
}

fn file(fs: &mut Fs, parent: Ino, name: &str) -> Ino {
    fs.mknod(Ctx::ROOT, parent, name.as_bytes(), libc::S_IFREG | 0o644, 0)
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

fn read_all(fs: &mut Fs, ino: Ino) -> Vec<u8> {
    let size = fs.getattr(ino).expect("getattr").size;
    fs.read(ino, 0, size as u32 + 10).expect("read")
}

fn used_pages(fs: &mut Fs) -> u64 {
    fs.sync().expect("sync");
    let st = fs.statfs().expect("statfs");
    st.blocks - st.bfree
}

fn clean(fs: &mut Fs) {
    fs.sync().expect("sync");
    let rep = check(fs.store()).expect("check");
    assert!(rep.problems.is_empty(), "fsck: {:?}", rep.problems);
}

fn root() -> Cred {
    Cred {
        uid: 0,
        gid: 0,
        groups: vec![],
    }
}

/// 1,400 files of 100 bytes: each takes a seventh of an inode page and nothing else
/// (plus its directory entry), where a format-1 store gives each a map node and a data
/// page. Their bytes, `du` and fsck agree.
#[test]
fn small_files_take_a_seventh_of_a_page() {
    const N: u64 = 1400;
    let mut per_file = [0f64; 2];
    for (k, v) in [(0, 1), (1, 2)] {
        let mut fs = fs_of_version(v);
        let (d, _) = fs
            .mknod(Ctx::ROOT, Ino::ROOT, b"d", libc::S_IFDIR | 0o755, 0)
            .expect("mkdir");
        let before = used_pages(&mut fs);
        let mut inos = Vec::new();
        for n in 0..N {
            let ino = file(&mut fs, d, &format!("file-{n:05}"));
            fs.write(ino, 0, &[n as u8 | 1; 100]).expect("write");
            inos.push(ino);
        }
        let after = used_pages(&mut fs);
        per_file[k] = (after - before) as f64 / N as f64;
        for (n, &ino) in inos.iter().enumerate() {
            assert_eq!(read_all(&mut fs, ino), vec![n as u8 | 1; 100]);
        }
        let sp = fs.space(d).expect("du");
        assert_eq!(sp.files, N);
        assert_eq!(sp.logical, N * 100);
        if v == 2 {
            assert_eq!(sp.allocated, N * 100, "inline bytes count once each");
            assert_eq!(sp.exclusive, N * 100);
            let i = fs.getattr(inos[0]).expect("stat");
            assert!(i.is_inline());
            assert_eq!(fs.data_pages(inos[0], &i).expect("pages"), 0);
        } else {
            assert_eq!(sp.allocated, N * 4096);
        }
        clean(&mut fs);
    }
    // Inode pages (1/7) and directory blocks (about 1/40 here).
    assert!(per_file[1] < 0.2, "format 2: {} pages a file", per_file[1]);
    assert!(
        per_file[1] > 1.0 / 7.0,
        "format 2: {} pages a file",
        per_file[1]
    );
    // Format 1: a map node, a data page and 1/15 of an inode page.
    assert!(per_file[0] > 2.0, "format 1: {} pages a file", per_file[0]);
}

/// A file crossing the inline capacity moves to pages and keeps every byte; shrinking
/// keeps the pages; a truncate to 0 frees everything; a file without pages comes inline.
#[test]
fn the_inline_boundary_keeps_every_byte() {
    let mut fs = fs_of_version(2);
    let a = file(&mut fs, Ino::ROOT, "a");
    let base = used_pages(&mut fs);
    let mut want: Vec<u8> = (0..CAP as u32).map(|x| (x % 251) as u8 + 1).collect();
    fs.write(a, 0, &want).expect("write");
    assert!(
        fs.getattr(a).expect("stat").is_inline(),
        "exactly the capacity"
    );
    assert_eq!(used_pages(&mut fs), base);
    // One byte more: a map node and a data page.
    fs.write(a, CAP as u64, b"x").expect("grow");
    want.push(b'x');
    let i = fs.getattr(a).expect("stat");
    assert!(!i.is_inline());
    assert_eq!(read_all(&mut fs, a), want);
    assert_eq!(used_pages(&mut fs), base + 2);
    truncate(&mut fs, a, 10);
    want.truncate(10);
    assert_eq!(read_all(&mut fs, a), want, "shrunk, still in its page");
    truncate(&mut fs, a, 0);
    assert_eq!(
        used_pages(&mut fs),
        base,
        "a truncate to 0 frees everything"
    );
    // A hole then data: inline, the hole reads as zeros.
    fs.write(a, 300, b"tail").expect("write");
    let i = fs.getattr(a).expect("stat");
    assert!(i.is_inline());
    assert_eq!(i.size, 304);
    let mut want = vec![0u8; 300];
    want.extend_from_slice(b"tail");
    assert_eq!(read_all(&mut fs, a), want);
    assert_eq!(fs.read(a, 298, 4).expect("read"), b"\0\0ta");
    assert_eq!(fs.read(a, 304, 4).expect("read"), b"");
    // lseek: all data, the hole at the end.
    assert_eq!(fs.seek(a, 5, libc::SEEK_DATA, true).expect("data"), 5);
    assert_eq!(fs.seek(a, 5, libc::SEEK_HOLE, true).expect("hole"), 304);
    // Punch and zero-range inside: still inline.
    let keep = libc::FALLOC_FL_KEEP_SIZE;
    fs.fallocate(a, 301, 2, libc::FALLOC_FL_PUNCH_HOLE | keep)
        .expect("punch");
    want[301..303].fill(0);
    fs.fallocate(a, 0, 350, libc::FALLOC_FL_ZERO_RANGE)
        .expect("zero range");
    want.fill(0);
    want.resize(350, 0);
    let i = fs.getattr(a).expect("stat");
    assert!(i.is_inline());
    assert_eq!(read_all(&mut fs, a), want);
    // Allocation wants pages.
    fs.fallocate(a, 0, 8192, 0).expect("allocate");
    want.resize(8192, 0);
    let i = fs.getattr(a).expect("stat");
    assert!(!i.is_inline());
    assert_eq!(fs.data_pages(a, &i).expect("pages"), 2);
    assert_eq!(read_all(&mut fs, a), want);
    // A truncate past the capacity of an inline file moves it to pages.
    let b = file(&mut fs, Ino::ROOT, "b");
    fs.write(b, 0, b"hello").expect("write");
    truncate(&mut fs, b, 5000);
    let mut wb = b"hello".to_vec();
    wb.resize(5000, 0);
    assert_eq!(read_all(&mut fs, b), wb);
    clean(&mut fs);
}

/// Clones and snapshots copy an inline file's record with its bytes: each side then
/// changes alone. copy_file_range from and into inline files copies the bytes.
#[test]
fn clones_and_snapshots_copy_inline_bytes() {
    let mut fs = fs_of_version(2);
    let a = file(&mut fs, Ino::ROOT, "a");
    fs.write(a, 0, b"original bytes").expect("write");
    let opts = CloneOpts::default();
    fs.clone_path(&root(), b"a", a, Ino::ROOT, b"c", opts)
        .expect("clone");
    let (c, ci) = fs.lookup(Ino::ROOT, b"c").expect("lookup");
    assert!(ci.is_inline());
    assert_eq!(read_all(&mut fs, c), b"original bytes");
    fs.write(c, 0, b"CHANGED").expect("write");
    assert_eq!(read_all(&mut fs, a), b"original bytes");
    assert_eq!(read_all(&mut fs, c), b"CHANGEDl bytes");
    // A snapshot keeps its point in time.
    let id = fs.snapshot_create(b"s", false).expect("snapshot");
    fs.write(a, 0, b"later").expect("write");
    fs.enter(id).expect("enter");
    assert_eq!(read_all(&mut fs, a), b"original bytes");
    fs.leave();
    assert_eq!(read_all(&mut fs, a), b"laternal bytes");
    // A range clone of an inline source into a big file copies the bytes; into an inline
    // destination past its capacity it moves the destination to pages.
    let big = file(&mut fs, Ino::ROOT, "big");
    fs.write(big, 0, &vec![7u8; 3 * 4096]).expect("write");
    fs.clone_range_at(&root(), b"a", a, big, 0, 3 * 4096, 0)
        .expect("range clone");
    let got = read_all(&mut fs, big);
    assert_eq!(&got[3 * 4096..], b"laternal bytes");
    assert_eq!(got[3 * 4096 - 1], 7);
    fs.clone_range_at(&root(), b"big", big, c, 0, 4096, 4096)
        .expect("range clone into inline");
    let got = read_all(&mut fs, c);
    assert_eq!(&got[..14], b"CHANGEDl bytes");
    assert_eq!(got.len(), 8192);
    assert!(got[4096..].iter().all(|&x| x == 7));
    // copy_file_range: inline to inline, page-aligned (nothing to share: bytes move).
    let d = file(&mut fs, Ino::ROOT, "d");
    assert_eq!(fs.copy_range(a, 0, d, 0, 1 << 20).expect("copy"), 14);
    assert!(fs.getattr(d).expect("stat").is_inline());
    assert_eq!(read_all(&mut fs, d), b"laternal bytes");
    // From pages into an inline file at a page boundary: shared pages, file un-inlined.
    assert_eq!(fs.copy_range(big, 0, d, 4096, 8192).expect("copy"), 8192);
    let got = read_all(&mut fs, d);
    assert_eq!(&got[..14], b"laternal bytes");
    assert!(got[14..4096].iter().all(|&x| x == 0));
    assert!(got[4096..].iter().all(|&x| x == 7));
    fs.snapshot_delete(b"s").expect("delete");
    while fs.reclaim_step(1000).expect("reclaim") {}
    clean(&mut fs);
}

/// A format-1 store never inlines, reopens as format 1 and stays clean; its records keep
/// the 256-byte layout.
#[test]
fn a_format_1_store_keeps_its_layout() {
    let dev = cowfs::page::CrashBackend::new(Vec::new());
    let jnl = cowfs::page::CrashBackend::new(Vec::new());
    let (di, ji) = (dev.image(), jnl.image());
    let mut s = Store::create(Box::new(dev), Box::new(jnl)).expect("create");
    s.set_format_version(1).expect("v1");
    let mut fs = Fs::new(s, None).expect("fs");
    let mut inos = Vec::new();
    for n in 0..40u8 {
        let ino = file(&mut fs, Ino::ROOT, &format!("f{n}"));
        fs.write(ino, 0, &[n; 50]).expect("write");
        inos.push(ino);
    }
    let i = fs.getattr(inos[0]).expect("stat");
    assert!(!i.is_inline());
    assert_eq!(fs.data_pages(inos[0], &i).expect("pages"), 1);
    fs.close().expect("close");
    drop(fs);
    let s = Store::open(
        Box::new(cowfs::page::CrashBackend::new(di.durable())),
        Box::new(cowfs::page::CrashBackend::new(ji.durable())),
    )
    .expect("reopen");
    assert_eq!(s.format_version(), 1);
    let mut fs = Fs::new(s, None).expect("fs");
    for (n, &ino) in inos.iter().enumerate() {
        assert_eq!(read_all(&mut fs, ino), vec![n as u8; 50]);
    }
    clean(&mut fs);
}

/// On a mount: `cowfs mkfs --format-version 1` makes a store that mounts, reads, writes and
/// passes fsck; a format-2 mount reports inline files' blocks as their size (so `cp` does
/// not take them for sparse) and copies them intact.
#[test]
fn format_1_and_2_stores_on_a_mount() {
    if !is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let tmp = tempfile::tempdir().expect("tempdir");
    let store = tmp.path().join("store");
    let out = cowfs(&[
        "mkfs",
        "--format-version",
        "1",
        store.to_str().expect("utf-8"),
    ]);
    assert!(out.status.success(), "{:?}", out);
    let m = Mount::at(tmp, store);
    std::fs::write(m.path("small"), b"v1 bytes").expect("write");
    let md = std::fs::metadata(m.path("small")).expect("stat");
    assert_eq!(md.len(), 8);
    m.umount();
    m.fsck_clean();
    m.mount();
    assert_eq!(std::fs::read(m.path("small")).expect("read"), b"v1 bytes");
    m.umount_and_fsck_clean();

    let m = Mount::new();
    // 1,400 files of 100 bytes in one directory: statfs of the mount grows by about a
    // seventh of a page a file (inode records), plus directory blocks.
    std::fs::create_dir(m.path("many")).expect("mkdir");
    std::fs::write(m.path("many/first"), b"x").expect("write");
    let sync = |m: &Mount| assert!(cowfs(&["sync", m.s(&m.mnt)]).status.success());
    sync(&m);
    let before = statvfs_used(&m.mnt);
    for n in 0..1400 {
        std::fs::write(m.path(&format!("many/f{n:04}")), [b'y'; 100]).expect("write");
    }
    sync(&m);
    let per_file = (statvfs_used(&m.mnt) - before) as f64 / 1400.0 / 4096.0;
    assert!(per_file < 0.2, "{per_file} pages a file");
    let data: Vec<u8> = (0..300u32).map(|x| x as u8).collect();
    std::fs::write(m.path("small"), &data).expect("write");
    let out = std::process::Command::new("cp")
        .args([m.path("small"), m.path("copy")])
        .output()
        .expect("cp");
    assert!(out.status.success(), "{:?}", out);
    m.umount();
    m.mount();
    for name in ["small", "copy"] {
        assert_eq!(std::fs::read(m.path(name)).expect("read"), data);
        let md = std::fs::metadata(m.path(name)).expect("stat");
        assert_eq!(
            md.blocks(),
            1,
            "{name}: 300 bytes inline are one 512-byte block"
        );
    }
    m.umount_and_fsck_clean();
}

/// Every allocation and every write failing in turn inside writes that move an inline file
/// to pages (and a truncate that does): the failed operation leaves the file inline with
/// its bytes, the store clean, and the step works once the faults stop.
#[test]
fn a_failed_move_to_pages_leaves_the_file_inline() {
    use cowfs::page::{FaultBackend, Faults};
    let faults = Faults::new();
    let dev = FaultBackend::new(Box::new(MemBackend::new()), faults.clone());
    let s = Store::create(Box::new(dev), Box::new(MemBackend::new())).expect("store");
    let mut fs = Fs::new(s, None).expect("fs");
    let a = file(&mut fs, Ino::ROOT, "a");
    let small: Vec<u8> = (1..=200u8).collect();
    fs.write(a, 0, &small).expect("write");
    fs.sync().expect("sync");
    type Step = fn(&mut Fs, Ino) -> cowfs::Result<()>;
    let steps: [(&str, Step); 3] = [
        ("grow past the capacity", |fs, a| {
            fs.write(a, 300, &[9u8; 5000]).map(|_| ())
        }),
        ("whole pages", |fs, a| {
            fs.write(a, 0, &[5u8; 8192]).map(|_| ())
        }),
        ("truncate up", |fs, a| {
            let t = SetAttr {
                size: Some(10_000),
                ..Default::default()
            };
            fs.setattr(Ctx::ROOT, a, &t).map(|_| ())
        }),
    ];
    for (what, step) in steps {
        for io in [false, true] {
            for n in 1.. {
                if io {
                    faults.fail_io(n);
                } else {
                    faults.fail_alloc(n);
                }
                fs.begin_op();
                let r = step(&mut fs, a);
                fs.end_op(r.is_ok());
                let fired = faults.fired();
                faults.disarm();
                if !fired {
                    assert!(r.is_ok(), "{what}: {r:?} with no fault");
                    // Put the file back as it was for the next step.
                    truncate(&mut fs, a, 0);
                    fs.write(a, 0, &small).expect("write");
                    break;
                }
                if r.is_ok() {
                    // A write whose later page failed reports the bytes before it, like
                    // write(2): what it reports is there, and the store is clean.
                    assert!(
                        what != "truncate up",
                        "fault {n} fired but truncate succeeded"
                    );
                    assert!(
                        read_all(&mut fs, a).len() > small.len(),
                        "{what}, fault {n}"
                    );
                    clean(&mut fs);
                    truncate(&mut fs, a, 0);
                    fs.write(a, 0, &small).expect("write");
                    continue;
                }
                let i = fs.getattr(a).expect("stat");
                assert!(i.is_inline(), "{what}, fault {n}: still inline");
                assert_eq!(read_all(&mut fs, a), small, "{what}, fault {n}");
                clean(&mut fs);
            }
        }
    }
    clean(&mut fs);
}

/// A symlink target that fits the record stays there; a longer one takes a blob page.
/// A tree clone copies both; fsck is clean.
#[test]
fn short_symlink_targets_are_inline() {
    let mut fs = fs_of_version(2);
    let (d, _) = fs
        .mknod(Ctx::ROOT, Ino::ROOT, b"d", libc::S_IFDIR | 0o755, 0)
        .expect("mkdir");
    // The directory's first entry takes its block (and map node) first.
    file(&mut fs, d, "f");
    let base = used_pages(&mut fs);
    let short = b"../some/where/else".to_vec();
    let long = vec![b'x'; 1000];
    let (s1, i1) = fs.symlink(Ctx::ROOT, d, b"short", &short).expect("symlink");
    assert!(i1.is_inline());
    assert_eq!(used_pages(&mut fs), base, "no page for a short target");
    let (s2, i2) = fs.symlink(Ctx::ROOT, d, b"long", &long).expect("symlink");
    assert!(!i2.is_inline());
    assert_eq!(fs.readlink(s1).expect("readlink"), short);
    assert_eq!(fs.readlink(s2).expect("readlink"), long);
    let opts = CloneOpts {
        recursive: true,
        ..Default::default()
    };
    fs.clone_path(&root(), b"d", d, Ino::ROOT, b"e", opts)
        .expect("clone -r");
    let (e, _) = fs.lookup(Ino::ROOT, b"e").expect("lookup");
    let (c1, _) = fs.lookup(e, b"short").expect("lookup");
    let (c2, _) = fs.lookup(e, b"long").expect("lookup");
    assert_eq!(fs.readlink(c1).expect("readlink"), short);
    assert_eq!(fs.readlink(c2).expect("readlink"), long);
    fs.unlink(d, b"short").expect("unlink");
    assert_eq!(fs.readlink(c1).expect("readlink"), short);
    clean(&mut fs);
}
