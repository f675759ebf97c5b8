//! The daemon's own checks on clone requests, which the kernel cannot make for us: the
//! source named in the payload is resolved with the caller's rights (search on every
//! directory, read on the file), its inode number must match, and a range clone needs a
//! handle open for writing.

use cowfs::check::check;
use cowfs::ids::{Fh, Ino};
use cowfs::ns::perm::Cred;
use cowfs::ns::{CloneOpts, Ctx, Fs, SetAttr};
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
