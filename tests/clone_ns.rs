//! The daemon's own checks on clone requests, which the kernel cannot make for us: the
//! source named in the payload is resolved with the caller's rights (search on every
//! directory, read on the file), its inode number must match, and a range clone needs a
//! handle open for writing.

use cowfs::check::check;
use cowfs::ids::{Fh, Ino};
use cowfs::ns::perm::Cred;
use cowfs::ns::{Begun, CloneOpts, Ctx, Fs, SetAttr, StepBudget, TreeClone};
use cowfs::page::MemBackend;
use cowfs::store::Store;

fn fs() -> Fs {
    let s = Store::create(Box::new(MemBackend::new()), Box::new(MemBackend::new())).expect("store");
    Fs::new(s, None).expect("fs")
}

fn chmod(fs: &mut Fs, ino: Ino, mode: u32) {
    let a = SetAttr {
        mode: Some(mode),
        ..Default::default()
    };
    fs.setattr(Ctx::ROOT, ino, &a).expect("chmod");
}

fn file(fs: &mut Fs, parent: Ino, name: &str, mode: u32) -> Ino {
    let (ino, _) = fs
        .mknod(Ctx::ROOT, parent, name.as_bytes(), libc::S_IFREG | mode, 0)
        .expect("create");
    fs.write(ino, 0, &vec![9u8; 10_000]).expect("write");
    chmod(fs, ino, mode);
    ino
}

fn nobody() -> Cred {
    Cred {
        uid: 65534,
        gid: 65534,
        groups: vec![],
    }
}

#[test]
fn clone_checks_the_callers_rights() {
    let mut fs = fs();
    chmod(&mut fs, Ino::ROOT, 0o777);
    let secret = file(&mut fs, Ino::ROOT, "secret", 0o600);
    let public = file(&mut fs, Ino::ROOT, "public", 0o644);
    let (locked, _) = fs
        .mknod(Ctx::ROOT, Ino::ROOT, b"locked", libc::S_IFDIR | 0o700, 0)
        .expect("mkdir");
    chmod(&mut fs, locked, 0o700);
    let hidden = file(&mut fs, locked, "hidden", 0o644);
    let opts = CloneOpts::default();
    let try_clone = |fs: &mut Fs, path: &str, ino: Ino, name: &str| {
        fs.begin_op();
        let r = fs.clone_path(
            &nobody(),
            path.as_bytes(),
            ino,
            Ino::ROOT,
            name.as_bytes(),
            opts,
        );
        fs.end_op(r.is_ok());
        r.map(|_| ()).map_err(|e| e.errno())
    };
    assert_eq!(
        try_clone(&mut fs, "secret", secret, "x"),
        Err(libc::EACCES),
        "no read permission"
    );
    assert_eq!(
        try_clone(&mut fs, "locked/hidden", hidden, "x"),
        Err(libc::EACCES),
        "no search permission"
    );
    assert_eq!(
        try_clone(&mut fs, "public", secret, "x"),
        Err(libc::ENOENT),
        "forged inode number"
    );
    assert!(fs.lookup(Ino::ROOT, b"x").is_err(), "nothing was created");
    try_clone(&mut fs, "public", public, "x").expect("a readable file clones");
    let (x, xi) = fs.lookup(Ino::ROOT, b"x").expect("lookup");
    assert_eq!(xi.uid, 65534);
    assert_eq!(fs.read(x, 0, 100).expect("read"), vec![9u8; 100]);
    // A range clone needs a handle open for writing.
    let ro = fs.open(x, libc::O_RDONLY).expect("open");
    assert_eq!(
        fs.check_writable_handle(ro, x).err().map(|e| e.errno()),
        Some(libc::EBADF)
    );
    let rw = fs.open(x, libc::O_RDWR).expect("open");
    fs.check_writable_handle(rw, x).expect("writable");
    assert!(fs.check_writable_handle(Fh(999), x).is_err());
    fs.release(ro).expect("release");
    fs.release(rw).expect("release");
    fs.sync().expect("sync");
    let rep = check(fs.store()).expect("check");
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
}

#[test]
fn tree_clone_of_many_files_is_consistent_and_rolls_back_on_error() {
    let mut fs = fs();
    let (src, _) = fs
        .mknod(Ctx::ROOT, Ino::ROOT, b"src", libc::S_IFDIR | 0o755, 0)
        .expect("mkdir");
    for i in 0..2000 {
        let (f, _) = fs
            .mknod(
                Ctx::ROOT,
                src,
                format!("f{i}").as_bytes(),
                libc::S_IFREG | 0o644,
                0,
            )
            .expect("create");
        fs.write(f, 0, format!("file {i}").as_bytes())
            .expect("write");
    }
    let unreadable = file(&mut fs, src, "z-unreadable", 0o000);
    let opts = CloneOpts {
        recursive: true,
        ..Default::default()
    };
    let root = Cred::root();
    fs.begin_op();
    let r = fs.clone_path(&root, b"src", src, Ino::ROOT, b"dst", opts);
    fs.end_op(r.is_ok());
    r.expect("root clones everything");
    let (dst, di) = fs.lookup(Ino::ROOT, b"dst").expect("lookup");
    assert_eq!(di.entries, 2001);
    let (f7, _) = fs.lookup(dst, b"f7").expect("lookup");
    assert_eq!(fs.read(f7, 0, 100).expect("read"), b"file 7");
    // As an unprivileged user the unreadable file fails the whole clone: nothing appears.
    chmod(&mut fs, Ino::ROOT, 0o777);
    let _ = unreadable;
    fs.begin_op();
    let r = fs.clone_path(&nobody(), b"src", src, Ino::ROOT, b"dst2", opts);
    fs.end_op(r.is_ok());
    assert_eq!(r.err().map(|e| e.errno()), Some(libc::EACCES));
    assert!(fs.lookup(Ino::ROOT, b"dst2").is_err());
    fs.sync().expect("sync");
    let rep = check(fs.store()).expect("check");
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
}

/// A source tree: `dirs` directories of `files` files each (and a hard link per
/// directory to `d0/f0`); returns the top.
fn tree(fs: &mut Fs, dirs: usize, files: usize) -> Ino {
    let (top, _) = fs
        .mknod(Ctx::ROOT, Ino::ROOT, b"src", libc::S_IFDIR | 0o755, 0)
        .expect("mkdir");
    let mut first = None;
    for d in 0..dirs {
        let (dir, _) = fs
            .mknod(
                Ctx::ROOT,
                top,
                format!("d{d}").as_bytes(),
                libc::S_IFDIR | 0o755,
                0,
            )
            .expect("mkdir");
        for f in 0..files {
            let (i, _) = fs
                .mknod(
                    Ctx::ROOT,
                    dir,
                    format!("f{f}").as_bytes(),
                    libc::S_IFREG | 0o644,
                    0,
                )
                .expect("create");
            fs.write(i, 0, format!("{d}/{f}").as_bytes())
                .expect("write");
            first.get_or_insert(i);
        }
        if let Some(f0) = first
            && d > 0
        {
            fs.link(f0, dir, b"link").expect("link");
        }
    }
    top
}

/// Starts a stepped tree clone of `src` to `/name` (the start as an operation).
fn start(fs: &mut Fs, name: &str) -> Box<TreeClone> {
    fs.begin_op();
    let src = fs.lookup(Ino::ROOT, b"src").expect("src").0;
    let r = fs.clone_start(
        &Cred::root(),
        b"src",
        src,
        Ino::ROOT,
        name.as_bytes(),
        CloneOpts {
            recursive: true,
            ..Default::default()
        },
    );
    fs.end_op(r.is_ok());
    match r.expect("clone start") {
        Begun::Tree(t, _) => t,
        Begun::Done(_) => panic!("a tree clone finished at once"),
    }
}

/// One step of `budget` entries, as its own operation.
fn step(fs: &mut Fs, t: &mut TreeClone, budget: u64) -> cowfs::Result<bool> {
    fs.begin_op();
    let r = fs.clone_step(
        t,
        StepBudget {
            entries: budget,
            time: None,
        },
    );
    fs.end_op(r.is_ok());
    r
}

/// (path, size, nlink, link group) of every entry under `top`, sorted.
fn listing(fs: &mut Fs, top: Ino) -> Vec<(String, u64, u32, String)> {
    let mut out = Vec::new();
    let mut groups = std::collections::HashMap::new();
    let mut todo = vec![(String::new(), top)];
    while let Some((path, dir)) = todo.pop() {
        let mut es = Vec::new();
        fs.readdir(dir, 0, &mut |ino, _, _, name| {
            if name != b"." && name != b".." {
                es.push((String::from_utf8_lossy(name).into_owned(), ino));
            }
            false
        })
        .expect("readdir");
        for (name, ino) in es {
            let i = fs.getattr(ino).expect("getattr");
            let p = format!("{path}/{name}");
            if i.is_dir() {
                todo.push((p.clone(), ino));
            }
            let g = groups.entry(ino).or_insert_with(|| p.clone()).clone();
            let g = if i.is_dir() { p.clone() } else { g };
            out.push((p, i.size, i.nlink, g));
        }
    }
    out.sort();
    out
}

fn clean(fs: &mut Fs) {
    fs.sync().expect("sync");
    let rep = check(fs.store()).expect("check");
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
}

#[test]
fn a_stepped_tree_clone_equals_one_in_a_single_operation() {
    let mut fs = fs();
    let src = tree(&mut fs, 6, 40);
    let want = listing(&mut fs, src);
    let mut t = start(&mut fs, "dst");
    let mut steps = 1;
    while step(&mut fs, &mut t, 7).expect("step") {
        steps += 1;
        // Other operations between steps see a consistent, partial copy.
        clean(&mut fs);
    }
    assert!(steps > 30, "{steps} steps");
    let dst = fs.lookup(Ino::ROOT, b"dst").expect("dst").0;
    assert_eq!(listing(&mut fs, dst), want);
    assert_eq!(t.copied() as usize, want.len());
    clean(&mut fs);
}

#[test]
fn a_failed_step_is_undone_alone_and_the_clone_goes_on() {
    let mut fs = fs();
    let src = tree(&mut fs, 4, 30);
    let want = listing(&mut fs, src);
    let mut t = start(&mut fs, "dst");
    for _ in 0..5 {
        assert!(step(&mut fs, &mut t, 10).expect("step"));
    }
    let dst = fs.lookup(Ino::ROOT, b"dst").expect("dst").0;
    // A name the walk has yet to copy, taken in the copy: that step fails with EEXIST
    // and is undone (the copy as before it); once the name is gone the walk goes on.
    let d3 = fs.lookup(dst, b"d3").map(|(i, _)| i);
    let (dir, name) = match d3 {
        Ok(i) => (i, "f29"),
        Err(_) => (dst, "d3"),
    };
    fs.mknod(Ctx::ROOT, dir, name.as_bytes(), libc::S_IFREG | 0o644, 0)
        .expect("in the way");
    let err = loop {
        let pre = listing(&mut fs, dst);
        match step(&mut fs, &mut t, 10) {
            Ok(true) => {}
            Ok(false) => panic!("the walk never met the name in its way"),
            Err(e) => {
                assert!(
                    listing(&mut fs, dst) == pre,
                    "the failed step was not undone"
                );
                break e;
            }
        }
    };
    assert_eq!(err.errno(), libc::EEXIST);
    clean(&mut fs);
    fs.unlink(dir, name.as_bytes()).expect("unlink");
    while step(&mut fs, &mut t, 10).expect("step after the retry") {}
    assert_eq!(listing(&mut fs, dst), want);
    clean(&mut fs);
}

#[test]
fn a_copy_removed_or_rolled_back_between_steps_fails_the_clone_cleanly() {
    let mut fs = fs();
    let src = tree(&mut fs, 3, 5);
    // Removed: the walk's next step finds its directory gone.
    let mut t = start(&mut fs, "dst");
    fs.rmdir(Ino::ROOT, b"dst").expect("rmdir the empty copy");
    assert_eq!(
        step(&mut fs, &mut t, 5).map_err(|e| e.errno()),
        Err(libc::ENOENT)
    );
    clean(&mut fs);
    // Swept away by a rollback to a snapshot taken before the clone.
    fs.snapshot_create(b"s", false).expect("snapshot");
    let mut t = start(&mut fs, "dst2");
    assert!(step(&mut fs, &mut t, 3).expect("step"));
    fs.snapshot_rollback(b"s").expect("rollback");
    assert_eq!(
        step(&mut fs, &mut t, 5).map_err(|e| e.errno()),
        Err(libc::ENOENT)
    );
    assert!(fs.lookup(Ino::ROOT, b"dst2").is_err());
    clean(&mut fs);
    // Moved into the source: walking into its own copy would never end.
    let mut t = start(&mut fs, "dst3");
    assert!(step(&mut fs, &mut t, 2).expect("step"));
    let d2 = fs.lookup(src, b"d2").expect("d2").0;
    fs.rename(Ino::ROOT, b"dst3", d2, b"dst3", 0)
        .expect("rename");
    let err = loop {
        match step(&mut fs, &mut t, 5) {
            Ok(true) => {}
            Ok(false) => panic!("the walk never met its copy"),
            Err(e) => break e,
        }
    };
    assert_eq!(err.errno(), libc::EINVAL);
    clean(&mut fs);
}
