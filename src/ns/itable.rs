//! The inode table: a copy-on-write map of inode pages, `Layout::per_page` records each
//! (15 of 256 bytes in a format-1 store, 7 of 576 in a format-2 store). The live
//! table's root and next free inode number live in the superblock's root slots; each
//! snapshot keeps its own `Table` (see `snap.rs`).
//!
//! An inode page holds one reference on each map root in its records. So when a page is
//! shared (a snapshot shares the table) and one side must change it, the copy takes a
//! reference on every root it contains (`unshare_page`), exactly as a copied map node takes
//! one on each child; freeing the last reference of a page releases its records' maps.

use super::inode::{INODE_FIXED, INODE_SIZE, INODE_SIZE_V2, Inode};
use crate::error::{Error, Result};
use crate::ids::{Ino, PageNo};
use crate::object::MapRoot;
use crate::store::layout::{META_HEADER, get32, get64, put64};
use crate::store::{Kind, Store};

/// Where records lie in an inode page, by the store's format version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Bytes per record.
    pub rec: usize,
    /// Records per page.
    pub per_page: u64,
    /// Bytes of file data a record can hold inline (0: none).
    pub cap: usize,
}

impl Layout {
    /// Format 1: 15 records of 256 bytes, nothing inline.
    pub const V1: Layout = Layout::of_size(INODE_SIZE, false);
    /// Format 2: 7 records of 576 bytes, 416 bytes inline.
    pub const V2: Layout = Layout::of_size(INODE_SIZE_V2, true);

    const fn of_size(rec: usize, inline: bool) -> Layout {
        Layout {
            rec,
            per_page: ((crate::page::PAGE_SIZE - META_HEADER) / rec) as u64,
            cap: if inline { rec - INODE_FIXED } else { 0 },
        }
    }

    /// The layout of format version `v`.
    pub fn of_version(v: u32) -> Layout {
        if v >= 2 { Layout::V2 } else { Layout::V1 }
    }

    /// The layout of store `s`'s inode pages.
    pub fn of(s: &Store) -> Layout {
        Layout::of_version(s.format_version())
    }

    /// Offset of record `k` in a page.
    pub fn off(&self, k: usize) -> usize {
        META_HEADER + k * self.rec
    }

    /// Record `k` of page `b`.
    pub fn slot<'a>(&self, b: &'a [u8], k: usize) -> &'a [u8] {
        &b[self.off(k)..self.off(k) + self.rec]
    }

    /// Page index and record of `ino`.
    pub fn place(&self, ino: Ino) -> (u64, usize) {
        (ino.0 / self.per_page, (ino.0 % self.per_page) as usize)
    }
}

const SLOT_NODE: usize = 0;
const SLOT_DEPTH: usize = 1;
const SLOT_NEXT: usize = 2;
const OFF_USED: usize = 8;

/// One inode table: its map and the next inode number it hands out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Table {
    pub map: MapRoot,
    pub next: u64,
}

impl Table {
    /// The live table, from the superblock.
    pub fn live(s: &Store) -> Table {
        Table {
            map: MapRoot {
                node: PageNo(s.root(SLOT_NODE)),
                // Out of range reads as 255, which every map operation refuses as
                // corrupt (rather than wrapping to a small depth that looks valid).
                depth: u8::try_from(s.root(SLOT_DEPTH)).unwrap_or(u8::MAX),
            },
            next: s.root(SLOT_NEXT),
        }
    }

    /// Makes this the live table (durable at the next commit).
    pub fn save_live(&self, s: &mut Store) {
        s.set_root(SLOT_NODE, self.map.node.0);
        s.set_root(SLOT_DEPTH, self.map.depth as u64);
        s.set_root(SLOT_NEXT, self.next);
    }
}

/// The records of an inode page of layout `l`, with their slot numbers, unchecked.
pub fn records(l: Layout, b: &[u8]) -> Vec<(usize, Inode)> {
    (0..l.per_page as usize)
        .filter_map(|k| Inode::decode(l.slot(b, k)).map(|i| (k, i)))
        .collect()
}

/// The records of inode page `p` of layout `l`, each checked (`Inode::check`), and its
/// count of records in use checked against them.
pub fn checked_records(l: Layout, p: PageNo, b: &[u8]) -> Result<Vec<(usize, Inode)>> {
    let mut out = Vec::new();
    for k in 0..l.per_page as usize {
        if let Some(i) = Inode::decode_checked(p, b, l.off(k), l.rec, l.cap)? {
            out.push((k, i));
        }
    }
    check_used(p, b, out.len())?;
    Ok(out)
}

/// Checks the page's count of records in use: at most `PER_PAGE`, and `n` when the
/// caller counted the records.
fn check_used(p: PageNo, b: &[u8], n: usize) -> Result<()> {
    let used = get64(b, OFF_USED);
    if used != n as u64 {
        return Err(Error::corrupt(
            p.0,
            format!("inode page says {used} records in use, holds {n}"),
        ));
    }
    Ok(())
}

fn count_used(l: Layout, b: &[u8]) -> usize {
    (0..l.per_page as usize)
        .filter(|&k| get32(b, l.off(k)) != 0)
        .count()
}

/// Reads inode `ino` of table `t` without changing anything.
pub fn get_in(s: &mut Store, t: &Table, ino: Ino) -> Result<Inode> {
    let l = Layout::of(s);
    let (idx, k) = l.place(ino);
    let p = t.map.get(s, idx)?;
    if p.is_zero() {
        return Err(Error::NotFound);
    }
    s.with_meta(p, Kind::Inodes, |b| {
        Inode::decode_checked(p, b, l.off(k), l.rec, l.cap)
    })??
    .ok_or(Error::NotFound)
}

/// An inode page this table alone references: a shared one is copied, and the copy takes
/// a reference on every map root in its records.
fn unshare_page(s: &mut Store, old: PageNo) -> Result<PageNo> {
    if old.is_zero() {
        return s.alloc_meta(Kind::Inodes);
    }
    if s.refcount(old)? == 1 {
        return Ok(old);
    }
    let q = s.copy_meta(old, Kind::Inodes)?;
    let l = Layout::of(s);
    let recs = s.with_meta(q, Kind::Inodes, |b| checked_records(l, q, b))??;
    for (_, i) in recs {
        s.incref(i.map.node)?;
        s.incref(i.xattr.node)?;
    }
    s.decref(old)?;
    Ok(q)
}

/// Makes the page holding `ino` exclusive to `t` (path and page), so that the maps in its
/// records carry counts that tell the truth about sharing. Cheap when nothing is shared.
pub fn unshare(s: &mut Store, t: &mut Table, ino: Ino) -> Result<()> {
    let (idx, _) = Layout::of(s).place(ino);
    if t.map.get(s, idx)?.is_zero() {
        return Ok(());
    }
    t.map.modify(s, idx, unshare_page)?;
    Ok(())
}

/// Writes inode `ino` into `t` (creating its record if needed). Inline data must fit the
/// store's records (the namespace keeps bytes inline only up to `Layout::cap`).
pub fn put_in(s: &mut Store, t: &mut Table, ino: Ino, inode: &Inode) -> Result<()> {
    let l = Layout::of(s);
    if inode.inline.as_ref().is_some_and(|d| d.len() > l.cap) {
        return Err(Error::Internal);
    }
    let (idx, k) = l.place(ino);
    let p = t.map.modify(s, idx, unshare_page)?;
    let b = s.meta_mut(p, Kind::Inodes)?;
    let off = l.off(k);
    if get32(b, off) == 0 {
        check_used(p, b, count_used(l, b))?;
        let used = get64(b, OFF_USED) + 1;
        put64(b, OFF_USED, used);
    }
    inode.encode(&mut b[off..off + l.rec]);
    Ok(())
}

/// Frees the record of `ino` in `t` (the caller released its maps); frees its page when
/// it was the last record there.
pub fn remove_in(s: &mut Store, t: &mut Table, ino: Ino) -> Result<()> {
    let l = Layout::of(s);
    let (idx, k) = l.place(ino);
    let p = t.map.modify(s, idx, unshare_page)?;
    let b = s.meta_mut(p, Kind::Inodes)?;
    let off = l.off(k);
    check_used(p, b, count_used(l, b))?;
    let used = get64(b, OFF_USED).saturating_sub(1);
    b[off..off + l.rec].fill(0);
    put64(b, OFF_USED, used);
    if used == 0 {
        t.map.clear_range(s, idx, idx + 1)?;
    }
    Ok(())
}

/// Hands out a fresh inode number of `t` (numbers are never reused).
pub fn alloc_in(t: &mut Table) -> Ino {
    let next = t.next.max(Ino::FIRST_FREE.0);
    // Saturating: a corrupt count must not wrap to numbers already handed out.
    t.next = next.saturating_add(1);
    Ino(next)
}

/// Reads inode `ino` of the live table.
pub fn get(s: &mut Store, ino: Ino) -> Result<Inode> {
    get_in(s, &Table::live(s), ino)
}

/// Writes inode `ino` of the live table.
pub fn put(s: &mut Store, ino: Ino, inode: &Inode) -> Result<()> {
    let mut t = Table::live(s);
    put_in(s, &mut t, ino, inode)?;
    t.save_live(s);
    Ok(())
}

/// Frees the record of `ino` in the live table.
pub fn remove(s: &mut Store, ino: Ino) -> Result<()> {
    let mut t = Table::live(s);
    remove_in(s, &mut t, ino)?;
    t.save_live(s);
    Ok(())
}

/// Hands out a fresh inode number of the live table.
pub fn alloc_ino(s: &mut Store) -> Ino {
    let mut t = Table::live(s);
    let i = alloc_in(&mut t);
    t.save_live(s);
    i
}

/// Inode numbers handed out so far in the live table.
pub fn inos_used(s: &Store) -> u64 {
    s.root(SLOT_NEXT)
}

/// The live table's map, for fsck and statistics.
pub fn table_root(s: &Store) -> MapRoot {
    Table::live(s).map
}
