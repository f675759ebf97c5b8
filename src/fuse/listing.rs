//! READDIRPLUS: a listing that hands every entry to the kernel with its attributes, so a
//! `find`, `du` or `ls -l` over a tree costs one request per directory block instead of
//! one LOOKUP per name. Each entry handed out counts one kernel reference
//! (`Fs::remember`), exactly as a LOOKUP does; `.` and `..` count none (the kernel skips
//! them). An entry that no longer fits in the reply is not counted.

use super::views::{attr_of, snapdir_attr};
use super::{CowFuse, TTL};
use crate::error::Result;
use crate::ids::Ino;
use crate::ns::Fs;
use fuser::{Errno, FileAttr, Generation, INodeNo, ReplyDirectoryPlus};
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;

/// Bytes of one entry in the reply before its name (`fuse_entry_out` + `fuse_dirent`).
const ENTRY_BYTES: usize = 128 + 24;
/// Names gathered at a time, in reply bytes: about two pages, the size of most replies the
/// kernel asks for. The reply's size is not known here, so the names are gathered batch by
/// batch until it is full: at most one batch is read for nothing (a listing resumes at a
/// hash bucket, so a batch costs what it holds, not what came before it).
const GATHER_BYTES: usize = 8 << 10;

/// One name of a listing: local inode, next offset, name.
type Name = (Ino, u64, Vec<u8>);

fn is_dot(name: &[u8]) -> bool {
    name == b"." || name == b".."
}

impl CowFuse {
    /// READDIRPLUS of kernel directory `k` from offset `off`.
    pub(super) fn readdir_plus(&self, k: Ino, off: u64, mut reply: ReplyDirectoryPlus) {
        let r = if k == Ino::SNAPDIR {
            self.snapdir_plus(off, &mut reply)
        } else {
            self.vread("readdirplus", k, |fs, d| dir_plus(fs, d, off, &mut reply))
        };
        match r {
            Ok(()) => reply.ok(),
            Err(e) => reply.error(e),
        }
    }

    /// `.snapshots`: each snapshot's root, counted as a lookup of its name would be.
    fn snapdir_plus(
        &self,
        off: u64,
        reply: &mut ReplyDirectoryPlus,
    ) -> std::result::Result<(), Errno> {
        for (n, next, name) in self.snapdir_entries(off)? {
            if is_dot(&name) {
                let mut a = self.read_call("readdirplus", snapdir_attr)?;
                a.ino = INodeNo(n.0);
                if reply.add(
                    a.ino,
                    next,
                    OsStr::from_bytes(&name),
                    &TTL,
                    &a,
                    Generation(0),
                ) {
                    break;
                }
                continue;
            }
            let Ok((a, g)) = self.lookup_any(Ino::SNAPDIR, &name) else {
                continue; // deleted meanwhile
            };
            if reply.add(
                a.ino,
                next,
                OsStr::from_bytes(&name),
                &TTL,
                &a,
                Generation(g),
            ) {
                // Not handed out after all: give the count back.
                let _ = self.call("readdirplus", |fs| fs.forget(Ino(a.ino.0), 1));
                break;
            }
        }
        Ok(())
    }
}

/// Lists local directory `d` of the current view into `reply`. Fails only when nothing
/// was handed out yet: once an entry is counted, the reply must reach the kernel.
fn dir_plus(fs: &mut Fs, d: Ino, off: u64, reply: &mut ReplyDirectoryPlus) -> Result<()> {
    let dir = fs.getattr(d)?;
    let generation = Generation(fs.generation());
    let (mut off, mut added) = (off, 0usize);
    loop {
        let names = gather(fs, d, off)?;
        let Some(last) = names.last().map(|(_, next, _)| *next) else {
            return Ok(());
        };
        for (n, next, name) in names {
            let attr = if is_dot(&name) {
                dot_attr(fs, d, &dir, n)
            } else {
                fs.getattr(n).and_then(|inode| attr_of(fs, n, &inode))
            };
            let a = match attr {
                Ok(a) => a,
                Err(e) if added == 0 => return Err(e),
                Err(e) => {
                    log::debug!("readdirplus: entry {}: {e}", n.0);
                    return Ok(());
                }
            };
            if reply.add(a.ino, next, OsStr::from_bytes(&name), &TTL, &a, generation) {
                return Ok(());
            }
            if !is_dot(&name) {
                fs.remember(n);
            }
            added += 1;
        }
        off = last;
    }
}

/// The names of `d` from `off`, up to `GATHER_BYTES` of reply.
fn gather(fs: &mut Fs, d: Ino, off: u64) -> Result<Vec<Name>> {
    let mut names = Vec::new();
    let mut bytes = 0;
    fs.readdir(d, off, &mut |n, next, _kind, name| {
        bytes += (ENTRY_BYTES + name.len()).next_multiple_of(8);
        names.push((n, next, name.to_vec()));
        bytes >= GATHER_BYTES
    })?;
    Ok(names)
}

/// Attributes for `.` or `..` (local inode `n`): the kernel ignores them but for the
/// inode number, so the directory's own serve, numbered `n`.
fn dot_attr(fs: &mut Fs, d: Ino, dir: &crate::ns::Inode, n: Ino) -> Result<FileAttr> {
    let mut a = attr_of(fs, d, dir)?;
    a.ino = INodeNo(fs.kino(n).0);
    Ok(a)
}
