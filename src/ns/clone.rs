//! Clones: a whole file (one reference on its map's root), a page-aligned range (shared
//! subtrees where the offsets agree, pages elsewhere), a directory tree (new inodes whose
//! maps share the source's), all in one operation so the destination appears complete or
//! not at all. The caller's rights are checked here: an inode number is not a capability.

use super::dir;
use super::fs::{Fs, kind_byte};
use super::inode::{Inode, Time};
use super::perm::{Cred, R, W, X};
use crate::error::{Error, Result};
use crate::ids::Ino;
use crate::object::MapRoot;
use crate::page::PAGE_SIZE;
use std::collections::{HashMap, HashSet};

const PS: u64 = PAGE_SIZE as u64;

/// What changed behind the kernel's back, for the adapter to invalidate once unlocked.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Invalidate {
    /// Directory entries replaced: (parent, name).
    pub entries: Vec<(Ino, Vec<u8>)>,
    /// File ranges rewritten: (inode, offset, length).
    pub ranges: Vec<(Ino, u64, u64)>,
    /// Files that grew: (inode, offset, the bytes there up to the new end). With the
    /// writeback cache the kernel keeps its own file size and takes a new one only from
    /// such bytes pushed into its cache.
    pub grown: Vec<(Ino, u64, Vec<u8>)>,
}

/// How to clone.
#[derive(Debug, Clone, Copy, Default)]
pub struct CloneOpts {
    /// Replace an existing destination (a file, or an empty directory for a tree).
    pub force: bool,
    /// Clone a directory tree.
    pub recursive: bool,
    /// The caller's umask, for the new file's mode.
    pub umask: u32,
}

impl Fs {
    /// Resolves `path` (relative to the root) as `cred` would: search permission on every
    /// directory on the way. `..` follows the parent pointer.
    pub fn resolve(&mut self, cred: &Cred, path: &[u8]) -> Result<Ino> {
        let mut cur = Ino::ROOT;
        for comp in path
            .split(|b| *b == b'/')
            .filter(|c| !c.is_empty() && *c != b".")
        {
            let d = self.get(cur)?;
            if !d.is_dir() {
                return Err(Error::NotDir);
            }
            if !cred.may(&d, X) {
                return Err(Error::Access);
            }
            cur = match comp {
                b".." => Ino(d.parent),
                _ => {
                    dir::lookup(&mut self.store, &d, comp)?
                        .ok_or(Error::NotFound)?
                        .ino
                }
            };
        }
        Ok(cur)
    }

    /// Resolves the source of a clone and checks it is the inode the caller stat'ed.
    fn clone_source(&mut self, cred: &Cred, path: &[u8], ino: Ino) -> Result<(Ino, Inode)> {
        let src = self.resolve(cred, path)?;
        if src != ino {
            return Err(Error::NotFound);
        }
        Ok((src, self.get(src)?))
    }

    /// Checks that `cred` may create `name` in `parent`; returns what is there now.
    fn clone_target(
        &mut self,
        cred: &Cred,
        parent: Ino,
        name: &[u8],
        force: bool,
    ) -> Result<Option<dir::Entry>> {
        dir::check_name(name)?;
        let d = self.get(parent)?;
        if !d.is_dir() {
            return Err(Error::NotDir);
        }
        if !cred.may(&d, W | X) {
            return Err(Error::Access);
        }
        let old = dir::lookup(&mut self.store, &d, name)?;
        if let Some(e) = &old {
            if !force {
                return Err(Error::Exists);
            }
            let t = self.get(e.ino)?;
            let sticky = d.mode & libc::S_ISVTX != 0;
            if sticky && cred.uid != 0 && cred.uid != t.uid && cred.uid != d.uid {
                return Err(Error::NotPermitted);
            }
        }
        Ok(old)
    }

    /// Links new inode `ino` as `parent/name`, replacing `old` if given.
    fn place(
        &mut self,
        parent: Ino,
        name: &[u8],
        ino: Ino,
        mode: u32,
        old: Option<dir::Entry>,
        inv: &mut Invalidate,
    ) -> Result<()> {
        let is_dir = mode & libc::S_IFMT == libc::S_IFDIR;
        if let Some(e) = old {
            self.remove_target(parent, name, e.ino, is_dir)?;
            inv.entries.push((parent, name.to_vec()));
        }
        let mut d = self.get(parent)?;
        dir::insert(&mut self.store, &mut d, name, ino, kind_byte(mode))?;
        if is_dir {
            d.nlink += 1;
        }
        let now = Time::now();
        d.mtime = now;
        d.ctime = now;
        self.put(parent, &d)
    }

    /// `cowfs clone SRC DST`: a new file `parent/name` sharing every page of the file at
    /// `src_path`; with `recursive`, a directory tree.
    pub fn clone_path(
        &mut self,
        cred: &Cred,
        src_path: &[u8],
        src_ino: Ino,
        parent: Ino,
        name: &[u8],
        opts: CloneOpts,
    ) -> Result<Invalidate> {
        let (src, si) = self.clone_source(cred, src_path, src_ino)?;
        if si.is_dir() {
            if !opts.recursive {
                return Err(Error::IsDir);
            }
            return self.clone_tree(cred, src, parent, name, opts);
        }
        if !si.is_file() {
            return Err(Error::Invalid(
                "only regular files and directories can be cloned",
            ));
        }
        if !cred.may(&si, R) {
            return Err(Error::Access);
        }
        let old = self.clone_target(cred, parent, name, opts.force)?;
        if old.as_ref().is_some_and(|e| e.ino == src) {
            return Ok(Invalidate::default());
        }
        let now = Time::now();
        let mut ni = Inode {
            mode: libc::S_IFREG | (si.mode & 0o777 & !opts.umask),
            uid: cred.uid,
            gid: self.new_gid(cred, parent)?,
            nlink: 1,
            size: si.size,
            atime: now,
            mtime: now,
            ctime: now,
            crtime: now,
            parent: parent.0,
            ..Default::default()
        };
        ni.map = si.map.share(&mut self.store)?;
        // Inline bytes are copied with the record (at most a few hundred of them).
        ni.inline = si.inline.clone();
        let ino = self.alloc_ino()?;
        self.put(ino, &ni)?;
        let mut inv = Invalidate::default();
        self.place(parent, name, ino, ni.mode, old, &mut inv)?;
        Ok(inv)
    }

    fn new_gid(&mut self, cred: &Cred, parent: Ino) -> Result<u32> {
        let d = self.get(parent)?;
        Ok(if d.mode & libc::S_ISGID != 0 {
            d.gid
        } else {
            cred.gid
        })
    }

    fn clone_tree(
        &mut self,
        cred: &Cred,
        src: Ino,
        parent: Ino,
        name: &[u8],
        opts: CloneOpts,
    ) -> Result<Invalidate> {
        if self.is_under(parent, src)? {
            return Err(Error::Invalid("destination inside the source"));
        }
        let old = self.clone_target(cred, parent, name, opts.force)?;
        let top = self.copy_tree(cred, src, parent)?;
        let mut inv = Invalidate::default();
        let mode = self.get(top)?.mode;
        self.place(parent, name, top, mode, old, &mut inv)?;
        Ok(inv)
    }

    /// Copies the tree at directory `src` (sharing every map) as a new directory whose
    /// parent will be `new_parent`; returns its number. A directory at a time from an
    /// explicit stack, never recursion: a user may nest directories as deep as they like.
    fn copy_tree(&mut self, cred: &Cred, src: Ino, new_parent: Ino) -> Result<Ino> {
        let mut links = HashMap::new();
        let (top, _) = self.copy_node(cred, src, new_parent, &mut links)?;
        // Each level: the copy being filled, and the source entries still to copy into it.
        let mut stack = vec![(top, self.entries_of(src)?.into_iter())];
        // Source directories copied: one met again is linked twice (a damaged store), and
        // copying it again would never end.
        let mut dirs = HashSet::from([src]);
        while let Some((into, rest)) = stack.last_mut() {
            let into = *into;
            let Some(e) = rest.next() else {
                stack.pop();
                continue;
            };
            let (child, is_dir) = self.copy_node(cred, e.ino, into, &mut links)?;
            if is_dir && !dirs.insert(e.ino) {
                return Err(Error::corrupt(
                    0,
                    format!("directory {} is linked twice", e.ino.0),
                ));
            }
            let mut d = self.get(into)?;
            dir::insert(&mut self.store, &mut d, &e.name, child, e.kind)?;
            if is_dir {
                d.nlink += 1;
            }
            self.put(into, &d)?;
            if is_dir {
                stack.push((child, self.entries_of(e.ino)?.into_iter()));
            }
        }
        Ok(top)
    }

    /// The entries of directory `ino`.
    fn entries_of(&mut self, ino: Ino) -> Result<Vec<dir::Entry>> {
        let d = self.get(ino)?;
        let mut out = Vec::new();
        dir::for_each(&mut self.store, &d, None, &mut |e| {
            out.push(e.clone());
            false
        })?;
        Ok(out)
    }

    /// Makes a copy of inode `src` (sharing its maps; a directory comes out empty) for a
    /// tree clone; returns its number and whether it is a directory. A file with several
    /// links is copied once: its later links in the tree get the same copy.
    fn copy_node(
        &mut self,
        cred: &Cred,
        src: Ino,
        new_parent: Ino,
        links: &mut HashMap<Ino, Ino>,
    ) -> Result<(Ino, bool)> {
        if let Some(&done) = links.get(&src) {
            let mut i = self.get(done)?;
            i.nlink += 1;
            self.put(done, &i)?;
            return Ok((done, false));
        }
        let si = self.get(src)?;
        let need = if si.is_dir() { R | X } else { R };
        if !si.is_symlink() && !cred.may(&si, need) {
            return Err(Error::Access);
        }
        let devnode = matches!(si.file_type(), libc::S_IFCHR | libc::S_IFBLK);
        if devnode && cred.uid != 0 {
            return Err(Error::NotPermitted);
        }
        let mut ni = si.clone();
        ni.ctime = Time::now();
        if cred.uid != 0 {
            ni.uid = cred.uid;
            ni.gid = cred.gid;
            ni.mode &= !(libc::S_ISUID | libc::S_ISGID);
        }
        ni.xattr = si.xattr.share(&mut self.store)?;
        let ino = self.alloc_ino()?;
        if !si.is_dir() {
            ni.map = si.map.share(&mut self.store)?;
            ni.nlink = 1;
            self.put(ino, &ni)?;
            if si.nlink > 1 {
                links.insert(src, ino);
            }
            return Ok((ino, false));
        }
        ni.map = MapRoot::EMPTY;
        ni.entries = 0;
        ni.dir_bits = 0;
        ni.nlink = 2;
        ni.parent = new_parent.0;
        self.put(ino, &ni)?;
        Ok((ino, true))
    }

    /// FICLONERANGE semantics: shares `len` bytes (0: to the source's end) of the file at
    /// `src_path` at `src_off` into `dst` at `dst_off`. Offsets must be page-aligned, and so
    /// must the length unless the range ends at the source's end.
    #[allow(clippy::too_many_arguments)]
    pub fn clone_range_at(
        &mut self,
        cred: &Cred,
        src_path: &[u8],
        src_ino: Ino,
        dst: Ino,
        src_off: u64,
        dst_off: u64,
        len: u64,
    ) -> Result<Invalidate> {
        let (src, si) = self.clone_source(cred, src_path, src_ino)?;
        let mut di = self.get(dst)?;
        if si.is_dir() || di.is_dir() {
            return Err(Error::IsDir);
        }
        if !si.is_file() || !di.is_file() {
            return Err(Error::Invalid("only regular files can be cloned"));
        }
        if !cred.may(&si, R) {
            return Err(Error::Access);
        }
        let len = if len == 0 {
            si.size.saturating_sub(src_off)
        } else {
            len
        };
        let end = src_off
            .checked_add(len)
            .ok_or(Error::Invalid("range overflows"))?;
        let dst_end = dst_off
            .checked_add(len)
            .ok_or(Error::Invalid("range overflows"))?;
        if end > si.size || dst_end > super::MAX_FILE_SIZE {
            return Err(Error::Invalid("range past the end of the source"));
        }
        let tail = !len.is_multiple_of(PS);
        if !src_off.is_multiple_of(PS) || !dst_off.is_multiple_of(PS) || (tail && end != si.size) {
            return Err(Error::Invalid("offsets and length must be page-aligned"));
        }
        if tail && dst_end < di.size {
            return Err(Error::Invalid("unaligned end inside the destination"));
        }
        if src == dst && src_off < dst_end && dst_off < end {
            return Err(Error::Invalid("overlapping ranges in one file"));
        }
        let old_size = di.size;
        if let Some(d) = &si.inline {
            // No pages to share: the bytes are copied (a destination that grows past the
            // inline capacity moves to pages on the way).
            let a = (src_off as usize).min(d.len());
            let b = (end as usize).min(d.len());
            self.write(dst, dst_off, &d[a..b])?;
            di = self.get(dst)?;
        } else {
            self.uninline(&mut di)?;
            let from = if src == dst { None } else { Some(&si.map) };
            di.map.clone_range(
                &mut self.store,
                from,
                src_off / PS,
                dst_off / PS,
                len.div_ceil(PS),
            )?;
        }
        let now = Time::now();
        di.size = di.size.max(dst_end);
        di.mtime = now;
        di.ctime = now;
        self.put(dst, &di)?;
        let mut grown = Vec::new();
        if dst_end > old_size {
            let at = (dst_end - 1) / PS * PS;
            grown.push((dst, at, self.read(dst, at, (dst_end - at) as u32)?));
        }
        Ok(Invalidate {
            entries: Vec::new(),
            ranges: vec![(dst, dst_off, len)],
            grown,
        })
    }
}
