//! The filesystem object: the store plus in-memory state (open handles), and the inode
//! operations that are neither names nor data.

use super::inode::{Inode, Time};
use super::snap::SnapRec;
use super::{dir, itable, snap};
use crate::error::{Error, Result};
use crate::ids::{Fh, Ino, SnapId};
use crate::store::Store;
use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

/// Who is asking: the caller's credentials and umask.
#[derive(Debug, Clone, Copy)]
pub struct Ctx {
    pub uid: u32,
    pub gid: u32,
    pub umask: u32,
}

impl Ctx {
    /// The superuser, for tests and internal work.
    pub const ROOT: Ctx = Ctx {
        uid: 0,
        gid: 0,
        umask: 0o022,
    };
}

/// A time given to setattr.
#[derive(Debug, Clone, Copy)]
pub enum TimeSet {
    Now,
    At(Time),
}

impl TimeSet {
    fn resolve(self) -> Time {
        match self {
            TimeSet::Now => Time::now(),
            TimeSet::At(t) => t,
        }
    }
}

/// The fields setattr may change; `None` leaves a field alone.
#[derive(Debug, Clone, Default)]
pub struct SetAttr {
    pub mode: Option<u32>,
    pub uid: Option<u32>,
    pub gid: Option<u32>,
    pub size: Option<u64>,
    pub atime: Option<TimeSet>,
    pub mtime: Option<TimeSet>,
    pub ctime: Option<Time>,
}

/// Numbers for statfs, in 4 KiB blocks.
#[derive(Debug, Clone, Copy)]
pub struct StatFs {
    pub blocks: u64,
    pub bfree: u64,
    pub bavail: u64,
    pub files: u64,
    pub ffree: u64,
}

struct Handle {
    ino: Ino,
    flags: i32,
}

impl Handle {
    fn writable(&self) -> bool {
        self.flags & libc::O_ACCMODE != libc::O_RDONLY
    }
}

/// A change to the handle table, for the undo log.
enum HandleChange {
    Opened(Fh),
    Closed(Fh, Handle),
}

/// Takes one from `ino`'s count in `m`; true when it reached 0 (and left the map).
fn drop_one(m: &mut HashMap<Ino, u32>, ino: Ino) -> bool {
    let n = m.entry(ino).or_insert(1);
    *n = n.saturating_sub(1);
    if *n == 0 {
        m.remove(&ino);
        return true;
    }
    false
}

/// Open handles (`Fh -> kernel inode`), open counts per inode, and an undo log of the
/// current operation's changes (a log, not a copy: the table may be large, and
/// `begin_op` runs on every request).
struct Handles {
    by_fh: HashMap<Fh, Handle>,
    open: HashMap<Ino, u32>,
    /// Handles open for writing, per inode (see `Fs::has_writer`).
    writers: HashMap<Ino, u32>,
    next_fh: u64,
    /// The current operation's changes, oldest first (`None` outside an operation).
    log: Option<Vec<HandleChange>>,
}

impl Handles {
    fn new() -> Self {
        Handles {
            by_fh: HashMap::new(),
            open: HashMap::new(),
            writers: HashMap::new(),
            next_fh: 1,
            log: None,
        }
    }

    fn count(&mut self, h: &Handle) {
        *self.open.entry(h.ino).or_insert(0) += 1;
        if h.writable() {
            *self.writers.entry(h.ino).or_insert(0) += 1;
        }
    }

    /// Drops one open of `h`'s inode; true when that was the last.
    fn uncount(&mut self, h: &Handle) -> bool {
        if h.writable() {
            drop_one(&mut self.writers, h.ino);
        }
        drop_one(&mut self.open, h.ino)
    }

    fn add(&mut self, ino: Ino, flags: i32) -> Fh {
        let fh = Fh(self.next_fh);
        self.next_fh += 1;
        let h = Handle { ino, flags };
        self.count(&h);
        self.by_fh.insert(fh, h);
        self.note(HandleChange::Opened(fh));
        fh
    }

    /// Closes `fh`: its kernel inode, and true when that was the inode's last open.
    fn close(&mut self, fh: Fh) -> Result<(Ino, bool)> {
        let h = self.by_fh.remove(&fh).ok_or(Error::BadHandle)?;
        let ino = h.ino;
        let last = self.uncount(&h);
        self.note(HandleChange::Closed(fh, h));
        Ok((ino, last))
    }

    fn note(&mut self, c: HandleChange) {
        if let Some(l) = self.log.as_mut() {
            l.push(c);
        }
    }

    /// Starts logging changes afresh (an operation begins, or commits half way): what
    /// came before can no longer be undone.
    fn begin(&mut self) {
        self.log = Some(Vec::new());
    }

    /// Keeps the changes: the operation succeeded.
    fn end(&mut self) {
        self.log = None;
    }

    /// Undoes the changes since `begin`, newest first. Handle numbers are not handed out
    /// again (the kernel never saw the undone ones).
    fn undo(&mut self) {
        let mut log = self.log.take().unwrap_or_default();
        while let Some(c) = log.pop() {
            match c {
                HandleChange::Opened(fh) => {
                    if let Some(h) = self.by_fh.remove(&fh) {
                        self.uncount(&h);
                    }
                }
                HandleChange::Closed(fh, h) => {
                    self.count(&h);
                    self.by_fh.insert(fh, h);
                }
            }
        }
    }
}

/// What `begin_op` keeps of the in-memory state, to put back if the operation fails (the
/// store and the handle table keep undo logs of their own). Cheap: the snapshot list is
/// shared, and copied only by an operation that changes it (`Fs::snaps_mut`).
struct Saved {
    snaps: Arc<Vec<SnapRec>>,
    view: SnapId,
    generation: u64,
    /// The store's commit number then: a commit the operation made behind `Fs::commit`'s
    /// back shows as a different one.
    seq: u64,
}

/// The mounted filesystem's state. One lock around it serializes every operation.
pub struct Fs {
    pub(super) store: Store,
    handles: Handles,
    /// Kernel references per inode (FUSE lookup counts), dropped by `forget`.
    lookups: HashMap<Ino, u64>,
    host_dir: Option<PathBuf>,
    /// Snapshots and tables being freed (changed through `snaps_mut`).
    pub(super) snaps: Arc<Vec<SnapRec>>,
    /// The dedup runs in progress, one per caller and run id.
    pub(super) dedup: super::dedup::DedupRuns,
    /// The tree the current operation works in (see `enter`): inode numbers inside the
    /// namespace are local to it; handles and kernel references use kernel numbers.
    view: SnapId,
    /// Generation of the inode numbers given to the kernel: a rollback bumps it, so the
    /// kernel drops every inode it cached (their sizes included, which it owns with the
    /// writeback cache) instead of reusing one for the rolled-back file of that number.
    generation: u64,
    /// The state as the current operation found it (`None` outside an operation).
    saved: Option<Saved>,
    /// When reads update atime.
    atime: super::data::Atime,
}

/// Clears set-user-ID, and set-group-ID when group execution is on (without it the bit
/// means mandatory locking), as a write, truncate or chown does.
pub(super) fn kill_suid(i: &mut Inode) {
    i.mode &= !libc::S_ISUID;
    if i.mode & libc::S_IXGRP != 0 {
        i.mode &= !libc::S_ISGID;
    }
}

/// `S_IFMT` bits as the directory-entry kind byte.
pub(super) fn kind_byte(mode: u32) -> u8 {
    ((mode & libc::S_IFMT) >> 12) as u8
}

impl Fs {
    /// Opens the filesystem in `store`, making the root directory on a new store and
    /// freeing inodes that were unlinked while open when the last daemon stopped.
    pub fn new(store: Store, host_dir: Option<PathBuf>) -> Result<Fs> {
        let mut fs = Fs {
            store,
            handles: Handles::new(),
            generation: 0,
            lookups: HashMap::new(),
            host_dir,
            snaps: Arc::default(),
            dedup: Default::default(),
            view: SnapId::LIVE,
            saved: None,
            atime: Default::default(),
        };
        fs.snaps = Arc::new(snap::load(&mut fs.store)?);
        if matches!(itable::get(&mut fs.store, Ino::ROOT), Err(Error::NotFound)) {
            fs.format()?;
        }
        fs.reap_orphans()?;
        fs.reap_branch_orphans()?;
        fs.store.commit()?;
        Ok(fs)
    }

    fn format(&mut self) -> Result<()> {
        let now = Time::now();
        for ino in [Ino::ROOT, Ino::ORPHANS] {
            let d = Inode {
                mode: libc::S_IFDIR | if ino == Ino::ROOT { 0o755 } else { 0o700 },
                uid: crate::sys::geteuid(),
                nlink: 2,
                atime: now,
                mtime: now,
                ctime: now,
                crtime: now,
                parent: ino.0,
                ..Default::default()
            };
            itable::put(&mut self.store, ino, &d)?;
        }
        log::info!("formatted a new filesystem");
        Ok(())
    }

    fn reap_orphans(&mut self) -> Result<()> {
        let orphans = self.get(Ino::ORPHANS)?;
        let mut names = Vec::new();
        dir::for_each(&mut self.store, &orphans, None, &mut |e| {
            names.push((e.name.clone(), e.ino));
            false
        })?;
        for (name, ino) in names {
            if self.is_in_use(ino) {
                continue;
            }
            log::info!(
                "freeing inode {} unlinked while open before the last stop",
                ino.0
            );
            let mut o = self.get(Ino::ORPHANS)?;
            dir::remove(&mut self.store, &mut o, &name)?;
            self.put(Ino::ORPHANS, &o)?;
            if let Ok(inode) = self.get(ino) {
                self.free_inode(ino, inode)?;
            }
        }
        Ok(())
    }

    /// Frees the orphans a stopped daemon left in writable snapshots (branches), which
    /// are changed like the live tree and keep their own orphan directory.
    fn reap_branch_orphans(&mut self) -> Result<()> {
        let branches: Vec<SnapId> = self
            .snaps
            .iter()
            .filter(|r| r.writable && !r.dropping)
            .map(|r| r.id)
            .collect();
        for v in branches {
            self.enter(v)?;
            let r = self.reap_orphans();
            self.leave();
            r?;
        }
        Ok(())
    }

    /// Sets when reads update atime (the mount's `--atime`).
    pub fn set_atime_mode(&mut self, mode: super::data::Atime) {
        self.atime = mode;
    }

    /// When reads update atime.
    pub fn atime_mode(&self) -> super::data::Atime {
        self.atime
    }

    /// The store (for statistics and tools).
    pub fn store(&mut self) -> &mut Store {
        &mut self.store
    }

    /// Frees orphans that nothing uses (after a rollback brought back old ones).
    pub(super) fn reap_unused_orphans(&mut self) -> Result<()> {
        self.reap_orphans()
    }

    /// Makes the following calls work in the tree of snapshot `v` (`SnapId::LIVE`: the
    /// live tree), with inode numbers local to it. Fails with ESTALE when `v` is gone.
    pub fn enter(&mut self, v: SnapId) -> Result<()> {
        self.table_of(v)?;
        self.view = v;
        Ok(())
    }

    /// Back to the live tree.
    pub fn leave(&mut self) {
        self.view = SnapId::LIVE;
    }

    /// The current view.
    pub fn view(&self) -> SnapId {
        self.view
    }

    /// The kernel's number for local inode `ino` of the current view.
    pub fn kino(&self, ino: Ino) -> Ino {
        ino.in_view(self.view)
    }

    /// Fails with EROFS unless the current view may be written.
    /// Also after a failed commit: the whole store is read-only then.
    pub fn check_view_writable(&self) -> Result<()> {
        if self.store.is_failed() {
            return Err(Error::ReadOnly);
        }
        if self.view_writable(self.view) {
            Ok(())
        } else {
            Err(Error::ReadOnly)
        }
    }

    /// Reads an inode for changing it: when snapshots share the table, its page is made
    /// exclusive first, so that the maps it holds count their sharing right.
    /// In a read-only snapshot this fails with EROFS, before anything can change.
    pub(super) fn get(&mut self, ino: Ino) -> Result<Inode> {
        let v = self.view;
        self.check_view_writable()?;
        if self.tables_shared() {
            self.unshare_in(v, ino)?;
        }
        self.peek(ino)
    }

    /// Reads an inode that will not be changed.
    pub(super) fn peek(&mut self, ino: Ino) -> Result<Inode> {
        let t = self.table_of(self.view)?;
        itable::get_in(&mut self.store, &t, ino)
    }

    pub(super) fn put(&mut self, ino: Ino, inode: &Inode) -> Result<()> {
        self.check_view_writable()?;
        let v = self.view;
        let mut t = self.table_of(v)?;
        itable::put_in(&mut self.store, &mut t, ino, inode)?;
        self.set_table(v, t)
    }

    /// A fresh inode number in the current view.
    pub(super) fn alloc_ino(&mut self) -> Result<Ino> {
        self.check_view_writable()?;
        let v = self.view;
        let mut t = self.table_of(v)?;
        let ino = itable::alloc_in(&mut t);
        if ino.0 >= Ino::SNAPDIR.0 {
            return Err(Error::NoSpace);
        }
        self.set_table(v, t)?;
        Ok(ino)
    }

    /// The generation to give the kernel with an inode number (see the field).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// Makes every inode number the kernel holds stale (after a rollback).
    pub(super) fn bump_generation(&mut self) {
        self.generation += 1;
    }

    /// Kernel numbers of every inode the kernel may hold (to invalidate after a rollback).
    pub(super) fn known_inodes(&self) -> Vec<Ino> {
        let mut v: Vec<Ino> = self.lookups.keys().copied().collect();
        v.push(Ino::ROOT);
        v
    }

    /// Attributes of `ino`.
    pub fn getattr(&mut self, ino: Ino) -> Result<Inode> {
        if ino == Ino::ORPHANS {
            return Err(Error::NotFound);
        }
        self.peek(ino)
    }

    /// Pages holding data in local inode `ino` (for `st_blocks`). While a writer holds the
    /// file, every page up to its end counts: the kernel may keep data we have not seen,
    /// and `cp` takes a file whose blocks fall short of its size for sparse.
    pub fn data_pages(&mut self, ino: Ino, inode: &Inode) -> Result<u64> {
        let pop = inode.map.population(&mut self.store)?;
        if inode.is_file() && self.has_writer(ino) {
            return Ok(pop.max(inode.size.div_ceil(crate::page::PAGE_SIZE as u64)));
        }
        Ok(pop)
    }

    /// Changes attributes: mode, owner, size, times.
    pub fn setattr(&mut self, ctx: Ctx, ino: Ino, a: &SetAttr) -> Result<Inode> {
        if a.size.is_some() || a.uid.is_some() || a.gid.is_some() {
            self.kill_capability(ino)?;
        }
        let mut i = self.get(ino)?;
        let now = Time::now();
        if let Some(size) = a.size {
            if i.is_dir() {
                return Err(Error::IsDir);
            }
            if !i.is_file() {
                return Err(Error::Invalid("truncate of a special file"));
            }
            self.truncate(&mut i, size)?;
            // The kernel leaves this to us (FUSE_HANDLE_KILLPRIV_V2); only the superuser
            // (CAP_FSETID) keeps the bits.
            if ctx.uid != 0 && a.mode.is_none() {
                kill_suid(&mut i);
            }
            i.mtime = now;
            i.ctime = now;
        }
        if let Some(mode) = a.mode {
            i.mode = (i.mode & libc::S_IFMT) | (mode & 0o7777);
            i.ctime = now;
        }
        if a.uid.is_some() || a.gid.is_some() {
            i.uid = a.uid.unwrap_or(i.uid);
            i.gid = a.gid.unwrap_or(i.gid);
            // Linux (chown_common) clears them on every chown of a non-directory, whoever
            // asks and whether or not the owner changes.
            if !i.is_dir() && a.mode.is_none() {
                kill_suid(&mut i);
            }
            i.ctime = now;
        }
        if let Some(t) = a.atime {
            i.atime = t.resolve();
            i.ctime = now;
        }
        if let Some(t) = a.mtime {
            i.mtime = t.resolve();
            i.ctime = now;
        }
        if let Some(t) = a.ctime {
            i.ctime = t;
        }
        self.put(ino, &i)?;
        Ok(i)
    }

    /// Opens `ino` with open(2) `flags`; the handle keeps its data alive after an unlink.
    pub fn open(&mut self, ino: Ino, flags: i32) -> Result<Fh> {
        if ino == Ino::ORPHANS {
            return Err(Error::NotFound);
        }
        self.peek(ino)?;
        if flags & libc::O_ACCMODE != libc::O_RDONLY || flags & libc::O_TRUNC != 0 {
            self.check_view_writable()?;
        }
        let ino = self.kino(ino);
        Ok(self.handles.add(ino, flags))
    }

    /// Checks that handle `fh` is open on `ino` for writing (else EBADF).
    pub fn check_writable_handle(&self, fh: Fh, ino: Ino) -> Result<()> {
        match self.handles.by_fh.get(&fh) {
            Some(h) if h.ino == self.kino(ino) && h.flags & libc::O_ACCMODE != libc::O_RDONLY => {
                Ok(())
            }
            _ => Err(Error::BadHandle),
        }
    }

    /// True while a handle open for writing holds local inode `ino`: the kernel may then
    /// keep dirty pages of it that we have not seen (the writeback cache; a shared
    /// writable mapping keeps its handle open until unmapped). The kernel writes every
    /// dirty page back before it releases the last such handle.
    pub fn has_writer(&self, ino: Ino) -> bool {
        self.handles.writers.contains_key(&self.kino(ino))
    }

    /// The inode behind a handle (its kernel number).
    pub fn handle_ino(&self, fh: Fh) -> Result<Ino> {
        self.handles
            .by_fh
            .get(&fh)
            .map(|h| h.ino)
            .ok_or(Error::BadHandle)
    }

    /// Every open handle with its kernel inode, by handle number.
    pub fn open_handles(&self) -> Vec<(Fh, Ino)> {
        let mut v: Vec<(Fh, Ino)> = self
            .handles
            .by_fh
            .iter()
            .map(|(f, h)| (*f, h.ino))
            .collect();
        v.sort_by_key(|(f, _)| f.0);
        v
    }

    /// Runs `f` on local inode of kernel number `k`, in its view.
    fn in_view_of(&mut self, k: Ino, f: impl FnOnce(&mut Fs, Ino) -> Result<()>) -> Result<()> {
        let (v, ino) = k.split();
        let before = self.view;
        if self.enter(v).is_err() {
            return Ok(());
        }
        let r = f(self, ino);
        self.view = before;
        r
    }

    /// Closes a handle; frees an unlinked inode on its last close.
    pub fn release(&mut self, fh: Fh) -> Result<()> {
        if let Some(k) = self.close_handle(fh)? {
            self.free_unused(k)?;
        }
        Ok(())
    }

    /// The first half of `release`: closes a handle and gives the kernel number of its
    /// inode when that was its last handle. The adapter runs the two halves as two
    /// operations, because the kernel never sends a RELEASE again: a free that fails must
    /// not bring the handle back (the inode then stays an orphan, freed at the next mount).
    pub fn close_handle(&mut self, fh: Fh) -> Result<Option<Ino>> {
        let (ino, last) = self.handles.close(fh)?;
        Ok(last.then_some(ino))
    }

    /// Frees kernel inode `k` if no name, handle or kernel reference holds it any more.
    pub fn free_unused(&mut self, k: Ino) -> Result<()> {
        self.in_view_of(k, |fs, i| fs.free_if_unused(i))
    }

    /// Counts one more kernel reference to local inode `ino` of the current view. The
    /// adapter calls it for every entry a reply hands to the kernel (LOOKUP, CREATE, MKNOD,
    /// MKDIR, SYMLINK, LINK), as the last step of the request, so a failed request never
    /// counts one. The root is never forgotten by the kernel and never freed: not counted.
    pub fn remember(&mut self, ino: Ino) {
        let k = self.kino(ino);
        if k != Ino::ROOT {
            *self.lookups.entry(k).or_insert(0) += 1;
        }
    }

    /// The kernel dropped `n` references to kernel inode `ino`; frees it if it was
    /// unlinked and unused.
    pub fn forget(&mut self, ino: Ino, n: u64) -> Result<()> {
        let Some(c) = self.lookups.get_mut(&ino) else {
            return Ok(());
        };
        *c = c.saturating_sub(n);
        if *c == 0 {
            self.lookups.remove(&ino);
            self.free_unused(ino)?;
        }
        Ok(())
    }

    fn free_if_unused(&mut self, ino: Ino) -> Result<()> {
        if self.is_in_use(ino) || !self.view_writable(self.view) {
            return Ok(());
        }
        if let Ok(i) = self.get(ino)
            && i.nlink == 0
        {
            self.unorphan(ino)?;
            self.free_inode(ino, i)?;
        }
        Ok(())
    }

    /// True while a handle is open on `ino` or the kernel still references it.
    pub(super) fn is_in_use(&self, ino: Ino) -> bool {
        let k = self.kino(ino);
        self.handles.open.contains_key(&k) || self.lookups.contains_key(&k)
    }

    pub(super) fn orphan(&mut self, ino: Ino) -> Result<()> {
        let mut o = self.get(Ino::ORPHANS)?;
        dir::insert(
            &mut self.store,
            &mut o,
            ino.0.to_string().as_bytes(),
            ino,
            0,
        )?;
        self.put(Ino::ORPHANS, &o)
    }

    fn unorphan(&mut self, ino: Ino) -> Result<()> {
        let mut o = self.get(Ino::ORPHANS)?;
        dir::remove(&mut self.store, &mut o, ino.0.to_string().as_bytes())?;
        self.put(Ino::ORPHANS, &o)
    }

    /// Frees an inode and everything it holds.
    pub(super) fn free_inode(&mut self, ino: Ino, mut i: Inode) -> Result<()> {
        i.map.free(&mut self.store)?;
        i.xattr.free(&mut self.store)?;
        self.check_view_writable()?;
        let v = self.view;
        let mut t = self.table_of(v)?;
        itable::remove_in(&mut self.store, &mut t, ino)?;
        self.set_table(v, t)
    }

    /// Starts an all-or-nothing operation: until `end_op`, everything it changes can be
    /// put back, in the store (`Store::begin_op`) and in memory.
    pub fn begin_op(&mut self) {
        self.store.begin_op();
        self.save_point();
    }

    /// Keeps what a failed operation must put back of the in-memory state. Every field is
    /// named here, so a new one does not compile until it says how it is undone.
    fn save_point(&mut self) {
        let Fs {
            store,
            handles,
            snaps,
            view,
            generation,
            saved,
            // FUSE lookup counts are not undone here: they are to count only entries
            // whose reply went out (the lead's rework of `remember`).
            lookups: _,
            // Fixed at mount.
            host_dir: _,
            atime: _,
            // A hint: every candidate is re-checked before a merge, so a stale one is
            // skipped, never merged wrongly (see `ns::dedup`).
            dedup: _,
        } = self;
        handles.begin();
        *saved = Some(Saved {
            snaps: Arc::clone(snaps),
            view: *view,
            generation: *generation,
            seq: store.superblock().seq,
        });
    }

    /// Ends an operation: keep its changes if it succeeded, undo them if not (the store's
    /// pages and the in-memory state together).
    pub fn end_op(&mut self, ok: bool) {
        if ok {
            self.store.end_op();
            self.handles.end();
            self.saved = None;
        } else {
            self.store.rollback_op();
            self.restore();
        }
    }

    fn restore(&mut self) {
        self.handles.undo();
        let Some(s) = self.saved.take() else {
            return;
        };
        self.view = s.view;
        self.generation = s.generation;
        if self.store.superblock().seq == s.seq {
            self.snaps = s.snaps;
            return;
        }
        // The store failed half way through a commit, or committed without `Fs::commit`:
        // its list is the truth.
        if !self.store.failed() {
            log::warn!("an operation committed behind the namespace's back");
        }
        match snap::load(&mut self.store) {
            Ok(v) => self.snaps = Arc::new(v),
            Err(e) => log::error!("reloading the snapshot list: {e}"),
        }
    }

    /// The snapshot list for changing (copied first if `begin_op` still shares it).
    pub(super) fn snaps_mut(&mut self) -> &mut Vec<SnapRec> {
        Arc::make_mut(&mut self.snaps)
    }

    /// Commits. What is committed cannot be undone, so inside an operation this is also a
    /// save point: if the operation fails later, the store and the in-memory state go
    /// back to here, not to its start.
    pub(super) fn commit(&mut self) -> Result<()> {
        let seq = self.store.superblock().seq;
        self.store.commit()?;
        // A commit with nothing to write changes nothing: the store's undo still starts
        // at the operation's start, and so must ours.
        if self.saved.is_some() && self.store.superblock().seq != seq {
            self.save_point();
        }
        Ok(())
    }

    /// Makes everything so far durable.
    pub fn sync(&mut self) -> Result<()> {
        self.commit()
    }

    /// True when the uncommitted metadata has grown past `limit` bytes.
    pub fn over_commit_limit(&self, limit: usize) -> bool {
        self.store.dirty_bytes() > limit
    }

    /// A handle for data copies without the lock (see `ns::io`), when the store has one.
    pub fn data_io(&self) -> Option<crate::page::DataIo> {
        self.store.data_io()
    }

    /// The data handle when there is something to commit: the caller writes the dirty pages
    /// back through it without the lock before it commits (`DataIo::write_back`).
    pub fn write_back_handle(&self) -> Option<crate::page::DataIo> {
        if self.store.has_changes() {
            self.store.data_io()
        } else {
            None
        }
    }

    /// Commits when the uncommitted metadata grows past `limit` bytes.
    pub fn commit_if_over(&mut self, limit: usize) -> Result<()> {
        if self.store.dirty_bytes() > limit {
            self.commit()?;
        }
        Ok(())
    }

    /// Commits and closes the store cleanly.
    pub fn close(&mut self) -> Result<()> {
        self.store.close()
    }

    /// Space and inode numbers for statfs. `bavail` is what file data can really get
    /// (fallocate of that much succeeds); `bfree` also counts the reserve kept for unlink
    /// and truncate and the pages map nodes will take, as ext4's `bfree` counts the blocks
    /// reserved for root.
    pub fn statfs(&mut self) -> Result<StatFs> {
        let host = self
            .host_dir
            .as_ref()
            .and_then(|d| crate::sys::statvfs_avail(d).ok())
            .unwrap_or(0);
        let (free, avail) = self.store.free_for_data(host);
        let used = self.store.total_pages() - self.store.superblock().free_pages;
        let files = itable::inos_used(&self.store);
        Ok(StatFs {
            blocks: used + free,
            bfree: free,
            bavail: avail,
            files: files + (1 << 32),
            ffree: 1 << 32,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handle_undo_puts_back_opens_and_closes() {
        let mut h = Handles::new();
        let a = h.add(Ino(5), libc::O_RDONLY);
        let b = h.add(Ino(5), libc::O_RDWR);
        h.begin();
        let c = h.add(Ino(6), libc::O_RDONLY);
        assert_eq!(h.close(a).expect("close"), (Ino(5), false));
        assert_eq!(h.close(b).expect("close"), (Ino(5), true));
        assert!(!h.open.contains_key(&Ino(5)));
        h.undo();
        assert!(!h.by_fh.contains_key(&c), "the undone open is gone");
        assert!(!h.open.contains_key(&Ino(6)));
        assert_eq!(h.open.get(&Ino(5)), Some(&2), "both closes undone");
        assert!(h.by_fh.contains_key(&a) && h.by_fh.contains_key(&b));
        let d = h.add(Ino(6), libc::O_RDONLY);
        assert!(d.0 > c.0, "handle numbers are not reused");
        assert!(h.log.is_none(), "outside an operation nothing is logged");
    }
}
