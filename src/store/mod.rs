//! The refcounted page store: allocation groups with per-page reference counts, a cache of
//! dirty metadata pages, and journaled commits. Data pages are read and written in place
//! through the backend (the mmap); metadata pages change only through commits.

mod alloc;
pub mod dir;
pub mod journal;
pub mod layout;
mod meta;
mod punch;
pub mod superblock;

pub use dir::{StoreDir, open_dir};
pub use layout::Kind;
pub use superblock::{ROOT_SLOTS, Superblock};

use crate::error::{Error, Result};
use crate::ids::{PageMap, PageNo, PageSet};
use crate::page::{Backend, PAGE_SIZE, PageBuf};
use journal::Journal;
use layout::PS;

/// Counters kept in memory for `cowfs stats` and the tests.
#[derive(Debug, Default, Clone)]
pub struct Counters {
    /// Pages copied because a write hit a shared page.
    pub cow_copies: u64,
    /// Writes that went in place into an exclusive page.
    pub in_place_writes: u64,
    /// Pages allocated.
    pub allocs: u64,
    /// Pages freed.
    pub frees: u64,
    /// Commits made.
    pub commits: u64,
}

/// What an operation changed, to put back if it fails half way (see `begin_op`).
struct Undo {
    /// Each dirty page touched: its dirty content before the operation (`None`: not dirty).
    pages: PageMap<Option<Box<PageBuf>>>,
    sb: Superblock,
    pending_len: usize,
    shrunk_added: Vec<PageNo>,
    counters: Counters,
}

/// The page store. Not thread-safe by itself: the namespace holds it under one lock.
pub struct Store {
    dev: Box<dyn Backend>,
    journal: Journal,
    sb: Superblock,
    dirty: PageMap<Box<PageBuf>>,
    verified: PageSet,
    pending: Vec<PageNo>,
    /// Pages whose count fell to 1 in the open transaction: the last commit may still see
    /// them shared, so they must not be written in place until the next commit.
    shrunk: PageSet,
    data_dirty: bool,
    counters: Counters,
    undo: Option<Undo>,
    /// Set when a commit failed half way: memory no longer matches the disk, so every
    /// further change is refused until the store is reopened (recovery then starts from
    /// the last good commit).
    failed: bool,
    /// Set while a commit's steps run: still set afterwards means a panic cut one short.
    in_commit: bool,
    /// Freed runs to give back to the host (`punch_freed`).
    punch: punch::PunchQueue,
}

impl Store {
    /// Creates an empty store on empty devices.
    pub fn create(dev: Box<dyn Backend>, journal: Box<dyn Backend>) -> Result<Store> {
        if !dev.is_empty() {
            return Err(Error::BadStore(
                "refusing to format a non-empty device".into(),
            ));
        }
        let mut s = Store::assemble(dev, Journal::new(journal), Superblock::new());
        s.grow(1)?;
        s.commit()?;
        Ok(s)
    }

    /// Opens an existing store, replaying the journal's last record if it is valid.
    pub fn open(dev: Box<dyn Backend>, journal: Box<dyn Backend>) -> Result<Store> {
        let mut dev = dev;
        let journal = Journal::new(journal);
        if dev.len() < PS {
            return Err(Error::BadStore(
                "store file is empty or truncated (no superblock)".into(),
            ));
        }
        let mut replayed = Vec::new();
        if let Some(rec) = journal.read()? {
            // Every image is checked before any is written home (`Record::check`).
            let rsb = rec.check()?;
            if dev.len() < rsb.total_pages() * PS {
                return Err(Error::BadStore(format!(
                    "store file is truncated: {} bytes, journal record {} says {}",
                    dev.len(),
                    rec.seq,
                    rsb.total_pages() * PS
                )));
            }
            log::info!(
                "replaying journal record {} ({} pages)",
                rec.seq,
                rec.pages.len()
            );
            for (p, buf) in &rec.pages {
                dev.write(p.0 * PS, &buf[..])?;
            }
            dev.sync()?;
            // The groups whose counts the record changed: the commit may have freed pages
            // there and the crash may have come before they were punched.
            replayed = rec
                .pages
                .iter()
                .filter(|(p, _)| p.0 % layout::GROUP_PAGES == 1)
                .map(|(p, _)| layout::group_of(*p))
                .collect();
        }
        let sb = Superblock::decode(&dev.view(0, PAGE_SIZE)?)?;
        // `decode` bounds `groups`, so this product cannot wrap.
        let want = sb.total_pages() * PS;
        if dev.len() < want {
            return Err(Error::BadStore(format!(
                "store file is truncated: {} bytes, superblock says {want}",
                dev.len()
            )));
        }
        if dev.len() > want {
            // A crash during growth left extra bytes that no commit references. Growth
            // writes its new group headers home only with the commit that records them, so
            // a valid header past the end means the superblock, not the file, is wrong.
            let next = layout::group_header(sb.groups);
            if dev.len() >= (next.0 + 1) * PS
                && layout::verify(next, &dev.view(next.0 * PS, PAGE_SIZE)?).is_ok()
            {
                return Err(Error::corrupt(
                    0,
                    format!(
                        "superblock says {} groups but the file holds a valid header for group {}",
                        sb.groups, sb.groups
                    ),
                ));
            }
            dev.set_len(want)?;
        }
        let mut s = Store::assemble(dev, journal, sb);
        s.queue_groups(replayed);
        Ok(s)
    }

    fn assemble(dev: Box<dyn Backend>, journal: Journal, sb: Superblock) -> Store {
        let punch = punch::PunchQueue::new(dev.can_punch());
        Store {
            punch,
            dev,
            journal,
            sb,
            dirty: PageMap::default(),
            verified: PageSet::default(),
            pending: Vec::new(),
            shrunk: PageSet::default(),
            data_dirty: false,
            counters: Counters::default(),
            undo: None,
            failed: false,
            in_commit: false,
        }
    }

    /// The superblock as of now (not yet committed changes included).
    pub fn superblock(&self) -> &Superblock {
        &self.sb
    }

    /// The store's format version: which layout its pages have (1..=`FORMAT_VERSION`).
    pub fn format_version(&self) -> u32 {
        self.sb.version
    }

    /// Makes a fresh store one of an older format version (durable at the next commit):
    /// `cowfs mkfs --format-version`, so tests can prove old stores still work. Only a
    /// store that holds nothing yet (no root slot set) may change its version.
    pub fn set_format_version(&mut self, v: u32) -> Result<()> {
        if !(1..=superblock::FORMAT_VERSION).contains(&v) {
            return Err(Error::Invalid("unknown format version"));
        }
        if self.sb.roots.iter().any(|&r| r != 0) {
            return Err(Error::Invalid("the store is not empty"));
        }
        self.sb.version = v;
        // The superblock changed: the next commit must write it.
        self.data_dirty = true;
        Ok(())
    }

    /// In-memory counters.
    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Root slot `i` for the upper layers.
    pub fn root(&self, i: usize) -> u64 {
        self.sb.roots[i]
    }

    /// Sets root slot `i`; durable at the next commit.
    pub fn set_root(&mut self, i: usize, v: u64) {
        self.sb.roots[i] = v;
    }

    /// Limits the store to `pages` pages (0: no limit).
    pub fn set_max_pages(&mut self, pages: u64) {
        self.sb.max_pages = pages;
    }

    /// Limits the store to `bytes` (0: no limit), refusing a limit below what it holds now,
    /// and commits the new limit.
    pub fn set_max_size(&mut self, bytes: u64) -> Result<()> {
        let pages = bytes / PS;
        if pages > 0 && pages < self.total_pages() {
            return Err(Error::BadStore(format!(
                "--max-size {bytes} is below the store's current size ({} bytes)",
                self.total_pages() * PS
            )));
        }
        if pages > 0 && pages < layout::GROUP_PAGES * 2 {
            return Err(Error::BadStore("--max-size must be at least 8 MiB".into()));
        }
        self.sb.max_pages = pages;
        self.data_dirty = true;
        self.commit()
    }

    /// Total pages in the store file.
    pub fn total_pages(&self) -> u64 {
        self.sb.groups * layout::GROUP_PAGES
    }

    /// Bytes of uncommitted metadata held in memory.
    pub fn dirty_bytes(&self) -> usize {
        self.dirty.len() * PAGE_SIZE
    }

    /// True when something changed since the last commit.
    pub fn has_changes(&self) -> bool {
        !self.dirty.is_empty() || self.data_dirty || !self.pending.is_empty()
    }

    /// Reads bytes of a data page; the zero page reads as zeros.
    pub fn read_data(&self, p: PageNo, off: usize, buf: &mut [u8]) -> Result<()> {
        if p.is_zero() {
            buf.fill(0);
            return Ok(());
        }
        self.check_data_page(p)?;
        self.dev.read(p.0 * PS + off as u64, buf)
    }

    /// Writes bytes into a data page in place (the caller made sure it is exclusive).
    pub fn write_data(&mut self, p: PageNo, off: usize, buf: &[u8]) -> Result<()> {
        self.check_writable()?;
        if p.is_zero() {
            return Err(Error::corrupt(0, "write to the zero page"));
        }
        self.check_data_page(p)?;
        self.data_dirty = true;
        self.dev.write(p.0 * PS + off as u64, buf)
    }

    /// The store byte offset of byte `off` of data page `p`, for `n` bytes inside it.
    pub fn data_offset(&self, p: PageNo, off: usize, n: usize) -> Result<u64> {
        if p.is_zero() {
            return Err(Error::corrupt(0, "the zero page has no bytes in the store"));
        }
        if off + n > PAGE_SIZE {
            return Err(Error::Invalid("access crosses a page boundary"));
        }
        self.check_data_page(p)?;
        Ok(p.0 * PS + off as u64)
    }

    /// Reads data bytes at a store offset from `data_offset` (runs of them may span pages).
    pub fn read_at(&self, off: u64, buf: &mut [u8]) -> Result<()> {
        self.dev.read(off, buf)
    }

    /// Writes data bytes at a store offset from `data_offset`.
    pub fn write_at(&mut self, off: u64, buf: &[u8]) -> Result<()> {
        self.check_writable()?;
        self.data_dirty = true;
        self.dev.write(off, buf)
    }

    /// Starts reading page `p` from disk in the background, unless it is dirty here.
    pub fn will_need(&self, p: PageNo) {
        if !p.is_zero() && p.0 < self.total_pages() && !self.dirty.contains_key(&p) {
            self.dev.will_need(p.0 * PS, PAGE_SIZE);
        }
    }

    /// A handle for data reads and writes that needs no lock (see `DataIo`), when the
    /// backend has one.
    pub fn data_io(&self) -> Option<crate::page::DataIo> {
        self.dev.data_io()
    }

    pub(super) fn check_data_page(&self, p: PageNo) -> Result<()> {
        if p.0 >= self.total_pages() || p.0 % layout::GROUP_PAGES == 1 {
            return Err(Error::corrupt(p.0, "data page number out of range"));
        }
        Ok(())
    }

    /// Starts an operation: until `end_op`, `rollback_op` can undo every metadata change,
    /// so an operation that fails half way (ENOSPC, say) leaves no trace.
    pub fn begin_op(&mut self) {
        self.undo = Some(Undo {
            pages: PageMap::default(),
            sb: self.sb.clone(),
            pending_len: self.pending.len(),
            shrunk_added: Vec::new(),
            counters: self.counters.clone(),
        });
    }

    /// Ends an operation, keeping its changes.
    pub fn end_op(&mut self) {
        self.undo = None;
    }

    /// Undoes the metadata changes of the current operation. Data written into fresh pages
    /// is simply forgotten with them; data written in place stays (as after a crash).
    pub fn rollback_op(&mut self) {
        let Some(u) = self.undo.take() else {
            return;
        };
        for (p, old) in u.pages {
            self.verified.remove(&p);
            match old {
                Some(b) => self.dirty.insert(p, b),
                None => self.dirty.remove(&p),
            };
        }
        self.sb = u.sb;
        self.pending.truncate(u.pending_len);
        for p in u.shrunk_added {
            self.shrunk.remove(&p);
        }
        self.counters = u.counters;
        log::debug!("operation rolled back");
    }

    /// Records a dirty page's state before the current operation first changes it.
    pub(super) fn note_undo(&mut self, p: PageNo) {
        if let Some(u) = self.undo.as_mut() {
            u.pages
                .entry(p)
                .or_insert_with(|| self.dirty.get(&p).cloned());
        }
    }

    /// True when `p`'s count fell to 1 since the last commit: the committed state may still
    /// reach it through another holder, so it must not be changed in place before the next
    /// commit (data pages are not journaled).
    pub fn shared_at_last_commit(&self, p: PageNo) -> bool {
        self.shrunk.contains(&p)
    }

    pub(super) fn note_shrunk(&mut self, p: PageNo) {
        if self.shrunk.insert(p)
            && let Some(u) = self.undo.as_mut()
        {
            u.shrunk_added.push(p);
        }
    }

    /// True after a commit failed half way: every change is refused until the store is
    /// reopened.
    pub fn failed(&self) -> bool {
        self.failed
    }

    /// Refuses changes after a failed commit.
    pub(super) fn check_writable(&self) -> Result<()> {
        if self.failed {
            return Err(Error::Failed);
        }
        Ok(())
    }

    /// True once a commit failed (or was cut short by a panic): the store refuses every
    /// change until it is reopened.
    pub fn is_failed(&self) -> bool {
        self.failed || self.in_commit
    }

    /// Refuses every further change until the store is reopened (commits keep failing).
    pub fn set_failed(&mut self) {
        self.failed = true;
    }

    /// Makes everything so far durable and atomic: see docs/FORMAT.md, "Commit protocol".
    pub fn commit(&mut self) -> Result<()> {
        self.check_writable()?;
        if !self.has_changes() {
            return Ok(());
        }
        if self.in_commit {
            // The last commit never ended (a panic, caught by the caller, cut it short):
            // memory may be ahead of the disk.
            self.failed = true;
            return Err(Error::Failed);
        }
        let in_op = self.undo.is_some();
        self.in_commit = true;
        let r = self.commit_steps();
        self.in_commit = false;
        if let Err(e) = r {
            log::error!("commit failed, refusing further changes: {e}");
            self.failed = true;
            return Err(e);
        }
        if in_op {
            // What is committed cannot be undone: the operation starts afresh from here.
            self.begin_op();
        }
        Ok(())
    }

    fn commit_steps(&mut self) -> Result<()> {
        let freed = self.release_pending()?;
        self.sb.seq += 1;
        let mut page0 = Box::new([0u8; PAGE_SIZE]);
        self.sb.encode(&mut page0[..]);
        self.dirty.insert(PageNo(0), page0);
        self.undo = None;
        for (p, buf) in self.dirty.iter_mut() {
            layout::seal(*p, &mut buf[..]);
        }
        // 1. New data pages and the previous commit's home writes reach the disk.
        self.dev.sync()?;
        // 2. The record is durable: from here on, the commit has happened.
        self.journal.write(self.sb.seq, &self.dirty)?;
        // 3. Home writes; made durable by step 1 of the next commit (or by close). The
        // dirty cache is emptied only once they all went: if one fails, memory still
        // shows the committed state (which the journal holds) while the store refuses
        // changes.
        for (p, buf) in &self.dirty {
            self.dev.write(p.0 * PS, &buf[..])?;
        }
        for (p, _) in self.dirty.drain() {
            self.verified.insert(p);
        }
        self.data_dirty = false;
        self.shrunk.clear();
        // Free on disk now (the record is durable): their bytes may go back to the host.
        self.queue_freed(freed);
        self.counters.commits += 1;
        log::debug!("commit {} done", self.sb.seq);
        Ok(())
    }

    /// Commits, makes the home writes durable and retires the journal record.
    pub fn close(&mut self) -> Result<()> {
        self.commit()?;
        // What the last commits freed goes back to the host before the journal record that
        // would have it punched again at the next open is retired.
        while self.punch_freed(u64::MAX)? {}
        self.dev.sync()?;
        self.journal.clear()
    }
}

#[cfg(test)]
mod tests;
