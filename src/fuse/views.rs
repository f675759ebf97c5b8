//! Snapshots as the kernel sees them: `/.snapshots` is a virtual directory (hidden from the
//! root's listing, like ZFS's `.zfs`), and each snapshot's files have kernel inode numbers
//! carrying the snapshot's id in their top bits (`Ino::in_view`). Every request runs in
//! the view its inode number names; writes into a read-only snapshot get EROFS.

use super::CowFuse;
use super::attr::file_attr;
use crate::error::{Error, Result};
use crate::ids::Ino;
use crate::ns::{Fs, Inode, Time};
use fuser::{Errno, FileAttr};

/// The name of the virtual directory under the root.
pub const SNAPDIR_NAME: &[u8] = b".snapshots";

/// True for the root's `.snapshots` entry, which no real file may take.
pub fn reserved(parent: Ino, name: &[u8]) -> bool {
    parent == Ino::ROOT && name == SNAPDIR_NAME
}

/// Attributes of the virtual `.snapshots` directory.
pub fn snapdir_attr(fs: &mut Fs) -> Result<FileAttr> {
    let root = fs.getattr(Ino::ROOT)?;
    let i = Inode {
        mode: libc::S_IFDIR | 0o555,
        nlink: 2,
        uid: root.uid,
        gid: root.gid,
        atime: root.atime,
        mtime: Time::now(),
        ctime: Time::now(),
        crtime: root.crtime,
        ..Default::default()
    };
    Ok(file_attr(Ino::SNAPDIR, &i, 0))
}

/// A directory entry for the kernel: attributes and the inode number's generation.
pub type Entry = (FileAttr, u64);

/// The entry of local inode `n` in the current view, for a reply that hands it to the
/// kernel: it counts one kernel reference (`Fs::remember`), which the kernel gives back
/// with FORGET. Call it as the request's last fallible step and only for such a reply,
/// so that a failed request never leaves a count behind.
pub fn entry_of(fs: &mut Fs, n: Ino, i: &Inode) -> Result<Entry> {
    let a = attr_of(fs, n, i)?;
    fs.remember(n);
    Ok((a, fs.generation()))
}

/// Attributes of local inode `n` in the current view.
pub fn attr_of(fs: &mut Fs, n: Ino, i: &Inode) -> Result<FileAttr> {
    let pages = fs.data_pages(n, i)?;
    Ok(file_attr(fs.kino(n), i, pages))
}

/// Runs `f` in the view of kernel inode `k`, with `k`'s local number. `write`: the
/// request changes something, so a read-only view answers EROFS.
fn in_view<T>(
    fs: &mut Fs,
    k: Ino,
    write: bool,
    f: impl FnOnce(&mut Fs, Ino) -> Result<T>,
) -> Result<T> {
    if k == Ino::SNAPDIR {
        return Err(if write {
            Error::ReadOnly
        } else {
            Error::NotFound
        });
    }
    let (v, ino) = k.split();
    fs.enter(v)?;
    let r = if write {
        fs.check_view_writable().and_then(|()| f(fs, ino))
    } else {
        f(fs, ino)
    };
    fs.leave();
    r
}

impl CowFuse {
    /// Runs `f` in the view of kernel inode `k`, with `k`'s local number. `write`: the
    /// request changes something, so a read-only view answers EROFS.
    pub(super) fn vcall<T>(
        &self,
        what: &str,
        k: Ino,
        write: bool,
        f: impl FnOnce(&mut Fs, Ino) -> Result<T>,
    ) -> std::result::Result<T, Errno> {
        self.call(what, |fs| in_view(fs, k, write, f))
    }

    /// `vcall` for a request that changes nothing (see `read_call`).
    pub(super) fn vread<T>(
        &self,
        what: &str,
        k: Ino,
        f: impl FnOnce(&mut Fs, Ino) -> Result<T>,
    ) -> std::result::Result<T, Errno> {
        self.read_call(what, |fs| in_view(fs, k, false, f))
    }

    /// Like `vcall` for requests naming two inodes, which must be in the same view
    /// (EXDEV otherwise, as between two file systems).
    pub(super) fn vcall2<T>(
        &self,
        what: &str,
        a: Ino,
        b: Ino,
        write: bool,
        f: impl FnOnce(&mut Fs, Ino, Ino) -> Result<T>,
    ) -> std::result::Result<T, Errno> {
        let (va, _) = a.split();
        let (vb, lb) = b.split();
        if va != vb || a == Ino::SNAPDIR || b == Ino::SNAPDIR {
            let e = if write && (a == Ino::SNAPDIR || b == Ino::SNAPDIR) {
                Error::ReadOnly
            } else {
                Error::CrossDevice
            };
            return Err(Errno::from_i32(e.errno()));
        }
        self.vcall(what, a, write, |fs, la| f(fs, la, lb))
    }

    /// lookup, including `.snapshots` and the snapshots in it.
    pub(super) fn lookup_any(&self, parent: Ino, name: &[u8]) -> std::result::Result<Entry, Errno> {
        if reserved(parent, name) {
            return self.read_call("lookup", |fs| Ok((snapdir_attr(fs)?, fs.generation())));
        }
        if parent == Ino::SNAPDIR {
            return self.read_call("lookup", |fs| {
                let id = fs.snapshot_id(name)?;
                fs.enter(id)?;
                let r = fs
                    .lookup(Ino::ROOT, b".")
                    .and_then(|(n, i)| entry_of(fs, n, &i));
                fs.leave();
                r
            });
        }
        self.vread("lookup", parent, |fs, p| {
            let (n, i) = fs.lookup(p, name)?;
            entry_of(fs, n, &i)
        })
    }

    /// getattr, including `.snapshots`.
    pub(super) fn getattr_any(&self, k: Ino) -> std::result::Result<FileAttr, Errno> {
        if k == Ino::SNAPDIR {
            return self.read_call("getattr", snapdir_attr);
        }
        self.vread("getattr", k, |fs, i| {
            let inode = fs.getattr(i)?;
            attr_of(fs, i, &inode)
        })
    }

    /// Entries of `.snapshots` from offset `off`: (kernel inode, next offset, name).
    pub(super) fn snapdir_entries(
        &self,
        off: u64,
    ) -> std::result::Result<Vec<(Ino, u64, Vec<u8>)>, Errno> {
        self.read_call("readdir", |fs| {
            let mut all = vec![(Ino::SNAPDIR, b".".to_vec()), (Ino::ROOT, b"..".to_vec())];
            for (id, name) in fs.snapshot_names() {
                all.push((Ino::ROOT.in_view(id), name));
            }
            Ok(all
                .into_iter()
                .enumerate()
                .skip(off as usize)
                .map(|(n, (i, name))| (i, n as u64 + 1, name))
                .collect())
        })
    }
}
