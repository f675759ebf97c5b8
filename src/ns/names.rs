//! Operations on names: lookup, create, link, unlink, rename, symlinks, readdir.

use super::fs::{Ctx, Fs, kind_byte};
use super::inode::{Inode, Time};
use super::{blob, dir};
use crate::error::{Error, Result};
use crate::ids::Ino;

/// Receives readdir entries: inode, next offset, kind byte, name; returns true when full.
pub type DirSink<'a> = dyn FnMut(Ino, u64, u8, &[u8]) -> bool + 'a;

/// Most hard links to one inode.
pub const LINK_MAX: u32 = 65000;
/// Longest symlink target.
pub const SYMLINK_MAX: usize = 4095;

/// `rename` flags, as in renameat2(2).
pub const RENAME_NOREPLACE: u32 = 1;
pub const RENAME_EXCHANGE: u32 = 2;

impl Fs {
    /// A directory to change. One that was removed but is still held (open, or known to
    /// the kernel) takes no new entries: ENOENT, as Linux answers.
    fn dir(&mut self, ino: Ino) -> Result<Inode> {
        let d = self.get(ino)?;
        if !d.is_dir() {
            return Err(Error::NotDir);
        }
        if d.nlink == 0 {
            return Err(Error::NotFound);
        }
        Ok(d)
    }

    fn dir_peek(&mut self, ino: Ino) -> Result<Inode> {
        let d = self.peek(ino)?;
        if !d.is_dir() {
            return Err(Error::NotDir);
        }
        Ok(d)
    }

    /// Looks `name` up in directory `parent`.
    pub fn lookup(&mut self, parent: Ino, name: &[u8]) -> Result<(Ino, Inode)> {
        if name.len() > dir::NAME_MAX {
            return Err(Error::NameTooLong);
        }
        let d = self.dir_peek(parent)?;
        let e = match name {
            b"." => return Ok((parent, d)),
            b".." => Ino(d.parent),
            _ => {
                dir::lookup(&mut self.store, &d, name)?
                    .ok_or(Error::NotFound)?
                    .ino
            }
        };
        Ok((e, self.peek(e)?))
    }

    /// Creates a file, directory, node or symlink named `name` in `parent`.
    pub fn mknod(
        &mut self,
        ctx: Ctx,
        parent: Ino,
        name: &[u8],
        mode: u32,
        rdev: u32,
    ) -> Result<(Ino, Inode)> {
        dir::check_name(name)?;
        let mut d = self.dir(parent)?;
        if dir::lookup(&mut self.store, &d, name)?.is_some() {
            return Err(Error::Exists);
        }
        let now = Time::now();
        let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
        let mut perm = mode & 0o7777 & !ctx.umask;
        let mut gid = ctx.gid;
        if d.mode & libc::S_ISGID != 0 {
            gid = d.gid;
            if is_dir {
                perm |= libc::S_ISGID;
            }
        }
        if mode & libc::S_IFMT == libc::S_IFLNK {
            perm = 0o777;
        }
        let inode = Inode {
            mode: (mode & libc::S_IFMT) | perm,
            uid: ctx.uid,
            gid,
            nlink: if is_dir { 2 } else { 1 },
            rdev,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            parent: parent.0,
            ..Default::default()
        };
        let ino = self.alloc_ino()?;
        self.put(ino, &inode)?;
        dir::insert(&mut self.store, &mut d, name, ino, kind_byte(inode.mode))?;
        if is_dir {
            d.nlink = d.nlink.saturating_add(1);
        }
        d.mtime = now;
        d.ctime = now;
        self.put(parent, &d)?;
        Ok((ino, inode))
    }

    /// Creates a symlink to `target`.
    pub fn symlink(
        &mut self,
        ctx: Ctx,
        parent: Ino,
        name: &[u8],
        target: &[u8],
    ) -> Result<(Ino, Inode)> {
        if target.len() > SYMLINK_MAX {
            return Err(Error::NameTooLong);
        }
        if target.is_empty() {
            return Err(Error::NotFound);
        }
        let (ino, mut i) = self.mknod(ctx, parent, name, libc::S_IFLNK | 0o777, 0)?;
        if target.len() as u64 <= self.inline_cap() {
            // A target that fits the record stays there (format 2), like a file's bytes.
            i.inline = Some(target.to_vec());
        } else {
            blob::write(&mut self.store, &mut i.map, target)?;
        }
        i.size = target.len() as u64;
        self.put(ino, &i)?;
        Ok((ino, i))
    }

    /// The target of a symlink.
    pub fn readlink(&mut self, ino: Ino) -> Result<Vec<u8>> {
        let i = self.peek(ino)?;
        if !i.is_symlink() {
            return Err(Error::Invalid("not a symlink"));
        }
        if let Some(t) = i.inline {
            return Ok(t);
        }
        blob::read(&mut self.store, &i.map, i.size)
    }

    /// Adds a hard link `newparent/newname` to `ino`.
    pub fn link(&mut self, ino: Ino, newparent: Ino, newname: &[u8]) -> Result<Inode> {
        dir::check_name(newname)?;
        let mut i = self.get(ino)?;
        if i.is_dir() {
            return Err(Error::NotPermitted);
        }
        if i.nlink == 0 {
            // Unlinked but still held: it cannot come back (linkat(2) answers ENOENT).
            return Err(Error::NotFound);
        }
        if i.nlink >= LINK_MAX {
            return Err(Error::TooManyLinks);
        }
        let mut d = self.dir(newparent)?;
        if dir::lookup(&mut self.store, &d, newname)?.is_some() {
            return Err(Error::Exists);
        }
        dir::insert(&mut self.store, &mut d, newname, ino, kind_byte(i.mode))?;
        let now = Time::now();
        d.mtime = now;
        d.ctime = now;
        self.put(newparent, &d)?;
        i.nlink += 1;
        i.ctime = now;
        self.put(ino, &i)?;
        Ok(i)
    }

    /// Removes `parent/name` (naming `target`) so that an incoming inode can take its
    /// place, with rename's rules: a directory replaces only an empty directory, a
    /// non-directory only a non-directory.
    pub(super) fn remove_target(
        &mut self,
        parent: Ino,
        name: &[u8],
        target: Ino,
        incoming_dir: bool,
    ) -> Result<()> {
        let t = self.get(target)?;
        match (incoming_dir, t.is_dir()) {
            (true, false) => return Err(Error::NotDir),
            (false, true) => return Err(Error::IsDir),
            (true, true) if t.entries > 0 => return Err(Error::NotEmpty),
            _ => {}
        }
        let mut d = self.dir(parent)?;
        dir::remove(&mut self.store, &mut d, name)?;
        if t.is_dir() {
            d.nlink = d.nlink.saturating_sub(1);
        }
        self.put(parent, &d)?;
        self.drop_link(target)
    }

    /// Drops one link of `ino`; frees it (or parks it as an orphan while open) at zero.
    fn drop_link(&mut self, ino: Ino) -> Result<()> {
        let mut i = self.get(ino)?;
        i.nlink = if i.is_dir() {
            0
        } else {
            i.nlink.saturating_sub(1)
        };
        i.ctime = Time::now();
        if i.nlink > 0 {
            return self.put(ino, &i);
        }
        if self.is_in_use(ino) {
            self.put(ino, &i)?;
            return self.orphan(ino);
        }
        self.free_inode(ino, i)
    }

    /// Removes a non-directory name.
    pub fn unlink(&mut self, parent: Ino, name: &[u8]) -> Result<()> {
        self.remove_name(parent, name, false)
    }

    /// Removes an empty directory.
    pub fn rmdir(&mut self, parent: Ino, name: &[u8]) -> Result<()> {
        self.remove_name(parent, name, true)
    }

    fn remove_name(&mut self, parent: Ino, name: &[u8], want_dir: bool) -> Result<()> {
        if name.len() > dir::NAME_MAX {
            return Err(Error::NameTooLong);
        }
        if want_dir && name == b"." {
            return Err(Error::Invalid("rmdir of '.'"));
        }
        if want_dir && name == b".." {
            return Err(Error::NotEmpty);
        }
        let mut d = self.dir(parent)?;
        let e = dir::lookup(&mut self.store, &d, name)?.ok_or(Error::NotFound)?;
        let target = self.get(e.ino)?;
        match (want_dir, target.is_dir()) {
            (false, true) => return Err(Error::IsDir),
            (true, false) => return Err(Error::NotDir),
            (true, true) if target.entries > 0 => return Err(Error::NotEmpty),
            _ => {}
        }
        dir::remove(&mut self.store, &mut d, name)?;
        if want_dir {
            d.nlink = d.nlink.saturating_sub(1);
        }
        let now = Time::now();
        d.mtime = now;
        d.ctime = now;
        self.put(parent, &d)?;
        self.drop_link(e.ino)
    }

    /// True when `ino` is `anc` or lies below it. Follows the parent pointers up to the
    /// root however deep the tree is; only a cycle never ends, and Brent's algorithm finds
    /// one in constant memory (a mark that moves to the current directory after 1, 2, 4,
    /// ... steps is met again once it sits in the cycle): that is a corrupt store.
    pub(super) fn is_under(&mut self, ino: Ino, anc: Ino) -> Result<bool> {
        let (mut cur, mut mark) = (ino, ino);
        let (mut steps, mut lap) = (0u64, 1u64);
        loop {
            if cur == anc {
                return Ok(true);
            }
            if cur == Ino::ROOT {
                return Ok(false);
            }
            cur = Ino(self.peek(cur)?.parent);
            if cur == mark {
                return Err(Error::corrupt(
                    0,
                    format!("directory {} is its own ancestor", cur.0),
                ));
            }
            steps += 1;
            if steps == lap {
                (mark, steps, lap) = (cur, 0, lap.saturating_mul(2));
            }
        }
    }

    /// Renames `parent/name` to `newparent/newname`, with renameat2 flags.
    pub fn rename(
        &mut self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        flags: u32,
    ) -> Result<()> {
        if flags & !(RENAME_NOREPLACE | RENAME_EXCHANGE) != 0
            || flags == RENAME_NOREPLACE | RENAME_EXCHANGE
        {
            return Err(Error::Invalid("unsupported rename flags"));
        }
        dir::check_name(newname)?;
        let src_dir = self.dir(parent)?;
        let src = dir::lookup(&mut self.store, &src_dir, name)?.ok_or(Error::NotFound)?;
        let dst_dir = self.dir(newparent)?;
        let dst = dir::lookup(&mut self.store, &dst_dir, newname)?;
        let src_is_dir = self.get(src.ino)?.is_dir();
        if src_is_dir && newparent != parent && self.is_under(newparent, src.ino)? {
            return Err(Error::Invalid("cannot move a directory below itself"));
        }
        if flags & RENAME_EXCHANGE != 0 {
            let dst = dst.ok_or(Error::NotFound)?;
            let dst_is_dir = self.get(dst.ino)?.is_dir();
            if dst_is_dir && newparent != parent && self.is_under(parent, dst.ino)? {
                return Err(Error::Invalid("cannot move a directory below itself"));
            }
            return self.exchange(parent, name, src, newparent, newname, dst);
        }
        if let Some(dst) = dst {
            if flags & RENAME_NOREPLACE != 0 {
                return Err(Error::Exists);
            }
            if dst.ino == src.ino {
                return Ok(());
            }
            self.remove_target(newparent, newname, dst.ino, src_is_dir)?;
        }
        self.move_entry(
            parent, name, newparent, newname, src.ino, src.kind, src_is_dir,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn move_entry(
        &mut self,
        parent: Ino,
        name: &[u8],
        newparent: Ino,
        newname: &[u8],
        ino: Ino,
        kind: u8,
        is_dir: bool,
    ) -> Result<()> {
        let now = Time::now();
        let mut d = self.dir(parent)?;
        dir::remove(&mut self.store, &mut d, name)?;
        if is_dir && parent != newparent {
            d.nlink = d.nlink.saturating_sub(1);
        }
        d.mtime = now;
        d.ctime = now;
        self.put(parent, &d)?;
        let mut nd = self.dir(newparent)?;
        dir::insert(&mut self.store, &mut nd, newname, ino, kind)?;
        if is_dir && parent != newparent {
            nd.nlink = nd.nlink.saturating_add(1);
        }
        nd.mtime = now;
        nd.ctime = now;
        self.put(newparent, &nd)?;
        let mut i = self.get(ino)?;
        i.ctime = now;
        if is_dir {
            i.parent = newparent.0;
        }
        self.put(ino, &i)
    }

    fn exchange(
        &mut self,
        parent: Ino,
        name: &[u8],
        a: dir::Entry,
        newparent: Ino,
        newname: &[u8],
        b: dir::Entry,
    ) -> Result<()> {
        if a.ino == b.ino {
            return Ok(());
        }
        let now = Time::now();
        let a_dir = self.get(a.ino)?.is_dir();
        let b_dir = self.get(b.ino)?.is_dir();
        let mut d = self.dir(parent)?;
        dir::remove(&mut self.store, &mut d, name)?;
        dir::insert(&mut self.store, &mut d, name, b.ino, b.kind)?;
        if parent != newparent {
            d.nlink = d
                .nlink
                .saturating_add(u32::from(b_dir))
                .saturating_sub(u32::from(a_dir));
        }
        d.mtime = now;
        d.ctime = now;
        self.put(parent, &d)?;
        let mut nd = self.dir(newparent)?;
        dir::remove(&mut self.store, &mut nd, newname)?;
        dir::insert(&mut self.store, &mut nd, newname, a.ino, a.kind)?;
        if parent != newparent {
            nd.nlink = nd
                .nlink
                .saturating_add(u32::from(a_dir))
                .saturating_sub(u32::from(b_dir));
        }
        nd.mtime = now;
        nd.ctime = now;
        self.put(newparent, &nd)?;
        for (ino, p, is_dir) in [(a.ino, newparent, a_dir), (b.ino, parent, b_dir)] {
            let mut i = self.get(ino)?;
            i.ctime = now;
            if is_dir {
                i.parent = p.0;
            }
            self.put(ino, &i)?;
        }
        Ok(())
    }

    /// Lists `ino` from readdir offset `off`: "." at 0, ".." at 1, then entries in key
    /// order, each with the offset of the entry after it. `f` returns true when full.
    pub fn readdir(&mut self, ino: Ino, off: u64, f: &mut DirSink<'_>) -> Result<()> {
        let d = self.dir_peek(ino)?;
        if d.nlink == 0 {
            // Removed while open: nothing is left in it, not even "." and "..".
            return Ok(());
        }
        let dt = kind_byte(libc::S_IFDIR);
        if off == 0 && f(ino, 1, dt, b".") {
            return Ok(());
        }
        if off <= 1 && f(Ino(d.parent), 2, dt, b"..") {
            return Ok(());
        }
        let after = off.checked_sub(3);
        dir::for_each(&mut self.store, &d, after, &mut |e| {
            f(e.ino, e.key + 3, e.kind, &e.name)
        })
    }
}
