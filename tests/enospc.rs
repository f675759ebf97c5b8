//! Out of space: writes fail with ENOSPC part way, every failed operation is undone, the
//! store stays consistent (fsck), and deleting files gives the space back.

use cowfs::check::check;
use cowfs::ids::Ino;
use cowfs::ns::{Ctx, Fs};
use cowfs::page::MemBackend;
use cowfs::store::Store;

fn op<T>(fs: &mut Fs, f: impl FnOnce(&mut Fs) -> cowfs::Result<T>) -> cowfs::Result<T> {
    fs.begin_op();
    let r = f(fs);
    fs.end_op(r.is_ok());
    r
}

#[test]
fn full_store_fails_cleanly_and_recovers() {
    let mut store =
        Store::create(Box::new(MemBackend::new()), Box::new(MemBackend::new())).expect("create");
    store.set_max_pages(1020 * 24);
    let mut fs = Fs::new(store, None).expect("fs");
    let chunk = vec![0x5au8; 1 << 20];
    let mut files = Vec::new();
    let mut enospc = 0;
    for i in 0..200 {
        let name = format!("f{i}");
        let created = op(&mut fs, |fs| {
            fs.mknod(
                Ctx::ROOT,
                Ino::ROOT,
                name.as_bytes(),
                libc::S_IFREG | 0o644,
                0,
            )
        });
        let Ok((ino, _)) = created else {
            enospc += 1;
            break;
        };
        files.push((name, ino));
        match op(&mut fs, |fs| fs.write(ino, 0, &chunk)) {
            Ok(n) if n == chunk.len() => {}
            Ok(_) | Err(_) => {
                enospc += 1;
                break;
            }
        }
    }
    assert!(enospc > 0, "the store filled up");
    assert!(
        files.len() > 50,
        "most of 96 MiB was usable: {} files",
        files.len()
    );
    fs.sync().expect("sync");
    let rep = check(fs.store()).expect("check");
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
    // Deleting gives space back; writing works again after the commit.
    for (name, ino) in files.iter().take(10) {
        op(&mut fs, |fs| fs.unlink(Ino::ROOT, name.as_bytes())).expect("unlink while full");
        // The kernel forgets the inode once its dentry goes: only then is it freed.
        op(&mut fs, |fs| fs.forget(*ino, 1)).expect("forget");
    }
    fs.sync().expect("sync");
    let (ino, _) = op(&mut fs, |fs| {
        fs.mknod(Ctx::ROOT, Ino::ROOT, b"again", libc::S_IFREG | 0o644, 0)
    })
    .expect("create");
    assert_eq!(
        op(&mut fs, |fs| fs.write(ino, 0, &chunk)).expect("write"),
        chunk.len()
    );
    fs.sync().expect("sync");
    let rep = check(fs.store()).expect("check");
    assert!(rep.problems.is_empty(), "{:?}", rep.problems);
}
