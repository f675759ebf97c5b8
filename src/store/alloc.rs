//! Reference counts and page allocation. Each group of `GROUP_PAGES` pages has a header
//! page holding one u32 count per page; 0 is free. A page freed in the open transaction is
//! marked pending and becomes free only at the commit, so no page the last commit still
//! references is ever overwritten.

use super::Store;
use super::layout::{self, GROUP_PAGES, Kind, META_HEADER, PS, get32, put32};
use super::layout::{RC_MAX, RC_PENDING, RC_RESERVED};
use crate::error::{Error, Result};
use crate::ids::PageNo;
use crate::page::PAGE_SIZE;

const OFF_FREE: usize = 8;

impl Store {
    /// The reference count of page `p` (the zero page has none: 0).
    pub fn refcount(&mut self, p: PageNo) -> Result<u32> {
        if p.is_zero() {
            return Ok(0);
        }
        self.check_page(p)?;
        let g = layout::group_header(layout::group_of(p));
        self.with_meta(g, Kind::Group, |b| get32(b, layout::rc_offset(p)))
    }

    fn check_page(&self, p: PageNo) -> Result<()> {
        if p.0 >= self.total_pages() {
            return Err(Error::corrupt(p.0, "page number past the end of the store"));
        }
        Ok(())
    }

    fn set_refcount(&mut self, p: PageNo, v: u32) -> Result<()> {
        let g = layout::group_header(layout::group_of(p));
        let b = self.meta_mut(g, Kind::Group)?;
        let old = get32(b, layout::rc_offset(p));
        let free = get32(b, OFF_FREE);
        // Checked: a free count that disagrees with the counts is corruption, not a wrap.
        let free = match (old == 0, v == 0) {
            (true, false) => free.checked_sub(1),
            (false, true) => free.checked_add(1).filter(|f| *f < GROUP_PAGES as u32),
            _ => Some(free),
        }
        .ok_or_else(|| {
            Error::corrupt(
                g.0,
                format!("group free count {free} disagrees with its counts"),
            )
        })?;
        put32(b, layout::rc_offset(p), v);
        put32(b, OFF_FREE, free);
        let total = match (old == 0, v == 0) {
            (true, false) => self.sb.free_pages.checked_sub(1),
            (false, true) => self.sb.free_pages.checked_add(1),
            _ => Some(self.sb.free_pages),
        };
        self.sb.free_pages =
            total.ok_or_else(|| Error::corrupt(0, "free page count disagrees with the groups"))?;
        Ok(())
    }

    /// Checks a group header read from disk (after its checksum): the store's own pages
    /// (the header, and page 0 in group 0) are reserved, no count is pending (pending counts
    /// become 0 before a commit seals the header), and the free count is the number of
    /// zero counts. Errors name the header page.
    pub fn check_group_header(h: PageNo, b: &[u8]) -> Result<()> {
        let bad = |what: String| Err(Error::corrupt(h.0, what));
        if h.0 % GROUP_PAGES != 1 {
            return bad("a group header away from a group's header place".into());
        }
        let mut zeros = 0u32;
        for k in 0..GROUP_PAGES {
            let p = PageNo(h.0 - 1 + k);
            let rc = get32(b, META_HEADER + k as usize * 4);
            let reserved = p == h || p.is_zero();
            if reserved != (rc == RC_RESERVED) {
                return bad(format!("page {} has count {rc:#x}", p.0));
            }
            if rc == RC_PENDING {
                return bad(format!("page {} is pending on disk", p.0));
            }
            zeros += u32::from(rc == 0);
        }
        let free = get32(b, OFF_FREE);
        if free != zeros {
            return bad(format!("free count {free} but {zeros} counts are 0"));
        }
        if get32(b, OFF_FREE + 4) != 0 {
            return bad("reserved header bytes are not zero".into());
        }
        Ok(())
    }

    /// fsck's repair: rewrites every group header so each page's count is `refs[p]` (0 when
    /// absent), the group free counts and the superblock's free count follow, and nothing is
    /// pending. Headers that cannot be read are rebuilt. Returns the counts changed.
    pub fn rebuild_counts(&mut self, refs: &std::collections::HashMap<PageNo, u32>) -> Result<u64> {
        self.check_writable()?;
        let mut changed = 0;
        let mut free_total = 0u64;
        for g in 0..self.sb.groups {
            let h = layout::group_header(g);
            let want: Vec<u32> = (0..GROUP_PAGES)
                .map(|k| {
                    let p = PageNo(g * GROUP_PAGES + k);
                    if p.is_zero() || p == h {
                        RC_RESERVED
                    } else {
                        refs.get(&p).copied().unwrap_or(0)
                    }
                })
                .collect();
            let free = want.iter().filter(|v| **v == 0).count() as u32;
            free_total += free as u64;
            let readable = self.meta_mut(h, Kind::Group).is_ok();
            if !readable {
                self.note_undo(h);
                let mut b = Box::new([0u8; PAGE_SIZE]);
                layout::init_meta(&mut b[..], Kind::Group);
                self.dirty.insert(h, b);
                changed += GROUP_PAGES;
            }
            let b = self.meta_mut(h, Kind::Group)?;
            for (k, v) in want.iter().enumerate() {
                let off = META_HEADER + k * 4;
                if get32(b, off) != *v {
                    put32(b, off, *v);
                    changed += 1;
                }
            }
            put32(b, OFF_FREE, free);
        }
        self.sb.free_pages = free_total;
        self.pending.clear();
        self.shrunk.clear();
        Ok(changed)
    }

    /// Adds one reference to `p` (nothing for the zero page).
    pub fn incref(&mut self, p: PageNo) -> Result<()> {
        if p.is_zero() {
            return Ok(());
        }
        let rc = self.refcount(p)?;
        if rc == 0 || rc > RC_MAX {
            return Err(Error::corrupt(
                p.0,
                format!("reference to a page with count {rc:#x}"),
            ));
        }
        if rc == RC_MAX {
            return Err(Error::TooManyLinks);
        }
        self.set_refcount(p, rc + 1)
    }

    /// Drops one reference; returns true when that freed the page (pending until commit).
    pub fn decref(&mut self, p: PageNo) -> Result<bool> {
        if p.is_zero() {
            return Ok(false);
        }
        let rc = self.refcount(p)?;
        if rc == 0 || rc > RC_MAX {
            return Err(Error::corrupt(
                p.0,
                format!("dropping a page with count {rc:#x}"),
            ));
        }
        if rc > 1 {
            self.set_refcount(p, rc - 1)?;
            if rc == 2 {
                self.note_shrunk(p);
            }
            return Ok(false);
        }
        self.set_refcount(p, RC_PENDING)?;
        self.pending.push(p);
        self.forget_page(p);
        self.counters.frees += 1;
        Ok(true)
    }

    /// Turns this transaction's pending frees into free pages (called by commit), and
    /// returns them.
    pub(super) fn release_pending(&mut self) -> Result<Vec<PageNo>> {
        let pending = std::mem::take(&mut self.pending);
        for p in &pending {
            self.set_refcount(*p, 0)?;
            self.forget_page(*p);
        }
        Ok(pending)
    }

    /// Allocates one page with a count of 1. Its content is undefined until written (a
    /// punched page reads as zeros). Its blocks on the host are reserved, as metadata
    /// pages need: they reach their home only after the commit point.
    pub fn alloc(&mut self) -> Result<PageNo> {
        self.alloc_page(true)
    }

    /// `alloc`; `reserve`: give a punched page its blocks back now. Data pages do not need
    /// it: their first write is a `pwrite` of the whole page, which reports a full host
    /// disk as the write's own ENOSPC. (They also leave the page's hole mark alone: a mark
    /// that outlives the hole only costs a needless reservation later, while one cleared
    /// by an allocation that is then undone would hide a hole.)
    fn alloc_page(&mut self, reserve: bool) -> Result<PageNo> {
        self.check_writable()?;
        self.dev.check_alloc()?;
        if self.sb.free_pages == 0 {
            self.grow(self.grow_step())?;
        }
        let groups = self.sb.groups;
        let start = self.sb.cursor.min(self.total_pages().saturating_sub(1));
        let mut g = layout::group_of(PageNo(start));
        let mut from = start % GROUP_PAGES;
        for _ in 0..=groups {
            if let Some(p) = self.find_free_in(g, from)? {
                if reserve {
                    self.unpunch(p)?;
                }
                self.set_refcount(p, 1)?;
                self.sb.cursor = p.0 + 1;
                self.counters.allocs += 1;
                return Ok(p);
            }
            g = (g + 1) % groups;
            from = 0;
        }
        Err(Error::corrupt(
            0,
            "free page count says free, no group has a free page",
        ))
    }

    fn find_free_in(&mut self, g: u64, from: u64) -> Result<Option<PageNo>> {
        let h = layout::group_header(g);
        self.with_meta(h, Kind::Group, |b| {
            if get32(b, OFF_FREE) == 0 {
                return None;
            }
            (from..GROUP_PAGES)
                .find(|i| get32(b, META_HEADER + *i as usize * 4) == 0)
                .map(|i| PageNo(g * GROUP_PAGES + i))
        })
    }

    /// Groups to add when the store is full: a quarter of its size, between 64 MiB and
    /// 4 GiB, so a growing store remaps and fallocates rarely.
    /// Pages kept back from data writes so that deleting (which needs a few metadata pages)
    /// always works on a full store: 1% of the store, between 1 MiB and 32 MiB.
    /// Why this much: an unlink or truncate changes exclusive metadata in place and needs
    /// no page, but in a tree a snapshot or clone shares it copies each shared node it
    /// touches (up to ~25 pages: the paths in the inode table, the directory and the
    /// orphan list), and only a commit (every 5 s) turns freed pages into free ones, so
    /// 32 MiB lets ~1,300 such unlinks run in one commit interval on a full store.
    fn reserve(&self) -> u64 {
        Self::reserve_for(self.total_pages())
    }

    fn reserve_for(total_pages: u64) -> u64 {
        (total_pages / 100).clamp(256, 8192)
    }

    /// Free pages, and pages of file data an allocation can really get, for statfs. Both
    /// count the groups the store may still add: up to its limit, and only as many whole
    /// groups as `host_free` bytes of the host's disk hold. File data cannot use the
    /// reserve, and every 510 data pages also take a map node (with a little more for
    /// the levels above and the two edges of a range).
    pub fn free_for_data(&self, host_free: u64) -> (u64, u64) {
        let room = if self.sb.max_pages > 0 {
            (self.sb.max_pages / GROUP_PAGES).saturating_sub(self.sb.groups)
        } else {
            u64::MAX
        };
        let add = room.min(host_free / (GROUP_PAGES * PS));
        let free = self.sb.free_pages + add * (GROUP_PAGES - 1);
        let reserve = Self::reserve_for((self.sb.groups + add) * GROUP_PAGES);
        // n data pages need at most n/509 + 16 map nodes (FANOUT 510, five levels).
        let data = free.saturating_sub(reserve).saturating_sub(16) * 509 / 510;
        (free, data)
    }

    /// Allocates a page for file data: refused with ENOSPC once only the reserve is left
    /// and the store cannot grow.
    pub fn alloc_data(&mut self) -> Result<PageNo> {
        self.check_writable()?;
        if self.sb.free_pages <= self.reserve() {
            self.grow(self.grow_step())?;
        }
        self.alloc_page(false)
    }

    fn grow_step(&self) -> u64 {
        (self.sb.groups / 4).clamp(16, 1024)
    }

    /// Adds `n` groups at the end of the store file.
    pub(super) fn grow(&mut self, n: u64) -> Result<()> {
        let old = self.sb.groups;
        let mut n = n;
        if self.sb.max_pages > 0 {
            let room = (self.sb.max_pages / GROUP_PAGES).saturating_sub(old);
            n = n.min(room);
            if n == 0 {
                return Err(Error::NoSpace);
            }
        }
        // A nearly full disk may not take the whole step: halve it down to one group.
        loop {
            let len = (old + n) * GROUP_PAGES * PS;
            match self.dev.set_len(len) {
                Ok(()) => break,
                Err(e) if matches!(e.errno(), libc::ENOSPC | libc::EFBIG) && n > 1 => n /= 2,
                Err(e) if matches!(e.errno(), libc::ENOSPC | libc::EFBIG) => {
                    return Err(Error::NoSpace);
                }
                Err(e) => return Err(e),
            }
        }
        self.sb.groups = old + n;
        for g in old..old + n {
            let h = layout::group_header(g);
            let mut b = Box::new([0u8; PAGE_SIZE]);
            layout::init_meta(&mut b[..], Kind::Group);
            put32(&mut b[..], layout::rc_offset(h), RC_RESERVED);
            let mut free = GROUP_PAGES as u32 - 1;
            if g == 0 {
                put32(&mut b[..], layout::rc_offset(PageNo(0)), RC_RESERVED);
                free -= 1;
            }
            put32(&mut b[..], OFF_FREE, free);
            self.sb.free_pages += free as u64;
            self.note_undo(h);
            self.dirty.insert(h, b);
        }
        log::debug!("store grew to {} groups", self.sb.groups);
        Ok(())
    }

    /// Writes `data` at `off` of data page `old` the copy-on-write way and returns the page
    /// that now holds the result (the caller's reference on `old` is consumed):
    /// `old` itself when it has one reference (in place), else a fresh page holding a copy
    /// of `old` (zeros for the zero page) with `data` laid over it.
    pub fn write_cow(&mut self, old: PageNo, off: usize, data: &[u8]) -> Result<PageNo> {
        if off + data.len() > PAGE_SIZE {
            return Err(Error::Invalid("write crosses a page boundary"));
        }
        if self.writable_in_place(old)? {
            self.write_data(old, off, data)?;
            self.counters.in_place_writes += 1;
            return Ok(old);
        }
        let q = self.alloc_data()?;
        self.check_data_page(q)?;
        let from = if old.is_zero() || data.len() == PAGE_SIZE {
            None
        } else {
            self.check_data_page(old)?;
            Some(old.0 * PS)
        };
        self.data_dirty = true;
        if let Err(e) = self.dev.copy_page(from, q.0 * PS, off, data) {
            // The copy failed: give the new page back (a write that stops short at this
            // page still succeeds with the bytes before it, so no undo would free it).
            self.decref(q)?;
            return Err(e);
        }
        self.drop_copied(old)?;
        Ok(q)
    }

    /// Decides a whole-page overwrite of `old` and counts it: true to write it in place,
    /// false to write a fresh page (mapped later, which drops `old`).
    pub fn overwrite_in_place(&mut self, old: PageNo) -> Result<bool> {
        if self.writable_in_place(old)? {
            self.counters.in_place_writes += 1;
            // The caller writes the bytes, maybe without the store (`DataIo`): the next
            // commit must sync them all the same.
            self.data_dirty = true;
            return Ok(true);
        }
        if !old.is_zero() {
            self.counters.cow_copies += 1;
            self.sb.cow_copies += 1;
        }
        Ok(false)
    }

    /// True when `old` has one reference now and had at most one at the last commit: a
    /// page whose count fell to 1 since then may still be shared by that commit, and an
    /// in-place write would show up in the other file after a crash.
    fn writable_in_place(&mut self, old: PageNo) -> Result<bool> {
        Ok(!old.is_zero() && self.refcount(old)? == 1 && !self.shrunk.contains(&old))
    }

    /// Drops the reference on a page that a write copied away from.
    fn drop_copied(&mut self, old: PageNo) -> Result<()> {
        if !old.is_zero() {
            self.decref(old)?;
            self.counters.cow_copies += 1;
            self.sb.cow_copies += 1;
        }
        Ok(())
    }
}
