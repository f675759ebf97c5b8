//! Reads and writes of file data, each split in steps so that the bytes can move between
//! the caller and the store without the filesystem lock: a plan made under the lock (which
//! pages), the copies (`DataIo`, or the store itself under the lock), and for a write a
//! finish under the lock that maps the fresh pages and updates size and times.
//!
//! While a plan's bytes move, the caller must keep away every operation that shares,
//! frees for reuse or commits pages (the adapter's gate does); other reads and writes may
//! run. Fresh pages are mapped only once their bytes are written, so a reader never sees
//! a page before its content.

use super::MAX_FILE_SIZE;
use super::data::{atime_due, check_regular, pieces};
use super::fs::Fs;
use super::inode::Time;
use crate::error::{Error, Result};
use crate::ids::{Ino, PageNo};
use crate::page::PAGE_SIZE;

/// Where the bytes of a read come from.
#[derive(Debug, Default)]
pub struct ReadPlan {
    len: usize,
    /// (store byte offset, or `None` for zeros; first byte in the buffer; length).
    runs: Vec<(Option<u64>, usize, usize)>,
    /// The bytes themselves, for a file kept inline (then there are no runs).
    inline: Option<Vec<u8>>,
}

impl ReadPlan {
    /// Bytes the read returns.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True for a read at or past the end of the file.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Fills a buffer, reading each run with `read(store offset, bytes)`.
    pub fn execute(&self, mut read: impl FnMut(u64, &mut [u8]) -> Result<()>) -> Result<Vec<u8>> {
        if let Some(d) = &self.inline {
            return Ok(d.clone());
        }
        let mut out = vec![0u8; self.len];
        for &(from, at, n) in &self.runs {
            if let Some(off) = from {
                read(off, &mut out[at..at + n])?;
            }
        }
        Ok(out)
    }

    /// Adds `n` bytes from store offset `from` (zeros for `None`), merging with the run
    /// before when both lie back to back.
    fn push(&mut self, from: Option<u64>, n: usize) {
        let at = self.len;
        self.len += n;
        // Every piece is pushed in order, so the last run always ends at `at`.
        if let Some((prev, _, pn)) = self.runs.last_mut() {
            let follows = match (*prev, from) {
                (None, None) => true,
                (Some(p), Some(f)) => p + *pn as u64 == f,
                _ => false,
            };
            if follows {
                *pn += n;
                return;
            }
        }
        self.runs.push((from, at, n));
    }
}

/// A write in flight: whole pages to fill, then map.
#[derive(Debug)]
pub struct WritePlan {
    ino: Ino,
    off: u64,
    /// Bytes of the caller's data the plan covers, from its start.
    len: usize,
    /// (store byte offset, first byte in the data, length): pages back to back.
    runs: Vec<(u64, usize, usize)>,
    /// Fresh pages to map once written: (index in the file, page).
    fresh: Vec<(u64, PageNo)>,
    /// Why the plan stops short of the whole data (ENOSPC half way, say).
    failed: Option<Error>,
    /// The file grows: the finish must set its size.
    grows: bool,
    /// The finish sets mtime and ctime.
    stamp: bool,
}

/// How to write.
#[derive(Debug, Clone, Copy, Default)]
pub struct WriteOpts {
    /// The kernel asks for set-user-ID and set-group-ID to go (FUSE_WRITE_KILL_SUIDGID:
    /// a caller without CAP_FSETID).
    pub kill_suid: bool,
    /// Set mtime and ctime. Off under the kernel's writeback cache, which keeps the
    /// times itself and sends them with a SETATTR when it writes the inode back.
    pub stamp_times: bool,
}

impl WritePlan {
    /// The copies to make: (store byte offset, range of the data).
    pub fn runs(&self) -> impl Iterator<Item = (u64, std::ops::Range<usize>)> + '_ {
        self.runs.iter().map(|&(o, at, n)| (o, at..at + n))
    }

    /// Bytes the plan writes.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when the plan writes nothing (the data was empty).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// False when the finish has nothing to do: every page was written in place, the
    /// file does not grow and the times are the kernel's. Such a write takes the lock once.
    pub fn needs_finish(&self) -> bool {
        !self.fresh.is_empty() || self.grows || self.stamp
    }

    fn push_run(&mut self, dev_off: u64, at: usize) {
        if let Some((o, a, n)) = self.runs.last_mut()
            && *o + *n as u64 == dev_off
            && *a + *n == at
        {
            *n += PAGE_SIZE;
            return;
        }
        self.runs.push((dev_off, at, PAGE_SIZE));
    }
}

/// Files smaller than this are not worth a prefetch.
const PREFETCH_MIN: u64 = 16 << 20;
/// At most this many map leaves (16 MiB of metadata, 8 GiB of file) are prefetched.
const PREFETCH_LEAVES: usize = 4096;

impl Fs {
    /// On open: starts reading the metadata the file's reads (its map leaves) and, when
    /// `for_write`, its in-place writes (the group headers holding its pages' reference
    /// counts) will need, all at once in the background, so that a first pass over a file
    /// whose metadata is cold does not wait for each page in turn under the lock.
    pub fn prefetch(&mut self, ino: Ino, for_write: bool) -> Result<()> {
        let i = self.peek(ino)?;
        if !i.is_file() || i.size < PREFETCH_MIN {
            return Ok(());
        }
        let Some(leaves) = i.map.leaves(&mut self.store, PREFETCH_LEAVES)? else {
            return Ok(());
        };
        for &l in &leaves {
            self.store.will_need(l);
        }
        // Finding the group headers means reading the leaves now (they are on their way):
        // only for files of up to 2 GiB, so an open never holds the lock for long.
        if for_write && leaves.len() <= PREFETCH_LEAVES / 4 {
            let mut groups = std::collections::BTreeSet::new();
            for &l in &leaves {
                for p in crate::object::MapRoot::leaf_pages(&mut self.store, l)? {
                    groups.insert(crate::store::layout::group_of(p));
                }
            }
            for g in groups {
                self.store.will_need(crate::store::layout::group_header(g));
            }
        }
        Ok(())
    }

    /// Plans a read of up to `size` bytes at `off` (and updates atime, by the mount's rule).
    pub fn plan_read(&mut self, ino: Ino, off: u64, size: u32) -> Result<ReadPlan> {
        let mut i = check_regular(self.peek(ino)?)?;
        let mut plan = ReadPlan::default();
        if off >= i.size {
            return Ok(plan);
        }
        let len = (size as u64).min(i.size - off);
        if let Some(d) = &i.inline {
            let a = (off as usize).min(d.len());
            let b = (off + len).min(d.len() as u64) as usize;
            plan.inline = Some(d[a..b].to_vec());
            plan.len = b - a;
        }
        // An inline file has no pages: the plan carries its bytes (above).
        let paged = if i.is_inline() { 0 } else { len };
        for (idx, in_page, n) in pieces(off, paged) {
            let p = i.map.get(&mut self.store, idx)?;
            let from = if p.is_zero() {
                None
            } else {
                Some(self.store.data_offset(p, in_page, n)?)
            };
            plan.push(from, n);
        }
        let now = Time::now();
        if atime_due(self.atime_mode(), &i, now) && self.check_view_writable().is_ok() {
            i.atime = now;
            self.put(ino, &i)?;
        }
        Ok(plan)
    }

    /// Makes a read plan's copies through the store (under the lock).
    pub fn read_planned(&self, plan: &ReadPlan) -> Result<Vec<u8>> {
        plan.execute(|o, b| self.store.read_at(o, b))
    }

    /// Reads up to `size` bytes at `off`.
    pub fn read(&mut self, ino: Ino, off: u64, size: u32) -> Result<Vec<u8>> {
        let plan = self.plan_read(ino, off, size)?;
        self.read_planned(&plan)
    }

    /// Plans a write of `data` at `off`. Partial pages are written at once (they need the
    /// old bytes); whole pages get a target each: the page itself when it may be written
    /// in place, else a fresh page, mapped by `finish_write`.
    pub fn plan_write(
        &mut self,
        ino: Ino,
        off: u64,
        data: &[u8],
        opts: WriteOpts,
    ) -> Result<WritePlan> {
        let mut i = self.regular(ino)?;
        if i.xattr_len > 0 {
            self.kill_capability(ino)?;
            i = self.regular(ino)?;
        }
        let before = (i.map, i.mode);
        if opts.kill_suid {
            super::fs::kill_suid(&mut i);
        }
        let end = off.checked_add(data.len() as u64).ok_or(Error::TooBig)?;
        if end > MAX_FILE_SIZE {
            return Err(Error::TooBig);
        }
        if !data.is_empty() {
            if self.fits_inline(&i, end.max(i.size)) {
                return self.write_inline(ino, i, off, data, opts);
            }
            // Past the inline capacity the bytes move to a page, then the page path goes on.
            self.uninline(&mut i)?;
        }
        let mut plan = WritePlan {
            ino,
            off,
            len: 0,
            runs: Vec::new(),
            fresh: Vec::new(),
            failed: None,
            grows: end > i.size,
            stamp: opts.stamp_times,
        };
        for (idx, in_page, n) in pieces(off, data.len() as u64) {
            let at = plan.len;
            let r = if n == PAGE_SIZE {
                self.plan_page(&mut i.map, idx, at, &mut plan)
            } else {
                i.map
                    .write_data(&mut self.store, idx, in_page, &data[at..at + n])
            };
            if let Err(e) = r {
                if plan.len == 0 {
                    return Err(e);
                }
                plan.failed = Some(e);
                break;
            }
            plan.len += n;
        }
        // The map may have grown, or had its path to the pages made exclusive.
        if (i.map, i.mode) != before {
            self.put(ino, &i)?;
        }
        Ok(plan)
    }

    /// A write to a file kept inline: done here, under the lock (the record is all there
    /// is to change), so the plan has no copies and no finish.
    fn write_inline(
        &mut self,
        ino: Ino,
        mut i: super::Inode,
        off: u64,
        data: &[u8],
        opts: WriteOpts,
    ) -> Result<WritePlan> {
        let end = off + data.len() as u64;
        let size = end.max(i.size);
        Self::resize_inline(&mut i, size);
        if let Some(d) = i.inline.as_mut() {
            d[off as usize..end as usize].copy_from_slice(data);
        }
        if opts.stamp_times {
            let now = Time::now();
            i.mtime = now;
            i.ctime = now;
        }
        self.put(ino, &i)?;
        Ok(WritePlan {
            ino,
            off,
            len: data.len(),
            runs: Vec::new(),
            fresh: Vec::new(),
            failed: None,
            grows: false,
            stamp: false,
        })
    }

    fn plan_page(
        &mut self,
        map: &mut crate::object::MapRoot,
        idx: u64,
        at: usize,
        plan: &mut WritePlan,
    ) -> Result<()> {
        let target = match map.overwrite_in_place(&mut self.store, idx)? {
            Some(p) => p,
            None => {
                let q = self.store.alloc_data()?;
                plan.fresh.push((idx, q));
                q
            }
        };
        let dev_off = self.store.data_offset(target, 0, PAGE_SIZE)?;
        plan.push_run(dev_off, at);
        Ok(())
    }

    /// Makes a plan's copies through the store (under the lock).
    pub fn write_runs(&mut self, plan: &WritePlan, data: &[u8]) -> Result<()> {
        for (o, r) in plan.runs() {
            self.store.write_at(o, &data[r])?;
        }
        Ok(())
    }

    /// Ends a write whose copies returned `io`: maps the fresh pages and sets size and
    /// times, or, when the copies failed, gives the fresh pages back. The outer result is
    /// for this step's own changes (which a failure undoes); the inner one is the write's
    /// answer: the bytes written, or why none were.
    pub fn finish_write(&mut self, plan: WritePlan, io: Result<()>) -> Result<Result<usize>> {
        if let Err(e) = io {
            for &(_, p) in &plan.fresh {
                self.store.decref(p)?;
            }
            return Ok(Err(e));
        }
        let mut i = self.regular(plan.ino)?;
        for &(idx, p) in &plan.fresh {
            i.map.set(&mut self.store, idx, p)?;
        }
        if plan.len == 0 {
            // An empty write (a plan whose first page fails is an error, never a plan)
            // changes nothing, not even the size.
            return Ok(Ok(0));
        }
        // A partial write (say ENOSPC half way) reports what made it, like write(2).
        i.size = i.size.max(plan.off + plan.len as u64);
        if plan.stamp {
            let now = Time::now();
            i.mtime = now;
            i.ctime = now;
        }
        self.put(plan.ino, &i)?;
        Ok(Ok(plan.len))
    }

    /// Writes `data` at `off`; returns the bytes written.
    pub fn write(&mut self, ino: Ino, off: u64, data: &[u8]) -> Result<usize> {
        let opts = WriteOpts {
            kill_suid: false,
            stamp_times: true,
        };
        let plan = self.plan_write(ino, off, data, opts)?;
        let io = self.write_runs(&plan, data);
        self.finish_write(plan, io)?
    }
}
